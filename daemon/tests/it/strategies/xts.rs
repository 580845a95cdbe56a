//! The IIFL Blaze (XTS) strategy over loopback HTTP against `FakeXts`, through the real plugin ABI.

use crate::support;

use super::common::*;
use broker_api::wire::ErrorClass;
use fake_brokers::{FakeXts, XtsBehaviour, XtsUser, ist};
use tokenbot::plugins::Source;

fn ten_am() -> i64 {
    ist::at(2025, 3, 10, 10, 0, 0)
}

fn account(n: u32) -> (Account, XtsUser) {
    let client = format!("XTS{n:03}");
    let account = Account {
        user_id: format!("xts-user-{n}"),
        broker_user_id: client.clone(),
        password: None,
        api_key: format!("xtsappkey{n:04}"),
        api_secret: format!("Xts$ecret{n:04}"),
        totp_secret: None,
        ..Account::default()
    };
    let fake = XtsUser::new(&client, &account.api_key, &account.api_secret);
    (account, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_end_to_end_yields_a_token_the_fake_accepts() {
    let h = Harness::new(ten_am());
    let fake = FakeXts::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let urls = fake.base_urls();
    let out = h.login("iifl-xts", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    assert_eq!(out.issued_at_ms, ten_am());
    // exp = +24 h (tomorrow 10:00) is later than the next 00:00 IST, which wins.
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 0, 0, 0));
    assert_eq!(fake.recorder().requests("/interactive/user/session"), 1);

    // Verify sends the raw token (the fake refuses "Bearer ...").
    let verified = h
        .verify("iifl-xts", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(verified.valid, "{}", verified.message);
    let bogus = h
        .verify(
            "iifl-xts",
            &acct,
            &urls,
            &format!("Bearer {}", out.access_token.expose()),
        )
        .await
        .unwrap();
    assert!(!bogus.valid);
    assert!(captured_log().contains("iifl-xts: opening an interactive session"));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_exp_before_midnight_wins() {
    let h = Harness::new(ten_am());
    let fake = FakeXts::start_with(h.fake_options()).await;
    let (acct, user) = account(2);
    fake.add_user(user.with_token_ttl_ms(3_600_000));
    let out = h.login("iifl-xts", &acct, &fake.base_urls()).await.unwrap();
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 10, 11, 0, 0));
    h.clock.set(ist::at(2025, 3, 10, 11, 0, 0));
    assert!(
        !h.verify(
            "iifl-xts",
            &acct,
            &fake.base_urls(),
            out.access_token.expose()
        )
        .await
        .unwrap()
        .valid
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_class_comes_from_its_behaviour() {
    let h = Harness::new(ten_am());
    let fake = FakeXts::start_with(h.fake_options()).await;
    let cases = [
        (XtsBehaviour::ErrorWith200, ErrorClass::InvalidCredentials),
        (XtsBehaviour::RateLimited, ErrorClass::RateLimited),
        (XtsBehaviour::Html503, ErrorClass::BrokerUnavailable),
        (XtsBehaviour::ServerError, ErrorClass::BrokerUnavailable),
        (XtsBehaviour::UnexpectedShape, ErrorClass::Protocol),
    ];
    for (n, (behaviour, class)) in cases.into_iter().enumerate() {
        let (acct, user) = account(100 + n as u32);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("iifl-xts", &acct, &fake.base_urls()).await;
        assert_eq!(class_of(&result), class, "{behaviour:?}: {result:?}");
    }
    // e-user-0002 with HTTP 400: a wrong secretKey.
    let (mut acct, user) = account(150);
    fake.add_user(user);
    acct.api_secret = "wrong-secret".into();
    let result = h.login("iifl-xts", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&result), ErrorClass::InvalidCredentials);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_so_build_loads_from_plugins_and_logs_in() {
    let so = support::broker_so("broker-iifl-xts");
    let dir = tempfile::tempdir().unwrap();
    let installed = support::install(&so, dir.path(), "iifl-xts.so");
    let h = Harness::with_plugins_dir(ten_am(), dir);
    let plugin = h.plugin("iifl-xts");
    assert_eq!(plugin.source, Source::Path(installed));
    assert!(plugin.has_verify());
    let fake = FakeXts::start_with(h.fake_options()).await;
    let (acct, user) = account(3);
    fake.add_user(user);
    let out = h.login("iifl-xts", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_no_secret_logged();
}
