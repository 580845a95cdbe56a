//! The redb engine: one file, one writer, `Durability::Immediate` commits.

use std::ops::Bound;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::error::VaultError;
use super::store::{Entries, Mode, ReadTx, Store, Table, WriteTx, prefix_end};

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn def(table: Table) -> Def {
    TableDefinition::new(table.name())
}

/// Run a redb call, turning a panic into [`VaultError::Corrupt`]: redb trusts the pages it reads
/// and may panic on bytes altered behind its back (a plain open does not verify checksums). Writable
/// opens verify every checksum first, so this guards the read-only key check and reads of pages
/// damaged later.
fn guard<T>(f: impl FnOnce() -> Result<T, VaultError>) -> Result<T, VaultError> {
    quiet_guarded_panics();
    IN_GUARD.with(|g| g.set(g.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_GUARD.with(|g| g.set(g.get() - 1));
    result.unwrap_or_else(|_| {
        Err(VaultError::Corrupt(
            "the storage engine hit damaged data".into(),
        ))
    })
}

thread_local! {
    /// Depth of [`guard`] calls on this thread: a panic inside one is caught and reported as an
    /// error, so the panic hook need not print it.
    static IN_GUARD: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Wrap the panic hook (once) so a panic that [`guard`] catches is logged at debug level instead
/// of printed; every other panic goes to the previous hook unchanged.
fn quiet_guarded_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_GUARD.with(|g| g.get()) > 0 {
                tracing::debug!(%info, "storage engine panic on damaged data (reported as an error)");
            } else {
                previous(info);
            }
        }));
    });
}

fn redb_err(e: impl Into<redb::Error>) -> VaultError {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => VaultError::Locked,
        redb::Error::Corrupted(detail) => VaultError::Corrupt(detail),
        redb::Error::UpgradeRequired(v) => {
            VaultError::Corrupt(format!("redb file format {v} needs an upgrade"))
        }
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            VaultError::Corrupt(format!("the file is truncated ({e})"))
        }
        redb::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            VaultError::Corrupt(e.to_string())
        }
        // After an I/O error redb refuses every later write (PreviousIo) until it is reopened.
        redb::Error::Io(e) => VaultError::Io(e.to_string()),
        redb::Error::PreviousIo => VaultError::Io("an earlier I/O error".into()),
        other => VaultError::Storage(other.to_string()),
    }
}

pub(crate) struct RedbStore {
    db: RedbDb,
}

enum RedbDb {
    Write(redb::Database),
    ReadOnly(redb::ReadOnlyDatabase),
}

impl RedbStore {
    pub(crate) fn open(path: &Path, mode: Mode) -> Result<Option<Box<dyn Store>>, VaultError> {
        guard(|| RedbStore::open_unguarded(path, mode))
    }

    fn open_unguarded(path: &Path, mode: Mode) -> Result<Option<Box<dyn Store>>, VaultError> {
        let mut builder = redb::Builder::new();
        let db = match mode {
            Mode::Create => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| VaultError::Storage(e.to_string()))?;
                }
                RedbDb::Write(builder.create(path).map_err(redb_err)?)
            }
            // Verifies the checksum of every page (and repairs after a crash): a file altered
            // outside redb is refused here rather than trusted. Costs one read of the file.
            Mode::Write => RedbDb::Write(
                builder
                    .set_check_integrity_on_open(true)
                    .open(path)
                    .map_err(redb_err)?,
            ),
            Mode::ReadOnly => match builder.open_read_only(path) {
                Ok(db) => RedbDb::ReadOnly(db),
                Err(redb::DatabaseError::RepairAborted) => return Ok(None),
                Err(e) => return Err(redb_err(e)),
            },
        };
        Ok(Some(Box::new(RedbStore { db })))
    }
}

impl Store for RedbStore {
    fn read(&self) -> Result<Box<dyn ReadTx + '_>, VaultError> {
        guard(|| {
            let txn = match &self.db {
                RedbDb::Write(db) => db.begin_read(),
                RedbDb::ReadOnly(db) => db.begin_read(),
            }
            .map_err(redb_err)?;
            Ok(Box::new(RedbRead(txn)) as Box<dyn ReadTx>)
        })
    }

    fn write(&self) -> Result<Box<dyn WriteTx + '_>, VaultError> {
        guard(|| match &self.db {
            RedbDb::Write(db) => {
                let mut txn = db.begin_write().map_err(redb_err)?;
                txn.set_durability(redb::Durability::Immediate)
                    .map_err(redb_err)?;
                Ok(Box::new(RedbWrite(txn)) as Box<dyn WriteTx>)
            }
            RedbDb::ReadOnly(_) => Err(VaultError::ReadOnly),
        })
    }
}

struct RedbRead(redb::ReadTransaction);

/// A read-only redb table of raw bytes.
type RawReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
/// One raw entry as redb's range iterator yields it.
type RawEntry<'a> = Result<
    (
        redb::AccessGuard<'a, &'static [u8]>,
        redb::AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

impl RedbRead {
    fn table(&self, table: Table) -> Result<Option<RawReadTable>, VaultError> {
        match self.0.open_table(def(table)) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(redb_err(e)),
        }
    }
}

impl ReadTx for RedbRead {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        guard(|| {
            let Some(t) = self.table(table)? else {
                return Ok(None);
            };
            Ok(t.get(key).map_err(redb_err)?.map(|v| v.value().to_vec()))
        })
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Entries, VaultError> {
        guard(|| {
            let Some(t) = self.table(table)? else {
                return Ok(Vec::new());
            };
            scan(&t, prefix, rev, limit)
        })
    }

    fn len(&self, table: Table) -> Result<u64, VaultError> {
        guard(|| {
            let Some(t) = self.table(table)? else {
                return Ok(0);
            };
            t.len().map_err(redb_err)
        })
    }
}

struct RedbWrite(redb::WriteTransaction);

impl ReadTx for RedbWrite {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        guard(|| {
            let t = self.0.open_table(def(table)).map_err(redb_err)?;
            Ok(t.get(key).map_err(redb_err)?.map(|v| v.value().to_vec()))
        })
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        rev: bool,
        limit: usize,
    ) -> Result<Entries, VaultError> {
        guard(|| {
            let t = self.0.open_table(def(table)).map_err(redb_err)?;
            scan(&t, prefix, rev, limit)
        })
    }

    fn len(&self, table: Table) -> Result<u64, VaultError> {
        guard(|| {
            self.0
                .open_table(def(table))
                .map_err(redb_err)?
                .len()
                .map_err(redb_err)
        })
    }
}

impl WriteTx for RedbWrite {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), VaultError> {
        guard(|| {
            let mut t = self.0.open_table(def(table)).map_err(redb_err)?;
            t.insert(key, value).map_err(redb_err)?;
            Ok(())
        })
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, VaultError> {
        guard(|| {
            let mut t = self.0.open_table(def(table)).map_err(redb_err)?;
            Ok(t.remove(key).map_err(redb_err)?.is_some())
        })
    }

    fn commit(self: Box<Self>) -> Result<(), VaultError> {
        guard(|| self.0.commit().map_err(redb_err))
    }
}

fn scan<T>(t: &T, prefix: &[u8], rev: bool, limit: usize) -> Result<Entries, VaultError>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let end = prefix_end(prefix);
    let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (
        Bound::Included(prefix),
        end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
    );
    let range = t.range::<&[u8]>(bounds).map_err(redb_err)?;
    let mut out = Vec::new();
    let mut push = |item: RawEntry<'_>| {
        let (k, v) = item.map_err(redb_err)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
        Ok::<_, VaultError>(())
    };
    if rev {
        for item in range.rev().take(limit) {
            push(item)?;
        }
    } else {
        for item in range.take(limit) {
            push(item)?;
        }
    }
    Ok(out)
}
