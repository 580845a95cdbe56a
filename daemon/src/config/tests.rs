use std::collections::BTreeMap;
use std::path::PathBuf;

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
        ("notify.telegram", "bot_token"),
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
fn a_short_env_api_key_is_refused_at_start_without_its_value() {
    for key in ["", "REPLACE_ME", "fifteen-chars-x"] {
        let err = load("", &[("TOKENBOT_API_KEY", key)])
            .map_err(chain)
            .unwrap_err();
        assert!(
            err.contains("TOKENBOT_API_KEY") && err.contains("at least 16"),
            "{err}"
        );
        assert!(key.is_empty() || !err.contains(key), "{err}");
    }
    let config = load("", &[("TOKENBOT_API_KEY", "sixteen-chars-ok")]).unwrap();
    assert!(config.auth.api_key.is_some());
}

#[test]
fn console_sessions_need_an_idle_time_and_a_maximum_no_shorter() {
    let err = load("[console]\nsession_idle_secs = 0\n", &[])
        .map_err(chain)
        .unwrap_err();
    assert!(err.contains("console.session_idle_secs"), "{err}");
    let err = load(
        "[console]\nsession_idle_secs = 600\nsession_max_secs = 599\n",
        &[],
    )
    .map_err(chain)
    .unwrap_err();
    assert!(
        err.contains("console.session_max_secs") && err.contains("session_idle_secs"),
        "{err}"
    );
    let config = load(
        "[console]\nsession_idle_secs = 600\nsession_max_secs = 600\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        (
            config.console.session_idle_secs,
            config.console.session_max_secs
        ),
        (600, 600)
    );
    let defaults = load("", &[]).unwrap().console;
    assert_eq!(
        (defaults.session_idle_secs, defaults.session_max_secs),
        (1_800, 43_200)
    );
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
