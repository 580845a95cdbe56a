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
//! - `console/`: the operator console, HTML pages at `/console` signed in by a session cookie
//!   (not in the OpenAPI document). A route group like the others: it imports only the shared
//!   modules.
//! - `audit`: group-committed audit log of token reads. `openapi`: `/openapi.json`.
//!
//! Names: a response body is a `*View`, a request body a `*Body` (and `ErrorBody` the error
//! response). The OpenAPI document keeps the schema names it was published with
//! (`#[schema(as = TokenOut)]` and the like), so clients generated from it do not change.

mod accounts;
mod audit;
pub mod auth;
mod console;
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
    /// The console's signed-in sessions (in memory).
    console: console::Sessions,
    /// The console's refresh-all in progress, if any (one per daemon).
    refresh_all: console::RefreshAll,
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
            console: console::Sessions::new(&app.config.console),
            refresh_all: console::RefreshAll::default(),
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
    /// Listed in `/openapi.json`: every route of the JSON API is; the console's HTML pages and
    /// forms (`/console...`) are not, being no API a client is generated for.
    pub openapi: bool,
    handler: Handler,
}

/// Every route the API serves.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/health",
        openapi: true,
        handler: || get(health::health),
    },
    Route {
        method: "GET",
        path: "/health/detailed",
        openapi: true,
        handler: || get(health::detailed),
    },
    Route {
        method: "POST",
        path: "/api/credentials",
        openapi: true,
        handler: || post(credentials::create),
    },
    Route {
        method: "GET",
        path: "/api/credentials/status",
        openapi: true,
        handler: || get(credentials::status),
    },
    Route {
        method: "DELETE",
        path: "/api/credentials",
        openapi: true,
        handler: || delete(credentials::remove),
    },
    Route {
        method: "PATCH",
        path: "/api/credentials/toggle",
        openapi: true,
        handler: || patch(credentials::toggle),
    },
    Route {
        method: "POST",
        path: "/api/tokens/refresh",
        openapi: true,
        handler: || post(tokens::refresh_mine),
    },
    Route {
        method: "GET",
        path: "/api/tokens/status",
        openapi: true,
        handler: || get(tokens::status),
    },
    Route {
        method: "GET",
        path: "/api/tokens/events",
        openapi: true,
        handler: || get(events::stream),
    },
    Route {
        method: "GET",
        path: "/api/tokens/{userId}",
        openapi: true,
        handler: || get(tokens::read),
    },
    Route {
        method: "GET",
        path: "/api/tokens/logs/{userId}",
        openapi: true,
        handler: || get(tokens::logs),
    },
    Route {
        method: "POST",
        path: "/api/integration/tokens/refresh-all",
        openapi: true,
        handler: || post(integration::refresh_all),
    },
    Route {
        method: "POST",
        path: "/api/integration/tokens/refresh/{userId}",
        openapi: true,
        handler: || post(integration::refresh_user),
    },
    Route {
        method: "PUT",
        path: "/api/users/{userId}/accounts/{broker}",
        openapi: true,
        handler: || put(users::provision),
    },
    Route {
        method: "PATCH",
        path: "/api/users/{userId}/accounts/{broker}",
        openapi: true,
        handler: || patch(users::change),
    },
    Route {
        method: "DELETE",
        path: "/api/users/{userId}/accounts/{broker}",
        openapi: true,
        handler: || delete(users::remove),
    },
    Route {
        method: "GET",
        path: "/api/users",
        openapi: true,
        handler: || get(users::list),
    },
    Route {
        method: "GET",
        path: "/api/login/{broker}/{userId}/url",
        openapi: true,
        handler: || get(login::url),
    },
    Route {
        method: "GET",
        path: "/login/{broker}/{userId}",
        openapi: true,
        handler: || get(login::link),
    },
    Route {
        method: "GET",
        path: "/callback/{broker}",
        openapi: true,
        handler: || get(login::callback),
    },
    Route {
        method: "POST",
        path: "/webhook/{broker}/{hook}",
        // The limit before the body is read: the route takes no credential.
        openapi: true,
        handler: || {
            post(webhook::deliver).layer(DefaultBodyLimit::max(webhook::DELIVERY_LIMIT_BYTES))
        },
    },
    Route {
        method: "POST",
        path: "/api/webhooks/{broker}",
        openapi: true,
        handler: || post(webhook::create_hook),
    },
    Route {
        method: "GET",
        path: "/openapi.json",
        openapi: true,
        handler: || get(openapi::openapi_json),
    },
    Route {
        method: "GET",
        path: "/metrics",
        openapi: true,
        handler: || get(metrics::metrics),
    },
    // The console (`console`): HTML for people, signed in by a session cookie, not in the
    // OpenAPI document.
    Route {
        method: "GET",
        path: "/console",
        openapi: false,
        handler: || get(console::overview),
    },
    Route {
        method: "GET",
        path: "/console/console.css",
        openapi: false,
        handler: || get(console::stylesheet),
    },
    Route {
        method: "GET",
        path: "/console/console.js",
        openapi: false,
        handler: || get(console::script),
    },
    Route {
        method: "POST",
        path: "/console/refresh-all",
        openapi: false,
        handler: || post(console::start_refresh_all),
    },
    Route {
        method: "GET",
        path: "/console/refresh-all",
        openapi: false,
        handler: || get(console::refresh_all_page),
    },
    Route {
        method: "GET",
        path: "/console/refresh-all/events",
        openapi: false,
        handler: || get(console::progress_events),
    },
    Route {
        method: "POST",
        path: "/console/sign-in",
        openapi: false,
        handler: || post(console::sign_in),
    },
    Route {
        method: "POST",
        path: "/console/sign-out",
        openapi: false,
        handler: || post(console::sign_out),
    },
    Route {
        method: "GET",
        path: "/console/accounts",
        openapi: false,
        handler: || get(console::accounts),
    },
    Route {
        method: "GET",
        path: "/console/accounts/new",
        openapi: false,
        handler: || get(console::new_account_form),
    },
    Route {
        method: "POST",
        path: "/console/accounts/new",
        openapi: false,
        handler: || post(console::add_account),
    },
    Route {
        method: "GET",
        path: "/console/accounts/{userId}/{broker}/credentials",
        openapi: false,
        handler: || get(console::credentials_form),
    },
    Route {
        method: "POST",
        path: "/console/accounts/{userId}/{broker}/credentials",
        openapi: false,
        handler: || post(console::update_credentials),
    },
    Route {
        method: "GET",
        path: "/console/accounts/{userId}/{broker}",
        openapi: false,
        handler: || get(console::account),
    },
    Route {
        method: "POST",
        path: "/console/accounts/{userId}/{broker}/login",
        openapi: false,
        handler: || post(console::log_in_now),
    },
    Route {
        method: "POST",
        path: "/console/accounts/{userId}/{broker}/assisted",
        openapi: false,
        handler: || post(console::assisted),
    },
    Route {
        method: "POST",
        path: "/console/accounts/{userId}/{broker}/flags",
        openapi: false,
        handler: || post(console::flags),
    },
    Route {
        method: "GET",
        path: "/console/accounts/{userId}/{broker}/remove",
        openapi: false,
        handler: || get(console::confirm_remove),
    },
    Route {
        method: "POST",
        path: "/console/accounts/{userId}/{broker}/remove",
        openapi: false,
        handler: || post(console::remove),
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
