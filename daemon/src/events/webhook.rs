//! `[events] webhook_url`: every event POSTed as JSON, one per request, in order.
//!
//! The webhook reads through a [`Subscription`] like any SSE client, so its queue is the hub's
//! bounded window: a slow or dead receiver never slows a login or grows memory; once it falls
//! out of the window it is sent a `reset` instead of what it missed. A delivery is tried
//! [`TRIES`] times, then dropped with a warning naming the host only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Hub, Item, Subscription};
use crate::config::EventsConfig;

/// Tries per event: the first and two retries, [`RETRY_PAUSE`] times the try number apart.
const TRIES: u32 = 3;
/// Base pause between tries.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Time one POST may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON body of `item`: its data with `id` and `event` (`token` or `reset`) added.
pub fn body(item: &Item) -> Value {
    match item {
        Item::Event(event) => {
            let mut data: Map<String, Value> =
                serde_json::from_str(&event.json).expect("event data is a JSON object");
            data.insert("id".into(), event.id.into());
            data.insert("event".into(), "token".into());
            Value::Object(data)
        }
        Item::Reset { id, reason } => json!({"id": id, "event": "reset", "reason": reason}),
    }
}

/// Start the webhook task when `[events] webhook_url` is set: it sends every event from now on
/// until the hub closes. Call inside the runtime.
pub fn spawn(
    hub: &Arc<Hub>,
    config: &EventsConfig,
    role: tokio::sync::watch::Receiver<crate::cluster::Role>,
) -> Option<tokio::task::JoinHandle<()>> {
    let url = config.webhook_url.clone()?;
    // On the leader only: every daemon sharing a vault hears every change, and each would send it.
    // The webhook ends with the hub, whose end is also the end of waiting to lead.
    let hub = hub.clone();
    let closed = {
        let hub = hub.clone();
        async move { hub.closed().await }
    };
    Some(tokio::spawn(crate::cluster::while_leading(
        role,
        closed,
        move || run(hub.subscribe(None), url.clone()),
    )))
}

/// POST every item of `subscription` to `url` until the hub closes.
pub async fn run(mut subscription: Subscription, url: url::Url) {
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "events webhook: no HTTP client; not sending events");
            return;
        }
    };
    while let Some(item) = subscription.next().await {
        deliver(&client, &url, &body(&item).to_string()).await;
    }
}

/// One event, tried up to [`TRIES`] times. A 4xx other than 429 is not retried: the receiver
/// refuses it and would refuse it again.
async fn deliver(client: &reqwest::Client, url: &url::Url, body: &str) {
    let host = url.host_str().unwrap_or("");
    for attempt in 1..=TRIES {
        let sent = client
            .post(url.clone())
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await;
        let retry = match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                let status = r.status();
                tracing::warn!(%status, host, attempt, "events webhook refused the event");
                status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            }
            Err(e) => {
                // `without_url`: a webhook URL may carry a secret in its path or query.
                tracing::warn!(error = %e.without_url(), host, attempt, "events webhook unreachable");
                true
            }
        };
        if !retry || attempt == TRIES {
            break;
        }
        tokio::time::sleep(RETRY_PAUSE * attempt).await;
    }
    tracing::warn!(host, "events webhook: event dropped");
}
