//! The `[vault]` section of the configuration: its check at start, and opening the vault it
//! describes.

use crate::config::{ConfigError, VaultConfig};

use super::key::{self, KeyOrigin};
use super::{Engine, Location, PgTarget, Vault, VaultError, VaultOptions};

/// Where `config` puts the vault: `[vault] url` and `schema` for the postgres engine, else
/// `[vault] path`.
pub fn location(config: &VaultConfig) -> Location {
    match (Engine::configured(config), &config.url) {
        (Ok(Engine::Postgres), Some(url)) => Location::Postgres(PgTarget {
            failover_secs: config.failover_secs,
            ..PgTarget::new(url.clone(), &config.schema)
        }),
        _ => Location::Path(config.path.clone()),
    }
}

/// Refuse a `[vault]` section whose engine is unknown or not in this build, or a postgres one
/// without a usable URL and schema.
pub fn check_config(config: &VaultConfig) -> Result<(), ConfigError> {
    match config.engine.parse::<Engine>() {
        Err(_) => Err(ConfigError::invalid(
            "vault.engine",
            &config.engine,
            "unknown engine (redb, sled or postgres)",
        )),
        Ok(Engine::Postgres) => match &config.url {
            None => Err(ConfigError::invalid(
                "vault.url",
                "(none)",
                "engine = \"postgres\" needs the database's URL ([vault] url or TOKENBOT_VAULT_URL)",
            )),
            Some(_) if !(3..=300).contains(&config.failover_secs) => Err(ConfigError::invalid(
                "vault.failover_secs",
                config.failover_secs.to_string(),
                "from 3 to 300 seconds",
            )),
            Some(url) => PgTarget::new(url.clone(), &config.schema)
                .check()
                .map_err(|why| ConfigError::invalid("vault.url", "(not shown)", why)),
        },
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
        let at = location(config);
        let vault = if create {
            Vault::open_or_create(at, engine, &resolved.material, options)?
        } else {
            Vault::open(at, engine, &resolved.material, options)?
        };
        Ok((vault, resolved.origin))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn postgres(url: Option<&str>, schema: &str) -> VaultConfig {
        VaultConfig {
            engine: "postgres".into(),
            url: url.map(|u| SecretString::from(u.to_owned())),
            schema: schema.into(),
            ..VaultConfig::default()
        }
    }

    #[test]
    fn postgres_needs_a_url_and_a_plain_schema_and_no_message_shows_the_url() {
        let url = "postgres://tb:pw-Secret-1@db:5432/tb?sslmode=disable";
        assert!(check_config(&postgres(Some(url), "tokenbot")).is_ok());
        // Local, or said out loud: nothing else goes in the clear.
        assert!(check_config(&postgres(Some("postgres://tb@127.0.0.1/tb"), "tokenbot")).is_ok());
        // A remote host gets TLS, required, or (in a build without it) is refused.
        let remote = "postgres://tb:pw-Secret-1@db:5432/tb";
        for url in [remote.to_owned(), format!("{remote}?sslmode=require")] {
            let checked = check_config(&postgres(Some(&url), "tokenbot"));
            if cfg!(feature = "postgres-tls") {
                assert!(checked.is_ok(), "{checked:?}");
            } else {
                let e = checked.unwrap_err().to_string();
                assert!(e.contains("TLS") && !e.contains("pw-Secret-1"), "{e}");
            }
        }
        let missing = check_config(&postgres(None, "tokenbot")).unwrap_err();
        assert!(
            missing.to_string().contains("TOKENBOT_VAULT_URL"),
            "{missing}"
        );
        for schema in ["", "Vault", "1st", "a;drop", "x\"y", &"s".repeat(64)] {
            let e = check_config(&postgres(Some(url), schema)).unwrap_err();
            assert!(e.to_string().contains("schema"), "{schema:?}: {e}");
            assert!(!e.to_string().contains("pw-Secret-1"), "{e}");
        }
        let Location::Postgres(target) = location(&postgres(Some(url), "tokenbot")) else {
            panic!("a postgres location");
        };
        assert_eq!(target.label(), "postgres db:5432/tb, schema tokenbot");
        assert!(!format!("{target:?}").contains("pw-Secret-1"));
    }
}
