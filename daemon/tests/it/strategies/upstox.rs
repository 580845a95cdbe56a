//! The Upstox strategy over loopback HTTP against `FakeUpstox`, through the real plugin ABI:
//! redirect mode end to end, approval mode's request (Q1) and its failures. The webhook side of
//! approval mode, which needs the daemon, is in `upstox_approval.rs`.

use super::common::*;
use broker_api::wire::ErrorClass;
use fake_brokers::{FakeUpstox, UpstoxBehaviour, UpstoxUser, ist};
use tokenbot::clock::Clock;

const CALLBACK: &str = "https://tokenbot.example.com/callback/upstox";

/// 2026-03-10 08:00:05 IST (the default schedule).
fn eight_am() -> i64 {
    ist::at(2026, 3, 10, 8, 0, 5)
}

fn account(n: u32) -> (Account, UpstoxUser) {
    let user_id = format!("UP{n:04}");
    let account = Account {
        user_id: format!("upstox-user-{n}"),
        broker_user_id: user_id.clone(),
        password: None,
        api_key: format!("615b1297-{n:04}-4a9e-8c1d-5e2f00a1b2c3"),
        api_secret: format!("Up$ecret-{n:04}-zz"),
        totp_secret: None,
        extra: [("redirect_uri".to_string(), CALLBACK.to_string())].into(),
    };
    let fake = UpstoxUser::new(&user_id, &account.api_key, &account.api_secret)
        .with_redirect_uri(CALLBACK);
    (account, fake)
}

/// The person logs in on the page A1 shows: the fake's 302, read without following it.
pub(crate) async fn person_logs_in(url: &str, user_id: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(format!("{url}&_person={user_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("<a href="),
        "a redirect with an HTML body: {body}"
    );
    location
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_mode_login_url_then_code_then_verified_token() {
    let h = Harness::new(eight_am());
    h.set_setting("mode", "redirect");
    let fake = FakeUpstox::start_with(h.fake_options()).await;
    let (acct, user) = account(1);
    fake.add_user(user);
    let urls = fake.base_urls();
    let url = h
        .assisted_url("upstox", &acct, &urls, "st4te-1", CALLBACK)
        .await
        .unwrap()
        .url;
    assert!(
        url.starts_with(&format!(
            "{}/v2/login/authorization/dialog?",
            fake.api_url()
        )),
        "{url}"
    );
    let q = query_of(&url);
    assert_eq!(q.get("client_id"), Some(&acct.api_key));
    assert_eq!(q.get("redirect_uri").map(String::as_str), Some(CALLBACK));
    assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
    assert_eq!(q.get("state").map(String::as_str), Some("st4te-1"));

    let query = query_of(&person_logs_in(&url, &acct.broker_user_id).await);
    assert_eq!(query.get("state").map(String::as_str), Some("st4te-1"));
    let out = h
        .assisted_finish("upstox", &acct, &urls, query.clone())
        .await
        .unwrap();
    assert!(fake.token_is_valid(out.access_token.expose()));
    assert_eq!(out.broker_user_id, acct.broker_user_id);
    assert_eq!(out.issued_at_ms, h.clock.now_ms());
    assert_eq!(out.expires_at_ms, ist::at(2026, 3, 11, 3, 30, 0));
    assert_eq!(out.extras["user_id"], acct.broker_user_id.as_str());
    let ext = out.extras["extended_token"].as_str().unwrap();
    assert!(ext.starts_with("ext-"));
    remember(ext);

    // The code is single use: a second exchange is refused, and never retried.
    let again = h.assisted_finish("upstox", &acct, &urls, query).await;
    let e = failure(&again);
    assert_eq!(e.class, ErrorClass::Protocol);
    assert!(e.message.contains("UDAPI100057"), "{}", e.message);
    let r = fake.recorder();
    assert_eq!(r.requests("/v2/login/authorization/token"), 2);
    assert_eq!(r.requests("/v2/user/profile"), 1);

    // The token is verified, then dies at 03:30 IST.
    let token = out.access_token.expose();
    assert!(h.verify("upstox", &acct, &urls, token).await.unwrap().valid);
    h.clock.set(ist::at(2026, 3, 11, 3, 30, 0));
    let dead = h.verify("upstox", &acct, &urls, token).await.unwrap();
    assert!(!dead.valid);
    assert!(dead.message.contains("Invalid token"), "{}", dead.message);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_without_code_or_in_approval_only_mode_is_refused() {
    let h = Harness::new(eight_am());
    let fake = FakeUpstox::start_with(h.fake_options()).await;
    let (acct, user) = account(2);
    fake.add_user(user);
    let urls = fake.base_urls();
    // Default mode (approval): no login URL, no redirect finish.
    let off = h.assisted_url("upstox", &acct, &urls, "s", CALLBACK).await;
    assert!(failure(&off).message.contains("redirect mode is off"));
    h.set_setting("mode", "approval,redirect");
    let q = [("error".to_string(), "access_denied".to_string())].into();
    let e = h.assisted_finish("upstox", &acct, &urls, q).await;
    assert!(failure(&e).message.contains("no code"), "{:?}", e);
    assert_eq!(fake.recorder().requests("/v2/login/authorization/token"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_mode_login_sends_one_request_and_answers_pending_until_half_past_three() {
    let h = Harness::new(eight_am());
    let fake = FakeUpstox::start_with(h.fake_options()).await;
    let (acct, user) = account(3);
    fake.add_user(user);
    let urls = fake.base_urls();
    let out = h.login("upstox", &acct, &urls).await;
    let e = failure(&out);
    assert_eq!(e.class, ErrorClass::PendingApproval);
    assert_eq!(e.pending_until_ms, Some(ist::at(2026, 3, 11, 3, 30, 0)));
    assert_eq!(fake.token_requests(&acct.api_key), 1);

    // Redirect only: no request is sent, and the class says to log in by hand.
    h.set_setting("mode", "redirect");
    let out = h.login("upstox", &acct, &urls).await;
    assert_eq!(class_of(&out), ErrorClass::AutomationBlocked);
    assert_eq!(fake.token_requests(&acct.api_key), 1);
    h.set_setting("mode", "approval+redirect");
    assert_eq!(
        class_of(&h.login("upstox", &acct, &urls).await),
        ErrorClass::Protocol
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_of_upstox_md_ends_in_its_class() {
    let h = Harness::new(eight_am());
    let fake = FakeUpstox::start_with(h.fake_options()).await;
    let urls = fake.base_urls();
    for (n, behaviour, class) in [
        (10, UpstoxBehaviour::RateLimited, ErrorClass::RateLimited),
        (
            11,
            UpstoxBehaviour::Cloudflare503,
            ErrorClass::BrokerUnavailable,
        ),
        (
            12,
            UpstoxBehaviour::InactiveAppWith200,
            ErrorClass::AppNotAuthorized,
        ),
    ] {
        let (acct, user) = account(n);
        fake.add_user(user.with_behaviour(behaviour));
        let out = h.login("upstox", &acct, &urls).await;
        assert_eq!(class_of(&out), class, "{behaviour:?}: {out:?}");
    }
    // A wrong secret.
    let (mut acct, user) = account(13);
    fake.add_user(user);
    acct.api_secret = "Wrong-$ecret-13".into();
    let out = h.login("upstox", &acct, &urls).await;
    assert_eq!(class_of(&out), ErrorClass::InvalidCredentials);
    assert_eq!(fake.token_requests(&acct.api_key), 0);

    // No active segment: the person must reactivate one.
    h.set_setting("mode", "redirect");
    let (acct, user) = account(14);
    fake.add_user(user.with_behaviour(UpstoxBehaviour::NoSegments));
    let url = h
        .assisted_url("upstox", &acct, &urls, "s14", CALLBACK)
        .await
        .unwrap()
        .url;
    let query = query_of(&person_logs_in(&url, &acct.broker_user_id).await);
    let out = h.assisted_finish("upstox", &acct, &urls, query).await;
    assert_eq!(class_of(&out), ErrorClass::AccountLocked);
    assert_no_secret_logged();
}
