//! A fake 5paisa Xstream OpenAPI (fivepaisa.md): `TOTPLogin`, `GetAccessToken` and `V1/TradeBook`
//! under `/VendorsAPI/Service1.svc/`, the `{"head","body"}` envelopes with HTTP-200 business
//! errors (`body.Status` 1 wrong PIN, 2 `Invalid TOTP` with every other field null, -1 server),
//! JWT-shaped RequestToken (30 s), AccessToken (until 23:59:59 IST) and RefreshToken, and the
//! OAuth login page (`/WebVendorLogin/VLogin/Index`) whose redirect carries `RequestToken` and a
//! lower-case `state`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::mess::{self, HostHabits};
use crate::record::{Recorder, TotpUse, track};
use crate::{FakeOptions, NowFn, Server, fake_jwt, ist, serve, totp};

/// How a fake 5paisa account behaves. A wrong PIN, TOTP code, key or user id needs none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FivePaisaBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// F1 says the account is blocked.
    Blocked,
    /// F1 refuses every code.
    TotpRejected,
    /// F1 refuses the first code of each login.
    RejectFirstTotp,
    /// F1 is gone: HTTP 404 with an HTML page.
    Decommissioned,
    /// F1 answers HTTP 200 with an empty body (SDK issue #296).
    EmptyBody,
    /// F1 answers Status 2 "This API is deprecated, please use OAuth login".
    DeprecatedMessage,
    /// F1 answers 429.
    RateLimited,
    /// F1 answers a Cloudflare-like HTML 503 challenge page.
    Waf,
    /// F1 answers Status -1 "Server unable to process request".
    ServerUnable,
    /// F1 answers a JSON 500.
    ServerError,
    /// F2 answers "Token Expired.".
    TokenExpired,
    /// F2 answers `ClientCode` as a JSON number (this one), not a string.
    NumericClientCode(u64),
}

/// How V1/TradeBook refuses a token it does not accept (the doc names `Status 9` "Invalid
/// session" without saying where it sits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TradeBookRefusal {
    /// `body.Status` 9 (and `head.status` "9").
    #[default]
    BodyStatus,
    /// Only `head.status` "9" and `head.statusDescription`; `body` is `null`.
    HeadOnly,
    /// HTTP 401 with ASP.NET's `{"Message":"Authorization has been denied for this request."}`.
    Http401,
}

/// A fake 5paisa account.
#[derive(Clone, Debug)]
pub struct FivePaisaUser {
    /// Client code.
    pub client_code: String,
    /// PIN.
    pub pin: String,
    /// Base32 TOTP secret.
    pub totp_secret: String,
    /// User Key.
    pub user_key: String,
    /// Encryption Key.
    pub encry_key: String,
    /// API User ID.
    pub api_user_id: String,
    /// Behaviour.
    pub behaviour: FivePaisaBehaviour,
}

impl FivePaisaUser {
    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: FivePaisaBehaviour) -> FivePaisaUser {
        self.behaviour = behaviour;
        self
    }
}

struct Account {
    user: FivePaisaUser,
    secret: Vec<u8>,
    refused_once: bool,
    used_steps: HashSet<u64>,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    /// RequestToken -> (client, expiry ms).
    request_tokens: HashMap<String, (String, i64)>,
    /// AccessToken -> (client, expiry ms).
    sessions: HashMap<String, (String, i64)>,
    refusal: TradeBookRefusal,
}

struct FpState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
}

impl FpState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake 5paisa on one loopback listener (REST and the OAuth page).
pub struct FakeFivePaisa {
    server: Server,
    state: Arc<FpState>,
}

impl std::fmt::Debug for FakeFivePaisa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeFivePaisa")
            .field("url", &self.server.url)
            .finish()
    }
}

const REST: &str = "/VendorsAPI/Service1.svc";

impl FakeFivePaisa {
    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeFivePaisa {
        let state = Arc::new(FpState {
            inner: Mutex::default(),
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
        });
        let layer = axum::middleware::from_fn_with_state(state.recorder.clone(), track);
        let router = Router::new()
            .route(&format!("{REST}/TOTPLogin"), post(totp_login))
            .route(&format!("{REST}/GetAccessToken"), post(get_access_token))
            .route(&format!("{REST}/V1/TradeBook"), post(trade_book))
            .route("/WebVendorLogin/VLogin/Index", get(oauth_page))
            .route_layer(layer)
            .with_state(state.clone());
        FakeFivePaisa {
            server: serve(mess::apply(router, &options, HostHabits::json())).await,
            state,
        }
    }

    /// `{"api_url", "login_url"}` as `[brokers.fivepaisa]` would configure them.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("api_url".into(), format!("{}{REST}", self.server.url)),
            (
                "login_url".into(),
                format!("{}/WebVendorLogin/VLogin/Index", self.server.url),
            ),
        ])
    }

    /// How V1/TradeBook refuses a token from now on.
    pub fn set_trade_book_refusal(&self, refusal: TradeBookRefusal) {
        self.state.lock().refusal = refusal;
    }

    /// Add (or replace) an account.
    pub fn add_user(&self, user: FivePaisaUser) {
        let secret = totp::secret_bytes(&user.totp_secret);
        self.state.lock().accounts.insert(
            user.client_code.clone(),
            Account {
                user,
                secret,
                refused_once: false,
                used_steps: HashSet::new(),
            },
        );
    }

    /// What the fake saw (PINs under `passwords`).
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether TradeBook would accept this AccessToken now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .sessions
            .get(token)
            .is_some_and(|(_, exp)| now < *exp)
    }

    /// What a browser ends with after a person logs in on the OAuth page `login_url` as
    /// `client_code`: `ResponseURL` plus `RequestToken` and (lower-case) `state`.
    pub fn browser_login(&self, login_url: &str, client_code: &str) -> Result<String, String> {
        let url = url::Url::parse(login_url).map_err(|e| e.to_string())?;
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let key = q.get("VendorKey").ok_or("no VendorKey")?;
        let response = q.get("ResponseURL").ok_or("no ResponseURL")?;
        let now = (self.state.now)();
        let mut inner = self.state.lock();
        let account = inner.accounts.get(client_code).ok_or("no such client")?;
        if &account.user.user_key != key {
            return Err("the VendorKey is not this client's".into());
        }
        let token = request_token(&mut inner, client_code, now);
        let mut out = url::Url::parse(response).map_err(|e| e.to_string())?;
        out.query_pairs_mut()
            .append_pair("RequestToken", &token)
            .append_pair("state", q.get("State").map_or("", String::as_str));
        Ok(out.into())
    }
}

fn request_token(inner: &mut Inner, client: &str, now: i64) -> String {
    let t = fake_jwt(
        json!({"unique_name": client, "role": "vendor", "nbf": now / 1000, "exp": now / 1000 + 30}),
    );
    inner
        .request_tokens
        .insert(t.clone(), (client.to_owned(), now + 30_000));
    t
}

fn answer(status: i64, body: Value, description: Value) -> Response {
    let mut body = body;
    body["Status"] = json!(status);
    Json(json!({"body": body, "head": {"Status": status, "StatusDescription": description}}))
        .into_response()
}

fn field(v: &Value, a: &str, b: &str) -> String {
    v.get(a)
        .and_then(|x| x.get(b))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

async fn totp_login(State(s): State<Arc<FpState>>, body: String) -> Response {
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let client = field(&v, "body", "Email_ID");
    s.recorder.login_begin(&client);
    let r = totp_login_answer(&s, &v, &client);
    s.recorder.login_end(&client);
    r
}

fn totp_login_answer(s: &FpState, v: &Value, client: &str) -> Response {
    let now = (s.now)();
    let mut inner = s.lock();
    let behaviour = inner.accounts.get(client).map(|a| a.user.behaviour.clone());
    match behaviour {
        Some(FivePaisaBehaviour::Decommissioned) => {
            return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html")],
                "<!DOCTYPE html><html><head><title>404 - File or directory not found.</title></head><body><h2>404 - File or directory not found.</h2></body></html>").into_response();
        }
        Some(FivePaisaBehaviour::EmptyBody) => {
            return (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "").into_response();
        }
        Some(FivePaisaBehaviour::RateLimited) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::CONTENT_TYPE, "text/plain")],
                "Too Many Requests",
            )
                .into_response();
        }
        Some(FivePaisaBehaviour::Waf) => {
            return (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/html; charset=UTF-8"), (header::SERVER, "cloudflare")],
                "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>Checking your browser</body></html>").into_response();
        }
        Some(FivePaisaBehaviour::ServerError) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"Message": "An error has occurred."})),
            )
                .into_response();
        }
        _ => {}
    }
    let pin = field(v, "body", "PIN");
    s.recorder.password(client, &pin);
    let invalid_login = || {
        answer(
            1,
            json!({"ClientCode": null, "Message": "Invalid login/password,use \"Forget password\"", "RequestToken": null}),
            json!(null),
        )
    };
    let Some(account) = inner.accounts.get_mut(client) else {
        return invalid_login();
    };
    if field(v, "head", "Key") != account.user.user_key {
        return answer(
            2,
            json!({"Message": "Invalid head parameters", "RequestToken": null}),
            json!("Invalid Inputs"),
        );
    }
    match account.user.behaviour {
        FivePaisaBehaviour::Blocked => {
            return answer(
                1,
                json!({"Message": "Your account is blocked. Please contact customer care", "RequestToken": null}),
                json!(null),
            );
        }
        FivePaisaBehaviour::DeprecatedMessage => {
            return answer(
                2,
                json!({"Message": "TOTP login is deprecated, please use OAuth login", "RequestToken": null}),
                json!(null),
            );
        }
        FivePaisaBehaviour::ServerUnable => {
            return answer(
                -1,
                json!({"Message": "Server unable to process request", "RequestToken": null}),
                json!(null),
            );
        }
        _ => {}
    }
    if pin != account.user.pin {
        return invalid_login();
    }
    let code = field(v, "body", "TOTP");
    let step = totp::matching_step(&account.secret, &code, now);
    let fresh = step.is_some_and(|st| !account.used_steps.contains(&st));
    let refuse = account.user.behaviour == FivePaisaBehaviour::TotpRejected
        || (account.user.behaviour == FivePaisaBehaviour::RejectFirstTotp && !account.refused_once);
    let accepted = fresh && !refuse;
    if let Some(st) = step {
        account.used_steps.insert(st);
    }
    s.recorder.totp(
        client,
        TotpUse {
            code,
            step,
            accepted,
        },
    );
    if !accepted {
        account.refused_once = true;
        return answer(
            2,
            json!({"ClientCode": null, "Message": "Invalid TOTP", "RedirectURL": null, "RequestToken": null, "Userkey": null}),
            json!(null),
        );
    }
    account.refused_once = false;
    let key = account.user.user_key.clone();
    let token = request_token(&mut inner, client, now);
    answer(
        0,
        json!({"ClientCode": client, "Message": "Success", "RedirectURL": "", "RequestToken": token, "Userkey": key}),
        json!(null),
    )
}

async fn get_access_token(State(s): State<Arc<FpState>>, body: String) -> Response {
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let now = (s.now)();
    let mut inner = s.lock();
    let failed = |m: &str| {
        answer(
            2,
            json!({"AccessToken": "", "Message": m, "RefreshToken": ""}),
            json!("Invalid Inputs"),
        )
    };
    let Some((client, exp)) = inner
        .request_tokens
        .remove(&field(&v, "body", "RequestToken"))
    else {
        return failed("Invalid RequestToken");
    };
    let Some(account) = inner.accounts.get(&client) else {
        return failed("Invalid RequestToken");
    };
    if account.user.behaviour == FivePaisaBehaviour::TokenExpired || now >= exp {
        return failed("Token Expired.");
    }
    if field(&v, "head", "Key") != account.user.user_key
        || field(&v, "body", "EncryKey") != account.user.encry_key
        || field(&v, "body", "UserId") != account.user.api_user_id
    {
        return failed("Invalid EncryKey or UserId");
    }
    let code = match account.user.behaviour {
        FivePaisaBehaviour::NumericClientCode(n) => json!(n),
        _ => json!(client),
    };
    let exp = ist::next_at(now, 0) - 1000;
    let access = fake_jwt(
        json!({"unique_name": client, "role": "vendor", "nbf": now / 1000, "iat": now / 1000, "exp": exp / 1000}),
    );
    let refresh = fake_jwt(json!({"unique_name": client, "exp": now / 1000 + 90 * 86_400}));
    inner.sessions.insert(access.clone(), (client.clone(), exp));
    let r = answer(
        0,
        json!({"AccessToken": access, "RefreshToken": refresh, "ClientCode": code, "ClientName": format!("Client {client}"),
               "Message": "Success", "AllowBseCash": "Y", "AllowNseCash": "Y", "AllowNseDeriv": "Y"}),
        json!("Success"),
    );
    s.recorder.login_end(&client);
    r
}

async fn trade_book(State(s): State<Arc<FpState>>, headers: HeaderMap) -> Response {
    let now = (s.now)();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let inner = s.lock();
    let valid = inner.sessions.get(token).is_some_and(|(_, exp)| now < *exp);
    let refusal = inner.refusal;
    drop(inner);
    if !valid {
        match refusal {
            TradeBookRefusal::BodyStatus => {}
            TradeBookRefusal::HeadOnly => {
                return Json(json!({
                    "head": {"responseCode": "5PTrdBkV1", "status": "9", "statusDescription": "Invalid Session"},
                    "body": null,
                }))
                .into_response();
            }
            TradeBookRefusal::Http401 => {
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"Message": "Authorization has been denied for this request."})),
                )
                    .into_response();
            }
        }
    }
    let (status, message) = if valid {
        (0, "Success")
    } else {
        (9, "Invalid session")
    };
    Json(json!({
        "head": {"responseCode": "5PTrdBkV1", "status": status.to_string(), "statusDescription": message},
        "body": {"Status": status, "Message": message, "TradeBookDetail": []},
    }))
    .into_response()
}

async fn oauth_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let status = if q.contains_key("VendorKey") {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html><html><body><form id=\"vlogin\"></form></body></html>",
    )
        .into_response()
}
