//! A fake Angel One SmartAPI (angelone.md): `loginByPassword` (A1), `getProfile` (A2), `logout`
//! (A4) on one loopback listener, and the publisher-login page of assisted login.
//!
//! Its habits, as the doc describes the real one: business errors are HTTP 200 with
//! `status:false` (dialect A); token and API-key errors use the gateway's dialect B
//! (`success`, camel-case `errorCode`); rate limiting is a plain-text 403; a WAF answers an HTML
//! "Request Rejected" page with HTTP 200; the TOTP is checked before the MPIN; a non-JSON POST is
//! a 415. Tokens are JWT-shaped with an `exp` a day away; they really die at the next 00:00 IST.

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
use crate::{FakeOptions, NowFn, Server, fake_jwt, ist, random_token, serve, totp};

/// How a fake Angel One account behaves. A wrong MPIN or TOTP needs no behaviour (AB1007, AB1050
/// come from the checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AngelBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// A1 answers AB1007 "USER IS BLOCKED FOR TRADING" (after a good TOTP).
    Blocked,
    /// A1 refuses the first code of each login (AB1050), accepts a correct one after.
    RejectFirstTotp,
    /// A1 refuses every code (AB1050).
    TotpRejected,
    /// A1 answers the plain-text 403 of the rate limiter.
    RateLimited,
    /// A1 answers the rate limiter's 403 text labelled `text/html` (what a server writing a bare
    /// string sends: Express `res.send`, Flask).
    RateLimitedHtmlType,
    /// A1 answers the rate limiter's text inside a JSON body, HTTP 403.
    RateLimitedJson,
    /// A1 answers the WAF's HTML "Request Rejected" page (HTTP 200).
    Waf,
    /// A1 answers an nginx 502 page.
    BadGateway,
    /// A1 answers AB1004 "Something Went Wrong".
    SomethingWentWrong,
    /// A1 succeeds but A2 refuses the token (AG8001): the login did not stick.
    TokenNotSticking,
}

/// A fake Angel One account.
#[derive(Clone, Debug)]
pub struct AngelUser {
    /// Client code.
    pub client_code: String,
    /// The 4-digit MPIN.
    pub mpin: String,
    /// The web password (answered AB7001 when sent as the MPIN).
    pub web_password: String,
    /// SmartAPI app key (`X-PrivateKey`).
    pub api_key: String,
    /// Base32 TOTP secret.
    pub totp_secret: String,
    /// The SmartAPI app's registered redirect URL.
    pub redirect_url: String,
    /// Behaviour.
    pub behaviour: AngelBehaviour,
}

impl AngelUser {
    /// A happy account.
    pub fn new(client_code: &str, mpin: &str, api_key: &str, totp_secret: &str) -> AngelUser {
        AngelUser {
            client_code: client_code.into(),
            mpin: mpin.into(),
            web_password: format!("Web#{client_code}"),
            api_key: api_key.into(),
            totp_secret: totp_secret.into(),
            redirect_url: "https://tokenbot.example.com/callback/angelone".into(),
            behaviour: AngelBehaviour::Happy,
        }
    }

    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: AngelBehaviour) -> AngelUser {
        self.behaviour = behaviour;
        self
    }
}

struct Account {
    user: AngelUser,
    secret: Vec<u8>,
    used_steps: HashSet<u64>,
    refused_once: bool,
}

struct Token {
    client: String,
    api_key: String,
    expires_ms: i64,
    dead: bool,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    tokens: HashMap<String, Token>,
}

struct AngelState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
}

impl AngelState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake Angel One on one loopback listener.
pub struct FakeAngelOne {
    server: Server,
    state: Arc<AngelState>,
}

impl std::fmt::Debug for FakeAngelOne {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAngelOne")
            .field("url", &self.server.url)
            .finish()
    }
}

const LOGIN: &str = "/rest/auth/angelbroking/user/v1/loginByPassword";
const PROFILE: &str = "/rest/secure/angelbroking/user/v1/getProfile";
const LOGOUT: &str = "/rest/secure/angelbroking/user/v1/logout";

/// Dialect A failure, HTTP 200.
fn fail_a(code: &str, message: &str) -> Response {
    Json(json!({"status": false, "message": message, "errorcode": code, "data": null}))
        .into_response()
}

/// Dialect B (gateway) failure.
fn fail_b(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "message": message, "errorCode": code, "data": ""})),
    )
        .into_response()
}

fn ok_a(data: Value) -> Response {
    Json(json!({"status": true, "message": "SUCCESS", "errorcode": "", "data": data}))
        .into_response()
}

fn rate_limited() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Access denied because of exceeding access rate",
    )
        .into_response()
}

fn rate_limited_html_type() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "Access denied because of exceeding access rate",
    )
        .into_response()
}

fn rate_limited_json() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"message": "Access denied because of exceeding access rate"})),
    )
        .into_response()
}

fn waf_page() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::SERVER, "BigIP"),
        ],
        "<html><head><title>Request Rejected</title></head><body>The requested URL was rejected. \
         Please consult with your administrator.<br><br>Your support ID is: 1234567890123456789\
         </body></html>",
    )
        .into_response()
}

fn bad_gateway() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>",
    )
        .into_response()
}

impl FakeAngelOne {
    /// Start on the system clock.
    pub async fn start() -> FakeAngelOne {
        FakeAngelOne::start_with(FakeOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeAngelOne {
        let state = Arc::new(AngelState {
            inner: Mutex::default(),
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
        });
        let layer = axum::middleware::from_fn_with_state(state.recorder.clone(), track);
        let router = Router::new()
            .route(LOGIN, post(login))
            .route(PROFILE, get(profile))
            .route(LOGOUT, post(logout))
            .route("/publisher-login", get(publisher_login))
            .route_layer(layer)
            .with_state(state.clone());
        FakeAngelOne {
            server: serve(mess::apply(router, &options, HostHabits::json())).await,
            state,
        }
    }

    /// Base URL (API host and login page).
    pub fn url(&self) -> &str {
        &self.server.url
    }

    /// `{"api_url", "login_url"}` as `[brokers.angelone]` would configure them.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("api_url".into(), self.server.url.clone()),
            ("login_url".into(), self.server.url.clone()),
        ])
    }

    /// Add (or replace) an account.
    pub fn add_user(&self, user: AngelUser) {
        let secret = totp::secret_bytes(&user.totp_secret);
        self.state.lock().accounts.insert(
            user.client_code.to_ascii_uppercase(),
            Account {
                user,
                secret,
                used_steps: HashSet::new(),
                refused_once: false,
            },
        );
    }

    /// Change an account's behaviour.
    pub fn set_behaviour(&self, client_code: &str, behaviour: AngelBehaviour) {
        if let Some(a) = self
            .state
            .lock()
            .accounts
            .get_mut(&client_code.to_ascii_uppercase())
        {
            a.user.behaviour = behaviour;
        }
    }

    /// What the fake saw (MPINs are recorded as passwords).
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether `getProfile` would accept this token now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .tokens
            .get(token)
            .is_some_and(|t| now < t.expires_ms && !t.dead)
    }

    /// What a browser ends with after a person logs in at `login_url`
    /// (`{url}/publisher-login?api_key=..&state=..`) as `client_code`: the app's redirect URL
    /// with `auth_token`, `feed_token` and the echoed `state`. Mints a real token.
    pub fn browser_login(&self, login_url: &str, client_code: &str) -> Result<String, String> {
        let url = url::Url::parse(login_url).map_err(|e| e.to_string())?;
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let key = q.get("api_key").ok_or("no api_key")?;
        let now = (self.state.now)();
        let mut inner = self.state.lock();
        let account = inner
            .accounts
            .get(&client_code.to_ascii_uppercase())
            .ok_or("no such client")?;
        if &account.user.api_key != key {
            return Err("the api_key is not this client's app".into());
        }
        let (client, redirect) = (
            account.user.client_code.clone(),
            account.user.redirect_url.clone(),
        );
        let (jwt, _, feed) = mint(&mut inner, &client, key, now);
        let mut target = url::Url::parse(&redirect).map_err(|e| e.to_string())?;
        target
            .query_pairs_mut()
            .append_pair("auth_token", &jwt)
            .append_pair("feed_token", &feed);
        if let Some(state) = q.get("state") {
            target.query_pairs_mut().append_pair("state", state);
        }
        Ok(target.into())
    }
}

/// A token set for `client`: (jwt, refresh, feed).
fn mint(inner: &mut Inner, client: &str, api_key: &str, now: i64) -> (String, String, String) {
    let jwt = fake_jwt(json!({
        "username": client, "roles": 0, "userdata": {"countryid": 0, "sourceid": "WEB"},
        "iat": now / 1000, "exp": now / 1000 + 86_400,
    }));
    inner.tokens.insert(
        jwt.clone(),
        Token {
            client: client.to_owned(),
            api_key: api_key.to_owned(),
            expires_ms: ist::next_at(now, 0),
            dead: false,
        },
    );
    let refresh = fake_jwt(json!({"token": "REFRESH-TOKEN", "iat": now / 1000}));
    let feed = fake_jwt(json!({"username": client, "iat": now / 1000, "exp": now / 1000 + 86_400}));
    (jwt, refresh, feed)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
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

async fn login(State(s): State<Arc<AngelState>>, headers: HeaderMap, body: String) -> Response {
    if !header_str(&headers, "content-type").contains("json") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type").into_response();
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return fail_a("AB2000", "Error not specified");
    };
    let code = field(&body, "clientcode").to_ascii_uppercase();
    s.recorder.login_begin(&code);
    let answer = login_answer(&s, &headers, &body, &code);
    s.recorder.login_end(&code);
    answer
}

fn login_answer(s: &AngelState, headers: &HeaderMap, body: &Value, code: &str) -> Response {
    let now = (s.now)();
    let mut inner = s.lock();
    let Some(account) = inner.accounts.get_mut(code) else {
        return fail_a("AB1007", "YOUR USER ID OR PASSWORD IS INVALID");
    };
    match account.user.behaviour {
        AngelBehaviour::RateLimited => return rate_limited(),
        AngelBehaviour::RateLimitedHtmlType => return rate_limited_html_type(),
        AngelBehaviour::RateLimitedJson => return rate_limited_json(),
        AngelBehaviour::Waf => return waf_page(),
        AngelBehaviour::BadGateway => return bad_gateway(),
        _ => {}
    }
    let key = header_str(headers, "x-privatekey");
    if key != account.user.api_key {
        return fail_b(StatusCode::OK, "AG8004", "Invalid API Key");
    }
    if header_str(headers, "x-usertype") != "USER" {
        return fail_a("AB1005", "User Type Must Be USER");
    }
    let (pin, code_sent) = (field(body, "password"), field(body, "totp"));
    s.recorder.password(code, &pin);
    if account.user.behaviour == AngelBehaviour::SomethingWentWrong {
        return fail_a("AB1004", "Something Went Wrong, Please Try After Sometime");
    }
    // The TOTP is checked before the MPIN (angelone.md, risk 4).
    let step = totp::matching_step(&account.secret, &code_sent, now);
    let fresh = step.is_some_and(|st| !account.used_steps.contains(&st));
    let refuse = account.user.behaviour == AngelBehaviour::TotpRejected
        || (account.user.behaviour == AngelBehaviour::RejectFirstTotp && !account.refused_once);
    if let Some(st) = step {
        account.used_steps.insert(st);
    }
    let accepted = fresh && !refuse;
    s.recorder.totp(
        code,
        TotpUse {
            code: code_sent,
            step,
            accepted,
        },
    );
    if !accepted {
        account.refused_once = true;
        return fail_a("AB1050", "Invalid totp");
    }
    account.refused_once = false;
    if pin == account.user.web_password {
        return fail_a(
            "AB7001",
            "LoginbyPassword is not allowed. Please switch to Login by MPIN now.",
        );
    }
    if pin != account.user.mpin {
        return fail_a("AB1007", "YOUR USER ID OR PASSWORD IS INVALID");
    }
    if account.user.behaviour == AngelBehaviour::Blocked {
        return fail_a("AB1007", "USER IS BLOCKED FOR TRADING");
    }
    let (client, behaviour) = (account.user.client_code.clone(), account.user.behaviour);
    let (jwt, refresh, feed) = mint(&mut inner, &client, key, now);
    if behaviour == AngelBehaviour::TokenNotSticking
        && let Some(t) = inner.tokens.get_mut(&jwt)
    {
        t.dead = true;
    }
    let mut data = json!({"jwtToken": jwt, "refreshToken": refresh, "feedToken": feed});
    if let Some(state) = body.get("state") {
        data["state"] = state.clone();
    }
    ok_a(data)
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    header_str(headers, "authorization")
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

async fn profile(State(s): State<Arc<AngelState>>, headers: HeaderMap) -> Response {
    let now = (s.now)();
    let inner = s.lock();
    let Some(token) = bearer(&headers) else {
        return fail_b(StatusCode::UNAUTHORIZED, "AG8003", "Token missing");
    };
    match inner.tokens.get(&token) {
        Some(t) if t.api_key != header_str(&headers, "x-privatekey") => {
            fail_b(StatusCode::OK, "AG8001", "Invalid Token")
        }
        Some(t) if now >= t.expires_ms => fail_b(StatusCode::OK, "AG8002", "Token Expired"),
        Some(t) if !t.dead => ok_a(json!({
            "clientcode": t.client,
            "name": format!("CLIENT {}", t.client),
            "email": "",
            "mobileno": "",
            "exchanges": ["nse_cm", "bse_cm", "nse_fo"],
            "products": ["MARGIN", "MIS", "NRML", "CNC", "CO", "BO"],
            "lastlogintime": "",
            "broker": ""
        })),
        _ => fail_b(StatusCode::OK, "AG8001", "Invalid Token"),
    }
}

async fn logout(State(s): State<Arc<AngelState>>, headers: HeaderMap) -> Response {
    let mut inner = s.lock();
    match bearer(&headers).and_then(|t| inner.tokens.get_mut(&t)) {
        Some(t) => {
            t.dead = true;
            Json(json!({"status": true, "message": "SUCCESS", "errorcode": "", "data": ""}))
                .into_response()
        }
        None => fail_b(StatusCode::OK, "AG8001", "Invalid Token"),
    }
}

async fn publisher_login(Query(q): Query<HashMap<String, String>>) -> Response {
    let status = if q.contains_key("api_key") {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!DOCTYPE html><html><head><title>SmartAPI</title></head><body><div id=\"root\" data-k=\"{}\"></div></body></html>",
            crate::mess::html_escape(&random_token(8))
        ),
    )
        .into_response()
}
