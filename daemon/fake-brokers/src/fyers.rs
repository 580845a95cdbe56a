//! A fake Fyers API v3 (fyers.md) on one listener: the vagator login API under `/vagator/v2`
//! (H1–H3, both endpoint generations: `_v2` with base64 values, the FyersDev sample's with plain
//! ones), and the API under `/api/v3`: `/token` (H4, HTTP 308 with a JSON `Url`),
//! `/validate-authcode` (`appIdHash`, single-use auth codes, `-371` on a bad hash), `/profile`
//! (`Authorization: APPID-TYPE:token`), and `/generate-authcode` for the assisted login.
//!
//! Envelopes are `{"s","code","message"}`, errors with HTTP 200 as often as 4xx; `request_key`
//! rotates at every step; the PIN counter answers `failed_attempts` and blocks after five;
//! access tokens are JWTs with `exp` at the next 06:00 IST on the fake's clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};

use crate::mess::{self, HostHabits};
use crate::record::{Recorder, TotpUse, track};
use crate::{FakeOptions, NowFn, Server, fake_jwt, ist, random_token, serve, sha256_hex, totp};

/// How a fake Fyers account behaves. A wrong PIN or TOTP needs no behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FyersBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// The first TOTP code is refused (`Invalid otp`), a later one accepted.
    RejectFirstTotp,
    /// The account is blocked: H1 answers `user_blocked: true`.
    Blocked,
    /// H1 answers `-1031` "recaptcha token is not provided".
    Recaptcha,
    /// H1 answers Cloudflare's HTML 429 (error code 1015).
    CloudflareRateLimit,
    /// H1 answers an HTML WAF page (403).
    WafPage,
    /// H1 answers a JSON 500 "Connection error".
    ServerError,
    /// H4 refuses: the user never authorized the app in a browser.
    AppNotAuthorized,
    /// H4 also sends a `Location` header (realistic mode then replaces the JSON body with the
    /// redirect's HTML, as a proxy would).
    RedirectInLocation,
    /// H1 refuses with `user_blocked` as the string `"true"` and a message that names no block.
    BlockedFlagAsString,
    /// H4 spells the `Url` key `URL` (JSON keys' case is the server's choice).
    UppercaseUrlKey,
    /// A wrong PIN is refused with HTTP 401 "Invalid credentials" and no `failed_attempts`.
    CredentialsWording,
    /// `/profile` refuses a dead token as the gateway in front of it would: HTTP 401 with
    /// nginx's HTML page, not Fyers' envelope.
    GatewayUnauthorized,
}

/// A fake Fyers account and its API app.
#[derive(Clone, Debug)]
pub struct FyersUser {
    /// Client id, e.g. `XY12345`.
    pub fy_id: String,
    /// 4-digit login PIN.
    pub pin: String,
    /// App ID with its type, `ABCD1234EF-100`.
    pub app_id: String,
    /// App secret.
    pub app_secret: String,
    /// Base32 TOTP secret.
    pub totp_secret: String,
    /// The app's registered redirect URL.
    pub redirect_uri: String,
    /// Behaviour.
    pub behaviour: FyersBehaviour,
}

impl FyersUser {
    /// A happy account whose app redirects to an unreachable URL.
    pub fn new(fy_id: &str, pin: &str, app_id: &str, app_secret: &str, totp_secret: &str) -> Self {
        FyersUser {
            fy_id: fy_id.into(),
            pin: pin.into(),
            app_id: app_id.into(),
            app_secret: app_secret.into(),
            totp_secret: totp_secret.into(),
            redirect_uri: "http://127.0.0.1:9/fyers/redirect".into(),
            behaviour: FyersBehaviour::Happy,
        }
    }

    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: FyersBehaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    /// With a registered redirect URL.
    pub fn with_redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uri = uri.into();
        self
    }
}

struct Account {
    user: FyersUser,
    secret: Vec<u8>,
    used_steps: HashSet<u64>,
    refused_once: bool,
    pin_failures: u32,
    blocked: bool,
}

#[derive(Clone, PartialEq, Eq)]
enum Stage {
    Otp,
    Pin,
}

struct Token {
    fy_id: String,
    app_id: String,
    expires_ms: i64,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    request_keys: HashMap<String, (String, Stage)>,
    /// H3's trading-session tokens -> fy_id.
    sessions: HashMap<String, String>,
    /// Auth codes -> (fy_id, app_id); removed when used.
    auth_codes: HashMap<String, (String, String)>,
    tokens: HashMap<String, Token>,
}

struct FyersState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
}

impl FyersState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake Fyers on one loopback listener.
pub struct FakeFyers {
    server: Server,
    state: Arc<FyersState>,
}

impl std::fmt::Debug for FakeFyers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeFyers")
            .field("url", &self.server.url)
            .finish()
    }
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"s": "error", "code": code, "message": message})),
    )
        .into_response()
}

fn html(status: StatusCode, server: &str, body: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=UTF-8"),
            (header::SERVER, server),
        ],
        body,
    )
        .into_response()
}

impl FakeFyers {
    /// Start on the system clock.
    pub async fn start() -> FakeFyers {
        FakeFyers::start_with(FakeOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeFyers {
        let state = Arc::new(FyersState {
            inner: Mutex::default(),
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
        });
        let layer = axum::middleware::from_fn_with_state(state.recorder.clone(), track);
        let router = Router::new()
            .route("/vagator/v2/send_login_otp_v2", post(send_otp_v2))
            .route("/vagator/v2/send_login_otp", post(send_otp_plain))
            .route("/vagator/v2/verify_otp", post(verify_otp))
            .route("/vagator/v2/verify_pin_v2", post(verify_pin_v2))
            .route("/vagator/v2/verify_pin", post(verify_pin_plain))
            .route("/api/v3/token", post(token))
            .route("/api/v3/validate-authcode", post(validate_authcode))
            .route("/api/v3/profile", get(profile))
            .route("/api/v3/generate-authcode", get(generate_authcode))
            .route_layer(layer)
            .with_state(state.clone());
        FakeFyers {
            server: serve(mess::apply(router, &options, HostHabits::json())).await,
            state,
        }
    }

    /// `login_url` (the vagator base).
    pub fn login_url(&self) -> String {
        format!("{}/vagator/v2", self.server.url)
    }

    /// `api_url`.
    pub fn api_url(&self) -> String {
        format!("{}/api/v3", self.server.url)
    }

    /// `{"login_url", "api_url"}` as `[brokers.fyers]` would configure them.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("login_url".into(), self.login_url()),
            ("api_url".into(), self.api_url()),
        ])
    }

    /// Add (or replace) an account.
    pub fn add_user(&self, user: FyersUser) {
        let secret = totp::secret_bytes(&user.totp_secret);
        let blocked = user.behaviour == FyersBehaviour::Blocked;
        self.state.lock().accounts.insert(
            user.fy_id.to_ascii_uppercase(),
            Account {
                user,
                secret,
                used_steps: HashSet::new(),
                refused_once: false,
                pin_failures: 0,
                blocked,
            },
        );
    }

    /// What the fake saw. PINs are recorded as passwords.
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether `/profile` would accept this token now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .tokens
            .get(token)
            .is_some_and(|t| now < t.expires_ms)
    }

    /// A person logging in on the page `generate-authcode` shows: the redirect URL (with
    /// `s=ok&code=200&auth_code=...&state=...`) the browser is sent to, or why not.
    pub fn browser_login(&self, url: &str, fy_id: &str) -> Result<String, String> {
        let url = url::Url::parse(url).map_err(|e| e.to_string())?;
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let client_id = q.get("client_id").ok_or("no client_id")?;
        let redirect = q.get("redirect_uri").ok_or("no redirect_uri")?;
        if q.get("response_type").map(String::as_str) != Some("code") {
            return Err("response_type is not code".into());
        }
        let mut inner = self.state.lock();
        let account = inner
            .accounts
            .get(&fy_id.to_ascii_uppercase())
            .ok_or("no such user")?;
        if &account.user.app_id != client_id {
            return Err("unknown client_id".into());
        }
        let code = issue_auth_code(&mut inner, fy_id, client_id, (self.state.now)());
        let mut target = url::Url::parse(redirect).map_err(|e| e.to_string())?;
        target
            .query_pairs_mut()
            .append_pair("s", "ok")
            .append_pair("code", "200")
            .append_pair("auth_code", &code)
            .append_pair("state", q.get("state").map_or("", String::as_str));
        Ok(target.into())
    }
}

fn issue_auth_code(inner: &mut Inner, fy_id: &str, app_id: &str, now: i64) -> String {
    let code = fake_jwt(json!({
        "iss": "api.login.fyers.in", "sub": "auth_code", "iat": now / 1000,
        "exp": now / 1000 + 30_000, "fy_id": fy_id, "app_id": app_id,
    }));
    inner.auth_codes.insert(
        code.clone(),
        (fy_id.to_ascii_uppercase(), app_id.to_owned()),
    );
    code
}

fn field(body: &Value, key: &str) -> String {
    match body.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn decode(value: &str, base64: bool) -> Option<String> {
    if !base64 {
        return Some(value.to_owned());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    String::from_utf8(bytes).ok()
}

async fn send_otp_v2(State(s): State<Arc<FyersState>>, Json(body): Json<Value>) -> Response {
    send_otp(&s, &body, true)
}

async fn send_otp_plain(State(s): State<Arc<FyersState>>, Json(body): Json<Value>) -> Response {
    send_otp(&s, &body, false)
}

fn send_otp(s: &FyersState, body: &Value, b64: bool) -> Response {
    let Some(fy_id) = decode(&field(body, "fy_id"), b64).filter(|f| !f.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, -1044, "Invalid input");
    };
    if field(body, "app_id") != "2" {
        return error(StatusCode::BAD_REQUEST, -1025, "Invalid request");
    }
    let mut inner = s.lock();
    let Some(account) = inner.accounts.get(&fy_id.to_ascii_uppercase()) else {
        return error(StatusCode::OK, -1004, "Please provide a valid user id");
    };
    s.recorder.login_begin(&account.user.fy_id);
    let end = |r: Response| {
        s.recorder.login_end(&fy_id);
        r
    };
    match account.user.behaviour {
        FyersBehaviour::Recaptcha => {
            return end(error(
                StatusCode::OK,
                -1031,
                "recaptcha token is not provided",
            ));
        }
        FyersBehaviour::CloudflareRateLimit => {
            return end(html(
                StatusCode::TOO_MANY_REQUESTS,
                "cloudflare",
                "<!DOCTYPE html><html><head><title>Access denied | api-t2.fyers.in used Cloudflare to restrict access</title></head><body>error code: 1015</body></html>",
            ));
        }
        FyersBehaviour::WafPage => {
            return end(html(
                StatusCode::FORBIDDEN,
                "AkamaiGHost",
                "<HTML><HEAD><TITLE>Access Denied</TITLE></HEAD><BODY><H1>Access Denied</H1>You don't have permission to access this server.</BODY></HTML>",
            ));
        }
        FyersBehaviour::ServerError => {
            return end(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                -201,
                "Connection error",
            ));
        }
        _ => {}
    }
    if account.user.behaviour == FyersBehaviour::BlockedFlagAsString {
        return end((StatusCode::OK, Json(json!({"s": "error", "code": -1007, "message": "Please contact support", "user_blocked": "true"}))).into_response());
    }
    if account.blocked {
        return end((StatusCode::OK, Json(json!({"s": "error", "code": -1007, "message": "Your account has been blocked. Please reset your PIN or contact support", "user_blocked": true}))).into_response());
    }
    let key = random_token(32);
    inner
        .request_keys
        .insert(key.clone(), (fy_id.to_ascii_uppercase(), Stage::Otp));
    Json(json!({"s": "ok", "code": 200, "message": "", "request_key": key})).into_response()
}

/// The account a `request_key` at `stage` belongs to (the key is used up either way).
fn take_key(inner: &mut Inner, key: &str, stage: Stage) -> Option<String> {
    match inner.request_keys.remove(key) {
        Some((fy_id, st)) if st == stage => Some(fy_id),
        _ => None,
    }
}

async fn verify_otp(State(s): State<Arc<FyersState>>, Json(body): Json<Value>) -> Response {
    let now = (s.now)();
    let code = field(&body, "otp");
    let mut inner = s.lock();
    let Some(fy_id) = take_key(&mut inner, &field(&body, "request_key"), Stage::Otp) else {
        return error(
            StatusCode::BAD_REQUEST,
            -2,
            "Please provide a valid request key",
        );
    };
    let account = inner.accounts.get_mut(&fy_id).expect("an account");
    let step = totp::matching_step(&account.secret, &code, now);
    let fresh = code.len() == 6 && step.is_some_and(|st| !account.used_steps.contains(&st));
    let refuse = account.user.behaviour == FyersBehaviour::RejectFirstTotp && !account.refused_once;
    let accepted = fresh && !refuse;
    if let Some(st) = step {
        account.used_steps.insert(st);
    }
    s.recorder.totp(
        &account.user.fy_id,
        TotpUse {
            code,
            step,
            accepted,
        },
    );
    // Like the web page, a refused code may be retyped: the key rotates either way.
    let next = random_token(32);
    if !accepted {
        account.refused_once = true;
        inner.request_keys.insert(next.clone(), (fy_id, Stage::Otp));
        return (
            StatusCode::OK,
            Json(
                json!({"s": "error", "code": -1013, "message": "Invalid otp", "request_key": next}),
            ),
        )
            .into_response();
    }
    inner.request_keys.insert(next.clone(), (fy_id, Stage::Pin));
    Json(json!({"s": "ok", "code": 200, "message": "", "request_key": next})).into_response()
}

async fn verify_pin_v2(State(s): State<Arc<FyersState>>, Json(body): Json<Value>) -> Response {
    verify_pin(&s, &body, true)
}

async fn verify_pin_plain(State(s): State<Arc<FyersState>>, Json(body): Json<Value>) -> Response {
    verify_pin(&s, &body, false)
}

fn verify_pin(s: &FyersState, body: &Value, b64: bool) -> Response {
    let mut inner = s.lock();
    let Some(fy_id) = take_key(&mut inner, &field(body, "request_key"), Stage::Pin) else {
        return error(
            StatusCode::BAD_REQUEST,
            -2,
            "Please provide a valid request key",
        );
    };
    if field(body, "identity_type") != "pin" {
        return error(StatusCode::BAD_REQUEST, -1025, "Invalid request");
    }
    let pin = decode(&field(body, "identifier"), b64).unwrap_or_default();
    let account = inner.accounts.get_mut(&fy_id).expect("an account");
    s.recorder.password(&account.user.fy_id, &pin);
    s.recorder.login_end(&account.user.fy_id);
    if account.blocked {
        return (StatusCode::OK, Json(json!({"s": "error", "code": -1007, "message": "Your account has been blocked", "user_blocked": true}))).into_response();
    }
    if pin != account.user.pin {
        account.pin_failures += 1;
        account.blocked = account.pin_failures >= 5;
        if account.user.behaviour == FyersBehaviour::CredentialsWording {
            return error(StatusCode::UNAUTHORIZED, -1006, "Invalid credentials");
        }
        let left = 5 - account.pin_failures.min(5);
        return (
            StatusCode::OK,
            Json(json!({
                "s": "error", "code": -1006,
                "message": format!("Incorrect PIN. {left} attempts left"),
                "failed_attempts": account.pin_failures, "user_blocked": account.blocked,
            })),
        )
            .into_response();
    }
    account.pin_failures = 0;
    let session = random_token(48);
    inner.sessions.insert(session.clone(), fy_id);
    Json(
        json!({"s": "ok", "code": 200, "message": "", "request_key": random_token(32),
                "data": {"access_token": session, "refresh_token": random_token(48)}}),
    )
    .into_response()
}

fn bearer(headers: &HeaderMap) -> String {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    auth.strip_prefix("Bearer ").unwrap_or_default().to_owned()
}

async fn token(
    State(s): State<Arc<FyersState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let now = (s.now)();
    let mut inner = s.lock();
    let Some(fy_id) = inner.sessions.get(&bearer(&headers)).cloned() else {
        return error(
            StatusCode::UNAUTHORIZED,
            -16,
            "Could not authenticate the user",
        );
    };
    let user = inner.accounts[&fy_id].user.clone();
    if user.behaviour == FyersBehaviour::AppNotAuthorized {
        return error(
            StatusCode::FORBIDDEN,
            -1,
            "App is not authorized by the user. Please authorize the app to continue",
        );
    }
    let app_id = format!("{}-{}", field(&body, "app_id"), field(&body, "appType"));
    if app_id != user.app_id || !field(&body, "fyers_id").eq_ignore_ascii_case(&fy_id) {
        return error(StatusCode::BAD_REQUEST, -1044, "Invalid input");
    }
    if field(&body, "redirect_uri") != user.redirect_uri {
        return error(StatusCode::BAD_REQUEST, -1, "Redirect URI mismatch");
    }
    let code = issue_auth_code(&mut inner, &fy_id, &app_id, now);
    let mut target = url::Url::parse(&user.redirect_uri).expect("a redirect URL");
    target
        .query_pairs_mut()
        .append_pair("s", "ok")
        .append_pair("code", "200")
        .append_pair("auth_code", &code)
        .append_pair("state", &field(&body, "state"));
    let url_key = if user.behaviour == FyersBehaviour::UppercaseUrlKey {
        "URL"
    } else {
        "Url"
    };
    let body = Json(json!({"s": "ok", "code": 308, "message": "", url_key: target.as_str()}));
    let mut r = (StatusCode::PERMANENT_REDIRECT, body).into_response();
    if user.behaviour == FyersBehaviour::RedirectInLocation {
        r.headers_mut()
            .insert(header::LOCATION, target.as_str().parse().expect("a header"));
    }
    r
}

async fn validate_authcode(State(s): State<Arc<FyersState>>, Json(body): Json<Value>) -> Response {
    let now = (s.now)();
    if field(&body, "grant_type") != "authorization_code" {
        return error(StatusCode::BAD_REQUEST, -442, "Invalid grant_type");
    }
    let mut inner = s.lock();
    let code = field(&body, "code");
    let Some((fy_id, app_id)) = inner.auth_codes.get(&code).cloned() else {
        return error(StatusCode::BAD_REQUEST, -50, "invalid auth code");
    };
    let secret = inner.accounts[&fy_id].user.app_secret.clone();
    if field(&body, "appIdHash") != sha256_hex(&[&app_id, ":", &secret]) {
        return error(
            StatusCode::BAD_REQUEST,
            -371,
            "Please provide sha256 hash of appId and app secret",
        );
    }
    inner.auth_codes.remove(&code);
    let expires = ist::next_at(now, 6);
    let access = fake_jwt(json!({
        "iss": "api.fyers.in", "iat": now / 1000, "exp": expires / 1000, "nbf": now / 1000,
        "aud": ["d:1", "x:0"], "sub": "access_token", "at_hash": random_token(12),
        "display_name": format!("User {fy_id}"), "fy_id": fy_id, "appType": 100, "poa_flag": "N",
    }));
    inner.tokens.insert(
        access.clone(),
        Token {
            fy_id,
            app_id,
            expires_ms: expires,
        },
    );
    Json(json!({"s": "ok", "code": 200, "message": "", "access_token": access, "refresh_token": fake_jwt(json!({"sub": "refresh_token", "exp": now / 1000 + 15 * 86_400}))}))
        .into_response()
}

async fn profile(State(s): State<Arc<FyersState>>, headers: HeaderMap) -> Response {
    let now = (s.now)();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (app_id, token) = auth.split_once(':').unwrap_or_default();
    let inner = s.lock();
    let gateway = inner.tokens.get(token).is_some_and(|t| {
        inner
            .accounts
            .get(&t.fy_id)
            .is_some_and(|a| a.user.behaviour == FyersBehaviour::GatewayUnauthorized)
    });
    if gateway && inner.tokens.get(token).is_some_and(|t| now >= t.expires_ms) {
        return html(
            StatusCode::UNAUTHORIZED,
            "nginx",
            "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
        );
    }
    match inner.tokens.get(token) {
        Some(t) if t.app_id == app_id && now < t.expires_ms => Json(json!({
            "s": "ok", "code": 200, "message": "",
            "data": {"fy_id": t.fy_id, "name": format!("USER {}", t.fy_id), "display_name": null,
                     "email_id": "user@example.com", "PAN": "XXXXX0000X", "pin_change_date": "",
                     "mobile_number": "98XXXXXX10", "totp": true, "pwd_to_expire": 90, "ddpi_enabled": false}
        }))
        .into_response(),
        Some(t) if now >= t.expires_ms => error(StatusCode::UNAUTHORIZED, -8, "Your token has expired. Please generate a token"),
        _ => error(StatusCode::UNAUTHORIZED, -16, "Could not authenticate the user"),
    }
}

async fn generate_authcode(Query(q): Query<HashMap<String, String>>) -> Response {
    if !q.contains_key("client_id") || !q.contains_key("redirect_uri") {
        return error(StatusCode::BAD_REQUEST, -1044, "Invalid input");
    }
    html(
        StatusCode::OK,
        "nginx",
        "<!DOCTYPE html><html><head><title>FYERS Login</title></head><body><form id=\"login\">Client ID <input name=\"fy_id\"></form></body></html>",
    )
}
