//! The Dhan strategy over loopback HTTP against `FakeDhan`, through the real plugin ABI.

use std::collections::BTreeMap;

use super::common::*;
use broker_api::wire::ErrorClass;
use fake_brokers::{DhanBehaviour, DhanUser, FakeDhan, ist};

/// 2026-03-30 08:30:05 IST, 5 s into a TOTP step.
fn morning() -> i64 {
    ist::at(2026, 3, 30, 8, 30, 5)
}

const DAY_MS: i64 = 86_400_000;

fn account(n: u32) -> (Account, DhanUser) {
    let id = format!("{}", 1_100_000_400 + n);
    let pin = format!("{}", 739_164 + n * 7_919);
    let account = Account {
        user_id: format!("user-{n}"),
        broker_user_id: id.clone(),
        api_key: format!("dhanapp{n:04}"),
        api_secret: format!("dhan-app-secret-{n:04}-x"),
        totp_secret: Some(totp_secret(n + 500)),
        extra: BTreeMap::from([("pin".to_string(), pin.clone())]),
        ..Account::default()
    };
    let fake = DhanUser::new(
        &id,
        &pin,
        account.totp_secret.as_deref().unwrap(),
        &account.api_key,
        &account.api_secret,
    );
    (account, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_yields_a_verified_token_that_lives_24_hours_from_issue() {
    let h = Harness::new(morning());
    let fake = FakeDhan::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let urls = fake.base_urls();

    let out = h.login("dhan", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    assert_eq!(out.issued_at_ms, morning());
    assert_eq!(out.expires_at_ms, morning() + DAY_MS);
    assert_eq!(
        out.extras["expiry_time"].as_str(),
        Some("2026-03-31T08:30:05.000")
    );
    assert!(out.extras.contains_key("dhan_client_name"));

    let r = fake.recorder();
    assert_eq!(r.requests("/app/generateAccessToken"), 1);
    assert_eq!(r.requests("/v2/profile"), 1);
    assert_eq!(
        r.passwords(&acct.broker_user_id),
        vec![acct.extra["pin"].clone()]
    );
    assert_one_password_distinct_steps(r, &acct.broker_user_id);

    let verified = h
        .verify("dhan", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(verified.valid, "{}", verified.message);
    h.clock.set(morning() + DAY_MS);
    let dead = h
        .verify("dhan", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(!dead.valid);
    assert!(dead.message.contains("DH-901"), "{}", dead.message);
    assert!(captured_log().contains("dhan: headless login"));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_sent_once_and_is_invalid_credentials() {
    let h = Harness::new(morning());
    let fake = FakeDhan::start_with(h.fake_options()).await;
    let (mut acct, user) = account(2);
    fake.add_user(user);
    acct.extra.insert("pin".into(), "582046".into());
    let result = h.login("dhan", &acct, &fake.base_urls()).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::InvalidCredentials, "{e:?}");
    assert!(e.credentials_sent);
    assert!(e.message.contains("Invalid Pin"), "{}", e.message);
    assert_eq!(
        fake.recorder().passwords(&acct.broker_user_id),
        vec!["582046".to_string()]
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_code_is_not_retried_as_the_pin_goes_with_it() {
    let h = Harness::new(morning());
    let fake = FakeDhan::start_with(h.fake_options()).await;
    let r = fake.recorder();
    // The fake would take the next step's code: the strategy still stops at the first refusal.
    for (n, behaviour) in [
        (3, DhanBehaviour::RejectFirstTotp),
        (4, DhanBehaviour::TotpRejected),
    ] {
        let (acct, user) = account(n);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("dhan", &acct, &fake.base_urls()).await;
        let e = failure(&result);
        assert_eq!(e.class, ErrorClass::TwofaRejected);
        assert!(e.message.contains("not retried"), "{}", e.message);
        assert_eq!(r.totp_uses(&acct.broker_user_id).len(), 1);
        assert_eq!(r.passwords(&acct.broker_user_id).len(), 1);
    }
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_mint_within_two_minutes_is_throttled_by_the_fake_and_classed_rate_limited() {
    let h = Harness::new(morning());
    let fake = FakeDhan::start_with(h.fake_options()).await;
    let (acct, user) = account(5);
    fake.add_user(user);
    let urls = fake.base_urls();
    let first = h.login("dhan", &acct, &urls).await.unwrap();

    h.clock.set(morning() + 60_000);
    let result = h.login("dhan", &acct, &urls).await;
    let e = failure(&result);
    assert_eq!(e.class, ErrorClass::RateLimited, "{e:?}");
    assert_eq!(e.retry_after_ms, Some(120_000));
    assert!(e.credentials_sent);
    assert!(e.message.contains("once every 2 minutes"), "{}", e.message);
    // Not retried inside the window: one request, and the first token still works.
    assert_eq!(fake.recorder().requests("/app/generateAccessToken"), 2);
    assert!(fake.token_is_valid(first.access_token.expose()));

    // The refused try re-armed the window: 2 minutes after it, a mint works and kills the first.
    h.clock.set(morning() + 60_000 + 120_000 + 5_000);
    let second = h.login("dhan", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(second.access_token.expose()));
    assert!(!fake.token_is_valid(first.access_token.expose()));
    assert_one_password_distinct_steps_per_login(&fake, &acct.broker_user_id);
    assert_no_secret_logged();
}

/// Each login sent its PIN once (three logins, three PINs) and no step was used twice.
fn assert_one_password_distinct_steps_per_login(fake: &FakeDhan, user: &str) {
    assert_eq!(fake.recorder().passwords(user).len(), 3);
    let mut steps: Vec<_> = fake
        .recorder()
        .totp_uses(user)
        .iter()
        .filter_map(|u| u.step)
        .collect();
    let n = steps.len();
    steps.sort_unstable();
    steps.dedup();
    assert_eq!(steps.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_ends_in_its_class_with_the_pin_sent_at_most_once() {
    let h = Harness::new(morning());
    let fake = FakeDhan::start_with(h.fake_options()).await;
    let cases = [
        (DhanBehaviour::Blocked, ErrorClass::AccountLocked, None),
        (
            DhanBehaviour::TotpNotEnabled,
            ErrorClass::TwofaUnavailable,
            None,
        ),
        (DhanBehaviour::Waf, ErrorClass::RateLimited, Some(300_000)),
        (
            DhanBehaviour::Unavailable,
            ErrorClass::BrokerUnavailable,
            None,
        ),
        (DhanBehaviour::TokenNotSticking, ErrorClass::Protocol, None),
    ];
    for (n, (behaviour, class, retry)) in cases.into_iter().enumerate() {
        let (acct, user) = account(100 + n as u32);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("dhan", &acct, &fake.base_urls()).await;
        let e = failure(&result);
        assert_eq!(e.class, class, "{behaviour:?}: {e:?}");
        if retry.is_some() {
            assert_eq!(e.retry_after_ms, retry, "{behaviour:?}");
        }
        assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    }
    // No PIN: refused before anything is sent.
    let (mut acct, user) = account(120);
    fake.add_user(user);
    acct.extra.clear();
    let result = h.login("dhan", &acct, &fake.base_urls()).await;
    assert!(!failure(&result).credentials_sent);
    assert_eq!(fake.recorder().requests("/app/generateAccessToken"), 5);
    assert_no_secret_logged();
}

/// `dhanClientId` sent as a JSON number (it is all digits) by D1 and the profile: the same id as
/// the docs' quoted string, so the login succeeds and the id is still checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_sent_as_a_json_number_is_the_same_id() {
    let h = Harness::new(morning());
    let fake = FakeDhan::start_with(h.fake_options()).await;
    let (acct, user) = account(140);
    fake.add_user(user.with_behaviour(DhanBehaviour::NumericClientId));
    let urls = fake.base_urls();
    let out = h.login("dhan", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);
    let verified = h
        .verify("dhan", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(verified.valid, "{}", verified.message);
    // Another account's token is still told apart.
    let (other, _) = account(141);
    let wrong = h
        .verify("dhan", &other, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(!wrong.valid);
    assert_no_secret_logged();
}

/// A mint revokes the account's earlier token at once: when the profile then stays down, the new
/// token is kept (unverified, and the log says so) rather than the vault keeping a dead one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_is_kept_unverified_when_the_profile_stays_down() {
    let h = Harness::new(morning());
    let fake = FakeDhan::start_with(h.fake_options()).await;
    let (acct, user) = account(130);
    fake.add_user(user.with_behaviour(DhanBehaviour::ProfileUnavailable));
    let out = h.login("dhan", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.expires_at_ms, morning() + DAY_MS);
    assert!(
        fake.recorder().requests("/v2/profile") > 1,
        "D2 was retried at its step"
    );
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);
    assert!(captured_log().contains("keeping the freshly minted token unverified"));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_on_the_same_clock_cannot_reuse_the_first_logins_totp_step() {
    let h = Harness::new(morning());
    let fake = FakeDhan::start_with(h.fake_options()).await;
    let (acct, user) = account(6);
    fake.add_user(user.with_behaviour(DhanBehaviour::TokenNotSticking));
    assert_eq!(
        class_of(&h.login("dhan", &acct, &fake.base_urls()).await),
        ErrorClass::Protocol
    );
    assert!(h.clock.sleeps().is_empty());
    // Same clock, the throttle passed by hand: the host waits for the next step rather than
    // handing out the used one.
    let (acct2, user2) = account(6);
    fake.add_user(user2);
    let out = h.login("dhan", &acct2, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(h.clock.sleeps().len(), 1);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_login_url_then_token_id_then_verified_token() {
    let h = Harness::new(morning());
    let fake = FakeDhan::start_with(h.fake_options()).await;
    let urls = fake.base_urls();
    let callback = "https://tokenbot.example.com/callback/dhan";
    for (n, behaviour) in [
        (7, DhanBehaviour::Happy),
        (8, DhanBehaviour::ConsumePostOnly),
    ] {
        let (acct, user) = account(n);
        fake.add_user(user.with_behaviour(behaviour));
        let url = h
            .assisted_url("dhan", &acct, &urls, "st4te", callback)
            .await
            .unwrap()
            .url;
        assert!(
            url.starts_with(&format!(
                "{}/login/consentApp-login?consentAppId=",
                fake.auth_url()
            )),
            "{url}"
        );
        let redirect = fake.browser_login(&url, &acct.broker_user_id).unwrap();
        let query = query_of(&redirect);
        let out = h
            .assisted_finish("dhan", &acct, &urls, query.clone())
            .await
            .unwrap_or_else(|e| panic!("{behaviour:?}: {e}"));
        assert!(fake.token_is_valid(out.access_token.expose()));
        assert_eq!(out.expires_at_ms, morning() + DAY_MS);
        assert!(fake.recorder().passwords(&acct.broker_user_id).is_empty());
        // The tokenId is single use.
        assert!(
            h.assisted_finish("dhan", &acct, &urls, query)
                .await
                .is_err()
        );
    }
    assert_eq!(
        fake.recorder()
            .requests_with_status("/app/consumeApp-consent", 405),
        1
    );

    // A wrong app secret at C1: invalid_credentials.
    let (mut acct, user) = account(9);
    fake.add_user(user);
    acct.api_secret = "wrong-app-secret".into();
    let result = h.assisted_url("dhan", &acct, &urls, "s", callback).await;
    assert_eq!(class_of(&result), ErrorClass::InvalidCredentials);
    assert_no_secret_logged();
}
