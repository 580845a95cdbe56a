//! Clock skew through the API: a broker whose clock is 40 s ahead shows in `/health/detailed`
//! after one login, and the login's code was for the broker's step.

use std::sync::{Arc, OnceLock};

use axum::http::Method;
use fake_brokers::{FakeKite, FakeOptions, KiteUser};
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::BrokerConfig;

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_clock_40_s_off_is_shown_in_detailed_health_with_a_warning() {
    let t = TestApi::with(|_| {});
    let health = t
        .send(request(Method::GET, "/health/detailed", &KEY, None))
        .await;
    health.expect(200);
    assert_eq!(health.json["clock_skew_ms"], serde_json::json!({}));
    assert!(health.json["clock_warning"].is_null());

    // The fake reads the API's clock (40 s on), which exists only once the API does.
    let api_clock: Arc<OnceLock<Arc<ManualClock>>> = Arc::default();
    let read = api_clock.clone();
    let fake = FakeKite::start_with(FakeOptions {
        now: Arc::new(move || read.get().map_or(MORNING, |c| c.now_ms()) + 40_000),
        ..FakeOptions::default()
    })
    .await;
    let fields = kite_fields("1");
    let field = |name: &str| fields[name].as_str().unwrap().to_owned();
    fake.add_user(KiteUser::new(
        "AB1",
        &field("password"),
        &field("api_key"),
        &field("api_secret"),
        &field("totp_secret"),
    ));
    let urls = fake.base_urls();
    let t = TestApi::with(|c| {
        c.brokers.insert(
            "kite".into(),
            BrokerConfig {
                urls,
                ..BrokerConfig::default()
            },
        );
    });
    assert!(api_clock.set(t.clock.clone()).is_ok());
    t.send(request(
        Method::PUT,
        "/api/users/u1/accounts/kite",
        &KEY,
        Some(fields.clone()),
    ))
    .await
    .expect(201);
    let refreshed = t
        .send(request(
            Method::POST,
            "/api/integration/tokens/refresh/u1",
            &KEY,
            None,
        ))
        .await;
    assert_eq!(refreshed.json["successful"], 1, "{}", refreshed.text);

    let health = t
        .send(request(Method::GET, "/health/detailed", &KEY, None))
        .await;
    health.expect(200);
    let skew = health.json["clock_skew_ms"]["kite"].as_i64().unwrap();
    assert!((39_000..=41_000).contains(&skew), "{}", health.text);
    let warning = health.json["clock_warning"].as_str().unwrap();
    assert!(warning.contains("kite +40"), "{warning}");
    assert!(warning.contains("NTP"), "{warning}");
}
