//! Assisted (browser) login, for brokers that refuse automation or accounts without a TOTP secret:
//! `GET /api/login/{broker}/{userId}/url` issues a single-use, expiring state bound to the account
//! and answers the broker's login URL (whose redirect leads to `{public_url}/callback/{broker}`);
//! the broker sends the browser to `GET /callback/{broker}` with the state, which is consumed
//! before the strategy finishes the login. A replayed, forged or stale callback finds no state and
//! is refused; so is a state used on another broker's callback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use broker_api::wire::{self, Sensitive};
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use super::accounts::plugin_for;
use super::auth::Caller;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody, blocking};
use super::params::user_id;
use super::views::iso;
use crate::plugins::{CallError, CallTarget, Plugin, run_blocking};
use crate::vault::{
    Account, AccountKey, Attempt, Credentials, NewToken, Outcome, SecretJson, Trigger, VaultError,
};

/// Where to send the person.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginUrlOut {
    /// The broker's login page; open it in a browser.
    pub url: String,
    /// The callback the broker will redirect to.
    pub redirect_url: String,
    /// The login must be completed before this time.
    pub expires_at: String,
}

/// A finished assisted login (never the token).
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackOut {
    /// `ok`.
    pub status: String,
    /// The platform's user id.
    pub user_id: String,
    /// Broker id.
    pub broker: String,
    /// The user's id at the broker.
    pub broker_user_id: String,
    /// When the new token expires.
    pub expires_at: String,
}

fn wire_credentials(c: &Credentials) -> wire::Credentials {
    wire::Credentials {
        // Assisted login never sends the password: the person types it at the broker.
        password: None,
        api_key: c.api_key.as_ref().map(|k| k.expose_secret().to_owned()),
        api_secret: c
            .api_secret
            .as_ref()
            .map(|s| Sensitive::new(s.expose_secret())),
    }
}

fn broker_error(e: CallError) -> ApiError {
    match e {
        CallError::Failed(out) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "login_failed",
            format!("{}: {}", out.class, out.message),
        ),
        other => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "plugin_error",
            format!("the broker strategy failed: {other}"),
        ),
    }
}

/// The account and its credentials, or 404.
async fn load(api: &ApiState, key: AccountKey) -> Result<(Account, Credentials), ApiError> {
    let vault = api.app.vault.clone();
    blocking(move || {
        let account = vault
            .get_account(&key)?
            .ok_or_else(|| VaultError::NoSuchAccount(key.clone()))?;
        let credentials = vault.credentials(&key)?.unwrap_or_default();
        Ok((account, credentials))
    })
    .await
}

/// A call context for `plugin` acting for `key`.
fn context(
    api: &ApiState,
    plugin: &Plugin,
    key: &AccountKey,
    credentials: &Credentials,
) -> crate::plugins::host::CallContext {
    let broker_config = broker_config(api, key.broker.as_str());
    let secrets: Vec<&str> = [
        &credentials.password,
        &credentials.api_secret,
        &credentials.totp_secret,
        &credentials.api_key,
    ]
    .into_iter()
    .flatten()
    .map(|s| s.expose_secret())
    .collect();
    api.app.services.context(CallTarget {
        plugin,
        account: key.to_string(),
        configured_urls: &broker_config.urls,
        extra_hosts: &broker_config.allowed_hosts,
        ipv4_only: broker_config.ipv4_only,
        totp_secret: None,
        secrets,
    })
}

/// `[brokers.<id>]` of this broker (every key optional).
fn broker_config(api: &ApiState, broker: &str) -> crate::config::BrokerConfig {
    api.app
        .config
        .brokers
        .get(broker)
        .cloned()
        .unwrap_or_default()
}

fn base_urls(api: &ApiState, plugin: &Plugin) -> BTreeMap<String, String> {
    plugin.base_urls(&broker_config(api, &plugin.id).urls)
}

fn settings(api: &ApiState, plugin: &Plugin) -> Result<BTreeMap<String, String>, ApiError> {
    plugin
        .settings(&broker_config(api, &plugin.id).settings)
        .map_err(|message| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "configuration", message)
        })
}

/// `GET /api/login/{broker}/{userId}/url`
#[utoipa::path(
    get,
    path = "/api/login/{broker}/{userId}/url",
    tag = "assisted login",
    params(
        ("broker" = String, Path, description = "Broker id"),
        ("userId" = String, Path, description = "The platform's user id"),
    ),
    responses(
        (status = 200, description = "The broker's login URL, bound to this account for 10 minutes; it replaces the account's previous one", body = LoginUrlOut),
        (status = 400, description = "The broker has no assisted login", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "A user's token for another user", body = ErrorBody),
        (status = 404, description = "Unknown broker or no such account", body = ErrorBody),
        (status = 502, description = "The strategy failed", body = ErrorBody),
        (status = 503, description = "`server.public_url` is not configured, or too many logins pending", body = ErrorBody),
    ),
    security(("api_key" = []), ("jwt" = []))
)]
pub async fn url(
    State(api): State<Arc<ApiState>>,
    caller: Caller,
    ApiPath((broker, user)): ApiPath<(String, String)>,
) -> Result<Json<LoginUrlOut>, ApiError> {
    let user = user_id(user)?;
    caller.may_act_for(&user)?;
    let Some(public_url) = api.app.config.server.public_url.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "public_url_not_configured",
            "assisted login needs `server.public_url` (the address the broker redirects browsers to)",
        ));
    };
    let (plugin, broker) = plugin_for(&api, &broker, StatusCode::NOT_FOUND)?;
    if !plugin.has_assisted() {
        return Err(ApiError::bad_request(
            "assisted_login_unsupported",
            format!("broker {broker} has no assisted login"),
        ));
    }
    let key = AccountKey::new(user, broker);
    let (account, credentials) = load(&api, key.clone()).await?;
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
    let redirect_url = format!(
        "{}/callback/{}",
        public_url.as_str().trim_end_matches('/'),
        key.broker
    );
    let request = wire::AssistedUrlRequest {
        v: wire::WIRE_VERSION,
        broker_user_id: account.broker_user_id.clone(),
        credentials: wire_credentials(&credentials),
        state,
        redirect_url: redirect_url.clone(),
        base_urls: base_urls(&api, &plugin),
        settings: settings(&api, &plugin)?,
    };
    let ctx = context(&api, &plugin, &key, &credentials);
    let out = run_blocking(plugin, ctx, move |p, c| {
        p.assisted_url_blocking(c, &request)
    })
    .await
    .map_err(broker_error)?;
    tracing::info!(account = %key, "assisted login started");
    Ok(Json(LoginUrlOut {
        url: out.url,
        redirect_url,
        expires_at: iso(now + super::ASSISTED_STATE_TTL.as_millis() as i64),
    }))
}

/// `GET /callback/{broker}`
#[utoipa::path(
    get,
    path = "/callback/{broker}",
    tag = "assisted login",
    params(
        ("broker" = String, Path, description = "Broker id"),
        ("state" = String, Query, description = "The single-use state issued with the login URL"),
    ),
    responses(
        (status = 200, description = "Logged in; the token is stored (not shown)", body = CallbackOut),
        (status = 400, description = "Unknown, used or expired state, or one issued for another broker", body = ErrorBody),
        (status = 404, description = "Unknown broker, or the account was removed meanwhile", body = ErrorBody),
        (status = 502, description = "The broker refused to finish the login", body = ErrorBody),
    )
)]
pub async fn callback(
    State(api): State<Arc<ApiState>>,
    ApiPath(broker): ApiPath<String>,
    ApiQuery(query): ApiQuery<BTreeMap<String, String>>,
) -> Result<Json<CallbackOut>, ApiError> {
    // An unknown broker is 404 whatever the query holds, and leaves any state unconsumed.
    let (plugin, _) = plugin_for(&api, &broker, StatusCode::NOT_FOUND)?;
    let invalid = |m: &str| ApiError::bad_request("invalid_state", m.to_owned());
    // A broker that glues its own query onto the callback's (`state=S?code=...`) still leaves the
    // state first.
    let state = query
        .get("state")
        .map(|s| s.split('?').next().unwrap_or_default())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("the callback has no state"))?;
    let now = api.now_ms();
    let key = api
        .assisted
        .consume(state, now)
        .map_err(|e| invalid(&e.to_string()))?;
    if key.broker.as_str() != broker {
        tracing::warn!(account = %key, callback = %broker, "assisted-login state used on another broker's callback; refused");
        return Err(invalid("this login state was issued for another broker"));
    }
    let (account, credentials) = load(&api, key.clone()).await?;
    let request = wire::AssistedFinishRequest {
        v: wire::WIRE_VERSION,
        user_id: key.user.as_str().to_owned(),
        broker_user_id: account.broker_user_id.clone(),
        credentials: wire_credentials(&credentials),
        query,
        base_urls: base_urls(&api, &plugin),
        settings: settings(&api, &plugin)?,
    };
    let ctx = context(&api, &plugin, &key, &credentials);
    let started = Instant::now();
    let result = run_blocking(plugin, ctx, move |p, c| {
        p.assisted_finish_blocking(c, &request)
    })
    .await;
    let result = result.and_then(|out| {
        if !out.broker_user_id.is_empty()
            && !out
                .broker_user_id
                .eq_ignore_ascii_case(&account.broker_user_id)
        {
            return Err(CallError::Failed(wire::ErrorOutput::new(
                wire::ErrorClass::InvalidCredentials,
                format!(
                    "the broker logged in {} but this account is {}",
                    out.broker_user_id, account.broker_user_id
                ),
            )));
        }
        Ok(out)
    });
    let mut attempt = Attempt {
        time_ms: now,
        trigger: Trigger::Assisted,
        attempt: 1,
        duration_ms: started.elapsed().as_millis() as u64,
        outcome: Outcome::Success,
        error_class: None,
        message: None,
    };
    let vault = api.app.vault.clone();
    let k = key.clone();
    match result {
        Ok(out) => {
            let expires_at_ms = out.expires_at_ms;
            let token = NewToken {
                access_token: out.access_token.expose().into(),
                issued_at_ms: out.issued_at_ms,
                expires_at_ms,
                extras: SecretJson::from_value(&serde_json::Value::Object(
                    out.extras.clone().into_iter().collect(),
                )),
            };
            blocking(move || {
                vault.put_token(&k, &token)?;
                // A person logging in shows the broker lets a person in, not that the stored
                // password or TOTP secret is right: only the classes that says fixes are cleared.
                if vault.get_account(&k)?.is_some_and(|a| {
                    a.attention
                        .as_ref()
                        .is_some_and(|a| a.resolved_by_assisted_login())
                }) {
                    vault.clear_attention(&k)?;
                }
                vault.append_attempt(&k, &attempt)?;
                Ok(())
            })
            .await?;
            if let Some(mirror) = &api.app.mirror {
                mirror.wake();
            }
            tracing::info!(account = %key, "assisted login finished; token stored");
            Ok(Json(CallbackOut {
                status: "ok".into(),
                user_id: key.user.as_str().to_owned(),
                broker: key.broker.as_str().to_owned(),
                broker_user_id: account.broker_user_id,
                expires_at: iso(expires_at_ms),
            }))
        }
        Err(e) => {
            let (class, message) = match &e {
                CallError::Failed(out) => (out.class.as_str().to_owned(), out.message.clone()),
                other => ("protocol".to_owned(), other.to_string()),
            };
            attempt.outcome = Outcome::Failed;
            attempt.error_class = Some(class);
            attempt.message = Some(message);
            if let Err(log) = blocking(move || vault.append_attempt(&k, &attempt)).await {
                tracing::error!(
                    code = log.code(),
                    "cannot record the assisted-login attempt"
                );
            }
            tracing::warn!(account = %key, error = %e, "assisted login failed");
            Err(broker_error(e))
        }
    }
}
