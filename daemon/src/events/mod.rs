//! Token-change events for consumers: broker tokens rotate (a new login kills the old token at
//! Kite, Dhan, Upstox), so trading backends learn of a change at once instead of at their next
//! failure.
//!
//! The vault tells the [`Hub`] of every committed token change (a login's token, a token revoked
//! by an account's removal or a new broker user id), numbered with the outbox's sequence, which
//! grows forever and survives restarts. The hub keeps the recent ones in memory, bounded by age and
//! count, for clients resuming with `Last-Event-ID`; a client whose last id is no longer kept (too
//! old, too slow, or before this process started) gets a `reset` and re-reads every token. A
//! [`Subscription`] is only a cursor into that window, so a slow consumer costs no memory and
//! never slows the writer. `GET /api/tokens/events` and the webhook ([`webhook`]) both read
//! through one.
//!
//! Events carry `{user_id, broker, generation, expires_at, status}`, never a token.

pub mod webhook;

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::clock::{Clock, iso};
use crate::config::{ConfigError, EventsConfig};
use crate::vault::{OutboxStatus, TokenChange, Vault};

/// Events a subscription takes from the hub at a time: bounds what it holds between sends.
const BATCH: usize = 64;

/// Checks of `[events]`.
pub fn check_config(events: &EventsConfig) -> Result<(), ConfigError> {
    for (key, value) in [
        ("events.retention_secs", events.retention_secs),
        ("events.max_retained", events.max_retained as u64),
        ("events.keepalive_secs", events.keepalive_secs),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(key, "0", "must be at least 1"));
        }
    }
    if let Some(url) = &events.webhook_url
        && !matches!(url.scheme(), "http" | "https")
    {
        return Err(ConfigError::invalid(
            "events.webhook_url",
            url.scheme(),
            "must be an http or https URL",
        ));
    }
    Ok(())
}

/// One token change as consumers see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The change's sequence number: the SSE `id`.
    pub id: u64,
    /// The data, serialised once when the change is published ([`EventData`]).
    pub json: Arc<str>,
    /// When the change happened (Unix ms): the retention window is measured from it.
    changed_at_ms: i64,
}

/// The data of an event: the token's identity and validity, never the token.
#[derive(Debug, Serialize)]
pub struct EventData<'a> {
    /// The platform's user id.
    pub user_id: &'a str,
    /// The broker.
    pub broker: &'a str,
    /// The token's generation (the Postgres mirror's `generation`).
    pub generation: u64,
    /// When the token expires (RFC 3339); null when revoked.
    pub expires_at: Option<String>,
    /// `active` (a new token) or `revoked` (the account's token is gone).
    pub status: OutboxStatus,
}

impl Event {
    fn of(change: &TokenChange) -> Event {
        let data = EventData {
            user_id: change.user.as_str(),
            broker: change.broker.as_str(),
            generation: change.generation,
            expires_at: change.expires_at_ms.map(iso),
            status: change.status,
        };
        Event {
            id: change.seq,
            json: serde_json::to_string(&data)
                .expect("event data serialises")
                .into(),
            changed_at_ms: change.changed_at_ms,
        }
    }
}

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Item {
    /// A token change.
    Event(Event),
    /// Events were missed: re-read every token. `id` is the last change made before the reset,
    /// so resuming from it after the re-read misses nothing.
    Reset {
        /// The latest sequence number when the reset was sent.
        id: u64,
        /// Why: `missed` (the client's last id is no longer kept) or `unknown_id` (it is later
        /// than any change this vault made).
        reason: &'static str,
    },
}

/// What the hub has after a cursor.
enum Next {
    Events(Vec<Event>),
    Reset { latest: u64, reason: &'static str },
    Wait,
}

/// The retained events. Every event with an id above `floor` is in `events`; those at or below
/// it were dropped, or happened before this process started.
struct Window {
    events: VecDeque<Event>,
    floor: u64,
    latest: u64,
    /// Whether `latest` is the vault's: false when it could not be read at start, until the first
    /// change says where the sequence stands (every resume before that gets a reset).
    known: bool,
}

/// The daemon's event hub: one per [`crate::AppState`].
pub struct Hub {
    /// Retained events. Written by the vault's listener (under the vault's writer lock, so in
    /// sequence order) and read by subscriptions; held only for short copies, never across I/O.
    window: Mutex<Window>,
    /// Whether the hub closed (shutdown); every send wakes the subscriptions, also when an event
    /// arrives. A `watch`, not a broadcast channel of events: the writer's cost does not grow
    /// with subscribers and nothing queues per receiver, so a slow one cannot grow memory.
    signal: watch::Sender<bool>,
    /// The daemon's clock: the retention window follows it (a manual clock in tests).
    clock: Arc<dyn Clock>,
    retention_ms: i64,
    max_retained: usize,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("retention_ms", &self.retention_ms)
            .field("max_retained", &self.max_retained)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub whose window starts empty after `latest`, the last sequence number already used
    /// (`None`: unknown).
    pub fn new(config: &EventsConfig, clock: Arc<dyn Clock>, latest: Option<u64>) -> Hub {
        Hub {
            window: Mutex::new(Window {
                events: VecDeque::new(),
                floor: latest.unwrap_or(0),
                latest: latest.unwrap_or(0),
                known: latest.is_some(),
            }),
            signal: watch::Sender::new(false),
            clock,
            retention_ms: i64::try_from(config.retention_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            max_retained: config.max_retained.max(1),
        }
    }

    /// A hub fed by `vault`'s token changes from now on.
    pub fn attach(config: &EventsConfig, clock: Arc<dyn Clock>, vault: &Vault) -> Arc<Hub> {
        // Nothing writes to the vault while the daemon's state is built, so no change falls
        // between reading the sequence and installing the listener.
        let latest = vault
            .outbox_seq()
            .inspect_err(|e| tracing::error!(error = %e, "events: cannot read the outbox sequence"))
            .ok();
        let hub = Arc::new(Hub::new(config, clock, latest));
        let weak = Arc::downgrade(&hub);
        vault.set_token_listener(Arc::new(move |changes| {
            if let Some(hub) = weak.upgrade() {
                hub.publish(changes);
            }
        }));
        hub
    }

    /// Add committed changes (in sequence order) and wake subscribers. Never blocks on them.
    pub fn publish(&self, changes: &[TokenChange]) {
        {
            let mut w = self.window.lock();
            for change in changes {
                if !w.known {
                    let before = change.seq.saturating_sub(1);
                    (w.floor, w.latest, w.known) = (before, before, true);
                }
                // A change already published (a second hub on the same vault) is not repeated.
                if change.seq <= w.latest {
                    continue;
                }
                w.latest = change.seq;
                w.events.push_back(Event::of(change));
            }
            while w.events.len() > self.max_retained {
                if let Some(dropped) = w.events.pop_front() {
                    w.floor = dropped.id;
                }
            }
        }
        self.signal.send_modify(|_| ());
    }

    /// The id of the latest change.
    pub fn latest(&self) -> u64 {
        self.window.lock().latest
    }

    /// End every subscription (shutdown): a stream that never ends would hold the server's
    /// graceful shutdown until its drain timeout.
    pub fn close(&self) {
        self.signal.send_replace(true);
    }

    /// Resolves once the hub is closed.
    pub async fn closed(&self) {
        let _ = self.signal.subscribe().wait_for(|closed| *closed).await;
    }

    /// A subscription after `last_id` (a client's `Last-Event-ID`), or from now on.
    pub fn subscribe(self: &Arc<Self>, last_id: Option<u64>) -> Subscription {
        let rx = self.signal.subscribe();
        Subscription {
            cursor: last_id.unwrap_or_else(|| self.latest()),
            hub: self.clone(),
            rx,
            queue: VecDeque::new(),
        }
    }

    /// The events after `cursor`, at most `limit`.
    fn after(&self, cursor: u64, limit: usize) -> Next {
        let cutoff = self.clock.now_ms().saturating_sub(self.retention_ms);
        let mut w = self.window.lock();
        // Age is checked when read, not only when written: a quiet hour must still expire events.
        while w.events.front().is_some_and(|e| e.changed_at_ms < cutoff) {
            if let Some(dropped) = w.events.pop_front() {
                w.floor = dropped.id;
            }
        }
        if cursor > w.latest || !w.known {
            return Next::Reset {
                latest: w.latest,
                reason: "unknown_id",
            };
        }
        if cursor < w.floor {
            return Next::Reset {
                latest: w.latest,
                reason: "missed",
            };
        }
        let start = w.events.partition_point(|e| e.id <= cursor);
        if start == w.events.len() {
            return Next::Wait;
        }
        Next::Events(w.events.range(start..).take(limit).cloned().collect())
    }
}

/// A consumer's position in the hub's window. Holds at most [`BATCH`] events.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    rx: watch::Receiver<bool>,
    /// The last id this consumer was given.
    cursor: u64,
    queue: VecDeque<Item>,
}

impl Subscription {
    /// The next item; waits for one. `None` once the hub closes.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            // Marked seen before the window is read, so a change published in between still
            // wakes the wait below.
            if *self.rx.borrow_and_update() {
                return None;
            }
            match self.hub.after(self.cursor, BATCH) {
                Next::Events(events) => {
                    self.cursor = events.last().map_or(self.cursor, |e| e.id);
                    self.queue.extend(events.into_iter().map(Item::Event));
                }
                Next::Reset { latest, reason } => {
                    self.cursor = latest;
                    self.queue.push_back(Item::Reset { id: latest, reason });
                }
                Next::Wait => {
                    if self.rx.changed().await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
