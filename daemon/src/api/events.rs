//! `GET /api/tokens/events`: token changes as server-sent events (`crate::events` has the hub).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use super::ApiState;
use super::auth::ServiceKey;
use super::error::{ApiError, ErrorBody};
use crate::events::Item;

/// `GET /api/tokens/events`
#[utoipa::path(
    get,
    path = "/api/tokens/events",
    tag = "tokens",
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received: the stream resumes after it while it is retained (`[events] retention_secs`, `max_retained`); otherwise it starts with a `reset`. Without it the stream starts with the next change"),
    ),
    responses(
        (status = 200, description = "A `text/event-stream` of token changes, never a token. `event: token`, `id:` the change's sequence number (grows forever), `data:` `{\"user_id\",\"broker\",\"generation\",\"expires_at\",\"status\":\"active|revoked\"}` (`expires_at` null when revoked). `event: reset`, `data:` `{\"reason\":\"missed|unknown_id\"}`: events were missed, re-read every token, then carry on (its `id` is the latest change). Keep-alive comments every `[events] keepalive_secs`", body = String, content_type = "text/event-stream"),
        (status = 400, description = "`Last-Event-ID` is not an event id (`invalid_last_event_id`)", body = ErrorBody),
        (status = 401, description = "No or wrong API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn stream(
    State(api): State<Arc<ApiState>>,
    ServiceKey(_): ServiceKey,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last_id = last_event_id(&headers)?;
    let subscription = api.app.events.subscribe(last_id);
    let stream = futures::stream::unfold(subscription, |mut subscription| async move {
        let item = subscription.next().await?;
        Some((Ok(sse_event(item)), subscription))
    });
    let keepalive = Duration::from_secs(api.app.config.events.keepalive_secs);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keepalive)))
}

/// The `Last-Event-ID` header: absent or empty (the `EventSource` spec's "no id") is `None`.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("\u{fffd}").trim();
    if text.is_empty() {
        return Ok(None);
    }
    // The value is not echoed: it is the client's, and may be anything.
    text.parse().map(Some).map_err(|_| {
        ApiError::bad_request(
            "invalid_last_event_id",
            "Last-Event-ID must be the decimal id of an event this stream sent",
        )
    })
}

fn sse_event(item: Item) -> Event {
    match item {
        Item::Event(event) => Event::default()
            .event("token")
            .id(event.id.to_string())
            .data(&*event.json),
        Item::Reset { id, reason } => Event::default()
            .event("reset")
            .id(id.to_string())
            .data(serde_json::json!({ "reason": reason }).to_string()),
    }
}
