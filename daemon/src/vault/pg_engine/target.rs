//! Where a PostgreSQL vault lives, how its connections are made, and the names and lock keys
//! derived from its schema.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// How a connection is secured.
#[derive(Clone)]
pub(super) enum Tls {
    Off,
    #[cfg(feature = "postgres-tls")]
    On(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Where a PostgreSQL vault lives.
#[derive(Clone)]
pub struct PgTarget {
    /// Connection URL or key-value string; may hold a password, never shown.
    pub url: SecretString,
    /// The schema holding the vault's table (`[vault] schema`).
    pub schema: String,
    /// `[vault] failover_secs`: how soon another daemon takes over from a leader that ended.
    pub failover_secs: u64,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl PgTarget {
    /// The vault in `schema` of the database at `url`, with the default failover bound.
    pub fn new(url: SecretString, schema: &str) -> PgTarget {
        PgTarget {
            url,
            schema: schema.to_owned(),
            failover_secs: 15,
        }
    }

    /// Host, port, database and schema, for messages: never the user's password.
    pub fn label(&self) -> String {
        match self.url.expose_secret().parse::<tokio_postgres::Config>() {
            Ok(config) => {
                let host = config
                    .get_hosts()
                    .first()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(name) => name.clone(),
                        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                    })
                    .unwrap_or_else(|| "localhost".into());
                let port = config.get_ports().first().copied().unwrap_or(5432);
                let db = config.get_dbname().unwrap_or("(default database)");
                format!("postgres {host}:{port}/{db}, schema {}", self.schema)
            }
            Err(_) => format!("postgres (an unreadable URL), schema {}", self.schema),
        }
    }

    /// Refuse a schema name that is not a plain identifier, and a URL that does not parse, or
    /// whose TLS cannot be set up ([`PgTarget::prepared`]).
    pub fn check(&self) -> Result<(), String> {
        let s = &self.schema;
        let plain = (1..=63).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !plain {
            return Err(format!(
                "schema {s:?}: 1-63 of a-z, 0-9 and _, not starting with a digit"
            ));
        }
        // Through a transaction-mode pooler, the session-level advisory locks (leadership,
        // account leases) and LISTEN would each land on whichever server session is free.
        let pooled = url::Url::parse(self.url.expose_secret()).is_ok_and(|url| {
            url.query_pairs()
                .any(|(k, v)| k == "pgbouncer" && v.eq_ignore_ascii_case("true"))
        });
        if pooled {
            return Err(
                "pgbouncer=true: the vault needs sessions of its own (advisory locks, LISTEN); \
                 connect to PostgreSQL directly, or through a pooler in session mode without \
                 that parameter"
                    .into(),
            );
        }
        self.prepared().map(|_| ())
    }

    /// The connection settings, and how to secure the connection. TLS (cargo feature
    /// `postgres-tls`: rustls, the system's roots and the URL's `sslrootcert`, certificates
    /// always verified) is required for a remote host unless the URL says `sslmode=disable`:
    /// libpq's default `prefer` would fall back to the clear without a word. A local host
    /// (loopback, a Unix socket) goes without TLS unless `sslmode=require` asks for it.
    pub(super) fn prepared(&self) -> Result<(tokio_postgres::Config, Tls), String> {
        use tokio_postgres::config::{Host, SslMode};
        let (url, root_cert) = crate::pg::url::libpq_url(self.url.expose_secret());
        let mut config = (url.parse::<tokio_postgres::Config>())
            .map_err(|_| "the URL does not parse as a PostgreSQL connection string".to_owned())?;
        let local = config.get_hosts().iter().all(|h| match h {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        });
        let mode = config.get_ssl_mode();
        if mode == SslMode::Disable || (local && mode != SslMode::Require) {
            return Ok((config, Tls::Off));
        }
        #[cfg(feature = "postgres-tls")]
        {
            config.ssl_mode(SslMode::Require);
            let tls = crate::pg::tls::connector(root_cert.as_deref())?;
            Ok((config, Tls::On(tls)))
        }
        #[cfg(not(feature = "postgres-tls"))]
        {
            let _ = (&mut config, root_cert);
            Err(
                "this build has no TLS to PostgreSQL (cargo feature `postgres-tls`): use a \
                 database on this host, or add sslmode=disable to accept a connection in the \
                 clear"
                    .into(),
            )
        }
    }

    /// The timings that bound a failover, from `failover_secs` (F).
    ///
    /// - The server drops a silent daemon's session (freeing its leadership and leases) after
    ///   its keepalives: idle F/3, then 3 probes F/10 apart (8 s of 15).
    /// - A leader checks its session every F/5 and waits F/5 for the answer: it stops leading
    ///   within 2F/5 (6 s) of losing it, before the server can give leadership to another.
    /// - A follower asks for leadership every second.
    pub(super) fn timing(&self) -> Timing {
        let f = Duration::from_secs(self.failover_secs.max(3));
        Timing {
            keepalive_idle: f / 3,
            keepalive_interval: (f / 10).max(Duration::from_secs(1)),
            leader_check: f / 5,
        }
    }

    /// The advisory-lock key of this vault: the first 4 bytes of the SHA-256 of its schema
    /// name, the same in every process and build. Used as `(key, 0)` by writers and `(key, 1)`
    /// by the leader.
    pub(super) fn lock_key(&self) -> i32 {
        let digest = Sha256::digest(format!("tokenbot vault {}", self.schema).as_bytes());
        i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    /// The advisory-lock key (the one-`bigint` space, apart from the vault's two-`int` keys)
    /// of one account's logins in this vault.
    pub(super) fn lease_key(&self, account: &[u8]) -> i64 {
        let mut hash = Sha256::new();
        hash.update(format!("tokenbot lease {}\0", self.schema).as_bytes());
        hash.update(account);
        let digest = hash.finalize();
        i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    /// The `LISTEN` channel on which writers announce changes.
    pub(super) fn channel(&self) -> String {
        format!("tokenbot_vault_{:08x}", self.lock_key())
    }

    pub(super) fn table(&self) -> String {
        format!("\"{}\".records", self.schema)
    }

    /// The sequence every change to accounts, credentials or tokens advances: the epoch a
    /// follower compares when a notification may have been lost.
    pub(super) fn epoch_sequence(&self) -> String {
        format!("\"{}\".epoch", self.schema)
    }
}

/// See [`PgTarget::timing`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) keepalive_idle: Duration,
    pub(super) keepalive_interval: Duration,
    pub(super) leader_check: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_pooler_is_refused_as_it_would_break_leases_and_leadership() {
        let pooled = PgTarget::new(
            SecretString::from("postgres://u:pw@db:6432/t?pgbouncer=true&sslmode=disable"),
            "tokenbot",
        );
        let why = pooled.check().unwrap_err();
        assert!(
            why.contains("pgbouncer=true") && !why.contains("pw"),
            "{why}"
        );
        let direct = PgTarget::new(
            SecretString::from("postgres://u:pw@db:5432/t?sslmode=disable"),
            "tokenbot",
        );
        assert!(direct.check().is_ok());
    }

    #[test]
    fn the_failover_bound_sets_keepalives_and_the_leaders_check_within_it() {
        let mut target = PgTarget::new(SecretString::from("postgres://u@db/t"), "s");
        target.failover_secs = 15;
        let t = target.timing();
        let server_finds_silence = t.keepalive_idle + t.keepalive_interval * 3;
        let leader_steps_down = t.leader_check * 2;
        assert!(leader_steps_down < server_finds_silence, "{t:?}");
        assert!(server_finds_silence < Duration::from_secs(15), "{t:?}");
    }
}
