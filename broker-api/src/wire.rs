//! Versioned JSON that crosses the ABI. Every top-level message carries `"v"`; readers ignore
//! fields they do not know and fill missing ones with defaults, so both sides may grow. Changing
//! the meaning of a field here is an ABI change.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Version of the JSON messages defined here.
pub const WIRE_VERSION: u32 = 1;

fn wire_version() -> u32 {
    WIRE_VERSION
}

/// A secret string on the wire: never printed, zeroed when dropped.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sensitive(String);

impl Sensitive {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Sensitive {
        Sensitive(value.into())
    }

    /// The secret itself; the caller takes responsibility for not leaking it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Drop for Sensitive {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Why a login failed. Drives the host's retry policy: only `rate_limited`, `broker_unavailable`
/// and `network` are retried automatically; `twofa_rejected` gets at most one retry on a fresh
/// TOTP step, and only where that retry sends no password or PIN again; everything else needs a
/// person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Wrong user id or password. Never retried: five failures lock the account.
    InvalidCredentials,
    /// The broker refused the second factor.
    TwofaRejected,
    /// The account's second factor is not one the strategy can produce (e.g. no TOTP).
    TwofaUnavailable,
    /// The user never authorized the API app.
    AppNotAuthorized,
    /// The broker reports the account blocked or frozen.
    AccountLocked,
    /// The broker detected automation; use assisted login.
    AutomationBlocked,
    /// Too many requests; see `retry_after_ms`.
    RateLimited,
    /// The broker is down or answered HTML or 5xx.
    BrokerUnavailable,
    /// Connection, DNS or timeout failure.
    Network,
    /// The broker answered something the strategy does not understand: it changed.
    Protocol,
    /// Not a failure (ABI 1.3): the broker asked a person to approve the login and will deliver
    /// the token to the host's webhook, until [`ErrorOutput::pending_until_ms`]. Never retried
    /// and never a reason for `needs_attention`; the host waits for the delivery instead.
    PendingApproval,
    /// A class this host does not know (sent by a newer plugin); treated like `protocol`.
    #[serde(other)]
    Unknown,
}

impl ErrorClass {
    /// The snake_case name used on the wire, in logs and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidCredentials => "invalid_credentials",
            ErrorClass::TwofaRejected => "twofa_rejected",
            ErrorClass::TwofaUnavailable => "twofa_unavailable",
            ErrorClass::AppNotAuthorized => "app_not_authorized",
            ErrorClass::AccountLocked => "account_locked",
            ErrorClass::AutomationBlocked => "automation_blocked",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::BrokerUnavailable => "broker_unavailable",
            ErrorClass::Network => "network",
            ErrorClass::Protocol => "protocol",
            ErrorClass::PendingApproval => "pending_approval",
            ErrorClass::Unknown => "unknown",
        }
    }

    /// Whether the host may retry automatically after backing off.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimited | ErrorClass::BrokerUnavailable | ErrorClass::Network
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential field a strategy needs. The five every broker shares are `broker_user_id`,
/// `password`, `api_key`, `api_secret` and `totp_secret`; a strategy may declare more (ABI 1.2),
/// named the same way for every broker: `pin` for every PIN or MPIN, `api_user_id`, `mobile`,
/// `dob_or_pan`, ... Their values reach the strategy in [`Credentials::extra`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialField {
    /// Field name: lowercase letters, digits and `_`.
    pub name: String,
    /// What to call it when asking a person, e.g. "Angel One MPIN (4 digits)" (ABI 1.2; empty from
    /// an older plugin, when the host shows the name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// Whether the value is secret (encrypted at rest, never shown, prompted without echo).
    #[serde(default)]
    pub secret: bool,
    /// Whether a login cannot proceed without it.
    #[serde(default = "default_true")]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

/// What a strategy tells the host about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// Human name, e.g. "Zerodha Kite".
    pub display_name: String,
    /// Credential fields the strategy needs.
    pub credential_fields: Vec<CredentialField>,
    /// Default refresh schedule (5-field cron).
    pub schedule: String,
    /// Default timezone of the schedule (IANA name).
    pub timezone: String,
    /// Human description of when tokens expire (the login output carries the exact instant).
    #[serde(default)]
    pub token_validity: String,
    /// Default base URLs by name (e.g. `web_url`, `api_url`); the operator may override each.
    pub base_urls: BTreeMap<String, String>,
    /// Settings the operator may change in `[brokers.<id>]`, with their defaults: choices the
    /// broker's protocol leaves open (ABI 1.1). Values are strings; the strategy parses them.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Hosts the strategy may reach; hosts of operator-configured base URLs are added by the host.
    pub allowed_hosts: Vec<String>,
    /// Logins in flight at once for this broker.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
    /// Requests per second the broker tolerates per app.
    #[serde(default = "default_rate")]
    pub rate_limit_per_sec: f64,
    /// Names of the [`LoginOutput::extras`] the host may hand to consumers (the token API and the
    /// Postgres mirror), e.g. Angel One's `feed_token` (ABI 1.2). Every other extra stays in the
    /// vault. The host never serves a name containing `refresh`, listed here or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served_extras: Vec<String>,
    /// How tokens expire (ABI 1.2; a 1.0 or 1.1 plugin is `daily`).
    #[serde(default)]
    pub validity: Validity,
    /// The shortest time between two logins of one account the broker tolerates, in ms (ABI 1.2;
    /// 0: no limit). Dhan mints at most one token per account every 2 minutes. The operator may
    /// override it with `[brokers.<id>] min_login_interval`.
    #[serde(default)]
    pub min_login_interval_ms: u64,
    /// Whether the broker's redirect to the host's callback carries the `state` of the login URL
    /// (ABI 1.2; absent: it does). When it does not (Dhan's consent flow answers `?tokenId=`
    /// only), the host binds a callback to the broker's one pending assisted login, and refuses
    /// one that arrives while several are pending.
    #[serde(default = "default_true")]
    pub callback_has_state: bool,
    /// Whether the broker can deliver tokens by POSTing them to a host webhook after a person
    /// approves a request (ABI 1.3; Upstox's notifier webhook). Such a strategy's `login` may
    /// answer [`ErrorClass::PendingApproval`], and its `assisted_finish` accepts a
    /// [`AssistedFinishRequest::delivery`].
    #[serde(default)]
    pub token_webhook: bool,
    /// Names of [`LoginOutput::extras`] that outlive one token: when a later login does not send
    /// one, the host keeps the stored value (Upstox's `extended_token`, valid a year, sent only
    /// when a new one is minted). Every other extra is replaced with the login's set. A JSON
    /// field with a default: an older host ignores it, and an older plugin keeps nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_extras: Vec<String>,
}

/// How a broker's tokens expire, which decides when the scheduler logs an account in again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    /// At a time of day (Kite 06:00 IST, Angel One 00:00 IST): the broker's scheduled run logs
    /// every account in after that time.
    #[default]
    Daily,
    /// A fixed time after issue (Dhan: 24 h): a token is replaced before the next market session
    /// opens when it would not last through that session.
    Rolling,
    /// A rule this host does not know (sent by a newer plugin); treated like `daily`.
    #[serde(other)]
    Unknown,
}

fn default_concurrency() -> u32 {
    4
}

fn default_rate() -> f64 {
    5.0
}

/// The credentials of one account. Absent fields are `None`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Credentials {
    /// The fields beyond the five that the manifest declares (ABI 1.2), by name: `pin`, `mobile`,
    /// ... Every value is handled as a secret here, whether or not the manifest calls it one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Sensitive>,
    /// Login password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Sensitive>,
    /// API key / app key (not secret for most brokers, but treated with care).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// API secret / app secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_secret: Option<Sensitive>,
}

impl Credentials {
    /// The non-empty value of an extra field, e.g. `pin`.
    pub fn extra(&self, name: &str) -> Option<&str> {
        self.extra
            .get(name)
            .map(Sensitive::expose)
            .filter(|v| !v.is_empty())
    }
}

/// Input of `login`. The TOTP secret never crosses the boundary: the host's `totp` callback uses it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginRequest {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// The platform's user id.
    pub user_id: String,
    /// The broker-side user / client id.
    pub broker_user_id: String,
    /// Credentials other than the TOTP secret.
    pub credentials: Credentials,
    /// Effective base URLs (configured, else the manifest's defaults).
    pub base_urls: BTreeMap<String, String>,
    /// Effective settings: the manifest's [`Manifest::settings`] overridden by the operator's
    /// `[brokers.<id>]` keys (ABI 1.1; empty from an older host).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// 1 for the first attempt of a refresh, 2 for a retry, ...
    #[serde(default = "default_attempt")]
    pub attempt: u32,
    /// Where the broker redirects after login, when the host has one (assisted login, app config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
}

fn default_attempt() -> u32 {
    1
}

/// Output of `login` and `assisted_finish`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginOutput {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// The daily access token.
    pub access_token: Sensitive,
    /// The broker-side user id the broker confirmed.
    #[serde(default)]
    pub broker_user_id: String,
    /// When the token was issued (Unix ms).
    pub issued_at_ms: i64,
    /// When the token stops working (Unix ms).
    pub expires_at_ms: i64,
    /// Broker-specific extras (e.g. Kite's `public_token`, Angel One's `feed_token`). Stored
    /// encrypted; only those named in [`Manifest::served_extras`] ever leave the vault.
    #[serde(default)]
    pub extras: BTreeMap<String, serde_json::Value>,
}

/// Output of a failed plugin call (status `ERROR`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorOutput {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// What kind of failure this is.
    pub class: ErrorClass,
    /// Actionable text for an operator. Never contains a secret.
    pub message: String,
    /// For `rate_limited`: how long to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Whether the login may have sent the password or PIN before it failed (ABI 1.1). The host
    /// never starts another login in the same refresh after such a failure, whatever its class:
    /// a password is sent at most once per refresh. Absent (a 1.0 plugin) means it may have.
    #[serde(default = "default_true")]
    pub credentials_sent: bool,
    /// For `pending_approval` (ABI 1.3): until when (Unix ms) the person may approve; after it
    /// the request is dead and the next scheduled run asks again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_until_ms: Option<i64>,
}

impl ErrorOutput {
    /// A failure of the given class, after which the password may have been sent: the safe
    /// assumption. Failures before any credential left the strategy say so with
    /// [`ErrorOutput::before_credentials`].
    pub fn new(class: ErrorClass, message: impl Into<String>) -> ErrorOutput {
        ErrorOutput {
            v: WIRE_VERSION,
            class,
            message: message.into(),
            retry_after_ms: None,
            credentials_sent: true,
            pending_until_ms: None,
        }
    }

    /// The same failure, marked as happening before the password or PIN was sent, so that the
    /// host may retry the whole login when the class allows it.
    pub fn before_credentials(mut self) -> ErrorOutput {
        self.credentials_sent = false;
        self
    }
}

/// Input of `verify`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// The broker-side user id the token should belong to.
    pub broker_user_id: String,
    /// The token to check.
    pub access_token: Sensitive,
    /// Credentials (some brokers need the API key to call their API).
    #[serde(default)]
    pub credentials: Credentials,
    /// Effective base URLs.
    pub base_urls: BTreeMap<String, String>,
    /// Effective settings: the manifest's [`Manifest::settings`] overridden by the operator's
    /// `[brokers.<id>]` keys (ABI 1.1; empty from an older host).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// Output of `verify`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerifyOutput {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// Whether the broker accepted the token.
    pub valid: bool,
    /// Why not, when invalid.
    #[serde(default)]
    pub message: String,
}

/// Input of `assisted_url`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AssistedUrlRequest {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// The broker-side user id.
    pub broker_user_id: String,
    /// Credentials (the login URL usually carries the API key).
    pub credentials: Credentials,
    /// Opaque single-use value the host uses to bind the callback to this account.
    pub state: String,
    /// The host's callback URL (`{public_url}/callback/{broker}`).
    pub redirect_url: String,
    /// Effective base URLs.
    pub base_urls: BTreeMap<String, String>,
    /// Effective settings: the manifest's [`Manifest::settings`] overridden by the operator's
    /// `[brokers.<id>]` keys (ABI 1.1; empty from an older host).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// Output of `assisted_url`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AssistedUrlOutput {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// The URL a person opens to log in.
    pub url: String,
}

/// Input of `assisted_finish`: the query of the broker's redirect to the host's callback.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AssistedFinishRequest {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// The platform's user id.
    pub user_id: String,
    /// The broker-side user id.
    pub broker_user_id: String,
    /// Credentials (API key and secret for the session exchange).
    pub credentials: Credentials,
    /// The redirect's query parameters, as received.
    pub query: BTreeMap<String, String>,
    /// A token the broker POSTed to the host's webhook (ABI 1.3), instead of a redirect query:
    /// the strategy validates it and confirms the token with the broker before the host stores
    /// it. Absent for a browser redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<TokenDelivery>,
    /// The host's callback URL the login URL named (ABI 1.3), for brokers whose token exchange
    /// repeats it (Upstox's `redirect_uri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// Effective base URLs.
    pub base_urls: BTreeMap<String, String>,
    /// Effective settings: the manifest's [`Manifest::settings`] overridden by the operator's
    /// `[brokers.<id>]` keys (ABI 1.1; empty from an older host).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// A webhook delivery of a token (ABI 1.3), for [`AssistedFinishRequest::delivery`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenDelivery {
    /// The delivery's body as received (it holds the token).
    pub body: Sensitive,
    /// When the host asked for the approval this delivery answers (Unix ms).
    pub requested_at_ms: i64,
    /// Until when that request could be approved (Unix ms).
    pub pending_until_ms: i64,
}

/// One HTTP exchange requested by a plugin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HttpRequest {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute URL; its host must be allowed.
    pub url: String,
    /// Request headers as `[name, value]` pairs. The host adds the login's cookies.
    #[serde(default)]
    pub headers: Vec<[String; 2]>,
    /// Request body (UTF-8).
    #[serde(default)]
    pub body: String,
    /// Follow redirects (each hop's host must be allowed). Default: return the 3xx as is.
    #[serde(default)]
    pub follow_redirects: bool,
    /// Per-request timeout; the host's login deadline still applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl HttpRequest {
    /// A request with no headers or body.
    pub fn new(method: &str, url: impl Into<String>) -> HttpRequest {
        HttpRequest {
            v: WIRE_VERSION,
            method: method.to_owned(),
            url: url.into(),
            headers: Vec::new(),
            body: String::new(),
            follow_redirects: false,
            timeout_ms: None,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> HttpRequest {
        self.headers.push([name.to_owned(), value.into()]);
        self
    }

    /// Set a body and its content type.
    pub fn body(mut self, content_type: &str, body: impl Into<String>) -> HttpRequest {
        self.headers
            .push(["content-type".to_owned(), content_type.to_owned()]);
        self.body = body.into();
        self
    }
}

/// The host's answer to an [`HttpRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HttpResponse {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// HTTP status code.
    pub status: u16,
    /// URL of the response (after any followed redirects).
    pub url: String,
    /// Response headers as `[name, value]` pairs, names lowercase, repeated names kept.
    #[serde(default)]
    pub headers: Vec<[String; 2]>,
    /// Body, decoded as UTF-8 (invalid sequences replaced).
    #[serde(default)]
    pub body: String,
}

impl HttpResponse {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|[n, _]| n.eq_ignore_ascii_case(name))
            .map(|[_, v]| v.as_str())
    }
}

/// Input of the `totp` callback.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TotpRequest {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
}

/// Output of the `totp` callback: a code from a step never handed out before for this account.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TotpCode {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// Six digits, zero-padded.
    pub code: Sensitive,
    /// The RFC 6238 time step the code belongs to.
    pub step: u64,
    /// How long the code stays valid (ms).
    pub valid_for_ms: u64,
}

/// Why a host callback failed (status other than `OK`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostError {
    /// Wire version.
    #[serde(default = "wire_version")]
    pub v: u32,
    /// `denied`, `timeout`, `too_large`, `network`, `bad_request`, `unavailable`, ...
    pub kind: String,
    /// Human text.
    pub message: String,
}
