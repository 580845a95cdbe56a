//! Opening and creating a vault. An existing vault is first opened read-only and its key-check
//! record and schema version checked, so a wrong key, a damaged file or a newer format is refused
//! before a single byte is written.

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::crypto::RecordKeys;
use super::engine::{self, Engine, Location};
use super::error::VaultError;
use super::key::{KdfRecord, KeyMaterial, MasterKey};
use super::migrate::{self, SCHEMA_VERSION};
use super::store::{Mode, ReadTx, Store, Table, WriteTx};
use super::{TokenListener, Vault, VaultOptions};

const META_KDF: &[u8] = b"kdf";
pub(crate) const META_KEY_CHECK: &[u8] = b"key_check";
const META_CREATED: &[u8] = b"created_at_ms";
const KEY_CHECK_PLAINTEXT: &[u8] = b"tokenbot vault key check v1";

/// What can be learnt about a vault without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultInfo {
    /// Whether a passphrase (rather than a raw key) unlocks it.
    pub passphrase: bool,
    /// Its schema version.
    pub schema_version: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Intent {
    Create,
    Open,
    OpenOrCreate,
    ReadOnly,
}

/// The result of a key check: the master key and the KDF record it was derived under.
struct Unlocked {
    master: MasterKey,
    kdf: Vec<u8>,
}

impl Vault {
    /// Create a new vault; fails if `path` exists.
    pub fn create(
        at: impl Into<Location>,
        engine: Engine,
        key: &KeyMaterial,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        Vault::open_as(&at.into(), engine, key, options, Intent::Create)
    }

    /// Open an existing vault for reading and writing.
    pub fn open(
        at: impl Into<Location>,
        engine: Engine,
        key: &KeyMaterial,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        Vault::open_as(&at.into(), engine, key, options, Intent::Open)
    }

    /// Open the vault at `path`, creating it if there is none (`init`, `serve`).
    pub fn open_or_create(
        at: impl Into<Location>,
        engine: Engine,
        key: &KeyMaterial,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        Vault::open_as(&at.into(), engine, key, options, Intent::OpenOrCreate)
    }

    /// Open an existing vault and refuse writes through this handle ([`VaultError::ReadOnly`]).
    /// The open itself may still write to a redb file once the key has been checked: its page
    /// checksum verification commits, and a file left by a crash is repaired.
    pub fn open_read_only(
        at: impl Into<Location>,
        engine: Engine,
        key: &KeyMaterial,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        Vault::open_as(&at.into(), engine, key, options, Intent::ReadOnly)
    }

    /// How the vault at `path` is unlocked and its schema version, without a key and without
    /// writing.
    pub fn inspect(at: impl Into<Location>, engine: Engine) -> Result<VaultInfo, VaultError> {
        let store = engine::open(engine, &at.into(), Mode::ReadOnly)?.ok_or_else(|| {
            VaultError::Corrupt("not closed cleanly; open it once to repair it".into())
        })?;
        let tx = store.read()?;
        let (kdf, _) = read_kdf(&*tx)?;
        Ok(VaultInfo {
            passphrase: matches!(kdf, KdfRecord::Argon2id { .. }),
            schema_version: read_schema(&*tx)?,
        })
    }

    fn open_as(
        at: &Location,
        engine: Engine,
        material: &KeyMaterial,
        options: VaultOptions,
        intent: Intent,
    ) -> Result<Vault, VaultError> {
        let exists = at.exists()?;
        match intent {
            Intent::Create | Intent::OpenOrCreate if !exists => {
                return Vault::create_new(at, engine, material, options);
            }
            Intent::Create => return Err(VaultError::AlreadyExists(at.to_string())),
            _ => {}
        }
        // Check the key and the schema on a read-only handle first: nothing is written unless both
        // pass. Then open for writing, which for redb verifies every page checksum (a damaged file
        // is refused, unchanged) and repairs after a crash; `ReadOnly` is enforced by the vault.
        // sled has no read-only handle, so its handle is writable already.
        let (store, unlocked) = match engine::open(engine, at, Mode::ReadOnly)? {
            Some(store) => {
                let checked = unlock(&*store, material, None)?;
                // A PostgreSQL reader needs nothing a writable open does (no repair, no
                // checksums, no change listener).
                let reader = engine == Engine::Postgres && intent == Intent::ReadOnly;
                if engine == Engine::Sled || reader {
                    (store, checked)
                } else {
                    drop(store);
                    let store = engine::open(engine, at, Mode::Write)?
                        .expect("a writable open yields a store");
                    let checked = unlock(&*store, material, Some(checked))?;
                    (store, checked)
                }
            }
            // Not closed cleanly (a crash): only a writable open repairs it; the key is checked then.
            None => {
                let store =
                    engine::open(engine, at, Mode::Write)?.expect("a writable open yields a store");
                let checked = unlock(&*store, material, None)?;
                (store, checked)
            }
        };
        let vault = Vault::assemble(
            store,
            &unlocked,
            at,
            engine,
            options,
            intent == Intent::ReadOnly,
        );
        if !vault.read_only {
            let from = vault.read(|tx, _| read_schema(tx))?;
            if from != SCHEMA_VERSION {
                vault.write(|tx, _| migrate::migrate(tx, from))?;
                tracing::info!(from, to = SCHEMA_VERSION, "vault schema migrated");
            }
        }
        Ok(vault)
    }

    fn create_new(
        at: &Location,
        engine: Engine,
        material: &KeyMaterial,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        let kdf = KdfRecord::new_for(material, options.argon2);
        // Derive before creating the file, so bad parameters leave nothing behind.
        let master = kdf.derive(material)?;
        let keys = RecordKeys::derive(&master);
        let store = engine::open(engine, at, Mode::Create)?.expect("a create yields a store");
        let now = options.clock.now_ms();
        {
            let mut tx = store.write()?;
            // Checked again under the write lock: another `init` may have made a vault there
            // since the existence check (a database is shared; a file's create is exclusive).
            if tx.get(Table::Meta, META_KDF)?.is_some() {
                return Err(VaultError::AlreadyExists(at.to_string()));
            }
            write_key_records(&mut *tx, &keys, &kdf)?;
            tx.put(
                Table::Meta,
                migrate::META_SCHEMA,
                &SCHEMA_VERSION.to_be_bytes(),
            )?;
            tx.put(Table::Meta, META_CREATED, &now.to_be_bytes())?;
            for table in Table::ALL {
                tx.len(table)?; // creates the table (redb), so read-only handles find every table
            }
            tx.commit()?;
        }
        tracing::info!(at = %at, ?engine, "created a new vault");
        let kdf = serde_json::to_vec(&kdf).expect("the KDF record serialises");
        Ok(Vault::assemble(
            store,
            &Unlocked { master, kdf },
            at,
            engine,
            options,
            false,
        ))
    }

    fn assemble(
        store: Box<dyn Store>,
        unlocked: &Unlocked,
        at: &Location,
        engine: Engine,
        options: VaultOptions,
        read_only: bool,
    ) -> Vault {
        let epoch = Arc::new(AtomicU64::new(0));
        let listener: Arc<RwLock<Option<TokenListener>>> = Arc::default();
        if !read_only {
            store.watch(super::changes_elsewhere(epoch.clone(), listener.clone()));
        }
        Vault {
            store: RwLock::new(store),
            available: std::sync::atomic::AtomicBool::new(true),
            keys: RwLock::new(RecordKeys::derive(&unlocked.master)),
            writer: Mutex::new(()),
            read_only,
            epoch,
            user_cache: Mutex::new(HashMap::new()),
            listener,
            location: at.clone(),
            engine,
            options,
        }
    }
}

/// Check `material` against the vault's key-check record. `prev` (from a check of the same file on
/// another handle) saves a second argon2 run when the KDF record is unchanged.
fn unlock(
    store: &dyn Store,
    material: &KeyMaterial,
    prev: Option<Unlocked>,
) -> Result<Unlocked, VaultError> {
    let tx = store.read()?;
    let (kdf, kdf_bytes) = read_kdf(&*tx)?;
    migrate::check(read_schema(&*tx)?)?;
    let master = match prev {
        Some(prev) if prev.kdf == kdf_bytes => prev.master,
        _ => kdf.derive(material)?,
    };
    let keys = RecordKeys::derive(&master);
    let check = tx
        .get(Table::Meta, META_KEY_CHECK)?
        .ok_or_else(|| VaultError::Corrupt("the key-check record is missing".into()))?;
    match keys.open(Table::Meta.name(), META_KEY_CHECK, &check) {
        Ok(plain) if plain.as_slice() == KEY_CHECK_PLAINTEXT => Ok(Unlocked {
            master,
            kdf: kdf_bytes,
        }),
        _ => Err(match kdf {
            KdfRecord::Key => VaultError::WrongKey,
            KdfRecord::Argon2id { .. } => VaultError::WrongPassphrase,
        }),
    }
}

pub(crate) fn read_kdf(tx: &dyn ReadTx) -> Result<(KdfRecord, Vec<u8>), VaultError> {
    let bytes = tx.get(Table::Meta, META_KDF)?.ok_or_else(|| {
        VaultError::Corrupt("no key-derivation record (an empty or foreign file?)".into())
    })?;
    let kdf = serde_json::from_slice(&bytes)
        .map_err(|_| VaultError::Corrupt("the key-derivation record does not parse".into()))?;
    Ok((kdf, bytes))
}

pub(crate) fn read_schema(tx: &dyn ReadTx) -> Result<u32, VaultError> {
    let bytes = tx
        .get(Table::Meta, migrate::META_SCHEMA)?
        .ok_or_else(|| VaultError::Corrupt("no schema version".into()))?;
    migrate::decode(&bytes)
}

/// Write the KDF and key-check records for `keys`.
pub(crate) fn write_key_records(
    tx: &mut dyn WriteTx,
    keys: &RecordKeys,
    kdf: &KdfRecord,
) -> Result<(), VaultError> {
    let kdf = serde_json::to_vec(kdf).expect("the KDF record serialises");
    tx.put(Table::Meta, META_KDF, &kdf)?;
    let check = keys.seal(Table::Meta.name(), META_KEY_CHECK, KEY_CHECK_PLAINTEXT);
    tx.put(Table::Meta, META_KEY_CHECK, &check)
}
