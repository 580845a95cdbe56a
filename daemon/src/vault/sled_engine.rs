//! The sled engine (cargo feature `sled`). All tables live in sled's default tree, each key
//! prefixed with its table's tag byte, so one `Batch` commits a transaction atomically; `flush`
//! makes it durable. A write transaction buffers its writes in an overlay that its own reads see.
//! sled has no read-only mode: [`Mode::ReadOnly`] opens normally and the vault refuses writes.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::VaultError;
use super::store::{Entries, Mode, ReadTx, Store, Table, WriteTx, prefix_end};

fn full_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(table.tag());
    out.extend_from_slice(key);
    out
}

fn sled_err(e: sled::Error) -> VaultError {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            VaultError::Locked
        }
        sled::Error::Corruption { .. } => VaultError::Corrupt(e.to_string()),
        sled::Error::Io(io) => VaultError::Io(io.to_string()),
        other => VaultError::Storage(other.to_string()),
    }
}

/// How long an open waits for a lock this process may still be releasing.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) struct SledStore {
    db: sled::Db,
}

impl SledStore {
    pub(crate) fn open(path: &Path, _mode: Mode) -> Result<Option<Box<dyn Store>>, VaultError> {
        // sled releases its file lock from a background thread some moments after the last handle
        // of a database is dropped, so reopening a vault this process just closed can find it
        // still locked. Wait that out briefly; a lock held by another process stays `Locked`.
        let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
        loop {
            match sled::Config::new().path(path).open().map_err(sled_err) {
                Err(VaultError::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
                Ok(db) => return Ok(Some(Box::new(SledStore { db }))),
            }
        }
    }
}

impl Store for SledStore {
    fn read(&self) -> Result<Box<dyn ReadTx + '_>, VaultError> {
        Ok(Box::new(SledRead { db: &self.db }))
    }

    fn write(&self) -> Result<Box<dyn WriteTx + '_>, VaultError> {
        Ok(Box::new(SledWrite {
            db: &self.db,
            overlay: BTreeMap::new(),
        }))
    }
}

fn tree_scan(
    db: &sled::Db,
    table: Table,
    prefix: &[u8],
    rev: bool,
    limit: usize,
) -> Result<Entries, VaultError> {
    let start = full_key(table, prefix);
    let iter = match prefix_end(&start) {
        Some(end) => db.range(start..end),
        None => db.range(start..),
    };
    let strip = |item: sled::Result<(sled::IVec, sled::IVec)>| {
        let (k, v) = item.map_err(sled_err)?;
        Ok::<_, VaultError>((k[1..].to_vec(), v.to_vec()))
    };
    if rev {
        iter.rev().take(limit).map(strip).collect()
    } else {
        iter.take(limit).map(strip).collect()
    }
}

struct SledRead<'a> {
    db: &'a sled::Db,
}

impl ReadTx for SledRead<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        Ok(self
            .db
            .get(full_key(table, key))
            .map_err(sled_err)?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Entries, VaultError> {
        tree_scan(self.db, table, prefix, rev, limit)
    }

    fn len(&self, table: Table) -> Result<u64, VaultError> {
        Ok(self.db.scan_prefix([table.tag()]).count() as u64)
    }
}

struct SledWrite<'a> {
    db: &'a sled::Db,
    /// Writes of this transaction by full key; `None` is a delete.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl ReadTx for SledWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        let full = full_key(table, key);
        match self.overlay.get(&full) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.db.get(full).map_err(sled_err)?.map(|v| v.to_vec())),
        }
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Entries, VaultError> {
        let start = full_key(table, prefix);
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            tree_scan(self.db, table, prefix, false, usize::MAX)?
                .into_iter()
                .collect();
        for (k, v) in self
            .overlay
            .range(start.clone()..)
            .take_while(|(k, _)| k.starts_with(&start))
        {
            match v {
                Some(v) => merged.insert(k[1..].to_vec(), v.clone()),
                None => merged.remove(&k[1..]),
            };
        }
        Ok(if rev {
            merged.into_iter().rev().take(limit).collect()
        } else {
            merged.into_iter().take(limit).collect()
        })
    }

    fn len(&self, table: Table) -> Result<u64, VaultError> {
        Ok(self.scan(table, b"", false, usize::MAX)?.len() as u64)
    }
}

impl WriteTx for SledWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        self.overlay
            .insert(full_key(table, key), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, VaultError> {
        let existed = self.get(table, key)?.is_some();
        self.overlay.insert(full_key(table, key), None);
        Ok(existed)
    }

    fn commit(self: Box<Self>) -> Result<(), VaultError> {
        let mut batch = sled::Batch::default();
        for (k, v) in self.overlay {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.db.apply_batch(batch).map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }
}
