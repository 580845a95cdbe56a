//! Domain types of the vault: accounts and tokens. Secret fields are `SecretString` or
//! [`SecretJson`]: zeroized on drop, and their `Debug` shows `[REDACTED]`; none implements
//! `Display`.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::credentials::Credentials;
use super::ids::{AccountKey, BrokerId, UserId};

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
    pub fn cleared_by<S: AsRef<str>>(&self, changed: &[S]) -> bool {
        let changed = || changed.iter().map(AsRef::as_ref);
        match self.class.as_str() {
            // A field a login sends as who the user is or what they know: the password or PIN,
            // the app's key, or an identity field a strategy declares. Not the TOTP secret, and
            // not a field the login does not send (Fyers' `redirect_uri`).
            "invalid_credentials" => changed().any(|f| {
                matches!(
                    f,
                    "broker_user_id"
                        | "password"
                        | "pin"
                        | "api_key"
                        | "api_secret"
                        | "mobile"
                        | "dob_or_pan"
                        | "api_user_id"
                )
            }),
            // Unlocking needs a credential reset at the broker: a new password or PIN.
            "account_locked" => {
                changed().any(|f| matches!(f, "broker_user_id" | "password" | "pin"))
            }
            "twofa_rejected" | "twofa_unavailable" => changed().any(|f| f == "totp_secret"),
            "app_not_authorized" => changed().any(|f| f == "api_key"),
            // automation_blocked, protocol, anything else: no credential fixes these; an
            // assisted login or an operator's explicit clear does.
            _ => false,
        }
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
    /// Set while the broker waits for a person to approve a token request it will deliver to
    /// the webhook (Upstox's approval mode): no new request is sent until it is fulfilled or
    /// expires. Kept here so a restart still accepts the delivery and sends no second request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_approval: Option<PendingApproval>,
    /// Created, Unix ms.
    pub created_at_ms: i64,
    /// Last changed, Unix ms.
    pub updated_at_ms: i64,
}

/// A token request a person has yet to approve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// When the request was sent, Unix ms (a delivery issued well before it is stale).
    pub requested_at_ms: i64,
    /// Until when the person may approve it, Unix ms (the broker's expiry).
    pub until_ms: i64,
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
    /// The extras consumers may have (the strategy's `served_extras`): a JSON object holding a
    /// subset of `extras`, handed out by the token API and the Postgres mirror.
    pub served_extras: SecretJson,
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
    /// The extras consumers may have: `{}` for a token stored before ABI 1.2.
    pub served_extras: SecretJson,
    /// Grows with every token put, across the vault (so also across a delete and re-add): the
    /// mirror keeps the highest.
    pub generation: u64,
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
    fn a_refused_credential_is_cleared_only_by_a_field_the_login_sends() {
        let wrong = Attention {
            class: "invalid_credentials".into(),
            message: String::new(),
            since_ms: 0,
        };
        for fixes in [
            "pin",
            "password",
            "mobile",
            "dob_or_pan",
            "api_user_id",
            "api_key",
        ] {
            assert!(wrong.cleared_by(&[fixes]), "{fixes}");
        }
        for not in ["totp_secret", "redirect_uri"] {
            assert!(!wrong.cleared_by(&[not]), "{not}");
        }
        let locked = Attention {
            class: "account_locked".into(),
            ..wrong
        };
        assert!(locked.cleared_by(&["pin"]) && !locked.cleared_by(&["api_key"]));
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
            pending_approval: None,
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
            served_extras: Default::default(),
        };
        let shown = format!("{creds:?} {token:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-123") && !shown.contains("rt-456"),
            "{shown}"
        );
    }
}
