//! The ABI 1.2 brokers through the API, against their fakes on the API's manual clock: Angel One's
//! PIN as a declared field and its served `feed_token`; Dhan's consent callback, which carries no
//! state.

use std::sync::Arc;

use axum::http::Method;
use fake_brokers::{AngelUser, DhanUser, FakeAngelOne, FakeDhan, FakeOptions};
use serde_json::json;
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::BrokerConfig;

use super::support::*;

const TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const MPIN: &str = "739164";

fn options(clock: &Arc<ManualClock>) -> FakeOptions {
    let now = clock.clone();
    FakeOptions {
        now: Arc::new(move || now.now_ms()),
        latency: std::time::Duration::ZERO,
        ..FakeOptions::default()
    }
}

/// An API whose `broker` section points at `urls`, on the clock the fake was started with.
fn api_for(broker: &str, urls: std::collections::BTreeMap<String, String>) -> TestApi {
    TestApi::with(|c| {
        c.brokers.insert(
            broker.into(),
            BrokerConfig {
                urls,
                rate_limit_per_sec: Some(1_000.0),
                ..BrokerConfig::default()
            },
        );
    })
}

fn angel_fields() -> serde_json::Value {
    json!({
        "broker_user_id": "A123456",
        "api_key": "smartapikey0001",
        "totp_secret": TOTP,
        "pin": MPIN,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_angel_one_account_takes_its_pin_and_its_token_serves_the_feed_token_only() {
    let clock = Arc::new(ManualClock::new(MORNING));
    let fake = FakeAngelOne::start_with(options(&clock)).await;
    fake.add_user(AngelUser::new("A123456", MPIN, "smartapikey0001", TOTP));
    let api = api_for("angelone", fake.base_urls());
    api.clock.set(clock.now_ms());

    api.send(request(
        Method::PUT,
        "/api/users/u1/accounts/angelone",
        &KEY,
        Some(angel_fields()),
    ))
    .await
    .expect(201);
    let users = api
        .send(request(Method::GET, "/api/users", &KEY, None))
        .await;
    users.expect(200);
    assert!(!users.text.contains(MPIN), "{}", users.text);

    let refreshed = api
        .send(request(
            Method::POST,
            "/api/integration/tokens/refresh/u1",
            &KEY,
            None,
        ))
        .await;
    refreshed.expect(200);
    assert_eq!(refreshed.json["successful"], 1, "{}", refreshed.text);
    assert_eq!(fake.recorder().passwords("A123456"), vec![MPIN.to_owned()]);

    let token = api
        .send(request(Method::GET, "/api/tokens/u1", &KEY, None))
        .await;
    token.expect(200);
    assert!(fake.token_is_valid(token.json["access_token"].as_str().unwrap()));
    let extras = token.json["extras"].as_object().expect("extras");
    assert_eq!(
        extras.keys().collect::<Vec<_>>(),
        ["feed_token"],
        "{}",
        token.text
    );
    assert!(!token.text.contains("refresh"), "{}", token.text);
    assert!(!token.text.contains(MPIN));
}

#[tokio::test]
async fn fields_a_broker_does_not_declare_are_refused_naming_them() {
    let api = TestApi::new();
    let put = |body: serde_json::Value, broker: &'static str| {
        request(
            Method::PUT,
            &format!("/api/users/u1/accounts/{broker}"),
            &KEY,
            Some(body),
        )
    };
    let mut typo = angel_fields();
    typo["pn"] = json!("482913");
    let r = api.send(put(typo, "angelone")).await;
    r.expect_error(422, "invalid_fields");
    assert!(r.text.contains("unknown field `pn`"), "{}", r.text);
    assert!(
        !r.text.contains("482913") && !r.text.contains(MPIN),
        "{}",
        r.text
    );

    let mut no_pin = angel_fields();
    no_pin.as_object_mut().unwrap().remove("pin");
    let r = api.send(put(no_pin, "angelone")).await;
    r.expect_error(422, "invalid_fields");
    assert!(r.text.contains("missing field `pin`"), "{}", r.text);

    // Kite declares no PIN.
    let mut kite = kite_fields("1");
    kite["pin"] = json!(MPIN);
    let r = api.send(put(kite, "kite")).await;
    r.expect_error(422, "invalid_fields");
    assert!(r.text.contains("unknown field `pin`"), "{}", r.text);
    assert!(
        api.vault().list_accounts().unwrap().is_empty(),
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhans_consent_callback_without_state_finishes_the_one_pending_login() {
    let clock = Arc::new(ManualClock::new(MORNING));
    let fake = FakeDhan::start_with(options(&clock)).await;
    let api = api_for("dhan", fake.base_urls());
    api.clock.set(clock.now_ms());
    for (user, client) in [("u1", "1000000401"), ("u2", "1000000402")] {
        fake.add_user(DhanUser::new(
            client,
            MPIN,
            TOTP,
            &format!("app-{client}"),
            "app-secret-77",
        ));
        let body = json!({
            "broker_user_id": client, "pin": MPIN, "totp_secret": TOTP,
            "api_key": format!("app-{client}"), "api_secret": "app-secret-77",
        });
        api.send(request(
            Method::PUT,
            &format!("/api/users/{user}/accounts/dhan"),
            &KEY,
            Some(body),
        ))
        .await
        .expect(201);
    }
    let url_of = |user: &str| {
        request(
            Method::GET,
            &format!("/api/login/dhan/{user}/url"),
            &KEY,
            None,
        )
    };
    let r = api.send(url_of("u1")).await;
    r.expect(200);
    let redirect = fake
        .browser_login(r.json["url"].as_str().unwrap(), "1000000401")
        .unwrap();
    let callback = redirect.trim_start_matches("https://tokenbot.example.com");
    assert!(
        callback.starts_with("/callback/dhan?tokenId="),
        "{callback}"
    );
    assert!(
        !callback.contains("state="),
        "Dhan sends no state: {callback}"
    );
    // A forged callback fails at the broker and does not use the pending login up.
    let forged = api
        .send(request(
            Method::GET,
            "/callback/dhan?tokenId=forged-by-anyone",
            &As::Nobody,
            None,
        ))
        .await;
    assert!(!forged.status.is_success(), "{}", forged.text);
    let done = api
        .send(request(Method::GET, callback, &As::Nobody, None))
        .await;
    done.expect(200);
    assert_eq!(done.json["user_id"], "u1", "{}", done.text);
    assert_eq!(done.json["broker_user_id"], "1000000401");
    let token = api
        .send(request(
            Method::GET,
            "/api/tokens/u1?broker=dhan",
            &KEY,
            None,
        ))
        .await;
    token.expect(200);
    assert!(fake.token_is_valid(token.json["access_token"].as_str().unwrap()));

    // Two logins pending at Dhan: a callback without state cannot say which, and is refused.
    let first = api.send(url_of("u1")).await;
    let second = api.send(url_of("u2")).await;
    let redirect = fake
        .browser_login(second.json["url"].as_str().unwrap(), "1000000402")
        .unwrap();
    assert!(first.status.is_success());
    let r = api
        .send(request(
            Method::GET,
            redirect.trim_start_matches("https://tokenbot.example.com"),
            &As::Nobody,
            None,
        ))
        .await;
    r.expect_error(400, "invalid_state");
    assert!(r.text.contains("several assisted logins"), "{}", r.text);
}
