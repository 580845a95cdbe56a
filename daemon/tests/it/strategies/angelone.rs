//! The Angel One SmartAPI strategy over loopback HTTP against `FakeAngelOne`, through the real
//! plugin ABI.

use std::collections::BTreeMap;

use super::common::*;
use broker_api::wire::ErrorClass;
use fake_brokers::{AngelBehaviour, AngelUser, FakeAngelOne, ist};

/// 2025-03-10 08:00:05 IST (the default schedule), 5 s into a TOTP step.
fn morning() -> i64 {
    ist::at(2025, 3, 10, 8, 0, 5)
}

/// An account and its fake. Real MPINs have 4 digits; these have 6 so that no log line (ports,
/// times, ids) can hold one by chance, which the fake does not mind.
fn account(n: u32) -> (Account, AngelUser) {
    let code = format!("A{:06}", 100_000 + n);
    let pin = format!("{}", 739_164 + n * 7_919);
    let account = Account {
        user_id: format!("user-{n}"),
        broker_user_id: code.clone(),
        api_key: format!("smartkey{n:04}"),
        totp_secret: Some(totp_secret(n + 300)),
        extra: BTreeMap::from([("pin".to_string(), pin.clone())]),
        ..Account::default()
    };
    let fake = AngelUser::new(
        &code,
        &pin,
        &account.api_key,
        account.totp_secret.as_deref().unwrap(),
    );
    (account, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_yields_a_verified_token_with_a_feed_token_until_the_next_ist_midnight() {
    let h = Harness::new(morning());
    let fake = FakeAngelOne::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let urls = fake.base_urls();

    let out = h.login("angelone", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    assert_eq!(out.issued_at_ms, morning());
    // The next 00:00 IST, not the JWT's exp a day later.
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 0, 0, 0));
    assert!(
        out.extras["feed_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("eyJ"))
    );
    assert!(out.extras.contains_key("refresh_token"));
    remember(out.extras["feed_token"].as_str().unwrap());
    remember(out.extras["refresh_token"].as_str().unwrap());

    let r = fake.recorder();
    assert_eq!(
        r.requests("/rest/auth/angelbroking/user/v1/loginByPassword"),
        1
    );
    assert_eq!(
        r.requests("/rest/secure/angelbroking/user/v1/getProfile"),
        1
    );
    assert_eq!(
        r.passwords(&acct.broker_user_id),
        vec![acct.extra["pin"].clone()]
    );
    assert_one_password_distinct_steps(r, &acct.broker_user_id);

    let verified = h
        .verify("angelone", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(verified.valid, "{}", verified.message);
    h.clock.set(ist::at(2025, 3, 11, 0, 0, 0));
    let dead = h
        .verify("angelone", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(!dead.valid);
    assert!(captured_log().contains("angelone: headless login"));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_just_before_midnight_expires_at_that_midnight_and_one_just_after_at_the_next() {
    for (at, expiry) in [
        (
            ist::at(2025, 3, 10, 23, 58, 5),
            ist::at(2025, 3, 11, 0, 0, 0),
        ),
        (ist::at(2025, 3, 11, 0, 0, 5), ist::at(2025, 3, 12, 0, 0, 0)),
    ] {
        let h = Harness::new(at);
        let fake = FakeAngelOne::start_with(h.fake_options()).await;
        let (acct, user) = account(2);
        fake.add_user(user);
        let out = h.login("angelone", &acct, &fake.base_urls()).await.unwrap();
        assert_eq!(out.issued_at_ms, at);
        assert_eq!(out.expires_at_ms, expiry);
    }
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_mpin_is_sent_once_and_is_invalid_credentials() {
    let h = Harness::new(morning());
    let fake = FakeAngelOne::start_with(h.fake_options()).await;
    let (mut acct, user) = account(3);
    fake.add_user(user);
    acct.extra.insert("pin".into(), "582046".into());
    let result = h.login("angelone", &acct, &fake.base_urls()).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::InvalidCredentials, "{e:?}");
    assert!(e.credentials_sent);
    assert!(e.message.contains("AB1007"), "{}", e.message);
    assert_eq!(
        fake.recorder().passwords(&acct.broker_user_id),
        vec!["582046".to_string()]
    );
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_code_is_not_retried_as_the_mpin_goes_with_it() {
    let h = Harness::new(morning());
    let fake = FakeAngelOne::start_with(h.fake_options()).await;
    let r = fake.recorder();
    // The fake would take the next step's code: the strategy still stops at the first refusal.
    for (n, behaviour) in [
        (4, AngelBehaviour::RejectFirstTotp),
        (5, AngelBehaviour::TotpRejected),
    ] {
        let (acct, user) = account(n);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("angelone", &acct, &fake.base_urls()).await;
        let e = failure(&result);
        assert_eq!(e.class, ErrorClass::TwofaRejected);
        assert!(e.message.contains("not retried"), "{}", e.message);
        assert_eq!(r.totp_uses(&acct.broker_user_id).len(), 1);
        assert_eq!(r.passwords(&acct.broker_user_id).len(), 1);
    }
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_ends_in_its_class_with_the_mpin_sent_at_most_once() {
    let h = Harness::new(morning());
    let fake = FakeAngelOne::start_with(h.fake_options()).await;
    let cases = [
        (AngelBehaviour::Blocked, ErrorClass::AccountLocked, None),
        (
            AngelBehaviour::RateLimited,
            ErrorClass::RateLimited,
            Some(1_000),
        ),
        // The limiter's text labelled text/html or wrapped in JSON: still the limiter (1 s), not
        // a WAF page (300 s, and a repeat would read as automation_blocked).
        (
            AngelBehaviour::RateLimitedHtmlType,
            ErrorClass::RateLimited,
            Some(1_000),
        ),
        (
            AngelBehaviour::RateLimitedJson,
            ErrorClass::RateLimited,
            Some(1_000),
        ),
        (AngelBehaviour::Waf, ErrorClass::RateLimited, Some(300_000)),
        (
            AngelBehaviour::BadGateway,
            ErrorClass::BrokerUnavailable,
            None,
        ),
        (
            AngelBehaviour::SomethingWentWrong,
            ErrorClass::BrokerUnavailable,
            Some(60_000),
        ),
        (AngelBehaviour::TokenNotSticking, ErrorClass::Protocol, None),
    ];
    for (n, (behaviour, class, retry)) in cases.into_iter().enumerate() {
        let (acct, user) = account(100 + n as u32);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("angelone", &acct, &fake.base_urls()).await;
        let e = failure(&result);
        assert_eq!(e.class, class, "{behaviour:?}: {e:?}");
        if retry.is_some() {
            assert_eq!(e.retry_after_ms, retry, "{behaviour:?}");
        }
        assert!(
            fake.recorder().passwords(&acct.broker_user_id).len() <= 1,
            "{behaviour:?}"
        );
        assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    }

    // Only the web password stored: sent as the MPIN once, AB7001, the fix named.
    let (mut acct, user) = account(120);
    acct.extra.clear();
    acct.password = Some(user.web_password.clone());
    fake.add_user(user);
    let result = h.login("angelone", &acct, &fake.base_urls()).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::InvalidCredentials);
    assert!(
        e.message.contains("AB7001") && e.message.contains("`pin`"),
        "{}",
        e.message
    );
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);
    assert!(captured_log().contains("sending its password as the MPIN"));

    // A wrong API key: dialect B AG8004.
    let (mut acct, user) = account(121);
    fake.add_user(user);
    acct.api_key = "otherkey".into();
    let result = h.login("angelone", &acct, &fake.base_urls()).await;
    assert_eq!(failure(&result).class, ErrorClass::InvalidCredentials);

    // No MPIN at all: refused before anything is sent.
    let (mut acct, user) = account(122);
    fake.add_user(user);
    acct.extra.clear();
    let result = h.login("angelone", &acct, &fake.base_urls()).await;
    assert!(!failure(&result).credentials_sent);
    assert!(fake.recorder().passwords(&acct.broker_user_id).is_empty());
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_on_the_same_clock_cannot_reuse_the_first_logins_totp_step() {
    let h = Harness::new(morning());
    let fake = FakeAngelOne::start_with(h.fake_options()).await;
    let (acct, user) = account(6);
    fake.add_user(user);
    h.login("angelone", &acct, &fake.base_urls()).await.unwrap();
    assert!(h.clock.sleeps().is_empty());
    // The clock has not moved: the host refuses the used step and waits for the next one.
    let out = h.login("angelone", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(h.clock.sleeps().len(), 1);
    let uses = fake.recorder().totp_uses(&acct.broker_user_id);
    assert_eq!(uses.len(), 2);
    assert!(uses.iter().all(|u| u.accepted));
    assert_ne!(uses[0].step, uses[1].step);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assisted_login_url_then_redirect_query_then_verified_token() {
    let h = Harness::new(morning());
    let fake = FakeAngelOne::start_with(h.fake_options()).await;
    let (acct, user) = account(7);
    fake.add_user(user);
    let urls = fake.base_urls();
    let callback = "https://tokenbot.example.com/callback/angelone";
    let url = h
        .assisted_url("angelone", &acct, &urls, "st4te-xyz", callback)
        .await
        .unwrap()
        .url;
    assert!(
        url.starts_with(&format!("{}/publisher-login?", fake.url())),
        "{url}"
    );
    let q = query_of(&url);
    assert_eq!(q.get("api_key"), Some(&acct.api_key));
    assert_eq!(q.get("state").map(String::as_str), Some("st4te-xyz"));

    let redirect = fake.browser_login(&url, &acct.broker_user_id).unwrap();
    let query = query_of(&redirect);
    assert_eq!(query.get("state").map(String::as_str), Some("st4te-xyz"));
    remember(&query["feed_token"]);
    let out = h
        .assisted_finish("angelone", &acct, &urls, query)
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 0, 0, 0));
    assert!(out.extras.contains_key("feed_token"));
    assert!(fake.recorder().passwords(&acct.broker_user_id).is_empty());

    // A redirect without auth_token is refused.
    let result = h
        .assisted_finish("angelone", &acct, &urls, BTreeMap::new())
        .await;
    assert_eq!(class_of(&result), ErrorClass::Protocol);
    assert_no_secret_logged();
}
