//! The IIFL Capital strategy over loopback HTTP against `FakeIifl`, through the real plugin ABI.

use crate::support;

use std::collections::BTreeMap;

use super::common::*;
use broker_api::wire::ErrorClass;
use fake_brokers::{FakeIifl, IiflBehaviour, IiflTotpAuth, IiflUser, ist};
use tokenbot::assisted::{StateError, StateStore};
use tokenbot::clock::Clock;
use tokenbot::plugins::Source;

/// 2025-03-10 03:00:05 IST (the IIFL job's schedule), 5 s into a TOTP step.
fn three_am() -> i64 {
    ist::at(2025, 3, 10, 3, 0, 5)
}

fn account(n: u32) -> (Account, IiflUser) {
    let client = format!("TEST{n:03}");
    let account = Account {
        user_id: format!("28748{n:03}"),
        broker_user_id: client.clone(),
        password: Some(format!("Iifl#Pass{n}")),
        api_key: format!("iiflappkey{n:04}"),
        api_secret: format!("iifl-app-secret-{n:04}"),
        totp_secret: Some(totp_secret(n)),
        ..Account::default()
    };
    let fake = IiflUser::new(
        &client,
        account.password.as_deref().unwrap(),
        &account.api_key,
        &account.api_secret,
        account.totp_secret.as_deref().unwrap(),
    );
    (account, fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_end_to_end_yields_a_session_the_fake_accepts() {
    let h = Harness::new(three_am());
    let fake = FakeIifl::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let urls = fake.base_urls();

    let out = h.login("iifl", &acct, &urls).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    assert_eq!(out.issued_at_ms, three_am());
    // The next 00:00 IST, not the JWT's ~180-day exp.
    assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 0, 0, 0));

    let r = fake.recorder();
    for route in [
        "/omk/auth/access/client/verify",
        "/omk/auth/access/client/enckey",
        "/omk/auth/access/v1/pwd/validate",
        "/omk/auth/access/topt/verify",
        "/v1/getusersession",
        "/v1/profile",
    ] {
        assert_eq!(r.requests(route), 1, "{route}: {:?}", r.requests_by_route());
    }
    // The fake decrypted the OpenSSL-format userData back to the password.
    assert_eq!(
        r.passwords(&acct.broker_user_id),
        vec![acct.password.clone().unwrap()]
    );
    assert_one_password_distinct_steps(r, &acct.broker_user_id);

    let verified = h
        .verify("iifl", &acct, &urls, out.access_token.expose())
        .await
        .unwrap();
    assert!(verified.valid, "{}", verified.message);
    // After midnight IST the session is dead.
    h.clock.set(ist::at(2025, 3, 11, 0, 0, 0));
    assert!(
        !h.verify("iifl", &acct, &urls, out.access_token.expose())
            .await
            .unwrap()
            .valid
    );
    assert!(captured_log().contains("iifl: headless login"));
    assert_no_secret_logged();
}

/// iifl.md: the body with `vendor` goes with `Authorization: Bearer <userId> WEB <token>`, and a
/// wrong form is answered EC003, which looks retryable but is not. The strategy used to send
/// `Bearer <userId> <token>` and retried the whole login on EC003: three passwords per refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_totp_step_sends_the_web_authorization_form_and_the_other_is_a_setting() {
    let h = Harness::new(three_am());
    let fake = FakeIifl::start_with(h.fake_options()).await;
    let (acct, user) = account(30);
    fake.add_user(user);
    let out = h.login("iifl", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);

    // A portal that wants the plain form: EC003, not retried, the setting named.
    fake.set_totp_auth(IiflTotpAuth::Plain);
    let (acct, user) = account(31);
    fake.add_user(user);
    let result = h.login("iifl", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&result), ErrorClass::Protocol, "{result:?}");
    let Err(tokenbot::plugins::PluginError::Failed(e)) = &result else {
        unreachable!()
    };
    assert!(
        e.message.contains("EC003") && e.message.contains("totp_auth_header"),
        "{}",
        e.message
    );
    assert!(e.credentials_sent);
    assert_eq!(fake.recorder().passwords(&acct.broker_user_id).len(), 1);
    assert_eq!(
        fake.recorder().requests("/omk/auth/access/topt/verify"),
        2,
        "one TOTP try for each of the two logins"
    );

    h.set_setting("totp_auth_header", "plain");
    let (acct, user) = account(32);
    fake.add_user(user);
    let out = h.login("iifl", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);

    h.set_setting("totp_auth_header", "bearer");
    let (acct, user) = account(33);
    fake.add_user(user);
    let result = h.login("iifl", &acct, &fake.base_urls()).await;
    assert_eq!(class_of(&result), ErrorClass::Protocol);
    assert!(
        fake.recorder().passwords(&acct.broker_user_id).is_empty(),
        "a bad setting stops the login before the portal"
    );
    assert_no_secret_logged();
}

/// Once the portal accepted the password, a 5xx is retried at its step: the TOTP step on a fresh
/// code, `getusersession` with the same authCode. The password is posted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_password_a_5xx_is_retried_at_its_step_not_by_a_new_login() {
    let h = Harness::new(three_am());
    let fake = FakeIifl::start_with(h.fake_options()).await;
    for (n, behaviour, route) in [
        (
            40,
            IiflBehaviour::PortalTotpUnavailable,
            "/omk/auth/access/topt/verify",
        ),
        (
            41,
            IiflBehaviour::UserSessionUnavailable,
            "/v1/getusersession",
        ),
    ] {
        let (acct, user) = account(n);
        fake.add_user(user.with_behaviour(behaviour.clone()));
        let out = h
            .login("iifl", &acct, &fake.base_urls())
            .await
            .unwrap_or_else(|e| panic!("{behaviour:?}: {e:?}"));
        assert!(fake.token_is_valid(out.access_token.expose()));
        let r = fake.recorder();
        assert_eq!(r.passwords(&acct.broker_user_id).len(), 1, "{behaviour:?}");
        assert_one_password_distinct_steps(r, &acct.broker_user_id);
        assert!(
            r.requests(route) >= 2,
            "{behaviour:?}: {:?}",
            r.requests_by_route()
        );
    }
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_class_comes_from_its_behaviour() {
    let h = Harness::new(three_am());
    let fake = FakeIifl::start_with(h.fake_options()).await;
    let cases = [
        (IiflBehaviour::UnknownClient, ErrorClass::InvalidCredentials),
        (IiflBehaviour::Frozen, ErrorClass::AccountLocked),
        (
            IiflBehaviour::PasswordExpired,
            ErrorClass::InvalidCredentials,
        ),
        (IiflBehaviour::TotpNotEnabled, ErrorClass::TwofaUnavailable),
        (IiflBehaviour::TotpRejected, ErrorClass::TwofaRejected),
        (
            IiflBehaviour::AppNotAuthorized,
            ErrorClass::AppNotAuthorized,
        ),
        (IiflBehaviour::IpNotAuthorized, ErrorClass::AppNotAuthorized),
        (IiflBehaviour::Generic, ErrorClass::BrokerUnavailable),
        (IiflBehaviour::RateLimited, ErrorClass::RateLimited),
        (IiflBehaviour::Html503, ErrorClass::BrokerUnavailable),
        (IiflBehaviour::ServerError, ErrorClass::BrokerUnavailable),
        (IiflBehaviour::UnexpectedShape, ErrorClass::Protocol),
    ];
    for (n, (behaviour, class)) in cases.into_iter().enumerate() {
        let (acct, user) = account(100 + n as u32);
        fake.add_user(user.with_behaviour(behaviour.clone()));
        let result = h.login("iifl", &acct, &fake.base_urls()).await;
        assert_eq!(class_of(&result), class, "{behaviour:?}: {result:?}");
        assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    }
    // EC036 twice: two codes from two different steps, one password.
    let uses = fake.recorder().totp_uses("TEST104");
    assert_eq!(uses.len(), 2, "{uses:?}");
    assert_ne!(uses[0].step, uses[1].step);

    // Natural failures: wrong password (EC016), wrong TOTP secret (EC036), wrong appSecret
    // (getusersession checksum), wrong appKey (EC054).
    let (mut acct, user) = account(150);
    fake.add_user(user);
    acct.password = Some("wrong-password".into());
    assert_eq!(
        class_of(&h.login("iifl", &acct, &fake.base_urls()).await),
        ErrorClass::InvalidCredentials
    );
    assert_eq!(
        fake.recorder().passwords("TEST150"),
        vec!["wrong-password".to_string()]
    );

    let (mut acct, user) = account(151);
    fake.add_user(user);
    acct.totp_secret = Some(totp_secret(9999));
    assert_eq!(
        class_of(&h.login("iifl", &acct, &fake.base_urls()).await),
        ErrorClass::TwofaRejected
    );
    assert_one_password_distinct_steps(fake.recorder(), "TEST151");

    let (mut acct, user) = account(152);
    fake.add_user(user);
    acct.api_secret = "wrong-app-secret".into();
    assert_eq!(
        class_of(&h.login("iifl", &acct, &fake.base_urls()).await),
        ErrorClass::InvalidCredentials
    );

    let (mut acct, user) = account(153);
    fake.add_user(user);
    acct.api_key = "wrongappkey".into();
    assert_eq!(
        class_of(&h.login("iifl", &acct, &fake.base_urls()).await),
        ErrorClass::InvalidCredentials
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_code_is_retried_once_on_a_fresh_step() {
    let h = Harness::new(three_am());
    let fake = FakeIifl::start_with(h.fake_options()).await;
    let (acct, user) = account(2);
    fake.add_user(user.with_behaviour(IiflBehaviour::RejectFirstTotp));
    let out = h.login("iifl", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    let uses = fake.recorder().totp_uses(&acct.broker_user_id);
    assert_eq!(
        uses.iter().map(|u| u.accepted).collect::<Vec<_>>(),
        vec![false, true]
    );
    assert_one_password_distinct_steps(fake.recorder(), &acct.broker_user_id);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_step_urls_are_configurable() {
    let h = Harness::new(three_am());
    let fake = FakeIifl::start_with(h.fake_options()).await;
    let (acct, user) = account(3);
    fake.add_user(user);
    // Every step named in full: the login still works...
    let mut urls = fake.base_urls();
    let portal = fake.portal_url();
    for (key, path) in [
        ("portal_client_verify_url", "/omk/auth/access/client/verify"),
        ("portal_enckey_url", "/omk/auth/access/client/enckey"),
        ("portal_password_url", "/omk/auth/access/v1/pwd/validate"),
        ("portal_totp_url", "/omk/auth/access/topt/verify"),
    ] {
        urls.insert(key.into(), format!("{portal}{path}"));
    }
    h.login("iifl", &acct, &urls).await.unwrap();
    // ...and a moved step is really used (here: a path the portal does not serve).
    urls.insert(
        "portal_enckey_url".into(),
        format!("{portal}/omk/auth/access/v2/client/enckey"),
    );
    let result = h.login("iifl", &acct, &urls).await;
    assert_eq!(class_of(&result), ErrorClass::Protocol);
    assert_eq!(
        fake.recorder().requests("/omk/auth/access/client/enckey"),
        1
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assisted_login_url_then_redirect_query_then_session() {
    let h = Harness::new(three_am());
    let fake = FakeIifl::start_with(h.fake_options()).await;
    let (acct, user) = account(4);
    fake.add_user(user);
    let urls = fake.base_urls();
    let callback = "https://tokenbot.example.com/callback/iifl";
    let states: StateStore<(String, String)> =
        StateStore::new(std::time::Duration::from_secs(600), 100);

    for (n, (names, naive)) in [
        (("authCode", "clientId"), false),
        (("authcode", "clientid"), false),
        (("auth_code", "client_id"), false),
        (("authCode", "clientId"), true),
    ]
    .into_iter()
    .enumerate()
    {
        let state = states
            .issue(
                (acct.user_id.clone(), "iifl".into()),
                &acct.user_id,
                h.clock.now_ms(),
            )
            .unwrap();
        let url = h
            .assisted_url("iifl", &acct, &urls, &state, callback)
            .await
            .unwrap()
            .url;
        let q = query_of(&url);
        assert!(
            url.starts_with(&format!("{}/?", fake.portal_url())),
            "{url}"
        );
        assert_eq!(q.get("v").map(String::as_str), Some("1"));
        assert_eq!(q.get("appkey"), Some(&acct.api_key));
        assert_eq!(
            q.get("redirecturl"),
            Some(&format!("{callback}?state={state}"))
        );

        let redirect = fake
            .browser_login(&url, &acct.broker_user_id, names, naive)
            .unwrap();
        let query: BTreeMap<String, String> = query_of(&redirect);
        if !naive {
            assert_eq!(
                states.consume(&query["state"], h.clock.now_ms()),
                Ok((acct.user_id.clone(), "iifl".into()))
            );
            assert_eq!(
                states.consume(&query["state"], h.clock.now_ms()),
                Err(StateError::Unknown)
            );
        }
        let out = h
            .assisted_finish("iifl", &acct, &urls, query.clone())
            .await
            .unwrap_or_else(|e| panic!("case {n}: {e}"));
        assert!(fake.token_is_valid(out.access_token.expose()));
        assert_eq!(out.expires_at_ms, ist::at(2025, 3, 11, 0, 0, 0));
        // The authCode is single use.
        assert!(
            h.assisted_finish("iifl", &acct, &urls, query)
                .await
                .is_err()
        );
    }
    assert!(fake.recorder().passwords(&acct.broker_user_id).is_empty());

    // A redirect for another client is refused before any exchange.
    let (other, other_user) = account(5);
    fake.add_user(IiflUser {
        app_key: acct.api_key.clone(),
        app_secret: acct.api_secret.clone(),
        ..other_user
    });
    let url = h
        .assisted_url("iifl", &acct, &urls, "s", callback)
        .await
        .unwrap()
        .url;
    let redirect = fake
        .browser_login(&url, &other.broker_user_id, ("authCode", "clientId"), false)
        .unwrap();
    let result = h
        .assisted_finish("iifl", &acct, &urls, query_of(&redirect))
        .await;
    assert_eq!(class_of(&result), ErrorClass::InvalidCredentials);
    assert_no_secret_logged();
}

#[test]
fn checksum_vector_from_the_spec() {
    assert_eq!(
        broker_iifl::checksum("TEST101", "AbCdEf123456", "s3cr3t-app-secret"),
        "871129cb2e41fb26aedead56ac3feb159875d6afcc5220042b20e4cdf43427db"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_so_build_loads_from_plugins_and_logs_in() {
    let so = support::broker_so("broker-iifl");
    let dir = tempfile::tempdir().unwrap();
    let installed = support::install(&so, dir.path(), "iifl.so");
    let h = Harness::with_plugins_dir(three_am(), dir);
    let plugin = h.plugin("iifl");
    assert_eq!(plugin.source, Source::Path(installed));
    assert!(plugin.has_verify() && plugin.has_assisted());
    let fake = FakeIifl::start_with(h.fake_options()).await;
    let (acct, user) = account(6);
    fake.add_user(user);
    let out = h.login("iifl", &acct, &fake.base_urls()).await.unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_no_secret_logged();
}
