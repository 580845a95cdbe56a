//! The 5paisa strategy over loopback HTTP against `FakeFivePaisa`, through the real plugin ABI.

use std::collections::BTreeMap;

use super::common::*;
use broker_api::wire::ErrorClass;
use fake_brokers::{FakeFivePaisa, FivePaisaBehaviour, FivePaisaUser, TradeBookRefusal, ist};

const F1: &str = "/VendorsAPI/Service1.svc/TOTPLogin";
const F2: &str = "/VendorsAPI/Service1.svc/GetAccessToken";
const F3: &str = "/VendorsAPI/Service1.svc/V1/TradeBook";

/// 2025-03-10 08:00:05 IST (the default schedule), 5 s into a TOTP step.
fn morning() -> i64 {
    ist::at(2025, 3, 10, 8, 0, 5)
}

fn account(n: u32) -> (Account, FivePaisaUser) {
    let client = format!("5001{n:04}");
    let pin = (739_164 + n * 7).to_string();
    let api_user_id = format!("ApiUsr{n:03}x");
    let account = Account {
        user_id: format!("fp-user-{n}"),
        broker_user_id: client.clone(),
        password: None,
        api_key: format!("fpUserKey{n:04}abc"),
        api_secret: format!("fp-encry-key-{n:04}"),
        totp_secret: Some(totp_secret(n)),
        extra: BTreeMap::from([
            ("pin".to_string(), pin.clone()),
            ("api_user_id".to_string(), api_user_id.clone()),
        ]),
    };
    let fake = FivePaisaUser {
        client_code: client,
        pin,
        totp_secret: account.totp_secret.clone().unwrap(),
        user_key: account.api_key.clone(),
        encry_key: account.api_secret.clone(),
        api_user_id,
        behaviour: FivePaisaBehaviour::Happy,
    };
    (account, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_end_to_end_yields_a_verified_token_that_expires_at_2359_ist() {
    let h = Harness::new(morning());
    let fake = FakeFivePaisa::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let urls = fake.base_urls();

    let out = h.login("fivepaisa", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.issued_at_ms, morning());
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 10, 23, 59, 0));
    assert_eq!(out.extras["client_name"], "Client 50010001");
    remember(out.extras["refresh_token"].as_str().unwrap());
    let r = fake.recorder();
    for route in [F1, F2, F3] {
        assert_eq!(r.requests(route), 1, "{route}: {:?}", r.requests_by_route());
    }
    assert_eq!(r.passwords(&acct.broker_user_id).len(), 1, "the PIN, once");
    assert_one_password_distinct_steps(r, &acct.broker_user_id);

    let v = h
        .verify("fivepaisa", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(v.valid, "{}", v.message);
    h.clock.set(ist::at(2025, 3, 11, 0, 0, 0));
    let v = h
        .verify("fivepaisa", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(!v.valid);
    assert!(captured_log().contains("fivepaisa: headless TOTP login"));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_login_starts_in_the_last_minute_of_the_ist_day() {
    let h = Harness::new(ist::at(2025, 3, 10, 23, 59, 20));
    let fake = FakeFivePaisa::start_with(h.fake_options()).await;
    let (acct, user) = account(2);
    fake.add_user(user);
    let result = h.login("fivepaisa", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&result), ErrorClass::RateLimited);
    assert!(!failure(&result).credentials_sent);
    assert_eq!(fake.recorder().total_requests(), 0);

    h.clock.set(ist::at(2025, 3, 11, 0, 0, 35));
    let out = h
        .login("fivepaisa", &acct, &fake.base_urls())
        .await
        .unwrap();
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 23, 59, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_sent_once_and_is_invalid_credentials() {
    let h = Harness::new(morning());
    let fake = FakeFivePaisa::start_with(h.fake_options()).await;
    let (mut acct, user) = account(10);
    fake.add_user(user);
    acct.extra.insert("pin".into(), "604281".into());
    let result = h.login("fivepaisa", &acct, &fake.base_urls()).await;
    assert_eq!(
        class_of(&result),
        ErrorClass::InvalidCredentials,
        "{result:?}"
    );
    assert!(failure(&result).credentials_sent);
    assert_eq!(
        fake.recorder().passwords(&acct.broker_user_id),
        vec!["604281".to_string()]
    );

    // A wrong Encryption Key fails F2 as a credential error, without a second F1.
    let (mut acct, user) = account(11);
    fake.add_user(user);
    acct.api_secret = "wrong-encry-key".into();
    let result = h.login("fivepaisa", &acct, &fake.base_urls()).await;
    assert_eq!(
        class_of(&result),
        ErrorClass::InvalidCredentials,
        "{result:?}"
    );
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_totp_is_not_retried_as_the_pin_goes_with_it() {
    let h = Harness::new(morning());
    let fake = FakeFivePaisa::start_with(h.fake_options()).await;
    let r = fake.recorder();
    // The fake would take the next step's code: the strategy still stops at the first refusal.
    for (n, behaviour) in [
        (20, FivePaisaBehaviour::RejectFirstTotp),
        (21, FivePaisaBehaviour::TotpRejected),
    ] {
        let (acct, user) = account(n);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("fivepaisa", &acct, &fake.base_urls()).await;
        assert_eq!(class_of(&result), ErrorClass::TwofaRejected, "{result:?}");
        assert!(failure(&result).message.contains("not retried"));
        assert_eq!(r.totp_uses(&acct.broker_user_id).len(), 1);
        assert_eq!(r.passwords(&acct.broker_user_id).len(), 1);
    }
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_ends_in_its_class_with_the_pin_sent_at_most_once() {
    let h = Harness::new(morning());
    let fake = FakeFivePaisa::start_with(h.fake_options()).await;
    let cases = [
        (FivePaisaBehaviour::Blocked, ErrorClass::AccountLocked),
        (
            FivePaisaBehaviour::Decommissioned,
            ErrorClass::AutomationBlocked,
        ),
        (FivePaisaBehaviour::EmptyBody, ErrorClass::AutomationBlocked),
        (
            FivePaisaBehaviour::DeprecatedMessage,
            ErrorClass::AutomationBlocked,
        ),
        (FivePaisaBehaviour::RateLimited, ErrorClass::RateLimited),
        (FivePaisaBehaviour::Waf, ErrorClass::BrokerUnavailable),
        (
            FivePaisaBehaviour::ServerUnable,
            ErrorClass::BrokerUnavailable,
        ),
        (
            FivePaisaBehaviour::ServerError,
            ErrorClass::BrokerUnavailable,
        ),
        (FivePaisaBehaviour::TokenExpired, ErrorClass::Protocol),
    ];
    for (n, (behaviour, class)) in cases.into_iter().enumerate() {
        let (acct, user) = account(100 + n as u32);
        fake.add_user(user.with_behaviour(behaviour.clone()));
        let result = h.login("fivepaisa", &acct, &fake.base_urls()).await;
        assert_eq!(class_of(&result), class, "{behaviour:?}: {result:?}");
        assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    }
    assert_eq!(fake.recorder().requests(F1), 9, "no F1 was retried");
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_on_a_stopped_clock_never_reuses_the_totp_step() {
    let h = Harness::new(morning());
    let fake = FakeFivePaisa::start_with(h.fake_options()).await;
    let (acct, user) = account(40);
    fake.add_user(user);
    h.login("fivepaisa", &acct, &fake.base_urls())
        .await
        .unwrap();
    h.login("fivepaisa", &acct, &fake.base_urls())
        .await
        .unwrap();
    let uses = fake.recorder().totp_uses(&acct.broker_user_id);
    assert_eq!(uses.len(), 2);
    assert!(uses.iter().all(|u| u.accepted));
    assert_ne!(uses[0].step, uses[1].step);
    assert_eq!(h.clock.sleeps().len(), 1, "{:?}", h.clock.sleeps());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_assisted_login_url_then_redirect_request_token_then_session() {
    let h = Harness::new(morning());
    let fake = FakeFivePaisa::start_with(h.fake_options()).await;
    let (acct, user) = account(70);
    fake.add_user(user);
    let urls = fake.base_urls();
    let callback = "https://tokenbot.example.com/callback/fivepaisa";
    let url = h
        .assisted_url("fivepaisa", &acct, &urls, "st-5p", callback)
        .await
        .unwrap()
        .url;
    let q = query_of(&url);
    assert!(url.starts_with(&urls["login_url"]), "{url}");
    assert_eq!(q.get("VendorKey"), Some(&acct.api_key));
    assert_eq!(q.get("ResponseURL").map(String::as_str), Some(callback));
    assert_eq!(q.get("State").map(String::as_str), Some("st-5p"));

    let redirect = fake.browser_login(&url, &acct.broker_user_id).unwrap();
    let query = query_of(&redirect);
    assert_eq!(query.get("state").map(String::as_str), Some("st-5p"));
    let out = h
        .assisted_finish("fivepaisa", &acct, &urls, query.clone())
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    remember(out.extras["refresh_token"].as_str().unwrap());
    assert!(fake.recorder().passwords(&acct.broker_user_id).is_empty());
    // The RequestToken is single use.
    assert!(
        h.assisted_finish("fivepaisa", &acct, &urls, query)
            .await
            .is_err()
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_invalid_whether_the_refusal_is_in_the_head_or_an_http_401() {
    let h = Harness::new(morning());
    let fake = FakeFivePaisa::start_with(h.fake_options()).await;
    let (acct, user) = account(60);
    fake.add_user(user);
    let urls = fake.base_urls();
    let out = h.login("fivepaisa", &acct, &urls).await.unwrap();
    h.clock.set(ist::at(2025, 3, 11, 0, 0, 0));
    for refusal in [
        TradeBookRefusal::BodyStatus,
        TradeBookRefusal::HeadOnly,
        TradeBookRefusal::Http401,
    ] {
        fake.set_trade_book_refusal(refusal);
        let v = h
            .verify("fivepaisa", &acct, &urls, out.access_token.expose())
            .await
            .unwrap_or_else(|e| panic!("{refusal:?}: {e:?}"));
        assert!(!v.valid, "{refusal:?}");
        assert!(!v.message.is_empty(), "{refusal:?}");
    }
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numeric_client_code_in_f2_is_checked_like_a_string() {
    let h = Harness::new(morning());
    let fake = FakeFivePaisa::start_with(h.fake_options()).await;
    let (acct, user) = account(61);
    let own: u64 = acct.broker_user_id.parse().unwrap();
    fake.add_user(user.with_behaviour(FivePaisaBehaviour::NumericClientCode(own)));
    let out = h
        .login("fivepaisa", &acct, &fake.base_urls())
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));

    let (acct, user) = account(62);
    fake.add_user(user.with_behaviour(FivePaisaBehaviour::NumericClientCode(50019999)));
    let result = h.login("fivepaisa", &acct, &fake.base_urls()).await;
    assert_eq!(
        class_of(&result),
        ErrorClass::InvalidCredentials,
        "{result:?}"
    );
    assert!(failure(&result).message.contains("50019999"));
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);
    assert_no_secret_logged();
}
