//! The `[vault]` section of the configuration: its check at start, and opening the vault it
//! describes.

use crate::config::{ConfigError, VaultConfig};

use super::key::{self, KeyOrigin};
use super::{Engine, Vault, VaultError, VaultOptions};

/// Refuse a `[vault]` section whose engine is unknown or not in this build.
pub fn check_config(config: &VaultConfig) -> Result<(), ConfigError> {
    match config.engine.parse::<Engine>() {
        Err(_) => Err(ConfigError::invalid(
            "vault.engine",
            &config.engine,
            "unknown engine (redb or sled)",
        )),
        Ok(Engine::Sled) if !cfg!(feature = "sled") => Err(ConfigError::invalid(
            "vault.engine",
            "sled",
            "this build has no sled engine (cargo feature `sled`)",
        )),
        Ok(_) => Ok(()),
    }
}

impl Engine {
    /// The engine `config` names.
    pub fn configured(config: &VaultConfig) -> Result<Engine, VaultError> {
        config.engine.parse()
    }
}

impl Vault {
    /// Open the vault `config` describes with the key it configures (see [`key::resolve`]). With
    /// `create`, a missing vault is created, and with it the default key file when no key is
    /// configured (logged loudly).
    pub fn open_configured(
        config: &VaultConfig,
        options: VaultOptions,
        create: bool,
    ) -> Result<(Vault, KeyOrigin), VaultError> {
        let options = VaultOptions {
            allow_shared_broker_accounts: config.allow_shared_broker_accounts,
            ..options
        };
        let engine = Engine::configured(config)?;
        let resolved = key::resolve(config, create)?;
        let vault = if create {
            Vault::open_or_create(&config.path, engine, &resolved.material, options)?
        } else {
            Vault::open(&config.path, engine, &resolved.material, options)?
        };
        Ok((vault, resolved.origin))
    }
}
