//! The attempt log and the audit log of token reads.

use serde::Deserialize;

use super::codec::{from_plain_json, record_key_text, seq_of};
use super::entries::{Attempt, AuditEntry, AuditRecord, LoggedAttempt};
use super::error::VaultError;
use super::ids::{AccountKey, UserId};
use super::store::{ReadTx, Table};
use super::{Vault, next_seq};

const SEQ_ATTEMPT: &[u8] = b"seq/attempt";
const SEQ_AUDIT: &[u8] = b"seq/audit";
/// Whose attempts to read.
#[derive(Debug, Clone, Copy)]
pub enum AttemptScope<'a> {
    /// Every account of a user.
    User(&'a UserId),
    /// One account.
    Account(&'a AccountKey),
}

impl<'a> From<&'a UserId> for AttemptScope<'a> {
    fn from(user: &'a UserId) -> Self {
        AttemptScope::User(user)
    }
}

impl<'a> From<&'a AccountKey> for AttemptScope<'a> {
    fn from(key: &'a AccountKey) -> Self {
        AttemptScope::Account(key)
    }
}

pub(crate) fn parse_attempt(key: &[u8], value: &[u8]) -> Result<LoggedAttempt, VaultError> {
    let bad = || {
        VaultError::malformed(
            Table::Attempts.name(),
            record_key_text(Table::Attempts, key),
            "undecodable key",
        )
    };
    let (account, rest) = AccountKey::decode_prefix(key).ok_or_else(bad)?;
    let seq = u64::from_be_bytes(rest.try_into().map_err(|_| bad())?);
    let attempt: Attempt = from_plain_json(Table::Attempts, key, value)?;
    Ok(LoggedAttempt {
        account,
        seq,
        attempt,
    })
}

fn read_attempts(
    tx: &dyn ReadTx,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<LoggedAttempt>, VaultError> {
    tx.scan(Table::Attempts, prefix, true, limit)?
        .iter()
        .map(|(k, v)| parse_attempt(k, v))
        .collect()
}

impl Vault {
    /// Log an attempt for an existing account, dropping its oldest beyond the configured number.
    pub fn append_attempt(&self, key: &AccountKey, attempt: &Attempt) -> Result<u64, VaultError> {
        let keep = self.options.attempts_per_account.max(1);
        self.write_log(|tx, _| {
            let k = key.encode();
            if tx.get(Table::Accounts, &k)?.is_none() {
                return Err(VaultError::NoSuchAccount(key.clone()));
            }
            let seq = next_seq(tx, SEQ_ATTEMPT)?;
            let mut full = k.clone();
            full.extend_from_slice(&seq.to_be_bytes());
            tx.put(
                Table::Attempts,
                &full,
                &serde_json::to_vec(attempt).expect("attempts serialise"),
            )?;
            // Newest first: everything after the first `keep` goes.
            let all = tx.scan(Table::Attempts, &k, true, usize::MAX)?;
            for (old, _) in all.iter().skip(keep) {
                tx.delete(Table::Attempts, old)?;
            }
            Ok(seq)
        })
    }

    /// Attempts of a user or of one account, newest first, at most `limit`.
    pub fn attempts<'a>(
        &self,
        scope: impl Into<AttemptScope<'a>>,
        limit: usize,
    ) -> Result<Vec<LoggedAttempt>, VaultError> {
        let scope = scope.into();
        self.read(|tx, _| match scope {
            AttemptScope::Account(key) => read_attempts(tx, &key.encode(), limit),
            AttemptScope::User(user) => {
                // Keys sort by account, then sequence: merge the user's accounts by sequence.
                let mut all = read_attempts(tx, &user.key_prefix(), usize::MAX)?;
                all.sort_by_key(|a| std::cmp::Reverse(a.seq));
                all.truncate(limit);
                Ok(all)
            }
        })
    }

    /// Record a token read, dropping the oldest entries beyond the configured number.
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<u64, VaultError> {
        self.append_audits(std::slice::from_ref(entry))
    }

    /// Record several token reads in one durable transaction (the API's group commit: concurrent
    /// reads share one fsync). Returns the sequence number of the last entry (0 for none).
    ///
    /// The batch is one record, keyed by its last sequence number, so it covers the numbers
    /// after the previous record's key up to its own: a write costs one insert and, past the
    /// retention, about one delete per batch instead of one each per read, which under load is
    /// what token reads would otherwise spend their time on. Records wholly older than the
    /// newest `audit_keep` entries are deleted; readers cut the one that straddles the line.
    pub fn append_audits<E: AuditRecord>(&self, entries: &[E]) -> Result<u64, VaultError> {
        let keep = self.options.audit_keep.max(1);
        if entries.is_empty() {
            return Ok(0);
        }
        self.write_log(|tx, _| {
            // One counter update for the whole batch: reserve the first number, then set the
            // counter to the last.
            let first = next_seq(tx, SEQ_AUDIT)?;
            let last = first + entries.len() as u64 - 1;
            if last != first {
                tx.put(Table::Meta, SEQ_AUDIT, &last.to_be_bytes())?;
            }
            let batch = serde_json::to_vec(entries).expect("audit entries serialise");
            tx.put(Table::Audit, &last.to_be_bytes(), &batch)?;
            let cutoff = last.saturating_sub(keep);
            while let Some((oldest, _)) = tx.scan(Table::Audit, &[], false, 1)?.pop() {
                match seq_of(&oldest) {
                    Some(seq) if seq <= cutoff => {
                        tx.delete(Table::Audit, &oldest)?;
                    }
                    _ => break,
                }
            }
            Ok(last)
        })
    }

    /// Audit entries, newest first, at most `limit` (and at most the newest `audit_keep`).
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, VaultError> {
        let keep = self.options.audit_keep.max(1);
        self.read(|tx, _| {
            // Every record holds at least one entry: `limit` records are enough.
            let records = tx.scan(Table::Audit, &[], true, limit)?;
            let Some(newest) = records.first().and_then(|(k, _)| seq_of(k)) else {
                return Ok(Vec::new());
            };
            let cutoff = newest.saturating_sub(keep);
            let mut out = Vec::new();
            for (key, value) in &records {
                let last = seq_of(key).unwrap_or_default();
                let batch = audit_batch(key, value)?;
                for (n, entry) in batch.into_iter().rev().enumerate() {
                    if out.len() == limit || last.saturating_sub(n as u64) <= cutoff {
                        return Ok(out);
                    }
                    out.push(entry);
                }
            }
            Ok(out)
        })
    }
}

/// An audit record: a batch (a JSON array), or one entry as records were written before batches.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredAudit {
    Batch(Vec<AuditEntry>),
    One(AuditEntry),
}

/// The entries of the audit record at `key`, oldest first.
pub(crate) fn audit_batch(key: &[u8], value: &[u8]) -> Result<Vec<AuditEntry>, VaultError> {
    Ok(
        match from_plain_json::<StoredAudit>(Table::Audit, key, value)? {
            StoredAudit::Batch(entries) => entries,
            StoredAudit::One(entry) => vec![entry],
        },
    )
}
