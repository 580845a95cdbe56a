//! A fake Upstox API (upstox.md) on one listener: A1 the authorization dialog (a 302 to the
//! app's redirect URL with `code` and `state` once a person "logs in"), A2 Get Token (form body,
//! bare answer object, single-use codes: a second use is `UDAPI100057`), Q1 the v3 Access Token
//! Request (`authorization_expiry` as an epoch-ms string, `notifier_url`), V the profile
//! (`UDAPI100050` on a dead token), and the notifier POST: [`FakeUpstox::approve`] (or
//! `POST /_control/approve`) makes the fake POST the exact Q3 body to the app's notifier URL,
//! and [`FakeUpstox::deliver`] sends tampered ones. `POST /_control/notifier {"api_key","url"}`
//! sets an app's notifier URL, as a developer does once on Upstox's portal.
//!
//! Errors use Upstox's envelope `{"status":"error","errors":[{"errorCode",...}]}`, some with
//! HTTP 200; tokens die at the first 03:30 IST after issue on the fake's clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::mess::{self, HostHabits};
use crate::record::{Recorder, track};
use crate::{FakeOptions, NowFn, Server, ist, random_token, serve};

/// How a fake Upstox account behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstoxBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// Q1 answers HTTP 429 `UDAPI10005`.
    RateLimited,
    /// Q1 answers Cloudflare's HTML 503.
    Cloudflare503,
    /// Q1 answers HTTP 200 with `status: error` `UDAPI100073` (client_id inactive).
    InactiveAppWith200,
    /// A2 refuses: "No segments for these users are active."
    NoSegments,
}

/// A fake Upstox account and its app.
#[derive(Clone, Debug)]
pub struct UpstoxUser {
    /// Upstox user id (UCC), e.g. `AB1234`.
    pub user_id: String,
    /// The app's API key (`client_id`), a UUID at Upstox.
    pub api_key: String,
    /// The app's API secret.
    pub api_secret: String,
    /// The app's registered redirect URL.
    pub redirect_uri: String,
    /// The app's registered notifier webhook URL.
    pub notifier_url: String,
    /// Behaviour.
    pub behaviour: UpstoxBehaviour,
}

impl UpstoxUser {
    /// A happy account whose app redirects and notifies unreachable URLs.
    pub fn new(user_id: &str, api_key: &str, api_secret: &str) -> Self {
        UpstoxUser {
            user_id: user_id.into(),
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            redirect_uri: "http://127.0.0.1:9/callback/upstox".into(),
            notifier_url: "http://127.0.0.1:9/webhook/upstox/none".into(),
            behaviour: UpstoxBehaviour::Happy,
        }
    }

    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: UpstoxBehaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    /// With a registered redirect URL.
    pub fn with_redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uri = uri.into();
        self
    }

    /// With a registered notifier URL.
    pub fn with_notifier_url(mut self, url: &str) -> Self {
        self.notifier_url = url.into();
        self
    }
}

/// How [`FakeUpstox::deliver`] tampers with a Q3 body (each leaves the token itself genuine, so
/// only the tampered field can be why a delivery is refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// The exact body Upstox sends.
    None,
    /// `client_id` of another app.
    ClientId(String),
    /// `issued_at` this many ms before now.
    IssuedAgo(i64),
    /// `user_id` of another user (the token still the account's).
    UserId(String),
    /// The token of this other user, under the account's `user_id`.
    TokenOf(String),
    /// `expires_at` a day late.
    ExpiresLate,
}

struct Token {
    user_id: String,
    expires_ms: i64,
}

#[derive(Default)]
struct Inner {
    /// By user id (uppercase).
    accounts: HashMap<String, UpstoxUser>,
    /// Auth codes -> (user id, api key); removed when used, whatever the outcome.
    codes: HashMap<String, (String, String)>,
    tokens: HashMap<String, Token>,
    /// Q1s per API key: when each was sent.
    requests: HashMap<String, Vec<i64>>,
}

struct UpstoxState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
}

impl UpstoxState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the daemon answered a notifier POST.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: String,
    /// The token the body carried.
    pub token: String,
}

/// A fake Upstox on one loopback listener.
pub struct FakeUpstox {
    server: Server,
    state: Arc<UpstoxState>,
}

impl std::fmt::Debug for FakeUpstox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstox")
            .field("url", &self.server.url)
            .finish()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"status": "error", "errors": [{
            "errorCode": code, "message": message, "propertyPath": null,
            "invalidValue": null, "error_code": code, "property_path": null,
            "invalid_value": null,
        }]})),
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

impl FakeUpstox {
    /// Start on the system clock.
    pub async fn start() -> FakeUpstox {
        FakeUpstox::start_with(FakeOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeUpstox {
        let state = Arc::new(UpstoxState {
            inner: Mutex::default(),
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
        });
        let layer = axum::middleware::from_fn_with_state(state.recorder.clone(), track);
        let router = Router::new()
            .route("/v2/login/authorization/dialog", get(dialog))
            .route("/v2/login/authorization/token", post(get_token))
            .route(
                "/v3/login/auth/token/request/{client_id}",
                post(request_token),
            )
            .route("/v2/user/profile", get(profile))
            .route("/_control/approve", post(control_approve))
            .route("/_control/notifier", post(control_notifier))
            .route_layer(layer)
            .with_state(state.clone());
        FakeUpstox {
            server: serve(mess::apply(router, &options, HostHabits::json())).await,
            state,
        }
    }

    /// `api_url`.
    pub fn api_url(&self) -> String {
        self.server.url.clone()
    }

    /// `{"api_url"}` as `[brokers.upstox]` would configure it.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("api_url".into(), self.api_url())])
    }

    /// Add (or replace) an account.
    pub fn add_user(&self, user: UpstoxUser) {
        self.state
            .lock()
            .accounts
            .insert(user.user_id.to_ascii_uppercase(), user);
    }

    /// What the fake saw.
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether the profile would accept this token now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .tokens
            .get(token)
            .is_some_and(|t| now < t.expires_ms)
    }

    /// How many Q1s the app of `api_key` sent.
    pub fn token_requests(&self, api_key: &str) -> usize {
        self.state.lock().requests.get(api_key).map_or(0, Vec::len)
    }

    /// A token the profile accepts for `user_id`, dying at the next 03:30 IST.
    pub fn mint(&self, user_id: &str) -> String {
        mint(&self.state, user_id)
    }

    /// The person approves the app's pending request on their phone: Upstox POSTs the exact Q3
    /// body to the app's notifier URL. `Err` when no request is pending.
    pub async fn approve(&self, user_id: &str) -> Result<Delivered, String> {
        approve(&self.state, user_id).await
    }

    /// POST a Q3 body for `user_id`, tampered as asked, to the app's notifier URL.
    pub async fn deliver(&self, user_id: &str, tamper: Tamper) -> Result<Delivered, String> {
        let (body, token, url) = delivery_body(&self.state, user_id, tamper)?;
        post_json(&url, &body.to_string(), token).await
    }

    /// The Q3 body for `user_id` (tampered as asked), its token and the notifier URL.
    pub fn delivery_body(
        &self,
        user_id: &str,
        tamper: Tamper,
    ) -> Result<(Value, String, String), String> {
        delivery_body(&self.state, user_id, tamper)
    }

    /// POST `body` (a delivery as it was, to replay it) to `url`.
    pub async fn post(url: &str, body: &str, token: String) -> Result<Delivered, String> {
        post_json(url, body, token).await
    }
}

async fn approve(state: &UpstoxState, user_id: &str) -> Result<Delivered, String> {
    let pending = {
        let inner = state.lock();
        let user = inner
            .accounts
            .get(&user_id.to_ascii_uppercase())
            .ok_or("no such user")?;
        inner
            .requests
            .get(&user.api_key)
            .is_some_and(|r| !r.is_empty())
    };
    if !pending {
        return Err("no pending access token request".into());
    }
    let (body, token, url) = delivery_body(state, user_id, Tamper::None)?;
    post_json(&url, &body.to_string(), token).await
}

async fn post_json(url: &str, body: &str, token: String) -> Result<Delivered, String> {
    // Err when a provider is installed already (the daemon's tests): that one serves.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    Ok(Delivered {
        status,
        body,
        token,
    })
}

fn delivery_body(
    state: &UpstoxState,
    user_id: &str,
    tamper: Tamper,
) -> Result<(Value, String, String), String> {
    let now = (state.now)();
    let user = state
        .lock()
        .accounts
        .get(&user_id.to_ascii_uppercase())
        .cloned()
        .ok_or("no such user")?;
    let token = match &tamper {
        Tamper::TokenOf(other) => mint(state, other),
        _ => mint(state, &user.user_id),
    };
    let expires = next_half_three(now);
    let mut body = json!({
        "client_id": user.api_key, "user_id": user.user_id, "access_token": token,
        "token_type": "Bearer", "expires_at": expires.to_string(),
        "issued_at": now.to_string(), "message_type": "access_token",
    });
    match tamper {
        Tamper::ClientId(id) => body["client_id"] = id.into(),
        Tamper::IssuedAgo(ms) => body["issued_at"] = (now - ms).to_string().into(),
        Tamper::UserId(id) => body["user_id"] = id.into(),
        Tamper::ExpiresLate => body["expires_at"] = (expires + 86_400_000).to_string().into(),
        Tamper::None | Tamper::TokenOf(_) => {}
    }
    Ok((body, token, user.notifier_url))
}

/// The first 03:30 IST strictly after `ms`.
fn next_half_three(ms: i64) -> i64 {
    let half = 30 * 60_000;
    ist::next_at(ms - half, 3) + half
}

fn mint(state: &UpstoxState, user_id: &str) -> String {
    let now = (state.now)();
    // Upstox's tokens are JWTs; an opaque string is enough here: nothing reads them.
    let token = format!(
        "eyJ0eXAiOiJKV1QiLCJrZXlfaWQiOiJza192MS4wIn0.{}",
        random_token(40)
    );
    state.lock().tokens.insert(
        token.clone(),
        Token {
            user_id: user_id.to_ascii_uppercase(),
            expires_ms: next_half_three(now),
        },
    );
    token
}

async fn dialog(
    State(s): State<Arc<UpstoxState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    let inner = s.lock();
    let app = inner
        .accounts
        .values()
        .find(|u| u.api_key == get("client_id"));
    let Some(app) = app.filter(|u| u.redirect_uri == get("redirect_uri")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "UDAPI100068",
            "Check your 'client_id' and 'redirect_uri'; one or both are incorrect.",
        );
    };
    if get("response_type") != "code" {
        return error(
            StatusCode::BAD_REQUEST,
            "UDAPI100011",
            "Invalid response_type",
        );
    }
    // `_person=<user id>` stands for a person who logged in on the page (mobile, OTP, PIN).
    let Some(person) = q.get("_person") else {
        return html(
            StatusCode::OK,
            "cloudflare",
            "<!DOCTYPE html><html><head><title>Upstox Login</title></head><body><form>Mobile number <input name=\"mobileNum\"></form></body></html>",
        );
    };
    let (redirect, key) = (app.redirect_uri.clone(), app.api_key.clone());
    drop(inner);
    let code = random_token(6);
    s.lock()
        .codes
        .insert(code.clone(), (person.to_ascii_uppercase(), key));
    let mut target = url::Url::parse(&redirect).expect("a redirect URL");
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", get("state"));
    (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
}

async fn get_token(
    State(s): State<Arc<UpstoxState>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
    if get("grant_type") != "authorization_code" {
        return error(StatusCode::BAD_REQUEST, "UDAPI100036", "Invalid grant_type");
    }
    let mut inner = s.lock();
    // Used up whatever happens next (upstox.md, risk 5).
    let Some((user_id, key)) = inner.codes.remove(get("code")) else {
        return error(StatusCode::BAD_REQUEST, "UDAPI100057", "Invalid Auth code");
    };
    let Some(user) = inner.accounts.get(&user_id).cloned() else {
        return error(StatusCode::BAD_REQUEST, "UDAPI100057", "Invalid Auth code");
    };
    if get("client_id") != key || get("client_secret") != user.api_secret {
        return error(
            StatusCode::UNAUTHORIZED,
            "UDAPI100016",
            "Invalid Credentials",
        );
    }
    if get("redirect_uri") != user.redirect_uri {
        return error(
            StatusCode::BAD_REQUEST,
            "UDAPI100070",
            "redirect_uri mismatch",
        );
    }
    if user.behaviour == UpstoxBehaviour::NoSegments {
        return error(
            StatusCode::BAD_REQUEST,
            "UDAPI100500",
            "No segments for these users are active. Manual reactivation is recommended from Upstox app/web.",
        );
    }
    drop(inner);
    let token = mint(&s, &user.user_id);
    Json(json!({
        "email": "user@example.com", "exchanges": ["NSE", "NFO", "BSE"], "products": ["D", "I"],
        "broker": "UPSTOX", "user_id": user.user_id, "user_name": format!("USER {}", user.user_id),
        "order_types": ["MARKET", "LIMIT"], "user_type": "individual", "poa": false,
        "is_active": true, "access_token": token, "extended_token": format!("ext-{}", random_token(32)),
    }))
    .into_response()
}

async fn request_token(
    State(s): State<Arc<UpstoxState>>,
    Path(client_id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let now = (s.now)();
    let mut inner = s.lock();
    let Some(user) = inner
        .accounts
        .values()
        .find(|u| u.api_key == client_id)
        .cloned()
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "UDAPI100068",
            "Check your 'client_id'",
        );
    };
    match user.behaviour {
        UpstoxBehaviour::RateLimited => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "UDAPI10005",
                "Too Many Request Sent",
            );
        }
        UpstoxBehaviour::Cloudflare503 => {
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                "cloudflare",
                "<!DOCTYPE html><html><head><title>api.upstox.com | 503: Service temporarily unavailable</title></head><body>Error 503 Ray ID: 8f1e2d3c4b5a6978</body></html>",
            );
        }
        UpstoxBehaviour::InactiveAppWith200 => {
            return error(
                StatusCode::OK,
                "UDAPI100073",
                "Your 'client_id' is inactive",
            );
        }
        _ => {}
    }
    if body.get("client_secret").and_then(Value::as_str) != Some(user.api_secret.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UDAPI100016",
            "Invalid Credentials",
        );
    }
    inner.requests.entry(client_id).or_default().push(now);
    Json(json!({"status": "success", "data": {
        "authorization_expiry": next_half_three(now).to_string(),
        "notifier_url": user.notifier_url,
    }}))
    .into_response()
}

async fn profile(State(s): State<Arc<UpstoxState>>, headers: HeaderMap) -> Response {
    let now = (s.now)();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_default();
    match s.lock().tokens.get(token) {
        Some(t) if now < t.expires_ms => Json(json!({"status": "success", "data": {
            "email": "user@example.com", "exchanges": ["NSE", "BSE"], "products": ["D", "I"],
            "broker": "UPSTOX", "user_id": t.user_id, "user_name": format!("USER {}", t.user_id),
            "order_types": ["MARKET", "LIMIT"], "user_type": "individual", "poa": false,
            "ddpi": false, "is_active": true,
        }}))
        .into_response(),
        _ => error(
            StatusCode::UNAUTHORIZED,
            "UDAPI100050",
            "Invalid token used to access API",
        ),
    }
}

/// `POST /_control/approve {"user_id"}`: [`FakeUpstox::approve`] over HTTP, for scripts.
async fn control_notifier(State(s): State<Arc<UpstoxState>>, Json(body): Json<Value>) -> Response {
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
    let (app, url) = (text("api_key"), text("url"));
    let mut inner = s.lock();
    let mut changed = 0;
    for user in inner.accounts.values_mut().filter(|u| u.api_key == app) {
        user.notifier_url = url.to_owned();
        changed += 1;
    }
    if changed == 0 {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "no such app"}))).into_response();
    }
    Json(json!({"apps_updated": changed})).into_response()
}

async fn control_approve(State(s): State<Arc<UpstoxState>>, Json(body): Json<Value>) -> Response {
    let user_id = body
        .get("user_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match approve(&s, user_id).await {
        Ok(d) => Json(json!({"delivered": d.status, "answer": d.body})).into_response(),
        Err(e) => (StatusCode::CONFLICT, Json(json!({"error": e}))).into_response(),
    }
}
