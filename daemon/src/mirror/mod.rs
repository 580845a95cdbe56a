//! The Postgres mirror: one task that delivers the vault's outbox to PostgreSQL.
//!
//! The vault writes an outbox record in the same transaction as every token change (and a
//! `revoked` record when a token is dropped). The task peeks a batch in order, writes it in one
//! PostgreSQL transaction (an upsert per record, keyed by user and broker and applied only when the
//! record's generation is newer, plus `NOTIFY <channel>` with `{"user_id","broker","generation"}`
//! for each row it changed), commits, and only then acknowledges the batch in the vault. A crash
//! between commit and acknowledgement redelivers the batch, which the generation check turns into
//! a no-op: delivery is at least once, the effect exactly once. While PostgreSQL is down or refuses,
//! records stay in the outbox (durable across restarts) and the task reconnects with exponential
//! backoff. A revoked record keeps its row with `status = 'revoked'` and no token, issue or expiry
//! time: deleting the row would forget the generation and let a late, older record bring the
//! token back.
//!
//! Nothing here logs or reports the connection URL or its password: logs and the status name the
//! target as `host:port/db`, and error messages pass through a redactor.

mod postgres;
pub mod template;
#[cfg(feature = "postgres-tls")]
mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::config::{ConfigError, PostgresMirrorConfig};
use crate::vault::Vault;
use postgres::{PgError, Session, Target};
use template::{Template, TemplateError};

/// What the mirror is doing, for `/health/detailed` and `/metrics`. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorStatus {
    /// Whether a mirror is configured.
    pub enabled: bool,
    /// Whether the mirror holds a working connection (statements prepared).
    pub connected: bool,
    /// `host:port/db` of the target (no user, no password); empty when disabled.
    pub target: String,
    /// Outbox records waiting for delivery (refreshed at least every poll interval).
    pub backlog: u64,
    /// Records delivered (committed and acknowledged) since the daemon started.
    pub delivered: u64,
    /// The latest error, until the next successful connection or delivery.
    pub last_error: Option<String>,
    /// When `last_error` happened, Unix ms.
    pub last_error_at_ms: Option<i64>,
}

impl MirrorStatus {
    /// The status when no mirror is configured.
    pub fn disabled() -> MirrorStatus {
        MirrorStatus {
            enabled: false,
            connected: false,
            target: String::new(),
            backlog: 0,
            delivered: 0,
            last_error: None,
            last_error_at_ms: None,
        }
    }
}

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

/// Query parameters Prisma puts in `DATABASE_URL` that libpq-style clients refuse.
const PRISMA_PARAMS: &[&str] = &[
    "schema",
    "connection_limit",
    "pool_timeout",
    "pgbouncer",
    "statement_cache_size",
    "socket_timeout",
    "sslaccept",
    "sslidentity",
    "sslpassword",
];

/// A `DATABASE_URL` made acceptable to tokio-postgres: Prisma-only parameters dropped, `schema=X`
/// turned into the search path Prisma would have used (`options=-c search_path=X`), and libpq's
/// `sslrootcert` taken out (returned second: the TLS set-up reads it). Other URLs and key=value
/// strings are returned as they are.
fn libpq_url(raw: &str) -> (String, Option<String>) {
    let Ok(mut url) = url::Url::parse(raw) else {
        return (raw.to_owned(), None);
    };
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return (raw.to_owned(), None);
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let dropped = |k: &str| PRISMA_PARAMS.contains(&k) || k == "sslrootcert";
    if !pairs.iter().any(|(k, _)| dropped(k)) {
        return (raw.to_owned(), None);
    }
    let root_cert = pairs
        .iter()
        .find(|(k, _)| k == "sslrootcert")
        .map(|(_, v)| v.clone());
    let schema = pairs.iter().find(|(k, _)| k == "schema").map(|(_, v)| v);
    let has_options = pairs.iter().any(|(k, _)| k == "options");
    let mut kept: Vec<(String, String)> =
        pairs.iter().filter(|(k, _)| !dropped(k)).cloned().collect();
    if let Some(schema) = schema
        && !has_options
    {
        kept.push(("options".into(), format!("-c search_path={schema}")));
    }
    // Percent-encoded by hand: libpq-style parsers do not read `+` as a space.
    let query: Vec<String> = kept
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    url.set_query((!query.is_empty()).then(|| query.join("&")).as_deref());
    (url.to_string(), root_cert)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn describe(pg: &tokio_postgres::Config) -> String {
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    format!(
        "{hosts}/{}",
        pg.get_dbname().or(pg.get_user()).unwrap_or("postgres")
    )
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

fn target(config: &PostgresMirrorConfig) -> Result<Target, MirrorConfigError> {
    let raw = config.url.expose_secret();
    let (url, root_cert) = libpq_url(raw);
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        let mut text = e.to_string();
        if let Some(source) = std::error::Error::source(&e) {
            text.push_str(&format!(": {source}"));
        }
        MirrorConfigError::Url(redact(&hide_odd_option(&text), &[raw, &url]))
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
    let tls = tls::connector(root_cert.as_deref()).map_err(MirrorConfigError::Url)?;
    #[cfg(not(feature = "postgres-tls"))]
    if root_cert.is_some() {
        return Err(MirrorConfigError::Url(
            "sslrootcert needs TLS: this build has none (cargo feature `postgres-tls`)".into(),
        ));
    }
    let (upsert, default_table) = match &config.upsert_sql {
        Some(sql) => (Template::parse(sql)?, None),
        None => (
            Template::parse(&postgres::default_upsert(&config.schema, &config.table))?,
            Some((config.schema.clone(), config.table.clone())),
        ),
    };
    Ok(Target {
        describe: describe(&pg),
        pg,
        secrets,
        upsert,
        default_table,
        notify_channel: config.notify_channel.clone(),
        #[cfg(feature = "postgres-tls")]
        tls,
    })
}

/// tokio-postgres reads what is not a `postgres://` URL as key=value pairs, and quotes a key it
/// does not know. For a mistyped URL (`postgress://u:pw@h/db?sslmode=require`) that "key" is the
/// URL up to its first `=`, password included: a quoted key that is not a word is not repeated.
fn hide_odd_option(message: &str) -> String {
    const UNKNOWN: &str = "unknown option `";
    let Some(start) = message.find(UNKNOWN) else {
        return message.to_owned();
    };
    let key = start + UNKNOWN.len();
    match message.rfind('`') {
        Some(end)
            if end >= key
                && !message[key..end]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            format!(
                "{}neither a postgres:// URL nor key=value pairs{}",
                &message[..start],
                &message[end + 1..]
            )
        }
        _ => message.to_owned(),
    }
}

/// `message` with every one of `secrets` replaced.
fn redact(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for secret in secrets {
        if !secret.is_empty() {
            out = out.replace(secret, "[REDACTED]");
        }
    }
    out
}

/// Longest a batch may take to commit before the connection is given up and opened again.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Timing of the mirror task.
#[derive(Debug, Clone, Copy)]
struct Timing {
    batch_size: usize,
    poll: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    connect_timeout: Duration,
}

/// The mirror: its status, and the handle to wake and stop its task.
pub struct Mirror {
    /// `None` when the configuration was refused (only possible when built around an unvalidated
    /// configuration): the status then carries the reason and the task does nothing.
    target: Option<Target>,
    timing: Timing,
    vault: Arc<Vault>,
    /// Written by the task only; read by anyone through [`Mirror::status`].
    status: Mutex<MirrorStatus>,
    /// Cuts the poll interval short when someone knows new records are waiting.
    wake: Notify,
    /// Set once to stop the task; the task notices it at its next await.
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// A mirror of `vault` to the PostgreSQL `config` names. Does not connect: [`Mirror::spawn`]
    /// starts the task. A configuration that [`validate`] would refuse gives a mirror that only
    /// reports why.
    pub fn new(config: &PostgresMirrorConfig, vault: Arc<Vault>) -> Mirror {
        let timing = Timing {
            batch_size: config.batch_size.max(1),
            poll: Duration::from_millis(config.poll_interval_ms.max(1)),
            backoff_initial: Duration::from_millis(config.backoff_initial_ms.max(1)),
            backoff_max: Duration::from_millis(
                config.backoff_max_ms.max(config.backoff_initial_ms),
            ),
            connect_timeout: Duration::from_secs(config.connect_timeout_secs.max(1)),
        };
        let (target, error) = match target(config) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let status = MirrorStatus {
            enabled: true,
            target: target
                .as_ref()
                .map(|t| t.describe.clone())
                .unwrap_or_default(),
            last_error_at_ms: error.as_ref().map(|_| now_ms()),
            last_error: error,
            ..MirrorStatus::disabled()
        };
        Mirror {
            target,
            timing,
            vault,
            status: Mutex::new(status),
            wake: Notify::new(),
            stop: watch::channel(false).0,
        }
    }

    /// A snapshot of the status (cheap: no I/O).
    pub fn status(&self) -> MirrorStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Tell the task new records are waiting (it also polls on its own).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ask the task to stop; it drops any uncommitted batch (redelivered at the next start).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Start the task on the current runtime; it runs until [`Mirror::stop`].
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mirror = self.clone();
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = mirror.run() => {}
            }
            mirror.update(|s| s.connected = false);
        })
    }

    fn update(&self, change: impl FnOnce(&mut MirrorStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn fail(&self, error: &str) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.last_error.as_deref() != Some(error) {
            tracing::warn!(db = %status.target, %error, "mirror: delivery held back");
        }
        status.connected = false;
        status.last_error = Some(error.to_owned());
        status.last_error_at_ms = Some(now_ms());
    }

    async fn refresh_backlog(&self) {
        let vault = self.vault.clone();
        match tokio::task::spawn_blocking(move || vault.outbox_len()).await {
            Ok(Ok(n)) => self.update(|s| s.backlog = n),
            Ok(Err(e)) => tracing::warn!(error = %e, "mirror: reading the outbox length"),
            Err(_) => {}
        }
    }

    /// Wait `delay`, keeping the backlog figure fresh meanwhile.
    async fn pause(&self, delay: Duration) {
        let until = tokio::time::Instant::now() + delay;
        loop {
            self.refresh_backlog().await;
            let now = tokio::time::Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(self.timing.poll)).await;
        }
    }

    async fn run(&self) {
        let Some(target) = &self.target else {
            return std::future::pending().await;
        };
        let mut backoff = self.timing.backoff_initial;
        loop {
            self.refresh_backlog().await;
            let mut session = match Session::open(target, self.timing.connect_timeout).await {
                Ok(session) => session,
                Err(PgError(e)) => {
                    self.fail(&e);
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(self.timing.backoff_max);
                    continue;
                }
            };
            tracing::info!(db = %target.describe, "mirror: connected");
            self.update(|s| {
                s.connected = true;
                s.last_error = None;
                s.last_error_at_ms = None;
            });
            let (end, delivered_some) = self.deliver_until_error(target, &mut session).await;
            drop(session);
            match end {
                DeliveryEnd::Postgres(e) => self.fail(&e),
                DeliveryEnd::Vault(e) => {
                    tracing::error!(error = %e, "mirror: vault error");
                    self.update(|s| {
                        s.connected = false;
                        s.last_error = Some(format!("vault: {e}"));
                        s.last_error_at_ms = Some(now_ms());
                    });
                }
            }
            // A session that delivered something was healthy: start the backoff over. One that
            // fails before delivering anything (a record PostgreSQL keeps refusing) keeps growing it.
            if delivered_some {
                backoff = self.timing.backoff_initial;
            }
            self.pause(backoff).await;
            backoff = (backoff * 2).min(self.timing.backoff_max);
        }
    }

    /// Deliver batches until something fails; also says whether anything was delivered. Any
    /// failure drops the connection: the next session starts clean (table re-checked, statements
    /// re-prepared).
    async fn deliver_until_error(
        &self,
        target: &Target,
        session: &mut Session,
    ) -> (DeliveryEnd, bool) {
        let mut delivered_some = false;
        let end = loop {
            let vault = self.vault.clone();
            let limit = self.timing.batch_size;
            let batch = match tokio::task::spawn_blocking(move || vault.outbox_peek(limit)).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => break DeliveryEnd::Vault(e.to_string()),
                Err(e) => break DeliveryEnd::Vault(e.to_string()),
            };
            let Some(last) = batch.last().map(|r| r.seq) else {
                self.update(|s| s.backlog = 0);
                if session.is_closed() {
                    break DeliveryEnd::Postgres(format!(
                        "connection to {} closed",
                        target.describe
                    ));
                }
                let _ = tokio::time::timeout(self.timing.poll, self.wake.notified()).await;
                continue;
            };
            // A batch stuck on a lock or a half-dead connection must not stall the mirror forever.
            match tokio::time::timeout(DELIVERY_TIMEOUT, session.deliver(target, &batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(PgError(e))) => break DeliveryEnd::Postgres(e),
                Err(_) => {
                    break DeliveryEnd::Postgres(format!(
                        "delivering {} records to {}: no answer within {} s",
                        batch.len(),
                        target.describe,
                        DELIVERY_TIMEOUT.as_secs()
                    ));
                }
            }
            let vault = self.vault.clone();
            match tokio::task::spawn_blocking(move || vault.outbox_ack(last)).await {
                Ok(Ok(_)) => {}
                // Delivered but still in the outbox: redelivered later, a no-op by generation.
                Ok(Err(e)) => break DeliveryEnd::Vault(e.to_string()),
                Err(e) => break DeliveryEnd::Vault(e.to_string()),
            }
            delivered_some = true;
            self.update(|s| {
                s.delivered += batch.len() as u64;
                s.last_error = None;
                s.last_error_at_ms = None;
            });
            self.refresh_backlog().await;
        };
        (end, delivered_some)
    }
}

enum DeliveryEnd {
    Postgres(String),
    Vault(String),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prisma_urls_lose_prisma_parameters_and_keep_the_schema_as_search_path() {
        let (url, root) =
            libpq_url("postgresql://u:pw@db:5432/app?schema=trading&connection_limit=5");
        assert_eq!(root, None);
        let pg: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(pg.get_options(), Some("-c search_path=trading"));
        assert_eq!(pg.get_dbname(), Some("app"));
        assert_eq!(describe(&pg), "db:5432/app");
        let plain = "postgres://u@h/db?sslmode=disable";
        assert_eq!(libpq_url(plain), (plain.to_owned(), None));
        let (url, root) = libpq_url("postgres://u@h/db?sslmode=require&sslrootcert=/etc/ca.pem");
        assert_eq!(
            (url.as_str(), root.as_deref()),
            ("postgres://u@h/db?sslmode=require", Some("/etc/ca.pem"))
        );
    }

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
