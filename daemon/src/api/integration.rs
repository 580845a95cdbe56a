//! The IIFL refresh job's integration routes (`X-API-Key` or `Authorization: Bearer <api key>`):
//! refresh every account, or one user's, and answer the job's summary. Logins run through the
//! daemon's refresher, so a login the scheduler already has in flight is joined, not repeated.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::auth::IntegrationKey;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody, blocking};
use super::users::BrokerQuery;
use super::views::{broker_id, user_id};
use crate::refresh::{RefreshSummary, Selection};
use crate::vault::Trigger;

/// The summary of a refresh (the schema of `refresh::RefreshSummary`, which is what is sent).
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = RefreshSummary)]
pub struct RefreshSummaryDoc {
    /// Accounts that got a new token.
    pub successful: usize,
    /// Accounts whose login failed.
    pub failed: usize,
    /// Accounts not attempted (paused, managed externally, needing attention).
    pub skipped: usize,
    /// All accounts covered.
    pub total: usize,
    /// One entry per account, by user then broker.
    pub results: Vec<AccountResultDoc>,
}

/// The outcome of one account's refresh.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = AccountResult)]
pub struct AccountResultDoc {
    /// The platform's user id.
    pub user_id: String,
    /// Broker id.
    pub broker: String,
    /// `success`, `failed` or `skipped`.
    #[schema(pattern = "^(success|failed|skipped)$")]
    pub outcome: String,
    /// Error class of the last attempt when failed, or why skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// What happened (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Login attempts made.
    pub attempts: u32,
}

/// Refresh `selection`; 404 when it names a user (or account) that does not exist.
pub(super) async fn run_refresh(
    api: &Arc<ApiState>,
    selection: Selection,
    trigger: Trigger,
) -> Result<RefreshSummary, ApiError> {
    if let Some(user) = selection.user.clone() {
        let vault = api.app.vault.clone();
        let broker = selection.broker.clone();
        let any = blocking(move || {
            Ok(vault
                .user_accounts(&user)?
                .iter()
                .any(|a| broker.as_ref().is_none_or(|b| &a.broker == b)))
        })
        .await?;
        if !any {
            return Err(ApiError::not_found(
                "no_account",
                "no such account to refresh".to_owned(),
            ));
        }
    }
    let summary = api.refresher().refresh(selection, trigger).await;
    tracing::info!(
        successful = summary.successful,
        failed = summary.failed,
        skipped = summary.skipped,
        total = summary.total,
        "refresh through the API"
    );
    Ok(summary)
}

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
    run_refresh(&api, selection, Trigger::Api).await.map(Json)
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
    run_refresh(&api, selection, Trigger::Api).await.map(Json)
}
