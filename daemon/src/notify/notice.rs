//! What a notification says, and how each channel words it.
//!
//! A [`Notice`] is the whole of what any channel can send: the account (its ids, never its
//! credentials), the reason in plain words, a link and when it expires. No field is of a secret
//! type (`SecretString`, `Credentials`, a token), and nothing else reaches a channel: the webhook
//! body and the Telegram message are built from these fields alone.

use broker_api::wire::ErrorClass;
use chrono::{DateTime, FixedOffset};
use serde_json::{Value, json};

use crate::clock::iso;
use crate::vault::{Account, AccountKey};

/// Most characters Telegram takes in one message.
pub const TELEGRAM_TEXT_MAX: usize = 4096;

/// Why a person is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// A login failed for a reason retrying cannot fix; the account waits for a person.
    NeedsAttention,
    /// The broker lets only a person log in; the link starts that login.
    AssistedLoginNeeded,
    /// The broker asked the person to approve a token request (Upstox): one tap does it.
    ApprovalRequested,
}

impl NoticeKind {
    /// The webhook's `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::NeedsAttention => "needs_attention",
            NoticeKind::AssistedLoginNeeded => "assisted_login_needed",
            NoticeKind::ApprovalRequested => "approval_requested",
        }
    }
}

/// The account a notice is about: who, at which broker, and the user's id there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeAccount {
    /// User and broker.
    pub key: AccountKey,
    /// The user's id at the broker (client code; not secret).
    pub broker_user_id: String,
}

impl NoticeAccount {
    /// The account `key`, known at its broker as `broker_user_id`.
    pub fn new(key: AccountKey, broker_user_id: impl Into<String>) -> NoticeAccount {
        NoticeAccount {
            key,
            broker_user_id: broker_user_id.into(),
        }
    }
}

impl From<&Account> for NoticeAccount {
    fn from(account: &Account) -> NoticeAccount {
        NoticeAccount::new(account.key(), account.broker_user_id.clone())
    }
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Why a person is needed.
    pub kind: NoticeKind,
    /// Whose account.
    pub account: NoticeAccount,
    /// What the person should do, in plain words.
    pub reason: String,
    /// For `needs_attention`: the failed login's class and message (the strategy's words, which
    /// pass the host's redaction before they are recorded).
    pub failure: Option<(ErrorClass, String)>,
    /// The one-tap link: the broker's approval page, or the daemon's signed login link
    /// (`{public_url}/login/...`), which opens the broker's login page without credentials.
    pub link: Option<url::Url>,
    /// The API route that answers the broker's login URL to a caller with a key
    /// (`{public_url}/api/login/{broker}/{userId}/url`), for backends; sent by the webhook as
    /// `assisted_login_url`, as before the one-tap link existed.
    pub assisted_login_url: Option<url::Url>,
    /// When the link stops working (Unix ms), when it does.
    pub expires_at_ms: Option<i64>,
    /// A second announcement of a pending approval, shortly before it expires.
    pub reminder: bool,
}

/// A needs-attention class in plain words: what happened and what the person can do.
pub fn attention_reason(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::InvalidCredentials => {
            "The broker says the stored user id, password or API secret is wrong. Update the \
             credentials; tokenbot will not try them again until then."
        }
        ErrorClass::TwofaRejected => {
            "The broker refused the one-time code. Check the stored TOTP secret."
        }
        ErrorClass::TwofaUnavailable => {
            "The account's second factor is not one tokenbot can produce. Log in by hand."
        }
        ErrorClass::AppNotAuthorized => {
            "The broker says the API app is not authorised for this account. Check the app's \
             API key and redirect URL at the broker."
        }
        ErrorClass::AccountLocked => {
            "The broker reports the account locked or blocked. Unlock it at the broker."
        }
        ErrorClass::AutomationBlocked => {
            "The broker blocked the automatic login. Log in by hand with the link."
        }
        _ => "The login failed in a way tokenbot cannot fix by retrying. Log in by hand.",
    }
}

/// Unix ms as IST wall time, which is how the people tapping these links read the time.
fn ist(ms: i64) -> String {
    let offset = FixedOffset::east_opt(19_800).expect("+05:30 is a valid offset");
    DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| {
            t.with_timezone(&offset)
                .format("%Y-%m-%d %H:%M IST")
                .to_string()
        },
    )
}

impl Notice {
    /// The generic webhook's JSON body. The first seven fields are the ones the webhook always
    /// sent (consumers may rely on them); the others were added with the other kinds.
    pub fn webhook_body(&self) -> Value {
        let key = &self.account.key;
        let (class, message) = match &self.failure {
            Some((class, message)) => (Some(class.as_str()), message.as_str()),
            None => (None, self.reason.as_str()),
        };
        let assisted = self.assisted_login_url.as_ref().map(url::Url::as_str);
        json!({
            "event": self.kind.as_str(),
            "user_id": key.user.as_str(),
            "broker": key.broker.as_str(),
            "broker_user_id": self.account.broker_user_id,
            "error_class": class,
            "message": message,
            "assisted_login_url": assisted,
            "reason": self.reason,
            "link": self.link.as_ref().map(url::Url::as_str),
            "link_expires_at": self.expires_at_ms.map(iso),
            "reminder": self.reminder,
        })
    }

    /// The Telegram message: plain text (no parse mode, so nothing needs escaping), at most
    /// [`TELEGRAM_TEXT_MAX`] characters.
    pub fn telegram_text(&self) -> String {
        let key = &self.account.key;
        let what = match (self.kind, self.reminder) {
            (NoticeKind::NeedsAttention, _) => "needs attention",
            (NoticeKind::AssistedLoginNeeded, _) => "needs a login by hand",
            (NoticeKind::ApprovalRequested, false) => "waits for your approval",
            (NoticeKind::ApprovalRequested, true) => "still waits for your approval",
        };
        let mut text = format!(
            "tokenbot: {} account {} of user {} {what}.\n{}",
            key.broker, self.account.broker_user_id, key.user, self.reason
        );
        if let Some((class, message)) = &self.failure {
            text.push_str(&format!("\nBroker said ({class}): {message}"));
        }
        let mut tail = String::new();
        if let Some(link) = &self.link {
            tail.push_str(&format!("\n\nOpen: {link}"));
        }
        if let Some(at) = self.expires_at_ms {
            tail.push_str(&format!("\nExpires: {} ({})", ist(at), iso(at)));
        }
        // The link and the expiry matter most: the reason is what gets cut.
        let room = TELEGRAM_TEXT_MAX.saturating_sub(tail.chars().count());
        if text.chars().count() > room {
            text = text.chars().take(room.saturating_sub(1)).collect();
            text.push('…');
        }
        text + &tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(kind: NoticeKind) -> Notice {
        Notice {
            kind,
            account: NoticeAccount::new(AccountKey::parse("u1", "upstox").unwrap(), "AB1234"),
            reason: "Approve the request.".into(),
            failure: None,
            link: Some("https://example.com/approve".parse().unwrap()),
            assisted_login_url: None,
            expires_at_ms: Some(1_732_226_400_000),
            reminder: false,
        }
    }

    #[test]
    fn the_webhook_body_has_exactly_the_documented_fields() {
        let body = notice(NoticeKind::ApprovalRequested).webhook_body();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "event",
            "user_id",
            "broker",
            "broker_user_id",
            "error_class",
            "message",
            "assisted_login_url",
            "reason",
            "link",
            "link_expires_at",
            "reminder",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        // A new field is a decision (and a docs change), never an accident.
        assert_eq!(keys, expected);
        assert!(keys.iter().all(|k| {
            !["token", "secret", "password", "pin"]
                .iter()
                .any(|s| k.contains(s))
        }));
        assert_eq!(body["link_expires_at"], "2024-11-21T22:00:00.000Z");
        assert_eq!(body["assisted_login_url"], Value::Null);
    }

    #[test]
    fn the_telegram_text_keeps_link_and_expiry_when_the_reason_is_long() {
        let mut n = notice(NoticeKind::AssistedLoginNeeded);
        n.reason = "x".repeat(10_000);
        let text = n.telegram_text();
        assert_eq!(text.chars().count(), TELEGRAM_TEXT_MAX);
        assert!(text.contains("Open: https://example.com/approve"), "{text}");
        assert!(text.ends_with("(2024-11-21T22:00:00.000Z)"), "{text}");
        assert!(text.contains("2024-11-22 03:30 IST"), "{text}");
    }
}
