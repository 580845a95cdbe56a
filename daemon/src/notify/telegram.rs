//! Telegram's Bot API as a channel: `POST {base_url}/bot<token>/sendMessage` with `chat_id`,
//! `text` and, for an https link, a one-tap button. The token is part of the URL, so no URL of
//! this module is ever logged (only the host) and reqwest's errors lose theirs.
//!
//! Telegram answers `{"ok":true,"result":{...}}`, or `{"ok":false,"error_code":..,
//! "description":..}` with the code as HTTP status: 429 carries `parameters.retry_after`
//! (seconds), 401 means a wrong bot token, 400 a wrong chat or message.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::deliver::{Tried, retryable, unanswered};
use super::notice::Notice;
use crate::config::{ChatId, TelegramConfig};
use crate::vault::AccountKey;

/// The configured bot and its routes.
pub(super) struct Telegram {
    token: SecretString,
    base_url: url::Url,
    default_chat: Option<ChatId>,
    /// `"<user_id>/<broker>"` or `"<user_id>"` to a chat (`[notify.telegram] chats`).
    chats: std::collections::BTreeMap<String, ChatId>,
}

/// The parts of a Bot API answer this channel reads.
#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize, Default)]
struct Parameters {
    retry_after: Option<u64>,
}

impl Telegram {
    /// The channel `config` describes, when it has a bot token.
    pub(super) fn from_config(config: &TelegramConfig) -> Option<Telegram> {
        Some(Telegram {
            token: config.bot_token.clone()?,
            base_url: config.base_url.clone(),
            default_chat: config.default_chat_id.clone(),
            chats: config.chats.clone(),
        })
    }

    /// The chat `key` is announced in: its own route, its user's, or the default.
    pub(super) fn chat_for(&self, key: &AccountKey) -> Option<&ChatId> {
        let user = key.user.as_str();
        self.chats
            .get(&format!("{user}/{}", key.broker))
            .or_else(|| self.chats.get(user))
            .or(self.default_chat.as_ref())
    }

    pub(super) async fn send(&self, client: &reqwest::Client, notice: &Notice) -> Tried {
        let Some(chat) = self.chat_for(&notice.account.key) else {
            tracing::debug!(account = %notice.account.key, "no Telegram chat for this account");
            return Tried::Done;
        };
        let mut body = json!({ "chat_id": chat, "text": notice.telegram_text() });
        // Telegram refuses buttons with other schemes; the link is in the text either way.
        if let Some(link) = notice.link.as_ref().filter(|l| l.scheme() == "https") {
            body["reply_markup"] = json!({"inline_keyboard": [[{"text": "Open", "url": link}]]});
        }
        let url = format!(
            "{}/bot{}/sendMessage",
            self.base_url.as_str().trim_end_matches('/'),
            self.token.expose_secret()
        );
        let host = self.base_url.host_str();
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(reqwest::Error::without_url);
        let response = match sent {
            Ok(r) => r,
            Err(e) => return unanswered("telegram", host, &e, notice),
        };
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        if status.is_success() && answer.ok {
            metrics::counter!("tokenbot_notifications_sent_total", "channel" => "telegram")
                .increment(1);
            return Tried::Done;
        }
        // A description is Telegram's text; a proxy in between might echo the request line.
        let description = crate::redact::redact(&answer.description, [self.token.expose_secret()]);
        let account = &notice.account.key;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            tracing::error!(host, %account, %status, %description, "Telegram refused the bot token; check notify.telegram.bot_token");
        } else {
            tracing::warn!(host, %account, %chat, %status, %description, "Telegram refused the notification");
        }
        retryable(status, answer.parameters.and_then(|p| p.retry_after))
    }
}
