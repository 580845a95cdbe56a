//! A fake Kite: the web login host (`/connect/*`, `/api/*`) and the REST API host
//! (`/session/token`, `/user/profile`) on two loopback listeners sharing one state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

use crate::record::{Recorder, TotpUse, track};
use crate::{FakeOptions, NowFn, Server, ist, random_token, serve, sha256_hex, totp};

/// How a fake Kite account behaves. Wrong passwords and wrong TOTP codes need no behaviour: the
/// fake checks them (and blocks the account after 5 failures of either, as Kite does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KiteBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// `/api/login` says the account is blocked.
    Blocked,
    /// `/api/twofa` refuses every code ("Invalid TOTP").
    TotpRejected,
    /// `/api/twofa` refuses the first code of each login, accepts a correct one after.
    RejectFirstTotp,
    /// `/api/twofa` answers TwoFAException "The login session has expired or doesn't exist" to
    /// a correct code (the 2026 report of headless logins being refused).
    SessionExpiredAfterTwofa,
    /// `/connect/finish` redirects to `/connect/authorize` (the app was never authorized).
    AuthorizeHop,
    /// `/api/login` offers only `app_code` and `sms`.
    AppCodeOnly,
    /// `/api/login` answers 429 NetworkException.
    RateLimited,
    /// `/connect/login` answers a Cloudflare HTML 503.
    Cloudflare,
    /// `/session/token` answers 500 GeneralException.
    ServerError,
    /// `/api/login` answers success without `request_id`.
    UnexpectedShape,
    /// `/connect/finish` takes a relative extra hop before the redirect, which puts
    /// `request_token` first and omits `type=login` (older style).
    ExtraHop,
}

/// A fake Kite account (one user, one app).
#[derive(Clone, Debug)]
pub struct KiteUser {
    /// Kite user id, e.g. `AB1234`.
    pub user_id: String,
    /// Login password.
    pub password: String,
    /// The app's api_key.
    pub api_key: String,
    /// The app's api_secret.
    pub api_secret: String,
    /// Base32 TOTP secret.
    pub totp_secret: String,
    /// The app's registered redirect URL (never fetched by a correct strategy).
    pub redirect_url: String,
    /// Behaviour.
    pub behaviour: KiteBehaviour,
}

impl KiteUser {
    /// A happy account whose redirect URL is unreachable (`http://127.0.0.1:9/...`).
    pub fn new(
        user_id: &str,
        password: &str,
        api_key: &str,
        api_secret: &str,
        totp_secret: &str,
    ) -> KiteUser {
        KiteUser {
            user_id: user_id.into(),
            password: password.into(),
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            totp_secret: totp_secret.into(),
            redirect_url: "http://127.0.0.1:9/kite/redirect".into(),
            behaviour: KiteBehaviour::Happy,
        }
    }

    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: KiteBehaviour) -> KiteUser {
        self.behaviour = behaviour;
        self
    }

    /// With a redirect URL (e.g. the daemon's `/callback/kite`).
    pub fn with_redirect_url(mut self, url: &str) -> KiteUser {
        self.redirect_url = url.into();
        self
    }
}

struct Account {
    user: KiteUser,
    secret: Vec<u8>,
    password_failures: u32,
    twofa_failures: u32,
    used_steps: HashSet<u64>,
}

impl Account {
    fn blocked(&self) -> bool {
        self.user.behaviour == KiteBehaviour::Blocked
            || self.password_failures >= 5
            || self.twofa_failures >= 5
    }
}

struct LoginSession {
    api_key: String,
    redirect_params: Option<String>,
    cookie: String,
    user: Option<String>,
    authenticated: bool,
}

struct Pending {
    user: String,
    sess_id: String,
    twofa_type: String,
    refused_once: bool,
}

struct RequestToken {
    user: String,
    api_key: String,
    created_ms: i64,
}

struct Access {
    user: String,
    api_key: String,
    expires_ms: i64,
}

#[derive(Default)]
struct Inner {
    /// By uppercase user id.
    accounts: HashMap<String, Account>,
    /// By sess_id.
    sessions: HashMap<String, LoginSession>,
    /// By request_id.
    pending: HashMap<String, Pending>,
    /// Unused request tokens.
    request_tokens: HashMap<String, RequestToken>,
    /// Live access tokens.
    access: HashMap<String, Access>,
}

struct KiteState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
}

impl KiteState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Request tokens live "a few minutes" (kite.md).
const REQUEST_TOKEN_TTL_MS: i64 = 5 * 60_000;

/// A fake Kite on two loopback listeners (web and API).
pub struct FakeKite {
    web: Server,
    api: Server,
    state: Arc<KiteState>,
}

impl std::fmt::Debug for FakeKite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKite")
            .field("web", &self.web.url)
            .field("api", &self.api.url)
            .finish()
    }
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        Json(
            json!({"status": "error", "message": message, "data": null, "error_type": error_type}),
        ),
    )
        .into_response()
}

fn success(data: Value) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

fn html(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.to_owned(),
    )
        .into_response()
}

fn redirect(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
}

fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn with_query(base: &str, pairs: &[(String, String)]) -> String {
    let mut url = url::Url::parse(base).expect("a valid redirect URL");
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

impl FakeKite {
    /// Start on the system clock.
    pub async fn start() -> FakeKite {
        FakeKite::start_with(FakeOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeKite {
        let state = Arc::new(KiteState {
            inner: Mutex::default(),
            now: options.now,
            recorder: Arc::new(Recorder::new(options.latency)),
        });
        let layer = axum::middleware::from_fn_with_state(state.recorder.clone(), track);
        let web = Router::new()
            .route("/connect/login", get(connect_login))
            .route("/api/connect/session", get(connect_session))
            .route("/api/login", post(api_login))
            .route("/api/twofa", post(api_twofa))
            .route("/connect/finish", get(connect_finish))
            .route("/connect/authorize", get(connect_authorize))
            .route_layer(layer.clone())
            .with_state(state.clone());
        let api = Router::new()
            .route("/session/token", post(session_token).delete(session_delete))
            .route("/user/profile", get(user_profile))
            .route_layer(layer)
            .with_state(state.clone());
        FakeKite {
            web: serve(web).await,
            api: serve(api).await,
            state,
        }
    }

    /// Base URL of the web login host.
    pub fn web_url(&self) -> &str {
        &self.web.url
    }

    /// Base URL of the REST API host.
    pub fn api_url(&self) -> &str {
        &self.api.url
    }

    /// `{"web_url", "api_url"}` as `[brokers.kite]` would configure them.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("web_url".into(), self.web.url.clone()),
            ("api_url".into(), self.api.url.clone()),
        ])
    }

    /// Add (or replace) an account.
    pub fn add_user(&self, user: KiteUser) {
        let secret = totp::secret_bytes(&user.totp_secret);
        self.state.lock().accounts.insert(
            user.user_id.to_ascii_uppercase(),
            Account {
                user,
                secret,
                password_failures: 0,
                twofa_failures: 0,
                used_steps: HashSet::new(),
            },
        );
    }

    /// Change an account's behaviour.
    pub fn set_behaviour(&self, user_id: &str, behaviour: KiteBehaviour) {
        if let Some(a) = self
            .state
            .lock()
            .accounts
            .get_mut(&user_id.to_ascii_uppercase())
        {
            a.user.behaviour = behaviour;
        }
    }

    /// What the fake saw.
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether the account is blocked (behaviour, or 5 failures).
    pub fn is_blocked(&self, user_id: &str) -> bool {
        self.state
            .lock()
            .accounts
            .get(&user_id.to_ascii_uppercase())
            .is_some_and(Account::blocked)
    }

    /// Whether `/user/profile` would accept this token now.
    pub fn token_is_valid(&self, api_key: &str, access_token: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .access
            .get(access_token)
            .is_some_and(|a| a.api_key == api_key && now < a.expires_ms)
    }

    /// What a browser ends with after a person logs in at `login_url` (an assisted-login URL:
    /// `/connect/login?v=3&api_key=K[&redirect_params=...]`) as `user_id`: the app's redirect URL
    /// with Kite's query and the echoed `redirect_params`. Mints a real request token.
    pub fn browser_login(&self, login_url: &str, user_id: &str) -> Result<String, String> {
        let url = url::Url::parse(login_url).map_err(|e| e.to_string())?;
        if url.path() != "/connect/login" {
            return Err(format!("not a Kite login URL: {}", url.path()));
        }
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let api_key = q.get("api_key").ok_or("no api_key")?;
        let mut inner = self.state.lock();
        let account = inner
            .accounts
            .get(&user_id.to_ascii_uppercase())
            .ok_or("no such user")?;
        if &account.user.api_key != api_key {
            return Err("the api_key is not this user's app".into());
        }
        let (user, redirect_url) = (
            account.user.user_id.clone(),
            account.user.redirect_url.clone(),
        );
        let token = random_token(32);
        inner.request_tokens.insert(
            token.clone(),
            RequestToken {
                user,
                api_key: api_key.clone(),
                created_ms: (self.state.now)(),
            },
        );
        Ok(final_redirect(
            &redirect_url,
            q.get("redirect_params").map(String::as_str),
            &token,
            false,
        ))
    }
}

/// The app redirect carrying `request_token`, with `redirect_params` echoed.
fn final_redirect(
    redirect_url: &str,
    redirect_params: Option<&str>,
    token: &str,
    old_style: bool,
) -> String {
    let mut pairs: Vec<(String, String)> = redirect_params
        .map(|p| {
            url::form_urlencoded::parse(p.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    if old_style {
        pairs.push(("request_token".into(), token.into()));
        pairs.push(("action".into(), "login".into()));
        pairs.push(("status".into(), "success".into()));
    } else {
        pairs.extend([
            ("action".into(), "login".into()),
            ("type".into(), "login".into()),
            ("status".into(), "success".into()),
            ("request_token".into(), token.into()),
        ]);
    }
    with_query(redirect_url, &pairs)
}

fn behaviour_of_app(inner: &Inner, api_key: &str) -> Option<KiteBehaviour> {
    inner
        .accounts
        .values()
        .find(|a| a.user.api_key == api_key)
        .map(|a| a.user.behaviour)
}

/// S1 / S1a.
async fn connect_login(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let api_key = q.get("api_key").cloned().unwrap_or_default();
    let mut inner = s.lock();
    let Some(behaviour) = behaviour_of_app(&inner, &api_key) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid `api_key`.",
        );
    };
    if behaviour == KiteBehaviour::Cloudflare {
        let mut r = html(
            StatusCode::SERVICE_UNAVAILABLE,
            "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>Checking your browser</body></html>",
        );
        r.headers_mut()
            .insert(header::SERVER, HeaderValue::from_static("cloudflare"));
        r.headers_mut()
            .insert("cf-ray", HeaderValue::from_static("8a1b2c3d4e5f-BOM"));
        return r;
    }
    if let Some(sess_id) = q.get("sess_id") {
        // S1a, or the extra hop of `ExtraHop` once the session is authenticated.
        let Some(session) = inner.sessions.get(sess_id) else {
            return html(
                StatusCode::BAD_REQUEST,
                "<html><body>Invalid session</body></html>",
            );
        };
        if session.authenticated && q.contains_key("skip_session") {
            let user = session.user.clone().unwrap_or_default();
            let redirect_params = session.redirect_params.clone();
            let Some(account) = inner.accounts.get(&user.to_ascii_uppercase()) else {
                return html(
                    StatusCode::BAD_REQUEST,
                    "<html><body>Invalid session</body></html>",
                );
            };
            let redirect_url = account.user.redirect_url.clone();
            let token = mint_request_token(&mut inner, &s, &user, &api_key);
            return redirect(&final_redirect(
                &redirect_url,
                redirect_params.as_deref(),
                &token,
                true,
            ));
        }
        return html(
            StatusCode::OK,
            "<!DOCTYPE html><html><body><form id=\"login\"></form></body></html>",
        );
    }
    let sess_id = random_token(32);
    let cookie = random_token(40);
    inner.sessions.insert(
        sess_id.clone(),
        LoginSession {
            api_key: api_key.clone(),
            redirect_params: q.get("redirect_params").cloned(),
            cookie: cookie.clone(),
            user: None,
            authenticated: false,
        },
    );
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let location = format!(
        "http://{host}/connect/login?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("api_key", &api_key)
            .append_pair("sess_id", &sess_id)
            .finish()
    );
    let mut r = redirect(&location);
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "kf_session={cookie}; Path=/; HttpOnly; SameSite=None"
        ))
        .expect("cookie"),
    );
    r
}

/// S1b.
async fn connect_session(
    State(s): State<Arc<KiteState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let inner = s.lock();
    match q.get("sess_id").and_then(|id| inner.sessions.get(id)) {
        Some(session) => success(json!({"api_key": session.api_key, "sess_id": q.get("sess_id")})),
        None => error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid session.",
        ),
    }
}

fn session_of<'a>(inner: &'a Inner, headers: &HeaderMap) -> Option<(&'a String, &'a LoginSession)> {
    let cookie = cookies(headers).remove("kf_session")?;
    inner.sessions.iter().find(|(_, s)| s.cookie == cookie)
}

/// S2.
async fn api_login(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let user_id = f.get("user_id").cloned().unwrap_or_default();
    let password = f.get("password").cloned().unwrap_or_default();
    if f.get("type").map(String::as_str) != Some("user_id") {
        return error(StatusCode::BAD_REQUEST, "InputException", "Invalid `type`.");
    }
    s.recorder.login_begin(&user_id);
    s.recorder.password(&user_id, &password);
    let mut inner = s.lock();
    let Some(sess_id) = session_of(&inner, &headers).map(|(id, _)| id.clone()) else {
        s.recorder.login_end(&user_id);
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Missing or invalid login session.",
        );
    };
    let Some(account) = inner.accounts.get_mut(&user_id.to_ascii_uppercase()) else {
        s.recorder.login_end(&user_id);
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid username or password.",
        );
    };
    let fail = |r: Response| {
        s.recorder.login_end(&user_id);
        r
    };
    match account.user.behaviour {
        KiteBehaviour::RateLimited => {
            return fail(error(
                StatusCode::TOO_MANY_REQUESTS,
                "NetworkException",
                "Too many requests",
            ));
        }
        KiteBehaviour::UnexpectedShape => {
            return fail(success(
                json!({"user_id": account.user.user_id, "status": "ok"}),
            ));
        }
        _ => {}
    }
    if account.blocked() {
        return fail(error(
            StatusCode::FORBIDDEN,
            "UserException",
            "Your account has been blocked for too many incorrect attempts. Reset your password to unblock it.",
        ));
    }
    if account.user.password != password {
        account.password_failures += 1;
        return fail(error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid username or password.",
        ));
    }
    let (twofa_type, twofa_types) = if account.user.behaviour == KiteBehaviour::AppCodeOnly {
        ("app_code", vec!["app_code", "sms"])
    } else {
        ("totp", vec!["totp"])
    };
    let user = account.user.user_id.clone();
    let request_id = random_token(40);
    inner.pending.insert(
        request_id.clone(),
        Pending {
            user: user.clone(),
            sess_id,
            twofa_type: twofa_type.into(),
            refused_once: false,
        },
    );
    success(json!({
        "user_id": user,
        "request_id": request_id,
        "twofa_type": twofa_type,
        "twofa_types": twofa_types,
        "twofa_status": "active",
        "profile": {}
    }))
}

/// S3.
async fn api_twofa(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (user_id, request_id, code, twofa_type) = (
        get("user_id"),
        get("request_id"),
        get("twofa_value"),
        get("twofa_type"),
    );
    let now = (s.now)();
    let mut inner = s.lock();
    let fail = |r: Response| {
        s.recorder.login_end(&user_id);
        r
    };
    let Some(sess_id) = session_of(&inner, &headers).map(|(id, _)| id.clone()) else {
        return fail(error(
            StatusCode::FORBIDDEN,
            "TwoFAException",
            "The login session has expired or doesn't exist. Please try again.",
        ));
    };
    let Some(pending) = inner.pending.get(&request_id) else {
        return fail(error(
            StatusCode::FORBIDDEN,
            "TwoFAException",
            "The login session has expired or doesn't exist. Please try again.",
        ));
    };
    if pending.sess_id != sess_id || !pending.user.eq_ignore_ascii_case(&user_id) {
        return fail(error(
            StatusCode::FORBIDDEN,
            "TwoFAException",
            "The login session has expired or doesn't exist. Please try again.",
        ));
    }
    if pending.twofa_type != twofa_type {
        return fail(error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid `twofa_type`.",
        ));
    }
    let refused_once = pending.refused_once;
    let user_key = user_id.to_ascii_uppercase();
    let Some(account) = inner.accounts.get_mut(&user_key) else {
        return fail(error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Invalid user.",
        ));
    };
    let step = totp::matching_step(&account.secret, &code, now);
    let fresh = step.is_some_and(|st| !account.used_steps.contains(&st));
    let behaviour = account.user.behaviour;
    let refuse = behaviour == KiteBehaviour::TotpRejected
        || (behaviour == KiteBehaviour::RejectFirstTotp && !refused_once);
    let accepted = fresh && !refuse;
    if let Some(st) = step {
        account.used_steps.insert(st);
    }
    s.recorder.totp(
        &user_id,
        TotpUse {
            code: code.clone(),
            step,
            accepted,
        },
    );
    if account.blocked() {
        return fail(error(
            StatusCode::FORBIDDEN,
            "UserException",
            "Your account has been blocked for too many incorrect attempts. Reset your password to unblock it.",
        ));
    }
    if !accepted {
        account.twofa_failures += 1;
        if let Some(p) = inner.pending.get_mut(&request_id) {
            p.refused_once = true;
        }
        // Kite lets the person retype the code on the same request_id: the login stays open.
        return error(StatusCode::FORBIDDEN, "TwoFAException", "Invalid TOTP");
    }
    if behaviour == KiteBehaviour::SessionExpiredAfterTwofa {
        return fail(error(
            StatusCode::FORBIDDEN,
            "TwoFAException",
            "The login session has expired or doesn't exist. Please try again.",
        ));
    }
    let user = account.user.user_id.clone();
    inner.pending.remove(&request_id);
    if let Some(session) = inner.sessions.get_mut(&sess_id) {
        session.user = Some(user.clone());
        session.authenticated = true;
    }
    let mut r = success(json!({"profile": {}}));
    for cookie in [
        format!("enctoken={}; Path=/; HttpOnly", random_token(40)),
        format!("public_token={}; Path=/", random_token(32)),
        format!("user_id={user}; Path=/"),
    ] {
        r.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).expect("cookie"),
        );
    }
    r
}

fn mint_request_token(inner: &mut Inner, s: &KiteState, user: &str, api_key: &str) -> String {
    let token = random_token(32);
    inner.request_tokens.insert(
        token.clone(),
        RequestToken {
            user: user.to_owned(),
            api_key: api_key.to_owned(),
            created_ms: (s.now)(),
        },
    );
    token
}

/// S4.
async fn connect_finish(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let api_key = q.get("api_key").cloned().unwrap_or_default();
    let sess_id = q.get("sess_id").cloned().unwrap_or_default();
    let has_enctoken = cookies(&headers).contains_key("enctoken");
    let mut inner = s.lock();
    let login_page = format!("/connect/login?api_key={api_key}&sess_id={sess_id}");
    let Some((cookie_sess, session)) = session_of(&inner, &headers) else {
        return redirect(&login_page);
    };
    if *cookie_sess != sess_id
        || !session.authenticated
        || !has_enctoken
        || session.api_key != api_key
    {
        return redirect(&login_page);
    }
    let user = session.user.clone().unwrap_or_default();
    let redirect_params = session.redirect_params.clone();
    let Some(account) = inner.accounts.get(&user.to_ascii_uppercase()) else {
        return redirect(&login_page);
    };
    let (behaviour, redirect_url) = (account.user.behaviour, account.user.redirect_url.clone());
    match behaviour {
        KiteBehaviour::AuthorizeHop => {
            s.recorder.login_end(&user);
            redirect(&format!(
                "/connect/authorize?api_key={api_key}&sess_id={sess_id}"
            ))
        }
        KiteBehaviour::ExtraHop => redirect(&format!(
            "/connect/login?api_key={api_key}&sess_id={sess_id}&skip_session=true"
        )),
        _ => {
            let token = mint_request_token(&mut inner, &s, &user, &api_key);
            redirect(&final_redirect(
                &redirect_url,
                redirect_params.as_deref(),
                &token,
                false,
            ))
        }
    }
}

async fn connect_authorize() -> Response {
    html(
        StatusCode::OK,
        "<!DOCTYPE html><html><body><h1>Authorize app</h1><form id=\"authorize\"></form></body></html>",
    )
}

fn kite_version_ok(headers: &HeaderMap) -> bool {
    headers.get("x-kite-version").and_then(|v| v.to_str().ok()) == Some("3")
}

/// S5.
async fn session_token(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if !kite_version_ok(&headers) {
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Missing or invalid X-Kite-Version header.",
        );
    }
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let (api_key, request_token, checksum) =
        (get("api_key"), get("request_token"), get("checksum"));
    let now = (s.now)();
    let mut inner = s.lock();
    let Some(rt) = inner.request_tokens.get(&request_token) else {
        return error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Token is invalid or has expired.",
        );
    };
    if rt.api_key != api_key || now - rt.created_ms > REQUEST_TOKEN_TTL_MS {
        return error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Token is invalid or has expired.",
        );
    }
    let user = rt.user.clone();
    let Some(account) = inner.accounts.get(&user.to_ascii_uppercase()) else {
        return error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Token is invalid or has expired.",
        );
    };
    let end = |r: Response| {
        s.recorder.login_end(&user);
        r
    };
    if account.user.behaviour == KiteBehaviour::ServerError {
        return end(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "GeneralException",
            "An unexpected error occurred.",
        ));
    }
    if sha256_hex(&[&api_key, &request_token, &account.user.api_secret]) != checksum {
        return end(error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Invalid `checksum`.",
        ));
    }
    let user_name = format!("User {}", account.user.user_id);
    inner.request_tokens.remove(&request_token);
    let access_token = random_token(32);
    inner.access.insert(
        access_token.clone(),
        Access {
            user: user.clone(),
            api_key: api_key.clone(),
            expires_ms: ist::next_at(now, 6),
        },
    );
    end(success(json!({
        "user_type": "individual",
        "email": format!("{}@example.com", user.to_ascii_lowercase()),
        "user_name": user_name,
        "user_shortname": user,
        "broker": "ZERODHA",
        "exchanges": ["NSE", "BSE", "NFO", "MCX"],
        "products": ["CNC", "NRML", "MIS"],
        "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
        "avatar_url": null,
        "user_id": user,
        "api_key": api_key,
        "access_token": access_token,
        "public_token": random_token(32),
        "enctoken": random_token(40),
        "refresh_token": "",
        "silo": "",
        "login_time": ist::format(now),
        "meta": {"demat_consent": "physical"}
    })))
}

/// S7.
async fn session_delete(
    State(s): State<Arc<KiteState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !kite_version_ok(&headers) {
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Missing or invalid X-Kite-Version header.",
        );
    }
    let token = q.get("access_token").cloned().unwrap_or_default();
    let mut inner = s.lock();
    match inner.access.get(&token) {
        Some(a) if Some(&a.api_key) == q.get("api_key") => {
            inner.access.remove(&token);
            success(json!(true))
        }
        _ => error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Incorrect `api_key` or `access_token`.",
        ),
    }
}

/// S6.
async fn user_profile(State(s): State<Arc<KiteState>>, headers: HeaderMap) -> Response {
    if !kite_version_ok(&headers) {
        return error(
            StatusCode::BAD_REQUEST,
            "InputException",
            "Missing or invalid X-Kite-Version header.",
        );
    }
    let refused = || {
        error(
            StatusCode::FORBIDDEN,
            "TokenException",
            "Incorrect `api_key` or `access_token`.",
        )
    };
    let Some((api_key, token)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token "))
        .and_then(|v| v.split_once(':'))
    else {
        return refused();
    };
    let now = (s.now)();
    let inner = s.lock();
    match inner.access.get(token) {
        Some(a) if a.api_key == api_key && now < a.expires_ms => success(json!({
            "user_id": a.user,
            "user_name": format!("User {}", a.user),
            "user_shortname": a.user,
            "email": format!("{}@example.com", a.user.to_ascii_lowercase()),
            "user_type": "individual",
            "broker": "ZERODHA",
            "exchanges": ["NSE", "BSE"],
            "products": ["CNC", "MIS"],
            "order_types": ["MARKET", "LIMIT"],
            "avatar_url": null,
            "meta": {"demat_consent": "physical"}
        })),
        _ => refused(),
    }
}
