//! A fake Telegram Bot API: `POST /bot<token>/sendMessage` as `api.telegram.org` answers it.
//!
//! - The bot token is the path segment after `bot`; a wrong one is 401
//!   `{"ok":false,"error_code":401,"description":"Unauthorized"}`, an unknown method 404.
//! - `chat_id` (number or string) and `text` (at most 4096 characters) are required; a chat the
//!   bot is not in is 400 `Bad Request: chat not found`; an inline button whose URL is not
//!   http(s) is 400 `Bad Request: BUTTON_URL_INVALID`.
//! - Success is `{"ok":true,"result":{message_id, from, chat, date, text}}`.
//! - Failures can be queued: 429 with `parameters.retry_after`, or the HTML 502 of the nginx in
//!   front of the Bot API.
//!
//! It records every request body, accepted or not, and every message it accepted.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::mess::{self, HostHabits};
use crate::{Realism, Server, serve};

/// A failure the fake answers the next request with, whatever it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TelegramFailure {
    /// 429 `Too Many Requests: retry after N`, with `parameters.retry_after` = N seconds.
    TooManyRequests {
        /// Seconds.
        retry_after: u64,
    },
    /// nginx's HTML 502.
    BadGateway,
}

/// A message the fake accepted.
#[derive(Clone, Debug)]
pub struct SentMessage {
    /// `chat_id` as text.
    pub chat_id: String,
    /// `text`.
    pub text: String,
    /// `reply_markup`, if any.
    pub reply_markup: Option<Value>,
}

#[derive(Default)]
struct Inner {
    chats: HashSet<String>,
    failures: VecDeque<TelegramFailure>,
    requests: Vec<String>,
    messages: Vec<SentMessage>,
}

struct TelegramState {
    token: String,
    inner: Mutex<Inner>,
}

impl TelegramState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake Bot API on one loopback listener, for one bot.
pub struct FakeTelegram {
    server: Server,
    state: Arc<TelegramState>,
}

impl std::fmt::Debug for FakeTelegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTelegram")
            .field("api", &self.server.url)
            .finish()
    }
}

fn refused(status: StatusCode, description: &str) -> Response {
    let body = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    (status, axum::Json(body)).into_response()
}

impl FakeTelegram {
    /// Start, in realistic mode, for the bot whose token is `token`.
    pub async fn start(token: &str) -> FakeTelegram {
        FakeTelegram::start_with(token, Realism::default()).await
    }

    /// Start with a realism.
    pub async fn start_with(token: &str, realism: Realism) -> FakeTelegram {
        let state = Arc::new(TelegramState {
            token: token.to_owned(),
            inner: Mutex::default(),
        });
        let router = Router::new()
            .route("/{bot}/{method}", post(method))
            .with_state(state.clone());
        FakeTelegram {
            server: serve(mess::apply(
                router,
                &crate::FakeOptions {
                    realism,
                    ..crate::FakeOptions::default()
                },
                HostHabits::json(),
            ))
            .await,
            state,
        }
    }

    /// Base URL, as `[notify.telegram] base_url`.
    pub fn base_url(&self) -> &str {
        &self.server.url
    }

    /// A chat the bot is in (a numeric id or `@channel`).
    pub fn add_chat(&self, chat_id: impl ToString) {
        self.state.lock().chats.insert(chat_id.to_string());
    }

    /// Answer the next request with `failure` (queued in order).
    pub fn fail_next(&self, failure: TelegramFailure) {
        self.state.lock().failures.push_back(failure);
    }

    /// Every request body received, accepted or not.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().requests.clone()
    }

    /// The messages accepted, in order.
    pub fn messages(&self) -> Vec<SentMessage> {
        self.state.lock().messages.clone()
    }

    /// The messages, once at least `n` were accepted or `timeout` passed.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || tokio::time::Instant::now() >= deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn chat_text(chat: &Value) -> Option<String> {
    match chat {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Whether every inline button's URL is one Telegram takes.
fn buttons_ok(markup: Option<&Value>) -> bool {
    let Some(rows) = markup.and_then(|m| m.get("inline_keyboard")?.as_array().cloned()) else {
        return true;
    };
    rows.iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|b| b.get("url")?.as_str())
        .all(|u| u.starts_with("https://") || u.starts_with("http://") || u.starts_with("tg://"))
}

/// The answer to a queued failure.
fn failure_answer(failure: TelegramFailure) -> Response {
    match failure {
        TelegramFailure::TooManyRequests { retry_after } => {
            let body = json!({
                "ok": false, "error_code": 429,
                "description": format!("Too Many Requests: retry after {retry_after}"),
                "parameters": {"retry_after": retry_after}
            });
            (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
        }
        TelegramFailure::BadGateway => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n",
        )
            .into_response(),
    }
}

async fn method(
    State(s): State<Arc<TelegramState>>,
    Path((bot, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut inner = s.lock();
    inner.requests.push(text.clone());
    if bot.strip_prefix("bot") != Some(s.token.as_str()) {
        return refused(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if !method.eq_ignore_ascii_case("sendMessage") {
        return refused(StatusCode::NOT_FOUND, "Not Found");
    }
    if let Some(failure) = inner.failures.pop_front() {
        return failure_answer(failure);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let params: Value = if is_json {
        match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: can't parse JSON object",
                );
            }
        }
    } else {
        json!({})
    };
    let Some(chat) = params.get("chat_id").and_then(chat_text) else {
        return refused(StatusCode::BAD_REQUEST, "Bad Request: chat_id is empty");
    };
    let message = params
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if message.is_empty() {
        return refused(
            StatusCode::BAD_REQUEST,
            "Bad Request: message text is empty",
        );
    }
    if message.chars().count() > 4096 {
        return refused(StatusCode::BAD_REQUEST, "Bad Request: message is too long");
    }
    if !inner.chats.contains(&chat) {
        return refused(StatusCode::BAD_REQUEST, "Bad Request: chat not found");
    }
    let markup = params.get("reply_markup").cloned();
    if !buttons_ok(markup.as_ref()) {
        return refused(StatusCode::BAD_REQUEST, "Bad Request: BUTTON_URL_INVALID");
    }
    inner.messages.push(SentMessage {
        chat_id: chat.clone(),
        text: message.to_owned(),
        reply_markup: markup,
    });
    let message_id = inner.messages.len();
    let date = crate::mess::system_secs();
    axum::Json(json!({
        "ok": true,
        "result": {
            "message_id": message_id,
            "from": {"id": 7_000_000_001_i64, "is_bot": true, "first_name": "tokenbot", "username": "tokenbot_test_bot"},
            "chat": {"id": chat.parse::<i64>().map_or_else(|_| Value::from(chat.clone()), Value::from), "type": "private"},
            "date": date,
            "text": message
        }
    }))
    .into_response()
}
