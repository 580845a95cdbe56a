//! The extractors a handler names its caller with: [`ServiceKey`], [`IntegrationKey`],
//! [`UserJwt`] and [`Caller`]. Each checks the credentials first, then counts a failure against
//! the client's limit.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use super::{API_KEY_HEADER, Auth, KeyName};
use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::vault::UserId;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn api_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(API_KEY_HEADER)?
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// What an authentication attempt produced.
enum Attempted<T> {
    Ok(T),
    /// Wrong or missing credentials: the message for the client, the reason for the log.
    Failed(&'static str, &'static str),
}

/// Run `check`; count a failure, and answer it 429 past the client's limit.
fn authenticate<T>(
    api: &ApiState,
    parts: &Parts,
    check: impl FnOnce(&Auth, &HeaderMap) -> Attempted<T>,
) -> Result<T, ApiError> {
    match check(&api.auth, &parts.headers) {
        Attempted::Ok(v) => Ok(v),
        Attempted::Failed(message, reason) => {
            let client = api.auth.client_ip(parts);
            tracing::debug!(%client, reason, "authentication failed");
            match api.auth.failures.record(client) {
                None => Err(ApiError::unauthorized(message)),
                Some(wait) => Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_failed_authentications",
                    "too many failed authentications from this address; try again later",
                )
                .with_header(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)))),
            }
        }
    }
}

fn check_key(auth: &Auth, presented: Option<&str>) -> Attempted<KeyName> {
    match presented {
        None => Attempted::Failed("an API key is required (X-API-Key)", "no API key presented"),
        Some(key) => match auth.key_name(key) {
            Some(name) => Attempted::Ok(name.clone()),
            None => Attempted::Failed("invalid API key", "unknown API key"),
        },
    }
}

fn check_jwt(auth: &Auth, presented: Option<&str>) -> Attempted<UserId> {
    match presented {
        None => Attempted::Failed(
            "a bearer token is required (Authorization: Bearer <JWT>)",
            "no bearer token presented",
        ),
        Some(token) => match auth.jwt_user(token) {
            Ok(user) => Attempted::Ok(user),
            Err(reason) => Attempted::Failed("invalid or expired token", reason),
        },
    }
}

/// A service authenticated by `X-API-Key`; holds the key's name (for the audit log).
#[derive(Debug, Clone)]
pub struct ServiceKey(pub KeyName);

impl FromRequestParts<Arc<ApiState>> for ServiceKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(api, parts, |auth, headers| {
            check_key(auth, api_key(headers))
        })
        .map(ServiceKey)
    }
}

/// A service on an `/api/integration` route or `/metrics`: `X-API-Key`, or
/// `Authorization: Bearer <api key>` as the IIFL job's callers and Prometheus' `authorization`
/// send it.
#[derive(Debug, Clone)]
pub struct IntegrationKey(pub KeyName);

impl FromRequestParts<Arc<ApiState>> for IntegrationKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(api, parts, |auth, headers| {
            check_key(auth, api_key(headers).or_else(|| bearer(headers)))
        })
        .map(IntegrationKey)
    }
}

/// A user authenticated by a JWT; the routes it reaches act on that user only.
#[derive(Debug, Clone)]
pub struct UserJwt(pub UserId);

impl FromRequestParts<Arc<ApiState>> for UserJwt {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(api, parts, |auth, headers| check_jwt(auth, bearer(headers))).map(UserJwt)
    }
}

/// A service key or a user's JWT (routes marked `key|JWT`): `X-API-Key` wins when both are sent.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A service, by key name.
    Service(KeyName),
    /// A user.
    User(UserId),
}

impl Caller {
    /// Refuse (403) a user acting for another user; services may act for anyone.
    pub fn may_act_for(&self, user: &UserId) -> Result<(), ApiError> {
        match self {
            Caller::User(me) if me != user => {
                Err(ApiError::forbidden("this token belongs to another user"))
            }
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        api: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(api, parts, |auth, headers| match api_key(headers) {
            Some(key) => match check_key(auth, Some(key)) {
                Attempted::Ok(name) => Attempted::Ok(Caller::Service(name)),
                Attempted::Failed(m, r) => Attempted::Failed(m, r),
            },
            None => match check_jwt(auth, bearer(headers)) {
                Attempted::Ok(user) => Attempted::Ok(Caller::User(user)),
                Attempted::Failed(_, r) => Attempted::Failed(
                    "an API key (X-API-Key) or a user's bearer token is required",
                    r,
                ),
            },
        })
    }
}
