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
mod hooks;
mod ids;
pub mod key;
mod links;
mod logs;
mod maint;
pub mod migrate;
pub mod model;
mod opening;
mod outbox;
mod pg_engine;
mod records;
mod redb_engine;
#[cfg(feature = "sled")]
mod sled_engine;
mod store;
mod tokens;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

pub use configured::{check_config, location};
pub use credentials::{CREDENTIAL_FIELDS, Credentials, is_extra_field_name};
pub use engine::{Engine, Location};
pub use entries::*;
pub use error::VaultError;
pub use ids::{AccountKey, BrokerId, InvalidId, UserId};
pub use key::{Argon2Params, KeyMaterial, KeyOrigin, MasterKey, ResolvedKey};
pub use logs::AttemptScope;
pub use migrate::SCHEMA_VERSION;
pub use model::*;
pub use opening::VaultInfo;
pub use pg_engine::PgTarget;

/// Run a vault call from async code on tokio's blocking pool: the vault's methods block on file
/// I/O and locks, which must not stall the runtime's workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VaultError> + Send + 'static,
) -> Result<T, VaultError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(VaultError::Aborted))
}

use crate::clock::{Clock, SystemClock};
use crypto::RecordKeys;
use store::{Mode, ReadTx, Store, Table, WriteTx};

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
    /// Other daemons' changes to a shared (PostgreSQL) vault bump it too, as they are announced.
    epoch: Arc<AtomicU64>,
    /// `user_tokens` results by user, tagged with the epoch they were read at. Holds decrypted
    /// tokens in memory only (zeroised on drop); bounded by `USER_CACHE_MAX` entries.
    user_cache: Mutex<HashMap<UserId, (u64, Arc<UserTokens>)>>,
    /// Told of every committed token change (the daemon's event hub); none in the CLI. Set once
    /// the daemon's state is built, after the vault is open, hence the lock.
    /// Shared with the store's change listener, which tells it of other daemons' changes.
    listener: Arc<RwLock<Option<TokenListener>>>,
    location: Location,
    engine: Engine,
    options: VaultOptions,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("location", &self.location)
            .field("engine", &self.engine)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Where the vault lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The vault's engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The clock the vault stamps records with (the daemon's one clock when opened by
    /// [`crate::AppState::open`]).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.options.clock
    }

    fn now(&self) -> i64 {
        self.options.clock.now_ms()
    }

    /// Tell `listener` of every token change committed from now on (replacing any earlier one).
    pub fn set_token_listener(&self, listener: TokenListener) {
        *self.listener.write() = Some(listener);
    }

    /// Run `f` on a read transaction with the current record keys.
    fn read<T>(
        &self,
        f: impl FnOnce(&dyn ReadTx, &RecordKeys) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let keys = self.keys.read();
        let store = self.store.read();
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
        let _writer = self.writer.lock();
        outbox::clear_pending();
        let result = {
            let keys = self.keys.read();
            let store = self.store.read();
            store.write().and_then(|mut tx| {
                let out = f(&mut *tx, &keys)?;
                if let Some(changes) = outbox::pending_json() {
                    tx.announce(changes);
                }
                tx.commit()?;
                Ok(out)
            })
        };
        // Still under the writer lock, so listeners hear changes in commit (sequence) order.
        let changes = outbox::take_pending();
        if result.is_ok()
            && !changes.is_empty()
            && let Some(listener) = &*self.listener.read()
        {
            listener(&changes);
        }
        if let Err(e @ (VaultError::Io(_) | VaultError::Unavailable(_))) = &result
            && self.engine != Engine::Postgres
        {
            // This write is lost (the caller sees its error); the next ones must not be. (A
            // PostgreSQL store reconnects by itself.)
            tracing::error!(error = %e, "vault write failed; reopening the vault");
            self.reopen();
        }
        result
    }

    /// Close the store and open it again, up to [`REOPEN_TRIES`] times: after an I/O failure redb
    /// refuses every write until then. The writer lock must be held. Whether it worked.
    fn reopen(&self) -> bool {
        let mut store = self.store.write();
        // The engine holds the file's lock: the old store goes before the new one opens.
        *store = Box::new(Closed);
        let mut why = String::new();
        for attempt in 1..=REOPEN_TRIES {
            match engine::open(self.engine, &self.location, Mode::Write) {
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

    /// Whether other daemons may share this vault (the postgres engine): then one leads and
    /// logins take account leases.
    pub fn is_shared(&self) -> bool {
        !self.read_only && self.store.read().shared()
    }

    /// Take or keep the leadership among the daemons sharing the vault; whether this one leads.
    /// A file's one daemon always does; a read-only handle never.
    pub fn lead(&self) -> Result<bool, VaultError> {
        if self.read_only {
            return Ok(false);
        }
        self.store.read().lead()
    }

    /// Stop leading the daemons sharing the vault, so another takes over at once (shutdown).
    pub fn resign(&self) {
        self.store.read().resign();
    }

    /// The lease on `key`'s logins across every daemon sharing the vault, or `None` while
    /// another daemon holds it (it is logging the account in). Hold it for the whole login.
    pub fn lease(&self, key: &AccountKey) -> Result<Option<AccountLease>, VaultError> {
        if self.read_only {
            return Err(VaultError::ReadOnly);
        }
        Ok(self.store.read().lease(&key.encode())?.map(AccountLease))
    }

    /// Whether the vault's database cannot be reached now: tokens are then served from what
    /// was cached, while they last.
    pub fn is_degraded(&self) -> bool {
        self.store.read().degraded()
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
        let _writer = self.writer.lock();
        self.available.load(Ordering::Acquire) || self.reopen()
    }
}

/// This daemon's hold on one account's logins ([`Vault::lease`]); given back when dropped.
pub struct AccountLease(Box<dyn store::Lease>);

impl AccountLease {
    /// Whether it still holds. False once the database session holding it ended: another
    /// daemon may be logging the account in, so this one must not go on.
    pub fn held(&self) -> bool {
        self.0.held()
    }

    /// As [`AccountLease::held`], asking the database (a round trip, up to a few seconds):
    /// before sending a password or a TOTP code. Call it from blocking code.
    pub fn confirm(&self) -> bool {
        self.0.confirm()
    }
}

impl std::fmt::Debug for AccountLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountLease")
            .field("held", &self.held())
            .finish()
    }
}

/// What a store calls when another daemon changed the vault: every cached read goes, and the
/// token changes it announced reach this daemon's listener (its event hub) too.
fn changes_elsewhere(
    epoch: Arc<AtomicU64>,
    listener: Arc<RwLock<Option<TokenListener>>>,
) -> store::OnChange {
    Arc::new(move |changes: &str| {
        epoch.fetch_add(1, Ordering::Release);
        if changes.is_empty() {
            return;
        }
        match serde_json::from_str::<Vec<TokenChange>>(changes) {
            Ok(changes) => {
                if let Some(listener) = &*listener.read() {
                    listener(&changes);
                }
            }
            Err(e) => tracing::warn!(error = %e, "vault: an unreadable change notification"),
        }
    })
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
        let mut store = vault.store.write();
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
