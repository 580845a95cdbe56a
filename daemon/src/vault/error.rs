//! Why a vault operation failed. Messages name tables, record keys (user and broker ids, sequence
//! numbers) and paths, never a secret.

use std::path::PathBuf;

use super::ids::{AccountKey, InvalidId};

/// Why a vault operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Another user's account already holds this broker account (`[vault]
    /// allow_shared_broker_accounts` is off). The other user is not named: the caller may be a
    /// platform user, who must not learn who else trades through that account.
    #[error(
        "this {broker} account ({broker_user_id}) is already registered to another user; each \
         would spend the broker's few wrong-password attempts on its own (an operator may allow it \
         with [vault] allow_shared_broker_accounts)"
    )]
    BrokerAccountTaken {
        /// Broker id.
        broker: String,
        /// The broker-side user id.
        broker_user_id: String,
    },
    /// No vault at the path (and the operation does not create one).
    #[error(
        "no vault at {0}: create it with `tokenbot init` (or, for development only, start with \
         `tokenbot serve --dev`); if it exists elsewhere, check [vault] path and the working \
         directory"
    )]
    NotFound(String),
    /// A vault (or something else) already exists where a new one was to be created.
    #[error("{0} already exists; refusing to overwrite it")]
    AlreadyExists(String),
    /// The account's stored credentials changed since they were read; nothing was written.
    #[error(
        "the credentials of user {} at broker {} changed meanwhile; nothing was written: reload \
         and try again",
        .0.user,
        .0.broker
    )]
    Changed(AccountKey),
    /// A TOTP step was to be handed out again for an account.
    #[error("TOTP step {0} of this account was handed out already; it is never sent twice")]
    StepUsed(u64),
    /// Another process holds the vault: redb and sled allow one writer per file.
    #[error(
        "the vault is in use by another process (is `tokenbot serve` running? stop it, or use the \
         daemon's HTTP API instead)"
    )]
    Locked,
    /// The master key does not open this vault (its key-check record failed).
    #[error(
        "wrong master key: it does not open this vault (check ENCRYPTION_KEY or the key file); \
         nothing was written"
    )]
    WrongKey,
    /// The passphrase does not open this vault.
    #[error("wrong passphrase: it does not open this vault; nothing was written")]
    WrongPassphrase,
    /// A raw key was given for a passphrase vault or the other way round.
    #[error("this vault is protected by {vault}, but {given} was given")]
    KeyKindMismatch {
        /// What the vault expects.
        vault: &'static str,
        /// What was offered.
        given: &'static str,
    },
    /// A master key in the wrong format (the value itself is never shown).
    #[error("invalid master key from {origin}: {reason}")]
    BadKey {
        /// Where the key came from (`ENCRYPTION_KEY`, a key file path, ...).
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No master key is configured and none can be created.
    #[error("no master key: {0}")]
    NoKey(String),
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Argon2 refused its parameters.
    #[error("passphrase key derivation: {0}")]
    Kdf(String),
    /// A record failed its integrity check: altered, moved to another key, or sealed with another
    /// key. Its contents are not returned.
    #[error(
        "integrity check failed for {table} record {key}: it was altered, moved or written with another key"
    )]
    Integrity {
        /// Table name.
        table: &'static str,
        /// Printable record key (ids or sequence number).
        key: String,
    },
    /// A record's plain part does not parse.
    #[error("malformed {table} record {key}: {reason}")]
    Malformed {
        /// Table name.
        table: &'static str,
        /// Printable record key.
        key: String,
        /// What does not parse (never record contents).
        reason: String,
    },
    /// The file is damaged or is not a vault.
    #[error("the vault file is damaged or is not a tokenbot vault: {0}")]
    Corrupt(String),
    /// The vault was written by a newer tokenbot.
    #[error("the vault has schema version {found}; this build knows versions up to {supported}")]
    NewerSchema {
        /// Version in the file.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// The vault was opened read-only.
    #[error("the vault was opened read-only")]
    ReadOnly,
    /// No such account.
    #[error("no account for user {} at broker {}", .0.user, .0.broker)]
    NoSuchAccount(AccountKey),
    /// An identifier is not acceptable.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// `[vault] engine` names no engine.
    #[error("unknown engine {0:?} (redb or sled)")]
    UnknownEngine(String),
    /// This build does not have the requested engine.
    #[error("this build has no {0} engine (cargo feature `{0}`)")]
    EngineUnavailable(&'static str),
    /// The storage engine failed (I/O and the like).
    #[error("storage: {0}")]
    Storage(String),
    /// A read or write of the file failed, or the engine refuses to go on after one: the vault is
    /// reopened before the next operation (see `Vault::write_log`).
    #[error("storage I/O: {0}")]
    Io(String),
    /// The vault's file could not be reopened after an I/O failure; `/health` says 503 until it is.
    #[error("the vault is unavailable after an I/O failure ({0}); retrying")]
    Unavailable(String),
    /// A vault call run on the blocking pool did not finish (it panicked, or the runtime shut
    /// down).
    #[error("a vault task was aborted")]
    Aborted,
}

impl VaultError {
    pub(crate) fn malformed(table: &'static str, key: String, reason: impl ToString) -> VaultError {
        VaultError::Malformed {
            table,
            key,
            reason: reason.to_string(),
        }
    }
}
