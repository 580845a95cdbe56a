//! The IIFL refresh job's integration routes (`X-API-Key` or `Authorization: Bearer <api key>`):
//! refresh every account, or one user's, and answer the job's summary. Logins run through the
//! daemon's refresher, so a login the scheduler already has in flight is joined, not repeated.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::ApiState;
use super::accounts::refresh_selection;
use super::auth::IntegrationKey;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::params::{BrokerQuery, broker_id, user_id};
use super::views::RefreshSummaryDoc;
use crate::refresh::{RefreshSummary, Selection};
use crate::vault::Trigger;

/// `POST /api/integration/tokens/refresh-all`
#[utoipa::path(
    post,
    path = "/api/integration/tokens/refresh-all",
    tag = "integration",
    params(BrokerQuery),
    responses(
        (status = 200, description = "Every account (at `broker`) refreshed; paused and externally managed ones skipped", body = RefreshSummaryDoc),
        (status = 400, description = "Invalid `broker`", body = ErrorBody),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
    ),
    security(("api_key" = []), ("api_key_bearer" = []))
)]
pub async fn refresh_all(
    State(api): State<Arc<ApiState>>,
    IntegrationKey(by): IntegrationKey,
    ApiQuery(q): ApiQuery<BrokerQuery>,
) -> Result<Json<RefreshSummary>, ApiError> {
    tracing::info!(key = %by, "refresh-all requested");
    let selection = Selection {
        user: None,
        broker: broker_id(q.broker)?,
    };
    refresh_selection(&api, selection, Trigger::Api)
        .await
        .map(Json)
}

/// `POST /api/integration/tokens/refresh/{userId}`
#[utoipa::path(
    post,
    path = "/api/integration/tokens/refresh/{userId}",
    tag = "integration",
    params(("userId" = String, Path, description = "The platform's user id"), BrokerQuery),
    responses(
        (status = 200, description = "The user's accounts (at `broker`) refreshed", body = RefreshSummaryDoc),
        (status = 400, description = "Invalid user id or `broker`", body = ErrorBody),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
        (status = 404, description = "No such user or account", body = ErrorBody),
    ),
    security(("api_key" = []), ("api_key_bearer" = []))
)]
pub async fn refresh_user(
    State(api): State<Arc<ApiState>>,
    IntegrationKey(by): IntegrationKey,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<BrokerQuery>,
) -> Result<Json<RefreshSummary>, ApiError> {
    let user = user_id(user)?;
    tracing::info!(key = %by, %user, "user refresh requested");
    let selection = Selection {
        user: Some(user),
        broker: broker_id(q.broker)?,
    };
    refresh_selection(&api, selection, Trigger::Api)
        .await
        .map(Json)
}
