//! Domain types of the vault: identifiers, accounts, credentials, tokens, attempts, audit entries
//! and outbox records. Secret fields are `SecretString` or [`SecretJson`]: zeroized on drop, and
//! their `Debug` shows `[REDACTED]`; none implements `Display`.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::VaultError;

/// The platform's user id (e.g. `28748327` or a UUID). Not secret. Serialised as its string
/// (without a copy: every audit entry carries one); deserialised through [`UserId::new`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct UserId(String);

/// A broker (strategy) id such as `kite` or `iifl-xts`. Serialised as its string; deserialised
/// through [`BrokerId::new`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct BrokerId(String);

impl UserId {
    /// Up to 128 bytes, printable, no whitespace.
    pub fn new(id: impl Into<String>) -> Result<UserId, VaultError> {
        let id = id.into();
        let bad = |reason| VaultError::InvalidId {
            what: "user id",
            value: id.clone(),
            reason,
        };
        if id.is_empty() || id.len() > 128 {
            return Err(bad("must be 1 to 128 bytes"));
        }
        if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("must not contain whitespace or control characters"));
        }
        Ok(UserId(id))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Key prefix shared by every account of this user (see [`AccountKey::encode`]).
    pub(crate) fn key_prefix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.0.len());
        out.extend_from_slice(&(self.0.len() as u16).to_be_bytes());
        out.extend_from_slice(self.0.as_bytes());
        out
    }
}

impl BrokerId {
    /// 1 to 32 of `a-z 0-9 - _`, starting with a letter or digit.
    pub fn new(id: impl Into<String>) -> Result<BrokerId, VaultError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 32
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && id.as_bytes()[0].is_ascii_alphanumeric();
        if !ok {
            return Err(VaultError::InvalidId {
                what: "broker id",
                value: id,
                reason: "must be 1 to 32 of a-z, 0-9, '-' and '_'",
            });
        }
        Ok(BrokerId(id))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! id_traits {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&self.0)
            }
        }
        impl TryFrom<String> for $t {
            type Error = VaultError;
            fn try_from(s: String) -> Result<Self, VaultError> {
                <$t>::new(s)
            }
        }
        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.0
            }
        }
        // As its string, without the copy `#[serde(into = "String")]` makes.
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = VaultError;
            fn from_str(s: &str) -> Result<Self, VaultError> {
                <$t>::new(s)
            }
        }
    };
}
id_traits!(UserId);
id_traits!(BrokerId);

/// One account: a user at a broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountKey {
    /// The user.
    pub user: UserId,
    /// The broker.
    pub broker: BrokerId,
}

impl AccountKey {
    /// The key of `user` at `broker`.
    pub fn new(user: UserId, broker: BrokerId) -> AccountKey {
        AccountKey { user, broker }
    }

    /// Parse both ids.
    pub fn parse(user: &str, broker: &str) -> Result<AccountKey, VaultError> {
        Ok(AccountKey::new(UserId::new(user)?, BrokerId::new(broker)?))
    }

    /// Storage key: `len(user) u16 BE | user | len(broker) u8 | broker`. The user part comes first
    /// so one prefix scan finds every account of a user.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.user.key_prefix();
        out.push(self.broker.0.len() as u8);
        out.extend_from_slice(self.broker.0.as_bytes());
        out
    }

    /// Inverse of [`encode`](Self::encode); also returns the bytes after the key.
    pub(crate) fn decode_prefix(bytes: &[u8]) -> Option<(AccountKey, &[u8])> {
        let user_len = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
        let user = std::str::from_utf8(bytes.get(2..2 + user_len)?).ok()?;
        let rest = &bytes[2 + user_len..];
        let broker_len = *rest.first()? as usize;
        let broker = std::str::from_utf8(rest.get(1..1 + broker_len)?).ok()?;
        let key = AccountKey::parse(user, broker).ok()?;
        Some((key, &rest[1 + broker_len..]))
    }
}

impl std::fmt::Display for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.user, self.broker)
    }
}

/// A broker login's secrets. Which are needed depends on the strategy's manifest.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Login password.
    pub password: Option<SecretString>,
    /// API (app) key. Not strictly secret at every broker, stored encrypted all the same.
    pub api_key: Option<SecretString>,
    /// API (app) secret.
    pub api_secret: Option<SecretString>,
    /// TOTP secret (base32 or an `otpauth://` URI).
    pub totp_secret: Option<SecretString>,
}

impl Credentials {
    /// The fields whose value differs from `other`'s (a field set on one side only counts).
    pub fn changed_fields(&self, other: &Credentials) -> Vec<&'static str> {
        use secrecy::ExposeSecret;
        fn value(s: &Option<SecretString>) -> Option<&str> {
            s.as_ref().map(|s| s.expose_secret())
        }
        [
            ("password", &self.password, &other.password),
            ("api_key", &self.api_key, &other.api_key),
            ("api_secret", &self.api_secret, &other.api_secret),
            ("totp_secret", &self.totp_secret, &other.totp_secret),
        ]
        .into_iter()
        .filter(|(_, a, b)| value(a) != value(b))
        .map(|(name, _, _)| name)
        .collect()
    }

    /// Names of the secret credential fields, as the CLI, the API and `--from-json` spell them.
    pub const FIELDS: [&'static str; 4] = ["password", "api_key", "api_secret", "totp_secret"];

    /// The field called `name`.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        match name {
            "password" => self.password.as_ref(),
            "api_key" => self.api_key.as_ref(),
            "api_secret" => self.api_secret.as_ref(),
            "totp_secret" => self.totp_secret.as_ref(),
            _ => None,
        }
    }

    /// Set the field called `name`; false for an unknown name.
    pub fn set(&mut self, name: &str, value: SecretString) -> bool {
        let slot = match name {
            "password" => &mut self.password,
            "api_key" => &mut self.api_key,
            "api_secret" => &mut self.api_secret,
            "totp_secret" => &mut self.totp_secret,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// Why an account needs an operator: the error class and message of the login that gave up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attention {
    /// Login error class (`invalid_credentials`, ...).
    pub class: String,
    /// Message (from the plugin, already redacted).
    pub message: String,
    /// Since when, Unix ms.
    pub since_ms: i64,
}

impl Attention {
    /// Whether new credentials can fix what this attention is about: `changed` names the fields
    /// (`broker_user_id` included) whose value changed. A failure is fixed only by the fields its
    /// class depends on: re-saving the same password, or a new TOTP secret after a wrong
    /// password, must not send a password the broker called wrong again.
    pub fn cleared_by(&self, changed: &[&str]) -> bool {
        let fixes: &[&str] = match self.class.as_str() {
            "invalid_credentials" => &["broker_user_id", "password", "api_key", "api_secret"],
            // Unlocking needs a credential reset at the broker, which means a new password.
            "account_locked" => &["broker_user_id", "password"],
            "twofa_rejected" | "twofa_unavailable" => &["totp_secret"],
            "app_not_authorized" => &["api_key"],
            // automation_blocked, protocol, anything else: no credential fixes these; an
            // assisted login or an operator's explicit clear does.
            _ => &[],
        };
        fixes.iter().any(|f| changed.contains(f))
    }

    /// Whether a successful assisted (browser) login resolves it: it shows that a person can log
    /// in, not that the stored password or TOTP secret is right.
    pub fn resolved_by_assisted_login(&self) -> bool {
        matches!(
            self.class.as_str(),
            "automation_blocked" | "twofa_unavailable" | "app_not_authorized"
        )
    }
}

/// The state an account is shown in, derived from its flags and attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    /// Refreshed on schedule.
    Active,
    /// Auto-refresh is off.
    Paused,
    /// Logged in elsewhere (the IIFL job's INTEGRATION_MANAGED users): never logged in, skipped.
    ManagedExternally,
    /// A login failed in a way retrying cannot fix; waits for new credentials.
    NeedsAttention,
}

impl AccountState {
    /// `active`, `paused`, `managed_externally` or `needs_attention`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::Paused => "paused",
            AccountState::ManagedExternally => "managed_externally",
            AccountState::NeedsAttention => "needs_attention",
        }
    }
}

/// An account without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The user.
    pub user: UserId,
    /// The broker.
    pub broker: BrokerId,
    /// The user's id at the broker (client code). Not secret.
    pub broker_user_id: String,
    /// Whether the scheduler logs this account in.
    pub auto_refresh: bool,
    /// Whether another system logs this account in (never logged in here; counted as skipped).
    pub managed_externally: bool,
    /// Set when a login failed for a reason retrying cannot fix; cleared by new credentials.
    pub attention: Option<Attention>,
    /// Set while scheduled and catch-up logins wait after refreshes that ended in a retryable
    /// failure; cleared by a stored token or new credentials. Kept here so a restart remembers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// The last TOTP step handed to a strategy for this account, recorded before the code left
    /// the host: no process, before or after a crash, hands out that step or an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_totp_step: Option<u64>,
    /// Created, Unix ms.
    pub created_at_ms: i64,
    /// Last changed, Unix ms.
    pub updated_at_ms: i64,
}

/// The wait after refreshes that ended in a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Refreshes in a row that ended in a retryable failure.
    pub failures: u32,
    /// No scheduled or catch-up login before this instant, Unix ms.
    pub until_ms: i64,
}

impl Account {
    /// The account's key.
    pub fn key(&self) -> AccountKey {
        AccountKey::new(self.user.clone(), self.broker.clone())
    }

    /// Derived state: managed externally, else needs attention, else paused, else active.
    pub fn state(&self) -> AccountState {
        if self.managed_externally {
            AccountState::ManagedExternally
        } else if self.attention.is_some() {
            AccountState::NeedsAttention
        } else if !self.auto_refresh {
            AccountState::Paused
        } else {
            AccountState::Active
        }
    }
}

/// An account to store (created, or replaced with its credentials).
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Which account.
    pub key: AccountKey,
    /// The user's id at the broker.
    pub broker_user_id: String,
    /// Its secrets.
    pub credentials: Credentials,
    /// Whether the scheduler logs it in.
    pub auto_refresh: bool,
    /// Whether another system logs it in.
    pub managed_externally: bool,
}

/// A change of flags; `None` leaves a flag as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// New `auto_refresh`.
    pub auto_refresh: Option<bool>,
    /// New `managed_externally`.
    pub managed_externally: Option<bool>,
    /// Clear needs-attention: the operator's word that the cause is fixed (an unlocked account,
    /// a broker fixed by a new plugin), which no credential change shows.
    pub clear_attention: bool,
}

/// Broker-specific JSON that may hold secrets (refresh tokens, session cookies). Zeroized on drop,
/// never printed.
#[derive(Clone)]
pub struct SecretJson(Zeroizing<String>);

impl SecretJson {
    /// `{}`.
    pub fn empty() -> SecretJson {
        SecretJson(Zeroizing::new("{}".into()))
    }

    /// From a JSON value.
    pub fn from_value(value: &serde_json::Value) -> SecretJson {
        SecretJson(Zeroizing::new(value.to_string()))
    }

    /// From JSON text; refused (without echoing it) when it does not parse.
    pub fn from_text(text: String) -> Result<SecretJson, serde_json::Error> {
        let text = Zeroizing::new(text);
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(SecretJson(text))
    }

    /// The JSON text.
    pub fn expose_text(&self) -> &str {
        &self.0
    }

    /// Parsed (the caller owns the copy).
    pub fn expose_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl Default for SecretJson {
    fn default() -> Self {
        SecretJson::empty()
    }
}

impl std::fmt::Debug for SecretJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretJson([REDACTED])")
    }
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The access token.
    pub access_token: SecretString,
    /// When it was issued, Unix ms.
    pub issued_at_ms: i64,
    /// When it stops working, Unix ms.
    pub expires_at_ms: i64,
    /// Broker-specific extras.
    pub extras: SecretJson,
}

/// A stored token.
#[derive(Debug, Clone)]
pub struct Token {
    /// The access token.
    pub access_token: SecretString,
    /// When it was issued, Unix ms.
    pub issued_at_ms: i64,
    /// When it stops working, Unix ms.
    pub expires_at_ms: i64,
    /// Broker-specific extras.
    pub extras: SecretJson,
    /// Grows with every token put, across the vault (so also across a delete and re-add): the
    /// mirror keeps the highest.
    pub generation: u64,
}

/// What started a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The broker's cron schedule.
    Schedule,
    /// Start-up or after downtime: the token was missing or expired.
    CatchUp,
    /// The CLI.
    Manual,
    /// An API call.
    Api,
    /// An assisted (browser) login.
    Assisted,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A token was stored.
    Success,
    /// The login failed.
    Failed,
    /// Not attempted (paused, managed externally, needs attention).
    Skipped,
}

/// One login attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started, Unix ms.
    pub time_ms: i64,
    /// What started it.
    pub trigger: Trigger,
    /// 1 for the first try of a refresh, 2 for its first retry, ...
    pub attempt: u32,
    /// How long it took.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Login error class when it failed.
    pub error_class: Option<String>,
    /// Message (already redacted).
    pub message: Option<String>,
}

/// An attempt as read back, with its account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedAttempt {
    /// Which account.
    pub account: AccountKey,
    /// Insertion order across the vault.
    pub seq: u64,
    /// The attempt.
    #[serde(flatten)]
    pub attempt: Attempt,
}

/// A read of a token through the service API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, Unix ms.
    pub time_ms: i64,
    /// Name of the API key used.
    pub api_key_name: String,
    /// Whose token.
    pub user: UserId,
    /// Which broker.
    pub broker: BrokerId,
}

/// A token read as the API queues it for the audit log: [`AuditEntry`]'s fields, shared with the
/// API's key table and body cache rather than copied for each read. Stored as an [`AuditEntry`].
#[derive(Debug, Clone)]
pub struct AuditRead {
    /// When, Unix ms.
    pub time_ms: i64,
    /// Name of the API key used.
    pub api_key_name: std::sync::Arc<str>,
    /// Whose token, at which broker.
    pub account: std::sync::Arc<AccountKey>,
}

impl Serialize for AuditRead {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// [`AuditEntry`]'s fields, borrowed.
        #[derive(Serialize)]
        struct Shape<'a> {
            time_ms: i64,
            api_key_name: &'a str,
            user: &'a UserId,
            broker: &'a BrokerId,
        }
        Shape {
            time_ms: self.time_ms,
            api_key_name: &self.api_key_name,
            user: &self.account.user,
            broker: &self.account.broker,
        }
        .serialize(serializer)
    }
}

/// What the audit log stores: an [`AuditEntry`], or an [`AuditRead`] (which serialises as one).
pub trait AuditRecord: Serialize + sealed::Sealed {}
impl AuditRecord for AuditEntry {}
impl AuditRecord for AuditRead {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::AuditEntry {}
    impl Sealed for super::AuditRead {}
}

/// Status of an outbox record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    /// A new token.
    Active,
    /// The token is gone (account removed); the mirror should drop or mark its row.
    Revoked,
}

/// A token change waiting for the Postgres mirror.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    /// Position in the outbox; grows forever.
    pub seq: u64,
    /// Whose token.
    pub user: UserId,
    /// Which broker.
    pub broker: BrokerId,
    /// The user's id at the broker.
    pub broker_user_id: String,
    /// The token's generation (a revocation gets one of its own).
    pub generation: u64,
    /// The token; none when revoked.
    pub access_token: Option<SecretString>,
    /// Issued, Unix ms; none when revoked.
    pub issued_at_ms: Option<i64>,
    /// Expires, Unix ms; none when revoked.
    pub expires_at_ms: Option<i64>,
    /// Active or revoked.
    pub status: OutboxStatus,
    /// When the change happened, Unix ms.
    pub changed_at_ms: i64,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Records per table.
    pub counts: BTreeMap<&'static str, u64>,
    /// Records that failed to decrypt or parse, or that are inconsistent.
    pub failures: Vec<VerifyFailure>,
}

impl VerifyReport {
    /// No failures.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// One record that failed verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyFailure {
    /// Table name.
    pub table: &'static str,
    /// Printable record key.
    pub key: String,
    /// What is wrong (never record contents).
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_encode_unambiguously() {
        let a = AccountKey::parse("ab", "c").unwrap();
        let b = AccountKey::parse("a", "bc").unwrap();
        assert_ne!(a.encode(), b.encode());
        let mut bytes = a.encode();
        bytes.extend_from_slice(&[1, 2]);
        let (decoded, rest) = AccountKey::decode_prefix(&bytes).unwrap();
        assert_eq!((decoded, rest), (a.clone(), &[1u8, 2][..]));
        assert!(a.encode().starts_with(&a.user.key_prefix()));
        assert!(
            !AccountKey::parse("a", "x")
                .unwrap()
                .encode()
                .starts_with(&UserId::new("ab").unwrap().key_prefix())
        );
    }

    #[test]
    fn ids_are_validated() {
        assert!(UserId::new("28748327").is_ok());
        assert!(UserId::new("6f1c1c1e-8c1a-4b5e-9d1a-1e2f3a4b5c6d").is_ok());
        assert!(UserId::new("").is_err());
        assert!(UserId::new("a b").is_err());
        assert!(BrokerId::new("iifl-xts").is_ok());
        assert!(BrokerId::new("Kite").is_err());
        assert!(BrokerId::new("-x").is_err());
    }

    #[test]
    fn state_is_derived_in_order() {
        let mut account = Account {
            user: UserId::new("u").unwrap(),
            broker: BrokerId::new("kite").unwrap(),
            broker_user_id: "AB1234".into(),
            auto_refresh: true,
            managed_externally: false,
            attention: None,
            backoff: None,
            last_totp_step: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        assert_eq!(account.state(), AccountState::Active);
        account.auto_refresh = false;
        assert_eq!(account.state(), AccountState::Paused);
        account.attention = Some(Attention {
            class: "invalid_credentials".into(),
            message: "wrong password".into(),
            since_ms: 1,
        });
        assert_eq!(account.state(), AccountState::NeedsAttention);
        account.managed_externally = true;
        assert_eq!(account.state(), AccountState::ManagedExternally);
    }

    #[test]
    fn secrets_do_not_print() {
        let creds = Credentials {
            password: Some("hunter2".into()),
            ..Credentials::default()
        };
        let token = Token {
            access_token: "tok-123".into(),
            issued_at_ms: 0,
            expires_at_ms: 0,
            extras: SecretJson::from_value(&serde_json::json!({"refresh": "rt-456"})),
            generation: 1,
        };
        let shown = format!("{creds:?} {token:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-123") && !shown.contains("rt-456"),
            "{shown}"
        );
    }

    #[test]
    fn an_audit_read_is_stored_as_an_audit_entry() {
        let read = AuditRead {
            time_ms: 1_733_000_000_123,
            api_key_name: std::sync::Arc::from("backend"),
            account: std::sync::Arc::new(AccountKey::parse("user-1", "kite").unwrap()),
        };
        let entry: AuditEntry =
            serde_json::from_slice(&serde_json::to_vec(&read).unwrap()).unwrap();
        assert_eq!(
            entry,
            AuditEntry {
                time_ms: 1_733_000_000_123,
                api_key_name: "backend".into(),
                user: UserId::new("user-1").unwrap(),
                broker: BrokerId::new("kite").unwrap(),
            }
        );
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            serde_json::to_string(&entry).unwrap()
        );
    }
}
