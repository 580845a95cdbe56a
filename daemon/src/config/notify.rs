//! `[notify]`: telling a person that an account needs them (`notify` interprets and checks it).

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// `[notify]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The shortest time between two announcements of one pending approval, in seconds.
    pub quiet_secs: u64,
    /// How long before a pending approval expires it is announced once more, in seconds.
    pub remind_before_secs: u64,
    /// How long a notice's one-tap login link works, in seconds.
    pub link_ttl_secs: u64,
    /// Notifications waiting per channel; one more is dropped (and logged) rather than slowing
    /// the refresher down.
    pub queue_capacity: usize,
    /// `[notify.telegram]`
    pub telegram: TelegramConfig,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            quiet_secs: 600,
            remind_before_secs: 900,
            link_ttl_secs: 43_200,
            queue_capacity: 256,
            telegram: TelegramConfig::default(),
        }
    }
}

/// `[notify.telegram]`: Telegram's Bot API, on when `bot_token` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// The bot's token from @BotFather (`TOKENBOT_TELEGRAM_BOT_TOKEN`). A secret: it is part of
    /// every request's URL, so only the host is ever logged.
    #[serde(skip_serializing)]
    pub bot_token: Option<SecretString>,
    /// The Bot API's base URL (a local Bot API server, or a fake in tests).
    pub base_url: url::Url,
    /// The chat an account without a route of its own is announced in.
    pub default_chat_id: Option<ChatId>,
    /// Routes: `"<user_id>/<broker>"` or `"<user_id>"` to a chat; the most specific wins.
    pub chats: BTreeMap<String, ChatId>,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            bot_token: None,
            base_url: url::Url::parse("https://api.telegram.org").expect("a URL"),
            default_chat_id: None,
            chats: BTreeMap::new(),
        }
    }
}

/// A Telegram chat: a numeric id (groups are negative) or a public `@channel` name, as the Bot
/// API takes either.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ChatId {
    /// A numeric chat id.
    Id(i64),
    /// A numeric id written as a string, or `@channelusername`.
    Name(String),
}

impl std::fmt::Display for ChatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatId::Id(id) => write!(f, "{id}"),
            ChatId::Name(name) => f.write_str(name),
        }
    }
}
