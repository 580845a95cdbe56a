//! Who is calling: a user with an HS256 JWT (`Authorization: Bearer <jwt>`), or a service with a
//! named API key (`X-API-Key`, and on `/api/integration/*` also `Authorization: Bearer <key>`).
//!
//! - JWTs (`jwt`): HS256 only (`alg: none` and every other algorithm refused), `exp` required,
//!   `nbf` checked when present, `iss` and `aud` required to match when `auth.jwt_issuer` and
//!   `auth.jwt_audience` are set (and not checked when they are not), the user id in
//!   `auth.user_claim` (when that is `sub`, falling back to `userId`, then `id`; a string or a
//!   number). Without `auth.jwt_secret` no JWT is accepted.
//! - API keys (`keys`) are kept as SHA-256 digests only; a presented key is hashed and compared
//!   with every configured digest in constant time, without stopping at a match.
//! - Failed authentications are counted per client address (`client_ip`, see
//!   [`Auth::client_ip`]; `failures`): past [`MAX_FAILURES`] in [`FAILURE_WINDOW`] a further
//!   failure is answered 429 instead of 401 until the window ends. Credentials are always checked
//!   first, and valid ones are never refused: behind a proxy every client may share one address,
//!   and a guesser must not lock the trading backend out of its tokens.
//! - `extract`: the extractors handlers name the caller with ([`ServiceKey`], [`IntegrationKey`],
//!   [`UserJwt`], [`Caller`]).

mod client_ip;
mod extract;
mod failures;
mod jwt;
mod jwt_crypto;
mod keys;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::request::Parts;

use crate::config::AuthConfig;
use crate::vault::UserId;

use client_ip::TrustedProxies;
pub use extract::{Caller, IntegrationKey, ServiceKey, UserJwt};
pub use failures::{FAILURE_WINDOW, MAX_FAILURES};
use failures::{FailureCounts, MAX_TRACKED_CLIENTS};
use jwt::JwtVerifier;
pub use jwt_crypto::install as install_jwt_crypto;
use keys::ApiKeys;

/// The header of service keys.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The name of an API key (a key of `[auth.api_keys]`, or `env`). Shared, not copied: every token
/// read carries it to the audit log.
pub type KeyName = Arc<str>;

/// Compiled `[auth]` and `server.trusted_proxies`: the JWT key, the API key digests, the
/// failure counters. Built once per router.
pub struct Auth {
    jwt: JwtVerifier,
    keys: ApiKeys,
    /// Peers whose `X-Forwarded-For` is believed.
    trusted_proxies: TrustedProxies,
    failures: FailureCounts,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("jwt", &self.jwt.is_configured())
            .field("user_claim", &self.jwt.user_claim())
            .field("keys", &self.keys.names())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// From `[auth]` and `server.trusted_proxies`. Configuration validation refused what is
    /// malformed; what slips through (a JWT secret under 32 bytes, a digest that is not 64 hex
    /// chars, a proxy that is no CIDR) is left out with an error logged.
    pub fn from_config(config: &AuthConfig, trusted_proxies: &[String]) -> Auth {
        Auth {
            jwt: JwtVerifier::from_config(config),
            keys: ApiKeys::from_config(config),
            trusted_proxies: TrustedProxies::from_config(trusted_proxies),
            failures: FailureCounts::new(MAX_TRACKED_CLIENTS),
        }
    }

    /// The name of the API key `presented`, if it is one.
    pub fn key_name(&self, presented: &str) -> Option<&KeyName> {
        self.keys.name(presented)
    }

    /// The user a JWT speaks for. The reason of a refusal is for the log only.
    pub fn jwt_user(&self, token: &str) -> Result<UserId, &'static str> {
        self.jwt.user(token)
    }

    /// Count a failed authentication of `client` that no extractor saw (the console's sign-in
    /// form); `Some(wait)` when it is past the limit, as [`MAX_FAILURES`] says.
    pub fn record_failure(&self, client: IpAddr) -> Option<std::time::Duration> {
        tracing::debug!(%client, reason = "unknown API key (console sign-in)", "authentication failed");
        self.failures.record(client)
    }

    /// The address a request comes from: the peer's, or, when the peer is a trusted proxy, the
    /// nearest address in `X-Forwarded-For` that is not a trusted proxy (each proxy appends the
    /// address it was reached from, so everything left of the first untrusted one is the
    /// client's to invent). An entry that is not an address ends the walk at the last hop known.
    pub fn client_ip(&self, parts: &Parts) -> IpAddr {
        self.trusted_proxies.client_ip(parts)
    }
}
