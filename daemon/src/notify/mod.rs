//! Approval push: when an account needs a person (a login failed for good, the broker lets only
//! a person log in, or the broker waits for an approval), tell that person at once, with a link
//! that does the rest and when it expires, on every configured channel: the generic webhook
//! (`[refresh] webhook_url`) and Telegram (`[notify.telegram]`). Never a secret or a token: see
//! [`Notice`].
//!
//! Callers say what happened ([`Notifier::needs_attention`], [`Notifier::assisted_login_needed`],
//! [`Notifier::approval_requested`], [`Notifier::approval_resolved`]) and return at once;
//! delivery runs on each channel's own task (`deliver`). Pending approvals are announced once
//! more shortly before they expire (`remind`).

mod deliver;
mod notice;
pub mod remind;
mod telegram;

pub use notice::{Notice, NoticeAccount, NoticeKind, TELEGRAM_TEXT_MAX, attention_reason};
pub use remind::{PendingApproval, Step, next_step, run};

use std::collections::HashMap;
use std::sync::Arc;

use broker_api::wire::ErrorClass;
use parking_lot::Mutex;

use crate::clock::Clock;
use crate::config::{ChatId, Config, ConfigError, NotifyConfig};
use crate::vault::{AccountKey, BrokerId, UserId, Vault};
use deliver::{Channel, Outlet};
use telegram::Telegram;

/// Tells people that their accounts need them. One per daemon, owned by the refresher.
pub struct Notifier {
    clock: Arc<dyn Clock>,
    /// `[server] public_url`, the base of the assisted-login links.
    public_url: Option<url::Url>,
    /// Signs the one-tap login links (none without a vault: then notices carry no link).
    signer: Option<Arc<Vault>>,
    /// How long a login link works (`[notify] link_ttl_secs`).
    link_ttl_ms: i64,
    remind_before_ms: i64,
    quiet_ms: i64,
    /// The configured channels, each with its queue and task.
    outlets: Vec<Outlet>,
    /// Approvals the broker waits for, by account: registered by `approval_requested`, dropped
    /// by `approval_resolved` or once expired. Only the re-notify rule reads them; nothing here
    /// outlives a restart (a restarted daemon asks again at the next scheduled time).
    pending: Mutex<HashMap<AccountKey, (Notice, PendingApproval)>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.outlets.len())
            .finish_non_exhaustive()
    }
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl Notifier {
    /// The channels `config` configures; none is contacted before the first notice. `signer`
    /// signs the one-tap login links.
    pub fn new(config: &Config, clock: Arc<dyn Clock>, signer: Option<Arc<Vault>>) -> Notifier {
        let notify = &config.notify;
        let mut channels = Vec::new();
        if let Some(url) = &config.refresh.webhook_url {
            channels.push(Channel::Webhook(url.clone()));
        }
        if let Some(telegram) = Telegram::from_config(&notify.telegram) {
            channels.push(Channel::Telegram(telegram));
        }
        Notifier {
            clock,
            public_url: config.server.public_url.clone(),
            signer,
            link_ttl_ms: secs_ms(notify.link_ttl_secs),
            remind_before_ms: secs_ms(notify.remind_before_secs),
            quiet_ms: secs_ms(notify.quiet_secs),
            outlets: (channels.into_iter())
                .map(|c| Outlet::new(c, notify.queue_capacity))
                .collect(),
            pending: Mutex::default(),
        }
    }

    /// The API route answering the broker's login URL for `key` (a key or the user's token
    /// needed), when `[server] public_url` is set.
    pub fn assisted_login_url(&self, key: &AccountKey) -> Option<url::Url> {
        let base = self.public_url.as_ref()?;
        base.join(&format!("api/login/{}/{}/url", key.broker, key.user))
            .ok()
    }

    /// The one-tap login link for `key` and when it expires: `{public_url}/login/{broker}/
    /// {userId}?until=..&sig=..`, which opens the broker's login page without credentials, for
    /// this account only, until then.
    pub fn login_link(&self, key: &AccountKey) -> Option<(url::Url, i64)> {
        let (base, signer) = (self.public_url.as_ref()?, self.signer.as_ref()?);
        let until_ms = self.clock.now_ms().saturating_add(self.link_ttl_ms);
        let sig = signer.sign_link(&login_link_message(key, until_ms));
        let mut link = base
            .join(&format!("login/{}/{}", key.broker, key.user))
            .ok()?;
        link.query_pairs_mut()
            .append_pair("until", &until_ms.to_string())
            .append_pair("sig", &sig);
        Some((link, until_ms))
    }

    /// Queue `notice` on every channel. Returns at once.
    pub fn send(&self, notice: Notice) {
        tracing::info!(account = %notice.account.key, event = notice.kind.as_str(), reminder = notice.reminder, "notifying");
        for outlet in &self.outlets {
            outlet.push(notice.clone());
        }
    }

    /// A login failed for a reason retrying cannot fix (`class`, with the strategy's `message`).
    pub fn needs_attention(&self, account: NoticeAccount, class: ErrorClass, message: &str) {
        let (link, expires_at_ms) = self.login_link(&account.key).unzip();
        self.send(Notice {
            kind: NoticeKind::NeedsAttention,
            reason: attention_reason(class).to_owned(),
            failure: Some((class, message.to_owned())),
            link,
            assisted_login_url: self.assisted_login_url(&account.key),
            expires_at_ms,
            reminder: false,
            account,
        });
    }

    /// Only a person can log `account` in now: `reason` in plain words, and `link` valid until
    /// `expires_at_ms`, when it expires (default: the daemon's one-tap login link).
    pub fn assisted_login_needed(
        &self,
        account: NoticeAccount,
        reason: &str,
        link: Option<url::Url>,
        expires_at_ms: Option<i64>,
    ) {
        let (link, expires_at_ms) = match link {
            Some(link) => (Some(link), expires_at_ms),
            None => self.login_link(&account.key).unzip(),
        };
        self.send(Notice {
            kind: NoticeKind::AssistedLoginNeeded,
            reason: reason.to_owned(),
            failure: None,
            link,
            assisted_login_url: self.assisted_login_url(&account.key),
            expires_at_ms,
            reminder: false,
            account,
        });
    }

    /// The broker waits for the person to approve a token request for `account` until
    /// `expires_at_ms`; `link` is the broker's approval page, if it has one. Announced now and
    /// once more shortly before it expires, until [`Notifier::approval_resolved`]. A second call
    /// for the same pending request within the quiet interval updates it without announcing it
    /// again. Returns whether it was announced.
    pub fn approval_requested(
        &self,
        account: NoticeAccount,
        link: Option<url::Url>,
        expires_at_ms: i64,
    ) -> bool {
        let now = self.clock.now_ms();
        if expires_at_ms <= now {
            tracing::warn!(account = %account.key, "approval request already expired; not announced");
            return false;
        }
        let broker = display_name(&account.key.broker);
        let reason = match &link {
            Some(_) => format!(
                "Approve the {broker} token request: tap the link, or approve it in the {broker} app or on WhatsApp."
            ),
            None => {
                format!("Approve the {broker} token request in the {broker} app or on WhatsApp.")
            }
        };
        let key = account.key.clone();
        let notice = Notice {
            kind: NoticeKind::ApprovalRequested,
            account,
            reason,
            failure: None,
            link,
            assisted_login_url: None,
            expires_at_ms: Some(expires_at_ms),
            reminder: false,
        };
        let mut pending = self.pending.lock();
        if let Some((old, p)) = pending.get_mut(&key)
            && p.expires_at_ms > now
            && now - p.announced_at_ms < self.quiet_ms
        {
            *old = notice;
            p.expires_at_ms = expires_at_ms;
            return false;
        }
        let state = PendingApproval {
            announced_at_ms: now,
            expires_at_ms,
            reminded: false,
        };
        pending.insert(key, (notice.clone(), state));
        drop(pending);
        self.send(notice);
        true
    }

    /// The approval for `key` came (or the request was withdrawn): no reminder follows.
    pub fn approval_resolved(&self, key: &AccountKey) {
        self.pending.lock().remove(key);
    }

    /// Approvals still pending.
    pub fn pending_approvals(&self) -> usize {
        self.pending.lock().len()
    }

    /// Apply the re-notify rule at `now_ms`: send the reminders due, forget the expired
    /// approvals. The reminders sent.
    pub fn tick(&self, now_ms: i64) -> Vec<Notice> {
        let mut due = Vec::new();
        self.pending.lock().retain(|_, (notice, p)| {
            match next_step(p, now_ms, self.remind_before_ms, self.quiet_ms) {
                Step::Wait => true,
                Step::Forget => false,
                Step::Remind => {
                    p.reminded = true;
                    p.announced_at_ms = now_ms;
                    due.push(Notice {
                        reminder: true,
                        ..notice.clone()
                    });
                    true
                }
            }
        });
        for notice in &due {
            self.send(notice.clone());
        }
        due
    }
}

/// `upstox` -> `Upstox`, for sentences.
fn display_name(broker: &BrokerId) -> String {
    let mut chars = broker.as_str().chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// What a login link signs: the account, and until when (Unix ms).
pub fn login_link_message(key: &AccountKey, until_ms: i64) -> String {
    format!("{}/{}/{until_ms}", key.broker, key.user)
}

/// Refuse a `[notify]` section that cannot work, naming the key (never the bot token's value).
pub fn check_config(config: &NotifyConfig) -> Result<(), ConfigError> {
    for (key, value) in [
        ("notify.quiet_secs", config.quiet_secs),
        ("notify.remind_before_secs", config.remind_before_secs),
        ("notify.link_ttl_secs", config.link_ttl_secs),
        ("notify.queue_capacity", config.queue_capacity as u64),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(key, "0", "must be at least 1"));
        }
    }
    let telegram = &config.telegram;
    let routed = telegram.default_chat_id.is_some() || !telegram.chats.is_empty();
    let Some(token) = &telegram.bot_token else {
        if routed {
            return Err(ConfigError::invalid(
                "notify.telegram.bot_token",
                "",
                "chats are configured but no bot token (set it or TOKENBOT_TELEGRAM_BOT_TOKEN)",
            ));
        }
        return Ok(());
    };
    let token = secrecy::ExposeSecret::expose_secret(token);
    // It becomes a URL path segment: `123456:ABC-DEF...` from @BotFather.
    let shaped = token.split_once(':').is_some_and(|(id, rest)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if !shaped {
        return Err(ConfigError::invalid(
            "notify.telegram.bot_token",
            "(hidden)",
            "must look like 123456789:AA... (the token @BotFather gave)",
        ));
    }
    let base = &telegram.base_url;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return Err(ConfigError::invalid(
            "notify.telegram.base_url",
            base.as_str(),
            "must be an absolute http(s) URL",
        ));
    }
    if !routed {
        return Err(ConfigError::invalid(
            "notify.telegram.default_chat_id",
            "",
            "a bot token is set but no chat: set default_chat_id or chats",
        ));
    }
    check_routes(config)
}

fn check_routes(config: &NotifyConfig) -> Result<(), ConfigError> {
    let telegram = &config.telegram;
    let chat_ok = |chat: &ChatId| match chat {
        ChatId::Id(_) => true,
        ChatId::Name(name) => name.starts_with('@') || name.parse::<i64>().is_ok(),
    };
    if let Some(chat) = &telegram.default_chat_id
        && !chat_ok(chat)
    {
        return Err(ConfigError::invalid(
            "notify.telegram.default_chat_id",
            chat.to_string(),
            "must be a numeric chat id or @channelname",
        ));
    }
    for (route, chat) in &telegram.chats {
        let key = format!("notify.telegram.chats.\"{route}\"");
        let (user, broker) = match route.rsplit_once('/') {
            Some((user, broker)) => (user, Some(broker)),
            None => (route.as_str(), None),
        };
        let ids_ok = UserId::new(user).is_ok() && broker.is_none_or(|b| BrokerId::new(b).is_ok());
        if !ids_ok {
            return Err(ConfigError::invalid(
                key,
                route,
                "a route is \"<user_id>\" or \"<user_id>/<broker>\"",
            ));
        }
        if !chat_ok(chat) {
            return Err(ConfigError::invalid(
                key,
                chat.to_string(),
                "must be a numeric chat id or @channelname",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
