//! Upstox's approval mode through the daemon, against `FakeUpstox` on the API's manual clock:
//! the refresher's request (Q1) leaves the account awaiting approval; the fake's notifier POST
//! (Q3) over a real socket stores the token; forged, stale, replayed, wrong-account and
//! unknown-hook deliveries store nothing; a user's accounts refreshed in bulk ask nobody again; an unanswered request expires and the next run asks
//! again; with both modes on, the first token wins.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::Method;
use fake_brokers::{FakeOptions, FakeUpstox, Tamper, UpstoxUser};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::BrokerConfig;
use tokenbot::refresh::Selection;
use tokenbot::vault::Trigger;

use super::support::*;
use crate::strategies::upstox::person_logs_in;

const USER: &str = "UP0001";
const APP: &str = "615b1297-0001-4a9e-8c1d-5e2f00a1b2c3";
const SECRET: &str = "Up$ecret-0001-zz";
const PUBLIC: &str = "https://tokenbot.example.com";

/// A daemon API serving Upstox on a socket (the fake POSTs to it), the fake on the API's clock,
/// and the `[refresh] webhook_url` receiver's events.
struct World {
    api: TestApi,
    fake: FakeUpstox,
    addr: SocketAddr,
    events: Arc<Mutex<Vec<Value>>>,
    /// The app's notifier URL on the socket.
    hook_url: String,
}

async fn events_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let events: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = events.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |body: String| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, events)
}

async fn world(mode: &str) -> World {
    crate::log_capture::install();
    // The fake reads the API's clock, which exists only once the API does.
    let clock: Arc<OnceLock<Arc<ManualClock>>> = Arc::default();
    let read = clock.clone();
    let fake = FakeUpstox::start_with(FakeOptions {
        now: Arc::new(move || read.get().map_or(MORNING, |c| c.now_ms())),
        latency: std::time::Duration::ZERO,
        ..FakeOptions::default()
    })
    .await;
    let (events_url, events) = events_receiver().await;
    let urls = fake.base_urls();
    let mode = mode.to_owned();
    let api = TestApi::with(move |c| {
        c.brokers.insert(
            "upstox".into(),
            BrokerConfig {
                urls,
                settings: [("mode".to_owned(), mode)].into(),
                rate_limit_per_sec: Some(1_000.0),
                ..BrokerConfig::default()
            },
        );
        c.refresh.webhook_url = Some(events_url.parse().unwrap());
    });
    assert!(clock.set(api.clock.clone()).is_ok());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = api.app.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    api.send(request(
        Method::PUT,
        "/api/users/u1/accounts/upstox",
        &KEY,
        Some(json!({"broker_user_id": USER, "api_key": APP, "api_secret": SECRET})),
    ))
    .await
    .expect(201);
    let hook = api
        .send(request(
            Method::POST,
            "/api/webhooks/upstox",
            &KEY,
            Some(json!({"api_key": APP})),
        ))
        .await;
    hook.expect(201);
    let url = hook.json["webhook_url"].as_str().unwrap().to_owned();
    let path = url.strip_prefix(PUBLIC).unwrap().to_owned();
    assert!(path.starts_with("/webhook/upstox/"), "{url}");
    assert!(
        path.len() >= "/webhook/upstox/".len() + 32,
        "≥ 128 random bits: {url}"
    );
    let hook_url = format!("http://{addr}{path}");
    fake.add_user(
        UpstoxUser::new(USER, APP, SECRET)
            .with_redirect_uri(&format!("{PUBLIC}/callback/upstox"))
            .with_notifier_url(&hook_url),
    );
    World {
        api,
        fake,
        addr,
        events,
        hook_url,
    }
}

impl World {
    async fn scheduled_refresh(&self) -> Value {
        let summary = self
            .api
            .state
            .refresher
            .refresh(Selection::all(), Trigger::Schedule)
            .await;
        serde_json::to_value(&summary.results[0]).unwrap()
    }

    async fn account(&self) -> Value {
        let r = self
            .api
            .send(request(Method::GET, "/api/users", &KEY, None))
            .await;
        r.expect(200);
        let text = r.text.clone();
        assert!(!text.contains(SECRET), "{text}");
        let accounts = r.json["accounts"].as_array().cloned().unwrap_or_default();
        accounts
            .into_iter()
            .find(|a| a["broker"] == "upstox")
            .unwrap_or_else(|| panic!("no upstox account in {text}"))
    }

    /// What the API serves for the account's token.
    async fn served(&self) -> Reply {
        self.api
            .send(request(
                Method::GET,
                "/api/tokens/u1?broker=upstox",
                &KEY,
                None,
            ))
            .await
    }

    /// The token the API serves, if any.
    async fn token(&self) -> Option<String> {
        let r = self.served().await;
        r.json["access_token"].as_str().map(str::to_owned)
    }

    /// The Upstox account's result of a refresh through the API route `path`.
    async fn refresh(&self, path: &str) -> Value {
        let r = self.api.send(request(Method::POST, path, &KEY, None)).await;
        r.expect(200);
        let results = r.json["results"].as_array().cloned().unwrap_or_default();
        results
            .into_iter()
            .find(|a| a["broker"] == "upstox")
            .unwrap_or_else(|| panic!("no upstox result in {}", r.text))
    }

    async fn logs(&self) -> String {
        let r = self
            .api
            .send(request(Method::GET, "/api/tokens/logs/u1", &KEY, None))
            .await;
        r.expect(200);
        r.text.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_end_to_end_request_then_awaiting_then_the_notifier_post_stores_the_token() {
    let w = world("approval").await;
    let result = w.scheduled_refresh().await;
    assert_eq!(result["outcome"], "skipped", "{result}");
    assert_eq!(result["error_class"], "pending_approval", "{result}");
    assert_eq!(w.fake.token_requests(APP), 1);

    let account = w.account().await;
    assert_eq!(account["state"], "awaiting_approval", "{account}");
    // 2025-03-11 03:30 IST.
    assert!(
        account["pending_until"]
            .as_str()
            .is_some_and(|t| t.starts_with("2025-03-10T22:00:00")),
        "{account}"
    );
    assert_eq!(w.token().await, None);

    // No second request while one is pending.
    let again = w.scheduled_refresh().await;
    assert_eq!(again["error_class"], "pending_approval", "{again}");
    assert_eq!(w.fake.token_requests(APP), 1);

    // The person was told, with the expiry, and no secret.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let events = w.events.lock().unwrap().clone();
    let event = events
        .iter()
        .find(|e| e["event"] == "approval_requested")
        .unwrap_or_else(|| panic!("no approval_requested event: {events:?}"));
    assert_eq!(event["broker"], "upstox");
    assert!(
        event["link_expires_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2025-03-10T22:00"))
    );
    assert!(event["message"].as_str().unwrap().contains("Upstox app"));
    assert!(!event.to_string().contains(SECRET));

    let delivered = w.fake.approve(USER).await.unwrap();
    assert_eq!(delivered.status, 200, "{}", delivered.body);
    assert_eq!(
        serde_json::from_str::<Value>(&delivered.body).unwrap()["status"],
        "accepted"
    );
    assert_eq!(w.token().await.as_deref(), Some(delivered.token.as_str()));
    let account = w.account().await;
    assert_eq!(account["state"], "active", "{account}");
    assert!(account.get("pending_until").is_none(), "{account}");
    let logs = w.logs().await;
    assert!(logs.contains("pending_approval"), "{logs}");
    assert!(logs.contains("success"), "{logs}");
    assert!(!logs.contains(&delivered.token), "{logs}");
    assert_eq!(w.fake.recorder().requests("/v2/user/profile"), 1);

    // Deliveries, accepted or not, are logged without the token, the secret or the hook.
    let log = crate::log_capture::text();
    let hook = w.hook_url.rsplit('/').next().unwrap();
    for secret in [delivered.token.as_str(), SECRET, hook] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_delivery_is_ignored_while_a_new_request_waits() {
    let w = world("approval").await;
    w.scheduled_refresh().await;
    let first = w.fake.approve(USER).await.unwrap();
    assert!(first.body.contains("accepted"), "{}", first.body);
    // Later the same day the account is refreshed by name: a new request waits, and the first
    // token is still valid at Upstox, so only the replay check can refuse it.
    w.api.clock.set(MORNING + HOUR);
    let named = w
        .refresh("/api/integration/tokens/refresh/u1?broker=upstox")
        .await;
    assert_eq!(named["error_class"], "pending_approval", "{named}");
    assert_eq!(w.fake.token_requests(APP), 2);
    assert!(w.fake.token_is_valid(&first.token));
    let profiles = w.fake.recorder().requests("/v2/user/profile");
    // Yesterday's body with a fresh `issued_at`: every other check passes (Upstox signs nothing).
    let replay = FakeUpstox::post(
        &w.hook_url,
        &json!({
            "client_id": APP, "user_id": USER, "access_token": first.token,
            "token_type": "Bearer", "message_type": "access_token",
            "issued_at": w.api.clock.now_ms().to_string(),
            "expires_at": (w.api.clock.now_ms() + HOUR).to_string(),
        })
        .to_string(),
        first.token.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            replay.status,
            serde_json::from_str::<Value>(&replay.body).unwrap()
        ),
        (200, json!({"status": "ignored"}))
    );
    assert!(
        crate::log_capture::text().contains("replayed: this token is the one stored"),
        "refused as a replay, not for another reason"
    );
    assert_eq!(
        w.fake.recorder().requests("/v2/user/profile"),
        profiles,
        "refused before Upstox was asked"
    );
    assert_eq!(w.account().await["state"], "awaiting_approval");
    // The genuine approval of the new request still gets through.
    let second = w.fake.approve(USER).await.unwrap();
    assert!(second.body.contains("accepted"), "{}", second.body);
    assert_eq!(w.token().await.as_deref(), Some(second.token.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_accounts_refreshed_without_a_broker_never_prompt_the_person_again() {
    let w = world("approval").await;
    w.scheduled_refresh().await;
    assert_eq!(w.fake.token_requests(APP), 1);
    // While the request waits: the integration route without a broker asks nothing.
    let bulk = w.refresh("/api/integration/tokens/refresh/u1").await;
    assert_eq!(bulk["error_class"], "pending_approval", "{bulk}");
    assert_eq!(w.fake.token_requests(APP), 1);
    // Nor once today's token is stored.
    let d = w.fake.approve(USER).await.unwrap();
    assert!(d.body.contains("accepted"), "{}", d.body);
    let bulk = w.refresh("/api/integration/tokens/refresh/u1").await;
    assert_eq!(bulk["outcome"], "skipped", "{bulk}");
    assert_eq!(w.fake.token_requests(APP), 1);
    assert_eq!(w.token().await.as_deref(), Some(d.token.as_str()));
    // Naming the account asks again.
    let named = w
        .refresh("/api/integration/tokens/refresh/u1?broker=upstox")
        .await;
    assert_eq!(named["error_class"], "pending_approval", "{named}");
    assert_eq!(w.fake.token_requests(APP), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_wrong_account_and_unknown_hook_deliveries_store_nothing() {
    let w = world("approval").await;
    // Before any request: a genuine-looking delivery finds nothing pending.
    let early = w.fake.deliver(USER, Tamper::None).await.unwrap();
    assert_eq!(
        (early.status, early.body.contains("ignored")),
        (200, true),
        "{}",
        early.body
    );
    assert_eq!(w.token().await, None);

    w.scheduled_refresh().await;
    for tamper in [
        Tamper::ClientId("615b1297-9999-4a9e-8c1d-5e2f00a1b2c3".into()),
        Tamper::IssuedAgo(10 * 60_000),
        Tamper::UserId("ZZ9999".into()),
        Tamper::TokenOf("ZZ9999".into()),
        Tamper::ExpiresLate,
    ] {
        let d = w.fake.deliver(USER, tamper.clone()).await.unwrap();
        assert_eq!(d.status, 200, "{tamper:?}: {}", d.body);
        assert_eq!(
            serde_json::from_str::<Value>(&d.body).unwrap(),
            json!({"status": "ignored"}),
            "{tamper:?}"
        );
        assert_eq!(w.token().await, None, "{tamper:?} stored a token");
        assert_eq!(
            w.account().await["state"],
            "awaiting_approval",
            "{tamper:?}"
        );
    }
    // Not JSON, and oversized.
    let junk = FakeUpstox::post(&w.hook_url, "not json", String::new())
        .await
        .unwrap();
    assert_eq!((junk.status, junk.body.contains("ignored")), (200, true));
    let big = FakeUpstox::post(&w.hook_url, &"x".repeat(17 * 1024), String::new())
        .await
        .unwrap();
    assert_eq!(big.status, 413);
    // An unknown hook: 404, no detail.
    let unknown = format!("http://{}/webhook/upstox/{}", w.addr, "ab".repeat(32));
    let (body, _, _) = w.fake.delivery_body(USER, Tamper::None).unwrap();
    let nf = FakeUpstox::post(&unknown, &body.to_string(), String::new())
        .await
        .unwrap();
    assert_eq!(nf.status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&nf.body).unwrap(),
        json!({"error": {"code": "no_such_hook", "message": "not found"}})
    );
    assert_eq!(w.token().await, None);
    // No refused delivery was held against the account.
    assert!(!w.logs().await.contains("webhook delivery refused"));

    // The genuine one still gets through.
    let d = w.fake.approve(USER).await.unwrap();
    assert!(d.body.contains("accepted"), "{}", d.body);
    assert_eq!(w.token().await.as_deref(), Some(d.token.as_str()));
    // And a later one, for no pending request, changes nothing.
    let late = w.fake.deliver(USER, Tamper::None).await.unwrap();
    assert!(late.body.contains("ignored"), "{}", late.body);
    assert_eq!(w.token().await.as_deref(), Some(d.token.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unapproved_request_expires_and_the_next_run_asks_again() {
    let w = world("approval").await;
    w.scheduled_refresh().await;
    let until = w.account().await["pending_until"]
        .as_str()
        .unwrap()
        .to_owned();
    // A minute past 03:30 IST the next morning: the request is dead.
    w.api.clock.set(MORNING + 19 * HOUR + 31 * 60_000);
    let account = w.account().await;
    assert_eq!(account["state"], "active", "{account}");
    let late = w.fake.deliver(USER, Tamper::None).await.unwrap();
    assert!(late.body.contains("ignored"), "{}", late.body);
    assert_eq!(w.token().await, None);

    let result = w.scheduled_refresh().await;
    assert_eq!(result["error_class"], "pending_approval", "{result}");
    assert_eq!(w.fake.token_requests(APP), 2, "asked again");
    let logs = w.logs().await;
    assert!(logs.contains("twofa_unavailable"), "{logs}");
    assert!(logs.contains("approval not given"), "{logs}");
    let account = w.account().await;
    assert_eq!(
        account["state"], "awaiting_approval",
        "not needs_attention: {account}"
    );
    assert_ne!(account["pending_until"].as_str().unwrap(), until);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_modes_on_the_first_token_wins_either_way() {
    // The browser first: the approval's delivery is then ignored.
    let w = world("approval,redirect").await;
    w.scheduled_refresh().await;
    let browser = login_in_browser(&w).await;
    assert_eq!(browser.0, 200, "{}", browser.1);
    let first = w.token().await.unwrap();
    assert!(w.fake.token_is_valid(&first));
    assert_eq!(w.account().await["state"], "active");
    let d = w.fake.deliver(USER, Tamper::None).await.unwrap();
    assert!(d.body.contains("ignored"), "{}", d.body);
    assert_eq!(w.token().await.as_deref(), Some(first.as_str()));

    // The approval first: the browser login begun meanwhile cannot finish.
    let w = world("approval,redirect").await;
    w.scheduled_refresh().await;
    let url = login_url(&w).await;
    let d = w.fake.approve(USER).await.unwrap();
    assert!(d.body.contains("accepted"), "{}", d.body);
    let (status, text) = finish_in_browser(&w, &url).await;
    assert!(!(200..300).contains(&status), "{status} {text}");
    assert_eq!(w.token().await.as_deref(), Some(d.token.as_str()));
    assert_eq!(
        w.fake.recorder().requests("/v2/login/authorization/token"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_waited_for_a_delivery_in_flight_is_not_finished() {
    let w = world("approval,redirect").await;
    w.scheduled_refresh().await;
    // The person has logged in in the browser; the redirect is about to reach the daemon.
    let location = person_logs_in(&login_url(&w).await, USER).await;
    let callback = location.strip_prefix(PUBLIC).unwrap().to_owned();

    // Meanwhile the approval's delivery is being checked: its profile call is slow.
    w.fake
        .recorder()
        .set_latency(std::time::Duration::from_millis(500));
    let (body, token, url) = w.fake.delivery_body(USER, Tamper::None).unwrap();
    let delivery =
        tokio::spawn(async move { FakeUpstox::post(&url, &body.to_string(), token).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while w.fake.recorder().requests("/v2/user/profile") == 0 {
        assert!(std::time::Instant::now() < deadline, "no profile call");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The callback arrives while the delivery holds the account's turn, and waits for it.
    let r = w
        .api
        .send(request(Method::GET, &callback, &As::Nobody, None))
        .await;
    let d = delivery.await.unwrap().unwrap();
    assert!(d.body.contains("accepted"), "{}", d.body);
    assert!(!r.status.is_success(), "{} {}", r.status, r.text);
    assert!(r.text.contains("while this one waited"), "{}", r.text);
    // The first token stands: the code was never exchanged for a second one.
    assert_eq!(
        w.fake.recorder().requests("/v2/login/authorization/token"),
        0
    );
    assert_eq!(w.token().await.as_deref(), Some(d.token.as_str()));
    assert!(w.fake.token_is_valid(&d.token));
}

async fn login_url(w: &World) -> String {
    let r = w
        .api
        .send(request(Method::GET, "/api/login/upstox/u1/url", &KEY, None))
        .await;
    r.expect(200);
    r.json["url"].as_str().unwrap().to_owned()
}

/// The person logs in at the fake's A1 page; the browser follows the 302 to the daemon.
async fn finish_in_browser(w: &World, url: &str) -> (u16, String) {
    let location = person_logs_in(url, USER).await;
    let path = location.strip_prefix(PUBLIC).unwrap();
    let r = w
        .api
        .send(request(Method::GET, path, &As::Nobody, None))
        .await;
    (r.status.as_u16(), r.text.clone())
}

async fn login_in_browser(w: &World) -> (u16, String) {
    let url = login_url(w).await;
    finish_in_browser(w, &url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_is_asked_once_a_day_at_the_scheduled_time_never_by_catch_up_at_night() {
    let w = world("approval").await;
    let refresher = w.api.state.refresher.clone();
    // Day 1, just after the 08:00 IST schedule: asked, approved.
    w.scheduled_refresh().await;
    assert!(
        w.fake
            .approve(USER)
            .await
            .unwrap()
            .body
            .contains("accepted")
    );
    assert_eq!(w.fake.token_requests(APP), 1);
    // Catch-up while the token is valid, and at 03:31 IST once it has died: nobody is woken.
    refresher.catch_up().await;
    w.api.clock.set(MORNING + 19 * HOUR + 31 * 60_000);
    refresher.catch_up().await;
    assert_eq!(w.fake.token_requests(APP), 1, "no request at night");
    // Day 2, 08:01 IST: the daemon missed the 08:00 run, so catch-up asks, once.
    w.api.clock.set(MORNING + 24 * HOUR + 60_000);
    refresher.catch_up().await;
    assert_eq!(w.fake.token_requests(APP), 2);
    w.api.clock.set(MORNING + 24 * HOUR + 5 * 60_000);
    refresher.catch_up().await;
    assert_eq!(w.fake.token_requests(APP), 2, "not again while pending");
    // Approved at 08:06; a scheduled run after that leaves today's token alone.
    w.api.clock.set(MORNING + 24 * HOUR + 6 * 60_000);
    let d = w.fake.approve(USER).await.unwrap();
    assert!(d.body.contains("accepted"), "{}", d.body);
    let again = w.scheduled_refresh().await;
    assert_eq!(again["outcome"], "skipped", "{again}");
    assert_eq!(
        w.fake.token_requests(APP),
        2,
        "a valid token is not replaced"
    );
    assert_eq!(w.token().await.as_deref(), Some(d.token.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_for_an_account_now_managed_externally_stores_nothing() {
    let w = world("approval").await;
    w.scheduled_refresh().await;
    w.api
        .send(request(
            Method::PUT,
            "/api/users/u1/accounts/upstox",
            &KEY,
            Some(json!({
                "broker_user_id": USER, "api_key": APP, "api_secret": SECRET,
                "managed_externally": true,
            })),
        ))
        .await
        .expect(200);
    let d = w.fake.approve(USER).await.unwrap();
    assert!(d.body.contains("ignored"), "{}", d.body);
    assert_eq!(w.token().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_year_long_extended_token_outlives_the_daily_tokens_that_do_not_bring_one() {
    let w = world("approval,redirect").await;
    let key = tokenbot::vault::AccountKey::parse("u1", "upstox").unwrap();
    let stored_extras = |w: &World| {
        let token = w.api.vault().get_token(&key).unwrap().unwrap();
        (token.access_token, token.extras.expose_value())
    };
    // Day one in the browser: Get Token answers an `extended_token`, kept in the vault only.
    w.scheduled_refresh().await;
    let browser = login_in_browser(&w).await;
    assert_eq!(browser.0, 200, "{}", browser.1);
    let (_, extras) = stored_extras(&w);
    let extended = extras["extended_token"].as_str().unwrap().to_owned();
    assert!(extended.starts_with("ext-"), "{extras}");

    // Day two by approval: the notifier's delivery carries no `extended_token`; the stored one
    // stays, with the new daily token beside it.
    w.api.clock.advance(24 * 3_600_000);
    let result = w.scheduled_refresh().await;
    assert_eq!(result["error_class"], "pending_approval", "{result}");
    let delivered = w.fake.approve(USER).await.unwrap();
    assert!(delivered.body.contains("accepted"), "{}", delivered.body);
    let (access, extras) = stored_extras(&w);
    assert_eq!(access.expose_secret(), delivered.token);
    assert_eq!(extras["extended_token"], extended.as_str(), "{extras}");
    // Kept, never served.
    let served = w.served().await;
    served.expect(200);
    assert!(!served.text.contains(&extended), "{}", served.text);
}
