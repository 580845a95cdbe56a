//! The configuration's schema: one type per section, with its defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use super::notify::{ChatId, NotifyConfig, TelegramConfig};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[vault]`
    pub vault: VaultConfig,
    /// `[auth]`
    pub auth: AuthConfig,
    /// `[refresh]`
    pub refresh: RefreshConfig,
    /// `[brokers.<id>]`
    pub brokers: BTreeMap<String, BrokerConfig>,
    /// `[mirror]`
    pub mirror: MirrorConfig,
    /// `[plugins]`
    pub plugins: PluginsConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[notify]`
    pub notify: NotifyConfig,
    /// `[events]`
    pub events: EventsConfig,
    /// `[console]`
    pub console: ConsoleConfig,
}

impl ServerConfig {
    /// Where a broker sends the browser back after a login: `{public_url}/callback/{broker}`,
    /// when `public_url` is set.
    pub fn callback_url(&self, broker: &str) -> Option<String> {
        let base = self.public_url.as_ref()?;
        Some(format!(
            "{}/callback/{broker}",
            base.as_str().trim_end_matches('/')
        ))
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. `PORT` replaces the port.
    pub listen: SocketAddr,
    /// Public base URL of this daemon, for assisted-login callbacks.
    pub public_url: Option<url::Url>,
    /// Origins allowed by CORS; empty allows none.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Time allowed for a client to send a request's headers, in seconds, from its connection or
    /// the answer to its previous request; a connection with no request for that long is closed.
    pub header_read_timeout_secs: u64,
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-For` is believed for the client's address.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            public_url: None,
            cors_origins: Vec::new(),
            body_limit_bytes: 64 * 1024,
            header_read_timeout_secs: 10,
            // The e2e load phase holds 10,000 keep-alive connections.
            max_connections: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[vault]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Vault file.
    pub path: PathBuf,
    /// Storage engine, `redb`, `sled` (cargo feature `sled`) or `postgres`; checked by the vault.
    pub engine: String,
    /// The PostgreSQL database of `engine = "postgres"` (`TOKENBOT_VAULT_URL`): a URL or
    /// key-value connection string, which may hold a password.
    #[serde(skip_serializing)]
    pub url: Option<SecretString>,
    /// The schema holding the vault's table in that database; one vault per schema.
    pub schema: String,
    /// With `engine = "postgres"`, several daemons may share the vault: one leads (runs the
    /// schedules, catch-up and the mirror) and another takes over within this many seconds of
    /// the leader's end. Checked by the vault (3 to 300).
    pub failover_secs: u64,
    /// Key file holding the master key (64 hex chars). Default when no key is configured:
    /// `vault.key` beside the vault, created on first start.
    pub key_file: Option<PathBuf>,
    /// Master key as 64 hex chars (`ENCRYPTION_KEY`).
    #[serde(skip_serializing)]
    pub encryption_key: Option<SecretString>,
    /// Passphrase stretched with argon2id (`TOKENBOT_PASSPHRASE`).
    #[serde(skip_serializing)]
    pub passphrase: Option<SecretString>,
    /// Allow two platform users to register the same broker account (broker and
    /// `broker_user_id`). Off: the second is refused (409), since each would spend the broker's
    /// few wrong-password attempts on its own. On: a wrong password or a lock found through one
    /// of them stops the logins of all of them.
    pub allow_shared_broker_accounts: bool,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            path: PathBuf::from("data/vault.redb"),
            engine: "redb".into(),
            url: None,
            schema: "tokenbot".into(),
            failover_secs: 15,
            key_file: None,
            encryption_key: None,
            passphrase: None,
            allow_shared_broker_accounts: false,
        }
    }
}

/// The shortest `auth.jwt_secret` accepted: an HS256 key of fewer bytes can be searched for
/// offline from one token (RFC 7518 asks for a key as long as the hash, 32 bytes).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// `TOKENBOT_API_KEY` is a bearer credential read in plain text: a placeholder left in an env
/// file (`REPLACE_ME`) or a word must not become a working service key.
pub const MIN_API_KEY_BYTES: usize = 16;

/// `[auth]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret for user JWTs (`JWT_SECRET`), at least [`MIN_JWT_SECRET_BYTES`]. Without it,
    /// user routes answer 401.
    #[serde(skip_serializing)]
    pub jwt_secret: Option<SecretString>,
    /// If set, a JWT must carry this `iss`.
    pub jwt_issuer: Option<String>,
    /// If set, a JWT's `aud` must name this; if not, `aud` is not checked.
    pub jwt_audience: Option<String>,
    /// JWT claim holding the user id; `sub` falls back to `userId`, then `id`.
    pub user_claim: String,
    /// Named service API keys, each the lowercase hex SHA-256 of the key.
    pub api_keys: BTreeMap<String, String>,
    /// One more service key in plain text (`TOKENBOT_API_KEY`), named `env`.
    #[serde(skip_serializing)]
    pub api_key: Option<SecretString>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwt_issuer: None,
            jwt_audience: None,
            user_claim: "sub".into(),
            api_keys: BTreeMap::new(),
            api_key: None,
        }
    }
}

/// `[refresh]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    /// Logins in flight at once, all brokers together.
    pub concurrency: u32,
    /// Attempts per account and refresh, for retryable failures only.
    pub max_attempts: u32,
    /// First backoff delay, in milliseconds.
    pub backoff_initial_ms: u64,
    /// Largest backoff delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Time one login may take, all its HTTP exchanges and TOTP waits included, in seconds.
    pub login_timeout_secs: u64,
    /// Called (POST, JSON) when an account needs a person: it enters `needs_attention` (e.g.
    /// after `automation_blocked`, with the assisted-login URL when `server.public_url` is set),
    /// needs an assisted login, or waits for an approval (`notify`).
    pub webhook_url: Option<url::Url>,
    /// Wait after a refresh that ended in a retryable failure before scheduled and catch-up
    /// logins try the account again, in seconds; doubles with each such refresh in a row.
    pub retry_after_failure_secs: u64,
    /// Longest such wait, in seconds.
    pub retry_after_failure_max_secs: u64,
    /// When the market session opens (HH:MM in `session_timezone`). Tokens that expire a fixed
    /// time after issue (Dhan) are replaced before a session they would not last through.
    pub session_open: String,
    /// When it closes (HH:MM).
    pub session_close: String,
    /// The session's timezone (IANA name).
    pub session_timezone: String,
    /// How long before the session opens catch-up replaces such a token, in seconds.
    pub rolling_refresh_ahead_secs: u64,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            concurrency: 16,
            max_attempts: 3,
            backoff_initial_ms: 2_000,
            backoff_max_ms: 60_000,
            login_timeout_secs: 90,
            webhook_url: None,
            retry_after_failure_secs: 120,
            retry_after_failure_max_secs: 1_800,
            session_open: "09:15".into(),
            session_close: "15:30".into(),
            session_timezone: "Asia/Kolkata".into(),
            rolling_refresh_ahead_secs: 7_200,
        }
    }
}

/// `[brokers.<id>]`: every key is optional; the strategy's manifest gives the defaults.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct BrokerConfig {
    /// Whether this broker is logged in on its schedule.
    pub enabled: Option<bool>,
    /// 5-field cron schedule.
    pub schedule: Option<String>,
    /// IANA timezone of the schedule.
    pub timezone: Option<String>,
    /// Requests per second to this broker.
    pub rate_limit_per_sec: Option<f64>,
    /// Logins in flight at once for this broker.
    pub concurrency: Option<u32>,
    /// Force IPv4 egress (brokers that allow-list one static IPv4 address).
    pub ipv4_only: bool,
    /// Consecutive `broker_unavailable` refreshes, of distinct accounts, that pause this broker's
    /// scheduled and catch-up logins (default 5).
    pub breaker_threshold: Option<u32>,
    /// How long such a pause lasts, in seconds (default 300).
    pub breaker_cooldown_secs: Option<u64>,
    /// The shortest time between two logins of one account, in seconds (default: the strategy's;
    /// Dhan's is 120). A refresh asked for sooner answers at once without contacting the broker.
    pub min_login_interval_secs: Option<u64>,
    /// Extra hosts the strategy may reach.
    pub allowed_hosts: Vec<String>,
    /// Base URLs by name (`web_url`, `api_url`, `portal_url`, ...): every other key ending in `_url`.
    #[serde(flatten)]
    pub urls: BTreeMap<String, String>,
    /// The strategy's settings (every other key not ending in `_url`, e.g. IIFL's
    /// `totp_auth_header`), moved out of `urls` when the configuration is loaded. Names the
    /// strategy's manifest does not declare fail its logins with a message naming the key.
    #[serde(skip)]
    pub settings: BTreeMap<String, String>,
}

impl BrokerConfig {
    /// Move the keys that are not base URLs from `urls` into `settings`.
    pub(super) fn split_settings(&mut self) {
        let (urls, settings) = std::mem::take(&mut self.urls)
            .into_iter()
            .partition(|(name, _)| name.ends_with("_url"));
        self.urls = urls;
        self.settings.extend(settings);
    }
}

/// `[events]`: token-change events for consumers (`GET /api/tokens/events`, the webhook).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// How long an event stays available to a client resuming with `Last-Event-ID`, in seconds.
    pub retention_secs: u64,
    /// Most events kept for resuming, whatever their age: bounds the memory they take.
    pub max_retained: usize,
    /// Interval of keep-alive comments on an idle stream, in seconds, so proxies keep it open.
    pub keepalive_secs: u64,
    /// POSTed each event (JSON), when set.
    pub webhook_url: Option<url::Url>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention_secs: 3_600,
            max_retained: 10_000,
            keepalive_secs: 15,
            webhook_url: None,
        }
    }
}

/// `[console]`: the operator console at `/console` (sessions live in memory; a restart signs
/// every operator out).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// A session unused for this long (seconds) is over.
    pub session_idle_secs: u64,
    /// A session is over this long (seconds) after sign-in, however much it is used.
    pub session_max_secs: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            session_idle_secs: 30 * 60,
            session_max_secs: 12 * 3_600,
        }
    }
}

/// `[mirror]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// `[mirror.postgres]`; absent: no mirror.
    pub postgres: Option<PostgresMirrorConfig>,
}

/// `[mirror.postgres]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresMirrorConfig {
    /// Connection URL (`DATABASE_URL`). Holds a password: never logged.
    #[serde(skip_serializing)]
    pub url: SecretString,
    /// Schema of the default table.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Name of the default table.
    #[serde(default = "default_table")]
    pub table: String,
    /// Channel for `NOTIFY`; empty: no notifications.
    #[serde(default = "default_table")]
    pub notify_channel: String,
    /// Upsert template with named parameters, writing into an existing schema instead (no table
    /// is created then). See `mirror::template`.
    #[serde(default)]
    pub upsert_sql: Option<String>,
    /// Outbox records written per PostgreSQL transaction.
    #[serde(default = "default_mirror_batch_size")]
    pub batch_size: usize,
    /// How often the outbox is checked for new records, in milliseconds.
    #[serde(default = "default_mirror_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// First delay before reconnecting after a failure, in milliseconds; doubles up to the max.
    #[serde(default = "default_mirror_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Largest delay between reconnection attempts, in milliseconds.
    #[serde(default = "default_mirror_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Time allowed to connect, in seconds.
    #[serde(default = "default_mirror_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
}

impl PostgresMirrorConfig {
    /// The defaults around `url`.
    pub fn new(url: SecretString) -> PostgresMirrorConfig {
        PostgresMirrorConfig {
            url,
            schema: default_schema(),
            table: default_table(),
            notify_channel: default_table(),
            upsert_sql: None,
            batch_size: default_mirror_batch_size(),
            poll_interval_ms: default_mirror_poll_interval_ms(),
            backoff_initial_ms: default_mirror_backoff_initial_ms(),
            backoff_max_ms: default_mirror_backoff_max_ms(),
            connect_timeout_secs: default_mirror_connect_timeout_secs(),
        }
    }
}

fn default_mirror_batch_size() -> usize {
    100
}

fn default_mirror_poll_interval_ms() -> u64 {
    250
}

fn default_mirror_backoff_initial_ms() -> u64 {
    500
}

fn default_mirror_backoff_max_ms() -> u64 {
    30_000
}

fn default_mirror_connect_timeout_secs() -> u64 {
    10
}

fn default_schema() -> String {
    "public".into()
}

fn default_table() -> String {
    "tokenbot_tokens".into()
}

/// `[plugins]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directory scanned for `*.so` at start and on SIGHUP.
    pub dir: PathBuf,
    /// If not empty, only `.so` files whose SHA-256 (lowercase hex) is listed are loaded.
    pub sha256_allowlist: Vec<String>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: PathBuf::from("plugins"),
            sha256_allowlist: Vec::new(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub level: String,
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// If set, also write `combined.log` and `error.log` here, rotated daily.
    pub dir: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Pretty,
            dir: None,
        }
    }
}
