//! The Kite strategy over loopback HTTP against `FakeKite`, through the real plugin ABI.

use crate::support;

use super::common::*;
use broker_api::wire::ErrorClass;
use fake_brokers::{FakeKite, KiteBehaviour, KiteUser, ist};
use tokenbot::assisted::{StateError, StateStore};
use tokenbot::clock::Clock;
use tokenbot::plugins::Source;

/// 2025-03-10 08:00:05 IST: 5 s into a TOTP step, so no wait for a fresh one.
fn morning() -> i64 {
    ist::at(2025, 3, 10, 8, 0, 5)
}

fn account(n: u32) -> (Account, KiteUser) {
    let user = format!("AB{n:04}");
    let account = Account {
        user_id: format!("user-{n}"),
        broker_user_id: user.clone(),
        password: Some(format!("pass-word-{n}!")),
        api_key: format!("kiteapikey{n:04}"),
        api_secret: format!("kite-api-secret-{n:04}"),
        totp_secret: Some(totp_secret(n)),
        ..Account::default()
    };
    let fake = KiteUser::new(
        &user,
        account.password.as_deref().unwrap(),
        &account.api_key,
        &account.api_secret,
        account.totp_secret.as_deref().unwrap(),
    );
    (account, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_end_to_end_yields_a_token_the_fake_accepts() {
    let h = Harness::new(morning());
    let fake = FakeKite::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let urls = fake.base_urls();

    let out = h.login("kite", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(&acct.api_key, out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    assert_eq!(out.issued_at_ms, ist::at(2025, 3, 10, 8, 0, 5));
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 6, 0, 0));
    assert!(out.extras.contains_key("public_token"));

    let r = fake.recorder();
    for route in [
        "/connect/login",
        "/api/login",
        "/api/twofa",
        "/connect/finish",
        "/session/token",
        "/user/profile",
    ] {
        assert_eq!(r.requests(route), 1, "{route}: {:?}", r.requests_by_route());
    }
    assert_eq!(
        r.passwords(&acct.broker_user_id),
        vec![acct.password.clone().unwrap()]
    );
    assert_eq!(r.totp_uses(&acct.broker_user_id).len(), 1);
    assert_one_password_distinct_steps(r, &acct.broker_user_id);

    let verified = h
        .verify("kite", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(verified.valid, "{}", verified.message);
    assert!(
        captured_log().contains("kite: headless login"),
        "the log capture works"
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_between_midnight_and_six_expires_that_same_morning() {
    let h = Harness::new(ist::at(2025, 3, 10, 2, 30, 10));
    let fake = FakeKite::start_with(h.fake_options()).await;
    let (acct, user) = account(2);
    fake.add_user(user);
    let out = h.login("kite", &acct, &fake.base_urls()).await.unwrap();
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 10, 6, 0, 0));

    // At 06:00 the fake stops accepting it, and verify says so.
    h.clock.set(ist::at(2025, 3, 10, 6, 0, 0));
    assert!(!fake.token_is_valid(&acct.api_key, out.access_token.expose()));
    let verified = h
        .verify("kite", &acct, &fake.base_urls(), out.access_token.expose())
        .await
        .unwrap();
    assert!(!verified.valid);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_exactly_at_six_expires_the_next_morning() {
    let h = Harness::new(ist::at(2025, 3, 10, 6, 0, 0));
    let fake = FakeKite::start_with(h.fake_options()).await;
    let (acct, user) = account(3);
    fake.add_user(user);
    let out = h.login("kite", &acct, &fake.base_urls()).await.unwrap();
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 6, 0, 0));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_class_comes_from_its_behaviour() {
    let h = Harness::new(morning());
    let fake = FakeKite::start_with(h.fake_options()).await;
    let cases = [
        (KiteBehaviour::Blocked, ErrorClass::AccountLocked),
        (KiteBehaviour::TotpRejected, ErrorClass::TwofaRejected),
        (
            KiteBehaviour::SessionExpiredAfterTwofa,
            ErrorClass::AutomationBlocked,
        ),
        (KiteBehaviour::AuthorizeHop, ErrorClass::AppNotAuthorized),
        (KiteBehaviour::AppCodeOnly, ErrorClass::TwofaUnavailable),
        (KiteBehaviour::RateLimited, ErrorClass::RateLimited),
        (KiteBehaviour::Cloudflare, ErrorClass::BrokerUnavailable),
        (KiteBehaviour::ServerError, ErrorClass::BrokerUnavailable),
        (KiteBehaviour::UnexpectedShape, ErrorClass::Protocol),
    ];
    for (n, (behaviour, class)) in cases.into_iter().enumerate() {
        let (acct, user) = account(100 + n as u32);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("kite", &acct, &fake.base_urls()).await;
        assert_eq!(class_of(&result), class, "{behaviour:?}: {result:?}");
        if class == ErrorClass::RateLimited {
            let Err(tokenbot::plugins::PluginError::Failed(e)) = &result else {
                unreachable!()
            };
            assert!(e.retry_after_ms.is_some());
        }
        assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    }

    // A refused TOTP is retried once, on a fresh step, without sending the password again.
    let uses = fake.recorder().totp_uses("AB0101");
    assert_eq!(uses.len(), 2, "{uses:?}");
    assert!(uses[0].step.is_some() && uses[1].step.is_some() && uses[0].step != uses[1].step);

    // Natural failures: a wrong password, a wrong TOTP secret.
    let (mut acct, user) = account(150);
    fake.add_user(user);
    acct.password = Some("not-the-password".into());
    let result = h.login("kite", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&result), ErrorClass::InvalidCredentials);
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);

    let (mut acct, user) = account(151);
    fake.add_user(user);
    acct.totp_secret = Some(totp_secret(9999));
    let result = h.login("kite", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&result), ErrorClass::TwofaRejected);
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);

    // An unknown api_key, a wrong api_secret (bad checksum).
    let (mut acct, user) = account(152);
    fake.add_user(user);
    acct.api_key = "unknownkey".into();
    assert_eq!(
        class_of(&h.login("kite", &acct, &fake.base_urls()).await),
        ErrorClass::InvalidCredentials
    );
    let (mut acct, user) = account(153);
    fake.add_user(user);
    acct.api_secret = "wrong-api-secret".into();
    assert_eq!(
        class_of(&h.login("kite", &acct, &fake.base_urls()).await),
        ErrorClass::InvalidCredentials
    );

    // No /connect/finish hop was ever fetched outside the web host, and no redirect URL fetched:
    // the app redirect URLs (127.0.0.1:9) would have failed with `network`.
    assert_no_secret_logged();
}

/// The S1 redirect a real server sends: `302`, a `Location`, and a small HTML body as
/// `text/html` (Go's `http.Redirect`, nginx). Before the fidelity fix every login ended here as
/// `broker_unavailable` ("an HTML page instead of JSON").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s1_redirect_with_an_html_body_reaches_the_password_step() {
    let h = Harness::new(morning());
    let fake = FakeKite::start_with(h.fake_options()).await;
    let (acct, user) = account(20);
    fake.add_user(user);
    // What the fake sends is what the independent check's server sent.
    let s1 = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!(
            "{}/connect/login?v=3&api_key={}",
            fake.web_url(),
            acct.api_key
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(s1.status(), 302);
    assert!(
        s1.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(s1.headers().get("location").is_some());
    assert!(s1.text().await.unwrap().contains("Found</a>"));

    let out = h.login("kite", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(&acct.api_key, out.access_token.expose()));
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);
    assert_no_secret_logged();
}

/// Each risk of kite.md against the realistic fake: its documented class (or a token), and never
/// a second password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kite_md_curveball_ends_in_its_class_with_the_password_sent_once() {
    let h = Harness::new(morning());
    let fake = FakeKite::start_with(h.fake_options()).await;
    let cases: [(KiteBehaviour, Option<ErrorClass>); 9] = [
        // The 2026 anti-bot refusal after a correct code.
        (
            KiteBehaviour::SessionExpiredAfterTwofa,
            Some(ErrorClass::AutomationBlocked),
        ),
        (
            KiteBehaviour::AppCodeOnly,
            Some(ErrorClass::TwofaUnavailable),
        ),
        (
            KiteBehaviour::AuthorizeHop,
            Some(ErrorClass::AppNotAuthorized),
        ),
        (KiteBehaviour::Blocked, Some(ErrorClass::AccountLocked)),
        // Relative hops, and the old redirect format with request_token first.
        (KiteBehaviour::ExtraHop, None),
        // A 429 at S5 for 5 s, no Retry-After: retried at S5, not by a new login.
        (KiteBehaviour::SessionTokenRateLimited, None),
        // A 429 at S5 that outlasts the login's deadline.
        (
            KiteBehaviour::SessionTokenAlwaysRateLimited,
            Some(ErrorClass::RateLimited),
        ),
        // An nginx 503 page at S6, twice.
        (KiteBehaviour::ProfileUnavailable, None),
        // A WAF's HTML 403 where /api/login's JSON was expected.
        (
            KiteBehaviour::LoginWaf403,
            Some(ErrorClass::BrokerUnavailable),
        ),
    ];
    for (n, (behaviour, expected)) in cases.into_iter().enumerate() {
        let (acct, user) = account(200 + n as u32);
        fake.add_user(user.with_behaviour(behaviour));
        let result = h.login("kite", &acct, &fake.base_urls()).await;
        let r = fake.recorder();
        match expected {
            Some(class) => {
                assert_eq!(class_of(&result), class, "{behaviour:?}: {result:?}");
                let Err(tokenbot::plugins::PluginError::Failed(e)) = &result else {
                    unreachable!()
                };
                assert!(
                    e.credentials_sent,
                    "{behaviour:?}: a new login may not follow"
                );
            }
            None => {
                let out = result.unwrap_or_else(|e| panic!("{behaviour:?}: {e:?}"));
                assert!(fake.token_is_valid(&acct.api_key, out.access_token.expose()));
            }
        }
        assert_eq!(
            r.passwords(&acct.broker_user_id).len(),
            1,
            "{behaviour:?}: the password is posted exactly once"
        );
        assert_one_password_distinct_steps(r, &acct.broker_user_id);
        let totp = r.totp_uses(&acct.broker_user_id).len();
        match behaviour {
            KiteBehaviour::AppCodeOnly => assert_eq!(totp, 0, "no code for an app_code account"),
            KiteBehaviour::SessionExpiredAfterTwofa => assert!(totp <= 2, "{totp}"),
            _ => {}
        }
    }
    let r = fake.recorder();
    assert!(
        r.requests_with_status("/session/token", 429) >= 2,
        "{:?}",
        r.requests_by_route_and_status()
    );
    assert!(r.requests_with_status("/user/profile", 503) >= 2);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_code_is_retried_once_on_a_fresh_step() {
    let h = Harness::new(morning());
    let fake = FakeKite::start_with(h.fake_options()).await;
    let (acct, user) = account(4);
    fake.add_user(user.with_behaviour(KiteBehaviour::RejectFirstTotp));
    let out = h.login("kite", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(&acct.api_key, out.access_token.expose()));
    let uses = fake.recorder().totp_uses(&acct.broker_user_id);
    assert_eq!(
        uses.iter().map(|u| u.accepted).collect::<Vec<_>>(),
        vec![false, true]
    );
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    // The host waited for the next step rather than resending the same one.
    assert_eq!(h.clock.sleeps().len(), 1);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_clock_40_s_ahead_is_read_from_its_date_and_the_code_follows_its_step() {
    // This host stands 21 s into a TOTP step; the broker's clock (its Date, and the time it
    // checks codes by) 40 s later: 1 s into the step after next. A code of this host's own step
    // would be two steps behind the broker's, outside the one step either side it accepts.
    let host_now = morning() / 30_000 * 30_000 + 21_000;
    let h = Harness::new(host_now);
    let clock = h.clock.clone();
    let fake = FakeKite::start_with(fake_brokers::FakeOptions {
        now: std::sync::Arc::new(move || clock.now_ms() + 40_000),
        ..h.fake_options()
    })
    .await;
    let (acct, user) = account(6);
    fake.add_user(user);
    let out = h.login("kite", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(&acct.api_key, out.access_token.expose()));
    let uses = fake.recorder().totp_uses(&acct.broker_user_id);
    assert_eq!(uses.len(), 1, "one code, accepted at once: {uses:?}");
    assert!(uses[0].accepted);
    let broker_step = ((host_now + 40_000) / 30_000) as u64;
    assert_eq!(uses[0].step, Some(broker_step));
    assert_eq!(broker_step, (host_now / 30_000) as u64 + 2);
    // The estimate, from the Dates of the login's first two answers, is what health shows.
    let skew = h.services.skew.report(h.clock.now_ms())["kite"];
    assert!((40_000..=41_000).contains(&skew), "{skew}");
    assert!(
        captured_log().contains("the broker's clock (its Date header) is more than 5 s"),
        "warned"
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_by_hand_through_relative_and_old_style_hops() {
    let h = Harness::new(morning());
    let fake = FakeKite::start_with(h.fake_options()).await;
    let (acct, user) = account(5);
    fake.add_user(user.with_behaviour(KiteBehaviour::ExtraHop));
    let out = h.login("kite", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(&acct.api_key, out.access_token.expose()));
    assert_eq!(
        fake.recorder().requests("/connect/login"),
        2,
        "S1 plus the extra hop"
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_a_token_the_broker_does_not_know() {
    let h = Harness::new(morning());
    let fake = FakeKite::start_with(h.fake_options()).await;
    let (acct, user) = account(6);
    fake.add_user(user);
    let verified = h
        .verify("kite", &acct, &fake.base_urls(), "not-a-real-token")
        .await
        .unwrap();
    assert!(!verified.valid);
    assert!(
        verified.message.contains("Incorrect"),
        "{}",
        verified.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assisted_login_url_then_redirect_query_then_token() {
    let h = Harness::new(morning());
    let fake = FakeKite::start_with(h.fake_options()).await;
    let (acct, user) = account(7);
    let callback = "https://tokenbot.example.com/callback/kite";
    fake.add_user(user.with_redirect_url(callback));
    let urls = fake.base_urls();
    let states: StateStore<(String, String)> =
        StateStore::new(std::time::Duration::from_secs(600), 100);
    let state = states
        .issue(
            (acct.user_id.clone(), "kite".into()),
            &acct.user_id,
            h.clock.now_ms(),
        )
        .unwrap();

    let url = h
        .assisted_url("kite", &acct, &urls, &state, callback)
        .await
        .unwrap()
        .url;
    let q = query_of(&url);
    assert!(
        url.starts_with(&format!("{}/connect/login?", fake.web_url())),
        "{url}"
    );
    assert_eq!(q.get("v").map(String::as_str), Some("3"));
    assert_eq!(q.get("api_key"), Some(&acct.api_key));
    assert_eq!(q.get("redirect_params"), Some(&format!("state={state}")));

    // The person logs in; Kite redirects the browser to the callback with the echoed state.
    let redirect = fake.browser_login(&url, &acct.broker_user_id).unwrap();
    assert!(redirect.starts_with(callback), "{redirect}");
    let query = query_of(&redirect);
    assert_eq!(query.get("state"), Some(&state));
    // Host side: the state binds the callback to the account, once.
    assert_eq!(
        states.consume(&query["state"], h.clock.now_ms()),
        Ok((acct.user_id.clone(), "kite".into()))
    );
    assert_eq!(
        states.consume(&query["state"], h.clock.now_ms()),
        Err(StateError::Unknown)
    );

    let out = h
        .assisted_finish("kite", &acct, &urls, query.clone())
        .await
        .unwrap();
    assert!(fake.token_is_valid(&acct.api_key, out.access_token.expose()));
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 6, 0, 0));
    assert!(
        fake.recorder().passwords(&acct.broker_user_id).is_empty(),
        "assisted login never sends the password"
    );

    // Replaying the redirect: the request_token is single use.
    let replay = h.assisted_finish("kite", &acct, &urls, query).await;
    assert_eq!(class_of(&replay), ErrorClass::Protocol);
    // A forged redirect without request_token, or a cancelled one.
    let forged = h
        .assisted_finish(
            "kite",
            &acct,
            &urls,
            [("state".to_string(), state.clone())].into(),
        )
        .await;
    assert_eq!(class_of(&forged), ErrorClass::Protocol);
    let cancelled = [
        ("status".to_string(), "cancelled".to_string()),
        ("request_token".into(), "x".into()),
    ]
    .into();
    assert_eq!(
        class_of(&h.assisted_finish("kite", &acct, &urls, cancelled).await),
        ErrorClass::Protocol
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assisted_login_as_another_user_is_refused() {
    let h = Harness::new(morning());
    let fake = FakeKite::start_with(h.fake_options()).await;
    let (acct, user) = account(8);
    fake.add_user(user);
    let (_, mut other) = account(9);
    other.api_key = acct.api_key.clone();
    other.api_secret = acct.api_secret.clone();
    fake.add_user(other);
    let urls = fake.base_urls();
    let url = h
        .assisted_url("kite", &acct, &urls, "s", "http://cb")
        .await
        .unwrap()
        .url;
    let redirect = fake.browser_login(&url, "AB0009").unwrap();
    let result = h
        .assisted_finish("kite", &acct, &urls, query_of(&redirect))
        .await;
    assert_eq!(class_of(&result), ErrorClass::InvalidCredentials);
}

#[test]
fn rfc6238_vectors_on_both_sides() {
    let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let host_secret = tokenbot::plugins::totp::parse_secret(secret).unwrap();
    let fake_secret = fake_brokers::totp::secret_bytes(secret);
    for (t, code) in [
        (59u64, "287082"),
        (1111111109, "081804"),
        (1234567890, "005924"),
        (2000000000, "279037"),
    ] {
        assert_eq!(
            tokenbot::plugins::totp::code_at_step(&host_secret, t / 30).as_str(),
            code,
            "host, t={t}"
        );
        assert_eq!(
            fake_brokers::totp::code_at_step(&fake_secret, t / 30),
            code,
            "fake, t={t}"
        );
    }
}

#[test]
fn kite_checksum_is_lowercase_sha256_of_key_token_secret() {
    assert_eq!(
        broker_kite::checksum("a", "b", "c"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_so_build_loads_from_plugins_and_logs_in() {
    let so = support::broker_so("broker-kite");
    let dir = tempfile::tempdir().unwrap();
    let installed = support::install(&so, dir.path(), "kite.so");
    let h = Harness::with_plugins_dir(morning(), dir);
    let plugin = h.plugin("kite");
    assert_eq!(plugin.source, Source::Path(installed));
    assert!(plugin.has_verify() && plugin.has_assisted());
    let fake = FakeKite::start_with(h.fake_options()).await;
    let (acct, user) = account(10);
    fake.add_user(user);
    let out = h.login("kite", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(&acct.api_key, out.access_token.expose()));
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 6, 0, 0));
    assert_no_secret_logged();
}
