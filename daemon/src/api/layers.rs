//! What wraps every request: the JSON error shape for errors made outside handlers, a request id (kept from `X-Request-Id` when it is a sane one, else
//! made), a tracing span carrying it, the HTTP metrics, one log line, the security headers; and
//! CORS from `server.cors_origins`.
//!
//! Logs name the route template (`/api/tokens/{userId}`), never the raw path or query: the
//! assisted-login callback's query carries the broker's single-use request token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{
    CACHE_CONTROL, HeaderName, HeaderValue, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use super::ApiState;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a per-process random prefix and a counter, so they are unique, short and cheap.
fn next_request_id() -> HeaderValue {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 4];
        let _ = getrandom::fill(&mut bytes);
        hex::encode(bytes)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("{prefix}-{n:x}")).unwrap_or(HeaderValue::from_static("-"))
}

/// A client's id is kept when it is 1 to 64 of `A-Z a-z 0-9 - _ .`; anything else is replaced.
fn acceptable_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Middleware: request id, span, metrics, log line, security headers.
pub async fn observe(State(api): State<Arc<ApiState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match req.headers().get(&REQUEST_ID) {
        Some(v) if acceptable_id(v) => v.clone(),
        _ => {
            let id = next_request_id();
            req.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        id = id.to_str().unwrap_or("-"),
        method = %method,
        route = route.as_deref().unwrap_or("(unmatched)"),
    );
    let response = next.run(req).instrument(span.clone()).await;
    let mut response = super::error::json_error_shape(response);
    let status = response.status();
    super::metrics::record_http(&method, route.as_deref(), status);
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, id);
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(CACHE_CONTROL) {
        // Tokens and account states must not sit in shared caches.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if api.hsts {
        headers.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    let _enter = span.enter();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), ms, "request failed");
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        tracing::info!(status = status.as_u16(), ms, "request refused");
    } else {
        tracing::debug!(status = status.as_u16(), ms, "request");
    }
    response
}

/// CORS from `server.cors_origins`: none configured, no CORS headers (browsers on other origins
/// are refused); `*` allows any origin (never with credentials). Origins that are not valid header
/// values are skipped with a warning.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| {
                let o = o.trim_end_matches('/');
                HeaderValue::from_str(o)
                    .inspect_err(|_| tracing::warn!(origin = %o, "server.cors_origins: not a valid origin; skipped"))
                    .ok()
            })
            .collect();
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
                HeaderName::from_static(super::auth::API_KEY_HEADER),
                REQUEST_ID,
            ])
            .expose_headers([REQUEST_ID])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
