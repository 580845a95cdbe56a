//! The hub's window: resume, resets, bounds, close.

use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::vault::{BrokerId, UserId};

const T0: i64 = 1_741_573_805_000;

fn hub(retention_secs: u64, max_retained: usize) -> (Arc<Hub>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let config = EventsConfig {
        retention_secs,
        max_retained,
        ..EventsConfig::default()
    };
    (Arc::new(Hub::new(&config, clock.clone(), Some(10))), clock)
}

fn change(seq: u64, at: i64) -> TokenChange {
    TokenChange {
        seq,
        user: UserId::new("u1").unwrap(),
        broker: BrokerId::new("kite").unwrap(),
        generation: seq * 2,
        expires_at_ms: Some(at + 3_600_000),
        status: OutboxStatus::Active,
        changed_at_ms: at,
    }
}

/// The next item, failing instead of waiting forever.
async fn next(sub: &mut Subscription) -> Option<Item> {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("an item within 5 s")
}

/// Whether the subscription has nothing to give now.
async fn idle(sub: &mut Subscription) -> bool {
    tokio::time::timeout(Duration::from_millis(50), sub.next())
        .await
        .is_err()
}

fn id(item: Option<Item>) -> (u64, &'static str) {
    match item.expect("an item") {
        Item::Event(e) => (e.id, "token"),
        Item::Reset { id, reason } => (id, reason),
    }
}

#[tokio::test]
async fn a_resume_gets_only_later_events_and_a_live_one_waits_for_the_next() {
    let (hub, _) = hub(3600, 100);
    let mut live = hub.subscribe(None);
    hub.publish(&[change(11, T0), change(12, T0), change(13, T0)]);
    let mut resumed = hub.subscribe(Some(12));
    assert_eq!(id(next(&mut resumed).await), (13, "token"));
    assert!(idle(&mut resumed).await);
    for want in 11..=13 {
        assert_eq!(id(next(&mut live).await), (want, "token"));
    }
    let data: serde_json::Value = match next(&mut hub.subscribe(Some(10))).await {
        Some(Item::Event(e)) => serde_json::from_str(&e.json).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        data,
        serde_json::json!({"user_id": "u1", "broker": "kite", "generation": 22,
            "expires_at": "2025-03-10T03:30:05.000Z", "status": "active"})
    );
}

#[tokio::test]
async fn an_id_older_than_the_window_or_later_than_any_change_gets_a_reset() {
    let (hub, clock) = hub(60, 2);
    hub.publish(&[change(11, T0), change(12, T0), change(13, T0)]);
    // The count cap dropped 11: a client that saw 10 missed it.
    assert_eq!(id(next(&mut hub.subscribe(Some(10))).await), (13, "missed"));
    let mut saw_11 = hub.subscribe(Some(11));
    assert_eq!(id(next(&mut saw_11).await), (12, "token"));
    // Past the retention window every kept event is gone.
    clock.set(T0 + 61_000);
    assert_eq!(id(next(&mut hub.subscribe(Some(12))).await), (13, "missed"));
    // Having seen the latest, nothing was missed.
    assert!(idle(&mut hub.subscribe(Some(13))).await);
    assert_eq!(
        id(next(&mut hub.subscribe(Some(99))).await),
        (13, "unknown_id")
    );
    // After a reset the stream carries on from the latest change.
    let mut reset = hub.subscribe(Some(5));
    assert_eq!(id(next(&mut reset).await), (13, "missed"));
    hub.publish(&[change(14, T0 + 61_000)]);
    assert_eq!(id(next(&mut reset).await), (14, "token"));
}

#[tokio::test]
async fn a_consumer_that_falls_behind_the_window_gets_a_reset_and_memory_stays_bounded() {
    let (hub, _) = hub(3600, 8);
    let mut slow = hub.subscribe(None);
    for seq in 11..=1_000 {
        hub.publish(&[change(seq, T0)]);
    }
    assert_eq!(hub.window.lock().events.len(), 8);
    assert_eq!(id(next(&mut slow).await), (1_000, "missed"));
    assert!(idle(&mut slow).await);
}

#[tokio::test]
async fn closing_the_hub_ends_every_subscription() {
    let (hub, _) = hub(3600, 8);
    let mut a = hub.subscribe(None);
    let waiting = tokio::spawn(async move { a.next().await.is_none() });
    tokio::time::sleep(Duration::from_millis(20)).await;
    hub.close();
    assert!(waiting.await.unwrap());
    assert!(next(&mut hub.subscribe(None)).await.is_none());
}

#[tokio::test]
async fn with_the_sequence_unknown_at_start_resumes_reset_until_a_change_places_it() {
    let clock = Arc::new(ManualClock::new(T0));
    let hub = Arc::new(Hub::new(&EventsConfig::default(), clock, None));
    assert_eq!(
        id(next(&mut hub.subscribe(Some(0))).await),
        (0, "unknown_id")
    );
    hub.publish(&[change(40, T0)]);
    assert_eq!(id(next(&mut hub.subscribe(Some(39))).await), (40, "token"));
    assert_eq!(id(next(&mut hub.subscribe(Some(30))).await), (40, "missed"));
}

#[test]
fn zero_bounds_and_a_non_http_webhook_are_refused() {
    for (edit, key) in [
        (
            (|c: &mut EventsConfig| c.retention_secs = 0) as fn(&mut EventsConfig),
            "events.retention_secs",
        ),
        (|c| c.max_retained = 0, "events.max_retained"),
        (|c| c.keepalive_secs = 0, "events.keepalive_secs"),
        (
            |c| c.webhook_url = Some("ftp://h/x".parse().unwrap()),
            "events.webhook_url",
        ),
    ] {
        let mut config = EventsConfig::default();
        edit(&mut config);
        let err = check_config(&config).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
    check_config(&EventsConfig::default()).unwrap();
}
