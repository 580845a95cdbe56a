//! What lets several daemons share one PostgreSQL vault:
//!
//! - **Leadership**: `pg_advisory_lock(vault, 1)` held on a session of its own. The server frees
//!   it when that session ends (the daemon stopped, was killed, or went silent past the
//!   keepalives), and a follower asking every second takes it.
//! - **Account leases**: one session-level advisory lock per account in login, on one session
//!   per daemon: one login of an account at a time across every daemon, freed with its holder.
//! - **Change notifications**: a write that changes an account, credentials or a token advances
//!   the vault's epoch sequence and notifies the vault's channel at commit; every daemon listens
//!   and drops what it cached. A lost notification is caught by comparing the sequence every
//!   [`EPOCH_CHECK`]; a lost session by reconnecting, dropping every cache meanwhile.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Connection};

use super::{PgStore, Tls, pg_err};
use crate::vault::error::VaultError;
use crate::vault::store::{Lease, OnChange};

/// How often a listener compares the epoch sequence, in case a notification was lost.
const EPOCH_CHECK: Duration = Duration::from_secs(2);
/// Pause before a listener connects again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);
/// How long taking a lease may wait for the database.
const LEASE_WAIT: Duration = Duration::from_secs(10);
/// How long a lease's session has to answer before a login step that needs it.
const LEASE_CONFIRM: Duration = Duration::from_secs(3);
/// How long the epoch check may take before the listening session counts as lost.
const EPOCH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A future driving one connection.
pub(super) type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Drive `connection`, passing the payloads of notifications to `notes`.
pub(super) fn driver<S, T>(
    mut connection: Connection<S, T>,
    notes: Option<mpsc::UnboundedSender<String>>,
) -> Driver
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if let Some(notes) = &notes {
                        let _ = notes.send(note.payload().to_owned());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "vault: a database connection ended");
                    return;
                }
            }
        }
    })
}

/// An account's lease: a session-level advisory lock on the daemon's lease session.
struct PgLease {
    client: Arc<Client>,
    key: i64,
    runtime: tokio::runtime::Handle,
}

impl Lease for PgLease {
    fn held(&self) -> bool {
        !self.client.is_closed()
    }

    fn confirm(&self) -> bool {
        if self.client.is_closed() {
            return false;
        }
        // The session answering now means the server has not ended it, and only its end frees
        // the lock.
        let client = self.client.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let answered = tokio::time::timeout(LEASE_CONFIRM, client.simple_query("SELECT 1"))
                .await
                .is_ok_and(|r| r.is_ok());
            let _ = tx.send(answered);
        });
        rx.recv_timeout(LEASE_CONFIRM + Duration::from_millis(500))
            .unwrap_or(false)
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        // Not waited for: dropped from async code. Another lease of the same account taken on
        // this session meanwhile is still held (advisory locks count per session).
        let (client, key) = (self.client.clone(), self.key);
        self.runtime.spawn(async move {
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[&key])
                .await;
        });
    }
}

impl PgStore {
    fn handle(&self) -> tokio::runtime::Handle {
        (self.runtime.as_ref())
            .expect("the runtime lives as long as the store")
            .handle()
            .clone()
    }

    /// Keep leadership, checking its session answers within the leader check, or take it if
    /// free. A leader whose session does not answer stops leading at once, before the server
    /// can notice and let another daemon lead.
    pub(super) fn take_lead(&self) -> Result<bool, VaultError> {
        if !self.writer {
            return Ok(false);
        }
        let check = self.target.timing().leader_check;
        let current = self.leader.lock().clone();
        if let Some(client) = current {
            let c = client.clone();
            // A daemon cut off from the database (its listener says so) cannot run the leader's
            // work either: it lets another lead.
            let alive = !client.is_closed()
                && !self.down.load(Ordering::Acquire)
                && self
                    .run_for(
                        check,
                        async move { c.simple_query("SELECT 1").await.is_ok() },
                    )
                    .unwrap_or(false);
            if alive {
                return Ok(true);
            }
            // Follower at once; asking again waits for the next round, so stepping down never
            // waits for a new connection.
            self.resign();
            tracing::warn!("vault: the leader's database session was lost; no longer leading");
            return Ok(false);
        }
        if self.down.load(Ordering::Acquire) {
            return Ok(false);
        }
        let client = self.connection()?;
        let (c, key) = (client.clone(), self.target.lock_key());
        let held = self
            .run_for(check.max(Duration::from_secs(2)), async move {
                c.query_one("SELECT pg_try_advisory_lock($1, 1)", &[&key])
                    .await
                    .map(|row| row.get::<_, bool>(0))
            })?
            .map_err(pg_err)?;
        if held {
            *self.leader.lock() = Some(client);
        } else {
            self.give_back(client);
        }
        Ok(held)
    }

    /// Stop leading: end the leadership's session (which frees its lock), unlocking first so a
    /// follower need not wait for the server to notice.
    pub(super) fn resign(&self) {
        let Some(leader) = self.leader.lock().take() else {
            return;
        };
        if leader.is_closed() {
            return;
        }
        let key = self.target.lock_key();
        self.handle().spawn(async move {
            let _ = leader
                .execute("SELECT pg_advisory_unlock($1, 1)", &[&key])
                .await;
        });
    }

    /// The lease on the account whose record key is `account`, or `None` while another daemon
    /// holds it.
    pub(super) fn take_lease(&self, account: &[u8]) -> Result<Option<Box<dyn Lease>>, VaultError> {
        let key = self.target.lease_key(account);
        let current = self.leases.lock().clone().filter(|c| !c.is_closed());
        let client = match current {
            Some(client) => client,
            None => {
                let client = self.connection()?;
                *self.leases.lock() = Some(client.clone());
                client
            }
        };
        let c = client.clone();
        let taken = self
            .run_for(LEASE_WAIT, async move {
                c.query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                    .await
                    .map(|row| row.get::<_, bool>(0))
            })
            .and_then(|r| r.map_err(pg_err));
        match taken {
            Ok(true) => Ok(Some(Box::new(PgLease {
                client,
                key,
                runtime: self.handle(),
            }))),
            Ok(false) => Ok(None),
            Err(e) => {
                // The session's state is unknown: the next lease goes on a new one.
                self.leases.lock().take();
                Err(e)
            }
        }
    }

    /// Listen for other daemons' changes for as long as the store lives (writable opens only).
    pub(super) fn listen(&self, on_change: OnChange) {
        if !self.writer {
            return;
        }
        let (config, tls, label) = (self.config.clone(), self.tls.clone(), self.target.label());
        let (channel, epoch) = (self.target.channel(), self.target.epoch_sequence());
        let key = self.target.lock_key();
        let (down, node) = (self.down.clone(), self.node.clone());
        self.handle().spawn(async move {
            loop {
                let why = follow(
                    &config, &tls, &label, &channel, &epoch, key, &node, &down, &on_change,
                )
                .await;
                if !down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %why, "vault: lost the database; serving what is cached");
                }
                on_change("");
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        });
    }
}

/// One listening session, until it fails: why.
#[allow(clippy::too_many_arguments)]
async fn follow(
    config: &tokio_postgres::Config,
    tls: &Tls,
    label: &str,
    channel: &str,
    epoch: &str,
    key: i32,
    node: &str,
    down: &std::sync::atomic::AtomicBool,
    on_change: &OnChange,
) -> VaultError {
    let (notes, mut noted) = mpsc::unbounded_channel();
    let (client, driver) = match super::open_session(config, tls, label, Some(notes)).await {
        Ok(session) => session,
        Err(e) => return e,
    };
    let driving = tokio::spawn(driver);
    let why: Result<std::convert::Infallible, VaultError> = async {
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(pg_err)?;
        let mut last = epoch_now(&client, epoch, key).await?;
        if down.swap(false, Ordering::AcqRel) {
            tracing::info!("vault: the database is back");
        }
        // Whatever changed while nobody listened.
        on_change("");
        let mut check = tokio::time::interval(EPOCH_CHECK);
        check.tick().await;
        loop {
            tokio::select! {
                note = noted.recv() => {
                    let Some(payload) = note else {
                        return Err(VaultError::Unavailable("the listening session ended".into()));
                    };
                    let (from, changes) = payload.split_once(' ').unwrap_or((&payload, ""));
                    if from != node {
                        on_change(changes);
                    }
                }
                _ = check.tick() => {
                    let now = epoch_now(&client, epoch, key).await?;
                    if now != last {
                        last = now;
                        on_change("");
                    }
                }
            }
        }
    }
    .await;
    driving.abort();
    match why {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// The epoch sequence's value, within [`EPOCH_CHECK_TIMEOUT`]. Read under the vault's write
/// lock taken shared: `nextval` is not transactional, so a write between its `nextval` and its
/// `COMMIT` would otherwise show a new epoch while its data is not yet visible.
async fn epoch_now(client: &Client, epoch: &str, key: i32) -> Result<i64, VaultError> {
    let read = async {
        client.batch_execute("BEGIN").await?;
        client
            .execute("SELECT pg_advisory_xact_lock_shared($1, 0)", &[&key])
            .await?;
        let row = client
            .query_one(&format!("SELECT last_value FROM {epoch}"), &[])
            .await?;
        client.batch_execute("COMMIT").await?;
        Ok::<i64, tokio_postgres::Error>(row.get::<_, i64>(0))
    };
    match tokio::time::timeout(EPOCH_CHECK_TIMEOUT, read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(pg_err(e)),
        Err(_) => Err(VaultError::Unavailable(
            "the vault's database did not answer the epoch check".into(),
        )),
    }
}
