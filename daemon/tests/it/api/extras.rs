//! ABI 1.2 through the API: fields a strategy declares beyond the five, and the token extras it
//! lets consumers have.

use axum::http::Method;
use tokenbot::clock::Clock;
use tokenbot::vault::{AccountKey, NewToken, SecretJson};

use super::support::*;

/// A token at `key` whose served extras are `served` (and a refresh token that is not served).
fn token_with_extras(api: &TestApi, key: &AccountKey, served: serde_json::Value) {
    let now = api.clock.now_ms();
    api.vault()
        .put_token(
            key,
            &NewToken {
                access_token: "tok-with-extras".into(),
                issued_at_ms: now - HOUR,
                expires_at_ms: now + HOUR,
                extras: SecretJson::from_value(&serde_json::json!({
                    "feed_token": "feed-123", "refresh_token": "refresh-never-served"
                })),
                served_extras: SecretJson::from_value(&served),
            },
        )
        .unwrap();
}

#[tokio::test]
async fn a_token_read_carries_the_served_extras_and_nothing_else() {
    let api = TestApi::new();
    let key = api.seed("u1", "kite", None);
    token_with_extras(&api, &key, serde_json::json!({ "feed_token": "feed-123" }));
    let r = api
        .send(request(Method::GET, "/api/tokens/u1", &KEY, None))
        .await;
    r.expect(200);
    assert_eq!(r.json["access_token"], "tok-with-extras");
    assert_eq!(
        r.json["extras"],
        serde_json::json!({ "feed_token": "feed-123" })
    );
    assert!(!r.text.contains("refresh-never-served"), "{}", r.text);
}

#[tokio::test]
async fn a_token_without_served_extras_reads_as_before() {
    let api = TestApi::new();
    api.seed("u1", "kite", Some(HOUR));
    let r = api
        .send(request(Method::GET, "/api/tokens/u1", &KEY, None))
        .await;
    r.expect(200);
    assert!(r.json.get("extras").is_none(), "{}", r.text);
    let keys: Vec<&str> = r
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "broker",
            "broker_user_id",
            "expires_at",
            "issued_at",
            "user_id"
        ]
    );
}
