//! A fake IIFL Blaze (XTS) interactive API: `/interactive/user/session` and
//! `/interactive/user/profile` (raw `Authorization` token, no "Bearer").

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::mess::{self, HostHabits};
use crate::record::{Recorder, track};
use crate::{FakeOptions, NowFn, Server, fake_jwt, serve};

/// How a fake XTS app behaves. A wrong secretKey needs no behaviour (e-user-0002, HTTP 400).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XtsBehaviour {
    /// Everything works.
    #[default]
    Happy,
    /// The session answers e-user-0002 with HTTP 200 (`type: "error"`).
    ErrorWith200,
    /// 429.
    RateLimited,
    /// An HTML 503.
    Html503,
    /// A JSON 500.
    ServerError,
    /// Success without `result.token`.
    UnexpectedShape,
}

/// A fake XTS app.
#[derive(Clone, Debug)]
pub struct XtsUser {
    /// Client code the app belongs to.
    pub user_id: String,
    /// appKey.
    pub app_key: String,
    /// secretKey.
    pub secret_key: String,
    /// Lifetime of the JWT (`exp` = issue + this).
    pub token_ttl_ms: i64,
    /// Behaviour.
    pub behaviour: XtsBehaviour,
}

impl XtsUser {
    /// A happy app whose tokens live 24 h.
    pub fn new(user_id: &str, app_key: &str, secret_key: &str) -> XtsUser {
        XtsUser {
            user_id: user_id.into(),
            app_key: app_key.into(),
            secret_key: secret_key.into(),
            token_ttl_ms: 24 * 3_600_000,
            behaviour: XtsBehaviour::Happy,
        }
    }

    /// With a behaviour.
    pub fn with_behaviour(mut self, behaviour: XtsBehaviour) -> XtsUser {
        self.behaviour = behaviour;
        self
    }

    /// With a token lifetime.
    pub fn with_token_ttl_ms(mut self, ttl: i64) -> XtsUser {
        self.token_ttl_ms = ttl;
        self
    }
}

struct Token {
    user: String,
    expires_ms: i64,
}

#[derive(Default)]
struct Inner {
    /// By appKey.
    apps: HashMap<String, XtsUser>,
    tokens: HashMap<String, Token>,
}

struct XtsState {
    inner: Mutex<Inner>,
    now: NowFn,
    recorder: Arc<Recorder>,
}

impl XtsState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake XTS on one loopback listener.
pub struct FakeXts {
    server: Server,
    state: Arc<XtsState>,
}

impl std::fmt::Debug for FakeXts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeXts")
            .field("api", &self.server.url)
            .finish()
    }
}

fn xts_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"type": "error", "code": code, "description": description, "result": {}})),
    )
        .into_response()
}

impl FakeXts {
    /// Start on the system clock.
    pub async fn start() -> FakeXts {
        FakeXts::start_with(FakeOptions::default()).await
    }

    /// Start with options.
    pub async fn start_with(options: FakeOptions) -> FakeXts {
        let state = Arc::new(XtsState {
            inner: Mutex::default(),
            now: options.now.clone(),
            recorder: Arc::new(Recorder::new(options.latency)),
        });
        let layer = axum::middleware::from_fn_with_state(state.recorder.clone(), track);
        let router = Router::new()
            .route("/interactive/user/session", post(session).delete(logout))
            .route("/interactive/user/profile", get(profile))
            .route_layer(layer)
            .with_state(state.clone());
        FakeXts {
            server: serve(mess::apply(router, &options, HostHabits::json())).await,
            state,
        }
    }

    /// Base URL.
    pub fn api_url(&self) -> &str {
        &self.server.url
    }

    /// `{"api_url"}` as `[brokers.iifl-xts]` would configure it.
    pub fn base_urls(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("api_url".into(), self.server.url.clone())])
    }

    /// Add (or replace) an app.
    pub fn add_user(&self, user: XtsUser) {
        self.state.lock().apps.insert(user.app_key.clone(), user);
    }

    /// Change an app's behaviour.
    pub fn set_behaviour(&self, app_key: &str, behaviour: XtsBehaviour) {
        if let Some(a) = self.state.lock().apps.get_mut(app_key) {
            a.behaviour = behaviour;
        }
    }

    /// What the fake saw.
    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// Whether the profile route would accept this token now.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let now = (self.state.now)();
        self.state
            .lock()
            .tokens
            .get(token)
            .is_some_and(|t| now < t.expires_ms)
    }
}

fn field(body: &Value, key: &str) -> String {
    body.get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn session(State(s): State<Arc<XtsState>>, Json(body): Json<Value>) -> Response {
    let (app_key, secret) = (field(&body, "appKey"), field(&body, "secretKey"));
    let now = (s.now)();
    let mut inner = s.lock();
    let Some(app) = inner.apps.get(&app_key).cloned() else {
        return xts_error(
            StatusCode::BAD_REQUEST,
            "e-user-0002",
            "Invalid user credentials or token.",
        );
    };
    s.recorder.login_begin(&app.user_id);
    let end = |r: Response| {
        s.recorder.login_end(&app.user_id);
        r
    };
    match app.behaviour {
        XtsBehaviour::RateLimited => {
            return end(xts_error(
                StatusCode::TOO_MANY_REQUESTS,
                "e-apirl-0001",
                "Too many requests",
            ));
        }
        XtsBehaviour::Html503 => {
            return end((
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>503 Service Unavailable</body></html>",
            )
                .into_response());
        }
        XtsBehaviour::ServerError => {
            return end(xts_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "e-server-0001",
                "Internal server error",
            ));
        }
        _ => {}
    }
    if field(&body, "source") != "WebAPI" {
        return end(xts_error(
            StatusCode::BAD_REQUEST,
            "e-user-0001",
            "Invalid source.",
        ));
    }
    if app.secret_key != secret || app.behaviour == XtsBehaviour::ErrorWith200 {
        let status = if app.behaviour == XtsBehaviour::ErrorWith200 {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        return end(xts_error(
            status,
            "e-user-0002",
            "Invalid user credentials or token.",
        ));
    }
    let expires = now + app.token_ttl_ms;
    let token = fake_jwt(
        json!({"userID": app.user_id, "appKey": app_key, "iat": now / 1000, "exp": expires / 1000}),
    );
    inner.tokens.insert(
        token.clone(),
        Token {
            user: app.user_id.clone(),
            expires_ms: expires,
        },
    );
    if app.behaviour == XtsBehaviour::UnexpectedShape {
        return end(Json(json!({"type": "success", "code": "s-user-0001", "description": "Valid User.", "result": {"userID": app.user_id}})).into_response());
    }
    end(Json(json!({
        "type": "success",
        "code": "s-user-0001",
        "description": "Valid User.",
        "result": {
            "token": token,
            "userID": app.user_id,
            "appVersion": "1.0",
            "application_expiry_date": "2099-12-31",
            "clientCodes": [app.user_id],
            "isInvestorClient": true
        }
    }))
    .into_response())
}

fn token_of(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn profile(State(s): State<Arc<XtsState>>, headers: HeaderMap) -> Response {
    let now = (s.now)();
    let inner = s.lock();
    match inner.tokens.get(&token_of(&headers)) {
        Some(t) if now < t.expires_ms => Json(json!({
            "type": "success",
            "code": "s-user-0001",
            "description": "Fetched profile",
            "result": {"ClientId": t.user, "ClientName": format!("Client {}", t.user), "ClientExchangeDetailsList": {}}
        }))
        .into_response(),
        _ => xts_error(StatusCode::UNAUTHORIZED, "e-session-0002", "Invalid Token"),
    }
}

async fn logout(State(s): State<Arc<XtsState>>, headers: HeaderMap) -> Response {
    match s.lock().tokens.remove(&token_of(&headers)) {
        Some(_) => Json(json!({"type": "success", "code": "s-user-0002", "description": "Logged out", "result": {}})).into_response(),
        None => xts_error(StatusCode::UNAUTHORIZED, "e-session-0002", "Invalid Token"),
    }
}
