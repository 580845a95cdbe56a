//! The audit log of token reads. A read queues its entry (waiting for room when the queue is
//! full, so no read goes unrecorded in memory) and answers; a dedicated thread writes everything
//! queued in one durable vault transaction. Waiting for each entry's fsync before answering cost
//! a factor of 2–3 in throughput (benches/api.rs) for what it buys: after a crash, the entries of
//! the last 10-20 ms of reads (one gathering plus one commit) may be missing. The queue is drained and written when the
//! router is dropped (after graceful shutdown); a failed write is logged with the entries'
//! accounts and key names.

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
                        for entry in &batch {
                            tracing::error!(
                                user = %entry.account.user, broker = %entry.account.broker, key = %entry.api_key_name,
                                time_ms = entry.time_ms, "token read not written to the audit log"
                            );
                        }
                        tracing::error!(error = %e, entries = batch.len(), "audit log write failed");
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
