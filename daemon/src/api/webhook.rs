//! Tokens a broker delivers by webhook (Upstox's notifier webhook, ABI 1.3):
//! `POST /webhook/{broker}/{hook}` takes a delivery (unauthenticated at the HTTP layer: Upstox
//! sends no credentials; the random path token and the checks in `refresh::approval` stand in),
//! and `POST /api/webhooks/{broker}` mints an app's path token, shown once as the full URL to
//! register with the broker.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::accounts::plugin_for;
use super::auth::ServiceKey;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::refresh::{Delivery, sha256_hex};
use crate::vault::blocking;

/// The largest delivery read: Upstox's is a few hundred bytes (upstox.md).
pub const DELIVERY_LIMIT_BYTES: usize = 16 * 1024;

/// The answer to a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeliveryOut)]
pub struct DeliveryView {
    /// `accepted` (the token is stored) or `ignored` (forged, stale, replayed, for no pending
    /// request: nothing stored).
    pub status: &'static str,
}

/// `POST /webhook/{broker}/{hook}`
#[utoipa::path(
    post,
    path = "/webhook/{broker}/{hook}",
    tag = "assisted login",
    params(
        ("broker" = String, Path, description = "Broker id"),
        ("hook" = String, Path, description = "The app's secret path token"),
    ),
    request_body(content = String, description = "The broker's token delivery (JSON, at most 16 KiB)"),
    responses(
        (status = 200, description = "Accepted, or ignored with nothing stored (a refusal is not told apart from other refusals)", body = DeliveryView),
        (status = 404, description = "No such hook (`no_such_hook`, nothing more)", body = ErrorBody),
        (status = 413, description = "Over 16 KiB", body = ErrorBody),
    )
)]
pub async fn deliver(
    State(api): State<Arc<ApiState>>,
    ApiPath((broker, hook)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Json<DeliveryView>, ApiError> {
    // A 2xx for every refusal, so the broker does not retry a forged or stale body; 404 (no
    // detail) only for a hook that does not exist.
    if body.len() > DELIVERY_LIMIT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "a delivery is at most 16 KiB",
        ));
    }
    let status = match api.refresher().deliver_token(&broker, &hook, &body).await {
        // As little as the router's own 404 says: which hooks exist is no one's business.
        Delivery::NotFound => return Err(ApiError::not_found("no_such_hook", "not found")),
        Delivery::Ignored(_) => "ignored",
        Delivery::Accepted(key) => {
            // The first token wins: a browser login begun meanwhile can no longer finish.
            api.assisted.forget(&key);
            "accepted"
        }
    };
    Ok(Json(DeliveryView { status }))
}

/// Which app a hook is for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = HookIn)]
pub struct HookRequest {
    /// The broker app's API key (Upstox: `client_id`).
    pub api_key: String,
}

/// A new hook, shown once.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = HookOut)]
pub struct HookView {
    /// Broker id.
    pub broker: String,
    /// The app's API key.
    pub api_key: String,
    /// The URL to register as the app's notifier webhook. Only its hash is kept: it cannot be
    /// shown again; asking again replaces it.
    pub webhook_url: String,
}

/// `POST /api/webhooks/{broker}`
#[utoipa::path(
    post,
    path = "/api/webhooks/{broker}",
    tag = "assisted login",
    params(("broker" = String, Path, description = "Broker id")),
    request_body = HookRequest,
    responses(
        (status = 201, description = "A new webhook URL for the app (it replaces the app's previous one)", body = HookView),
        (status = 400, description = "The broker takes no webhook deliveries, or no api_key", body = ErrorBody),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown broker", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "Wrong types, missing or unknown fields", body = ErrorBody),
        (status = 503, description = "`server.public_url` is not configured", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create_hook(
    State(api): State<Arc<ApiState>>,
    _key: ServiceKey,
    ApiPath(broker): ApiPath<String>,
    ApiJson(req): ApiJson<HookRequest>,
) -> Result<(StatusCode, Json<HookView>), ApiError> {
    let (plugin, broker) = plugin_for(&api, &broker, StatusCode::NOT_FOUND)?;
    if !plugin.manifest.token_webhook {
        return Err(ApiError::bad_request(
            "webhook_unsupported",
            format!("broker {} takes no webhook deliveries", broker.as_str()),
        ));
    }
    let app = req.api_key.trim().to_owned();
    if app.is_empty() || app.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid_api_key",
            "api_key must be the app's API key (1 to 200 characters)",
        ));
    }
    let Some(base) = api.app.config.server.public_url.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "public_url_not_configured",
            "webhook URLs need `server.public_url` (the stable HTTPS address the broker POSTs to)",
        ));
    };
    // 256 random bits, URL-safe.
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let hook = hex::encode(bytes);
    let (vault, b, a, hash) = (
        api.app.refresher.vault().clone(),
        broker.as_str().to_owned(),
        app.clone(),
        sha256_hex(&hook),
    );
    blocking(move || vault.put_webhook_hook(&b, &a, &hash)).await?;
    tracing::info!(broker = broker.as_str(), "webhook URL issued for an app");
    let webhook_url = format!(
        "{}/webhook/{}/{hook}",
        base.as_str().trim_end_matches('/'),
        broker.as_str()
    );
    Ok((
        StatusCode::CREATED,
        Json(HookView {
            broker: broker.as_str().to_owned(),
            api_key: app,
            webhook_url,
        }),
    ))
}
