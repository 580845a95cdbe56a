//! What the account routes share, whichever caller they serve (a user by JWT, a service by key):
//! finding a broker's strategy, storing, changing and removing an account, and refreshing a
//! selection of accounts. Route files translate HTTP and call these; they never call each other.

use std::sync::Arc;

use axum::http::StatusCode;

use super::ApiState;
use super::error::ApiError;
use super::views::{AccountView, DeletedView, account_view};
use crate::credential_input::{Fields, check_fields};
use crate::plugins::{Plugin, PluginError};
use crate::refresh::{AssistedError, RefreshSummary, Selection};
use crate::vault::blocking;
use crate::vault::{AccountKey, BrokerId, Flags, NewAccount, Trigger, UserId, VaultError};

/// The strategy for `broker`; `status` is the answer when there is none (404 for a path, 422 for
/// a body field).
pub fn plugin_for(
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
pub fn unknown_broker_in_body(api: &ApiState, broker: &str, miss: ApiError) -> ApiError {
    if miss.code() != "no_account" {
        return miss;
    }
    match plugin_for(api, broker, StatusCode::UNPROCESSABLE_ENTITY) {
        Err(unknown) => unknown,
        Ok(_) => miss,
    }
}

/// Store an account from provisioned fields. Whether it was created (not replaced), and its view.
/// With `seen`, only while the stored credentials are still those (409 `account_changed`
/// otherwise): for fields filled in from them.
pub async fn store_account(
    api: &Arc<ApiState>,
    key: AccountKey,
    plugin: &Plugin,
    fields: Fields,
    auto_refresh: Option<bool>,
    managed_externally: Option<bool>,
    seen: Option<crate::vault::Credentials>,
) -> Result<(bool, AccountView), ApiError> {
    let (broker_user_id, credentials) = check_fields(&plugin.manifest, key.broker.as_str(), fields)
        .map_err(|e| ApiError::unprocessable("invalid_fields", e.to_string()))?;
    let vault = api.app.vault.clone();
    let k = key.clone();
    let created = blocking(move || {
        let existing = vault.get_account(&k)?;
        let new = NewAccount {
            key: k.clone(),
            broker_user_id,
            credentials,
            auto_refresh: auto_refresh
                .unwrap_or_else(|| existing.as_ref().is_none_or(|a| a.auto_refresh)),
            managed_externally: managed_externally
                .unwrap_or_else(|| existing.as_ref().is_some_and(|a| a.managed_externally)),
        };
        match &seen {
            Some(seen) => vault.put_account_if_unchanged(&new, seen)?,
            None => vault.put_account(&new)?,
        };
        Ok(existing.is_none())
    })
    .await?;
    tracing::info!(account = %key, created, "account provisioned");
    Ok((created, account_view(api, key).await?))
}

/// Change an account's flags and return its view.
pub async fn set_flags(
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
pub async fn delete_account(api: &Arc<ApiState>, key: AccountKey) -> Result<DeletedView, ApiError> {
    let vault = api.app.vault.clone();
    let k = key.clone();
    let existed = blocking(move || vault.delete_account(&k)).await?;
    if !existed {
        return Err(VaultError::NoSuchAccount(key).into());
    }
    tracing::info!(account = %key, "account removed");
    Ok(DeletedView {
        user_id: key.user.as_str().to_owned(),
        broker: key.broker.as_str().to_owned(),
        deleted: true,
    })
}

/// Refresh `selection`; 404 when it names a user (or account) that does not exist.
pub async fn refresh_selection(
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

/// The answer to an assisted login that could not start or finish.
pub fn assisted_error(e: AssistedError) -> ApiError {
    match e {
        AssistedError::Store(e) => ApiError::from(e),
        AssistedError::Configuration(message) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "configuration", message)
        }
        AssistedError::Broker(PluginError::Failed(out)) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "login_failed",
            format!("{}: {}", out.class, out.message),
        ),
        AssistedError::Broker(other) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "plugin_error",
            format!("the broker strategy failed: {other}"),
        ),
    }
}

/// An assisted login started: where to send the person.
#[derive(Debug)]
pub struct AssistedStart {
    /// The broker's login page.
    pub url: String,
    /// The callback the broker will redirect to.
    pub redirect_url: String,
    /// The login must be completed before this time (Unix ms).
    pub expires_at_ms: i64,
}

/// Issue a state bound to `broker`'s account of `user` and answer the broker's login URL (the
/// URL route, the one-tap link and the console start assisted logins here).
pub async fn start_assisted(
    api: &ApiState,
    broker: &str,
    user: UserId,
) -> Result<AssistedStart, ApiError> {
    let Some(mut redirect_url) = api.app.config.server.callback_url(broker) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "public_url_not_configured",
            "assisted login needs `server.public_url` (the address the broker redirects browsers to)",
        ));
    };
    let (plugin, broker) = plugin_for(api, broker, StatusCode::NOT_FOUND)?;
    if !plugin.has_assisted() {
        return Err(ApiError::bad_request(
            "assisted_login_unsupported",
            format!("broker {broker} has no assisted login"),
        ));
    }
    let key = AccountKey::new(user, broker);
    if !plugin.manifest.callback_has_state {
        redirect_url = format!("{redirect_url}?a={}", callback_tag(api, &key));
    }
    let refresher = &api.app.refresher;
    let account = refresher.assisted_account(&key).await?;
    let now = api.now_ms();
    let state = api
        .assisted
        .issue(key.clone(), key.user.as_str(), now)
        .map_err(|e| match e {
            crate::assisted::StateError::TooMany { retry_ms } => {
                let secs = (retry_ms.max(1000) + 999) / 1000;
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", e.to_string())
                    .with_header(
                        axum::http::header::RETRY_AFTER,
                        axum::http::HeaderValue::from(secs),
                    )
            }
            e => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "assisted_login_unavailable",
                e.to_string(),
            ),
        })?;
    let url = refresher
        .assisted_url(plugin, &key, &account, state, redirect_url.clone())
        .await
        .map_err(assisted_error)?;
    tracing::info!(account = %key, "assisted login started");
    Ok(AssistedStart {
        url,
        redirect_url,
        expires_at_ms: now + super::ASSISTED_STATE_TTL.as_millis() as i64,
    })
}

/// The account tag of a broker whose callback carries no state (shoonya.md, "Assisted login"
/// rule 1): the redirect URL registered for the account's app may end in `?a=<tag>`; if the
/// broker keeps it, the callback names its account even with several logins pending. 64 bits of
/// an HMAC under the link key: stable for the account, not guessable from its ids, and no
/// credential (the single-use code and the strategy's user check still decide).
pub fn callback_tag(api: &ApiState, key: &AccountKey) -> String {
    let mut tag = (api.app.vault).sign_link(&format!("callback/{}/{}", key.broker, key.user));
    tag.truncate(16);
    tag
}
