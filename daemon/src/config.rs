//! Configuration: built-in defaults, then `tokenbot.toml`, then `TOKENBOT_*` env (`__` nests), then
//! the Node service's env names as-is. Bad config is refused with the key, the value and why.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Data, Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Names of the Node service's env variables and the keys they set.
const NODE_ENV: &[(&str, &str)] = &[
    ("DATABASE_URL", "mirror.postgres.url"),
    ("ENCRYPTION_KEY", "vault.encryption_key"),
    ("JWT_SECRET", "auth.jwt_secret"),
    ("TOKENBOT_API_KEY", "auth.api_key"),
    ("TOKENBOT_PASSPHRASE", "vault.passphrase"),
    ("LOG_LEVEL", "log.level"),
];

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources did not fit the schema: key, value (unless the key holds a secret) and source.
    /// Deliberately not the error's `source()`: an error chain printed with it would show
    /// figment's own text, values of secret keys included.
    #[error("configuration: {}", describe(.0))]
    Load(Box<figment::Error>),
    /// The file is not TOML. Only the position is quoted: the line may hold a secret.
    #[error("configuration: {origin} is not valid TOML: {message} at line {line}, column {column}")]
    Syntax {
        /// The file, or "the configuration text".
        origin: String,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        /// What the parser expected (no quotation of the text).
        message: String,
    },
    /// The file exists but cannot be read.
    #[error("configuration: cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// A value has the right type but is not acceptable.
    #[error("configuration: key `{key}` = {value:?}: {reason}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// The offending value (never a secret).
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// Keys whose values are secrets: an error about one never shows the value.
const SECRET_KEYS: &[&str] = &[
    "vault.encryption_key",
    "vault.passphrase",
    "auth.jwt_secret",
    "auth.api_key",
    "mirror.postgres.url",
];

/// figment's errors, each with its key and source; for a secret key the value is left out.
fn describe(errors: &figment::Error) -> String {
    let mut lines = Vec::new();
    for e in errors.clone() {
        let key = e.path.join(".");
        let text = if SECRET_KEYS.contains(&key.as_str()) {
            let source = e.metadata.as_ref().map(|m| match &m.source {
                Some(path) => format!(" in {path} {}", m.name),
                None => format!(" in {}", m.name),
            });
            let source = source.unwrap_or_default();
            format!("invalid value for key `{key}`{source} (a secret: its value is not shown)")
        } else {
            e.to_string()
        };
        lines.push(text);
    }
    lines.join("; ")
}

/// Refuse text that is not TOML with the parser's position and reason, never the line itself
/// (figment's own error quotes it, and the line may hold a secret).
fn check_syntax(text: &str, source: &str) -> Result<(), ConfigError> {
    let Err(e) = toml::from_str::<toml::Table>(text) else {
        return Ok(());
    };
    let start = e.span().map_or(0, |span| span.start).min(text.len());
    let before = text.get(..start).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Err(ConfigError::Syntax {
        origin: source.to_owned(),
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        message: e.message().trim().to_owned(),
    })
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        ConfigError::Load(e)
    }
}

impl ConfigError {
    fn invalid(
        key: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

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

/// Storage engine of the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// redb (default).
    #[default]
    Redb,
    /// sled (cargo feature `sled`).
    Sled,
}

/// `[vault]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Vault file.
    pub path: PathBuf,
    /// Storage engine.
    pub engine: Engine,
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
            engine: Engine::Redb,
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
    /// Called (POST, JSON) when an account enters `needs_attention`, e.g. after
    /// `automation_blocked`, with the assisted-login URL when `server.public_url` is set.
    pub webhook_url: Option<url::Url>,
    /// Wait after a refresh that ended in a retryable failure before scheduled and catch-up
    /// logins try the account again, in seconds; doubles with each such refresh in a row.
    pub retry_after_failure_secs: u64,
    /// Longest such wait, in seconds.
    pub retry_after_failure_max_secs: u64,
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
    fn split_settings(&mut self) {
        let (urls, settings) = std::mem::take(&mut self.urls)
            .into_iter()
            .partition(|(name, _)| name.ends_with("_url"));
        self.urls = urls;
        self.settings.extend(settings);
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

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("batch_size", self.batch_size as u64),
            ("poll_interval_ms", self.poll_interval_ms),
            ("backoff_initial_ms", self.backoff_initial_ms),
            ("connect_timeout_secs", self.connect_timeout_secs),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("mirror.postgres.{key}"),
                    "0",
                    "must be at least 1",
                ));
            }
        }
        if self.backoff_initial_ms > self.backoff_max_ms {
            return Err(ConfigError::invalid(
                "mirror.postgres.backoff_initial_ms",
                self.backoff_initial_ms.to_string(),
                "must not exceed mirror.postgres.backoff_max_ms",
            ));
        }
        if self.upsert_sql.is_none() {
            for (key, value) in [("schema", &self.schema), ("table", &self.table)] {
                if value.is_empty() {
                    return Err(ConfigError::invalid(
                        format!("mirror.postgres.{key}"),
                        "",
                        "must not be empty",
                    ));
                }
            }
        }
        crate::mirror::validate(self).map_err(|e| {
            let value = match e {
                crate::mirror::MirrorConfigError::Url(_) => "(hidden)".to_owned(),
                crate::mirror::MirrorConfigError::Template(_) => {
                    self.upsert_sql.clone().unwrap_or_default()
                }
            };
            ConfigError::invalid(e.key(), value, e.reason())
        })
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

impl Config {
    /// Load from `path` (missing is fine when `required` is false) and the process environment.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        Self::load_with_env(path, required, |name| std::env::var(name).ok())
    }

    /// Load from `path` and an explicit environment (for tests).
    pub fn load_with_env(
        path: &Path,
        required: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        if required && !path.exists() {
            return Err(ConfigError::invalid(
                "--config",
                path.display().to_string(),
                "file not found",
            ));
        }
        match std::fs::read_to_string(path) {
            Ok(text) => check_syntax(&text, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        }
        Self::load_layered(Toml::file(path), env)
    }

    /// Parse `toml` as the configuration file's text, with the same layering (defaults, this text,
    /// `TOKENBOT_*` of the process environment, then `env` for the Node names and `PORT`) and
    /// validation as [`Config::load_with_env`].
    pub fn from_toml_str(
        toml: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        check_syntax(toml, "the configuration text")?;
        Self::load_layered(Toml::string(toml), env)
    }

    /// Defaults, then `file`, then the environment; then validation.
    fn load_layered(
        file: Data<Toml>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(file)
            // Every setting lives in a section, so only nested names (`TOKENBOT_SERVER__LISTEN`) are
            // configuration; `TOKENBOT_CONFIG`, `TOKENBOT_API_KEY`, ... are read elsewhere.
            .merge(
                Env::prefixed("TOKENBOT_")
                    .filter(|key| key.as_str().contains("__"))
                    .split("__"),
            );
        for (name, key) in NODE_ENV {
            if let Some(value) = env(name) {
                figment = figment.merge((*key, value));
            }
        }
        let mut config: Config = figment.extract().map_err(Box::new)?;
        for broker in config.brokers.values_mut() {
            broker.split_settings();
        }
        if let Some(port) = env("PORT") {
            let port = port
                .parse::<u16>()
                .map_err(|e| ConfigError::invalid("PORT", port.clone(), e.to_string()))?;
            config.server.listen.set_port(port);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks that need more than the types.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.refresh.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "refresh.max_attempts",
                "0",
                "must be at least 1",
            ));
        }
        if self.refresh.concurrency == 0 {
            return Err(ConfigError::invalid(
                "refresh.concurrency",
                "0",
                "must be at least 1",
            ));
        }
        if self.refresh.backoff_initial_ms > self.refresh.backoff_max_ms {
            return Err(ConfigError::invalid(
                "refresh.backoff_initial_ms",
                self.refresh.backoff_initial_ms.to_string(),
                "must not exceed refresh.backoff_max_ms",
            ));
        }
        if self.refresh.retry_after_failure_secs == 0 {
            return Err(ConfigError::invalid(
                "refresh.retry_after_failure_secs",
                "0",
                "must be at least 1: without a wait, a broker outage means a login every minute",
            ));
        }
        if self.refresh.retry_after_failure_secs > self.refresh.retry_after_failure_max_secs {
            return Err(ConfigError::invalid(
                "refresh.retry_after_failure_secs",
                self.refresh.retry_after_failure_secs.to_string(),
                "must not exceed refresh.retry_after_failure_max_secs",
            ));
        }
        if self.vault.engine == Engine::Sled && !cfg!(feature = "sled") {
            return Err(ConfigError::invalid(
                "vault.engine",
                "sled",
                "this build has no sled engine (cargo feature `sled`)",
            ));
        }
        self.validate_server()?;
        self.validate_auth()?;
        for (name, hash) in &self.auth.api_keys {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::invalid(
                    format!("auth.api_keys.{name}"),
                    "(hidden)",
                    "must be the 64-hex-char SHA-256 of the key, not the key itself",
                ));
            }
        }
        for hash in &self.plugins.sha256_allowlist {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::invalid(
                    "plugins.sha256_allowlist",
                    hash.clone(),
                    "must be 64 hex chars",
                ));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::invalid(
                "log.level",
                self.log.level.clone(),
                e.to_string(),
            ));
        }
        for (id, broker) in &self.brokers {
            broker.validate(id)?;
        }
        if let Some(postgres) = &self.mirror.postgres {
            postgres.validate()?;
        }
        Ok(())
    }
}

impl Config {
    fn validate_server(&self) -> Result<(), ConfigError> {
        if self.server.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "0",
                "must be at least 1",
            ));
        }
        for proxy in &self.server.trusted_proxies {
            parse_trusted_proxy(proxy)
                .map_err(|e| ConfigError::invalid("server.trusted_proxies", proxy, e))?;
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        // An empty `JWT_SECRET=` is a short secret, not an unset one: with an empty HMAC key
        // anyone can sign a JWT for any user.
        if let Some(secret) = &self.auth.jwt_secret
            && secret.expose_secret().len() < MIN_JWT_SECRET_BYTES
        {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                "(hidden)",
                format!(
                    "must be at least {MIN_JWT_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`); \
                     leave it and JWT_SECRET unset to accept no JWT"
                ),
            ));
        }
        for (key, value) in [
            ("auth.jwt_issuer", &self.auth.jwt_issuer),
            ("auth.jwt_audience", &self.auth.jwt_audience),
        ] {
            if value.as_deref() == Some("") {
                return Err(ConfigError::invalid(
                    key,
                    "",
                    "must not be empty (leave it out to check no claim)",
                ));
            }
        }
        Ok(())
    }
}

/// One entry of `server.trusted_proxies`: a CIDR (`10.0.0.0/8`) or one address.
pub fn parse_trusted_proxy(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| "neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP address".to_owned())
}

impl BrokerConfig {
    fn validate(&self, id: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("brokers.{id}.{k}");
        if let Some(schedule) = &self.schedule {
            parse_cron(schedule).map_err(|e| ConfigError::invalid(key("schedule"), schedule, e))?;
        }
        if let Some(tz) = &self.timezone {
            tz.parse::<chrono_tz::Tz>()
                .map_err(|e| ConfigError::invalid(key("timezone"), tz, e.to_string()))?;
        }
        if let Some(rate) = self.rate_limit_per_sec
            && !(rate > 0.0 && rate.is_finite())
        {
            return Err(ConfigError::invalid(
                key("rate_limit_per_sec"),
                rate.to_string(),
                "must be a positive number",
            ));
        }
        if self.concurrency == Some(0) {
            return Err(ConfigError::invalid(
                key("concurrency"),
                "0",
                "must be at least 1",
            ));
        }
        for (name, value) in &self.urls {
            let url = url::Url::parse(value)
                .map_err(|e| ConfigError::invalid(key(name), value, e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(ConfigError::invalid(
                    key(name),
                    value,
                    "must be an absolute http(s) URL",
                ));
            }
        }
        Ok(())
    }
}

/// Parse a 5-field cron expression.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    expr.parse::<croner::Cron>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenbot.toml");
        std::fs::write(&path, toml).unwrap();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with_env(&path, true, |k| env.get(k).cloned())
    }

    #[test]
    fn defaults_when_file_is_empty() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(config.vault.path, PathBuf::from("data/vault.redb"));
        assert_eq!(config.refresh.max_attempts, 3);
    }

    #[test]
    fn node_env_names_apply() {
        let config = load(
            "[server]\nlisten = \"0.0.0.0:1\"\n",
            &[
                ("PORT", "4000"),
                ("LOG_LEVEL", "debug"),
                ("DATABASE_URL", "postgres://x@h/db"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:4000");
        assert_eq!(config.log.level, "debug");
        assert!(config.mirror.postgres.is_some());
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = load("[server]\nlisten_on = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_on"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_value() {
        let err = load("[refresh]\nmax_attempts = \"three\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_attempts") && err.contains("three"),
            "{err}"
        );
    }

    #[test]
    fn bad_cron_timezone_and_url_are_refused() {
        let err = load("[brokers.kite]\nschedule = \"61 8 * * *\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("brokers.kite.schedule") && err.contains("61 8"),
            "{err}"
        );
        let err = load("[brokers.kite]\ntimezone = \"Mars/Base\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("brokers.kite.timezone") && err.contains("Mars/Base"),
            "{err}"
        );
        let err = load("[brokers.kite]\napi_url = \"not a url\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("brokers.kite.api_url"), "{err}");
        // Other keys are the strategy's settings, checked against its manifest at start.
        let config = load("[brokers.kite]\nfrobnicate = \"1\"\n", &[]).unwrap();
        let kite = &config.brokers["kite"];
        assert_eq!(kite.settings["frobnicate"], "1");
        assert!(!kite.urls.contains_key("frobnicate"));
    }

    #[test]
    fn mirror_template_with_an_unknown_parameter_is_refused_at_start() {
        // Found by `daemon/fuzz`: tokio-postgres reads a mistyped scheme as key=value pairs and
        // quoted the URL up to its first `=` as an unknown option, password included.
        for url in [
            "postgress://u:hunter2@h/db?sslmode=require",
            "POSTGRES://u:hunter2@h/db?sslmode=require",
        ] {
            let err = load(&format!("[mirror.postgres]\nurl = \"{url}\"\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("mirror.postgres.url") && !err.contains("hunter2"),
                "{err}"
            );
        }
        let err = load(
            "[mirror.postgres]\nurl = \"postgres://u:pw@h/db\"\n\
             upsert_sql = \"UPDATE t SET a = $tokn WHERE id = $user_id\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("mirror.postgres.upsert_sql") && err.contains("$tokn"),
            "{err}"
        );
        let err = load(
            "[mirror.postgres]\nurl = \"postgres://u:hunter2@h:port/db\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("mirror.postgres.url") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn toml_text_loads_like_the_file() {
        let toml = "[server]\nlisten = \"0.0.0.0:1\"\n[refresh]\nmax_attempts = 5\n";
        let env = |k: &str| (k == "PORT").then(|| "4000".to_owned());
        let text = Config::from_toml_str(toml, env).unwrap();
        let file = load(toml, &[("PORT", "4000")]).unwrap();
        assert_eq!(
            serde_json::to_value(&text).unwrap(),
            serde_json::to_value(&file).unwrap()
        );
        let err = Config::from_toml_str("[refresh]\nmax_attempts = 0\n", |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("refresh.max_attempts"), "{err}");
    }

    /// The error as `main` prints it: with every `source()` in the chain.
    fn chain(err: ConfigError) -> String {
        format!("{:#}", anyhow::Error::new(err))
    }

    #[test]
    fn a_syntax_error_gives_its_position_but_not_the_line() {
        let text = "[vault]\npath = \"v.redb\"\n[auth]\njwt_secret = \"hunter2-very-secret\n";
        let err = load(text, &[]).map(|_| ()).map_err(chain).unwrap_err();
        assert!(
            err.contains("not valid TOML")
                && err.contains("line 4, column ")
                && err.contains("tokenbot.toml"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let err = Config::from_toml_str(text, |_| None)
            .map_err(chain)
            .unwrap_err();
        assert!(err.contains("line 4") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_named_but_not_shown() {
        for (section, key) in [
            ("vault", "encryption_key"),
            ("vault", "passphrase"),
            ("auth", "jwt_secret"),
            ("auth", "api_key"),
        ] {
            let err = load(&format!("[{section}]\n{key} = 987654321987\n"), &[])
                .map_err(chain)
                .unwrap_err();
            assert!(
                err.contains(&format!("{section}.{key}")) && !err.contains("987654321987"),
                "{err}"
            );
        }
        let err = load(
            "[mirror.postgres]\nurl = [\"postgres://u:hunter2@h/db\"]\n",
            &[],
        )
        .map_err(chain)
        .unwrap_err();
        assert!(
            err.contains("mirror.postgres.url") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn bad_port_env_is_refused() {
        let err = load("", &[("PORT", "http")]).unwrap_err().to_string();
        assert!(err.contains("PORT") && err.contains("http"), "{err}");
    }

    #[test]
    fn an_empty_or_short_jwt_secret_is_refused_at_start_naming_the_key() {
        let short = "k".repeat(MIN_JWT_SECRET_BYTES - 1);
        for secret in ["", short.as_str()] {
            let err = load("", &[("JWT_SECRET", secret)])
                .map_err(chain)
                .unwrap_err();
            assert!(
                err.contains("auth.jwt_secret") && err.contains("at least 32 bytes"),
                "{err}"
            );
            assert!(secret.is_empty() || !err.contains(secret), "{err}");
            let err = load(&format!("[auth]\njwt_secret = \"{secret}\"\n"), &[])
                .map_err(chain)
                .unwrap_err();
            assert!(err.contains("auth.jwt_secret"), "{err}");
        }
        let long = "k".repeat(MIN_JWT_SECRET_BYTES);
        let config = load("", &[("JWT_SECRET", &long)]).unwrap();
        assert!(config.auth.jwt_secret.is_some());
        assert!(load("", &[]).unwrap().auth.jwt_secret.is_none());
    }

    #[test]
    fn an_empty_jwt_issuer_or_audience_is_refused() {
        for key in ["jwt_issuer", "jwt_audience"] {
            let err = load(&format!("[auth]\n{key} = \"\"\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("auth.{key}")), "{err}");
        }
        let config = load(
            "[auth]\njwt_issuer = \"https://id.example.com\"\njwt_audience = \"tokenbot\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.auth.jwt_audience.as_deref(), Some("tokenbot"));
    }

    #[test]
    fn trusted_proxies_take_cidrs_and_addresses_and_refuse_anything_else() {
        let config = load(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"fd00::/8\"]\n",
            &[],
        )
        .unwrap();
        let nets: Vec<String> = config
            .server
            .trusted_proxies
            .iter()
            .map(|p| parse_trusted_proxy(p).unwrap().to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]);
        let err = load("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.trusted_proxies") && err.contains("10.0.0.0/33"),
            "{err}"
        );
    }

    #[test]
    fn max_connections_defaults_to_ten_thousand_and_refuses_zero() {
        assert_eq!(load("", &[]).unwrap().server.max_connections, 10_000);
        let err = load("[server]\nmax_connections = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.max_connections"), "{err}");
    }
}
