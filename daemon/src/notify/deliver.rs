//! Delivery, off the refresher's path: each channel has a bounded queue and one task that sends
//! its notices in order, retrying only what a retry can fix (429 and 5xx answers, refused
//! connections), a bounded number of times. A full queue drops the notice with a warning rather
//! than making a login wait for a chat server.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::notice::Notice;
use super::telegram::Telegram;

/// Tries per notice and channel.
const MAX_TRIES: u32 = 3;
/// The longest wait a channel may ask for (429 `retry_after`) that is still waited out; a longer
/// one means the channel is throttled for longer than the notice stays useful.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What one try came to.
pub(super) enum Tried {
    /// Delivered, or refused for good (logged).
    Done,
    /// Worth another try: after the wait the channel asked for, or the default backoff.
    Again(Option<Duration>),
}

/// Where notices go.
pub(super) enum Channel {
    /// `[refresh] webhook_url`: a JSON POST.
    Webhook(url::Url),
    /// `[notify.telegram]`.
    Telegram(Telegram),
}

impl Channel {
    fn name(&self) -> &'static str {
        match self {
            Channel::Webhook(_) => "webhook",
            Channel::Telegram(_) => "telegram",
        }
    }

    async fn try_once(&self, client: &reqwest::Client, notice: &Notice) -> Tried {
        match self {
            Channel::Webhook(url) => webhook(client, url, notice).await,
            Channel::Telegram(telegram) => telegram.send(client, notice).await,
        }
    }

    /// Send `notice`, with the bounded retries.
    async fn deliver(&self, client: &reqwest::Client, notice: &Notice) {
        let mut backoff = Duration::from_secs(1);
        for tried in 1..=MAX_TRIES {
            let Tried::Again(asked) = self.try_once(client, notice).await else {
                return;
            };
            let wait = asked.unwrap_or(backoff);
            if tried == MAX_TRIES || wait > MAX_WAIT {
                tracing::warn!(channel = self.name(), account = %notice.account.key, tries = tried, "notification not delivered; giving up");
                metrics::counter!("tokenbot_notifications_failed_total", "channel" => self.name())
                    .increment(1);
                return;
            }
            tokio::time::sleep(wait).await;
            backoff *= 2;
        }
    }
}

/// One channel and its queue, started on first use (inside the runtime).
pub(super) struct Outlet {
    channel: Arc<Channel>,
    capacity: usize,
    queue: OnceLock<Option<mpsc::Sender<Notice>>>,
}

impl Outlet {
    pub(super) fn new(channel: Channel, capacity: usize) -> Outlet {
        Outlet {
            channel: Arc::new(channel),
            capacity: capacity.max(1),
            queue: OnceLock::new(),
        }
    }

    /// Queue `notice` for this channel; never waits.
    pub(super) fn push(&self, notice: Notice) {
        let queue = self.queue.get_or_init(|| {
            let handle = tokio::runtime::Handle::try_current().ok()?;
            let (tx, rx) = mpsc::channel(self.capacity);
            handle.spawn(work(self.channel.clone(), rx));
            Some(tx)
        });
        let Some(queue) = queue else {
            tracing::warn!(
                channel = self.channel.name(),
                "no async runtime; notification not sent"
            );
            return;
        };
        if queue.try_send(notice).is_err() {
            tracing::warn!(
                channel = self.channel.name(),
                "notification queue full; notification dropped"
            );
            metrics::counter!("tokenbot_notifications_dropped_total", "channel" => self.channel.name())
                .increment(1);
        }
    }
}

/// A channel's task: deliver its notices in order until the notifier is dropped.
async fn work(channel: Arc<Channel>, mut queue: mpsc::Receiver<Notice>) {
    let client = reqwest::Client::builder()
        // A redirect could carry the bot token's URL to another host (as `Referer`, or a
        // re-sent request); notification endpoints have no reason to redirect.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tokenbot/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "HTTP client with custom settings failed; using defaults");
            reqwest::Client::new()
        });
    while let Some(notice) = queue.recv().await {
        channel.deliver(&client, &notice).await;
    }
}

/// Whether an answer of `status` is worth another try, and after how long.
pub(super) fn retryable(status: reqwest::StatusCode, retry_after_secs: Option<u64>) -> Tried {
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Tried::Again(retry_after_secs.map(Duration::from_secs))
    } else if status.is_server_error() {
        Tried::Again(None)
    } else {
        Tried::Done
    }
}

/// A request that got no answer: retried only when it never reached the server.
pub(super) fn unanswered(
    channel: &str,
    host: Option<&str>,
    e: &reqwest::Error,
    notice: &Notice,
) -> Tried {
    // Without the URL: Telegram's carries the bot token, a webhook's may carry a secret too.
    let reason = e.to_string();
    tracing::warn!(channel, host, account = %notice.account.key, error = %reason, "notification endpoint unreachable");
    if e.is_connect() {
        Tried::Again(None)
    } else {
        Tried::Done
    }
}

async fn webhook(client: &reqwest::Client, url: &url::Url, notice: &Notice) -> Tried {
    let sent = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(notice.webhook_body().to_string())
        .send()
        .await
        .map_err(reqwest::Error::without_url);
    let host = url.host_str();
    match sent {
        Ok(r) if r.status().is_success() => {
            metrics::counter!("tokenbot_notifications_sent_total", "channel" => "webhook")
                .increment(1);
            Tried::Done
        }
        Ok(r) => {
            tracing::warn!(status = %r.status(), host, account = %notice.account.key, "webhook refused the notification");
            let after = r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse().ok());
            retryable(r.status(), after)
        }
        Err(e) => unanswered("webhook", host, &e, notice),
    }
}
