//! What wraps every request: the JSON error shape for errors made outside handlers, a request id
//! (kept from `X-Request-Id` when it is a sane one, else made), a tracing span carrying it, the
//! HTTP metrics, one log line, the security headers; and CORS from `server.cors_origins`.
//!
//! The span around the whole request is a `debug` one: at the shipped level (`info`) a live span
//! per request is most of what logging costs a token read, for lines that are not written
//! (docs/performance.md). Below `debug`, the log line of a refused or failed request is written
//! in a span of the same name and fields made for it alone, so that line reads as before; other
//! lines written while a request is handled (an internal error's detail, an auth warning) carry
//! its request id only at `debug`.
//!
//! Logs name the route template (`/api/tokens/{userId}`), never the raw path or query: the
//! assisted-login callback's query carries the broker's single-use request token.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header::{
    CACHE_CONTROL, HeaderName, HeaderValue, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a per-process random prefix and a counter, so they are unique, short and cheap
/// (written on the stack; the header value is the one allocation).
fn next_request_id() -> HeaderValue {
    use std::io::Write;
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 4];
        let _ = getrandom::fill(&mut bytes);
        u32::from_ne_bytes(bytes)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // 8 + 1 + at most 16 hex digits.
    let mut buf = [0u8; 25];
    let mut out = &mut buf[..];
    let _ = write!(out, "{prefix:08x}-{n:x}");
    let len = 25 - out.len();
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("-"))
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

/// The layer of [`Observe`]: request id, span, metrics, log line, security headers, and the JSON
/// error shape for responses made outside handlers.
#[derive(Debug, Clone, Copy)]
pub struct ObserveLayer {
    /// Send `Strict-Transport-Security` (`server.public_url` is https).
    pub hsts: bool,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            hsts: self.hsts,
        }
    }
}

/// Wraps every route (and the fallback), so the matched route template is known. A hand-written
/// service rather than `axum::middleware::from_fn`, which boxes each request's future and clones
/// the inner service twice per request.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    hsts: bool,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let id = match req.headers().get(&REQUEST_ID) {
            Some(v) if acceptable_id(v) => v.clone(),
            _ => next_request_id(),
        };
        let method = req.method().clone();
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .and_then(|p| super::route_template(p.as_str()));
        let span = tracing::debug_span!(
            "request",
            id = id.to_str().unwrap_or("-"),
            method = %method,
            route = route.unwrap_or("(unmatched)"),
        );
        let inner = span.in_scope(|| self.inner.call(req));
        ObserveFuture {
            inner,
            done: Some(Done {
                span,
                started,
                id,
                method,
                route,
                hsts: self.hsts,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Observe`]: polls the route inside the request's span, then
    /// finishes the response.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        done: Option<Done>,
    }
}

/// What [`ObserveFuture`] needs once the route has answered.
struct Done {
    span: tracing::Span,
    started: Instant,
    id: HeaderValue,
    method: Method,
    route: Option<&'static str>,
    hsts: bool,
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for ObserveFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(done) = this.done.as_ref() else {
            panic!("ObserveFuture polled after completion");
        };
        let Ok(response) = ready!(done.span.in_scope(|| this.inner.poll(cx)));
        let done = this.done.take().expect("checked above");
        Poll::Ready(Ok(finish(done, response)))
    }
}

/// How many headers [`finish`] adds at most: a handler that makes its response's header map with
/// room for these and its own allocates it once (the token read does).
pub const ADDED_HEADERS: usize = 6;

/// Headers, metrics and the log line of an answered request.
fn finish(done: Done, response: Response) -> Response {
    let mut response = super::error::json_error_shape(response);
    let status = response.status();
    super::metrics::record_http(&done.method, done.route, status);
    log_line(&done, status);
    let headers = response.headers_mut();
    // Room for the headers below at once, rather than growing the map twice.
    headers.reserve(ADDED_HEADERS);
    let before = headers.len();
    headers.insert(REQUEST_ID, done.id);
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(CACHE_CONTROL) {
        // Tokens and account states must not sit in shared caches.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if done.hsts {
        headers.insert(
            STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    debug_assert!(
        headers.len() <= before + ADDED_HEADERS,
        "ADDED_HEADERS is out of date"
    );
    response
}

/// The request's one log line, in the request's span, or in a span of the same name and fields
/// made for it when the request had none (below `debug`) and the line is one to be written.
fn log_line(done: &Done, status: StatusCode) {
    let ms = done.started.elapsed().as_secs_f64() * 1000.0;
    let noted = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
    let own_span;
    let span = if noted && done.span.is_disabled() {
        own_span = tracing::info_span!(
            "request",
            id = done.id.to_str().unwrap_or("-"),
            method = %done.method,
            route = done.route.unwrap_or("(unmatched)"),
        );
        &own_span
    } else {
        &done.span
    };
    let _enter = span.enter();
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), ms, "request failed");
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        tracing::info!(status = status.as_u16(), ms, "request refused");
    } else {
        tracing::debug!(status = status.as_u16(), ms, "request");
    }
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
