//! A fake Shoonya (shoonya.md): the Noren legacy host (`/NorenWClientTP/QuickAuth`, `/Limits`),
//! the OAuth-era host (`/NorenWClientAPI/GenAcsTok`, `/Limits`) and the OAuth login page
//! (`/NorenWeb/authorize/oauth`), on one loopback listener.
//!
//! Its habits, as the doc describes the real one: every call is a POST whose body is
//! `jData=<json>` (legacy calls append `&jKey=`), the JSON raw or URL-encoded, under any content
//! type (the OAuth SDK labels it `application/json`); paths with a doubled slash (`//QuickAuth`,
//! what the SDKs build) are served; failures are `{"stat":"Not_Ok","emsg":"Invalid Input : ..."}`
//! with HTTP 200 or 400; GenAcsTok answers success without `stat` and `INVALID_VERIFIER` when
//! `uid` is missing, the checksum is wrong or the code was used; the login page redirects with
//! `?code=` only (a 302 with an HTML body); OAuth-era `Limits` takes a Bearer token; a switch
//! turns QuickAuth off ("Invalid Access Type").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::mess::{self, HostHabits, html_escape};
use crate::record::{Recorder, TotpUse};
use crate::{FakeOptions, NowFn, Server, ist, random_token, serve, sha256_hex, totp};

/// Wrong passwords before the account is blocked (the real count is not published).
pub const WRONG_PASSWORDS_BEFORE_BLOCK: u32 = 3;
/// What GenAcsTok's `expires_in` names by default: issue + 8 h, as epoch seconds.
pub const DEFAULT_EXPIRES_IN_MS: i64 = 8 * 3_600_000;

/// How a fake Shoonya account behaves. Wrong passwords, codes, vendor codes and app keys need no
/// behaviour: the checks produce their emsg.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShoonyaBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// QuickAuth: "User Not enabled on : API".
    NotEnabledOnApi,
    /// QuickAuth: "Invalid Access Type" for this account only.
    AccessTypeRefused,
    /// QuickAuth: blocked already.
    Blocked,
    /// QuickAuth succeeds with `spasswordreset: "Y"`.
    PasswordReset,
    /// QuickAuth refuses the first code of each login, accepts a correct one after.
    RejectFirstTotp,
    /// QuickAuth answers an HTML 403 page (a WAF).
    Waf,
}

/// A fake Shoonya account.
#[derive(Clone, Debug)]
pub struct ShoonyaUser {
    /// `uid` (FA12345).
    pub uid: String,
    /// Login password.
    pub password: String,
    /// Base32 TOTP secret.
    pub totp_secret: String,
    /// Vendor code = OAuth client id (`<uid>_U`).
    pub vendor_code: String,
    /// The Prism API key (QuickAuth's `appkey` = sha256(uid|api_key)).
    pub api_key: String,
    /// The OAuth secret code.
    pub secret_code: String,
    /// The redirect URL registered for the client id.
    pub redirect_url: String,
    /// Behaviour.
    pub behaviour: ShoonyaBehaviour,
}

impl ShoonyaUser {
    /// A happy account whose client id is `<uid>_U`.
    pub fn new(
        uid: &str,
        password: &str,
        totp_secret: &str,
        api_key: &str,
        secret_code: &str,
    ) -> ShoonyaUser {
        ShoonyaUser {
            uid: uid.into(),
            password: password.into(),
            totp_secret: totp_secret.into(),
            vendor_code: format!("{uid}_U"),
            api_key: api_key.into(),
            secret_code: secret_code.into(),
            redirect_url: "https://tokenbot.example.com/callback/shoonya".into(),
            behaviour: ShoonyaBehaviour::Happy,
        }
    }

    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: ShoonyaBehaviour) -> ShoonyaUser {
        self.behaviour = behaviour;
        self
    }
}

struct Account {
    user: ShoonyaUser,
    secret: Vec<u8>,
    used_steps: HashSet<u64>,
    refused_once: bool,
    wrong_passwords: u32,
}

/// A session key: the legacy `susertoken` (jKey) or the OAuth `access_token` (Bearer).
struct Session {
    uid: String,
    bearer: bool,
    expires_ms: i64,
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    sessions: HashMap<String, Session>,
    /// OAuth code -> uid, single use.
    codes: HashMap<String, String>,
    /// GenAcsTok calls per code, used or not.
    code_uses: HashMap<String, u32>,
}

struct ShoonyaState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
    /// The "Invalid Access Type" switch: off, QuickAuth is refused for everyone.
    quickauth_open: AtomicBool,
    /// `expires_in` after issue; `None` sends none.
    expires_in_ms: Mutex<Option<i64>>,
}

impl ShoonyaState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake Shoonya on one loopback listener.
pub struct FakeShoonya {
    server: Server,
    state: Arc<ShoonyaState>,
}

impl std::fmt::Debug for FakeShoonya {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeShoonya")
            .field("url", &self.server.url)
            .finish()
    }
}

fn request_time(ms: i64) -> String {
    // `HH:MM:SS DD-MM-YYYY`, IST.
    let f = ist::format(ms);
    format!("{} {}-{}-{}", &f[11..19], &f[8..10], &f[5..7], &f[0..4])
}

/// A `Not_Ok` envelope; Noren sends them with HTTP 200 and 400 alike.
fn not_ok(status: StatusCode, emsg: &str, now: i64) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"request_time": request_time(now), "stat": "Not_Ok", "emsg": emsg}).to_string(),
    )
        .into_response()
}

fn ok_json(body: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn waf_page() -> Response {
    (
        StatusCode::FORBIDDEN,
        [
            (header::CONTENT_TYPE, "text/html"),
            (header::SERVER, "AkamaiGHost"),
        ],
        "<HTML><HEAD><TITLE>Access Denied</TITLE></HEAD><BODY><H1>Access Denied</H1>You don't \
         have permission to access this server.<P>Reference #18.4e2c1002.1711782000.2b1c9e\
         </BODY></HTML>",
    )
        .into_response()
}

/// The `jData` JSON and the `jKey` of a body, raw (as the SDKs send it) or URL-encoded.
fn parse_body(body: &str) -> Option<(Value, Option<String>)> {
    let rest = body.trim().strip_prefix("jData=")?;
    let (raw, key) = match rest.rsplit_once("&jKey=") {
        Some((j, k)) => (j, Some(k.to_owned())),
        None => (rest, None),
    };
    if let Ok(v) = serde_json::from_str::<Value>(raw) {
        return Some((v, key));
    }
    let pairs: BTreeMap<String, String> = url::form_urlencoded::parse(body.trim().as_bytes())
        .into_owned()
        .collect();
    let v = serde_json::from_str(pairs.get("jData")?).ok()?;
    Some((v, pairs.get("jKey").cloned()))
}

fn field(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_owned())
}

impl FakeShoonya {
    /// Start on the system clock.
    pub async fn start() -> FakeShoonya {
        FakeShoonya::start_with(FakeOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeShoonya {
        let state = Arc::new(ShoonyaState {
            inner: Mutex::default(),
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
            quickauth_open: AtomicBool::new(true),
            expires_in_ms: Mutex::new(Some(DEFAULT_EXPIRES_IN_MS)),
        });
        // One fallback serves every path, so `//QuickAuth` lands where `/QuickAuth` does.
        let router = Router::new().fallback(dispatch).with_state(state.clone());
        let habits = HostHabits {
            json_type: "application/json; charset=utf-8",
            foreign_cookie: Some(("_ga", ".shoonya.com")),
            jsessionid: true,
        };
        FakeShoonya {
            server: serve(mess::apply(router, &options, habits)).await,
            state,
        }
    }

    /// `legacy_url`.
    pub fn legacy_url(&self) -> String {
        format!("{}/NorenWClientTP", self.server.url)
    }

    /// `api_url`.
    pub fn api_url(&self) -> String {
        format!("{}/NorenWClientAPI", self.server.url)
    }

    /// `oauth_url`.
    pub fn oauth_url(&self) -> String {
        format!("{}/NorenWeb/authorize/oauth", self.server.url)
    }

    /// `{"legacy_url", "api_url", "oauth_url"}` as `[brokers.shoonya]` would configure them.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("legacy_url".into(), self.legacy_url()),
            ("api_url".into(), self.api_url()),
            ("oauth_url".into(), self.oauth_url()),
        ])
    }

    /// Add (or replace) an account.
    pub fn add_user(&self, user: ShoonyaUser) {
        let secret = totp::secret_bytes(&user.totp_secret);
        self.state.lock().accounts.insert(
            user.uid.clone(),
            Account {
                user,
                secret,
                used_steps: HashSet::new(),
                refused_once: false,
                wrong_passwords: 0,
            },
        );
    }

    /// The "Invalid Access Type" switch: `false` refuses QuickAuth for every account.
    pub fn set_quickauth_open(&self, open: bool) {
        self.state.quickauth_open.store(open, Ordering::SeqCst);
    }

    /// What GenAcsTok's `expires_in` names after issue (`None`: no field).
    pub fn set_expires_in(&self, after_issue_ms: Option<i64>) {
        *self
            .state
            .expires_in_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = after_issue_ms;
    }

    /// What the fake saw (QuickAuth's password hashes are recorded as passwords).
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether `Limits` would accept this session key now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .sessions
            .get(token)
            .is_some_and(|s| now < s.expires_ms)
    }

    /// How many times GenAcsTok was called with `code`.
    pub fn code_uses(&self, code: &str) -> u32 {
        self.state.lock().code_uses.get(code).copied().unwrap_or(0)
    }
}

/// Every request: track it under its path with slashes collapsed, then answer it.
async fn dispatch(
    State(s): State<Arc<ShoonyaState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = uri
        .path()
        .split('/')
        .filter(|p| !p.is_empty())
        .fold(String::new(), |acc, p| format!("{acc}/{p}"));
    s.recorder.request_started(&path);
    let latency = s.recorder.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let response = answer(&s, &method, &path, &headers, &query, &body);
    s.recorder
        .request_finished(&path, response.status().as_u16());
    response
}

fn answer(
    s: &ShoonyaState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &str,
) -> Response {
    let now = (s.now)();
    match (method.as_str(), path) {
        ("GET", "/NorenWeb/authorize/oauth") => login_page(s, query),
        ("POST", "/NorenWeb/authorize/oauth") => login_submit(s, body, now),
        ("POST", p) => {
            let Some((data, jkey)) = parse_body(body) else {
                return not_ok(
                    StatusCode::BAD_REQUEST,
                    "Invalid Input : jData is missing",
                    now,
                );
            };
            match p {
                "/NorenWClientTP/QuickAuth" | "/NorenWClientAPI/QuickAuth" => {
                    quick_auth(s, &data, now)
                }
                "/NorenWClientAPI/GenAcsTok" => gen_acs_tok(s, &data, now),
                "/NorenWClientTP/Limits" => limits(s, &data, jkey, false, now),
                "/NorenWClientAPI/Limits" => limits(s, &data, bearer(headers), true, now),
                _ => not_ok(
                    StatusCode::NOT_FOUND,
                    "Invalid Input : Unknown request",
                    now,
                ),
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>404 Not Found</h1></body></html>",
        )
            .into_response(),
    }
}

fn issue(inner: &mut Inner, uid: &str, bearer: bool, now: i64) -> String {
    let token = hex_token();
    inner.sessions.insert(
        token.clone(),
        Session {
            uid: uid.to_owned(),
            bearer,
            expires_ms: ist::next_at(now, 6),
        },
    );
    token
}

fn hex_token() -> String {
    sha256_hex(&[&random_token(32)])
}

fn quick_auth(s: &ShoonyaState, data: &Value, now: i64) -> Response {
    let uid = field(data, "uid");
    let mut inner = s.lock();
    let Some(account) = inner.accounts.get_mut(&uid) else {
        return not_ok(StatusCode::OK, "Invalid Input : Invalid User Id", now);
    };
    s.recorder.login_begin(&uid);
    let answer = quick_auth_checks(s, account, data, now);
    s.recorder.login_end(&uid);
    match answer {
        Err(response) => *response,
        Ok(reset) => {
            let token = issue(&mut inner, &uid, false, now);
            let mut body = json!({
                "request_time": request_time(now), "stat": "Ok", "susertoken": token,
                "uname": format!("USER {uid}"), "actid": uid, "email": "user@example.com",
                "brkname": "FINVASIA", "lastaccesstime": (now / 1000).to_string(),
                "exarr": ["NSE", "BSE", "NFO"], "prarr": [{"prd": "C", "s_prdt_ali": "CNC"}],
                "values": [{"prd": "I", "s_prdt_ali": "MIS"}],
            });
            if reset {
                body["spasswordreset"] = json!("Y");
            }
            ok_json(body)
        }
    }
}

/// Q1's checks in the order the doc's errors suggest; `Ok(password_reset)` on success.
fn quick_auth_checks(
    s: &ShoonyaState,
    account: &mut Account,
    data: &Value,
    now: i64,
) -> Result<bool, Box<Response>> {
    use ShoonyaBehaviour::*;
    let uid = account.user.uid.clone();
    let refuse = |emsg: &str| Err(Box::new(not_ok(StatusCode::OK, emsg, now)));
    if account.user.behaviour == Waf {
        return Err(Box::new(waf_page()));
    }
    if !s.quickauth_open.load(Ordering::SeqCst) || account.user.behaviour == AccessTypeRefused {
        return refuse("Invalid Input : Invalid Access Type");
    }
    if account.user.behaviour == NotEnabledOnApi {
        return refuse("Invalid Input : User Not enabled on : API");
    }
    if field(data, "vc") != account.user.vendor_code {
        return refuse("Invalid Input : Invalid Vendor code");
    }
    if field(data, "appkey") != sha256_hex(&[&uid, "|", &account.user.api_key]) {
        return refuse("Invalid Input : Invalid App Key");
    }
    let pwd = field(data, "pwd");
    s.recorder.password(&uid, &pwd);
    if account.user.behaviour == Blocked || account.wrong_passwords >= WRONG_PASSWORDS_BEFORE_BLOCK
    {
        return refuse("Invalid Input : User Blocked due to multiple wrong attempts");
    }
    if pwd != sha256_hex(&[&account.user.password]) {
        account.wrong_passwords += 1;
        // Two spaces after the colon, as seen in the SDK's issues.
        return Err(Box::new(not_ok(
            StatusCode::BAD_REQUEST,
            "Invalid Input :  Wrong Password",
            now,
        )));
    }
    let code = field(data, "factor2");
    let step = totp::matching_step(&account.secret, &code, now);
    let fresh = step.is_some_and(|st| !account.used_steps.contains(&st));
    let forced = account.user.behaviour == RejectFirstTotp && !account.refused_once;
    if let Some(st) = step {
        account.used_steps.insert(st);
    }
    let accepted = fresh && !forced;
    s.recorder.totp(
        &uid,
        TotpUse {
            code,
            step,
            accepted,
        },
    );
    if !accepted {
        account.refused_once = true;
        return refuse("Invalid Input : Invalid OTP");
    }
    account.refused_once = false;
    account.wrong_passwords = 0;
    Ok(account.user.behaviour == PasswordReset)
}

fn gen_acs_tok(s: &ShoonyaState, data: &Value, now: i64) -> Response {
    let (code, checksum, uid) = (
        field(data, "code"),
        field(data, "checksum"),
        field(data, "uid"),
    );
    let mut inner = s.lock();
    *inner.code_uses.entry(code.clone()).or_default() += 1;
    let verifier = || {
        not_ok(
            StatusCode::BAD_REQUEST,
            "Invalid Input : INVALID_VERIFIER",
            now,
        )
    };
    // The code is single use: a failed redemption spends it too (the cautious reading of the
    // doc, which does not say).
    let Some(owner) = inner.codes.remove(&code) else {
        return verifier();
    };
    let Some(account) = inner.accounts.get(&owner) else {
        return verifier();
    };
    let expected = sha256_hex(&[&account.user.vendor_code, &account.user.secret_code, &code]);
    if uid.is_empty() || uid != owner || checksum != expected {
        return verifier();
    }
    let access = issue(&mut inner, &owner, true, now);
    let susertoken = issue(&mut inner, &owner, false, now);
    let mut body = json!({
        "request_time": request_time(now), "USERID": owner, "access_token": access,
        "refresh_token": hex_token(), "actid": owner, "susertoken": susertoken,
        "uname": format!("USER {owner}"),
    });
    if let Some(after) = *s.expires_in_ms.lock().unwrap_or_else(|e| e.into_inner()) {
        body["expires_in"] = json!(((now + after) / 1000).to_string());
    }
    ok_json(body)
}

fn limits(s: &ShoonyaState, data: &Value, key: Option<String>, api: bool, now: i64) -> Response {
    let inner = s.lock();
    let uid = field(data, "uid");
    match key.as_deref().and_then(|k| inner.sessions.get(k)) {
        Some(session)
            if session.bearer == api && session.uid == uid && now < session.expires_ms =>
        {
            ok_json(json!({
                "request_time": request_time(now), "stat": "Ok", "prfname": "SHOONYA1",
                "cash": "100000.00", "payin": "0.00", "payout": "0.00", "marginused": "0.00",
            }))
        }
        // The OAuth host answers a bad Bearer with 401, the legacy host with 200.
        _ => not_ok(
            if api {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            },
            "Session Expired :  Invalid Session Key",
            now,
        ),
    }
}

fn login_page(s: &ShoonyaState, query: &HashMap<String, String>) -> Response {
    let client_id = query.get("client_id").cloned().unwrap_or_default();
    let known = s
        .lock()
        .accounts
        .values()
        .any(|a| a.user.vendor_code == client_id);
    let (status, text) = if known {
        (StatusCode::OK, "")
    } else {
        (
            StatusCode::BAD_REQUEST,
            "<p class=\"error\">Invalid client_id</p>",
        )
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!DOCTYPE html><html><head><title>Shoonya Login</title></head><body>{text}\
             <form method=\"post\" action=\"/NorenWeb/authorize/oauth\">\
             <input type=\"hidden\" name=\"client_id\" value=\"{}\">\
             <input name=\"uid\"><input type=\"password\" name=\"pwd\"><input name=\"otp\">\
             <button>Login</button></form></body></html>",
            html_escape(&client_id)
        ),
    )
        .into_response()
}

/// The person submits the login form: a 302 to the client's registered redirect URL with only
/// `?code=`, with a small HTML body as the real page's server sends.
fn login_submit(s: &ShoonyaState, body: &str, now: i64) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let (client_id, uid) = (get("client_id"), get("uid"));
    let mut inner = s.lock();
    let page_error = |m: &str| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!(
                "<html><body><p class=\"error\">{}</p></body></html>",
                html_escape(m)
            ),
        )
            .into_response()
    };
    let Some(account) = inner.accounts.get_mut(&uid) else {
        return page_error("Invalid User Id");
    };
    if account.user.vendor_code != client_id {
        return page_error("Invalid client_id");
    }
    if get("pwd") != account.user.password {
        return page_error("Wrong Password");
    }
    let step = totp::matching_step(&account.secret, &get("otp"), now);
    if step.is_none_or(|st| !account.used_steps.insert(st)) {
        return page_error("Invalid OTP");
    }
    let redirect = account.user.redirect_url.clone();
    let code = uuid_like();
    inner.codes.insert(code.clone(), uid);
    let mut target = match url::Url::parse(&redirect) {
        Ok(u) => u,
        Err(_) => return page_error("Invalid redirect URL"),
    };
    target.query_pairs_mut().append_pair("code", &code);
    let location = target.to_string();
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location.clone()),
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (
                header::SET_COOKIE,
                format!("NWSESSION={}; Path=/NorenWeb; Secure; HttpOnly", random_token(24)),
            ),
        ],
        format!(
            "<html><head><title>302 Found</title></head><body><a href=\"{}\">Found</a></body></html>",
            html_escape(&location)
        ),
    )
        .into_response()
}

fn uuid_like() -> String {
    let h = hex_token();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_raw_and_encoded() {
        let (v, k) = parse_body(r#"jData={"uid":"FA1","x":"a b"}&jKey=abc"#).unwrap();
        assert_eq!(v["uid"], "FA1");
        assert_eq!(k.as_deref(), Some("abc"));
        let enc = format!(
            "jData={}",
            url::form_urlencoded::byte_serialize(br#"{"uid":"FA1","x":"a+b"}"#).collect::<String>()
        );
        let (v, k) = parse_body(&enc).unwrap();
        assert_eq!(v["x"], "a+b");
        assert_eq!(k, None);
        assert!(parse_body("uid=FA1").is_none());
    }
}
