//! Loading: the layers in order, with secret-safe errors.

use std::path::Path;

use figment::Figment;
use figment::providers::{Data, Format, Serialized, Toml};

use super::error::check_syntax;
use super::{Config, ConfigError, env};

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
    /// checks as [`Config::load_with_env`].
    pub fn from_toml_str(
        toml: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        check_syntax(toml, "the configuration text")?;
        Self::load_layered(Toml::string(toml), env)
    }

    /// Defaults, then `file`, then the environment; then the checks of the sections this module
    /// owns ([`Config::validate`]).
    fn load_layered(
        file: Data<Toml>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let figment = env::merge(
            Figment::from(Serialized::defaults(Config::default())).merge(file),
            &env,
        );
        let mut config: Config = figment.extract().map_err(Box::new)?;
        for broker in config.brokers.values_mut() {
            broker.split_settings();
        }
        env::apply_port(&mut config, &env)?;
        config.validate()?;
        Ok(config)
    }
}
