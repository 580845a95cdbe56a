//! Service routes over accounts (`X-API-Key`): provision, change, remove, list. Provisioning checks
//! the fields exactly as `tokenbot user add` does ([`crate::credential_input`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::accounts::{delete_account, plugin_for, set_flags, store_account};
use super::auth::ServiceKey;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::params::{BrokerQuery, broker_id, user_id};
use super::views::{AccountView, DeletedView, account_views};
use crate::credential_input::Fields;
use crate::vault::{AccountKey, BrokerId, Flags};

/// The credential fields of an account plus its flags. Which fields are required depends on the
/// broker's strategy; secrets are stored encrypted and never returned.
#[derive(Deserialize, ToSchema)]
pub struct ProvisionBody {
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
    /// Logged in by another system: never logged in here (default: off).
    pub managed_externally: Option<bool>,
}

/// A change of flags; at least one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagsBody {
    /// Log in on the broker's schedule.
    pub auto_refresh: Option<bool>,
    /// Logged in by another system.
    pub managed_externally: Option<bool>,
    /// `true`: clear needs-attention, the operator's word that its cause is fixed. Logins send
    /// the stored password again after this: clear it only when the account was unlocked or the
    /// password is known to be right.
    pub clear_attention: Option<bool>,
}

/// Accounts, no secrets.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AccountsOut)]
pub struct AccountsView {
    /// How many.
    pub total: usize,
    /// The accounts, by user then broker.
    pub accounts: Vec<AccountView>,
}

impl ProvisionBody {
    fn split(self) -> (Fields, Option<bool>, Option<bool>) {
        (
            Fields {
                broker_user_id: self.broker_user_id,
                password: self.password,
                api_key: self.api_key,
                api_secret: self.api_secret,
                totp_secret: self.totp_secret,
                extra: self.extra,
            },
            self.auto_refresh,
            self.managed_externally,
        )
    }
}

/// `PUT /api/users/{userId}/accounts/{broker}`
#[utoipa::path(
    put,
    path = "/api/users/{userId}/accounts/{broker}",
    tag = "users",
    params(
        ("userId" = String, Path, description = "The platform's user id"),
        ("broker" = String, Path, description = "Broker id, e.g. `kite`"),
    ),
    request_body = ProvisionBody,
    responses(
        (status = 201, description = "Created", body = AccountView),
        (status = 200, description = "Replaced (credentials; the token is kept unless the broker user id changed)", body = AccountView),
        (status = 400, description = "Malformed JSON or an invalid user id", body = ErrorBody),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown broker", body = ErrorBody),
        (status = 409, description = "Another user already registered this broker account", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "Wrong types, or fields the broker does not take or needs", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn provision(
    State(api): State<Arc<ApiState>>,
    ServiceKey(by): ServiceKey,
    ApiPath((user, broker)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ProvisionBody>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let user = user_id(user)?;
    let (plugin, broker) = plugin_for(&api, &broker, StatusCode::NOT_FOUND)?;
    let (fields, auto_refresh, managed_externally) = body.split();
    tracing::debug!(key = %by, "provisioning through the service API");
    let (created, view) = store_account(
        &api,
        AccountKey::new(user, broker),
        &plugin,
        fields,
        auto_refresh,
        managed_externally,
        None,
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// `PATCH /api/users/{userId}/accounts/{broker}`
#[utoipa::path(
    patch,
    path = "/api/users/{userId}/accounts/{broker}",
    tag = "users",
    params(
        ("userId" = String, Path, description = "The platform's user id"),
        ("broker" = String, Path, description = "Broker id"),
    ),
    request_body = FlagsBody,
    responses(
        (status = 200, description = "Changed", body = AccountView),
        (status = 400, description = "Malformed JSON or an invalid id", body = ErrorBody),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
        (status = 422, description = "Wrong types, or nothing to change", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn change(
    State(api): State<Arc<ApiState>>,
    ServiceKey(_): ServiceKey,
    ApiPath((user, broker)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<FlagsBody>,
) -> Result<Json<AccountView>, ApiError> {
    let key = AccountKey::new(user_id(user)?, BrokerId::new(broker)?);
    let clear_attention = body.clear_attention == Some(true);
    if body.auto_refresh.is_none() && body.managed_externally.is_none() && !clear_attention {
        return Err(ApiError::unprocessable(
            "nothing_to_change",
            "give `auto_refresh`, `managed_externally` and/or `clear_attention: true`",
        ));
    }
    set_flags(
        &api,
        key,
        Flags {
            auto_refresh: body.auto_refresh,
            managed_externally: body.managed_externally,
            clear_attention,
        },
    )
    .await
    .map(Json)
}

/// `DELETE /api/users/{userId}/accounts/{broker}`
#[utoipa::path(
    delete,
    path = "/api/users/{userId}/accounts/{broker}",
    tag = "users",
    params(
        ("userId" = String, Path, description = "The platform's user id"),
        ("broker" = String, Path, description = "Broker id"),
    ),
    responses(
        (status = 200, description = "Removed with its credentials, token and attempts", body = DeletedView),
        (status = 400, description = "Invalid user or broker id", body = ErrorBody),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn remove(
    State(api): State<Arc<ApiState>>,
    ServiceKey(_): ServiceKey,
    ApiPath((user, broker)): ApiPath<(String, String)>,
) -> Result<Json<DeletedView>, ApiError> {
    let key = AccountKey::new(user_id(user)?, BrokerId::new(broker)?);
    delete_account(&api, key).await.map(Json)
}

/// `GET /api/users`
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "users",
    params(BrokerQuery),
    responses(
        (status = 200, description = "Every account with its state; no secrets", body = AccountsView),
        (status = 400, description = "Invalid `broker`", body = ErrorBody),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(api): State<Arc<ApiState>>,
    ServiceKey(_): ServiceKey,
    ApiQuery(q): ApiQuery<BrokerQuery>,
) -> Result<Json<AccountsView>, ApiError> {
    let accounts = account_views(&api, None, broker_id(q.broker)?).await?;
    Ok(Json(AccountsView {
        total: accounts.len(),
        accounts,
    }))
}
