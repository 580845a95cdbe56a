//! The storage interface under the vault: a small byte-oriented key-value store with
//! transactions. Every table maps byte keys to byte values; the vault decides what the bytes mean.
//! A write transaction sees its own writes, is atomic, and is durable once `commit` returns.

use super::error::VaultError;

/// Key-value pairs, in key order.
pub(crate) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The vault's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Table {
    /// Plain settings: schema version, KDF, key check (sealed), sequence counters.
    Meta,
    /// Accounts without secrets (JSON).
    Accounts,
    /// Sealed credentials per account.
    Credentials,
    /// Sealed token per account.
    Tokens,
    /// Attempt log (JSON), keyed by account then sequence.
    Attempts,
    /// Token-read audit log (JSON), keyed by sequence.
    Audit,
    /// Sealed outbox records for the mirror, keyed by sequence.
    Outbox,
}

impl Table {
    /// Every table.
    pub(crate) const ALL: [Table; 7] = [
        Table::Meta,
        Table::Accounts,
        Table::Credentials,
        Table::Tokens,
        Table::Attempts,
        Table::Audit,
        Table::Outbox,
    ];

    /// The table's number where one keyspace holds every table (sled's key prefix, PostgreSQL's
    /// `tbl` column): never renumber one.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Table::Meta => 1,
            Table::Accounts => 2,
            Table::Credentials => 3,
            Table::Tokens => 4,
            Table::Attempts => 5,
            Table::Audit => 6,
            Table::Outbox => 7,
        }
    }

    /// Table name (also bound into sealed records' MACs: never rename one).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Accounts => "accounts",
            Table::Credentials => "credentials",
            Table::Tokens => "tokens",
            Table::Attempts => "attempts",
            Table::Audit => "audit",
            Table::Outbox => "outbox",
        }
    }
}

/// A read transaction: a consistent snapshot (redb) or the committed state (sled, whose writers
/// the vault serialises).
pub(crate) trait ReadTx {
    /// The value at `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError>;
    /// Entries whose key starts with `prefix`, in key order or reversed, at most `limit`.
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Entries, VaultError>;
    /// Number of entries.
    fn len(&self, table: Table) -> Result<u64, VaultError>;
}

/// A write transaction. Dropped without `commit`, it leaves no trace.
pub(crate) trait WriteTx: ReadTx {
    /// Insert or replace.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), VaultError>;
    /// Remove; whether there was an entry.
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, VaultError>;
    /// Tell the other processes sharing the store of these token changes (JSON) when this
    /// transaction commits; nothing for a file's one process.
    fn announce(&mut self, _changes: String) {}
    /// Commit atomically and durably (fsync before returning).
    fn commit(self: Box<Self>) -> Result<(), VaultError>;
}

/// What a store calls when another process changed the vault: with the token changes it
/// announced (JSON of `[TokenChange]`, possibly empty), or an empty string when changes may have
/// been missed (a lost notification connection) and every cached read must go.
pub(crate) type OnChange = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// This process's hold on one account's logins across every daemon sharing the vault. Dropped,
/// it is given back.
pub(crate) trait Lease: Send + Sync {
    /// Whether it still holds: false once the session holding it ended, when another daemon may
    /// hold it now. Local knowledge only, no round trip.
    fn held(&self) -> bool;
    /// Whether it still holds, asking the database (blocks for up to a few seconds): before a
    /// login step that must not run twice.
    fn confirm(&self) -> bool {
        self.held()
    }
}

/// The lease of an engine only one process can open: always held.
pub(crate) struct SoleLease;

impl Lease for SoleLease {
    fn held(&self) -> bool {
        true
    }
}

/// An open store.
pub(crate) trait Store: Send + Sync {
    /// Begin a read.
    fn read(&self) -> Result<Box<dyn ReadTx + '_>, VaultError>;
    /// Begin a write; the vault holds its writer lock around this.
    fn write(&self) -> Result<Box<dyn WriteTx + '_>, VaultError>;
    /// Whether other processes may open this store at the same time (PostgreSQL).
    fn shared(&self) -> bool {
        false
    }
    /// Take or keep the leadership among the processes sharing the store; whether this one
    /// leads. A file's one process always does.
    fn lead(&self) -> Result<bool, VaultError> {
        Ok(true)
    }
    /// Stop leading, so that another process may lead at once (a daemon shutting down).
    fn resign(&self) {}
    /// The lease on one account's logins (`key`: the account's record key), or `None` while
    /// another process holds it.
    fn lease(&self, _key: &[u8]) -> Result<Option<Box<dyn Lease>>, VaultError> {
        Ok(Some(Box::new(SoleLease)))
    }
    /// Call `on_change` whenever another process commits a change (nothing for a file's one
    /// process).
    fn watch(&self, _on_change: OnChange) {}
    /// Whether the store's database is unreachable as far as this process knows.
    fn degraded(&self) -> bool {
        false
    }
}

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Create a new one; the path must not exist.
    Create,
    /// Open an existing one for reading and writing (repairing redb after a crash).
    Write,
    /// Open an existing one without writing to the file.
    ReadOnly,
}

/// The smallest key greater than every key starting with `prefix`; none when there is no such key.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_handles_carries() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
