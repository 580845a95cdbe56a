//! The encrypted vault: accounts, credentials, tokens, the attempt and audit logs, and the outbox
//! of the Postgres mirror, in one redb file (or a sled directory, cargo feature `sled`).
//!
//! - Every secret and token is sealed per record ([`crypto`]): AES-256-CBC, random IV, HMAC-SHA256
//!   over table, key, format version, IV and ciphertext, keys derived by HKDF from the master key.
//!   Account rows, the attempt and audit logs and the meta table hold no secrets and are plain JSON.
//! - Opening an existing vault first opens it read-only and checks the key-check record and the
//!   schema version, so a wrong key, a damaged file or a newer format is refused before a single
//!   byte is written.
//! - Every write is one durable transaction (`Durability::Immediate` for redb, `flush` for sled).
//! - Methods are synchronous; `Vault` is `Send + Sync`, so async code calls it through
//!   `tokio::task::spawn_blocking` on an `Arc<Vault>`.
//!
//! Only this module knows redb and sled.

mod codec;
mod configured;
mod credentials;
mod crypto;
mod engine;
mod entries;
mod error;
mod ids;
pub mod key;
mod logs;
mod maint;
pub mod migrate;
pub mod model;
mod outbox;
mod records;
mod redb_engine;
#[cfg(feature = "sled")]
mod sled_engine;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use configured::check_config;
pub use credentials::Credentials;
pub use engine::Engine;
pub use entries::*;
pub use error::VaultError;
pub use ids::{AccountKey, BrokerId, InvalidId, UserId};
pub use key::{Argon2Params, KeyMaterial, KeyOrigin, MasterKey, ResolvedKey};
pub use logs::AttemptScope;
pub use migrate::SCHEMA_VERSION;
pub use model::*;

use crate::clock::{Clock, SystemClock};
use crypto::RecordKeys;
use key::KdfRecord;
use store::{Mode, ReadTx, Store, Table, WriteTx};

const META_KDF: &[u8] = b"kdf";
const META_KEY_CHECK: &[u8] = b"key_check";
const META_CREATED: &[u8] = b"created_at_ms";
const KEY_CHECK_PLAINTEXT: &[u8] = b"tokenbot vault key check v1";

/// Tunables of a vault.
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// argon2id cost for a passphrase vault created or rekeyed with these options (an existing
    /// vault uses the parameters stored in it).
    pub argon2: Argon2Params,
    /// Attempts kept per account; older ones are dropped as new ones are appended.
    pub attempts_per_account: usize,
    /// Audit entries kept; older ones are dropped as new ones are appended.
    pub audit_keep: u64,
    /// Time for `created_at`/`updated_at` and outbox records.
    pub clock: Arc<dyn Clock>,
    /// `[vault] allow_shared_broker_accounts`: off, an account whose broker and
    /// `broker_user_id` another user's account has already is refused.
    pub allow_shared_broker_accounts: bool,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            argon2: Argon2Params::default(),
            attempts_per_account: 200,
            audit_keep: 100_000,
            clock: Arc::new(SystemClock),
            allow_shared_broker_accounts: false,
        }
    }
}

/// A user's accounts, each with its token if it has one.
pub type UserTokens = Vec<(Account, Option<Token>)>;

/// Users whose `user_tokens` are kept in memory at once; the cache starts over past this.
const USER_CACHE_MAX: usize = 100_000;

/// An open vault.
pub struct Vault {
    /// The engine. Only this module touches it. Replaced whole when an I/O failure leaves it
    /// refusing writes (`reopen`); every transaction holds the read side while it runs.
    store: RwLock<Box<dyn Store>>,
    /// Whether the store is usable: false from an I/O failure whose reopen failed until a reopen
    /// works. `/health` answers 503 meanwhile.
    available: std::sync::atomic::AtomicBool,
    /// Record keys of the current master key. Every operation that seals or opens records holds it
    /// for reading across its transaction; `rekey` holds it for writing, so no operation ever mixes
    /// records of one key with the keys of another.
    keys: RwLock<RecordKeys>,
    /// Serialises write transactions: redb allows one writer anyway, and sled's write overlay
    /// relies on nobody else committing underneath it. Taken before `keys`.
    writer: Mutex<()>,
    read_only: bool,
    /// Bumped after every committed write, except the log appends that cannot change an account
    /// or a token (attempts, audit, outbox acks). A cached read is served only while the epoch it
    /// was read at is current; readers load it *before* their read transaction and writers bump
    /// it *after* commit, so a cached entry is never newer-looking than its data.
    epoch: AtomicU64,
    /// `user_tokens` results by user, tagged with the epoch they were read at. Holds decrypted
    /// tokens in memory only (zeroised on drop); bounded by `USER_CACHE_MAX` entries.
    user_cache: Mutex<HashMap<UserId, (u64, Arc<UserTokens>)>>,
    path: PathBuf,
    engine: Engine,
    options: VaultOptions,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .field("engine", &self.engine)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

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
        path: &Path,
        engine: Engine,
        key: &KeyMaterial,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        Vault::open_as(path, engine, key, options, Intent::Create)
    }

    /// Open an existing vault for reading and writing.
    pub fn open(
        path: &Path,
        engine: Engine,
        key: &KeyMaterial,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        Vault::open_as(path, engine, key, options, Intent::Open)
    }

    /// Open the vault at `path`, creating it if there is none (`init`, `serve`).
    pub fn open_or_create(
        path: &Path,
        engine: Engine,
        key: &KeyMaterial,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        Vault::open_as(path, engine, key, options, Intent::OpenOrCreate)
    }

    /// Open an existing vault and refuse writes through this handle ([`VaultError::ReadOnly`]).
    /// The open itself may still write to a redb file once the key has been checked: its page
    /// checksum verification commits, and a file left by a crash is repaired.
    pub fn open_read_only(
        path: &Path,
        engine: Engine,
        key: &KeyMaterial,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        Vault::open_as(path, engine, key, options, Intent::ReadOnly)
    }

    /// How the vault at `path` is unlocked and its schema version, without a key and without
    /// writing.
    pub fn inspect(path: &Path, engine: Engine) -> Result<VaultInfo, VaultError> {
        let store = engine::open(engine, path, Mode::ReadOnly)?.ok_or_else(|| {
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
        path: &Path,
        engine: Engine,
        material: &KeyMaterial,
        options: VaultOptions,
        intent: Intent,
    ) -> Result<Vault, VaultError> {
        let exists = path.exists();
        match intent {
            Intent::Create | Intent::OpenOrCreate if !exists => {
                return Vault::create_new(path, engine, material, options);
            }
            Intent::Create => return Err(VaultError::AlreadyExists(path.to_owned())),
            _ => {}
        }
        // Check the key and the schema on a read-only handle first: nothing is written unless both
        // pass. Then open for writing, which for redb verifies every page checksum (a damaged file
        // is refused, unchanged) and repairs after a crash; `ReadOnly` is enforced by the vault.
        // sled has no read-only handle, so its handle is writable already.
        let (store, unlocked) = match engine::open(engine, path, Mode::ReadOnly)? {
            Some(store) => {
                let checked = unlock(&*store, material, None)?;
                if engine == Engine::Sled {
                    (store, checked)
                } else {
                    drop(store);
                    let store = engine::open(engine, path, Mode::Write)?
                        .expect("a writable open yields a store");
                    let checked = unlock(&*store, material, Some(checked))?;
                    (store, checked)
                }
            }
            // Not closed cleanly (a crash): only a writable open repairs it; the key is checked then.
            None => {
                let store = engine::open(engine, path, Mode::Write)?
                    .expect("a writable open yields a store");
                let checked = unlock(&*store, material, None)?;
                (store, checked)
            }
        };
        let vault = Vault::assemble(
            store,
            &unlocked,
            path,
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
        path: &Path,
        engine: Engine,
        material: &KeyMaterial,
        options: VaultOptions,
    ) -> Result<Vault, VaultError> {
        let kdf = KdfRecord::new_for(material, options.argon2);
        // Derive before creating the file, so bad parameters leave nothing behind.
        let master = kdf.derive(material)?;
        let keys = RecordKeys::derive(&master);
        let store = engine::open(engine, path, Mode::Create)?.expect("a create yields a store");
        let now = options.clock.now_ms();
        {
            let mut tx = store.write()?;
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
        tracing::info!(path = %path.display(), ?engine, "created a new vault");
        let kdf = serde_json::to_vec(&kdf).expect("the KDF record serialises");
        Ok(Vault::assemble(
            store,
            &Unlocked { master, kdf },
            path,
            engine,
            options,
            false,
        ))
    }

    fn assemble(
        store: Box<dyn Store>,
        unlocked: &Unlocked,
        path: &Path,
        engine: Engine,
        options: VaultOptions,
        read_only: bool,
    ) -> Vault {
        Vault {
            store: RwLock::new(store),
            available: std::sync::atomic::AtomicBool::new(true),
            keys: RwLock::new(RecordKeys::derive(&unlocked.master)),
            writer: Mutex::new(()),
            read_only,
            epoch: AtomicU64::new(0),
            user_cache: Mutex::new(HashMap::new()),
            path: path.to_owned(),
            engine,
            options,
        }
    }

    /// The vault's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The vault's engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn now(&self) -> i64 {
        self.options.clock.now_ms()
    }

    /// Run `f` on a read transaction with the current record keys.
    fn read<T>(
        &self,
        f: impl FnOnce(&dyn ReadTx, &RecordKeys) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        let tx = store.read()?;
        f(&*tx, &keys)
    }

    /// Run `f` on a write transaction and commit it durably if `f` succeeds; cached reads are
    /// invalidated.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn WriteTx, &RecordKeys) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let out = self.write_log(f)?;
        self.epoch.fetch_add(1, Ordering::Release);
        Ok(out)
    }

    /// As [`Vault::write`], for appends to the attempt log, the audit log and outbox acks only:
    /// they change no account and no token, so cached reads stay valid.
    fn write_log<T>(
        &self,
        f: impl FnOnce(&mut dyn WriteTx, &RecordKeys) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        if self.read_only {
            return Err(VaultError::ReadOnly);
        }
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let result = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            store.write().and_then(|mut tx| {
                let out = f(&mut *tx, &keys)?;
                tx.commit()?;
                Ok(out)
            })
        };
        if let Err(e @ (VaultError::Io(_) | VaultError::Unavailable(_))) = &result {
            // This write is lost (the caller sees its error); the next ones must not be.
            tracing::error!(error = %e, "vault write failed; reopening the vault");
            self.reopen();
        }
        result
    }

    /// Close the store and open it again, up to [`REOPEN_TRIES`] times: after an I/O failure redb
    /// refuses every write until then. The writer lock must be held. Whether it worked.
    fn reopen(&self) -> bool {
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        // The engine holds the file's lock: the old store goes before the new one opens.
        *store = Box::new(Closed);
        let mut why = String::new();
        for attempt in 1..=REOPEN_TRIES {
            match engine::open(self.engine, &self.path, Mode::Write) {
                Ok(Some(reopened)) => {
                    *store = reopened;
                    self.available.store(true, Ordering::Release);
                    tracing::warn!(attempt, "vault reopened after an I/O failure");
                    return true;
                }
                Ok(None) => why = "the engine asked for a repair".into(),
                Err(e) => why = e.to_string(),
            }
            std::thread::sleep(REOPEN_PAUSE);
        }
        self.available.store(false, Ordering::Release);
        tracing::error!(error = %why, "the vault could not be reopened; /health answers 503");
        *store = Box::new(Closed);
        false
    }

    /// Whether the vault is usable as far as this process knows (no reopen is tried).
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    /// Whether the vault can be used. When an earlier reopen failed, tries again first.
    pub fn check_available(&self) -> bool {
        if self.available.load(Ordering::Acquire) || self.read_only {
            return true;
        }
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.available.load(Ordering::Acquire) || self.reopen()
    }
}

/// Reopens tried after an I/O failure before the vault reports itself unavailable.
const REOPEN_TRIES: u32 = 3;
/// Pause between those tries.
const REOPEN_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The store between closing a failed one and opening its replacement, or after the reopen
/// failed: every transaction is refused.
struct Closed;

impl Store for Closed {
    fn read(&self) -> Result<Box<dyn ReadTx + '_>, VaultError> {
        Err(VaultError::Unavailable("the vault file is closed".into()))
    }

    fn write(&self) -> Result<Box<dyn WriteTx + '_>, VaultError> {
        Err(VaultError::Unavailable("the vault file is closed".into()))
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

fn read_kdf(tx: &dyn ReadTx) -> Result<(KdfRecord, Vec<u8>), VaultError> {
    let bytes = tx.get(Table::Meta, META_KDF)?.ok_or_else(|| {
        VaultError::Corrupt("no key-derivation record (an empty or foreign file?)".into())
    })?;
    let kdf = serde_json::from_slice(&bytes)
        .map_err(|_| VaultError::Corrupt("the key-derivation record does not parse".into()))?;
    Ok((kdf, bytes))
}

fn read_schema(tx: &dyn ReadTx) -> Result<u32, VaultError> {
    let bytes = tx
        .get(Table::Meta, migrate::META_SCHEMA)?
        .ok_or_else(|| VaultError::Corrupt("no schema version".into()))?;
    migrate::decode(&bytes)
}

/// Write the KDF and key-check records for `keys`.
fn write_key_records(
    tx: &mut dyn WriteTx,
    keys: &RecordKeys,
    kdf: &KdfRecord,
) -> Result<(), VaultError> {
    let kdf = serde_json::to_vec(kdf).expect("the KDF record serialises");
    tx.put(Table::Meta, META_KDF, &kdf)?;
    let check = keys.seal(Table::Meta.name(), META_KEY_CHECK, KEY_CHECK_PLAINTEXT);
    tx.put(Table::Meta, META_KEY_CHECK, &check)
}

/// Next value of the counter `name` in the meta table (starts at 1).
pub(crate) fn next_seq(tx: &mut dyn WriteTx, name: &[u8]) -> Result<u64, VaultError> {
    let current = match tx.get(Table::Meta, name)? {
        Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
            VaultError::Corrupt(format!(
                "counter {} is not 8 bytes",
                String::from_utf8_lossy(name)
            ))
        })?),
        None => 0,
    };
    let next = current + 1;
    tx.put(Table::Meta, name, &next.to_be_bytes())?;
    Ok(next)
}

#[cfg(test)]
mod reopen_tests {
    use super::*;

    /// A store whose next write fails as a full disk would make redb's fail.
    struct FailNextWrite(Box<dyn Store>);

    impl Store for FailNextWrite {
        fn read(&self) -> Result<Box<dyn ReadTx + '_>, VaultError> {
            self.0.read()
        }

        fn write(&self) -> Result<Box<dyn WriteTx + '_>, VaultError> {
            Err(VaultError::Io(
                "No space left on device (os error 28)".into(),
            ))
        }
    }

    fn inject_failure(vault: &Vault) {
        let mut store = vault.store.write().unwrap();
        let real = std::mem::replace(&mut *store, Box::new(Closed));
        *store = Box::new(FailNextWrite(real));
    }

    #[test]
    fn after_an_io_failure_the_vault_is_reopened_and_later_writes_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.redb");
        let key = KeyMaterial::Key(MasterKey::from_bytes([3; 32]));
        let vault = Vault::create(&path, Engine::Redb, &key, VaultOptions::default()).unwrap();
        let account = AccountKey::parse("u1", "kite").unwrap();
        vault
            .put_account(&NewAccount {
                key: account.clone(),
                broker_user_id: "AB1".into(),
                credentials: Credentials::default(),
                auto_refresh: true,
                managed_externally: false,
            })
            .unwrap();
        let pause = |on: bool| Flags {
            auto_refresh: Some(!on),
            ..Flags::default()
        };

        inject_failure(&vault);
        assert!(matches!(
            vault.set_flags(&account, pause(true)),
            Err(VaultError::Io(_))
        ));
        assert!(vault.is_available(), "reopened at once");
        vault.set_flags(&account, pause(true)).unwrap();
        assert!(!vault.get_account(&account).unwrap().unwrap().auto_refresh);

        // The file is gone when the reopen is tried: unavailable until it is back.
        inject_failure(&vault);
        let away = dir.path().join("vault.redb.away");
        std::fs::rename(&path, &away).unwrap();
        assert!(vault.set_flags(&account, pause(false)).is_err());
        assert!(!vault.is_available());
        assert!(!vault.check_available());
        assert!(matches!(
            vault.set_flags(&account, pause(false)),
            Err(VaultError::Unavailable(_))
        ));
        std::fs::rename(&away, &path).unwrap();
        assert!(vault.check_available());
        vault.set_flags(&account, pause(false)).unwrap();
        assert!(vault.get_account(&account).unwrap().unwrap().auto_refresh);
    }
}
