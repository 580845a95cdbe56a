//! The audit log of token reads. A read queues its entry (waiting for room when the queue is
//! full, so no read goes unrecorded in memory) and answers; a dedicated thread writes everything
//! queued in one durable vault transaction. Waiting for each entry's fsync before answering would
//! cost most of the throughput (docs/performance.md) for what it buys: after a crash, only the
//! entries of the reads of the last gathering ([`GATHER`]) and commit may be missing. The queue
//! is drained and written when the router is dropped (after graceful shutdown); failed writes are
//! logged as one line per [`FAILURE_LOG_EVERY`] with the reads they lost, however many reads keep
//! coming.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::error::ApiError;
use crate::vault::{AuditRead, Vault};

/// How long the writer lets entries gather before a commit. Each commit has a fixed cost (fsync,
/// page writes, checksums) that a longer gathering spreads over more entries.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);
/// Entries written per transaction at most.
const MAX_BATCH: usize = 4096;
/// Entries waiting for the writer at most; beyond, readers wait for room.
const QUEUE: usize = 16_384;

/// At most one error line per this interval while audit writes keep failing.
const FAILURE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Failed audit writes since the last line logged about them. A vault that fails every write
/// (a full disk) would otherwise log a line per token read.
#[derive(Debug, Default)]
struct Failures {
    last_logged: Option<std::time::Instant>,
    batches: u64,
    reads: u64,
    first_ms: Option<i64>,
}

impl Failures {
    /// Count a failed batch; log the count so far unless a line went out within the interval.
    /// Whether a line was logged.
    fn record(
        &mut self,
        batch: &[AuditRead],
        error: &crate::vault::VaultError,
        now: std::time::Instant,
    ) -> bool {
        self.batches += 1;
        self.reads += batch.len() as u64;
        let first = batch.iter().map(|e| e.time_ms).min();
        self.first_ms = match (self.first_ms, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self
            .last_logged
            .is_some_and(|t| now.duration_since(t) < FAILURE_LOG_EVERY)
        {
            return false;
        }
        let last_ms = batch.iter().map(|e| e.time_ms).max();
        tracing::error!(
            %error, batches = self.batches, reads = self.reads, first_ms = ?self.first_ms, last_ms = ?last_ms,
            "token reads not written to the audit log (at most one such line per {} s)",
            FAILURE_LOG_EVERY.as_secs()
        );
        *self = Failures {
            last_logged: Some(now),
            ..Failures::default()
        };
        true
    }
}

/// The writer thread and its queue. Dropping it closes the queue and waits for the thread to
/// write what is left.
#[derive(Debug)]
pub struct AuditWriter {
    tx: Option<mpsc::Sender<AuditRead>>,
    thread: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Start the writer thread for `vault`.
    pub fn start(vault: Arc<Vault>) -> AuditWriter {
        let (tx, mut rx) = mpsc::channel::<AuditRead>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let mut batch: Vec<AuditRead> = Vec::with_capacity(256);
                let mut failures = Failures::default();
                while let Some(first) = rx.blocking_recv() {
                    // Let the reads of the next few milliseconds gather: under load, one commit
                    // per few milliseconds instead of one per read keeps the writer's CPU small.
                    std::thread::sleep(GATHER);
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(entry) => batch.push(entry),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = vault.append_audits(&batch) {
                        failures.record(&batch, &e, std::time::Instant::now());
                    }
                    batch.clear();
                }
            });
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                // Without the thread the queue fills and reads fail closed (500).
                tracing::error!(error = %e, "the audit writer thread could not be started");
                None
            }
        };
        AuditWriter {
            tx: Some(tx),
            thread,
        }
    }

    /// Queue `entry`; waits only for room in the queue.
    pub async fn record(&self, entry: AuditRead) -> Result<(), ApiError> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| ApiError::internal("the audit writer is closed"))?;
        // A writer thread that is gone (never started, or panicked) dropped the receiver: the
        // send fails and the read fails closed.
        tx.send(entry)
            .await
            .map_err(|_| ApiError::internal("the audit writer is gone; token not handed out"))
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{AccountKey, VaultError};

    #[test]
    fn failing_audit_writes_log_one_line_per_interval_not_one_per_read() {
        let entry = AuditRead {
            time_ms: 5,
            api_key_name: Arc::from("backend"),
            account: Arc::new(AccountKey::parse("u1", "kite").unwrap()),
        };
        let batch = vec![entry; 4096];
        let mut failures = Failures::default();
        let start = std::time::Instant::now();
        let logged: Vec<bool> = (0..100)
            .map(|n| {
                let now = start + std::time::Duration::from_millis(n * 50);
                failures.record(&batch, &VaultError::ReadOnly, now)
            })
            .collect();
        // 100 batches of 4,096 reads over 5 s: the first line only.
        assert_eq!(logged.iter().filter(|l| **l).count(), 1);
        assert_eq!((failures.batches, failures.reads), (99, 99 * 4096));
        assert!(failures.record(&batch, &VaultError::ReadOnly, start + FAILURE_LOG_EVERY));
    }
}
