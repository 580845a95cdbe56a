//! The Motilal Oswal strategy over loopback HTTP against `FakeMotilal`, through the real plugin
//! ABI. The bundled tests need the daemon's `broker-motilal` feature; the `.so` test runs without
//! it (the drop-in case: a daemon built without Motilal loading `plugins/motilal.so`).
#![cfg_attr(not(feature = "broker-motilal"), allow(unused_imports, dead_code))]

use crate::support;

use std::collections::BTreeMap;

use super::common::*;
use broker_api::wire::ErrorClass;
use fake_brokers::{
    FakeMotilal, MOTILAL_REGISTERED_IP, MotilalBehaviour, MotilalDialect, MotilalUser, ist,
};
use tokenbot::plugins::{PluginError, Source};

const M1: &str = "/rest/login/v7/authdirectapi";
const M2: &str = "/rest/login/v1/getaccesstoken";
const V: &str = "/rest/login/v5/getprofile";

/// 2025-03-10 08:00:05 IST (the default schedule), 5 s into a TOTP step.
fn morning() -> i64 {
    ist::at(2025, 3, 10, 8, 0, 5)
}

#[cfg(feature = "broker-motilal")]
/// A harness whose `[brokers.motilal]` names the fake's registered IP.
fn harness(now_ms: i64) -> Harness {
    let h = Harness::new(now_ms);
    h.set_setting("client_public_ip", MOTILAL_REGISTERED_IP);
    h
}

/// `sha256(password + api_key)` as M1 sends it (motilal.md).
#[cfg(feature = "broker-motilal")]
fn password_hash(password: &str, api_key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        format!("{password}{api_key}").as_bytes(),
    ))
}

fn account(n: u32) -> (Account, MotilalUser) {
    let client = format!("AA{n:03}");
    let dob = format!("{:02}/07/1979", 10 + n % 18);
    let account = Account {
        user_id: format!("mo-user-{n}"),
        broker_user_id: client.clone(),
        password: Some(format!("Mosl#Pass{n}")),
        api_key: format!("moslapikey{n:04}q"),
        api_secret: format!("mosl-api-secret-{n:04}"),
        totp_secret: Some(totp_secret(n)),
        extra: BTreeMap::from([("dob_or_pan".to_string(), dob.clone())]),
    };
    let fake = MotilalUser::new(
        &client,
        account.password.as_deref().unwrap(),
        &account.api_key,
        &account.api_secret,
        account.totp_secret.as_deref().unwrap(),
        &dob,
    );
    (account, fake)
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_end_to_end_yields_a_verified_token_that_expires_at_six_ist() {
    let h = harness(morning());
    let fake = FakeMotilal::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let urls = fake.base_urls();

    let out = h.login("motilal", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    assert_eq!(out.issued_at_ms, morning());
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 6, 0, 0));
    let access = out.extras["accesstoken"].as_str().unwrap();
    remember(access);
    assert!(fake.access_token_matches(out.access_token.expose(), access));

    let r = fake.recorder();
    for route in [M1, M2, V] {
        assert_eq!(r.requests(route), 1, "{route}: {:?}", r.requests_by_route());
    }
    // The password travels as sha256(password + api_key), once.
    let hash = password_hash(acct.password.as_deref().unwrap(), &acct.api_key);
    assert_eq!(r.passwords(&acct.broker_user_id), vec![hash]);
    assert_one_password_distinct_steps(r, &acct.broker_user_id);

    let verified = h
        .verify("motilal", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(verified.valid, "{}", verified.message);
    h.clock.set(ist::at(2025, 3, 11, 6, 0, 0));
    let after = h
        .verify("motilal", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(!after.valid);
    assert!(captured_log().contains("motilal: headless login"));
    assert_no_secret_logged();
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_before_six_expires_that_same_morning_and_one_at_six_the_next() {
    let before_six = ist::at(2025, 3, 10, 5, 30, 5);
    let h = harness(before_six);
    let fake = FakeMotilal::start_with(h.fake_options()).await;
    let (acct, user) = account(2);
    fake.add_user(user);
    let out = h.login("motilal", &acct, &fake.base_urls()).await.unwrap();
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 10, 6, 0, 0));

    h.clock.set(ist::at(2025, 3, 10, 6, 0, 0));
    let out = h.login("motilal", &acct, &fake.base_urls()).await.unwrap();
    assert!(out.issued_at_ms >= ist::at(2025, 3, 10, 6, 0, 0));
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 6, 0, 0));
    assert_no_secret_logged();
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_2fa_is_sent_once_and_is_invalid_credentials() {
    let h = harness(morning());
    let fake = FakeMotilal::start_with(h.fake_options()).await;

    let (mut acct, user) = account(10);
    fake.add_user(user);
    acct.password = Some("Wrong#Pass10".into());
    let result = h.login("motilal", &acct, &fake.base_urls()).await;
    assert_eq!(
        class_of(&result),
        ErrorClass::InvalidCredentials,
        "{result:?}"
    );
    assert!(failure(&result).credentials_sent);
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);
    assert_eq!(fake.recorder().requests(M1), 1);

    let (mut acct, user) = account(11);
    fake.add_user(user);
    acct.extra.insert("dob_or_pan".into(), "01/01/1901".into());
    let result = h.login("motilal", &acct, &fake.base_urls()).await;
    assert_eq!(
        class_of(&result),
        ErrorClass::InvalidCredentials,
        "{result:?}"
    );
    assert!(failure(&result).message.contains("MO1007"));
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);

    // A 2FA value that is neither a date nor a PAN never leaves the strategy.
    let (mut acct, user) = account(12);
    fake.add_user(user);
    acct.extra.insert("dob_or_pan".into(), "1979-07-22".into());
    let result = h.login("motilal", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&result), ErrorClass::InvalidCredentials);
    assert!(!failure(&result).credentials_sent);
    assert!(fake.recorder().passwords(&acct.broker_user_id).is_empty());

    // A PAN works as the 2FA value, whatever its case.
    let (mut acct, user) = account(13);
    fake.add_user(user);
    acct.extra.insert("dob_or_pan".into(), "abcpe1234f".into());
    h.login("motilal", &acct, &fake.base_urls()).await.unwrap();
    assert_no_secret_logged();
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_totp_is_not_retried_as_the_password_goes_with_it() {
    let h = harness(morning());
    let fake = FakeMotilal::start_with(h.fake_options()).await;
    let r = fake.recorder();
    // The fake would take the next step's code: the strategy still stops at the first refusal.
    for (n, behaviour) in [
        (20, MotilalBehaviour::RejectFirstTotp),
        (21, MotilalBehaviour::TotpRejected),
    ] {
        let (acct, user) = account(n);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("motilal", &acct, &fake.base_urls()).await;
        assert_eq!(class_of(&result), ErrorClass::TwofaRejected, "{result:?}");
        assert!(failure(&result).message.contains("not retried"));
        assert_eq!(r.totp_uses(&acct.broker_user_id).len(), 1);
        assert_eq!(r.passwords(&acct.broker_user_id).len(), 1);
    }
    assert_no_secret_logged();
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_ends_in_its_class_with_the_password_sent_at_most_once() {
    let h = harness(morning());
    let fake = FakeMotilal::start_with(h.fake_options()).await;
    let cases = [
        (MotilalBehaviour::Locked, ErrorClass::AccountLocked),
        (MotilalBehaviour::RateLimited, ErrorClass::RateLimited),
        (MotilalBehaviour::Waf, ErrorClass::BrokerUnavailable),
        (
            MotilalBehaviour::PlainForbidden,
            ErrorClass::BrokerUnavailable,
        ),
        (MotilalBehaviour::ServerError, ErrorClass::BrokerUnavailable),
        (MotilalBehaviour::OtpPending, ErrorClass::TwofaUnavailable),
        (MotilalBehaviour::NoAuthToken, ErrorClass::Protocol),
    ];
    for (n, (behaviour, class)) in cases.into_iter().enumerate() {
        let (acct, user) = account(100 + n as u32);
        fake.add_user(user.with_behaviour(behaviour.clone()));
        let result = h.login("motilal", &acct, &fake.base_urls()).await;
        assert_eq!(class_of(&result), class, "{behaviour:?}: {result:?}");
        assert_eq!(fake.recorder().requests(M2), 0, "{behaviour:?}");
        assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    }
    assert_eq!(fake.recorder().requests(M1), 7, "no M1 was retried");

    // Five wrong passwords lock the account on the fake's side: one login sends one.
    let (acct, user) = account(120);
    fake.add_user(user);
    let mut wrong = acct.clone();
    wrong.password = Some("Wrong#Pass120".into());
    for _ in 0..5 {
        let r = h.login("motilal", &wrong, &fake.base_urls()).await;
        assert_eq!(class_of(&r), ErrorClass::InvalidCredentials);
    }
    let r = h.login("motilal", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&r), ErrorClass::AccountLocked);
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 6);

    // A wrong api_key is Motilal's MO2005, an unregistered IP its MO2035.
    let (mut acct, user) = account(121);
    fake.add_user(user);
    acct.api_key = "notthekey".into();
    assert_eq!(
        class_of(&h.login("motilal", &acct, &fake.base_urls()).await),
        ErrorClass::AppNotAuthorized
    );
    let (acct, user) = account(122);
    fake.add_user(user);
    fake.set_registered_ip("198.51.100.20");
    let r = h.login("motilal", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&r), ErrorClass::AppNotAuthorized);
    assert!(failure(&r).message.contains("client_public_ip"), "{r:?}");
    assert_no_secret_logged();
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_public_ip_nothing_is_sent() {
    let h = Harness::new(morning());
    let fake = FakeMotilal::start_with(h.fake_options()).await;
    let (acct, user) = account(30);
    fake.add_user(user);
    let result = h.login("motilal", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&result), ErrorClass::AppNotAuthorized);
    assert!(!failure(&result).credentials_sent);
    assert!(failure(&result).message.contains("client_public_ip"));
    assert_eq!(fake.recorder().total_requests(), 0);
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_on_a_stopped_clock_never_reuses_the_totp_step() {
    let h = harness(morning());
    let fake = FakeMotilal::start_with(h.fake_options()).await;
    let (acct, user) = account(40);
    fake.add_user(user);
    let first = h.login("motilal", &acct, &fake.base_urls()).await.unwrap();
    let second = h.login("motilal", &acct, &fake.base_urls()).await.unwrap();
    assert_ne!(first.access_token.expose(), second.access_token.expose());
    let uses = fake.recorder().totp_uses(&acct.broker_user_id);
    assert_eq!(uses.len(), 2);
    assert!(uses.iter().all(|u| u.accepted), "{uses:?}");
    assert_ne!(uses[0].step, uses[1].step);
    // The host waited (on its clock) for the next step rather than reuse the first.
    assert_eq!(h.clock.sleeps().len(), 1, "{:?}", h.clock.sleeps());
    assert_no_secret_logged();
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_step_is_optional_and_a_profile_5xx_is_retried_at_its_step() {
    let h = harness(morning());
    let fake = FakeMotilal::start_with(h.fake_options()).await;

    let (acct, user) = account(50);
    fake.add_user(user.with_behaviour(MotilalBehaviour::AccessTokenFails));
    let out = h.login("motilal", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert!(!out.extras.contains_key("accesstoken"));
    assert!(captured_log().contains("keeping the AuthToken without an accesstoken"));

    let (mut acct, user) = account(51);
    fake.add_user(user);
    acct.api_secret = String::new();
    let before = fake.recorder().requests(M2);
    let out = h.login("motilal", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(fake.recorder().requests(M2), before, "no secret, no M2");

    let (acct, user) = account(52);
    fake.add_user(user.with_behaviour(MotilalBehaviour::ProfileUnavailableOnce));
    let before = fake.recorder().requests(V);
    let out = h.login("motilal", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(fake.recorder().requests(V) - before, 2);
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);
    assert_no_secret_logged();
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_a_token_motilal_does_not_know() {
    let h = harness(morning());
    let fake = FakeMotilal::start_with(h.fake_options()).await;
    let (acct, user) = account(60);
    fake.add_user(user);
    let v = h
        .verify(
            "motilal",
            &acct,
            &fake.base_urls(),
            "0123456789abcdef0123456789abcdef_M",
        )
        .await
        .unwrap();
    assert!(!v.valid);
    assert!(v.message.contains("MO8003"), "{}", v.message);
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assisted_login_is_off_by_default_and_runs_from_a_configured_partner_page() {
    let h = harness(morning());
    let fake = FakeMotilal::start_with(h.fake_options()).await;
    let (acct, user) = account(70);
    fake.add_user(user);
    let callback = "https://tokenbot.example.com/callback/motilal";
    let mut urls = fake.base_urls();
    let off = h
        .assisted_url("motilal", &acct, &urls, "st-1", callback)
        .await;
    assert!(
        matches!(off, Err(PluginError::Failed(ref e)) if e.message.contains("assisted_login_url")),
        "{off:?}"
    );

    urls.insert("assisted_login_url".into(), fake.assisted_login_template());
    let url = h
        .assisted_url("motilal", &acct, &urls, "st-2", callback)
        .await
        .unwrap()
        .url;
    let q = query_of(&url);
    assert_eq!(q.get("apikey"), Some(&acct.api_key));
    assert_eq!(q.get("state").map(String::as_str), Some("st-2"));
    assert_eq!(q.get("redirect").map(String::as_str), Some(callback));

    let redirect = fake.browser_login(&url, &acct.broker_user_id).unwrap();
    let query = query_of(&redirect);
    assert_eq!(query.get("state").map(String::as_str), Some("st-2"));
    let out = h
        .assisted_finish("motilal", &acct, &urls, query)
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert!(out.extras.contains_key("accesstoken"));
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 6, 0, 0));
    assert!(fake.recorder().passwords(&acct.broker_user_id).is_empty());

    // A token of another client is refused.
    let (other, other_user) = account(71);
    fake.add_user(MotilalUser {
        api_key: acct.api_key.clone(),
        ..other_user
    });
    let redirect = fake.browser_login(&url, &other.broker_user_id).unwrap();
    let result = h
        .assisted_finish("motilal", &acct, &urls, query_of(&redirect))
        .await;
    assert_eq!(class_of(&result), ErrorClass::InvalidCredentials);
    assert_no_secret_logged();
}

#[cfg(feature = "broker-motilal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_readings_of_the_envelope_log_in_and_fail_in_the_same_classes() {
    let h = harness(morning());
    let fake = FakeMotilal::start_with(h.fake_options()).await;
    for (n, dialect) in [MotilalDialect::BareErrors, MotilalDialect::PascalCase]
        .into_iter()
        .enumerate()
    {
        fake.set_dialect(dialect);
        let n = 90 + 4 * n as u32;
        let (acct, user) = account(n);
        fake.add_user(user);
        let out = h
            .login("motilal", &acct, &fake.base_urls())
            .await
            .unwrap_or_else(|e| panic!("{dialect:?}: {e:?}"));
        assert!(
            fake.token_is_valid(out.access_token.expose()),
            "{dialect:?}"
        );
        assert_eq!(out.broker_user_id, acct.broker_user_id);
        assert!(out.extras.contains_key("accesstoken"), "{dialect:?}");

        // A refused code is still MO1093 in this dialect: twofa_rejected, not retried.
        let (acct, user) = account(n + 1);
        fake.add_user(user.with_behaviour(MotilalBehaviour::RejectFirstTotp));
        let result = h.login("motilal", &acct, &fake.base_urls()).await;
        assert_eq!(class_of(&result), ErrorClass::TwofaRejected, "{dialect:?}");

        let (mut acct, user) = account(n + 2);
        fake.add_user(user);
        acct.extra.insert("dob_or_pan".into(), "01/01/1901".into());
        let result = h.login("motilal", &acct, &fake.base_urls()).await;
        assert_eq!(
            class_of(&result),
            ErrorClass::InvalidCredentials,
            "{dialect:?}: {result:?}"
        );
        assert!(failure(&result).message.contains("MO1007"), "{result:?}");
        assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);

        let v = h
            .verify("motilal", &acct, &fake.base_urls(), "0123456789abcdef_M")
            .await
            .unwrap();
        assert!(!v.valid, "{dialect:?}");
    }
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_so_build_loads_from_plugins_and_logs_in() {
    let so = support::broker_so("broker-motilal");
    let dir = tempfile::tempdir().unwrap();
    let installed = support::install(&so, dir.path(), "motilal.so");
    let h = Harness::with_plugins_dir(morning(), dir);
    h.set_setting("client_public_ip", MOTILAL_REGISTERED_IP);
    let plugin = h.plugin("motilal");
    assert_eq!(plugin.source, Source::Path(installed));
    assert!(plugin.has_verify() && plugin.has_assisted());
    let fake = FakeMotilal::start_with(h.fake_options()).await;
    let (acct, user) = account(80);
    fake.add_user(user);
    let out = h.login("motilal", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_no_secret_logged();
}
