//! From `[mirror.postgres]` to a [`Target`]: the URL, TLS and the upsert template, checked once;
//! and the check of the section at start.

use secrecy::{ExposeSecret, SecretString};

use super::postgres::{self, Target};
use super::template::{Template, TemplateError};
use crate::config::{ConfigError, PostgresMirrorConfig};
use crate::pg::url::{hide_odd_option, libpq_url, target_text};
use crate::redact::redact;

/// Why a `[mirror.postgres]` configuration is refused; each names the key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorConfigError {
    /// The URL does not parse (the message never repeats the URL).
    #[error("mirror.postgres.url: {0}")]
    Url(String),
    /// The template is refused.
    #[error("mirror.postgres.upsert_sql: {0}")]
    Template(#[from] TemplateError),
}

impl MirrorConfigError {
    /// The dotted configuration key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            MirrorConfigError::Url(_) => "mirror.postgres.url",
            MirrorConfigError::Template(_) => "mirror.postgres.upsert_sql",
        }
    }

    /// Why, without the key.
    pub fn reason(&self) -> String {
        match self {
            MirrorConfigError::Url(reason) => reason.clone(),
            MirrorConfigError::Template(e) => e.to_string(),
        }
    }
}

/// Check a `[mirror.postgres]` section without connecting: the URL parses and the template (if
/// any) uses only known parameters.
pub fn validate(config: &PostgresMirrorConfig) -> Result<(), MirrorConfigError> {
    target(config).map(|_| ())
}

/// Refuse a `[mirror.postgres]` section that cannot work: a zero size or interval, a backoff
/// that starts above its maximum, an empty default table name, a URL that does not parse or a
/// template with unknown parameters ([`validate`]). Checked at start.
pub fn check_config(config: &PostgresMirrorConfig) -> Result<(), ConfigError> {
    let positive = [
        ("batch_size", config.batch_size as u64),
        ("poll_interval_ms", config.poll_interval_ms),
        ("backoff_initial_ms", config.backoff_initial_ms),
        ("connect_timeout_secs", config.connect_timeout_secs),
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
    if config.backoff_initial_ms > config.backoff_max_ms {
        return Err(ConfigError::invalid(
            "mirror.postgres.backoff_initial_ms",
            config.backoff_initial_ms.to_string(),
            "must not exceed mirror.postgres.backoff_max_ms",
        ));
    }
    if config.upsert_sql.is_none() {
        for (key, value) in [("schema", &config.schema), ("table", &config.table)] {
            if value.is_empty() {
                return Err(ConfigError::invalid(
                    format!("mirror.postgres.{key}"),
                    "",
                    "must not be empty",
                ));
            }
        }
    }
    validate(config).map_err(|e| {
        let value = match e {
            MirrorConfigError::Url(_) => "(hidden)".to_owned(),
            MirrorConfigError::Template(_) => config.upsert_sql.clone().unwrap_or_default(),
        };
        ConfigError::invalid(e.key(), value, e.reason())
    })
}

pub(super) fn target(config: &PostgresMirrorConfig) -> Result<Target, MirrorConfigError> {
    let raw = config.url.expose_secret();
    let (url, root_cert) = libpq_url(raw);
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        let mut text = e.to_string();
        if let Some(source) = std::error::Error::source(&e) {
            text.push_str(&format!(": {source}"));
        }
        MirrorConfigError::Url(redact(&hide_odd_option(&text), [raw, url.as_str()]))
    })?;
    if pg.get_application_name().is_none() {
        pg.application_name("tokenbot");
    }
    // TLS only when the URL asks for it. Left to itself, `prefer` would try TLS with every server
    // that offers it, and, as certificates are always verified here (libpq's `prefer` does not),
    // refuse every self-signed one: enabling the feature must not break a URL that worked.
    #[cfg(feature = "postgres-tls")]
    if !url.contains("sslmode=") {
        pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    // Without TLS, `prefer` is plain TCP that looks as if it asked for encryption. (Absent,
    // tokio-postgres reads `prefer` too, but then nobody asked.)
    #[cfg(not(feature = "postgres-tls"))]
    if url.contains("sslmode=")
        && matches!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer)
    {
        return Err(MirrorConfigError::Url(
            "sslmode=prefer: this build has no TLS (cargo feature `postgres-tls`) and would \
             connect in plain TCP; use sslmode=disable, or a build with TLS and sslmode=require"
                .into(),
        ));
    }
    let mut secrets = vec![
        SecretString::from(raw.to_owned()),
        SecretString::from(url.clone()),
    ];
    if let Some(password) = pg.get_password() {
        secrets.push(SecretString::from(
            String::from_utf8_lossy(password).into_owned(),
        ));
    }
    // The password as the URL spells it (percent-encoded) too.
    if let Some(password) = url::Url::parse(raw)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    {
        secrets.push(SecretString::from(password));
    }
    #[cfg(feature = "postgres-tls")]
    let tls = crate::pg::tls::connector(root_cert.as_deref()).map_err(MirrorConfigError::Url)?;
    #[cfg(not(feature = "postgres-tls"))]
    if root_cert.is_some() {
        return Err(MirrorConfigError::Url(
            "sslrootcert needs TLS: this build has none (cargo feature `postgres-tls`)".into(),
        ));
    }
    let (upsert, default_table) = match &config.upsert_sql {
        Some(sql) => (Template::parse(sql)?, None),
        None => (
            Template::parse(&postgres::default_upsert(
                &config.schema,
                &config.table,
                true,
            ))?,
            Some((config.schema.clone(), config.table.clone())),
        ),
    };
    Ok(Target {
        label: target_text(&pg),
        pg,
        secrets,
        upsert,
        default_table,
        notify_channel: config.notify_channel.clone(),
        #[cfg(feature = "postgres-tls")]
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_prefer_is_refused_at_start_in_a_build_without_tls() {
        let prefer = PostgresMirrorConfig::new("postgres://u:hunter2@h/db?sslmode=prefer".into());
        if cfg!(feature = "postgres-tls") {
            validate(&prefer).unwrap();
        } else {
            let err = validate(&prefer).unwrap_err().to_string();
            assert!(
                err.starts_with("mirror.postgres.url")
                    && err.contains("postgres-tls")
                    && !err.contains("hunter2"),
                "{err}"
            );
            let err = validate(&PostgresMirrorConfig::new(
                "host=h user=u password=hunter2 sslmode=prefer".into(),
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("sslmode=prefer") && !err.contains("hunter2"),
                "{err}"
            );
        }
        for url in ["postgres://u@h/db", "postgres://u@h/db?sslmode=disable"] {
            validate(&PostgresMirrorConfig::new(url.into())).unwrap();
        }
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let config = PostgresMirrorConfig::new("postgres://u:hunter2@h:notaport/db".into());
        let err = validate(&config).unwrap_err().to_string();
        assert!(err.starts_with("mirror.postgres.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
