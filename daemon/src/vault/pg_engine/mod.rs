//! The PostgreSQL engine (`[vault] engine = "postgres"`): the vault's tables as rows of one table,
//! `<schema>.records (tbl smallint, k bytea, v bytea)`, holding exactly the bytes redb would: the
//! database sees ciphertext, ids and times, never a secret or a token.
//!
//! - Reads run in a `REPEATABLE READ, READ ONLY` transaction: one snapshot, as redb's.
//! - Writes run in `READ COMMITTED` after `pg_advisory_xact_lock(<vault>, 0)`: one writer per
//!   vault across every process, as redb's file lock gives one per file. The lock is taken by the
//!   transaction's first statement, so a snapshot level would have been fixed before the wait;
//!   with every writer serialised, each statement reading the latest commit is what the vault's
//!   read-modify-write steps need.
//! - Several daemons may open one vault (`shared`): leadership, account leases and change
//!   notifications are in `shared.rs`.
//! - The store's methods are synchronous, like the others'. Its connections live on a runtime of
//!   its own (one thread); a call hands its statement to that runtime and waits for the answer,
//!   so it may be made from any thread, a tokio worker included.

mod shared;
mod target;
mod tx;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio_postgres::{Client, NoTls};

use super::error::VaultError;
use super::store::{Lease, Mode, OnChange, ReadTx, Store, WriteTx};
pub use target::PgTarget;
use target::Tls;
use tx::PgTx;

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
    /// Whether this store writes (a daemon, or the CLI's writing commands); read-only opens
    /// neither lead nor listen.
    writer: bool,
    /// This process's name in change notifications, to skip its own.
    node: String,
    /// The session holding leadership (`pg_advisory_lock(vault, 1)`), while this process leads.
    leader: Mutex<Option<Arc<Client>>>,
    /// The session holding this process's account leases.
    leases: Mutex<Option<Arc<Client>>>,
    /// Set by the change listener while it cannot reach the database: transactions then fail at
    /// once instead of waiting for a connection each.
    down: Arc<AtomicBool>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Give leadership back now, not when the server notices the connection gone: another
        // daemon (or this one, restarting) takes over at once.
        if let Some(leader) = self.leader.lock().take().filter(|c| !c.is_closed()) {
            let key = self.target.lock_key();
            let _ = self.run_for(Duration::from_secs(2), async move {
                leader
                    .execute("SELECT pg_advisory_unlock($1, 1)", &[&key])
                    .await
            });
        }
        self.idle.lock().clear();
        self.leases.lock().take();
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
    /// checked no vault is there, and the first write checks again under the write lock). A
    /// writable open also makes the epoch sequence of vaults created before it existed.
    pub(crate) fn open(
        target: &PgTarget,
        mode: Mode,
    ) -> Result<Option<Box<dyn Store>>, VaultError> {
        let store = PgStore::connect(target, mode != Mode::ReadOnly)?;
        if mode != Mode::ReadOnly {
            let client = store.connection()?;
            let (schema, table, epoch) = (
                target.schema.clone(),
                target.table(),
                target.epoch_sequence(),
            );
            let create = mode == Mode::Create;
            let key = target.lock_key();
            let c = client.clone();
            store
                .run(async move {
                    let client = c;
                    if create {
                        client
                            .batch_execute(&format!(
                                "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
                             CREATE TABLE IF NOT EXISTS {table} (
                                 tbl smallint NOT NULL, k bytea NOT NULL, v bytea NOT NULL,
                                 PRIMARY KEY (tbl, k))"
                            ))
                            .await?;
                    }
                    // Under the write lock: daemons starting together would race on the catalog.
                    client.batch_execute("BEGIN").await?;
                    client
                        .execute("SELECT pg_advisory_xact_lock($1, 0)", &[&key])
                        .await?;
                    client
                        .batch_execute(&format!("CREATE SEQUENCE IF NOT EXISTS {epoch}; COMMIT"))
                        .await
                })?
                .map_err(pg_err)?;
            store.give_back(client);
        }
        Ok(Some(Box::new(store)))
    }

    fn connect(target: &PgTarget, writer: bool) -> Result<PgStore, VaultError> {
        target.check().map_err(VaultError::Storage)?;
        let (mut config, tls) = target.prepared().map_err(VaultError::Storage)?;
        let timing = target.timing();
        // The server's keepalives find a daemon that went silent (a dead host, a cut link), so
        // its leadership and leases pass on within the failover bound.
        let limits = format!(
            "{SERVER_LIMITS} -c tcp_keepalives_idle={} -c tcp_keepalives_interval={} \
             -c tcp_keepalives_count=3",
            timing.keepalive_idle.as_secs().max(1),
            timing.keepalive_interval.as_secs().max(1),
        );
        let options = match config.get_options() {
            Some(theirs) => format!("{theirs} {limits}"),
            None => limits,
        };
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(timing.keepalive_idle)
            .keepalives_interval(timing.keepalive_interval)
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
        let mut id = [0u8; 8];
        getrandom::fill(&mut id)
            .map_err(|e| VaultError::Storage(format!("no random node id: {e}")))?;
        Ok(PgStore {
            runtime: Some(runtime),
            target: target.clone(),
            config,
            tls,
            idle: Mutex::new(Vec::new()),
            active: Mutex::new(0),
            freed: Condvar::new(),
            writer,
            node: hex::encode(id),
            leader: Mutex::new(None),
            leases: Mutex::new(None),
            down: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Run `fut` on the store's runtime and wait for it (at most [`CALL_TIMEOUT`]), from any
    /// thread.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, VaultError> {
        self.run_for(CALL_TIMEOUT, fut)
    }

    /// As [`PgStore::run`], waiting at most `limit`.
    fn run_for<T: Send + 'static>(
        &self,
        limit: Duration,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, VaultError> {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the store");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(tokio::time::timeout(limit, fut).await);
        });
        match rx.recv() {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(_)) => Err(VaultError::Unavailable(format!(
                "no answer from the vault's database within {} s",
                limit.as_secs_f32()
            ))),
            Err(_) => Err(VaultError::Unavailable(
                "the vault's database task ended".into(),
            )),
        }
    }

    /// An idle connection, or a new one.
    fn connection(&self) -> Result<Arc<Client>, VaultError> {
        if let Some(client) = self.idle.lock().pop().filter(|c| !c.is_closed()) {
            return Ok(client);
        }
        let (config, tls, label) = (self.config.clone(), self.tls.clone(), self.target.label());
        self.run(async move {
            let (client, driver) = open_session(&config, &tls, &label, None).await?;
            tokio::spawn(driver);
            Ok(Arc::new(client))
        })?
    }

    fn give_back(&self, client: Arc<Client>) {
        let mut idle = self.idle.lock();
        if !client.is_closed() && idle.len() < IDLE_MAX {
            idle.push(client);
        }
    }

    fn slot_freed(&self) {
        *self.active.lock() -= 1;
        self.freed.notify_one();
    }

    /// A transaction begun with `begin` on a connection of its own, once fewer than
    /// [`ACTIVE_MAX`] are open. With `fail_fast` (reads), refused at once while the change
    /// listener finds the database unreachable: token reads are then answered from the cache
    /// rather than each waiting for a connection. Writes always try: a needs-attention mark or
    /// a token must not be lost to a listener's hiccup.
    fn begin(&self, begin: String, fail_fast: bool) -> Result<PgTx<'_>, VaultError> {
        if fail_fast && self.down.load(Ordering::Acquire) {
            return Err(VaultError::Unavailable(format!(
                "the vault's {} cannot be reached",
                self.target.label()
            )));
        }
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
            touched: false,
            changes: None,
        };
        let client = self.connection()?;
        tx.client = Some(client.clone());
        tx.step(self.run(async move { client.batch_execute(&begin).await }))?;
        Ok(tx)
    }
}

/// A new session with the server's limits set, and the future that drives its connection
/// (passing notifications to `notes`): spawn it.
async fn open_session(
    config: &tokio_postgres::Config,
    tls: &Tls,
    label: &str,
    notes: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<(Client, shared::Driver), VaultError> {
    let unreachable =
        |e| VaultError::Unavailable(format!("cannot connect to the vault's {label}: {e}"));
    match tls {
        Tls::Off => {
            let (client, connection) = config.connect(NoTls).await.map_err(unreachable)?;
            Ok((client, shared::driver(connection, notes)))
        }
        #[cfg(feature = "postgres-tls")]
        Tls::On(tls) => {
            let (client, connection) = config.connect(tls.clone()).await.map_err(unreachable)?;
            Ok((client, shared::driver(connection, notes)))
        }
    }
}

impl Store for PgStore {
    fn read(&self) -> Result<Box<dyn ReadTx + '_>, VaultError> {
        Ok(Box::new(self.begin(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".into(),
            true,
        )?))
    }

    fn write(&self) -> Result<Box<dyn WriteTx + '_>, VaultError> {
        let tx = self.begin("BEGIN ISOLATION LEVEL READ COMMITTED".into(), false)?;
        let key = self.target.lock_key();
        tx.exec(move |c| async move {
            c.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&key])
                .await
                .map(|_| ())
        })?;
        Ok(Box::new(tx))
    }

    fn shared(&self) -> bool {
        true
    }

    fn lead(&self) -> Result<bool, VaultError> {
        self.take_lead()
    }

    fn resign(&self) {
        PgStore::resign(self);
    }

    fn lease(&self, key: &[u8]) -> Result<Option<Box<dyn Lease>>, VaultError> {
        self.take_lease(key)
    }

    fn watch(&self, on_change: OnChange) {
        self.listen(on_change);
    }

    fn degraded(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}
