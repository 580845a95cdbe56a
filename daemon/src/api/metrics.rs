//! `/metrics` in Prometheus text format. The refresher records through the `metrics` facade
//! (`tokenbot_refresh_total{broker,outcome,class}`, `tokenbot_login_duration_seconds{broker}`);
//! the API adds `tokenbot_http_requests_total{method,route,status}` and, at each scrape,
//! `tokenbot_tokens_expiring_within_hour`, `tokenbot_tokens_valid` (counted at most once a
//! second, [`super::token_counts`]) and `tokenbot_mirror_backlog`. The route needs a service key.
//!
//! A process has one global recorder, installed on first use and shared by every router (tests
//! build many): a `OnceLock` holds its handle.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::ApiState;
use super::auth::IntegrationKey;
use super::error::{ApiError, ErrorBody};

/// Buckets of the login duration histogram, in seconds (a login takes 1 to 90 s).
const LOGIN_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 90.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first call; `None` when another recorder was
/// installed first (logged once).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("tokenbot_login_duration_seconds".into()),
                    LOGIN_BUCKETS,
                )
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    describe_metrics();
                    Some(handle)
                }
                Err(e) => {
                    tracing::error!(error = %e, "the Prometheus recorder could not be installed; /metrics is unavailable");
                    None
                }
            }
        })
        .as_ref()
}

fn describe_metrics() {
    metrics::describe_counter!(
        "tokenbot_http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    metrics::describe_counter!(
        "tokenbot_refresh_total",
        "Account refreshes, by broker, outcome and error class"
    );
    metrics::describe_histogram!(
        "tokenbot_login_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of broker logins"
    );
    metrics::describe_gauge!(
        "tokenbot_tokens_expiring_within_hour",
        "Stored tokens that are valid now and expire within the hour"
    );
    metrics::describe_gauge!("tokenbot_tokens_valid", "Stored tokens that are valid now");
    metrics::describe_gauge!(
        "tokenbot_mirror_backlog",
        "Token changes waiting for the Postgres mirror"
    );
    metrics::describe_gauge!(
        "tokenbot_leader",
        "1 while this daemon leads those sharing its vault (always, on a vault file), else 0"
    );
    metrics::describe_gauge!(
        "tokenbot_vault_degraded",
        "1 while the vault's database cannot be reached and tokens are served from the cache"
    );
    metrics::describe_gauge!(
        "tokenbot_broker_breaker_open",
        "1 while a broker's scheduled and catch-up logins pause after repeated unavailability"
    );
}

/// Count one answered request. `route` is the matched template; unmatched requests share one
/// label so that scanning for paths cannot grow the series without bound.
///
/// Each worker thread keeps the counter handles it has used, so a request costs one small map
/// lookup instead of building a labelled key and looking it up in the recorder's registry, a
/// visible share of a token read (docs/performance.md). The map is bounded by the label
/// combinations: methods x routes x statuses.
pub fn record_http(method: &Method, route: Option<&'static str>, status: StatusCode) {
    type Labels = (&'static str, &'static str, &'static str);
    thread_local! {
        static COUNTERS: RefCell<HashMap<Labels, metrics::Counter>> = RefCell::new(HashMap::new());
    }
    if HANDLE.get().is_none_or(Option::is_none) {
        return;
    }
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let labels = (method, route.unwrap_or("(unmatched)"), status_label(status));
    COUNTERS.with_borrow_mut(|counters| {
        counters
            .entry(labels)
            .or_insert_with(|| {
                let (method, route, status) = labels;
                metrics::counter!(
                    "tokenbot_http_requests_total",
                    "method" => method,
                    "route" => route,
                    "status" => status,
                )
            })
            .increment(1);
    });
}

/// `"200"` for 200: the three digits of every status code, made once.
fn status_label(status: StatusCode) -> &'static str {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| (0..1000).map(|n| n.to_string()).collect());
    // StatusCode holds 100 to 999 only.
    &labels[usize::from(status.as_u16())]
}

/// `GET /metrics`
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
        (status = 503, description = "No Prometheus recorder in this process", body = ErrorBody),
    ),
    security(("api_key" = []), ("api_key_bearer" = []))
)]
pub async fn metrics(
    _: IntegrationKey,
    State(api): State<Arc<ApiState>>,
) -> Result<Response, ApiError> {
    let Some(handle) = handle() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder was installed in this process",
        ));
    };
    let leads = api.app.cluster.role() == crate::cluster::Role::Leader;
    metrics::gauge!("tokenbot_leader").set(f64::from(u8::from(leads)));
    metrics::gauge!("tokenbot_vault_degraded")
        .set(f64::from(u8::from(api.app.vault.is_degraded())));
    let counts = super::token_counts::token_counts(&api).await?;
    let backlog = super::token_counts::backlog(&api).await?;
    metrics::gauge!("tokenbot_tokens_expiring_within_hour").set(counts.expiring_within_hour as f64);
    metrics::gauge!("tokenbot_tokens_valid").set(counts.valid as f64);
    metrics::gauge!("tokenbot_mirror_backlog").set(backlog as f64);
    for (broker, breaker) in api.refresher().breakers() {
        metrics::gauge!("tokenbot_broker_breaker_open", "broker" => broker)
            .set(f64::from(u8::from(breaker.open)));
    }
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
