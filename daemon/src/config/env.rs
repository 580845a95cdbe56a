//! Environment names: `TOKENBOT_<SECTION>__<KEY>`, the Node service's names, and `PORT`.

use figment::Figment;
use figment::providers::Env;

use super::{Config, ConfigError};

/// Names of the Node service's env variables and the keys they set.
const NODE_ENV: &[(&str, &str)] = &[
    ("DATABASE_URL", "mirror.postgres.url"),
    ("ENCRYPTION_KEY", "vault.encryption_key"),
    ("JWT_SECRET", "auth.jwt_secret"),
    ("TOKENBOT_API_KEY", "auth.api_key"),
    ("TOKENBOT_PASSPHRASE", "vault.passphrase"),
    ("TOKENBOT_VAULT_URL", "vault.url"),
    ("TOKENBOT_TELEGRAM_BOT_TOKEN", "notify.telegram.bot_token"),
    ("LOG_LEVEL", "log.level"),
];

/// `figment` with `TOKENBOT_*` of the process environment merged over it, then the Node names
/// that `env` knows.
pub(super) fn merge(mut figment: Figment, env: &impl Fn(&str) -> Option<String>) -> Figment {
    figment = figment
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
    figment
}

/// `PORT`, if `env` has it, replaces the listen port.
pub(super) fn apply_port(
    config: &mut Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(port) = env("PORT") {
        let port = port
            .parse::<u16>()
            .map_err(|e| ConfigError::invalid("PORT", port.clone(), e.to_string()))?;
        config.server.listen.set_port(port);
    }
    Ok(())
}
