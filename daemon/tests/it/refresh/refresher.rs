//! The refresher against the fake Kite over loopback, through the real plugin ABI, on a manual
//! clock shared with the fake: retries, lockout safety, skips, single flight, limits, catch-up.

use std::sync::Arc;
use std::time::Duration;

use fake_brokers::{KiteBehaviour, ist};
use tokenbot::clock::Clock;
use tokenbot::config::{BrokerConfig, Config, PluginsConfig};
use tokenbot::plugins::{CallLimits, PluginEnv, Registry};
use tokenbot::refresh::schedule::Scheduler;
use tokenbot::refresh::{Named, Refresher, Selection};
use tokenbot::vault::{AccountKey, AccountState, Flags, Outcome, Trigger};

use super::world::*;

#[tokio::test(flavor = "multi_thread")]
async fn broker_unavailable_is_tried_three_times_with_growing_delays_then_fails() {
    let w = world(morning(), |_| {}).await;
    let key = account(&w, 1, KiteBehaviour::Cloudflare, None);
    let summary = w.refresher.refresh(Selection::all(), Trigger::Api).await;
    assert_eq!(
        (
            summary.successful,
            summary.failed,
            summary.skipped,
            summary.total
        ),
        (0, 1, 0, 1)
    );
    let result = &summary.results[0];
    assert_eq!(result.attempts, 3);
    assert_eq!(result.error_class.as_deref(), Some("broker_unavailable"));
    let sleeps = w.sleeps.lock().unwrap().clone();
    assert_eq!(sleeps.len(), 2, "{sleeps:?}");
    assert!(
        sleeps[0] >= Duration::from_millis(50) && sleeps[0] <= Duration::from_millis(100),
        "{sleeps:?}"
    );
    assert!(
        sleeps[1] >= Duration::from_millis(100) && sleeps[1] <= Duration::from_millis(200),
        "{sleeps:?}"
    );
    assert!(sleeps[1] >= sleeps[0]);
    let attempts = w.vault.attempts(&key, 10).unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a.attempt.error_class.as_deref() == Some("broker_unavailable"))
    );
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.attempt.attempt)
            .collect::<Vec<_>>(),
        [3, 2, 1],
        "newest first"
    );
    // A broker outage is not the account's fault.
    assert_eq!(
        w.vault.get_account(&key).unwrap().unwrap().state(),
        AccountState::Active
    );
}

/// With two sleeps the jitter ranges touch (50-100 ms, then 100-200 ms), so a constant backoff
/// would pass the test above; over five attempts the ranges are disjoint and only a doubling one
/// passes, until `backoff_max_ms` caps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_password_is_never_retried_by_a_new_login_in_the_same_refresh() {
    // S5 answers 500 to every try: retryable, but only at that step. Before ABI 1.1 the whole
    // login was tried three times, posting the password three times.
    let w = world(morning(), |_| {}).await;
    let key = account(&w, 5, KiteBehaviour::ServerError, None);
    let summary = w.refresher.refresh(Selection::all(), Trigger::Api).await;
    let result = &summary.results[0];
    assert_eq!(summary.failed, 1);
    assert_eq!(result.attempts, 1, "{result:?}");
    assert_eq!(result.error_class.as_deref(), Some("broker_unavailable"));
    assert_eq!(w.kite.recorder().passwords("ZK0005").len(), 1);
    assert!(
        w.kite.recorder().requests("/session/token") > 1,
        "S5 itself was retried"
    );
    assert!(
        w.sleeps.lock().unwrap().is_empty(),
        "no new login was scheduled"
    );
    // An outage, not the account's fault: the next refresh may try again.
    assert_eq!(
        w.vault.get_account(&key).unwrap().unwrap().state(),
        AccountState::Active
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backoff_doubles_with_each_attempt_up_to_the_cap() {
    let w = world(morning(), |c| c.refresh.max_attempts = 6).await;
    account(&w, 1, KiteBehaviour::Cloudflare, None);
    let summary = w.refresher.refresh(Selection::all(), Trigger::Api).await;
    assert_eq!(summary.results[0].attempts, 6);
    let sleeps: Vec<u64> = w
        .sleeps
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.as_millis() as u64)
        .collect();
    // backoff_initial_ms = 100, backoff_max_ms = 1,000 (see `world`).
    let ranges = [(50, 100), (100, 200), (200, 400), (400, 800), (500, 1_000)];
    assert_eq!(sleeps.len(), ranges.len(), "{sleeps:?}");
    for (sleep, (low, high)) in sleeps.iter().zip(ranges) {
        assert!((low..=high).contains(sleep), "{sleeps:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_sent_exactly_once_and_never_again() {
    let w = world(morning(), |_| {}).await;
    let key = account(&w, 2, KiteBehaviour::Happy, Some("not-the-password"));
    let summary = w
        .refresher
        .refresh(Selection::all(), Trigger::Schedule)
        .await;
    assert_eq!(summary.failed, 1);
    assert_eq!(summary.results[0].attempts, 1);
    assert_eq!(
        summary.results[0].error_class.as_deref(),
        Some("invalid_credentials")
    );
    assert_eq!(w.kite.recorder().passwords("ZK0002").len(), 1);
    assert!(w.sleeps.lock().unwrap().is_empty());
    let account = w.vault.get_account(&key).unwrap().unwrap();
    assert_eq!(account.state(), AccountState::NeedsAttention);
    // Later refreshes leave it alone until its credentials change.
    for trigger in [Trigger::Schedule, Trigger::CatchUp, Trigger::Api] {
        let again = w.refresher.refresh(Selection::all(), trigger).await;
        assert_eq!((again.skipped, again.results[0].attempts), (1, 0));
    }
    assert_eq!(w.kite.recorder().passwords("ZK0002").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn summary_counts_success_failure_and_skips_exactly() {
    let w = world(morning(), |_| {}).await;
    account(&w, 1, KiteBehaviour::Happy, None);
    account(&w, 2, KiteBehaviour::Happy, Some("wrong"));
    let managed = account(&w, 3, KiteBehaviour::Happy, None);
    let paused = account(&w, 4, KiteBehaviour::Happy, None);
    w.vault
        .set_flags(
            &managed,
            Flags {
                managed_externally: Some(true),
                auto_refresh: None,
                clear_attention: false,
            },
        )
        .unwrap();
    w.vault
        .set_flags(
            &paused,
            Flags {
                auto_refresh: Some(false),
                managed_externally: None,
                clear_attention: false,
            },
        )
        .unwrap();
    let summary = w.refresher.refresh(Selection::all(), Trigger::Api).await;
    assert_eq!(
        (
            summary.successful,
            summary.failed,
            summary.skipped,
            summary.total
        ),
        (1, 1, 2, 4)
    );
    let outcome = |user: &str| {
        summary
            .results
            .iter()
            .find(|r| r.user_id == user)
            .unwrap()
            .clone()
    };
    assert_eq!(
        outcome("user-3").error_class.as_deref(),
        Some("managed_externally")
    );
    assert_eq!(outcome("user-3").outcome, Outcome::Skipped);
    assert_eq!(outcome("user-4").error_class.as_deref(), Some("paused"));
    assert_eq!(
        w.kite.recorder().passwords("ZK0003").len() + w.kite.recorder().passwords("ZK0004").len(),
        0
    );
    // The token of the successful account is one the broker accepts.
    let token = w
        .vault
        .get_token(&AccountKey::parse("user-1", "kite").unwrap())
        .unwrap()
        .unwrap();
    use secrecy::ExposeSecret;
    assert!(
        w.kite
            .token_is_valid("key-1", token.access_token.expose_secret())
    );
    // A paused account is still logged in when a person asks for it by name.
    let named = w
        .refresher
        .refresh(Selection::account(paused), Trigger::Manual)
        .await;
    assert_eq!(named.successful, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_simultaneous_triggers_for_one_account_perform_one_login() {
    let w = world(morning(), |_| {}).await;
    let key = account(&w, 5, KiteBehaviour::Happy, None);
    w.kite.recorder().set_latency(Duration::from_millis(30));
    let (a, b) = tokio::join!(
        w.refresher
            .refresh_account(key.clone(), Trigger::Schedule, Named::No),
        w.refresher
            .refresh_account(key.clone(), Trigger::Api, Named::No),
    );
    assert_eq!((a.outcome, b.outcome), (Outcome::Success, Outcome::Success));
    assert_eq!(logins(&w), 1);
    assert_eq!(w.kite.recorder().passwords("ZK0005").len(), 1);
    assert_eq!(w.vault.attempts(&key, 10).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_never_sees_more_than_its_rate_or_concurrency() {
    let w = world(morning(), |config| {
        let kite = config.brokers.get_mut("kite").unwrap();
        kite.rate_limit_per_sec = Some(40.0);
        kite.concurrency = Some(3);
    })
    .await;
    w.kite.recorder().set_latency(Duration::from_millis(5));
    for n in 10..22 {
        account(&w, n, KiteBehaviour::Happy, None);
    }
    let summary = w.refresher.refresh(Selection::all(), Trigger::Api).await;
    assert_eq!(summary.successful, 12, "{:?}", summary.results);
    let recorder = w.kite.recorder();
    assert!(
        recorder.max_logins_in_flight() <= 3,
        "{} logins in flight",
        recorder.max_logins_in_flight()
    );
    assert!(recorder.max_logins_in_flight() >= 2, "the cap was not used");
    let per_second = recorder.requests_per_second();
    assert!(per_second.iter().all(|&n| n <= 40), "{per_second:?}");
    assert!(
        recorder.total_requests() >= 60,
        "{}",
        recorder.total_requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_stopped_across_the_schedule_catches_up_once_at_start() {
    // Yesterday's scheduled run.
    let w = world(ist::at(2026, 11, 22, 8, 0, 10), |_| {}).await;
    for n in 30..34 {
        account(&w, n, KiteBehaviour::Happy, None);
    }
    assert_eq!(
        w.refresher
            .refresh(Selection::all(), Trigger::Schedule)
            .await
            .successful,
        4
    );
    assert_eq!(logins(&w), 4);
    // The daemon is down over today's 06:00 expiry and 08:00 schedule; it starts at 09:30.
    let start = ist::at(2026, 11, 23, 9, 30, 10);
    w.clock.set(start);
    let mut scheduler = Scheduler::new(w.refresher.clone(), start);
    let summaries = scheduler.tick(start).await;
    assert_eq!(summaries.len(), 1);
    assert_eq!((summaries[0].successful, summaries[0].total), (4, 4));
    assert_eq!(logins(&w), 8);
    let key = AccountKey::parse("user-30", "kite").unwrap();
    let attempts = w.vault.attempts(&key, 10).unwrap();
    assert_eq!(attempts[0].attempt.trigger, Trigger::CatchUp);
    // Later ticks find nothing stale: the missed run happened once.
    for minutes in [1, 2, 10] {
        let later = start + minutes * 60_000;
        w.clock.set(later);
        assert!(scheduler.tick(later).await.is_empty());
    }
    assert_eq!(logins(&w), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schedule_fires_once_at_its_time_in_its_timezone() {
    let before = ist::at(2026, 11, 23, 7, 59, 0);
    let w = world(before, |_| {}).await;
    account(&w, 40, KiteBehaviour::Happy, None);
    let mut scheduler = Scheduler::new(w.refresher.clone(), before);
    // First tick: catch-up logs the new account in.
    assert_eq!(scheduler.tick(before).await.len(), 1);
    assert_eq!(logins(&w), 1);
    let next = w.refresher.next_runs()["kite"].unwrap();
    assert_eq!(next, ist::at(2026, 11, 23, 8, 0, 0));
    let after = ist::at(2026, 11, 23, 8, 0, 10);
    w.clock.set(after);
    let summaries = scheduler.tick(after).await;
    assert_eq!(summaries.len(), 1, "the 08:00 run");
    assert_eq!(summaries[0].successful, 1);
    assert_eq!(logins(&w), 2);
    let key = AccountKey::parse("user-40", "kite").unwrap();
    assert_eq!(
        w.vault.attempts(&key, 1).unwrap()[0].attempt.trigger,
        Trigger::Schedule
    );
    assert!(scheduler.tick(after + 1_000).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_hears_of_accounts_that_need_attention_without_secrets() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let hook = axum::Router::new().route(
        "/hook",
        post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let w = world(morning(), |config| {
        config.refresh.webhook_url = Some(hook_url.parse().unwrap());
        config.server.public_url = Some("https://tokens.example.com/".parse().unwrap());
    })
    .await;
    account(&w, 50, KiteBehaviour::SessionExpiredAfterTwofa, None);
    account(&w, 51, KiteBehaviour::Happy, None);
    let summary = w
        .refresher
        .refresh(Selection::all(), Trigger::Schedule)
        .await;
    assert_eq!((summary.successful, summary.failed), (1, 1));
    let body = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["event"], "needs_attention");
    assert_eq!(event["user_id"], "user-50");
    assert_eq!(event["error_class"], "automation_blocked");
    assert_eq!(
        event["assisted_login_url"],
        "https://tokens.example.com/api/login/kite/user-50/url"
    );
    for secret in ["pw-50", "secret-50", &totp_secret(50)] {
        assert!(!body.contains(secret), "the webhook got a secret");
    }
    assert!(
        rx.try_recv().is_err(),
        "only the failed account is reported"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_process_does_not_reuse_the_totp_step_an_earlier_one_used() {
    let w = world(morning(), |_| {}).await;
    let key = account(&w, 60, KiteBehaviour::Happy, None);
    assert_eq!(
        w.refresher
            .refresh(Selection::all(), Trigger::Api)
            .await
            .successful,
        1
    );
    // A second refresher over the same vault stands for the next process (fresh memory).
    let again = Arc::new(Refresher::new(
        w.vault.clone(),
        Arc::new(Registry::load(&PluginsConfig {
            dir: "/nonexistent".into(),
            sha256_allowlist: vec![],
        })),
        Arc::new(PluginEnv::new(w.clock.clone(), CallLimits::default())),
        Arc::new({
            let mut config = Config::default();
            config.brokers.insert(
                "kite".into(),
                BrokerConfig {
                    urls: w.kite.base_urls(),
                    ..BrokerConfig::default()
                },
            );
            config
        }),
    ));
    assert_eq!(
        again
            .refresh(Selection::account(key), Trigger::Manual)
            .await
            .successful,
        1
    );
    let steps: Vec<u64> = w
        .kite
        .recorder()
        .totp_uses("ZK0060")
        .iter()
        .filter_map(|u| u.step)
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(
        steps[1] > steps[0],
        "the second process reused step {}",
        steps[0]
    );
    assert!(
        w.kite
            .recorder()
            .totp_uses("ZK0060")
            .iter()
            .all(|u| u.accepted)
    );
}

/// A second login within one TOTP step needs the next step. The refresher waits for it before
/// the login starts, so the password is sent once per login and the code needs no wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_right_after_a_login_waits_for_the_next_step_before_the_password() {
    let w = world(morning(), |_| {}).await;
    account(&w, 70, KiteBehaviour::Happy, None);
    for _ in 0..2 {
        let summary = w.refresher.refresh(Selection::all(), Trigger::Api).await;
        assert_eq!((summary.successful, summary.results[0].attempts), (1, 1));
    }
    // morning() is 20 s before the next step; the fake's requests take no manual-clock time.
    assert_eq!(w.clock.sleeps(), vec![20_000]);
    assert_eq!(w.kite.recorder().passwords("ZK0070").len(), 2);
    let uses = w.kite.recorder().totp_uses("ZK0070");
    assert_eq!(uses.len(), 2);
    assert!(uses.iter().all(|u| u.accepted), "{uses:?}");
}

/// With a login timeout shorter than the wait for an unused step, the login could only fail at
/// its TOTP step, after the password. It is not started; the failures reserve no step, so the
/// account logs in at once when the step comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_totp_step_beyond_the_login_timeout_fails_without_sending_the_password() {
    let w = world(morning(), |c| c.refresh.login_timeout_secs = 3).await;
    let key = account(&w, 71, KiteBehaviour::Happy, None);
    let first = w.refresher.refresh(Selection::all(), Trigger::Api).await;
    assert_eq!(first.successful, 1);
    for _ in 0..3 {
        let summary = w.refresher.refresh(Selection::all(), Trigger::Api).await;
        let result = &summary.results[0];
        assert_eq!(
            (
                summary.failed,
                result.attempts,
                result.error_class.as_deref()
            ),
            (1, 1, Some("network"))
        );
        let message = result.message.as_deref().unwrap_or_default();
        assert!(message.contains("broker was not contacted"), "{message}");
    }
    assert_eq!(w.kite.recorder().passwords("ZK0071").len(), 1);
    // Failed at once: no backoff holds the caller.
    assert!(w.sleeps.lock().unwrap().is_empty());
    // A network failure is not the account's fault; no step was burned, so once the next step
    // starts the account logs in with no wait at all.
    assert_eq!(
        w.vault.get_account(&key).unwrap().unwrap().state(),
        AccountState::Active
    );
    w.clock.advance(20_000);
    let later = w.refresher.refresh(Selection::all(), Trigger::Api).await;
    assert_eq!((later.successful, later.results[0].attempts), (1, 1));
    assert!(w.clock.sleeps().is_empty(), "{:?}", w.clock.sleeps());
    assert_eq!(w.kite.recorder().passwords("ZK0071").len(), 2);
}

/// An HTML 403 wall at the password step for ten catch-up periods: one refresh's worth of
/// password posts, then none until the backoff (120 s, doubling) expires. Before, catch-up sent
/// the password every minute (three times a minute with its retries) for as long as it lasted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_wall_gets_one_password_per_backoff_not_one_per_catch_up() {
    let w = world(morning(), |_| {}).await;
    let key = account(&w, 7, KiteBehaviour::LoginWaf403, None);
    let start = w.clock.now_ms();
    let mut scheduler = Scheduler::new(w.refresher.clone(), start);
    let mut posts = Vec::new();
    for _minute in 0..10 {
        scheduler.tick(w.clock.now_ms()).await;
        posts.push(w.kite.recorder().passwords("ZK0007").len());
        w.clock.advance(60_000);
    }
    // Minute 0: one post. The backoff is 120-132 s, then 240-264 s, then 480-528 s: the second
    // refresh comes at minute 2 or 3, the third 4 or 5 minutes later, no fourth before minute 10.
    assert_eq!(&posts[..2], &[1, 1], "{posts:?}");
    assert!(posts[3] == 2, "{posts:?}");
    assert_eq!(posts[9], 3, "{posts:?}");
    let account = w.vault.get_account(&key).unwrap().unwrap();
    assert_eq!(
        account.state(),
        AccountState::Active,
        "an outage is not the account's fault"
    );
    assert_eq!(account.backoff.unwrap().failures, 3);

    // Asked for by name, the account is not held by its backoff.
    let summary = w
        .refresher
        .refresh(Selection::account(key.clone()), Trigger::Api)
        .await;
    assert_eq!(summary.results[0].attempts, 1);
    assert_eq!(w.kite.recorder().passwords("ZK0007").len(), 4);

    // A stored token ends the backoff.
    w.kite.set_behaviour("ZK0007", KiteBehaviour::Happy);
    w.clock.advance(3_600_000);
    let summary = w
        .refresher
        .refresh(Selection::all(), Trigger::Schedule)
        .await;
    assert_eq!(summary.successful, 1, "{summary:?}");
    assert_eq!(w.vault.get_account(&key).unwrap().unwrap().backoff, None);
}

/// Five accounts in a row finding the broker unavailable open its breaker: scheduled logins of
/// the broker's other accounts wait for the cooldown; a refresh by name does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_unavailable_accounts_in_a_row_pause_the_brokers_scheduled_logins() {
    let w = world(morning(), |_| {}).await;
    for n in 10..15 {
        account(&w, n, KiteBehaviour::LoginWaf403, None);
    }
    let summary = w
        .refresher
        .refresh(Selection::all(), Trigger::Schedule)
        .await;
    assert_eq!(summary.failed, 5, "{summary:?}");
    let breaker = &w.refresher.breakers()["kite"];
    assert!(breaker.open, "{breaker:?}");
    assert_eq!(breaker.open_until_ms, w.clock.now_ms() + 300_000);

    let healthy = account(&w, 20, KiteBehaviour::Happy, None);
    let summary = w
        .refresher
        .refresh(Selection::all(), Trigger::Schedule)
        .await;
    assert_eq!(summary.skipped, 6, "{summary:?}");
    let held = summary
        .results
        .iter()
        .find(|r| r.user_id == "user-20")
        .unwrap();
    assert_eq!(held.error_class.as_deref(), Some("breaker_open"));
    assert!(w.kite.recorder().passwords("ZK0020").is_empty());

    let by_name = w
        .refresher
        .refresh(Selection::account(healthy.clone()), Trigger::Api)
        .await;
    assert_eq!(by_name.successful, 1, "{by_name:?}");
    w.clock.advance(300_000);
    assert!(!w.refresher.breakers()["kite"].open);
}
