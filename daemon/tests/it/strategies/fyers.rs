//! The Fyers strategy over loopback HTTP against `FakeFyers`, through the real plugin ABI.

use super::common::*;
use broker_api::wire::ErrorClass;
use fake_brokers::{FakeFyers, FyersBehaviour, FyersUser, ist};
use tokenbot::clock::Clock;

const CALLBACK: &str = "https://tokenbot.example.com/callback/fyers";

/// 2025-03-10 08:00:05 IST (the default schedule), 5 s into a TOTP step.
fn eight_am() -> i64 {
    ist::at(2025, 3, 10, 8, 0, 5)
}

fn account(n: u32) -> (Account, FyersUser) {
    let fy_id = format!("XY{n:05}");
    // Not digits: the captured log's microsecond timestamps hold every 4-digit string sooner or
    // later, and the fake does not check the PIN's shape.
    let pin = format!("p{n:03}");
    let account = Account {
        user_id: format!("fyers-user-{n}"),
        broker_user_id: fy_id.clone(),
        password: None,
        api_key: format!("FYAPP{n:05}Q-100"),
        api_secret: format!("Fy$ecret-{n:04}-kq"),
        totp_secret: Some(totp_secret(400 + n)),
        extra: [
            ("pin".to_string(), pin.clone()),
            ("redirect_uri".to_string(), CALLBACK.to_string()),
        ]
        .into(),
    };
    let fake = FyersUser::new(
        &fy_id,
        &pin,
        &account.api_key,
        &account.api_secret,
        account.totp_secret.as_deref().unwrap(),
    )
    .with_redirect_uri(CALLBACK);
    (account, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_login_yields_a_verified_token_expiring_at_six_ist() {
    let h = Harness::new(eight_am());
    let fake = FakeFyers::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let urls = fake.base_urls();

    let out = h.login("fyers", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    assert_eq!(out.issued_at_ms, eight_am());
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 6, 0, 0));
    assert!(!out.extras.contains_key("refresh_token"), "off by default");
    let r = fake.recorder();
    for route in [
        "/vagator/v2/send_login_otp_v2",
        "/vagator/v2/verify_otp",
        "/vagator/v2/verify_pin_v2",
        "/api/v3/token",
        "/api/v3/validate-authcode",
        "/api/v3/profile",
    ] {
        assert_eq!(r.requests(route), 1, "{route}: {:?}", r.requests_by_route());
    }
    assert_eq!(
        r.passwords(&acct.broker_user_id),
        vec![acct.extra["pin"].clone()]
    );
    assert_one_password_distinct_steps(r, &acct.broker_user_id);

    let verified = h
        .verify("fyers", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(verified.valid, "{}", verified.message);
    h.clock.set(ist::at(2025, 3, 11, 6, 0, 0));
    let expired = h
        .verify("fyers", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(!expired.valid);
    assert!(captured_log().contains("community-known vagator flow"));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_before_six_expires_that_same_morning_and_keeps_the_refresh_token_when_asked() {
    let h = Harness::new(ist::at(2025, 3, 10, 2, 30, 5));
    let fake = FakeFyers::start_with(h.fake_options()).await;
    let (acct, user) = account(2);
    fake.add_user(user);
    h.set_setting("keep_refresh_token", "true");
    let out = h.login("fyers", &acct, &fake.base_urls()).await.unwrap();
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 10, 6, 0, 0));
    assert!(out.extras.contains_key("refresh_token"));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_variant_uses_the_fyersdev_sample_endpoints() {
    let h = Harness::new(eight_am());
    let fake = FakeFyers::start_with(h.fake_options()).await;
    let (acct, user) = account(3);
    fake.add_user(user);
    h.set_setting("otp_variant", "plain");
    let out = h.login("fyers", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    let r = fake.recorder();
    assert_eq!(r.requests("/vagator/v2/send_login_otp"), 1);
    assert_eq!(r.requests("/vagator/v2/verify_pin"), 1);
    assert_eq!(r.requests("/vagator/v2/send_login_otp_v2"), 0);
    assert_eq!(
        r.passwords(&acct.broker_user_id),
        vec![acct.extra["pin"].clone()]
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_sent_once_and_is_invalid_credentials() {
    let h = Harness::new(eight_am());
    let fake = FakeFyers::start_with(h.fake_options()).await;
    let (mut acct, user) = account(4);
    fake.add_user(user);
    acct.extra.insert("pin".into(), "w826".into());
    let result = h.login("fyers", &acct, &fake.base_urls()).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::InvalidCredentials, "{}", e.message);
    assert!(e.credentials_sent);
    assert!(e.message.contains("attempts left"), "{}", e.message);
    assert_eq!(
        fake.recorder().passwords(&acct.broker_user_id),
        vec!["w826".to_string()]
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_code_is_retried_once_on_a_fresh_step() {
    let h = Harness::new(eight_am());
    let fake = FakeFyers::start_with(h.fake_options()).await;
    let (acct, user) = account(5);
    fake.add_user(user.with_behaviour(FyersBehaviour::RejectFirstTotp));
    let out = h.login("fyers", &acct, &fake.base_urls()).await.unwrap();
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
async fn a_second_refused_code_stops_before_the_pin() {
    let h = Harness::new(eight_am());
    let fake = FakeFyers::start_with(h.fake_options()).await;
    let (mut acct, user) = account(6);
    fake.add_user(user);
    acct.totp_secret = Some(totp_secret(999));
    let result = h.login("fyers", &acct, &fake.base_urls()).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::TwofaRejected, "{}", e.message);
    assert_eq!(fake.recorder().totp_uses(&acct.broker_user_id).len(), 2);
    assert!(fake.recorder().passwords(&acct.broker_user_id).is_empty());
    // No PIN left, but TOTP codes did, which Fyers counts: no new login in this refresh.
    assert!(e.credentials_sent);
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_of_fyers_md_ends_in_its_class() {
    let h = Harness::new(eight_am());
    let fake = FakeFyers::start_with(h.fake_options()).await;
    let cases = [
        (FyersBehaviour::Blocked, ErrorClass::AccountLocked, false),
        (
            FyersBehaviour::BlockedFlagAsString,
            ErrorClass::AccountLocked,
            false,
        ),
        (
            FyersBehaviour::Recaptcha,
            ErrorClass::AutomationBlocked,
            false,
        ),
        (
            FyersBehaviour::CloudflareRateLimit,
            ErrorClass::RateLimited,
            false,
        ),
        (
            FyersBehaviour::WafPage,
            ErrorClass::BrokerUnavailable,
            false,
        ),
        (
            FyersBehaviour::ServerError,
            ErrorClass::BrokerUnavailable,
            false,
        ),
        (
            FyersBehaviour::AppNotAuthorized,
            ErrorClass::AppNotAuthorized,
            true,
        ),
    ];
    for (n, (behaviour, class, pin_sent)) in cases.into_iter().enumerate() {
        let (acct, user) = account(100 + n as u32);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("fyers", &acct, &fake.base_urls()).await;
        let e = failure(&result);
        assert_eq!(e.class, class, "{behaviour:?}: {}", e.message);
        assert_eq!(e.credentials_sent, pin_sent, "{behaviour:?}");
        let pins = fake.recorder().passwords(&acct.broker_user_id).len();
        assert_eq!(pins, usize::from(pin_sent), "{behaviour:?}");
        if behaviour == FyersBehaviour::CloudflareRateLimit {
            assert!(
                e.retry_after_ms.unwrap() >= 600_000,
                "{:?}",
                e.retry_after_ms
            );
        }
    }
    // A wrong App secret: -371 at validate-authcode.
    let (mut acct, user) = account(150);
    fake.add_user(user);
    acct.api_secret = "not-the-secret-77".into();
    let result = h.login("fyers", &acct, &fake.base_urls()).await;
    assert_eq!(
        class_of(&result),
        ErrorClass::InvalidCredentials,
        "{result:?}"
    );
    // An App ID without its type suffix never leaves.
    let (mut acct, user) = account(151);
    fake.add_user(user);
    acct.api_key = "FYAPP00151Q".into();
    let result = h.login("fyers", &acct, &fake.base_urls()).await;
    assert!(!failure(&result).credentials_sent);
    assert_eq!(fake.recorder().requests("/vagator/v2/send_login_otp_v2"), 8);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_code_in_a_location_header_is_read_too() {
    let h = Harness::new(eight_am());
    let fake = FakeFyers::start_with(h.fake_options()).await;
    let (acct, user) = account(7);
    fake.add_user(user.with_behaviour(FyersBehaviour::RedirectInLocation));
    let out = h.login("fyers", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_readings_of_fyers_md_are_understood() {
    let h = Harness::new(eight_am());
    let fake = FakeFyers::start_with(h.fake_options()).await;
    // H4's `Url` spelled `URL`.
    let (acct, user) = account(20);
    fake.add_user(user.with_behaviour(FyersBehaviour::UppercaseUrlKey));
    let urls = fake.base_urls();
    let out = h.login("fyers", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));

    // A wrong PIN refused as HTTP 401 "Invalid credentials", without `failed_attempts`.
    let (mut acct, user) = account(21);
    fake.add_user(user.with_behaviour(FyersBehaviour::CredentialsWording));
    acct.extra.insert("pin".into(), "w921".into());
    let result = h.login("fyers", &acct, &urls).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::InvalidCredentials, "{}", e.message);
    assert!(e.credentials_sent);
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);

    // A dead token refused by the gateway's HTML 401: invalid, not an error.
    let (acct, user) = account(22);
    fake.add_user(user.with_behaviour(FyersBehaviour::GatewayUnauthorized));
    let out = h.login("fyers", &acct, &urls).await.unwrap();
    h.clock.set(ist::at(2025, 3, 11, 6, 0, 0));
    let expired = h
        .verify("fyers", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(!expired.valid);
    assert!(expired.message.contains("401"), "{}", expired.message);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_on_a_standing_clock_cannot_reuse_the_step() {
    let h = Harness::new(eight_am());
    let fake = FakeFyers::start_with(h.fake_options()).await;
    let (acct, user) = account(8);
    fake.add_user(user);
    let urls = fake.base_urls();
    h.login("fyers", &acct, &urls).await.unwrap();
    h.login("fyers", &acct, &urls).await.unwrap();
    let uses = fake.recorder().totp_uses(&acct.broker_user_id);
    assert_eq!(uses.len(), 2);
    assert!(uses.iter().all(|u| u.accepted));
    assert_ne!(uses[0].step, uses[1].step);
    assert_eq!(
        h.clock.sleeps().len(),
        1,
        "the host waited for the next step"
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assisted_login_url_then_redirect_query_then_token() {
    let h = Harness::new(eight_am());
    let fake = FakeFyers::start_with(h.fake_options()).await;
    let (mut acct, user) = account(9);
    acct.extra.remove("redirect_uri");
    fake.add_user(user);
    let urls = fake.base_urls();
    let url = h
        .assisted_url("fyers", &acct, &urls, "st4te-9", CALLBACK)
        .await
        .unwrap()
        .url;
    assert!(
        url.starts_with(&format!("{}/generate-authcode?", fake.api_url())),
        "{url}"
    );
    let q = query_of(&url);
    assert_eq!(q.get("client_id"), Some(&acct.api_key));
    assert_eq!(q.get("redirect_uri").map(String::as_str), Some(CALLBACK));
    assert_eq!(q.get("state").map(String::as_str), Some("st4te-9"));

    let redirect = fake.browser_login(&url, &acct.broker_user_id).unwrap();
    let query = query_of(&redirect);
    assert_eq!(
        query.get("code").map(String::as_str),
        Some("200"),
        "a status, not the code"
    );
    let out = h
        .assisted_finish("fyers", &acct, &urls, query.clone())
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 6, 0, 0));
    assert_eq!(out.issued_at_ms, h.clock.now_ms());
    assert!(fake.recorder().passwords(&acct.broker_user_id).is_empty());

    let replay = h
        .assisted_finish("fyers", &acct, &urls, query.clone())
        .await;
    assert_eq!(class_of(&replay), ErrorClass::Protocol);
    let mut failed = query;
    failed.insert("s".into(), "error".into());
    assert_eq!(
        class_of(&h.assisted_finish("fyers", &acct, &urls, failed).await),
        ErrorClass::Protocol
    );
    assert_no_secret_logged();
}
