//! A fake Motilal Oswal OpenAPI (motilal.md): every call a JSON `POST` answering the
//! `{"status","message","errorcode"}` envelope with HTTP 200 on business errors; the device
//! headers checked on every call; `sha256(password + api_key)`, the 2FA value (DOB or PAN) and
//! a real TOTP checked by M1; `isAuthTokenVerified:"FALSE"` when no TOTP is sent; M2 requiring
//! `apisecretkey`; the profile refusing a token after 06:00 IST.
//!
//! Error codes the doc quotes (MO1093, MO1007, MO2035, MO2005, MO8003, MO1100) are used as
//! documented. The fake's other codes (MO1001 wrong password, MO1009 locked, MO2001 bad header,
//! MO2006 wrong secret) are invented: a strategy must classify them by their message.

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
use crate::{FakeOptions, NowFn, Server, ist, random_token, serve, sha256_hex, totp};

/// The static IP the fake's accounts registered (`ClientPublicIp` must be it, else MO2035).
pub const MOTILAL_REGISTERED_IP: &str = "203.0.113.7";

/// How a fake Motilal account behaves. Wrong passwords, 2FA values, TOTP codes, API keys, secrets
/// and IPs need no behaviour: the checks answer them (5 wrong passwords lock the account).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MotilalBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// M1 answers that the account is locked.
    Locked,
    /// M1 refuses every code (MO1093).
    TotpRejected,
    /// M1 refuses the first code of each login (MO1093), accepts a correct one after.
    RejectFirstTotp,
    /// M1 answers an unverified AuthToken even with a TOTP (OTP delivery configured).
    OtpPending,
    /// M1 answers `SUCCESS` without an AuthToken.
    NoAuthToken,
    /// M1 answers HTTP 429 in plain text.
    RateLimited,
    /// M1 answers an HTML 403 WAF page.
    Waf,
    /// M1 answers a plain-text 403.
    PlainForbidden,
    /// M1 answers a JSON 500.
    ServerError,
    /// M2 fails (the login must go on without an accesstoken).
    AccessTokenFails,
    /// The profile answers an HTML 503 the first time for the account, then works.
    ProfileUnavailableOnce,
}

/// How the fake words its JSON: each a reading of motilal.md that another server could serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MotilalDialect {
    /// As the doc's examples: `status`/`message`/`errorcode`, `data`, `"TRUE"`.
    #[default]
    Documented,
    /// Failure envelopes leave `status` out (the doc: its failure value is undocumented; decide on
    /// `errorcode` + `message`).
    BareErrors,
    /// A .NET serializer's PascalCase keys (`Status`, `Message`, `ErrorCode` null on success,
    /// `Data` as a one-element list with `ClientCode`) and `isAuthTokenVerified` as a JSON bool.
    PascalCase,
}

/// A fake Motilal account (one client, one app).
#[derive(Clone, Debug)]
pub struct MotilalUser {
    /// Client code.
    pub client_code: String,
    /// Trading password.
    pub password: String,
    /// App API key.
    pub api_key: String,
    /// API secret key.
    pub api_secret: String,
    /// Base32 TOTP secret.
    pub totp_secret: String,
    /// Date of birth `DD/MM/YYYY`.
    pub dob: String,
    /// PAN (uppercase).
    pub pan: String,
    /// Behaviour.
    pub behaviour: MotilalBehaviour,
}

impl MotilalUser {
    /// A happy account.
    pub fn new(
        client_code: &str,
        password: &str,
        api_key: &str,
        api_secret: &str,
        totp_secret: &str,
        dob: &str,
    ) -> MotilalUser {
        MotilalUser {
            client_code: client_code.into(),
            password: password.into(),
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            totp_secret: totp_secret.into(),
            dob: dob.into(),
            pan: "ABCPE1234F".into(),
            behaviour: MotilalBehaviour::Happy,
        }
    }

    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: MotilalBehaviour) -> MotilalUser {
        self.behaviour = behaviour;
        self
    }
}

struct Account {
    user: MotilalUser,
    secret: Vec<u8>,
    password_failures: u32,
    refused_once: bool,
    used_steps: HashSet<u64>,
    profile_503_done: bool,
}

struct Session {
    client: String,
    verified: bool,
    expires_ms: i64,
    access: Option<String>,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    sessions: HashMap<String, Session>,
    registered_ip: String,
    dialect: MotilalDialect,
}

struct MotilalState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
}

impl MotilalState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake Motilal OpenAPI on one loopback listener.
pub struct FakeMotilal {
    api: Server,
    state: Arc<MotilalState>,
}

impl std::fmt::Debug for FakeMotilal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMotilal")
            .field("api", &self.api.url)
            .finish()
    }
}

/// Login path (docs v7), and the others.
const LOGIN: &str = "/rest/login/v7/authdirectapi";
const ACCESS_TOKEN: &str = "/rest/login/v1/getaccesstoken";
const PROFILE: &str = "/rest/login/v5/getprofile";
const LOGOUT: &str = "/rest/login/v5/logout";

impl FakeMotilal {
    /// Start on the system clock.
    pub async fn start() -> FakeMotilal {
        FakeMotilal::start_with(FakeOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeMotilal {
        let state = Arc::new(MotilalState {
            inner: Mutex::new(Inner {
                registered_ip: MOTILAL_REGISTERED_IP.into(),
                ..Inner::default()
            }),
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
        });
        let layer = axum::middleware::from_fn_with_state(state.recorder.clone(), track);
        let api = Router::new()
            .route(LOGIN, post(login))
            .route(ACCESS_TOKEN, post(access_token))
            .route(PROFILE, post(profile))
            .route(LOGOUT, post(logout))
            .route("/partner/login", get(partner_page))
            .route_layer(layer)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                dialect_layer,
            ))
            .with_state(state.clone());
        FakeMotilal {
            api: serve(mess::apply(api, &options, HostHabits::json())).await,
            state,
        }
    }

    /// Base URL of the API.
    pub fn api_url(&self) -> &str {
        &self.api.url
    }

    /// `{"api_url"}` as `[brokers.motilal]` would configure it.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("api_url".into(), self.api.url.clone())])
    }

    /// A partner login page template for `assisted_login_url`.
    pub fn assisted_login_template(&self) -> String {
        format!(
            "{}/partner/login?apikey={{api_key}}&state={{state}}&redirect={{redirect_url}}",
            self.api.url
        )
    }

    /// The `ClientPublicIp` accepted from now on (default [`MOTILAL_REGISTERED_IP`]).
    pub fn set_registered_ip(&self, ip: &str) {
        self.state.lock().registered_ip = ip.into();
    }

    /// How the JSON answers are worded from now on.
    pub fn set_dialect(&self, dialect: MotilalDialect) {
        self.state.lock().dialect = dialect;
    }

    /// Add (or replace) an account.
    pub fn add_user(&self, user: MotilalUser) {
        let secret = totp::secret_bytes(&user.totp_secret);
        self.state.lock().accounts.insert(
            user.client_code.to_ascii_uppercase(),
            Account {
                user,
                secret,
                password_failures: 0,
                refused_once: false,
                used_steps: HashSet::new(),
                profile_503_done: false,
            },
        );
    }

    /// Change an account's behaviour.
    pub fn set_behaviour(&self, client_code: &str, behaviour: MotilalBehaviour) {
        if let Some(a) = self
            .state
            .lock()
            .accounts
            .get_mut(&client_code.to_ascii_uppercase())
        {
            a.user.behaviour = behaviour;
        }
    }

    /// What the fake saw (passwords as the `sha256(password + api_key)` received).
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether the profile would accept this AuthToken now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .sessions
            .get(token)
            .is_some_and(|s| s.verified && now < s.expires_ms)
    }

    /// Whether `access` is the accesstoken M2 issued for `token`.
    pub fn access_token_matches(&self, token: &str, access: &str) -> bool {
        self.state
            .lock()
            .sessions
            .get(token)
            .is_some_and(|s| s.access.as_deref() == Some(access))
    }

    /// What a browser ends with after a person logs in on the partner page `login_url` as
    /// `client_code`: the page's `redirect` plus `authtoken` and `state`. Mints a verified token.
    pub fn browser_login(&self, login_url: &str, client_code: &str) -> Result<String, String> {
        let url = url::Url::parse(login_url).map_err(|e| e.to_string())?;
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let (api_key, redirect) = (
            q.get("apikey").ok_or("no apikey")?,
            q.get("redirect").ok_or("no redirect")?,
        );
        let now = (self.state.now)();
        let mut inner = self.state.lock();
        let account = inner
            .accounts
            .get(&client_code.to_ascii_uppercase())
            .ok_or("no such client")?;
        if &account.user.api_key != api_key {
            return Err("the apikey is not this client's app".into());
        }
        let client = account.user.client_code.clone();
        let token = new_session(&mut inner, &client, true, now);
        let mut out = url::Url::parse(redirect).map_err(|e| e.to_string())?;
        out.query_pairs_mut()
            .append_pair("authtoken", &token)
            .append_pair("state", q.get("state").map_or("", String::as_str));
        Ok(out.into())
    }
}

/// Rewords every JSON object answer in the configured dialect.
async fn dialect_layer(
    State(s): State<Arc<MotilalState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let dialect = s.lock().dialect;
    let resp = next.run(req).await;
    if dialect == MotilalDialect::Documented {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(Value::Object(mut v)) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let success = v.get("status").and_then(Value::as_str) == Some("SUCCESS");
    match dialect {
        MotilalDialect::Documented => {}
        MotilalDialect::BareErrors => {
            if !success {
                v.remove("status");
            }
        }
        MotilalDialect::PascalCase => {
            for (from, to) in [
                ("status", "Status"),
                ("message", "Message"),
                ("errorcode", "ErrorCode"),
            ] {
                if let Some(x) = v.remove(from) {
                    let x = if x == json!("") { Value::Null } else { x };
                    v.insert(to.into(), x);
                }
            }
            if let Some(flag) = v.get_mut("isAuthTokenVerified") {
                *flag = Value::Bool(flag.as_str() == Some("TRUE"));
            }
            if let Some(Value::Object(mut data)) = v.remove("data") {
                if let Some(code) = data.remove("clientcode") {
                    data.insert("ClientCode".into(), code);
                }
                v.insert("Data".into(), Value::Array(vec![Value::Object(data)]));
            }
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(Value::Object(v).to_string()))
}

fn new_session(inner: &mut Inner, client: &str, verified: bool, now: i64) -> String {
    let token = format!("{}_M", sha256_hex(&[&random_token(24)])[..32].to_owned());
    inner.sessions.insert(
        token.clone(),
        Session {
            client: client.to_owned(),
            verified,
            expires_ms: ist::next_at(now, 6),
            access: None,
        },
    );
    token
}

fn failed(code: &str, message: &str) -> Response {
    Json(json!({"status": "FAILED", "message": message, "errorcode": code})).into_response()
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

fn waf_page() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/html"), (header::SERVER, "AkamaiGHost")],
        "<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n\
         You don't have permission to access this server.<P>\nReference&#32;&#35;18&#46;4f2b\n</BODY>\n</HTML>\n",
    )
        .into_response()
}

fn hdr<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The device headers every call must carry (motilal.md), and the registered IP.
fn check_headers(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let mut required = vec![
        "apikey",
        "clientlocalip",
        "clientpublicip",
        "macaddress",
        "sourceid",
        "vendorinfo",
        "osname",
        "osversion",
        "installedappid",
        "devicemodel",
        "manufacturer",
        "productname",
        "productversion",
        "latitude",
        "longitude",
        "sdkversion",
    ];
    if hdr(headers, "sourceid").eq_ignore_ascii_case("web") {
        required.extend(["browsername", "browserversion"]);
    }
    if let Some(name) = required.iter().find(|n| hdr(headers, n).is_empty()) {
        return Some(failed("MO2001", &format!("Invalid request header {name}")));
    }
    if !inner
        .accounts
        .values()
        .any(|a| a.user.api_key == hdr(headers, "apikey"))
    {
        return Some(failed("MO2005", "Invalid ApiKey"));
    }
    if hdr(headers, "clientpublicip") != inner.registered_ip {
        return Some(failed("MO2035", "Unauthorized IP Address"));
    }
    None
}

fn field(body: &Value, key: &str) -> String {
    body.get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn login(State(s): State<Arc<MotilalState>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let user = field(&body, "userid");
    s.recorder.login_begin(&user);
    let r = login_answer(&s, &headers, &body, &user);
    s.recorder.login_end(&user);
    r
}

fn login_answer(s: &MotilalState, headers: &HeaderMap, body: &Value, user: &str) -> Response {
    let now = (s.now)();
    let mut inner = s.lock();
    let behaviour = inner
        .accounts
        .get(&user.to_ascii_uppercase())
        .map(|a| a.user.behaviour.clone());
    match behaviour {
        Some(MotilalBehaviour::RateLimited) => {
            return plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        }
        Some(MotilalBehaviour::Waf) => return waf_page(),
        Some(MotilalBehaviour::PlainForbidden) => return plain(StatusCode::FORBIDDEN, "Forbidden"),
        _ => {}
    }
    if let Some(r) = check_headers(&inner, headers) {
        return r;
    }
    // "Authorization: used in all APIs excluding login".
    if !hdr(headers, "authorization").is_empty() {
        return failed("MO2001", "Invalid request header Authorization");
    }
    let hash = field(body, "password");
    s.recorder.password(user, &hash);
    let Some(account) = inner.accounts.get_mut(&user.to_ascii_uppercase()) else {
        return failed("MO1001", "Invalid Userid or Password");
    };
    if account.user.api_key != hdr(headers, "apikey") {
        return failed("MO2005", "Invalid ApiKey");
    }
    match account.user.behaviour {
        MotilalBehaviour::ServerError => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"status": "FAILED", "message": "Internal Server Error", "errorcode": ""})),
            )
                .into_response();
        }
        MotilalBehaviour::Locked => {
            return failed(
                "MO1009",
                "Your account is locked. Please contact customer care.",
            );
        }
        _ => {}
    }
    if account.password_failures >= 5 {
        return failed(
            "MO1009",
            "Your account is locked. Please contact customer care.",
        );
    }
    if hash != sha256_hex(&[&account.user.password, &account.user.api_key]) {
        account.password_failures += 1;
        return failed("MO1001", "Invalid Userid or Password");
    }
    let two_fa = field(body, "2FA");
    if two_fa != account.user.dob && two_fa != account.user.pan {
        return failed("MO1007", "Invalid 2FA");
    }
    let code = field(body, "totp");
    let verified = if code.is_empty() {
        false
    } else {
        let step = totp::matching_step(&account.secret, &code, now);
        let fresh = step.is_some_and(|st| !account.used_steps.contains(&st));
        let refuse = account.user.behaviour == MotilalBehaviour::TotpRejected
            || (account.user.behaviour == MotilalBehaviour::RejectFirstTotp
                && !account.refused_once);
        let accepted = fresh && !refuse;
        if let Some(st) = step {
            account.used_steps.insert(st);
        }
        s.recorder.totp(
            user,
            TotpUse {
                code,
                step,
                accepted,
            },
        );
        if !accepted {
            account.refused_once = true;
            return failed("MO1093", "Invalid TOTP");
        }
        account.user.behaviour != MotilalBehaviour::OtpPending
    };
    account.refused_once = false;
    let client = account.user.client_code.clone();
    let no_token = account.user.behaviour == MotilalBehaviour::NoAuthToken;
    let token = new_session(&mut inner, &client, verified, now);
    if no_token {
        return Json(
            json!({"status": "SUCCESS", "message": "Return Auth Token SUCCESS", "errorcode": ""}),
        )
        .into_response();
    }
    Json(json!({
        "status": "SUCCESS",
        "message": if verified { "Return Auth Token SUCCESS" } else { "OTP sent successfully" },
        "errorcode": "",
        "AuthToken": token,
        "isAuthTokenVerified": if verified { "TRUE" } else { "FALSE" },
    }))
    .into_response()
}

async fn access_token(State(s): State<Arc<MotilalState>>, headers: HeaderMap) -> Response {
    let mut inner = s.lock();
    if let Some(r) = check_headers(&inner, &headers) {
        return r;
    }
    let token = hdr(&headers, "authorization").to_owned();
    let Some(client) = inner
        .sessions
        .get(&token)
        .filter(|t| t.verified)
        .map(|t| t.client.clone())
    else {
        return failed("MO8003", "Session not valid");
    };
    let Some(account) = inner.accounts.get(&client.to_ascii_uppercase()) else {
        return failed("MO8003", "Session not valid");
    };
    if account.user.behaviour == MotilalBehaviour::AccessTokenFails {
        return failed("", "Unable to generate access token, please try later");
    }
    if hdr(&headers, "apisecretkey") != account.user.api_secret {
        return failed("MO2006", "Invalid API Secret Key");
    }
    let access = format!("{}_M", random_token(40));
    if let Some(session) = inner.sessions.get_mut(&token) {
        session.access = Some(access.clone());
    }
    Json(json!({"status": "SUCCESS", "message": "", "errorcode": "", "accesstoken": access}))
        .into_response()
}

async fn profile(State(s): State<Arc<MotilalState>>, headers: HeaderMap) -> Response {
    let now = (s.now)();
    let mut inner = s.lock();
    if let Some(r) = check_headers(&inner, &headers) {
        return r;
    }
    let token = hdr(&headers, "authorization").to_owned();
    let Some(session) = inner.sessions.get(&token) else {
        return failed("MO8003", "Session not valid");
    };
    if now >= session.expires_ms {
        return failed("MO8003", "Session not valid");
    }
    if !session.verified {
        return failed("MO1100", "Auth token not verified");
    }
    let access = hdr(&headers, "accesstoken");
    if !access.is_empty() && session.access.as_deref() != Some(access) {
        return failed("MO8003", "Session not valid");
    }
    let client = session.client.clone();
    if let Some(account) = inner.accounts.get_mut(&client.to_ascii_uppercase())
        && account.user.behaviour == MotilalBehaviour::ProfileUnavailableOnce
        && !account.profile_503_done
    {
        account.profile_503_done = true;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
        )
            .into_response();
    }
    Json(json!({
        "status": "SUCCESS",
        "message": "Profile Data",
        "errorcode": "",
        "data": {
            "clientcode": client,
            "name": format!("Client {client}"),
            "exchanges": ["NSE", "BSE", "NSEFO"],
            "products": ["NORMAL", "DELIVERY"],
            "usertype": "CLIENT",
        }
    }))
    .into_response()
}

async fn logout(State(s): State<Arc<MotilalState>>, headers: HeaderMap) -> Response {
    let mut inner = s.lock();
    match inner.sessions.remove(hdr(&headers, "authorization")) {
        Some(_) => {
            Json(json!({"status": "SUCCESS", "message": "LOGOUT SUCCESSFULL", "errorcode": ""}))
                .into_response()
        }
        None => failed("MO8003", "Session not valid"),
    }
}

async fn partner_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let status = if q.contains_key("apikey") && q.contains_key("redirect") {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!DOCTYPE html><html><body><form id=\"login\"></form></body></html>",
    )
        .into_response()
}
