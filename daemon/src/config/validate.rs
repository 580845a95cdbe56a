//! Checks of the sections this module owns.

use secrecy::ExposeSecret;

use super::{BrokerConfig, Config, ConfigError, MIN_API_KEY_BYTES, MIN_JWT_SECRET_BYTES};

impl Config {
    /// Checks that need more than the types, of the sections this module owns: everything but
    /// `[vault]`, `[log] level`, the schedules and timezones of `[brokers.<id>]` and
    /// `[mirror.postgres]`, which their owners check (`tokenbot::check_config` runs them all).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_refresh()?;
        self.validate_server()?;
        self.validate_auth()?;
        self.validate_console()?;
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
        for (id, broker) in &self.brokers {
            broker.validate(id)?;
        }
        Ok(())
    }
}

impl Config {
    fn validate_console(&self) -> Result<(), ConfigError> {
        let c = &self.console;
        if c.session_idle_secs == 0 {
            return Err(ConfigError::invalid(
                "console.session_idle_secs",
                "0",
                "must be at least 1",
            ));
        }
        if c.session_max_secs < c.session_idle_secs {
            return Err(ConfigError::invalid(
                "console.session_max_secs",
                c.session_max_secs.to_string(),
                "must not be less than console.session_idle_secs",
            ));
        }
        Ok(())
    }

    fn validate_refresh(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

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
        if let Some(key) = &self.auth.api_key
            && key.expose_secret().trim().len() < MIN_API_KEY_BYTES
        {
            return Err(ConfigError::invalid(
                "auth.api_key (TOKENBOT_API_KEY)",
                "(hidden)",
                format!(
                    "must be at least {MIN_API_KEY_BYTES} bytes (e.g. `openssl rand -hex 24`); \
                     leave it unset for no env key"
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
    /// Limits and base URLs; the schedule and timezone are `refresh::schedule`'s.
    fn validate(&self, id: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("brokers.{id}.{k}");
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
