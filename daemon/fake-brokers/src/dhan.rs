//! A fake Dhan (dhan.md): the auth host (`/app/generateAccessToken`, the consent flow's
//! `/app/generate-consent`, `/login/consentApp-login`, `/app/consumeApp-consent`) and the API host
//! (`/v2/profile`) on two loopback listeners.
//!
//! Its habits, as the doc describes the real one: auth failures are HTTP 200
//! `{"status":"error","message":...}`; parameters travel in the query of a body-less POST; a
//! token can be minted once every 2 minutes per account, and a throttled attempt re-arms the
//! window; the service checks the throttle, then the PIN, then the TOTP; minting kills the
//! previous token; tokens are JWTs with `exp` = `iat` + 24 h and `expiryTime` in IST without an
//! offset; the API host answers `DH-9xx` error bodies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::mess::{self, HostHabits};
use crate::record::{Recorder, TotpUse, track};
use crate::{FakeOptions, NowFn, Server, fake_jwt, ist, random_token, serve, totp};

/// The mint throttle (dhan.md: "Token can be generated once every 2 minutes.").
pub const MINT_INTERVAL_MS: i64 = 120_000;
const DAY_MS: i64 = 86_400_000;

/// How a fake Dhan account behaves. A wrong PIN or TOTP needs no behaviour ("Invalid Pin",
/// "Invalid TOTP" come from the checks), nor does the throttle (a second mint within 2 minutes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DhanBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// D1 answers the blocked-account text (after the throttle check).
    Blocked,
    /// D1 answers that TOTP is not set up.
    TotpNotEnabled,
    /// D1 refuses the first code of each login, accepts a correct one after.
    RejectFirstTotp,
    /// D1 refuses every code.
    TotpRejected,
    /// D1 answers an HTML 403 block page.
    Waf,
    /// D1 answers a 503 with an HTML body.
    Unavailable,
    /// D1 succeeds but the profile refuses the token (DH-901): it did not stick.
    TokenNotSticking,
    /// C3 answers 405 to GET and works with POST.
    ConsumePostOnly,
    /// D1 mints, but the profile answers an HTML 503 for the account's tokens, every time.
    ProfileUnavailable,
    /// D1, C3 and the profile send `dhanClientId` as a JSON number (the id is all digits),
    /// not as the docs' quoted string.
    NumericClientId,
}

/// A fake Dhan account.
#[derive(Clone, Debug)]
pub struct DhanUser {
    /// Dhan client id (digits).
    pub client_id: String,
    /// Name.
    pub name: String,
    /// The 6-digit PIN.
    pub pin: String,
    /// Base32 TOTP secret.
    pub totp_secret: String,
    /// API key (`app_id`).
    pub app_id: String,
    /// API secret (`app_secret`).
    pub app_secret: String,
    /// The API key's redirect URL.
    pub redirect_url: String,
    /// Behaviour.
    pub behaviour: DhanBehaviour,
}

impl DhanUser {
    /// A happy account.
    pub fn new(
        client_id: &str,
        pin: &str,
        totp_secret: &str,
        app_id: &str,
        app_secret: &str,
    ) -> DhanUser {
        DhanUser {
            client_id: client_id.into(),
            name: format!("CLIENT {client_id}"),
            pin: pin.into(),
            totp_secret: totp_secret.into(),
            app_id: app_id.into(),
            app_secret: app_secret.into(),
            redirect_url: "https://tokenbot.example.com/callback/dhan".into(),
            behaviour: DhanBehaviour::Happy,
        }
    }

    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: DhanBehaviour) -> DhanUser {
        self.behaviour = behaviour;
        self
    }
}

struct Account {
    user: DhanUser,
    secret: Vec<u8>,
    used_steps: HashSet<u64>,
    refused_once: bool,
    /// Last mint attempt that counted for the throttle (a success, or a throttled try).
    last_mint_ms: Option<i64>,
    /// The one active token.
    active: Option<String>,
}

struct Token {
    client: String,
    expires_ms: i64,
    dead: bool,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    tokens: HashMap<String, Token>,
    /// consentAppId -> client id.
    consents: HashMap<String, String>,
    /// tokenId -> client id (single use).
    token_ids: HashMap<String, String>,
}

struct DhanState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
}

impl DhanState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake Dhan on two loopback listeners (auth and API).
pub struct FakeDhan {
    auth: Server,
    api: Server,
    state: Arc<DhanState>,
}

impl std::fmt::Debug for FakeDhan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDhan")
            .field("auth", &self.auth.url)
            .field("api", &self.api.url)
            .finish()
    }
}

/// An auth-host failure, HTTP 200 as observed live.
fn auth_error(message: &str) -> Response {
    Json(json!({"status": "error", "message": message})).into_response()
}

fn api_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"errorType": kind, "errorCode": code, "errorMessage": message})),
    )
        .into_response()
}

fn block_page() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><head><title>403 Forbidden</title></head><body><h1>Access Denied</h1>\
         <p>Reference #18.6f2c1002.1711782000.2b1c9e</p></body></html>",
    )
        .into_response()
}

/// `YYYY-MM-DDTHH:MM:SS.000` in IST.
fn iso_ist(ms: i64) -> String {
    format!("{}.000", ist::format(ms).replace(' ', "T"))
}

/// `dd/MM/yyyy HH:mm` in IST.
fn dmy_ist(ms: i64) -> String {
    let f = ist::format(ms);
    format!("{}/{}/{} {}", &f[8..10], &f[5..7], &f[0..4], &f[11..16])
}

impl FakeDhan {
    /// Start on the system clock.
    pub async fn start() -> FakeDhan {
        FakeDhan::start_with(FakeOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeDhan {
        let state = Arc::new(DhanState {
            inner: Mutex::default(),
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
        });
        let layer = axum::middleware::from_fn_with_state(state.recorder.clone(), track);
        let auth = Router::new()
            .route("/app/generateAccessToken", post(generate_access_token))
            .route("/app/generate-consent", post(generate_consent))
            .route("/login/consentApp-login", get(consent_page))
            .route("/app/consumeApp-consent", get(consume).post(consume))
            .route_layer(layer.clone())
            .with_state(state.clone());
        let api = Router::new()
            .route("/v2/profile", get(profile))
            .route_layer(layer)
            .with_state(state.clone());
        FakeDhan {
            auth: serve(mess::apply(auth, &options, HostHabits::json())).await,
            api: serve(mess::apply(api, &options, HostHabits::json())).await,
            state,
        }
    }

    /// Base URL of the auth host.
    pub fn auth_url(&self) -> String {
        self.auth.url.clone()
    }

    /// Base URL of the API (with `/v2`).
    pub fn api_url(&self) -> String {
        format!("{}/v2", self.api.url)
    }

    /// `{"auth_url", "api_url"}` as `[brokers.dhan]` would configure them.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("auth_url".into(), self.auth_url()),
            ("api_url".into(), self.api_url()),
        ])
    }

    /// Add (or replace) an account.
    pub fn add_user(&self, user: DhanUser) {
        let secret = totp::secret_bytes(&user.totp_secret);
        self.state.lock().accounts.insert(
            user.client_id.clone(),
            Account {
                user,
                secret,
                used_steps: HashSet::new(),
                refused_once: false,
                last_mint_ms: None,
                active: None,
            },
        );
    }

    /// Change an account's behaviour.
    pub fn set_behaviour(&self, client_id: &str, behaviour: DhanBehaviour) {
        if let Some(a) = self.state.lock().accounts.get_mut(client_id) {
            a.user.behaviour = behaviour;
        }
    }

    /// What the fake saw (PINs are recorded as passwords).
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether `/v2/profile` would accept this token now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .tokens
            .get(token)
            .is_some_and(|t| now < t.expires_ms && !t.dead)
    }

    /// What a browser ends with after a person logs in at the consent page `login_url`
    /// (`{auth}/login/consentApp-login?consentAppId=..`) as `client_id`: the API key's redirect
    /// URL with a single-use `tokenId`.
    pub fn browser_login(&self, login_url: &str, client_id: &str) -> Result<String, String> {
        let url = url::Url::parse(login_url).map_err(|e| e.to_string())?;
        let consent = url
            .query_pairs()
            .find(|(k, _)| k == "consentAppId")
            .map(|(_, v)| v.into_owned())
            .ok_or("no consentAppId")?;
        let mut inner = self.state.lock();
        let owner = inner
            .consents
            .remove(&consent)
            .ok_or("unknown consentAppId")?;
        if owner != client_id {
            return Err("the consent is for another client".into());
        }
        let redirect = inner
            .accounts
            .get(client_id)
            .map(|a| a.user.redirect_url.clone())
            .ok_or("no such client")?;
        let token_id = random_token(32);
        inner.token_ids.insert(token_id.clone(), owner);
        let mut target = url::Url::parse(&redirect).map_err(|e| e.to_string())?;
        target.query_pairs_mut().append_pair("tokenId", &token_id);
        Ok(target.into())
    }
}

/// `dhanClientId` as the docs quote it, or as a number.
fn client_id_value(client: &str, numeric: bool) -> Value {
    match client.parse::<u64>() {
        Ok(n) if numeric => json!(n),
        _ => json!(client),
    }
}

/// Mint a token for `client`, killing its previous one; the D1/C3 success body.
fn mint(inner: &mut Inner, client: &str, now: i64) -> Value {
    let expires = now + DAY_MS;
    let token = fake_jwt(json!({
        "iss": "dhan", "partnerId": "", "exp": expires / 1000, "iat": now / 1000,
        "tokenConsumerType": "SELF", "webhookUrl": "", "dhanClientId": client,
    }));
    let Some(account) = inner.accounts.get_mut(client) else {
        return json!({});
    };
    let previous = account.active.replace(token.clone());
    account.last_mint_ms = Some(now);
    let (name, dead, numeric) = (
        account.user.name.clone(),
        account.user.behaviour == DhanBehaviour::TokenNotSticking,
        account.user.behaviour == DhanBehaviour::NumericClientId,
    );
    if let Some(old) = previous.and_then(|p| inner.tokens.get_mut(&p)) {
        old.dead = true;
    }
    inner.tokens.insert(
        token.clone(),
        Token {
            client: client.to_owned(),
            expires_ms: expires,
            dead,
        },
    );
    json!({
        "dhanClientId": client_id_value(client, numeric),
        "dhanClientName": name,
        "dhanClientUcc": format!("ABCD{}E", &client[client.len().saturating_sub(5)..]),
        "givenPowerOfAttorney": false,
        "accessToken": token,
        "expiryTime": iso_ist(expires),
    })
}

async fn generate_access_token(
    State(s): State<Arc<DhanState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let (client, pin, code) = (get("dhanClientId"), get("pin"), get("totp"));
    if client.is_empty() || pin.is_empty() || code.is_empty() {
        return auth_error("Missing required parameters");
    }
    s.recorder.login_begin(&client);
    let answer = mint_answer(&s, &client, &pin, code);
    s.recorder.login_end(&client);
    answer
}

fn mint_answer(s: &DhanState, client: &str, pin: &str, code: String) -> Response {
    let now = (s.now)();
    let mut inner = s.lock();
    let Some(account) = inner.accounts.get_mut(client) else {
        return auth_error("Invalid Client ID");
    };
    s.recorder.password(client, pin);
    match account.user.behaviour {
        DhanBehaviour::Waf => return block_page(),
        DhanBehaviour::Unavailable => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
            )
                .into_response();
        }
        _ => {}
    }
    // Throttle first (a refused attempt re-arms it), then the PIN, then the TOTP (dhan.md).
    if account
        .last_mint_ms
        .is_some_and(|last| now - last < MINT_INTERVAL_MS)
    {
        account.last_mint_ms = Some(now);
        return auth_error("Token can be generated once every 2 minutes.");
    }
    if account.user.behaviour == DhanBehaviour::Blocked {
        return auth_error(
            "Your account is blocked due to multiple invalid attempts. Please reset your PIN.",
        );
    }
    if pin != account.user.pin {
        return auth_error("Invalid Pin");
    }
    if account.user.behaviour == DhanBehaviour::TotpNotEnabled {
        return auth_error("TOTP is not enabled for this account. Please setup TOTP on Dhan Web.");
    }
    let step = totp::matching_step(&account.secret, &code, now);
    let fresh = step.is_some_and(|st| !account.used_steps.contains(&st));
    let refuse = account.user.behaviour == DhanBehaviour::TotpRejected
        || (account.user.behaviour == DhanBehaviour::RejectFirstTotp && !account.refused_once);
    if let Some(st) = step {
        account.used_steps.insert(st);
    }
    let accepted = fresh && !refuse;
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
        return auth_error("Invalid TOTP");
    }
    account.refused_once = false;
    Json(mint(&mut inner, client, now)).into_response()
}

fn app_matches(headers: &HeaderMap, user: &DhanUser) -> bool {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    h("app_id") == user.app_id && h("app_secret") == user.app_secret
}

async fn generate_consent(
    State(s): State<Arc<DhanState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let client = q.get("client_id").cloned().unwrap_or_default();
    let mut inner = s.lock();
    match inner.accounts.get(&client) {
        Some(a) if app_matches(&headers, &a.user) => {
            let id = format!(
                "{}-{}-{}-{}-{}",
                &random_token(8),
                &random_token(4),
                &random_token(4),
                &random_token(4),
                &random_token(12)
            )
            .to_ascii_lowercase();
            inner.consents.insert(id.clone(), client);
            Json(json!({"consentAppId": id, "consentAppStatus": "GENERATED", "status": "success"}))
                .into_response()
        }
        Some(_) => auth_error("Invalid app_id or app_secret"),
        None => auth_error("Invalid Client ID"),
    }
}

async fn consent_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let status = if q.contains_key("consentAppId") {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html><html><head><title>Dhan Login</title></head><body><div id=\"app\"></div></body></html>",
    )
        .into_response()
}

async fn consume(
    State(s): State<Arc<DhanState>>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let token_id = q.get("tokenId").cloned().unwrap_or_default();
    let now = (s.now)();
    let mut inner = s.lock();
    let Some(client) = inner.token_ids.get(&token_id).cloned() else {
        return auth_error("Invalid tokenId");
    };
    let Some(account) = inner.accounts.get(&client) else {
        return auth_error("Invalid Client ID");
    };
    if account.user.behaviour == DhanBehaviour::ConsumePostOnly && method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            Json(json!({"status": "error", "message": "Request method 'GET' is not supported"})),
        )
            .into_response();
    }
    if !app_matches(&headers, &account.user) {
        return auth_error("Invalid app_id or app_secret");
    }
    inner.token_ids.remove(&token_id);
    Json(mint(&mut inner, &client, now)).into_response()
}

async fn profile(State(s): State<Arc<DhanState>>, headers: HeaderMap) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (token, id) = (h("access-token"), {
        let c = h("client-id");
        if c.is_empty() { h("dhanClientId") } else { c }
    });
    let now = (s.now)();
    let inner = s.lock();
    let owner = inner.tokens.get(&token).map(|t| t.client.clone());
    let behaviour = owner
        .and_then(|c| inner.accounts.get(&c))
        .map(|a| a.user.behaviour);
    if behaviour == Some(DhanBehaviour::ProfileUnavailable) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
        )
            .into_response();
    }
    match inner.tokens.get(&token) {
        Some(t) if now < t.expires_ms && !t.dead && (id.is_empty() || id == t.client) => {
            Json(json!({
                "dhanClientId": client_id_value(&t.client, behaviour == Some(DhanBehaviour::NumericClientId)),
                "tokenValidity": dmy_ist(t.expires_ms),
                "activeSegment": "Equity, Derivative, Currency, Commodity",
                "ddpi": "Active",
                "mtf": "Active",
                "dataPlan": "Active",
                "dataValidity": format!("{}.0", ist::format(now + 200 * DAY_MS)),
            }))
            .into_response()
        }
        _ => api_error(
            StatusCode::UNAUTHORIZED,
            "Invalid_Authentication",
            "DH-901",
            "Client ID or user generated access token is invalid or expired.",
        ),
    }
}
