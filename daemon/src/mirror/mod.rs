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
//! target as `host:port/db`, and error messages pass through `crate::redact`.

mod postgres;
mod target;
pub mod template;
mod values;

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::config::PostgresMirrorConfig;
use crate::vault::Vault;
use postgres::{PgError, Session, Target};
use target::target;
pub use target::{MirrorConfigError, check_config, validate};

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
            target: target.as_ref().map(|t| t.label.clone()).unwrap_or_default(),
            last_error_at_ms: error.as_ref().map(|_| vault.clock().now_ms()),
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
        self.status.lock().clone()
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

    /// As [`Mirror::spawn`], delivering only while this daemon leads: the other daemons sharing
    /// its vault would deliver the same records.
    pub fn spawn_leading(
        self: &Arc<Self>,
        role: watch::Receiver<crate::cluster::Role>,
    ) -> tokio::task::JoinHandle<()> {
        let mirror = self.clone();
        let stop = self.stop.subscribe();
        let until_stopped = move || {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        };
        tokio::spawn(async move {
            crate::cluster::while_leading(role, until_stopped(), || {
                let (mirror, stopped) = (mirror.clone(), until_stopped());
                async move {
                    let _disconnected = Disconnected(mirror.clone());
                    tokio::select! {
                        () = stopped => {}
                        () = mirror.run() => {}
                    }
                }
            })
            .await;
        })
    }

    fn update(&self, change: impl FnOnce(&mut MirrorStatus)) {
        change(&mut self.status.lock());
    }

    fn fail(&self, error: &str) {
        let mut status = self.status.lock();
        if status.last_error.as_deref() != Some(error) {
            tracing::warn!(db = %status.target, %error, "mirror: delivery held back");
        }
        status.connected = false;
        status.last_error = Some(error.to_owned());
        status.last_error_at_ms = Some(self.vault.clock().now_ms());
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
            tracing::info!(db = %target.label, "mirror: connected");
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
                    let now_ms = self.vault.clock().now_ms();
                    self.update(|s| {
                        s.connected = false;
                        s.last_error = Some(format!("vault: {e}"));
                        s.last_error_at_ms = Some(now_ms);
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
                    break DeliveryEnd::Postgres(format!("connection to {} closed", target.label));
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
                        target.label,
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

/// Marks the mirror not connected when its delivery stops, whether it ended or leadership
/// dropped it mid-way.
struct Disconnected(Arc<Mirror>);

impl Drop for Disconnected {
    fn drop(&mut self) {
        self.0.update(|s| s.connected = false);
    }
}
