//! Clock skew through the API: a broker whose clock is 40 s ahead shows in `/health/detailed`
//! after one login, with a warning.

use axum::http::Method;

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_clock_40_s_off_is_shown_in_detailed_health_with_a_warning() {
    let (t, _fake) = api_with_kite(40_000, |_| {}).await;
    let health = t
        .send(request(Method::GET, "/health/detailed", &KEY, None))
        .await;
    health.expect(200);
    assert_eq!(health.json["clock_skew_ms"], serde_json::json!({}));
    assert!(health.json["clock_warning"].is_null());

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
