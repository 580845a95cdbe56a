//! Who is calling: a user with an HS256 JWT (`Authorization: Bearer <jwt>`), or a service with a
//! named API key (`X-API-Key`, and on `/api/integration/*` also `Authorization: Bearer <key>`).
//!
//! - JWTs: HS256 only (`alg: none` and every other algorithm refused), `exp` required, `nbf`
//!   checked when present, `iss` and `aud` required to match when `auth.jwt_issuer` and
//!   `auth.jwt_audience` are set (and not checked when they are not), the user id in
//!   `auth.user_claim` (when that is `sub`, falling back to `userId`, then `id`; a string or a
//!   number). Without `auth.jwt_secret` no JWT is accepted.
//! - API keys are kept as SHA-256 digests only; a presented key is hashed and compared with every
//!   configured digest in constant time, without stopping at a match.
//! - Failed authentications are counted per peer IP: past [`MAX_FAILURES`] in [`FAILURE_WINDOW`]
//!   the IP gets 429 (even with good credentials) until the window ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::error::ApiError;
use crate::config::{AuthConfig, MIN_JWT_SECRET_BYTES};
use crate::vault::UserId;

/// Failed authentications one IP may make per window.
pub const MAX_FAILURES: u32 = 20;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// IPs tracked at once; beyond this, new IPs are not limited (logged) rather than memory growing.
const MAX_TRACKED_IPS: usize = 100_000;

/// The header of service keys.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The name of an API key (a key of `[auth.api_keys]`, or `env`). Shared, not copied: every token
/// read carries it to the audit log.
pub type KeyName = Arc<str>;

/// Compiled `[auth]`: the JWT key and the API key digests. Built once per router.
pub struct Auth {
    jwt: Option<(DecodingKey, Validation)>,
    user_claim: String,
    /// (name, SHA-256 of the key).
    keys: Vec<(KeyName, [u8; 32])>,
    /// Failed authentications per peer IP: (window start, count). Touched by every failed
    /// authentication; checked before an authentication while some IP may be blocked.
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// When the last block of any IP ends, in ms since `created`: while it is past, nobody is
    /// blocked and the check before every authentication needs no lock.
    blocks_end_ms: AtomicU64,
    created: Instant,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("jwt", &self.jwt.is_some())
            .field("user_claim", &self.user_claim)
            .field("keys", &self.keys.iter().map(|k| &k.0).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// From `[auth]`. Configuration validation refused what is malformed; what slips through (a
    /// JWT secret under 32 bytes, a digest that is not 64 hex chars) is left out with an error
    /// logged.
    pub fn from_config(config: &AuthConfig) -> Auth {
        let jwt = config.jwt_secret.as_ref().and_then(|secret| {
            let secret = secret.expose_secret().as_bytes();
            if secret.len() < MIN_JWT_SECRET_BYTES {
                tracing::error!(
                    "auth.jwt_secret is under {MIN_JWT_SECRET_BYTES} bytes; no JWT is accepted"
                );
                return None;
            }
            Some((DecodingKey::from_secret(secret), jwt_validation(config)))
        });
        let mut keys = Vec::new();
        for (name, hex_digest) in &config.api_keys {
            let mut digest = [0u8; 32];
            match hex::decode_to_slice(hex_digest, &mut digest) {
                Ok(()) => keys.push((KeyName::from(name.as_str()), digest)),
                Err(_) => {
                    tracing::error!(key = %name, "auth.api_keys entry is not a SHA-256 hex digest; ignored")
                }
            }
        }
        if let Some(key) = &config.api_key {
            keys.push((KeyName::from("env"), sha256(key.expose_secret())));
        }
        Auth {
            jwt,
            user_claim: config.user_claim.clone(),
            keys,
            failures: Mutex::new(HashMap::new()),
            blocks_end_ms: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    /// The name of the API key `presented`, if it is one.
    pub fn key_name(&self, presented: &str) -> Option<&KeyName> {
        let digest = sha256(presented);
        let mut found = None;
        for (name, stored) in &self.keys {
            // Every digest is compared; only the result of each comparison is branched on.
            if bool::from(stored.ct_eq(&digest)) {
                found = Some(name);
            }
        }
        found
    }

    /// The user a JWT speaks for. The reason of a refusal is for the log only.
    pub fn jwt_user(&self, token: &str) -> Result<UserId, &'static str> {
        let Some((key, validation)) = &self.jwt else {
            return Err("no JWT secret is configured");
        };
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, validation)
            .map_err(|_| "invalid, expired or not HS256")?;
        let claims = data.claims;
        let mut names = vec![self.user_claim.as_str()];
        if self.user_claim == "sub" {
            names.extend(["userId", "id"]);
        }
        let id = names
            .iter()
            .find_map(|name| match claims.get(*name) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .ok_or("no user claim")?;
        UserId::new(id).map_err(|_| "the user claim is not a valid user id")
    }

    fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        if self.ms_since_created() >= self.blocks_end_ms.load(Ordering::Relaxed) {
            return None;
        }
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = failures.get(&ip)?;
        let elapsed = start.elapsed();
        (*count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    fn record_failure(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if failures.len() >= MAX_TRACKED_IPS && !failures.contains_key(&ip) {
            failures.retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
            if failures.len() >= MAX_TRACKED_IPS {
                tracing::warn!(%ip, "too many IPs failing authentication to track them all");
                return;
            }
        }
        let entry = failures.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 == MAX_FAILURES {
            let ends = entry.0.duration_since(self.created) + FAILURE_WINDOW;
            self.blocks_end_ms
                .fetch_max(ends.as_millis() as u64 + 1, Ordering::Relaxed);
            tracing::warn!(%ip, failures = MAX_FAILURES, "authentication failures: blocking this IP for the rest of the window");
        }
    }

    fn ms_since_created(&self) -> u64 {
        self.created.elapsed().as_millis() as u64
    }
}

/// JWT checks: HS256, `exp` required, `nbf` when present, `iss` and `aud` when configured.
fn jwt_validation(config: &AuthConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    let mut required = vec!["exp"];
    validation.validate_exp = true;
    validation.validate_nbf = true;
    if let Some(issuer) = &config.jwt_issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    // jsonwebtoken refuses every token carrying `aud` when no audience is set: an identity
    // provider that names its audiences would lock every user out of a daemon told none.
    match &config.jwt_audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

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

/// Run `check` unless the peer is blocked; count a failure.
fn authenticate<T>(
    api: &ApiState,
    parts: &Parts,
    check: impl FnOnce(&Auth, &HeaderMap) -> Attempted<T>,
) -> Result<T, ApiError> {
    let ip = peer_ip(parts);
    if let Some(wait) = api.auth.blocked(ip) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failed_authentications",
            "too many failed authentications from this address; try again later",
        )
        .with_header(RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1))));
    }
    match check(&api.auth, &parts.headers) {
        Attempted::Ok(v) => Ok(v),
        Attempted::Failed(message, reason) => {
            api.auth.record_failure(ip);
            tracing::debug!(%ip, reason, "authentication failed");
            Err(ApiError::unauthorized(message))
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

/// A service on an `/api/integration` route: `X-API-Key`, or `Authorization: Bearer <api key>` as
/// the IIFL job's callers send it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    const SECRET: &str = "s3cret-of-thirty-two-bytes-0123456";

    fn auth() -> Auth {
        let mut config = AuthConfig {
            jwt_secret: Some(SecretString::from(SECRET)),
            api_key: Some(SecretString::from("env-key")),
            ..AuthConfig::default()
        };
        config
            .api_keys
            .insert("backend".into(), hex::encode(sha256("backend-key")));
        Auth::from_config(&config)
    }

    #[test]
    fn keys_are_found_by_digest_and_named() {
        let auth = auth();
        assert_eq!(auth.key_name("backend-key").map(|n| &**n), Some("backend"));
        assert_eq!(auth.key_name("env-key").map(|n| &**n), Some("env"));
        assert_eq!(auth.key_name("backend-kez"), None);
        assert_eq!(auth.key_name(""), None);
    }

    #[test]
    fn failures_block_an_ip_only_past_the_limit() {
        let auth = auth();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES - 1 {
            auth.record_failure(a);
        }
        assert!(auth.blocked(a).is_none());
        auth.record_failure(a);
        assert!(auth.blocked(a).is_some());
        assert!(auth.blocked(b).is_none());
    }

    #[test]
    fn a_jwt_secret_under_32_bytes_that_slipped_past_validation_accepts_no_jwt() {
        let config = AuthConfig {
            jwt_secret: Some(SecretString::from("")),
            ..AuthConfig::default()
        };
        let auth = Auth::from_config(&config);
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u1", "exp": 4_102_444_800u64}),
            &jsonwebtoken::EncodingKey::from_secret(b""),
        )
        .unwrap();
        assert!(auth.jwt_user(&token).is_err());
    }
}
