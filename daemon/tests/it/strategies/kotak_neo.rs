//! The Kotak Neo strategy over loopback HTTP against `FakeKotakNeo`, through the real plugin ABI.

use super::common::*;
use broker_api::wire::ErrorClass;
use fake_brokers::{FakeKotakNeo, KotakBehaviour, KotakUser, ist};

/// 2025-03-10 08:00:05 IST (the default schedule), 5 s into a TOTP step.
fn eight_am() -> i64 {
    ist::at(2025, 3, 10, 8, 0, 5)
}

fn account(n: u32) -> (Account, KotakUser) {
    let ucc = format!("ZK{n:03}");
    // Not all digits: the captured log's microsecond timestamps could hold a 6-digit MPIN by
    // chance, and the fake does not check the MPIN's shape.
    let mpin = format!("73m{n:03}");
    let mobile = format!("+91987{n:07}");
    let account = Account {
        user_id: format!("kotak-user-{n}"),
        broker_user_id: ucc.clone(),
        password: None,
        api_key: format!("neo-api-access-token-{n:04}-eyJhbGciOi"),
        api_secret: String::new(),
        totp_secret: Some(totp_secret(600 + n)),
        extra: [
            ("pin".to_string(), mpin.clone()),
            ("mobile".to_string(), mobile.clone()),
        ]
        .into(),
    };
    let fake = KotakUser::new(
        &ucc,
        &mobile,
        &mpin,
        &account.api_key,
        account.totp_secret.as_deref().unwrap(),
    );
    (account, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_yields_a_verified_trade_session_expiring_at_midnight_ist() {
    let h = Harness::new(eight_am());
    let fake = FakeKotakNeo::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let out = h
        .login("kotak-neo", &acct, &fake.base_urls())
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    assert_eq!(out.issued_at_ms, eight_am());
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 0, 0, 0));
    assert_eq!(out.extras["base_url"], fake.session_base_url());
    assert_eq!(out.extras["hs_server_id"], "server2");
    assert_eq!(out.extras["data_center"], "E22");
    assert!(out.extras["sid"].as_str().is_some_and(|s| !s.is_empty()));
    let plugin = h.plugin("kotak-neo");
    let served = &plugin.manifest.served_extras;
    for name in ["sid", "base_url", "hs_server_id", "data_center"] {
        assert!(served.iter().any(|s| s == name), "{name} is served");
    }
    let r = fake.recorder();
    for route in [
        "/login/1.0/tradeApiLogin",
        "/login/1.0/tradeApiValidate",
        "/quick/user/limits",
    ] {
        assert_eq!(r.requests(route), 1, "{route}: {:?}", r.requests_by_route());
    }
    assert_eq!(
        r.passwords(&acct.broker_user_id),
        vec![acct.extra["pin"].clone()]
    );
    assert_one_password_distinct_steps(r, &acct.broker_user_id);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_exp_before_midnight_wins() {
    let h = Harness::new(eight_am());
    let fake = FakeKotakNeo::start_with(h.fake_options()).await;
    let (acct, user) = account(2);
    fake.add_user(user.with_token_ttl_ms(3_600_000));
    let out = h
        .login("kotak-neo", &acct, &fake.base_urls())
        .await
        .unwrap();
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 10, 9, 0, 5));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_mpin_is_sent_once_and_is_invalid_credentials() {
    let h = Harness::new(eight_am());
    let fake = FakeKotakNeo::start_with(h.fake_options()).await;
    let (mut acct, user) = account(3);
    fake.add_user(user);
    acct.extra.insert("pin".into(), "58x047".into());
    let result = h.login("kotak-neo", &acct, &fake.base_urls()).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::InvalidCredentials, "{}", e.message);
    assert!(e.credentials_sent);
    assert!(e.message.contains("Invalid MPIN."), "{}", e.message);
    assert_eq!(
        fake.recorder().passwords(&acct.broker_user_id),
        vec!["58x047".to_string()]
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ambiguous_401_is_retried_once_on_a_fresh_step() {
    let h = Harness::new(eight_am());
    let fake = FakeKotakNeo::start_with(h.fake_options()).await;
    let (acct, user) = account(4);
    fake.add_user(user.with_behaviour(KotakBehaviour::RejectFirstTotp));
    let out = h
        .login("kotak-neo", &acct, &fake.base_urls())
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    let uses = fake.recorder().totp_uses(&acct.broker_user_id);
    assert_eq!(
        uses.iter().map(|u| u.accepted).collect::<Vec<_>>(),
        vec![false, true]
    );
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    assert_eq!(
        h.clock.sleeps().len(),
        1,
        "the host waited for the next step"
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ambiguous_401_is_invalid_credentials_and_no_mpin_is_sent() {
    let h = Harness::new(eight_am());
    let fake = FakeKotakNeo::start_with(h.fake_options()).await;
    let (mut acct, user) = account(5);
    fake.add_user(user);
    acct.totp_secret = Some(totp_secret(998));
    let result = h.login("kotak-neo", &acct, &fake.base_urls()).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::InvalidCredentials, "{}", e.message);
    assert!(
        e.message.contains("Invalid credentials or TOTP."),
        "{}",
        e.message
    );
    assert_eq!(fake.recorder().totp_uses(&acct.broker_user_id).len(), 2);
    assert!(fake.recorder().passwords(&acct.broker_user_id).is_empty());
    // No MPIN left, but no new login may follow in this refresh: it would send more K1 tries.
    assert!(e.credentials_sent);
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);

    // The national mobile format (the SDK sample) against a broker that wants +91: the same
    // ambiguous answer twice, never a third code.
    let (acct, user) = account(6);
    fake.add_user(user);
    h.set_setting("mobile_format", "national");
    let result = h.login("kotak-neo", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&result), ErrorClass::InvalidCredentials);
    assert_eq!(fake.recorder().totp_uses(&acct.broker_user_id).len(), 2);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_of_kotak_neo_md_ends_in_its_class() {
    let h = Harness::new(eight_am());
    let fake = FakeKotakNeo::start_with(h.fake_options()).await;
    let cases = [
        (KotakBehaviour::Locked, ErrorClass::AccountLocked, false),
        (
            KotakBehaviour::WafPage,
            ErrorClass::BrokerUnavailable,
            false,
        ),
        (
            KotakBehaviour::ServerError,
            ErrorClass::BrokerUnavailable,
            false,
        ),
        (
            KotakBehaviour::DependencyError,
            ErrorClass::BrokerUnavailable,
            false,
        ),
        (KotakBehaviour::RateLimited, ErrorClass::RateLimited, false),
        (
            KotakBehaviour::Forbidden,
            ErrorClass::AppNotAuthorized,
            true,
        ),
        (
            KotakBehaviour::PasswordExpired,
            ErrorClass::InvalidCredentials,
            true,
        ),
        (KotakBehaviour::StaleSession, ErrorClass::Protocol, true),
        (
            KotakBehaviour::PlainForbidden,
            ErrorClass::AppNotAuthorized,
            true,
        ),
        (
            KotakBehaviour::PasswordExpiredAsString,
            ErrorClass::InvalidCredentials,
            true,
        ),
    ];
    for (n, (behaviour, class, mpin_sent)) in cases.into_iter().enumerate() {
        let (acct, user) = account(100 + n as u32);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("kotak-neo", &acct, &fake.base_urls()).await;
        let e = failure(&result);
        assert_eq!(e.class, class, "{behaviour:?}: {}", e.message);
        assert_eq!(e.credentials_sent, mpin_sent, "{behaviour:?}");
        let sent = fake.recorder().passwords(&acct.broker_user_id).len();
        assert_eq!(sent, usize::from(mpin_sent), "{behaviour:?}");
    }
    // An API access token that was reset: the login API refuses the Authorization header.
    let (mut acct, user) = account(150);
    fake.add_user(user);
    acct.api_key = "neo-api-access-token-reset-0000".into();
    let result = h.login("kotak-neo", &acct, &fake.base_urls()).await;
    assert_eq!(
        class_of(&result),
        ErrorClass::AppNotAuthorized,
        "{result:?}"
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_on_a_standing_clock_cannot_reuse_the_step() {
    let h = Harness::new(eight_am());
    let fake = FakeKotakNeo::start_with(h.fake_options()).await;
    let (acct, user) = account(7);
    fake.add_user(user);
    let urls = fake.base_urls();
    h.login("kotak-neo", &acct, &urls).await.unwrap();
    h.login("kotak-neo", &acct, &urls).await.unwrap();
    let uses = fake.recorder().totp_uses(&acct.broker_user_id);
    assert_eq!(uses.len(), 2);
    assert!(uses.iter().all(|u| u.accepted));
    assert_ne!(uses[0].step, uses[1].step);
    assert_eq!(h.clock.sleeps().len(), 1);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_readings_of_kotak_neo_md_are_understood() {
    let h = Harness::new(eight_am());
    let fake = FakeKotakNeo::start_with(h.fake_options()).await;
    // A bare, empty 401 for the first code: still the ambiguous K1 refusal, retried once.
    let (acct, user) = account(20);
    fake.add_user(user.with_behaviour(KotakBehaviour::BareUnauthorizedFirstTotp));
    let out = h
        .login("kotak-neo", &acct, &fake.base_urls())
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    let uses = fake.recorder().totp_uses(&acct.broker_user_id);
    assert_eq!(
        uses.iter().map(|u| u.accepted).collect::<Vec<_>>(),
        vec![false, true]
    );
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);

    // `isUserPwdExpired: "false"` is not expired; a numeric `hsServerId` is the limits' `sId`.
    let (acct, user) = account(21);
    fake.add_user(user.with_behaviour(KotakBehaviour::OtherJsonTypes));
    let out = h
        .login("kotak-neo", &acct, &fake.base_urls())
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.extras["hs_server_id"], "2");
    assert_no_secret_logged();
}
