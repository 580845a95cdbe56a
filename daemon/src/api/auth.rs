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
//! - Failed authentications are counted per client address (see [`Auth::client_ip`]): past
//!   [`MAX_FAILURES`] in [`FAILURE_WINDOW`] a further failure is answered 429 instead of 401
//!   until the window ends. Credentials are always checked first, and valid ones are never
//!   refused: behind a proxy every client may share one address, and a guesser must not lock
//!   the trading backend out of its tokens.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
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

use quick_cache::sync::{EntryAction, EntryResult};

use super::ApiState;
use super::error::ApiError;
use crate::config::{AuthConfig, MIN_JWT_SECRET_BYTES, parse_trusted_proxy};
use crate::vault::UserId;

/// Failed authentications one IP may make per window.
pub const MAX_FAILURES: u32 = 20;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are counted at once. Past this, the counters the cache finds
/// least worth keeping (seen once, long ago) are evicted to make room.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// The header of service keys.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The name of an API key (a key of `[auth.api_keys]`, or `env`). Shared, not copied: every token
/// read carries it to the audit log.
pub type KeyName = Arc<str>;

/// Compiled `[auth]` and `server.trusted_proxies`: the JWT key, the API key digests, the
/// failure counters. Built once per router.
pub struct Auth {
    jwt: Option<(DecodingKey, Validation)>,
    user_claim: String,
    /// (name, SHA-256 of the key).
    keys: Vec<(KeyName, [u8; 32])>,
    /// Peers whose `X-Forwarded-For` is believed.
    trusted_proxies: Vec<ipnet::IpNet>,
    failures: FailureCounts,
}

/// Failed authentications per client, in fixed windows. Touched by failed authentications only.
/// A bounded, sharded cache (quick_cache) instead of a map under one mutex: a flood of addresses
/// evicts counters one at a time, O(1) each, and never stops everyone for a sweep of the map.
struct FailureCounts {
    /// (window start in ms since `created`, failures in the window), by client (IPv6 by /64).
    counts: quick_cache::sync::Cache<IpAddr, (u64, u32)>,
    created: Instant,
    /// The warning of a client reaching the limit: once a window, whatever the number of clients.
    warn: crate::logging::Throttle,
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
    /// From `[auth]` and `server.trusted_proxies`. Configuration validation refused what is
    /// malformed; what slips through (a JWT secret under 32 bytes, a digest that is not 64 hex
    /// chars, a proxy that is no CIDR) is left out with an error logged.
    pub fn from_config(config: &AuthConfig, trusted_proxies: &[String]) -> Auth {
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
        let trusted_proxies = trusted_proxies
            .iter()
            .filter_map(|proxy| match parse_trusted_proxy(proxy) {
                Ok(net) => Some(net),
                Err(e) => {
                    tracing::error!(%proxy, error = %e, "server.trusted_proxies entry ignored");
                    None
                }
            })
            .collect();
        Auth {
            jwt,
            user_claim: config.user_claim.clone(),
            keys,
            trusted_proxies,
            failures: FailureCounts::new(MAX_TRACKED_CLIENTS),
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

    /// The address a request comes from: the peer's, or, when the peer is a trusted proxy, the
    /// nearest address in `X-Forwarded-For` that is not a trusted proxy (each proxy appends the
    /// address it was reached from, so everything left of the first untrusted one is the
    /// client's to invent). An entry that is not an address ends the walk at the last hop known.
    pub fn client_ip(&self, parts: &Parts) -> IpAddr {
        let peer = peer_ip(parts).to_canonical();
        if !self.trusted(peer) {
            return peer;
        }
        let mut client = peer;
        for value in parts.headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let Ok(value) = value.to_str() else {
                return client;
            };
            for hop in value.rsplit(',') {
                let hop = hop.trim();
                let Some(ip) = hop
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
                else {
                    return client;
                };
                client = ip.to_canonical();
                if !self.trusted(client) {
                    return client;
                }
            }
        }
        client
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
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

impl FailureCounts {
    fn new(capacity: usize) -> FailureCounts {
        FailureCounts {
            // Room is made as clients come: most routers (every test's) never count one.
            counts: quick_cache::sync::Cache::with_weighter(
                capacity.min(1024),
                capacity as u64,
                quick_cache::UnitWeighter,
            ),
            created: Instant::now(),
            warn: crate::logging::Throttle::new(FAILURE_WINDOW),
        }
    }

    /// Count a failure of `client`; `Some(wait)` when it is past the limit, until its window
    /// ends.
    fn record(&self, client: IpAddr) -> Option<Duration> {
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let window = FAILURE_WINDOW.as_millis() as u64;
        let key = limit_key(client);
        let (start, count) = match self.counts.entry(&key, None, |_, (start, count)| {
            if now.saturating_sub(*start) >= window {
                (*start, *count) = (now, 0);
            }
            *count = count.saturating_add(1);
            EntryAction::Retain((*start, *count))
        }) {
            EntryResult::Retained(counted) => counted,
            EntryResult::Vacant(slot) => {
                let _ = slot.insert((now, 1));
                (now, 1)
            }
            // Neither is asked for (no removal, no timeout).
            _ => (now, 1),
        };
        if count <= MAX_FAILURES {
            return None;
        }
        if count == MAX_FAILURES + 1
            && let Some(others) = self.warn.allow()
        {
            tracing::warn!(
                %client,
                failures = MAX_FAILURES,
                others_since_last_warning = others,
                "authentication failures: this address gets 429 for its failures until the window ends"
            );
        }
        Some(
            Duration::from_millis((start + window).saturating_sub(now)).max(Duration::from_secs(1)),
        )
    }
}

/// What failures are counted by: the address, and for IPv6 its /64 (one host commonly holds a
/// whole /64 and could otherwise take a fresh address for every guess).
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
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

const X_FORWARDED_FOR: &str = "x-forwarded-for";

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

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    const SECRET: &str = "s3cret-of-thirty-two-bytes-0123456";

    fn auth_with(proxies: &[&str]) -> Auth {
        let mut config = AuthConfig {
            jwt_secret: Some(SecretString::from(SECRET)),
            api_key: Some(SecretString::from("env-key")),
            ..AuthConfig::default()
        };
        config
            .api_keys
            .insert("backend".into(), hex::encode(sha256("backend-key")));
        let proxies: Vec<String> = proxies.iter().map(|p| p.to_string()).collect();
        Auth::from_config(&config, &proxies)
    }

    fn auth() -> Auth {
        auth_with(&[])
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Request parts from `peer` with these `X-Forwarded-For` header lines.
    fn from(peer: &str, forwarded: &[&str]) -> Parts {
        let mut request = axum::http::Request::builder();
        for value in forwarded {
            request = request.header(X_FORWARDED_FOR, *value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        parts
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
    fn failures_past_the_limit_are_answered_429_per_client() {
        let auth = auth();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        for _ in 0..MAX_FAILURES {
            assert_eq!(auth.failures.record(a), None);
        }
        let wait = auth.failures.record(a).expect("past the limit");
        assert!(
            wait <= FAILURE_WINDOW && wait >= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(auth.failures.record(b), None);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_64() {
        let auth = auth();
        for n in 0..MAX_FAILURES {
            assert_eq!(
                auth.failures.record(ip(&format!("2001:db8:1:2::{n:x}"))),
                None
            );
        }
        assert!(auth.failures.record(ip("2001:db8:1:2:ffff::1")).is_some());
        assert_eq!(auth.failures.record(ip("2001:db8:1:3::1")), None);
    }

    #[test]
    fn the_failure_counters_hold_a_bounded_number_of_clients() {
        let counts = FailureCounts::new(1_000);
        for n in 0..20_000u32 {
            counts.record(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
        }
        // quick_cache bounds each shard; the total may pass the capacity by a shard's rounding.
        assert!(counts.counts.len() <= 1_100, "{}", counts.counts.len());
        // A client that keeps failing stays counted through the flood of one-off addresses.
        let persistent = ip("192.0.2.1");
        for n in 0..20_000u32 {
            counts.record(persistent);
            counts.record(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n)));
        }
        assert!(counts.record(persistent).is_some());
    }

    #[test]
    fn a_jwt_secret_under_32_bytes_that_slipped_past_validation_accepts_no_jwt() {
        let config = AuthConfig {
            jwt_secret: Some(SecretString::from("")),
            ..AuthConfig::default()
        };
        let auth = Auth::from_config(&config, &[]);
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "u1", "exp": 4_102_444_800u64}),
            &jsonwebtoken::EncodingKey::from_secret(b""),
        )
        .unwrap();
        assert!(auth.jwt_user(&token).is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let auth = auth_with(&["10.0.0.0/8", "192.0.2.7"]);
        // Untrusted peer: its header is the client's own invention.
        assert_eq!(
            auth.client_ip(&from("198.51.100.1:5000", &["203.0.113.9"])),
            ip("198.51.100.1")
        );
        // Trusted proxy: the nearest untrusted hop, whatever the client put left of it.
        assert_eq!(
            auth.client_ip(&from("10.1.2.3:5000", &["6.6.6.6, 203.0.113.9, 192.0.2.7"])),
            ip("203.0.113.9")
        );
        // Header lines read as one list, the last line nearest.
        assert_eq!(
            auth.client_ip(&from("10.1.2.3:5000", &["203.0.113.9", "10.9.9.9"])),
            ip("203.0.113.9")
        );
        // No header, or only proxies in it: the last hop known.
        assert_eq!(auth.client_ip(&from("10.1.2.3:5000", &[])), ip("10.1.2.3"));
        assert_eq!(
            auth.client_ip(&from("10.1.2.3:5000", &["10.4.4.4"])),
            ip("10.4.4.4")
        );
        // Garbage stops the walk at the hop before it; ports and mapped addresses are read.
        assert_eq!(
            auth.client_ip(&from("10.1.2.3:5000", &["203.0.113.9, unknown"])),
            ip("10.1.2.3")
        );
        assert_eq!(
            auth.client_ip(&from("[::ffff:10.1.2.3]:5000", &["203.0.113.9:4711"])),
            ip("203.0.113.9")
        );
    }
}
