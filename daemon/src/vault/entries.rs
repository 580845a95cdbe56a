//! What the vault's logs hold: login attempts, token reads (audit) and token changes waiting for
//! the Postgres mirror (outbox).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::ids::{AccountKey, BrokerId, UserId};

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
    /// Not a failure: the broker asked a person to approve the login, and will deliver the
    /// token to the webhook.
    #[serde(rename = "pending_approval")]
    PendingApproval,
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

/// A committed token change as listeners see it: the outbox record without the token, so it can
/// travel to consumers (server-sent events, webhooks) that must never see one, and to the other
/// daemons sharing a PostgreSQL vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenChange {
    /// The outbox record's sequence number: grows forever, in commit order, across restarts.
    pub seq: u64,
    /// Whose token.
    pub user: UserId,
    /// Which broker.
    pub broker: BrokerId,
    /// The token's generation (a revocation gets one of its own).
    pub generation: u64,
    /// Expires, Unix ms; none when revoked.
    pub expires_at_ms: Option<i64>,
    /// Active or revoked.
    pub status: OutboxStatus,
    /// When the change happened, Unix ms.
    pub changed_at_ms: i64,
}

/// Called after each commit that changed tokens, with the changes in sequence order, while the
/// vault's writer lock is still held (so calls arrive in commit order). It must not block or
/// call the vault.
pub type TokenListener = std::sync::Arc<dyn Fn(&[TokenChange]) + Send + Sync>;

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
    /// The token's served extras (a JSON object); none when revoked or written before ABI 1.2.
    pub served_extras: Option<super::SecretJson>,
    /// Active or revoked.
    pub status: OutboxStatus,
    /// When the change happened, Unix ms.
    pub changed_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
