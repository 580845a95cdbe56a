//! The HTTP API. `app(state)` builds the router, so tests can drive it without a socket.
//!
//! Every route is listed once, in [`ROUTES`]: the router is built from that list, and the tests
//! check the list against the OpenAPI document and the router against the list.
//!
//! - `error`: `ApiError` (the one JSON error shape) and the extractors whose rejections use it.
//! - `auth/`: JWTs, API keys, the per-client limit on failed authentications, the client's
//!   address behind proxies, and the extractors naming the caller (`Caller`, `ServiceKey`, ...).
//! - `layers`: request ids, spans, security headers, CORS; `metrics`: Prometheus.
//! - `credentials`, `tokens`, `events`, `integration`, `users`, `login`, `health`: the routes. Route files
//!   never import each other: what several share is in `accounts` (account operations), `params`
//!   (request parameters), `views` (response bodies) and `status` (the daemon's figures).
//! - `audit`: group-committed audit log of token reads. `openapi`: `/openapi.json`.
//!
//! Names: a response body is a `*View`, a request body a `*Body` (and `ErrorBody` the error
//! response). The OpenAPI document keeps the schema names it was published with
//! (`#[schema(as = TokenOut)]` and the like), so clients generated from it do not change.

mod accounts;
mod audit;
pub mod auth;
mod credentials;
pub mod error;
mod events;
mod health;
mod integration;
mod layers;
mod login;
pub mod metrics;
pub mod openapi;
mod params;
pub mod serve;
mod status;
mod token_counts;
mod tokens;
mod users;
pub mod views;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, patch, post, put};

use crate::AppState;
use crate::assisted::StateStore;
use crate::vault::AccountKey;

/// Lifetime of an assisted-login state: the time a person has to log in at the broker.
const ASSISTED_STATE_TTL: Duration = Duration::from_secs(600);
/// Assisted logins pending at once.
const ASSISTED_MAX_PENDING: usize = 10_000;

/// What the handlers share: the daemon's state plus what only the API needs. One per router.
pub struct ApiState {
    /// The daemon's state (config, plugins, plugin_env, vault, refresher).
    pub app: Arc<AppState>,
    /// JWT key, API key digests, and the failed-authentication counters.
    pub auth: auth::Auth,
    /// Pending assisted logins: the URL route issues a state, the callback consumes it once.
    pub assisted: StateStore<AccountKey>,
    /// Writes the audit log of token reads (group commit).
    audit: audit::AuditWriter,
    /// Serialised token read bodies (see [`tokens::BodyCache`]).
    bodies: tokens::BodyCache,
    /// The token figures of `/health/detailed` and `/metrics` (see [`token_counts::token_counts`]).
    counts: token_counts::CountsCache,
    /// Send `Strict-Transport-Security`: `server.public_url` is https.
    hsts: bool,
    /// When the router was built, for the uptime in `/health/detailed`.
    started: std::time::Instant,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The API's state over the daemon's.
    pub fn new(app: Arc<AppState>) -> ApiState {
        ApiState {
            auth: auth::Auth::from_config(&app.config.auth, &app.config.server.trusted_proxies),
            assisted: StateStore::new(ASSISTED_STATE_TTL, ASSISTED_MAX_PENDING),
            audit: audit::AuditWriter::start(app.vault.clone()),
            bodies: tokens::BodyCache::default(),
            counts: token_counts::CountsCache::default(),
            hsts: app
                .config
                .server
                .public_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "https"),
            started: std::time::Instant::now(),
            app,
        }
    }

    /// Now, on the daemon's clock (Unix ms).
    pub fn now_ms(&self) -> i64 {
        self.app.clock.now_ms()
    }

    /// The refresher shared with the scheduler (single flight across both).
    pub fn refresher(&self) -> Arc<crate::refresh::Refresher> {
        self.app.refresher.clone()
    }
}

type Handler = fn() -> MethodRouter<Arc<ApiState>>;

/// One route: method, path (axum's and OpenAPI's syntax agree: `{param}`) and handler.
pub struct Route {
    /// `GET`, `POST`, ...
    pub method: &'static str,
    /// Path template.
    pub path: &'static str,
    handler: Handler,
}

/// Every route the API serves.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/health",
        handler: || get(health::health),
    },
    Route {
        method: "GET",
        path: "/health/detailed",
        handler: || get(health::detailed),
    },
    Route {
        method: "POST",
        path: "/api/credentials",
        handler: || post(credentials::create),
    },
    Route {
        method: "GET",
        path: "/api/credentials/status",
        handler: || get(credentials::status),
    },
    Route {
        method: "DELETE",
        path: "/api/credentials",
        handler: || delete(credentials::remove),
    },
    Route {
        method: "PATCH",
        path: "/api/credentials/toggle",
        handler: || patch(credentials::toggle),
    },
    Route {
        method: "POST",
        path: "/api/tokens/refresh",
        handler: || post(tokens::refresh_mine),
    },
    Route {
        method: "GET",
        path: "/api/tokens/status",
        handler: || get(tokens::status),
    },
    Route {
        method: "GET",
        path: "/api/tokens/events",
        handler: || get(events::stream),
    },
    Route {
        method: "GET",
        path: "/api/tokens/{userId}",
        handler: || get(tokens::read),
    },
    Route {
        method: "GET",
        path: "/api/tokens/logs/{userId}",
        handler: || get(tokens::logs),
    },
    Route {
        method: "POST",
        path: "/api/integration/tokens/refresh-all",
        handler: || post(integration::refresh_all),
    },
    Route {
        method: "POST",
        path: "/api/integration/tokens/refresh/{userId}",
        handler: || post(integration::refresh_user),
    },
    Route {
        method: "PUT",
        path: "/api/users/{userId}/accounts/{broker}",
        handler: || put(users::provision),
    },
    Route {
        method: "PATCH",
        path: "/api/users/{userId}/accounts/{broker}",
        handler: || patch(users::change),
    },
    Route {
        method: "DELETE",
        path: "/api/users/{userId}/accounts/{broker}",
        handler: || delete(users::remove),
    },
    Route {
        method: "GET",
        path: "/api/users",
        handler: || get(users::list),
    },
    Route {
        method: "GET",
        path: "/api/login/{broker}/{userId}/url",
        handler: || get(login::url),
    },
    Route {
        method: "GET",
        path: "/login/{broker}/{userId}",
        handler: || get(login::link),
    },
    Route {
        method: "GET",
        path: "/callback/{broker}",
        handler: || get(login::callback),
    },
    Route {
        method: "POST",
        path: "/webhook/{broker}/{hook}",
        // The limit before the body is read: the route takes no credential.
        handler: || {
            post(webhook::deliver).layer(DefaultBodyLimit::max(webhook::DELIVERY_LIMIT_BYTES))
        },
    },
    Route {
        method: "POST",
        path: "/api/webhooks/{broker}",
        handler: || post(webhook::create_hook),
    },
    Route {
        method: "GET",
        path: "/openapi.json",
        handler: || get(openapi::openapi_json),
    },
    Route {
        method: "GET",
        path: "/metrics",
        handler: || get(metrics::metrics),
    },
];

/// The template in [`ROUTES`] of a matched path (`MatchedPath`), as a `&'static str`.
fn route_template(matched: &str) -> Option<&'static str> {
    ROUTES.iter().map(|r| r.path).find(|path| *path == matched)
}

/// The router of the whole API.
pub fn app(state: Arc<AppState>) -> Router {
    metrics::handle();
    let body_limit = state.config.server.body_limit_bytes;
    let cors = layers::cors(&state.config.server.cors_origins);
    let api = Arc::new(ApiState::new(state));
    let mut router: Router<Arc<ApiState>> = Router::new();
    for route in ROUTES {
        // Routes sharing a path merge their methods.
        router = router.route(route.path, (route.handler)());
    }
    let mut router = router
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(body_limit));
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router
        .layer(layers::ObserveLayer { hsts: api.hsts })
        .with_state(api)
}
