//! A fake IIFL Capital: the login portal (`/omk/auth/access/...`, the provisional headless flow of
//! iifl.md) and the REST API (`/v1/getusersession`, `/v1/profile`) on two loopback listeners.
//!
//! Error bodies: the portal answers `{"status":"Not_Ok","code":"ECnnn","message":...,"result":[]}`,
//! the API `{"status":"Not_Ok","message":"ECnnn: ..."}`; the real shapes are not documented, and
//! the two differ on purpose so a strategy is exercised on both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aes::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::mess::{self, HostHabits, Realism};
use crate::record::{Recorder, TotpUse, track};
use crate::{FakeOptions, NowFn, Server, fake_jwt, ist, random_token, serve, sha256_hex, totp};

/// How a fake IIFL account behaves. A wrong password or TOTP code needs no behaviour (EC016,
/// EC036 come from the checks; 5 wrong passwords freeze the account, EC081).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum IiflBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// `client/verify` answers `isExist: "No"`.
    UnknownClient,
    /// `pwd/validate` answers EC081 (account frozen).
    Frozen,
    /// `pwd/validate` answers EC069 (password expired).
    PasswordExpired,
    /// `topt/verify` answers EC043 (TOTP not enabled).
    TotpNotEnabled,
    /// `topt/verify` refuses every code (EC036).
    TotpRejected,
    /// `topt/verify` refuses the first code of each login (EC036), accepts a correct one after.
    RejectFirstTotp,
    /// `topt/verify` answers EC055 (application not authorized).
    AppNotAuthorized,
    /// `getusersession` answers EC500 (IP address not authorized), HTTP 403.
    IpNotAuthorized,
    /// `getusersession` answers EC003 (generic, retry).
    Generic,
    /// `client/verify` answers 429.
    RateLimited,
    /// `client/verify` answers an HTML 503.
    Html503,
    /// `getusersession` answers a JSON 500.
    ServerError,
    /// `client/enckey` answers without `encKey`.
    UnexpectedShape,
    /// `getusersession` answers an HTML 503 the first time for the account, then works with the
    /// same authCode (the failed call does not use it up).
    UserSessionUnavailable,
    /// `topt/verify` answers a JSON 500 the first time for the account (before looking at the
    /// code: no TOTP use is recorded), then works.
    PortalTotpUnavailable,
}

/// The `Authorization` form `topt/verify` accepts (fake-wide; iifl.md). Any other form is
/// answered HTTP 200 `{"status":"Not_Ok","code":"EC003","message":"Something went wrong. Please
/// try again.","result":[]}`, which counts neither as a TOTP use nor as a failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IiflTotpAuth {
    /// `Bearer <userId> WEB <token>`, with `vendor` (the appKey) in the body.
    #[default]
    Web,
    /// `Bearer <userId> <token>`.
    Plain,
}

/// A fake IIFL account (one client, one app).
#[derive(Clone, Debug)]
pub struct IiflUser {
    /// Client code.
    pub client_id: String,
    /// Password.
    pub password: String,
    /// appKey.
    pub app_key: String,
    /// appSecret.
    pub app_secret: String,
    /// Base32 TOTP secret.
    pub totp_secret: String,
    /// The app's redirect URL (never fetched by a correct strategy).
    pub redirect_url: String,
    /// Behaviour.
    pub behaviour: IiflBehaviour,
}

impl IiflUser {
    /// A happy account with an unreachable redirect URL.
    pub fn new(
        client_id: &str,
        password: &str,
        app_key: &str,
        app_secret: &str,
        totp_secret: &str,
    ) -> IiflUser {
        IiflUser {
            client_id: client_id.into(),
            password: password.into(),
            app_key: app_key.into(),
            app_secret: app_secret.into(),
            totp_secret: totp_secret.into(),
            redirect_url: "http://127.0.0.1:9/iifl/redirect".into(),
            behaviour: IiflBehaviour::Happy,
        }
    }

    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: IiflBehaviour) -> IiflUser {
        self.behaviour = behaviour;
        self
    }
}

struct Account {
    user: IiflUser,
    secret: Vec<u8>,
    enc_key: Option<String>,
    portal_token: Option<String>,
    password_failures: u32,
    refused_once: bool,
    used_steps: HashSet<u64>,
    /// `UserSessionUnavailable` answered its 503.
    session_503_done: bool,
    /// `PortalTotpUnavailable` answered its 500.
    totp_500_done: bool,
}

struct AuthCode {
    client: String,
    created_ms: i64,
}

struct Session {
    client: String,
    expires_ms: i64,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    auth_codes: HashMap<String, AuthCode>,
    sessions: HashMap<String, Session>,
}

struct IiflState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
    realism: Realism,
    totp_auth: Mutex<IiflTotpAuth>,
}

impl IiflState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const AUTH_CODE_TTL_MS: i64 = 5 * 60_000;

/// A fake IIFL Capital on two loopback listeners (portal and API).
pub struct FakeIifl {
    portal: Server,
    api: Server,
    state: Arc<IiflState>,
}

impl std::fmt::Debug for FakeIifl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIifl")
            .field("portal", &self.portal.url)
            .field("api", &self.api.url)
            .finish()
    }
}

fn portal_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"status": "Not_Ok", "code": code, "message": message, "result": []})),
    )
        .into_response()
}

fn api_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"status": "Not_Ok", "message": message})),
    )
        .into_response()
}

fn portal_ok(result: Value) -> Response {
    Json(json!({"status": "Ok", "message": "Success", "result": [result]})).into_response()
}

fn html_503() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>503 Service Temporarily Unavailable</title></head><body>Maintenance</body></html>",
    )
        .into_response()
}

/// OpenSSL "Salted__" AES-256-CBC decryption with EVP_BytesToKey(MD5).
fn openssl_decrypt(data: &str, passphrase: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    if raw.len() < 32 || &raw[..8] != b"Salted__" {
        return None;
    }
    let (salt, ciphertext) = (&raw[8..16], &raw[16..]);
    let mut key_iv = Vec::with_capacity(48);
    let mut prev: Vec<u8> = Vec::new();
    while key_iv.len() < 48 {
        let mut h = Md5::new();
        h.update(&prev);
        h.update(passphrase.as_bytes());
        h.update(salt);
        prev = h.finalize().to_vec();
        key_iv.extend_from_slice(&prev);
    }
    let cipher =
        cbc::Decryptor::<aes::Aes256>::new_from_slices(&key_iv[..32], &key_iv[32..48]).ok()?;
    let plain = cipher.decrypt_padded_vec::<Pkcs7>(ciphertext).ok()?;
    String::from_utf8(plain).ok()
}

impl FakeIifl {
    /// Start on the system clock.
    pub async fn start() -> FakeIifl {
        FakeIifl::start_with(FakeOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeIifl {
        let state = Arc::new(IiflState {
            inner: Mutex::default(),
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
            realism: options.realism,
            totp_auth: Mutex::default(),
        });
        let layer = axum::middleware::from_fn_with_state(state.recorder.clone(), track);
        let portal = Router::new()
            .route("/", get(login_page))
            .route("/omk/auth/access/client/verify", post(client_verify))
            .route("/omk/auth/access/client/enckey", post(client_enckey))
            .route("/omk/auth/access/v1/pwd/validate", post(pwd_validate))
            .route("/omk/auth/access/topt/verify", post(topt_verify))
            .route_layer(layer.clone())
            .with_state(state.clone());
        let api = Router::new()
            .route("/v1/getusersession", post(get_user_session))
            .route("/v1/profile", get(profile))
            .route("/v1/profile/logout", post(logout))
            .route_layer(layer)
            .with_state(state.clone());
        let portal_habits = HostHabits {
            json_type: "text/plain;charset=UTF-8",
            foreign_cookie: None,
            jsessionid: true,
        };
        FakeIifl {
            portal: serve(mess::apply(portal, &options, portal_habits)).await,
            api: serve(mess::apply(api, &options, HostHabits::json())).await,
            state,
        }
    }

    /// Base URL of the portal.
    pub fn portal_url(&self) -> String {
        self.portal.url.clone()
    }

    /// Base URL of the API (with `/v1`).
    pub fn api_url(&self) -> String {
        format!("{}/v1", self.api.url)
    }

    /// `{"portal_url", "api_url"}` as `[brokers.iifl]` would configure them.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("portal_url".into(), self.portal_url()),
            ("api_url".into(), self.api_url()),
        ])
    }

    /// Add (or replace) an account.
    pub fn add_user(&self, user: IiflUser) {
        let secret = totp::secret_bytes(&user.totp_secret);
        self.state.lock().accounts.insert(
            user.client_id.to_ascii_uppercase(),
            Account {
                user,
                secret,
                enc_key: None,
                portal_token: None,
                password_failures: 0,
                refused_once: false,
                used_steps: HashSet::new(),
                session_503_done: false,
                totp_500_done: false,
            },
        );
    }

    /// Change an account's behaviour.
    pub fn set_behaviour(&self, client_id: &str, behaviour: IiflBehaviour) {
        if let Some(a) = self
            .state
            .lock()
            .accounts
            .get_mut(&client_id.to_ascii_uppercase())
        {
            a.user.behaviour = behaviour;
        }
    }

    /// The `Authorization` form `topt/verify` accepts from now on (default [`IiflTotpAuth::Web`]).
    pub fn set_totp_auth(&self, form: IiflTotpAuth) {
        *self
            .state
            .totp_auth
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = form;
    }

    /// The `Authorization` form `topt/verify` accepts.
    pub fn totp_auth(&self) -> IiflTotpAuth {
        *self
            .state
            .totp_auth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// What the fake saw (passwords are recorded after decryption).
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether `/v1/profile` would accept this session now.
    pub fn token_is_valid(&self, session: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .sessions
            .get(session)
            .is_some_and(|s| now < s.expires_ms)
    }

    /// What a browser ends with after a person logs in at `login_url` (`{portal}/?v=1&appkey=..
    /// &redirecturl=..`) as `client_id`: the redirect URL plus `authCode` and `clientId` under the
    /// given parameter names. With `naive_join`, the portal glues `?` even when the redirect URL
    /// already has a query (a shape a strategy must survive). Mints a real authCode.
    pub fn browser_login(
        &self,
        login_url: &str,
        client_id: &str,
        names: (&str, &str),
        naive_join: bool,
    ) -> Result<String, String> {
        let url = url::Url::parse(login_url).map_err(|e| e.to_string())?;
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let (app_key, redirect) = (
            q.get("appkey").ok_or("no appkey")?,
            q.get("redirecturl").ok_or("no redirecturl")?,
        );
        let mut inner = self.state.lock();
        let account = inner
            .accounts
            .get(&client_id.to_ascii_uppercase())
            .ok_or("no such client")?;
        if &account.user.app_key != app_key {
            return Err("the appkey is not this client's app".into());
        }
        let client = account.user.client_id.clone();
        let code = random_token(24);
        inner.auth_codes.insert(
            code.clone(),
            AuthCode {
                client: client.clone(),
                created_ms: (self.state.now)(),
            },
        );
        let sep = if naive_join || !redirect.contains('?') {
            '?'
        } else {
            '&'
        };
        Ok(format!(
            "{redirect}{sep}{}={code}&{}={client}",
            names.0, names.1
        ))
    }
}

async fn login_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let status = if q.contains_key("appkey") {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html><html><body><div id=\"root\"></div></body></html>",
    )
        .into_response()
}

fn field(body: &Value, key: &str) -> String {
    body.get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn client_verify(State(s): State<Arc<IiflState>>, Json(body): Json<Value>) -> Response {
    let user_id = field(&body, "userId");
    s.recorder.login_begin(&user_id);
    let inner = s.lock();
    let end = |r: Response| {
        s.recorder.login_end(&user_id);
        r
    };
    match inner.accounts.get(&user_id.to_ascii_uppercase()) {
        Some(a) if a.user.behaviour == IiflBehaviour::RateLimited => end(api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
        )),
        Some(a) if a.user.behaviour == IiflBehaviour::Html503 => end(html_503()),
        Some(a) if a.user.behaviour != IiflBehaviour::UnknownClient => {
            portal_ok(json!({"isExist": "Yes", "ucc": a.user.client_id}))
        }
        _ => end(portal_ok(json!({"isExist": "No"}))),
    }
}

async fn client_enckey(State(s): State<Arc<IiflState>>, Json(body): Json<Value>) -> Response {
    let user_id = field(&body, "userId");
    let mut inner = s.lock();
    let Some(account) = inner.accounts.get_mut(&user_id.to_ascii_uppercase()) else {
        s.recorder.login_end(&user_id);
        return portal_error(StatusCode::OK, "EC016", "Invalid userId or password");
    };
    if account.user.behaviour == IiflBehaviour::UnexpectedShape {
        s.recorder.login_end(&user_id);
        return portal_ok(json!({"key": "moved"}));
    }
    let key = random_token(16);
    account.enc_key = Some(key.clone());
    portal_ok(json!({"encKey": key}))
}

async fn pwd_validate(State(s): State<Arc<IiflState>>, Json(body): Json<Value>) -> Response {
    let user_id = field(&body, "userId");
    let end = |r: Response| {
        s.recorder.login_end(&user_id);
        r
    };
    if field(&body, "source") != "WEB" {
        return end(portal_error(StatusCode::OK, "EC003", "Invalid source"));
    }
    let mut inner = s.lock();
    let Some(account) = inner.accounts.get_mut(&user_id.to_ascii_uppercase()) else {
        return end(portal_error(
            StatusCode::OK,
            "EC016",
            "Invalid userId or password",
        ));
    };
    let Some(key) = account.enc_key.take() else {
        return end(portal_error(StatusCode::OK, "EC044", "Token is not valid"));
    };
    let password = openssl_decrypt(&field(&body, "userData"), &key);
    s.recorder
        .password(&user_id, password.as_deref().unwrap_or("<undecryptable>"));
    match account.user.behaviour {
        IiflBehaviour::Frozen => {
            return end(portal_error(StatusCode::OK, "EC081", "Account is frozen"));
        }
        IiflBehaviour::PasswordExpired => {
            return end(portal_error(StatusCode::OK, "EC069", "Password expired"));
        }
        _ => {}
    }
    if account.password_failures >= 5 {
        return end(portal_error(StatusCode::OK, "EC081", "Account is frozen"));
    }
    if password.as_deref() != Some(account.user.password.as_str()) {
        account.password_failures += 1;
        return end(portal_error(
            StatusCode::OK,
            "EC016",
            "Invalid userId or password",
        ));
    }
    let token = random_token(48);
    account.portal_token = Some(token.clone());
    account.refused_once = false;
    portal_ok(json!({"token": token}))
}

/// Marks `topt/verify`'s success answer (every other answer is an error page in realistic mode).
#[derive(Clone, Copy)]
struct TotpVerified;

async fn topt_verify(
    State(s): State<Arc<IiflState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut r = topt_verify_answer(&s, &headers, &body);
    if s.realism == Realism::Realistic && r.extensions().get::<TotpVerified>().is_none() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html;charset=UTF-8"),
        );
    }
    r
}

/// The `Authorization` of `topt/verify` split as `form` has it: `(userId, token)`.
fn totp_bearer(auth: &str, form: IiflTotpAuth) -> Option<(&str, &str)> {
    let parts: Vec<&str> = auth.strip_prefix("Bearer ")?.split(' ').collect();
    match (form, parts.as_slice()) {
        (IiflTotpAuth::Web, [user, "WEB", token]) | (IiflTotpAuth::Plain, [user, token]) => {
            Some((user, token))
        }
        _ => None,
    }
}

fn topt_verify_answer(s: &IiflState, headers: &HeaderMap, body: &Value) -> Response {
    let user_id = field(body, "userId");
    let code = field(body, "totp");
    let now = (s.now)();
    let end = |r: Response| {
        s.recorder.login_end(&user_id);
        r
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut inner = s.lock();
    let Some(account) = inner.accounts.get_mut(&user_id.to_ascii_uppercase()) else {
        return end(portal_error(
            StatusCode::OK,
            "EC016",
            "Invalid userId or password",
        ));
    };
    let form = *s.totp_auth.lock().unwrap_or_else(|e| e.into_inner());
    let Some((auth_user, auth_token)) = totp_bearer(&auth, form) else {
        return end(portal_error(
            StatusCode::OK,
            "EC003",
            "Something went wrong. Please try again.",
        ));
    };
    if !auth_user.eq_ignore_ascii_case(&account.user.client_id)
        || account.portal_token.as_deref() != Some(auth_token)
        || field(body, "source") != "WEB"
    {
        let status = match s.realism {
            Realism::Realistic => StatusCode::OK,
            Realism::Ideal => StatusCode::UNAUTHORIZED,
        };
        return end(portal_error(status, "EC044", "Token is not valid"));
    }
    if field(body, "vendor") != account.user.app_key {
        return end(portal_error(StatusCode::OK, "EC054", "appKey is incorrect"));
    }
    if account.user.behaviour == IiflBehaviour::PortalTotpUnavailable && !account.totp_500_done {
        account.totp_500_done = true;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({
                "timestamp": crate::mess::http_date(crate::mess::system_secs()),
                "status": 500,
                "error": "Internal Server Error",
                "path": "/omk/auth/access/topt/verify"
            })),
        )
            .into_response();
    }
    match account.user.behaviour {
        IiflBehaviour::TotpNotEnabled => {
            return end(portal_error(StatusCode::OK, "EC043", "TOTP is not enabled"));
        }
        IiflBehaviour::AppNotAuthorized => {
            return end(portal_error(
                StatusCode::OK,
                "EC055",
                "Please authorize the application",
            ));
        }
        _ => {}
    }
    if code.is_empty() {
        return end(portal_error(StatusCode::OK, "EC034", "TOTP is empty"));
    }
    let step = totp::matching_step(&account.secret, &code, now);
    let fresh = step.is_some_and(|st| !account.used_steps.contains(&st));
    let refuse = account.user.behaviour == IiflBehaviour::TotpRejected
        || (account.user.behaviour == IiflBehaviour::RejectFirstTotp && !account.refused_once);
    let accepted = fresh && !refuse;
    if let Some(st) = step {
        account.used_steps.insert(st);
    }
    s.recorder.totp(
        &user_id,
        TotpUse {
            code,
            step,
            accepted,
        },
    );
    if !accepted {
        account.refused_once = true;
        // The portal keeps the password step's token: the person may retype the code.
        return portal_error(StatusCode::OK, "EC036", "Invalid TOTP");
    }
    account.portal_token = None;
    let (client, redirect) = (
        account.user.client_id.clone(),
        account.user.redirect_url.clone(),
    );
    let auth_code = random_token(24);
    inner.auth_codes.insert(
        auth_code.clone(),
        AuthCode {
            client: client.clone(),
            created_ms: now,
        },
    );
    let mut r = portal_ok(
        json!({"redirectUrl": format!("{redirect}?authCode={auth_code}&clientId={client}")}),
    );
    r.extensions_mut().insert(TotpVerified);
    r
}

async fn get_user_session(State(s): State<Arc<IiflState>>, Json(body): Json<Value>) -> Response {
    let checksum = field(&body, "checkSum");
    let now = (s.now)();
    let mut inner = s.lock();
    let found = inner.auth_codes.iter().find_map(|(code, a)| {
        let account = inner.accounts.get(&a.client.to_ascii_uppercase())?;
        (sha256_hex(&[&a.client, code, &account.user.app_secret]) == checksum)
            .then(|| (code.clone(), a.client.clone(), a.created_ms))
    });
    let Some((code, client, created)) = found else {
        return api_error(StatusCode::BAD_REQUEST, "Invalid checksum or authCode");
    };
    let end = |r: Response| {
        s.recorder.login_end(&client);
        r
    };
    if let Some(account) = inner.accounts.get_mut(&client.to_ascii_uppercase())
        && account.user.behaviour == IiflBehaviour::UserSessionUnavailable
        && !account.session_503_done
    {
        account.session_503_done = true;
        return html_503();
    }
    inner.auth_codes.remove(&code);
    if now - created > AUTH_CODE_TTL_MS {
        return end(api_error(
            StatusCode::BAD_REQUEST,
            "EC044: authCode has expired",
        ));
    }
    let behaviour = inner
        .accounts
        .get(&client.to_ascii_uppercase())
        .map(|a| a.user.behaviour.clone())
        .unwrap_or_default();
    match behaviour {
        IiflBehaviour::IpNotAuthorized => {
            return end(api_error(
                StatusCode::FORBIDDEN,
                "EC500: IP address not authorized",
            ));
        }
        IiflBehaviour::Generic => {
            return end(api_error(
                StatusCode::OK,
                "EC003: Something went wrong, please retry",
            ));
        }
        IiflBehaviour::ServerError => {
            return end(api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
            ));
        }
        _ => {}
    }
    // The JWT says ~180 days; the session really dies at the next 00:00 IST.
    let session =
        fake_jwt(json!({"clientId": client, "iat": now / 1000, "exp": now / 1000 + 180 * 86_400}));
    inner.sessions.insert(
        session.clone(),
        Session {
            client: client.clone(),
            expires_ms: ist::next_at(now, 0),
        },
    );
    end(Json(json!({"status": "Ok", "userSession": session})).into_response())
}

fn session_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

async fn profile(State(s): State<Arc<IiflState>>, headers: HeaderMap) -> Response {
    let now = (s.now)();
    let inner = s.lock();
    match session_of(&headers).and_then(|t| inner.sessions.get(&t)) {
        Some(session) if now < session.expires_ms => Json(json!({
            "status": "Ok",
            "message": "Success",
            "result": {"clientId": session.client, "clientName": format!("Client {}", session.client), "isTotpEnabled": "Y"}
        }))
        .into_response(),
        _ => (StatusCode::UNAUTHORIZED, Json(json!({"status": "EC044", "message": "Token is not valid"}))).into_response(),
    }
}

async fn logout(State(s): State<Arc<IiflState>>, headers: HeaderMap) -> Response {
    let mut inner = s.lock();
    match session_of(&headers).and_then(|t| inner.sessions.remove(&t)) {
        Some(_) => Json(json!({"status": "Ok", "message": "Logged out"})).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": "EC044", "message": "Token is not valid"})),
        )
            .into_response(),
    }
}
