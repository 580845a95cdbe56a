//! Service routes over accounts (`X-API-Key`): provision, change, remove, list. Provisioning checks
//! the fields exactly as `tokenbot user add` does ([`crate::provision`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::auth::ServiceKey;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, blocking};
use super::views::{AccountView, account_view, account_views, broker_id, user_id};
use crate::credential_input::{Fields, check_fields};
use crate::plugins::Plugin;
use crate::vault::{AccountKey, BrokerId, Flags, NewAccount, VaultError};

/// The credential fields of an account plus its flags. Which fields are required depends on the
/// broker's strategy; secrets are stored encrypted and never returned.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
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

/// `?broker=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BrokerQuery {
    /// Only this broker.
    pub broker: Option<String>,
}

/// Accounts, no secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountsOut {
    /// How many.
    pub total: usize,
    /// The accounts, by user then broker.
    pub accounts: Vec<AccountView>,
}

/// A removed account.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedOut {
    /// The user.
    pub user_id: String,
    /// The broker.
    pub broker: String,
    /// Always true.
    pub deleted: bool,
}

/// The strategy for `broker`; `status` is the answer when there is none (404 for a path, 422 for
/// a body field).
pub(super) fn plugin_for(
    api: &ApiState,
    broker: &str,
    status: StatusCode,
) -> Result<(Arc<Plugin>, BrokerId), ApiError> {
    let unknown = || {
        let known: Vec<String> = api.app.plugins.all().keys().cloned().collect();
        ApiError::new(
            status,
            "unknown_broker",
            format!("unknown broker {broker:?} (known: {})", known.join(", ")),
        )
    };
    let plugin = api.app.plugins.get(broker).ok_or_else(unknown)?;
    let id = BrokerId::new(broker).map_err(|_| unknown())?;
    Ok((plugin, id))
}

/// The answer to a request naming `broker` in its body that found no account: 422
/// `unknown_broker` when no strategy has that id (an unknown broker is 422 in a body), else `miss`
/// itself. Only a miss is turned, so an account whose strategy was removed can still be changed.
pub(super) fn unknown_in_body(api: &ApiState, broker: &str, miss: ApiError) -> ApiError {
    if miss.code() != "no_account" {
        return miss;
    }
    match plugin_for(api, broker, StatusCode::UNPROCESSABLE_ENTITY) {
        Err(unknown) => unknown,
        Ok(_) => miss,
    }
}

/// Store an account from provisioned fields. Whether it was created (not replaced), and its view.
pub(super) async fn store_account(
    api: &Arc<ApiState>,
    key: AccountKey,
    plugin: &Plugin,
    fields: Fields,
    auto_refresh: Option<bool>,
    managed_externally: Option<bool>,
) -> Result<(bool, AccountView), ApiError> {
    let (broker_user_id, credentials) = check_fields(&plugin.manifest, key.broker.as_str(), fields)
        .map_err(|e| ApiError::unprocessable("invalid_fields", e.to_string()))?;
    let vault = api.app.vault.clone();
    let k = key.clone();
    let created = blocking(move || {
        let existing = vault.get_account(&k)?;
        vault.put_account(&NewAccount {
            key: k.clone(),
            broker_user_id,
            credentials,
            auto_refresh: auto_refresh
                .unwrap_or_else(|| existing.as_ref().is_none_or(|a| a.auto_refresh)),
            managed_externally: managed_externally
                .unwrap_or_else(|| existing.as_ref().is_some_and(|a| a.managed_externally)),
        })?;
        Ok(existing.is_none())
    })
    .await?;
    tracing::info!(account = %key, created, "account provisioned");
    Ok((created, account_view(api, key).await?))
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

/// Change an account's flags and return its view.
pub(super) async fn set_flags(
    api: &Arc<ApiState>,
    key: AccountKey,
    flags: Flags,
) -> Result<AccountView, ApiError> {
    let vault = api.app.vault.clone();
    let k = key.clone();
    blocking(move || vault.set_flags(&k, flags)).await?;
    tracing::info!(account = %key, ?flags, "account flags changed");
    account_view(api, key).await
}

/// Remove an account with its credentials, token and attempts.
pub(super) async fn delete_account(
    api: &Arc<ApiState>,
    key: AccountKey,
) -> Result<DeletedOut, ApiError> {
    let vault = api.app.vault.clone();
    let k = key.clone();
    let existed = blocking(move || vault.delete_account(&k)).await?;
    if !existed {
        return Err(VaultError::NoSuchAccount(key).into());
    }
    tracing::info!(account = %key, "account removed");
    Ok(DeletedOut {
        user_id: key.user.as_str().to_owned(),
        broker: key.broker.as_str().to_owned(),
        deleted: true,
    })
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
        (status = 200, description = "Removed with its credentials, token and attempts", body = DeletedOut),
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
) -> Result<Json<DeletedOut>, ApiError> {
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
        (status = 200, description = "Every account with its state; no secrets", body = AccountsOut),
        (status = 400, description = "Invalid `broker`", body = ErrorBody),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(api): State<Arc<ApiState>>,
    ServiceKey(_): ServiceKey,
    ApiQuery(q): ApiQuery<BrokerQuery>,
) -> Result<Json<AccountsOut>, ApiError> {
    let accounts = account_views(&api, None, broker_id(q.broker)?).await?;
    Ok(Json(AccountsOut {
        total: accounts.len(),
        accounts,
    }))
}
