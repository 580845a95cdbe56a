//! A fake Kotak Neo Trade API v2 (kotak-neo.md) on one listener: the login API under
//! `/login/1.0` (K1 `tradeApiLogin` with mobile, UCC and TOTP; K2 `tradeApiValidate` with the
//! MPIN on the view session's `sid` + `Auth`), and, as the session's `baseUrl` (the fake
//! itself), the limits call `POST /quick/user/limits?sId=<hsServerId>` with `jData`.
//!
//! The login API checks `Authorization` (the account's API access token) and `neo-fin-key`
//! (`10512 "Required header not found."` without it); K1 answers its single ambiguous
//! `401 "Invalid credentials or TOTP."` for a wrong mobile, UCC or code alike. Tokens are JWTs
//! with `exp` at the next 00:00 IST on the fake's clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::mess::{self, HostHabits};
use crate::record::{Recorder, TotpUse, track};
use crate::{FakeOptions, NowFn, Server, fake_jwt, ist, random_token, serve, totp};

/// How a fake Kotak Neo account behaves. A wrong MPIN, mobile or TOTP needs no behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KotakBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// K1 refuses the first code with the ambiguous 401, accepts a later one.
    RejectFirstTotp,
    /// K1 answers "User account is blocked".
    Locked,
    /// K1 answers an HTML WAF page (403).
    WafPage,
    /// K1 answers a JSON 500.
    ServerError,
    /// K1 answers 424 "Dependency error".
    DependencyError,
    /// K1 answers 429.
    RateLimited,
    /// K2 answers 403 Forbidden (IP not whitelisted).
    Forbidden,
    /// K2 succeeds with `isUserPwdExpired: true`.
    PasswordExpired,
    /// The limits call answers `stCode 1003` "Invalid session" for every session.
    StaleSession,
    /// K1 refuses the first code the way a gateway would: a bare HTTP 401 with an empty body.
    BareUnauthorizedFirstTotp,
    /// K2 answers 403 with a plain-text `Forbidden` body (an IP allow-list at the gateway).
    PlainForbidden,
    /// K2 sends its flags and ids in other JSON types: `isUserPwdExpired: "false"`,
    /// `hsServerId: 2` (a number; the limits call then wants `sId=2`).
    OtherJsonTypes,
    /// K2 succeeds with `isUserPwdExpired: "true"` (a string).
    PasswordExpiredAsString,
}

/// A fake Kotak Neo account.
#[derive(Clone, Debug)]
pub struct KotakUser {
    /// UCC (5-character client code).
    pub ucc: String,
    /// Registered mobile, `+91` and 10 digits.
    pub mobile: String,
    /// MPIN.
    pub mpin: String,
    /// The API access token from the Neo API dashboard.
    pub api_token: String,
    /// Base32 TOTP secret.
    pub totp_secret: String,
    /// A trade-token lifetime shorter than the midnight rule, when set.
    pub token_ttl_ms: Option<i64>,
    /// Behaviour.
    pub behaviour: KotakBehaviour,
}

impl KotakUser {
    /// A happy account.
    pub fn new(ucc: &str, mobile: &str, mpin: &str, api_token: &str, totp_secret: &str) -> Self {
        KotakUser {
            ucc: ucc.into(),
            mobile: mobile.into(),
            mpin: mpin.into(),
            api_token: api_token.into(),
            totp_secret: totp_secret.into(),
            token_ttl_ms: None,
            behaviour: KotakBehaviour::Happy,
        }
    }

    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: KotakBehaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    /// With trade tokens whose `exp` is `ttl` after issue (if before midnight).
    pub fn with_token_ttl_ms(mut self, ttl: i64) -> Self {
        self.token_ttl_ms = Some(ttl);
        self
    }
}

struct Account {
    user: KotakUser,
    secret: Vec<u8>,
    used_steps: HashSet<u64>,
    refused_once: bool,
}

struct Session {
    ucc: String,
    token: String,
    expires_ms: i64,
}

#[derive(Default)]
struct Inner {
    /// By API access token.
    accounts: HashMap<String, Account>,
    /// View sessions by sid.
    views: HashMap<String, Session>,
    /// Trade sessions by sid.
    trades: HashMap<String, Session>,
}

struct KotakState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
    url: Mutex<String>,
}

impl KotakState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake Kotak Neo on one loopback listener.
pub struct FakeKotakNeo {
    server: Server,
    state: Arc<KotakState>,
}

impl std::fmt::Debug for FakeKotakNeo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKotakNeo")
            .field("url", &self.server.url)
            .finish()
    }
}

fn login_error(status: StatusCode, message: &str) -> Response {
    let code = status.as_u16().to_string();
    (
        status,
        Json(json!({"status": "error", "message": message, "errorCode": code})),
    )
        .into_response()
}

const AMBIGUOUS: &str = "Invalid credentials or TOTP.";

impl FakeKotakNeo {
    /// Start on the system clock.
    pub async fn start() -> FakeKotakNeo {
        FakeKotakNeo::start_with(FakeOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeKotakNeo {
        let state = Arc::new(KotakState {
            inner: Mutex::default(),
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
            url: Mutex::default(),
        });
        let layer = axum::middleware::from_fn_with_state(state.recorder.clone(), track);
        let router = Router::new()
            .route("/login/1.0/tradeApiLogin", post(trade_api_login))
            .route("/login/1.0/tradeApiValidate", post(trade_api_validate))
            .route("/quick/user/limits", post(limits))
            .route_layer(layer)
            .with_state(state.clone());
        let server = serve(mess::apply(router, &options, HostHabits::json())).await;
        *state.url.lock().unwrap_or_else(|e| e.into_inner()) = server.url.clone();
        FakeKotakNeo { server, state }
    }

    /// `login_url`.
    pub fn login_url(&self) -> String {
        format!("{}/login/1.0", self.server.url)
    }

    /// The post-login base URL K2 hands out (the fake itself).
    pub fn session_base_url(&self) -> String {
        format!("{}/", self.server.url)
    }

    /// `{"login_url", "api_url"}` as `[brokers.kotak-neo]` would configure them.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("login_url".into(), self.login_url()),
            ("api_url".into(), self.session_base_url()),
        ])
    }

    /// Add (or replace) an account.
    pub fn add_user(&self, user: KotakUser) {
        let secret = totp::secret_bytes(&user.totp_secret);
        self.state.lock().accounts.insert(
            user.api_token.clone(),
            Account {
                user,
                secret,
                used_steps: HashSet::new(),
                refused_once: false,
            },
        );
    }

    /// What the fake saw. MPINs are recorded as passwords, per UCC.
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether the limits call would accept this trade token now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .trades
            .values()
            .any(|t| t.token == token && now < t.expires_ms)
    }
}

fn header_of<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn field(body: &Value, key: &str) -> String {
    body.get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The header checks both login steps share: `Err` is the answer.
fn login_headers(headers: &HeaderMap, inner: &Inner) -> Result<String, Box<Response>> {
    if header_of(headers, "neo-fin-key") != "neotradeapi" {
        let body = json!({"error": [{"code": "10512", "message": "Required header not found."}]});
        return Err(Box::new(
            (StatusCode::BAD_REQUEST, Json(body)).into_response(),
        ));
    }
    let token = header_of(headers, header::AUTHORIZATION.as_str());
    if !inner.accounts.contains_key(token) {
        return Err(Box::new(login_error(
            StatusCode::UNAUTHORIZED,
            "Invalid access token. Please generate a new token from the API dashboard.",
        )));
    }
    Ok(token.to_owned())
}

fn session_jwt(ucc: &str, k_type: &str, now: i64, expires: i64) -> String {
    fake_jwt(
        json!({"sub": format!("uid-{ucc}"), "iss": "login-service", "jti": random_token(16),
                    "scope": [k_type.to_ascii_lowercase()], "iat": now / 1000, "exp": expires / 1000, "ucc": ucc}),
    )
}

async fn trade_api_login(
    State(s): State<Arc<KotakState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let now = (s.now)();
    let mut inner = s.lock();
    let api_token = match login_headers(&headers, &inner) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let account = inner.accounts.get_mut(&api_token).expect("an account");
    let ucc = account.user.ucc.clone();
    match account.user.behaviour {
        KotakBehaviour::Locked => {
            return login_error(
                StatusCode::UNAUTHORIZED,
                "User account is blocked. Please contact customer care.",
            );
        }
        KotakBehaviour::WafPage => {
            return (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "text/html")], "<html><head><title>Request Rejected</title></head><body>The requested URL was rejected. Please consult with your administrator.<br><br>Your support ID is: 1234567890</body></html>").into_response();
        }
        KotakBehaviour::ServerError => {
            return login_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
        KotakBehaviour::DependencyError => {
            return login_error(StatusCode::FAILED_DEPENDENCY, "Dependency error");
        }
        KotakBehaviour::RateLimited => {
            return login_error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
        }
        _ => {}
    }
    let code = field(&body, "totp");
    let step = totp::matching_step(&account.secret, &code, now);
    let fresh = step.is_some_and(|st| !account.used_steps.contains(&st));
    let refuse = matches!(
        account.user.behaviour,
        KotakBehaviour::RejectFirstTotp | KotakBehaviour::BareUnauthorizedFirstTotp
    ) && !account.refused_once;
    let identity = field(&body, "mobileNumber") == account.user.mobile
        && field(&body, "ucc").eq_ignore_ascii_case(&ucc);
    let accepted = fresh && !refuse && identity;
    if let Some(st) = step {
        account.used_steps.insert(st);
    }
    s.recorder.totp(
        &ucc,
        TotpUse {
            code,
            step,
            accepted,
        },
    );
    if !accepted {
        account.refused_once = true;
        if account.user.behaviour == KotakBehaviour::BareUnauthorizedFirstTotp {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        return login_error(StatusCode::UNAUTHORIZED, AMBIGUOUS);
    }
    let sid = random_token(36);
    let token = session_jwt(&ucc, "View", now, ist::next_at(now, 0));
    inner.views.insert(
        sid.clone(),
        Session {
            ucc: ucc.clone(),
            token: token.clone(),
            expires_ms: ist::next_at(now, 0),
        },
    );
    Json(json!({"data": {"token": token, "sid": sid, "rid": random_token(36), "hsServerId": "",
                         "isUserPwdExpired": false, "caches": {"baskets": "1", "lastUpdatedTS": "1"},
                         "ucc": ucc, "greetingName": "TEST USER", "isTrialAccount": false,
                         "dataCenter": "", "searchAPIKey": "", "derivativesRiskDisclosure": "",
                         "mfAccess": 1, "kType": "View", "status": "success"}}))
        .into_response()
}

async fn trade_api_validate(
    State(s): State<Arc<KotakState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let now = (s.now)();
    let mut inner = s.lock();
    let api_token = match login_headers(&headers, &inner) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let view_ok = inner
        .views
        .get(header_of(&headers, "sid"))
        .is_some_and(|v| v.token == header_of(&headers, "Auth") && now < v.expires_ms);
    if !view_ok {
        return login_error(
            StatusCode::UNAUTHORIZED,
            "Invalid session. Please login again.",
        );
    }
    inner.views.remove(header_of(&headers, "sid"));
    let user = inner.accounts[&api_token].user.clone();
    s.recorder.password(&user.ucc, &field(&body, "mpin"));
    if user.behaviour == KotakBehaviour::Forbidden {
        return login_error(StatusCode::FORBIDDEN, "Forbidden");
    }
    if user.behaviour == KotakBehaviour::PlainForbidden {
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain")],
            "Forbidden",
        )
            .into_response();
    }
    if field(&body, "mpin") != user.mpin {
        return login_error(StatusCode::UNAUTHORIZED, "Invalid MPIN.");
    }
    let midnight = ist::next_at(now, 0);
    let expires = user
        .token_ttl_ms
        .map_or(midnight, |ttl| (now + ttl).min(midnight));
    let sid = random_token(36);
    let token = session_jwt(&user.ucc, "Trade", now, expires);
    inner.trades.insert(
        sid.clone(),
        Session {
            ucc: user.ucc.clone(),
            token: token.clone(),
            expires_ms: expires,
        },
    );
    let base = format!("{}/", s.url.lock().unwrap_or_else(|e| e.into_inner()));
    let (server_id, pwd_expired) = match user.behaviour {
        KotakBehaviour::OtherJsonTypes => (json!(2), json!("false")),
        KotakBehaviour::PasswordExpiredAsString => (json!("server2"), json!("true")),
        b => (
            json!("server2"),
            json!(b == KotakBehaviour::PasswordExpired),
        ),
    };
    Json(json!({"data": {"token": token, "sid": sid, "rid": random_token(36), "hsServerId": server_id,
                         "isUserPwdExpired": pwd_expired,
                         "ucc": user.ucc, "greetingName": "TEST USER", "dataCenter": "E22",
                         "baseUrl": base, "kType": "Trade", "status": "success"}}))
        .into_response()
}

async fn limits(
    State(s): State<Arc<KotakState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let now = (s.now)();
    let inner = s.lock();
    let not_ok = |code: i64, msg: &str| {
        Json(json!({"stat": "Not_Ok", "emsg": msg, "stCode": code})).into_response()
    };
    // Kotak's Python SDK sends neither `neo-fin-key` nor `sId` here (the Go SDK sends both):
    // both are optional, and a `sId` that is sent must be the session's server.
    if !form.contains_key("jData") {
        return not_ok(1005, "Invalid input");
    }
    let session = inner.trades.get(header_of(&headers, "Sid"));
    let valid =
        session.is_some_and(|t| t.token == header_of(&headers, "Auth") && now < t.expires_ms);
    let stale = session
        .and_then(|t| inner.accounts.values().find(|a| a.user.ucc == t.ucc))
        .is_some_and(|a| a.user.behaviour == KotakBehaviour::StaleSession);
    let server = session
        .and_then(|t| inner.accounts.values().find(|a| a.user.ucc == t.ucc))
        .map_or("server2", |a| {
            if a.user.behaviour == KotakBehaviour::OtherJsonTypes {
                "2"
            } else {
                "server2"
            }
        });
    if !valid || stale || q.get("sId").is_some_and(|sid| sid != server) {
        return not_ok(1003, "Invalid session");
    }
    Json(
        json!({"stat": "Ok", "stCode": 200, "Net": "100000.00", "CollateralValue": "0.00",
                "MarginUsed": "0.00", "Category": "CLIENT"}),
    )
    .into_response()
}
