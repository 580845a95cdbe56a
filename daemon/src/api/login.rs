//! Assisted (browser) login, for brokers that refuse automation or accounts without a TOTP secret:
//! `GET /api/login/{broker}/{userId}/url` (or a notice's signed one-tap link, `GET
//! /login/{broker}/{userId}?until=..&sig=..`, which redirects) issues a single-use, expiring state
//! bound to the account and answers the broker's login URL (whose redirect leads to `{public_url}/callback/{broker}`);
//! the broker sends the browser to `GET /callback/{broker}` with the state, which is consumed
//! before the strategy finishes the login. A replayed, forged or stale callback finds no state and
//! is refused; so is a state used on another broker's callback.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Redirect;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::accounts::{assisted_error, callback_tag, plugin_for, start_assisted};
use super::auth::Caller;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};
use super::params::user_id;
use super::views::iso;
use crate::vault::AccountKey;

/// Where to send the person.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LoginUrlOut)]
pub struct LoginUrlView {
    /// The broker's login page; open it in a browser.
    pub url: String,
    /// The callback the broker will redirect to. For a broker whose redirect carries no state
    /// (Shoonya, Dhan's consent) it ends in the account's tag, `?a=...`: register it as the
    /// account's app redirect URL, so that several logins can wait at once.
    pub redirect_url: String,
    /// The login must be completed before this time.
    pub expires_at: String,
}

/// A finished assisted login (never the token).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CallbackOut)]
pub struct CallbackView {
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
        (status = 200, description = "The broker's login URL, bound to this account for 10 minutes; it replaces the account's previous one", body = LoginUrlView),
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
) -> Result<Json<LoginUrlView>, ApiError> {
    let user = user_id(user)?;
    caller.may_act_for(&user)?;
    let started = start_assisted(&api, &broker, user).await?;
    Ok(Json(LoginUrlView {
        url: started.url,
        redirect_url: started.redirect_url,
        expires_at: iso(started.expires_at_ms),
    }))
}

/// The query of a one-tap login link.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// Until when the link works (Unix ms).
    until: i64,
    /// The daemon's signature of the account and `until` (hex).
    sig: String,
}

/// `GET /login/{broker}/{userId}`
#[utoipa::path(
    get,
    path = "/login/{broker}/{userId}",
    tag = "assisted login",
    params(
        ("broker" = String, Path, description = "Broker id"),
        ("userId" = String, Path, description = "The platform's user id"),
        LinkQuery,
    ),
    responses(
        (status = 303, description = "To the broker's login page (`Location`), as `GET /api/login/{broker}/{userId}/url` answers it"),
        (status = 400, description = "Malformed link, or the broker has no assisted login", body = ErrorBody),
        (status = 404, description = "Not a link this daemon signed for this account (`invalid_link`), or the account is gone", body = ErrorBody),
        (status = 410, description = "The link expired; the next notice brings a new one", body = ErrorBody),
        (status = 429, description = "Too many login URLs asked for this user lately", body = ErrorBody),
        (status = 502, description = "The strategy failed", body = ErrorBody),
        (status = 503, description = "`server.public_url` is not configured, or too many logins pending", body = ErrorBody),
    )
)]
pub async fn link(
    State(api): State<Arc<ApiState>>,
    ApiPath((broker, user)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<LinkQuery>,
) -> Result<Redirect, ApiError> {
    // As an unknown webhook hook: without the signature the path names nothing.
    let refused = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_link",
            "this link was not issued by this daemon for this account",
        )
    };
    let user = user_id(user)?;
    let broker_id = crate::vault::BrokerId::new(broker.as_str()).map_err(|_| refused())?;
    let key = AccountKey::new(user, broker_id);
    // The signature first: an unsigned link learns nothing, not even whether it expired.
    let message = crate::notify::login_link_message(&key, q.until);
    if !api.app.vault.link_signed(&message, &q.sig) {
        tracing::warn!(account = %key, "login link with a wrong signature; refused");
        return Err(refused());
    }
    if q.until <= api.now_ms() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "link_expired",
            format!(
                "this login link expired at {}; the next notice brings a new one",
                iso(q.until)
            ),
        ));
    }
    let started = start_assisted(&api, &broker, key.user).await?;
    Ok(Redirect::to(&started.url))
}

/// `GET /callback/{broker}`
#[utoipa::path(
    get,
    path = "/callback/{broker}",
    tag = "assisted login",
    params(
        ("broker" = String, Path, description = "Broker id"),
        ("state" = Option<String>, Query, description = "The single-use state issued with the login URL"),
        ("a" = Option<String>, Query, description = "The account tag of a broker whose redirect carries no state, from the registered redirect URL"),
    ),
    responses(
        (status = 200, description = "Logged in; the token is stored (not shown)", body = CallbackView),
        (status = 400, description = "Unknown, used or expired state, or one issued for another broker", body = ErrorBody),
        (status = 404, description = "Unknown broker, or the account was removed meanwhile", body = ErrorBody),
        (status = 502, description = "The broker refused to finish the login", body = ErrorBody),
    )
)]
pub async fn callback(
    State(api): State<Arc<ApiState>>,
    ApiPath(broker): ApiPath<String>,
    ApiQuery(query): ApiQuery<BTreeMap<String, String>>,
) -> Result<Json<CallbackView>, ApiError> {
    // An unknown broker is 404 whatever the query holds, and leaves any state unconsumed.
    let (plugin, _) = plugin_for(&api, &broker, StatusCode::NOT_FOUND)?;
    let invalid = |m: &str| ApiError::bad_request("invalid_state", m.to_owned());
    // A broker that glues its own query onto the callback's (`state=S?code=...`) still leaves the
    // state first.
    let state = query
        .get("state")
        .map(|s| s.split('?').next().unwrap_or_default())
        .filter(|s| !s.is_empty());
    let now = api.now_ms();
    // A broker whose redirect carries no state (its manifest says so): the login pending there
    // for the account its tag names (`a`, when the registered redirect URL has it), else the one
    // login pending there; dropped only once the broker finished it (the strategy also checks
    // that the broker logged in that account's user).
    let stateless = state.is_none() && !plugin.manifest.callback_has_state;
    let tag = query.get("a").filter(|_| stateless);
    let key = match state {
        Some(state) => api.assisted.consume(state, now),
        None if stateless => (api.assisted).only_pending(
            |k| k.broker.as_str() == broker && tag.is_none_or(|t| *t == callback_tag(&api, k)),
            now,
        ),
        None => return Err(invalid("the callback has no state")),
    }
    .map_err(|e| invalid(&e.to_string()))?;
    if key.broker.as_str() != broker {
        tracing::warn!(account = %key, callback = %broker, "assisted-login state used on another broker's callback; refused");
        return Err(invalid("this login state was issued for another broker"));
    }
    let login = api
        .app
        .refresher
        .finish_assisted(plugin, &key, query)
        .await
        .map_err(|e| {
            tracing::warn!(account = %key, error = %e, "assisted login failed");
            assisted_error(e)
        })?;
    if stateless {
        api.assisted.forget(&key);
    }
    Ok(Json(CallbackView {
        status: "ok".into(),
        user_id: key.user.as_str().to_owned(),
        broker: key.broker.as_str().to_owned(),
        broker_user_id: login.broker_user_id,
        expires_at: iso(login.expires_at_ms),
    }))
}
