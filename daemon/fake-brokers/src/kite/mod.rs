//! A fake Kite: the web login host (`/connect/*`, `/api/*`) and the REST API host
//! (`/session/token`, `/user/profile`) on two loopback listeners sharing one state.

mod api;
mod web;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

use crate::mess::{self, HostHabits, Realism, http_date, system_secs};
use crate::record::{Recorder, TotpUse, track};
use crate::{FakeOptions, NowFn, Server, ist, random_token, serve, sha256_hex, totp};
use api::*;
use web::*;

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
    /// `/session/token` answers 429 NetworkException "Too many requests" (the JSON envelope, no
    /// `Retry-After`) for 5 s of the fake's clock from the account's first `/session/token`
    /// request, then works. A 429 does not use up the request token.
    SessionTokenRateLimited,
    /// `/session/token` answers that 429 to every call.
    SessionTokenAlwaysRateLimited,
    /// `/user/profile` answers nginx's HTML 503 "Service Temporarily Unavailable" to the first 2
    /// calls with a valid token of the account, then works.
    ProfileUnavailable,
    /// `/api/login` answers an Akamai-style HTML 403 "Access Denied" (`Content-Type: text/html`,
    /// `Server: AkamaiGHost`). The password is recorded as sent, not counted as wrong.
    LoginWaf403,
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
    /// The fake-clock time of the first `/session/token` request (`SessionTokenRateLimited`).
    first_session_token_ms: Option<i64>,
    /// 503s answered by `/user/profile` so far (`ProfileUnavailable`).
    profile_503s: u32,
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
    /// The login session that minted it (`None`: a person's browser, [`FakeKite::browser_login`]).
    login: Option<String>,
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
    realism: Realism,
}

impl KiteState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session cookie: bare (`Ideal`, with the attributes given), or with real attributes
    /// (`Realistic`: `Domain` = the request host without its port, `Path=/`, `Expires`/`Max-Age`
    /// [`COOKIE_HOURS`] ahead, `HttpOnly` if `http_only`, `Secure`, `SameSite=None`).
    fn cookie(
        &self,
        headers: &HeaderMap,
        name: &str,
        value: &str,
        http_only: bool,
        ideal: &str,
    ) -> HeaderValue {
        let cookie = match self.realism {
            Realism::Ideal => format!("{name}={value}; {ideal}"),
            Realism::Realistic => {
                let max_age = COOKIE_HOURS * 3600;
                format!(
                    "{name}={value}; Domain={}; Path=/; Expires={}; Max-Age={max_age};{} Secure; SameSite=None",
                    request_host(headers),
                    http_date(system_secs() + max_age),
                    if http_only { " HttpOnly;" } else { "" }
                )
            }
        };
        HeaderValue::from_str(&cookie).expect("cookie")
    }
}

/// Lifetime of the web host's cookies in realistic mode.
const COOKIE_HOURS: i64 = 8;

/// The request's `Host` without its port (`127.0.0.1` when absent).
fn request_host(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6).to_owned(),
        None => host.split(':').next().unwrap_or(host).to_owned(),
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
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
            realism: options.realism,
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
        let habits = HostHabits {
            foreign_cookie: Some(("_cfuvid", ".zerodha.com")),
            ..HostHabits::json()
        };
        FakeKite {
            web: serve(mess::apply(web, &options, habits.clone())).await,
            api: serve(mess::apply(api, &options, habits)).await,
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
                first_session_token_ms: None,
                profile_503s: 0,
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
                login: None,
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
