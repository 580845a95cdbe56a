//! Configuration parsing, `tokenbot::config::Config::from_toml_str`: the figment layering
//! (defaults, the file's text, environment) that `Config::load_with_env` runs on `tokenbot.toml`,
//! then every check, `tokenbot::check_config`.
//!
//! Input: UTF-8 text, the file; a first line `PORT=<value>` is taken out and set as `PORT` in the
//! environment instead. Invariants, beyond "never panics":
//! - a `PORT` that is not a port is refused; an accepted one is the listen port;
//! - an accepted configuration written out as TOML (its secrets given back through the
//!   environment, as they are never serialized) loads again, to the same configuration;
//! - no error repeats a secret: secrets are planted (the Node env names for the vault key,
//!   passphrase, JWT secret and API key; in a text that parses, every `auth.api_keys` value and
//!   the password of `mirror.postgres.url`) and looked for in the message. Not covered: a TOML
//!   syntax error quotes the line at fault, so a secret on that line of the file is shown.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;
use tokenbot::config::{Config, ConfigError};

/// In every planted secret; inputs already holding it are not checked for leaks.
const MARK: &str = "Cn4ryS3cret";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (port, toml) = match text.strip_prefix("PORT=") {
        Some(rest) => match rest.split_once('\n') {
            Some((port, toml)) => (Some(port), toml),
            None => (Some(rest), ""),
        },
        None => (None, text),
    };
    let mut env = BTreeMap::new();
    if let Some(port) = port {
        env.insert("PORT", port.to_owned());
    }
    let result = load(toml, &env);
    if let Some(port) = port {
        match (&result, port.parse::<u16>()) {
            (Ok(config), Ok(port)) => assert_eq!(config.server.listen.port(), port),
            (Ok(_), Err(_)) => panic!("PORT={port:?} accepted"),
            (Err(_), _) => {}
        }
    }
    if let Ok(config) = &result {
        reloads(config);
    }
    if !text.contains(MARK) {
        secrets_never_echoed(toml, env);
    }
});

/// The configuration as `tokenbot` loads and checks it.
fn load(toml: &str, env: &BTreeMap<&str, String>) -> Result<Config, ConfigError> {
    let config = Config::from_toml_str(toml, |name| env.get(name).cloned())?;
    tokenbot::check_config(&config)?;
    Ok(config)
}

/// `config` as TOML, with its secrets in the environment, loads to the same configuration.
fn reloads(config: &Config) {
    let written = toml::to_string(config).expect("an accepted configuration serializes");
    let mut env = BTreeMap::new();
    let secrets = [
        ("ENCRYPTION_KEY", &config.vault.encryption_key),
        ("TOKENBOT_PASSPHRASE", &config.vault.passphrase),
        ("JWT_SECRET", &config.auth.jwt_secret),
        ("TOKENBOT_API_KEY", &config.auth.api_key),
    ];
    for (name, secret) in secrets {
        if let Some(secret) = secret {
            env.insert(name, secret.expose_secret().to_owned());
        }
    }
    if let Some(postgres) = &config.mirror.postgres {
        env.insert("DATABASE_URL", postgres.url.expose_secret().to_owned());
    }
    let again = load(&written, &env)
        .unwrap_or_else(|e| panic!("written configuration refused: {e}\n{written}"));
    assert_eq!(
        toml::to_string(&again).unwrap(),
        written,
        "changed on reload"
    );
    let expose = |c: &Config| {
        (
            [
                &c.vault.encryption_key,
                &c.vault.passphrase,
                &c.auth.jwt_secret,
                &c.auth.api_key,
            ]
            .map(|s| s.as_ref().map(|s| s.expose_secret().to_owned())),
            c.mirror
                .postgres
                .as_ref()
                .map(|p| p.url.expose_secret().to_owned()),
        )
    };
    assert!(
        expose(&again) == expose(config),
        "secrets changed on reload"
    );
}

/// Load `toml` with secrets planted; the error, if any, holds none of them.
fn secrets_never_echoed(toml: &str, mut env: BTreeMap<&'static str, String>) {
    for name in [
        "ENCRYPTION_KEY",
        "TOKENBOT_PASSPHRASE",
        "JWT_SECRET",
        "TOKENBOT_API_KEY",
    ] {
        // Long enough for `auth.jwt_secret` (32 bytes), so the checks after it run too.
        env.insert(name, format!("{MARK}-{name}-0123456789abcdef"));
    }
    // Planting in the text needs it parsed (and written again); a text that does not parse is
    // loaded as it is, with the secrets in the environment only.
    let planted = match toml.parse::<toml::Table>() {
        Ok(mut doc) => {
            plant(&mut doc);
            toml::to_string(&doc).unwrap()
        }
        Err(_) => toml.to_owned(),
    };
    if let Err(e) = load(&planted, &env) {
        let message = e.to_string();
        assert!(
            !message.contains(MARK),
            "the error repeats a secret: {message}\n{planted}"
        );
    }
}

/// Every `auth.api_keys` value, and the password of a `mirror.postgres.url` that has a host.
fn plant(doc: &mut toml::Table) {
    if let Some(toml::Value::Table(auth)) = doc.get_mut("auth")
        && let Some(toml::Value::Table(keys)) = auth.get_mut("api_keys")
    {
        for (name, value) in keys.iter_mut() {
            if value.is_str() {
                *value = format!("{MARK}-api-key-{name}").into();
            }
        }
    }
    if let Some(toml::Value::Table(mirror)) = doc.get_mut("mirror")
        && let Some(toml::Value::Table(postgres)) = mirror.get_mut("postgres")
        && let Some(toml::Value::String(raw)) = postgres.get_mut("url")
        && let Ok(mut url) = url::Url::parse(raw)
        && url.set_password(Some(&format!("{MARK}-db"))).is_ok()
    {
        *raw = url.to_string();
    }
}
