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
    /// `ok`; `degraded` while the vault's database cannot be reached (tokens are served from
    /// the cache while they are valid); `unavailable` while the vault's file cannot be used.
    pub status: String,
    /// `leader` or `follower`, for a daemon sharing its vault with others (`[vault] engine =
    /// "postgres"`); absent for a vault file's one daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::cluster::Role>,
}

/// `GET /health`
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    responses(
        (status = 200, description = "The daemon is up (`degraded`: serving cached tokens without its vault's database)", body = HealthView),
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
    let role = api.app.vault.is_shared().then(|| api.app.cluster.role());
    let (code, status) = if !available {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else if api.app.vault.is_degraded() {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    let status = status.into();
    (code, Json(HealthView { status, role }))
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
