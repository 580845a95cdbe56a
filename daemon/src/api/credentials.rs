//! The Node service's user routes (`Authorization: Bearer <JWT>`): a user stores, inspects,
//! removes and pauses their own broker accounts. The user always comes from the token.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::accounts::{
    delete_account, plugin_for, set_flags, store_account, unknown_broker_in_body,
};
use super::auth::UserJwt;
use super::error::{ApiError, ApiJson, ApiQuery, ErrorBody};
use super::params::{BrokerQuery, broker_id};
use super::views::{AccountView, DeletedView, account_views};
use crate::credential_input::Fields;
use crate::vault::blocking;
use crate::vault::{AccountKey, BrokerId, Flags, UserId};

/// A broker account's credentials, for the calling user.
#[derive(Deserialize, ToSchema)]
pub struct CredentialsBody {
    /// Broker id, e.g. `kite`.
    pub broker: String,
    /// The user's id at the broker (client code).
    pub broker_user_id: Option<String>,
    /// Login password.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    /// API (app) key. Never returned, with one exception: Kite's browser login URL carries it
    /// (`api_key=`, in the address bar of whoever logs in), so
    /// `GET /api/login/{broker}/{userId}/url` answers it to the account's user or a service key.
    #[schema(value_type = Option<String>, format = Password)]
    pub api_key: Option<SecretString>,
    /// API (app) secret.
    #[schema(value_type = Option<String>, format = Password)]
    pub api_secret: Option<SecretString>,
    /// TOTP secret: base32, or an `otpauth://` URI.
    #[schema(value_type = Option<String>, format = Password)]
    pub totp_secret: Option<SecretString>,
    /// The fields the broker's strategy declares beyond these (`pin`, `mobile`, `api_user_id`,
    /// `dob_or_pan`, ...; `tokenbot plugins list` shows each broker's). Any other key is refused with 422,
    /// naming it.
    #[serde(flatten)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub extra: BTreeMap<String, SecretString>,
    /// Log in on the broker's schedule (default: on; a replaced account keeps its setting).
    pub auto_refresh: Option<bool>,
}

/// Turn auto-refresh on or off.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToggleBody {
    /// Broker id.
    pub broker: String,
    /// The new setting.
    pub auto_refresh: bool,
}

/// The calling user's accounts.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CredentialsStatusOut)]
pub struct CredentialsStatusView {
    /// The user (from the token).
    pub user_id: String,
    /// One entry per broker account; never a secret.
    pub accounts: Vec<AccountView>,
}

/// `POST /api/credentials`
#[utoipa::path(
    post,
    path = "/api/credentials",
    tag = "credentials",
    request_body = CredentialsBody,
    responses(
        (status = 201, description = "Stored (created or replaced); no secrets in the answer", body = AccountView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No, invalid or expired token", body = ErrorBody),
        (status = 409, description = "Another user already registered this broker account", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "Wrong types, unknown broker, or fields the broker does not take or needs", body = ErrorBody),
    ),
    security(("jwt" = []))
)]
pub async fn create(
    State(api): State<Arc<ApiState>>,
    UserJwt(user): UserJwt,
    ApiJson(body): ApiJson<CredentialsBody>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let (plugin, broker) = plugin_for(&api, &body.broker, StatusCode::UNPROCESSABLE_ENTITY)?;
    let fields = Fields {
        broker_user_id: body.broker_user_id,
        password: body.password,
        api_key: body.api_key,
        api_secret: body.api_secret,
        totp_secret: body.totp_secret,
        extra: body.extra,
    };
    let (_, view) = store_account(
        &api,
        AccountKey::new(user, broker),
        &plugin,
        fields,
        body.auto_refresh,
        None,
        None,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /api/credentials/status`
#[utoipa::path(
    get,
    path = "/api/credentials/status",
    tag = "credentials",
    responses(
        (status = 200, description = "The caller's accounts", body = CredentialsStatusView),
        (status = 401, description = "No, invalid or expired token", body = ErrorBody),
    ),
    security(("jwt" = []))
)]
pub async fn status(
    State(api): State<Arc<ApiState>>,
    UserJwt(user): UserJwt,
) -> Result<Json<CredentialsStatusView>, ApiError> {
    let accounts = account_views(&api, Some(user.clone()), None).await?;
    Ok(Json(CredentialsStatusView {
        user_id: user.as_str().to_owned(),
        accounts,
    }))
}

/// The caller's account at `broker`, or, without `broker`, their only account (400 when they have
/// several, 404 when none).
pub(super) async fn resolve_account(
    api: &Arc<ApiState>,
    user: UserId,
    broker: Option<BrokerId>,
) -> Result<AccountKey, ApiError> {
    if let Some(broker) = broker {
        return Ok(AccountKey::new(user, broker));
    }
    let vault = api.app.vault.clone();
    let u = user.clone();
    let accounts = blocking(move || vault.user_accounts(&u)).await?;
    match accounts.as_slice() {
        [] => Err(ApiError::not_found(
            "no_account",
            format!("user {user} has no broker account"),
        )),
        [one] => Ok(one.key()),
        several => Err(ApiError::bad_request(
            "broker_required",
            format!(
                "user {user} has accounts at several brokers ({}); say which with ?broker=",
                several
                    .iter()
                    .map(|a| a.broker.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// `DELETE /api/credentials?broker=`
#[utoipa::path(
    delete,
    path = "/api/credentials",
    tag = "credentials",
    params(BrokerQuery),
    responses(
        (status = 200, description = "Removed with its token and attempts", body = DeletedView),
        (status = 400, description = "Several accounts and no `broker`, or an invalid `broker`", body = ErrorBody),
        (status = 401, description = "No, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    ),
    security(("jwt" = []))
)]
pub async fn remove(
    State(api): State<Arc<ApiState>>,
    UserJwt(user): UserJwt,
    ApiQuery(q): ApiQuery<BrokerQuery>,
) -> Result<Json<DeletedView>, ApiError> {
    let key = resolve_account(&api, user, broker_id(q.broker)?).await?;
    delete_account(&api, key).await.map(Json)
}

/// `PATCH /api/credentials/toggle`
#[utoipa::path(
    patch,
    path = "/api/credentials/toggle",
    tag = "credentials",
    request_body = ToggleBody,
    responses(
        (status = 200, description = "Changed", body = AccountView),
        (status = 400, description = "Malformed JSON or an invalid broker id", body = ErrorBody),
        (status = 401, description = "No, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "Wrong types, missing fields, or an unknown broker", body = ErrorBody),
    ),
    security(("jwt" = []))
)]
pub async fn toggle(
    State(api): State<Arc<ApiState>>,
    UserJwt(user): UserJwt,
    ApiJson(body): ApiJson<ToggleBody>,
) -> Result<Json<AccountView>, ApiError> {
    let key = AccountKey::new(user, BrokerId::new(body.broker.clone())?);
    set_flags(
        &api,
        key,
        Flags {
            auto_refresh: Some(body.auto_refresh),
            managed_externally: None,
            clear_attention: false,
        },
    )
    .await
    .map_err(|e| unknown_broker_in_body(&api, &body.broker, e))
    .map(Json)
}
