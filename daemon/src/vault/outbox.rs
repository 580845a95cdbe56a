//! The outbox of the Postgres mirror: a record per token change, written in the same transaction
//! as the change, read in order and acknowledged once delivered.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::codec::{from_secret_json, record_key_text, seal, to_secret_json, unseal};
use super::crypto::RecordKeys;
use super::entries::{OutboxRecord, OutboxStatus, TokenChange};
use super::error::VaultError;
use super::ids::{BrokerId, UserId};
use super::model::{Account, NewToken};
use super::store::{Table, WriteTx};
use super::{Vault, next_seq};

/// Meta counter of outbox sequence numbers. It only grows, even when the outbox is emptied, so
/// `outbox_ack(up_to)` can never acknowledge a record written later.
const SEQ_OUTBOX: &[u8] = b"seq/outbox";

thread_local! {
    /// The token changes of the write transaction running on this thread, for the vault's
    /// [`super::TokenListener`] once it commits. A transaction runs on one thread under the writer
    /// lock, so this sees exactly its records; collecting here, where every token change already
    /// passes, means no write path (today's or a future one) can forget to announce its change.
    static PENDING: std::cell::RefCell<Vec<TokenChange>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Forget the changes collected so far on this thread (a transaction is starting, or failed).
pub(crate) fn clear_pending() {
    PENDING.with(|p| p.borrow_mut().clear());
}

/// The changes the transaction running on this thread has made so far, as JSON for the other
/// daemons sharing the vault; none when it made none.
pub(crate) fn pending_json() -> Option<String> {
    PENDING.with(|p| {
        let pending = p.borrow();
        (!pending.is_empty()).then(|| serde_json::to_string(&*pending).expect("changes serialise"))
    })
}

/// The changes the transaction that just committed on this thread made.
pub(crate) fn take_pending() -> Vec<TokenChange> {
    PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

#[derive(Serialize)]
struct OutboxOut<'a> {
    user: &'a str,
    broker: &'a str,
    broker_user_id: &'a str,
    generation: u64,
    access_token: Option<&'a str>,
    issued_at_ms: Option<i64>,
    expires_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    served_extras: Option<&'a str>,
    status: OutboxStatus,
    changed_at_ms: i64,
}

#[derive(Deserialize)]
pub(crate) struct OutboxIn {
    user: UserId,
    broker: BrokerId,
    broker_user_id: String,
    generation: u64,
    access_token: Option<SecretString>,
    issued_at_ms: Option<i64>,
    expires_at_ms: Option<i64>,
    #[serde(default)]
    served_extras: Option<String>,
    status: OutboxStatus,
    changed_at_ms: i64,
}

/// Append an outbox record for `account` inside the caller's transaction.
pub(crate) fn enqueue(
    tx: &mut dyn WriteTx,
    keys: &RecordKeys,
    account: &Account,
    generation: u64,
    token: Option<&NewToken>,
    status: OutboxStatus,
    now: i64,
) -> Result<u64, VaultError> {
    let seq = next_seq(tx, SEQ_OUTBOX)?;
    let out = OutboxOut {
        user: account.user.as_str(),
        broker: account.broker.as_str(),
        broker_user_id: &account.broker_user_id,
        generation,
        access_token: token.map(|t| t.access_token.expose_secret()),
        issued_at_ms: token.map(|t| t.issued_at_ms),
        expires_at_ms: token.map(|t| t.expires_at_ms),
        served_extras: token.map(|t| t.served_extras.expose_text()),
        status,
        changed_at_ms: now,
    };
    PENDING.with(|p| {
        p.borrow_mut().push(TokenChange {
            seq,
            user: account.user.clone(),
            broker: account.broker.clone(),
            generation,
            expires_at_ms: out.expires_at_ms,
            status,
            changed_at_ms: now,
        })
    });
    let k = seq.to_be_bytes();
    tx.put(
        Table::Outbox,
        &k,
        &seal(keys, Table::Outbox, &k, &to_secret_json(&out)),
    )?;
    Ok(seq)
}

pub(crate) fn open_outbox(
    keys: &RecordKeys,
    key: &[u8],
    sealed: &[u8],
) -> Result<OutboxRecord, VaultError> {
    let seq = key.try_into().map(u64::from_be_bytes).map_err(|_| {
        VaultError::malformed(
            Table::Outbox.name(),
            record_key_text(Table::Outbox, key),
            "key is not 8 bytes",
        )
    })?;
    let plain = unseal(keys, Table::Outbox, key, sealed)?;
    let r: OutboxIn = from_secret_json(Table::Outbox, key, &plain)?;
    Ok(OutboxRecord {
        seq,
        user: r.user,
        broker: r.broker,
        broker_user_id: r.broker_user_id,
        generation: r.generation,
        access_token: r.access_token,
        issued_at_ms: r.issued_at_ms,
        expires_at_ms: r.expires_at_ms,
        served_extras: r
            .served_extras
            .and_then(|text| super::SecretJson::from_text(text).ok()),
        status: r.status,
        changed_at_ms: r.changed_at_ms,
    })
}

impl Vault {
    /// The oldest `limit` outbox records, in order.
    pub fn outbox_peek(&self, limit: usize) -> Result<Vec<OutboxRecord>, VaultError> {
        self.read(|tx, keys| {
            tx.scan(Table::Outbox, &[], false, limit)?
                .iter()
                .map(|(k, v)| open_outbox(keys, k, v))
                .collect()
        })
    }

    /// Remove every outbox record up to and including `up_to_seq`; how many were removed.
    pub fn outbox_ack(&self, up_to_seq: u64) -> Result<usize, VaultError> {
        self.write_log(|tx, _| {
            let mut removed = 0;
            for (k, _) in tx.scan(Table::Outbox, &[], false, usize::MAX)? {
                let seq = k
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                if seq > up_to_seq {
                    break;
                }
                tx.delete(Table::Outbox, &k)?;
                removed += 1;
            }
            Ok(removed)
        })
    }

    /// The sequence number of the last outbox record ever written (0 for none): every later token
    /// change gets a larger one, even after a restart.
    pub fn outbox_seq(&self) -> Result<u64, VaultError> {
        self.read(|tx, _| {
            Ok(tx
                .get(Table::Meta, SEQ_OUTBOX)?
                .and_then(|b| b.as_slice().try_into().ok())
                .map_or(0, u64::from_be_bytes))
        })
    }

    /// Records waiting in the outbox.
    pub fn outbox_len(&self) -> Result<u64, VaultError> {
        self.read(|tx, _| tx.len(Table::Outbox))
    }
}
