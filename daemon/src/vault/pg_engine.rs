//! The PostgreSQL engine (`[vault] engine = "postgres"`): the vault's tables as rows of one table,
//! `<schema>.records (tbl smallint, k bytea, v bytea)`, holding exactly the bytes redb would: the
//! database sees ciphertext, ids and times, never a secret or a token.
//!
//! - Reads run in a `REPEATABLE READ, READ ONLY` transaction: one snapshot, as redb's.
//! - Writes run in `READ COMMITTED` after `pg_advisory_xact_lock(<vault>)`: one writer per vault
//!   across every process, as redb's file lock gives one per file. The lock is taken by the
//!   transaction's first statement, so a snapshot level would have been fixed before the wait;
//!   with every writer serialised, each statement reading the latest commit is what the vault's
//!   read-modify-write steps need.
//! - A writable open also holds `pg_advisory_lock(<vault>, 1)` on a connection of its own for as
//!   long as the store lives: one daemon per vault, as with a file, until leadership (several
//!   daemons, one refresher) replaces it.
//! - The store's methods are synchronous, like the others'. Its connections live on a runtime of
//!   its own (one thread); a call hands its statement to that runtime and waits for the answer,
//!   so it may be made from any thread, a tokio worker included.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, NoTls};

use super::error::VaultError;
use super::store::{Entries, Mode, ReadTx, Store, Table, WriteTx, prefix_end};

/// How a connection is secured.
#[derive(Clone)]
enum Tls {
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
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

impl PgTarget {
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
        self.prepared().map(|_| ())
    }

    /// The connection settings, and how to secure the connection. TLS (cargo feature
    /// `postgres-tls`: rustls, the system's roots and the URL's `sslrootcert`, certificates
    /// always verified) is required for a remote host unless the URL says `sslmode=disable`:
    /// libpq's default `prefer` would fall back to the clear without a word. A local host
    /// (loopback, a Unix socket) goes without TLS unless `sslmode=require` asks for it.
    fn prepared(&self) -> Result<(tokio_postgres::Config, Tls), String> {
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

    /// The advisory-lock key of this vault: the first 4 bytes of the SHA-256 of its schema
    /// name, the same in every process and build. Used as `(key, 0)` by writers and `(key, 1)`
    /// by the daemon's claim.
    fn lock_key(&self) -> i32 {
        let digest = Sha256::digest(format!("tokenbot vault {}", self.schema).as_bytes());
        i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    fn table(&self) -> String {
        format!("\"{}\".records", self.schema)
    }
}

fn pg_err(e: tokio_postgres::Error) -> VaultError {
    // The driver's text names the server's complaint, never the URL or its password.
    if e.is_closed() || e.as_db_error().is_none() {
        VaultError::Unavailable(format!("the vault's database: {e}"))
    } else {
        VaultError::Storage(format!("the vault's database: {e}"))
    }
}

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// What the server allows one statement (a lock wait included), and a transaction left idle:
/// a stalled daemon cannot hold the vault's write lock for longer.
const SERVER_LIMITS: &str = "-c statement_timeout=30000 -c lock_timeout=30000 \
                             -c idle_in_transaction_session_timeout=60000";
/// How long a call waits for its answer before giving its connection up.
const CALL_TIMEOUT: Duration = Duration::from_secs(45);
/// Idle connections kept for the next transaction.
const IDLE_MAX: usize = 8;
/// Transactions open at once; more wait for one to end.
const ACTIVE_MAX: usize = 16;
/// How long a transaction waits for a free connection.
const SLOT_WAIT: Duration = Duration::from_secs(30);

/// An open PostgreSQL vault.
pub(crate) struct PgStore {
    /// The runtime the connections live on; shut down (without waiting) with the store.
    runtime: Option<tokio::runtime::Runtime>,
    target: PgTarget,
    /// Every connection's settings and security, worked out once.
    config: tokio_postgres::Config,
    tls: Tls,
    idle: Mutex<Vec<Arc<Client>>>,
    /// Transactions open now, at most [`ACTIVE_MAX`].
    active: Mutex<usize>,
    freed: Condvar,
    /// Whether this store writes: it then holds the daemon's claim on the vault.
    writer: bool,
    /// The session holding the claim (`pg_advisory_lock(vault, 1)`).
    claim: Mutex<Option<Arc<Client>>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Give the claim back now, not when the server notices the connection gone: a daemon
        // restarting in place opens the vault again at once.
        if let Some(claim) = self.claim.lock().take().filter(|c| !c.is_closed()) {
            let key = self.target.lock_key();
            let _ = self.run(async move {
                claim
                    .execute("SELECT pg_advisory_unlock($1, 1)", &[&key])
                    .await
            });
        }
        self.idle.lock().clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgStore {
    /// Whether the database holds a vault (its key-derivation record) under `target`.
    pub(crate) fn exists(target: &PgTarget) -> Result<bool, VaultError> {
        let store = PgStore::connect(target, false)?;
        let table = target.table();
        let schema = target.schema.clone();
        let client = store.connection()?;
        store.run(async move {
            let found = client
                .query_opt(
                    "SELECT to_regclass($1)::text",
                    &[&format!("\"{schema}\".records")],
                )
                .await
                .map_err(pg_err)?
                .and_then(|row| row.get::<_, Option<String>>(0));
            if found.is_none() {
                return Ok(false);
            }
            let kdf = client
                .query_opt(
                    &format!("SELECT 1 FROM {table} WHERE tbl = 1 AND k = 'kdf'::bytea"),
                    &[],
                )
                .await
                .map_err(pg_err)?;
            Ok(kdf.is_some())
        })?
    }

    /// Open the vault under `target` (`Create`: make its schema and table; the caller has
    /// checked no vault is there, and the first write checks again under the write lock).
    pub(crate) fn open(
        target: &PgTarget,
        mode: Mode,
    ) -> Result<Option<Box<dyn Store>>, VaultError> {
        let store = PgStore::connect(target, mode != Mode::ReadOnly)?;
        if mode == Mode::Create {
            let client = store.connection()?;
            let (schema, table) = (target.schema.clone(), target.table());
            store.run(async move {
                client
                    .batch_execute(&format!(
                        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                         CREATE TABLE IF NOT EXISTS {table} (
                             tbl smallint NOT NULL, k bytea NOT NULL, v bytea NOT NULL,
                             PRIMARY KEY (tbl, k))"
                    ))
                    .await
                    .map_err(pg_err)
            })??;
        }
        if store.writer && !store.take_claim()? {
            return Err(VaultError::Locked);
        }
        Ok(Some(Box::new(store)))
    }

    fn connect(target: &PgTarget, writer: bool) -> Result<PgStore, VaultError> {
        target.check().map_err(VaultError::Storage)?;
        let (mut config, tls) = target.prepared().map_err(VaultError::Storage)?;
        let options = match config.get_options() {
            Some(theirs) => format!("{theirs} {SERVER_LIMITS}"),
            None => SERVER_LIMITS.to_owned(),
        };
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .options(&options);
        if config.get_application_name().is_none() {
            // What an operator's `pg_stat_activity` shows for these sessions.
            config.application_name("tokenbot vault");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vault-postgres")
            .enable_all()
            .build()
            .map_err(|e| {
                VaultError::Storage(format!("no runtime for the vault's database: {e}"))
            })?;
        Ok(PgStore {
            runtime: Some(runtime),
            target: target.clone(),
            config,
            tls,
            idle: Mutex::new(Vec::new()),
            active: Mutex::new(0),
            freed: Condvar::new(),
            writer,
            claim: Mutex::new(None),
        })
    }

    /// Take the claim on a connection of its own; false when another daemon holds it.
    fn take_claim(&self) -> Result<bool, VaultError> {
        let client = self.connection()?;
        let (c, key) = (client.clone(), self.target.lock_key());
        let held = self.run(async move {
            let row = c
                .query_one("SELECT pg_try_advisory_lock($1, 1)", &[&key])
                .await
                .map_err(pg_err)?;
            Ok::<bool, VaultError>(row.get(0))
        })??;
        if held {
            *self.claim.lock() = Some(client);
        }
        Ok(held)
    }

    /// Run `fut` on the store's runtime and wait for it (at most [`CALL_TIMEOUT`]), from any
    /// thread.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, VaultError> {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the store");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(tokio::time::timeout(CALL_TIMEOUT, fut).await);
        });
        match rx.recv() {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(_)) => Err(VaultError::Unavailable(format!(
                "no answer from the vault's database within {} s",
                CALL_TIMEOUT.as_secs()
            ))),
            Err(_) => Err(VaultError::Unavailable(
                "the vault's database task ended".into(),
            )),
        }
    }

    /// An idle connection, or a new one: keepalives on, so a dead peer is noticed in about
    /// 25 s rather than the system's two hours, and the server's limits set.
    fn connection(&self) -> Result<Arc<Client>, VaultError> {
        if let Some(client) = self.idle.lock().pop().filter(|c| !c.is_closed()) {
            return Ok(client);
        }
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let label = self.target.label();
        self.run(async move {
            let unreachable =
                |e| VaultError::Unavailable(format!("cannot connect to the vault's {label}: {e}"));
            let ended = |e: tokio_postgres::Error| {
                tracing::warn!(error = %e, "vault: a database connection ended");
            };
            let client = match tls {
                Tls::Off => {
                    let (client, connection) = config.connect(NoTls).await.map_err(unreachable)?;
                    tokio::spawn(async move { connection.await.unwrap_or_else(ended) });
                    client
                }
                #[cfg(feature = "postgres-tls")]
                Tls::On(tls) => {
                    let (client, connection) = config.connect(tls).await.map_err(unreachable)?;
                    tokio::spawn(async move { connection.await.unwrap_or_else(ended) });
                    client
                }
            };
            Ok(Arc::new(client))
        })?
    }

    fn give_back(&self, client: Arc<Client>) {
        let mut idle = self.idle.lock();
        if !client.is_closed() && idle.len() < IDLE_MAX {
            idle.push(client);
        }
    }

    /// A transaction begun with `begin` on a connection of its own, once fewer than
    /// [`ACTIVE_MAX`] are open.
    fn begin(&self, begin: String) -> Result<PgTx<'_>, VaultError> {
        {
            let mut active = self.active.lock();
            while *active >= ACTIVE_MAX {
                if self.freed.wait_for(&mut active, SLOT_WAIT).timed_out() {
                    return Err(VaultError::Unavailable(format!(
                        "all {ACTIVE_MAX} connections to the vault's database stayed busy for {} s",
                        SLOT_WAIT.as_secs()
                    )));
                }
            }
            *active += 1;
        }
        let mut tx = PgTx {
            store: self,
            client: None,
            broken: std::cell::Cell::new(false),
            table: self.target.table(),
        };
        let client = self.connection()?;
        tx.client = Some(client.clone());
        tx.step(self.run(async move { client.batch_execute(&begin).await }))?;
        Ok(tx)
    }

    /// The claim is still held, or was taken again: a writer may go on. When its connection
    /// died (a database restart, a terminated session) another daemon may hold it now, and
    /// then this one must stop writing and logging in.
    fn claim_held(&self) -> Result<(), VaultError> {
        if !self.writer {
            return Ok(());
        }
        if self.claim.lock().as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        if self.take_claim()? {
            tracing::warn!("vault: the claim's connection was lost; claimed again");
            return Ok(());
        }
        Err(VaultError::Unavailable(
            "this daemon's claim on the vault was lost and another daemon holds it now; this \
             one neither writes nor logs in"
                .into(),
        ))
    }
}

impl Store for PgStore {
    fn check_writer(&self) -> Result<(), VaultError> {
        self.claim_held()
    }

    fn read(&self) -> Result<Box<dyn ReadTx + '_>, VaultError> {
        Ok(Box::new(self.begin(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".into(),
        )?))
    }

    fn write(&self) -> Result<Box<dyn WriteTx + '_>, VaultError> {
        self.claim_held()?;
        let tx = self.begin("BEGIN ISOLATION LEVEL READ COMMITTED".into())?;
        let key = self.target.lock_key();
        tx.exec(move |c| async move {
            c.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&key])
                .await
                .map(|_| ())
        })?;
        Ok(Box::new(tx))
    }
}

/// A read or write transaction on one connection. Dropped without `commit`, it rolls back; a
/// connection that failed or timed out mid-transaction is closed instead of reused.
struct PgTx<'a> {
    store: &'a PgStore,
    /// `None` once committed or given up.
    client: Option<Arc<Client>>,
    /// A call on the connection failed in a way that leaves its state unknown.
    broken: std::cell::Cell<bool>,
    table: String,
}

/// A table's number in the `tbl` column.
fn tbl(table: Table) -> i16 {
    i16::from(table.tag())
}

impl PgTx<'_> {
    /// Run one statement-making closure on the transaction's connection.
    fn exec<T, F, Fut>(&self, f: F) -> Result<T, VaultError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        let client = self
            .client
            .clone()
            .ok_or_else(|| VaultError::Storage("the transaction has ended".into()))?;
        self.step(self.store.run(f(client)))
    }

    /// A call's answer; one that leaves the connection's state unknown breaks the transaction.
    fn step<T>(
        &self,
        answer: Result<Result<T, tokio_postgres::Error>, VaultError>,
    ) -> Result<T, VaultError> {
        let result = answer.and_then(|r| r.map_err(pg_err));
        if let Err(VaultError::Unavailable(_)) = &result {
            self.broken.set(true);
        }
        result
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !self.broken.get()
        {
            let c = client.clone();
            let rolled_back = self
                .store
                .run(async move { c.batch_execute("ROLLBACK").await })
                .is_ok_and(|r| r.is_ok());
            if rolled_back {
                self.store.give_back(client);
            }
        }
        *self.store.active.lock() -= 1;
        self.store.freed.notify_one();
    }
}

impl ReadTx for PgTx<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        let sql = format!("SELECT v FROM {} WHERE tbl = $1 AND k = $2", self.table);
        let key = key.to_vec();
        self.exec(move |c| async move {
            let row = c.query_opt(&sql, &[&tbl(table), &key]).await?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Entries, VaultError> {
        let sql = format!(
            "SELECT k, v FROM {} WHERE tbl = $1 AND k >= $2 AND ($3::bytea IS NULL OR k < $3) \
             ORDER BY k {} LIMIT $4",
            self.table,
            if rev { "DESC" } else { "ASC" }
        );
        let (start, end) = (prefix.to_vec(), prefix_end(prefix));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.exec(move |c| async move {
            let rows = c.query(&sql, &[&tbl(table), &start, &end, &limit]).await?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
                .collect())
        })
    }

    fn len(&self, table: Table) -> Result<u64, VaultError> {
        let sql = format!("SELECT count(*) FROM {} WHERE tbl = $1", self.table);
        self.exec(move |c| async move {
            let row = c.query_one(&sql, &[&tbl(table)]).await?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
    }
}

impl WriteTx for PgTx<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        let sql = format!(
            "INSERT INTO {} (tbl, k, v) VALUES ($1, $2, $3) \
             ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v",
            self.table
        );
        let (key, value) = (key.to_vec(), value.to_vec());
        self.exec(move |c| async move {
            c.execute(&sql, &[&tbl(table), &key, &value])
                .await
                .map(|_| ())
        })
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, VaultError> {
        let sql = format!("DELETE FROM {} WHERE tbl = $1 AND k = $2", self.table);
        let key = key.to_vec();
        self.exec(move |c| async move { Ok(c.execute(&sql, &[&tbl(table), &key]).await? > 0) })
    }

    fn commit(mut self: Box<Self>) -> Result<(), VaultError> {
        let client = self
            .client
            .take()
            .ok_or_else(|| VaultError::Storage("the transaction has ended".into()))?;
        let c = client.clone();
        self.step(
            self.store
                .run(async move { c.batch_execute("COMMIT").await }),
        )?;
        self.store.give_back(client);
        Ok(())
    }
}
