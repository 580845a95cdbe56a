//! Assisted login through the API against the fake Kite: the URL route binds a single-use state to
//! the account, the broker's redirect to `/callback/kite` finishes the login and stores a token the
//! fake accepts; replayed, forged and cross-broker callbacks are refused.

use std::sync::Arc;

use super::support::*;
use axum::http::Method;
use fake_brokers::{FakeKite, FakeOptions, KiteUser};
use tokenbot::clock::Clock;
use tokenbot::config::BrokerConfig;
use tokenbot::vault::{AccountKey, AttemptScope, Trigger};

const CALLBACK: &str = "https://tokenbot.example.com/callback/kite";

async fn setup() -> (TestApi, FakeKite) {
    let clock = Arc::new(tokenbot::clock::ManualClock::new(MORNING));
    let now = clock.clone();
    let fake = FakeKite::start_with(FakeOptions {
        now: Arc::new(move || now.now_ms()),
        ..FakeOptions::default()
    })
    .await;
    let fields = kite_fields("1");
    fake.add_user(
        KiteUser::new(
            "AB1",
            fields["password"].as_str().unwrap(),
            fields["api_key"].as_str().unwrap(),
            fields["api_secret"].as_str().unwrap(),
            fields["totp_secret"].as_str().unwrap(),
        )
        .with_redirect_url(CALLBACK),
    );
    let urls = fake.base_urls();
    let t = TestApi::with(|c| {
        c.brokers.insert(
            "kite".into(),
            BrokerConfig {
                urls,
                ..BrokerConfig::default()
            },
        );
    });
    t.send(request(
        Method::PUT,
        "/api/users/u1/accounts/kite",
        &KEY,
        Some(fields),
    ))
    .await
    .expect(201);
    (t, fake)
}

/// The path and query of a redirect to the callback.
fn local(redirect: &str) -> String {
    assert!(redirect.starts_with(CALLBACK), "{redirect}");
    redirect
        .trim_start_matches("https://tokenbot.example.com")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assisted_login_stores_a_token_the_broker_accepts_once() {
    let (t, fake) = setup().await;
    let r = t
        .send(request(Method::GET, "/api/login/kite/u1/url", &KEY, None))
        .await;
    r.expect(200);
    assert_eq!(r.json["redirect_url"], CALLBACK);
    let url = r.json["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(fake.web_url()), "{url}");

    let redirect = fake.browser_login(&url, "AB1").unwrap();
    let callback = local(&redirect);
    let r = t
        .send(request(Method::GET, &callback, &As::Nobody, None))
        .await;
    r.expect(200);
    assert_eq!(r.json["status"], "ok");
    assert_eq!(r.json["user_id"], "u1");
    assert!(!r.text.contains("access_token"));

    let key = AccountKey::parse("u1", "kite").unwrap();
    let token = t.vault().get_token(&key).unwrap().expect("a stored token");
    assert!(fake.token_is_valid(
        "kiteapikey0001",
        secrecy::ExposeSecret::expose_secret(&token.access_token)
    ));
    let attempts = t.vault().attempts(AttemptScope::Account(&key), 5).unwrap();
    assert_eq!(attempts[0].attempt.trigger, Trigger::Assisted);
    assert!(
        fake.recorder().passwords("AB1").is_empty(),
        "assisted login never sends the password"
    );

    // Replaying the same redirect: the state is gone.
    t.send(request(Method::GET, &callback, &As::Nobody, None))
        .await
        .expect_error(400, "invalid_state");
    // The token the read route hands out is the new one.
    let r = t
        .send(request(Method::GET, "/api/tokens/u1", &KEY, None))
        .await;
    r.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_link_opens_the_brokers_login_without_credentials_for_its_account_until_it_expires()
 {
    let (t, fake) = setup().await;
    let key = AccountKey::parse("u1", "kite").unwrap();
    let (link, until) = t.state.refresher.notifier().login_link(&key).unwrap();
    assert_eq!(
        until,
        t.clock.now_ms() + 12 * 3_600_000,
        "[notify] link_ttl_secs"
    );
    let path = link
        .as_str()
        .strip_prefix("https://tokenbot.example.com")
        .unwrap()
        .to_owned();
    assert!(path.starts_with("/login/kite/u1?until="), "{path}");

    // One tap, no credentials: to the broker's login page, then the callback stores the token.
    let r = t.send(request(Method::GET, &path, &As::Nobody, None)).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let url = r.headers["location"].to_str().unwrap().to_owned();
    assert!(url.starts_with(fake.web_url()), "{url}");
    let redirect = fake.browser_login(&url, "AB1").unwrap();
    t.send(request(Method::GET, &local(&redirect), &As::Nobody, None))
        .await
        .expect(200);
    assert!(t.vault().get_token(&key).unwrap().is_some());

    // The signature covers the account and the expiry.
    let sig = path.rsplit("sig=").next().unwrap().to_owned();
    for forged in [
        path.replace("/u1?", "/u2?"),
        path.replace(&format!("until={until}"), &format!("until={}", until + 1)),
        path.replace(&sig, &"0".repeat(64)),
        path.replace(&format!("&sig={sig}"), ""),
    ] {
        let r = t
            .send(request(Method::GET, &forged, &As::Nobody, None))
            .await;
        assert!(
            [400, 404].contains(&r.status.as_u16()),
            "{forged}: {}",
            r.text
        );
        assert!(r.headers.get("location").is_none(), "{forged}");
    }
    // Past its expiry the genuine link is refused too, saying so.
    t.clock.set(until);
    t.send(request(Method::GET, &path, &As::Nobody, None))
        .await
        .expect_error(410, "link_expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_cross_broker_callbacks_are_refused() {
    let (t, fake) = setup().await;
    t.send(request(
        Method::GET,
        "/callback/kite?state=0000&request_token=x&status=success",
        &As::Nobody,
        None,
    ))
    .await
    .expect_error(400, "invalid_state");
    t.send(request(
        Method::GET,
        "/callback/kite?request_token=x",
        &As::Nobody,
        None,
    ))
    .await
    .expect_error(400, "invalid_state");

    // A real state presented at another broker's callback is refused (and burnt).
    let r = t
        .send(request(
            Method::GET,
            "/api/login/kite/u1/url",
            &jwt("u1"),
            None,
        ))
        .await;
    r.expect(200);
    let url = r.json["url"].as_str().unwrap().to_owned();
    let redirect = fake.browser_login(&url, "AB1").unwrap();
    let query = redirect.split_once('?').unwrap().1.to_owned();
    t.send(request(
        Method::GET,
        &format!("/callback/iifl?{query}"),
        &As::Nobody,
        None,
    ))
    .await
    .expect_error(400, "invalid_state");
    t.send(request(
        Method::GET,
        &format!("/callback/kite?{query}"),
        &As::Nobody,
        None,
    ))
    .await
    .expect_error(400, "invalid_state");
    let key = AccountKey::parse("u1", "kite").unwrap();
    assert!(t.vault().get_token(&key).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_url_route_checks_caller_broker_account_and_configuration() {
    let (t, _fake) = setup().await;
    t.send(request(
        Method::GET,
        "/api/login/kite/u1/url",
        &As::Nobody,
        None,
    ))
    .await
    .expect_error(401, "unauthorized");
    t.send(request(
        Method::GET,
        "/api/login/kite/u1/url",
        &jwt("u2"),
        None,
    ))
    .await
    .expect_error(403, "forbidden");
    t.send(request(Method::GET, "/api/login/nosuch/u1/url", &KEY, None))
        .await
        .expect_error(404, "unknown_broker");
    t.send(request(Method::GET, "/api/login/kite/u9/url", &KEY, None))
        .await
        .expect_error(404, "no_account");
    t.seed("u1", "iifl-xts", None);
    t.send(request(
        Method::GET,
        "/api/login/iifl-xts/u1/url",
        &KEY,
        None,
    ))
    .await
    .expect_error(400, "assisted_login_unsupported");

    let bare = TestApi::with(|c| c.server.public_url = None);
    bare.seed("u1", "kite", None);
    bare.send(request(Method::GET, "/api/login/kite/u1/url", &KEY, None))
        .await
        .expect_error(503, "public_url_not_configured");
}

/// An assisted login shows that a person can log in, not that the stored password or TOTP
/// secret is right: it clears automation_blocked, twofa_unavailable and app_not_authorized, and
/// leaves a wrong password or a locked account needing attention (the next morning would send
/// the same wrong password again). The operator's explicit clear works for any class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assisted_login_clears_only_the_attention_it_resolves() {
    let (t, fake) = setup().await;
    let key = AccountKey::parse("u1", "kite").unwrap();
    let state = |t: &TestApi| t.vault().get_account(&key).unwrap().unwrap().state();
    for (class, cleared) in [
        ("invalid_credentials", false),
        ("account_locked", false),
        ("twofa_rejected", false),
        ("automation_blocked", true),
        ("twofa_unavailable", true),
        ("app_not_authorized", true),
    ] {
        t.vault()
            .set_attention(
                &key,
                tokenbot::vault::Attention {
                    class: class.into(),
                    message: "m".into(),
                    since_ms: MORNING,
                },
            )
            .unwrap();
        let r = t
            .send(request(Method::GET, "/api/login/kite/u1/url", &KEY, None))
            .await;
        let url = r.json["url"].as_str().unwrap().to_owned();
        let callback = local(&fake.browser_login(&url, "AB1").unwrap());
        t.send(request(Method::GET, &callback, &As::Nobody, None))
            .await
            .expect(200);
        let expected = if cleared {
            tokenbot::vault::AccountState::Active
        } else {
            tokenbot::vault::AccountState::NeedsAttention
        };
        assert_eq!(state(&t), expected, "{class}");
    }
    t.vault()
        .set_attention(
            &key,
            tokenbot::vault::Attention {
                class: "invalid_credentials".into(),
                message: "m".into(),
                since_ms: MORNING,
            },
        )
        .unwrap();
    t.send(request(
        Method::PATCH,
        "/api/users/u1/accounts/kite",
        &KEY,
        Some(serde_json::json!({"clear_attention": true})),
    ))
    .await
    .expect(200);
    assert_eq!(state(&t), tokenbot::vault::AccountState::Active);
}
