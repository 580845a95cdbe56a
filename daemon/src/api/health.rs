//! `/health` (liveness, open to load balancers) and `/health/detailed` (the Node service's figures
//! plus schedules, plugins and the mirror; a service key is needed: it tells anyone how many
//! accounts there are, which plugins run and what the database said). Neither shows a secret.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use super::auth::ServiceKey;
use super::error::{ApiError, ErrorBody};
use super::status::{self, DetailedHealthView};

/// `{"status":"ok"}`
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = HealthOut)]
pub struct HealthView {
    /// `ok`, or `unavailable` while the vault's file cannot be used.
    pub status: String,
}

/// `GET /health`
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    responses(
        (status = 200, description = "The daemon is up", body = HealthView),
        (status = 503, description = "The vault's file failed and could not be reopened yet", body = HealthView),
    )
)]
pub async fn health(State(api): State<Arc<ApiState>>) -> (StatusCode, Json<HealthView>) {
    let vault = api.app.vault.clone();
    // The common case is one atomic load; only a vault already found broken is retried.
    let available = vault.is_available()
        || tokio::task::spawn_blocking(move || vault.check_available())
            .await
            .unwrap_or(false);
    if available {
        (
            StatusCode::OK,
            Json(HealthView {
                status: "ok".into(),
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthView {
                status: "unavailable".into(),
            }),
        )
    }
}

/// `GET /health/detailed`
#[utoipa::path(
    get,
    path = "/health/detailed",
    tag = "service",
    responses(
        (status = 200, description = "Figures of the whole daemon", body = DetailedHealthView),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
        (status = 500, description = "The vault failed", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn detailed(
    _: ServiceKey,
    State(api): State<Arc<ApiState>>,
) -> Result<Json<DetailedHealthView>, ApiError> {
    status::detailed(&api).await.map(Json)
}
