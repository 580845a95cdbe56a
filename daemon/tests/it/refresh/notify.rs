//! Approval push: notices reach the webhook and the fake Telegram Bot API without a secret in
//! them, Telegram's refusals are handled as it means them, and pending approvals are announced
//! again once, under a manual clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_brokers::{FakeTelegram, KiteBehaviour, TelegramFailure};
use secrecy::{ExposeSecret, SecretString};
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::{ChatId, Config};
use tokenbot::notify::{NoticeAccount, Notifier};
use tokenbot::refresh::Selection;
use tokenbot::vault::{AccountKey, Trigger};

use super::world::*;

const BOT_TOKEN: &str = "123456789:AAH-test_bot_token";
const WAIT: Duration = Duration::from_secs(10);
const MIN: i64 = 60_000;

/// A loopback webhook that hands over every body it receives.
async fn webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use axum::routing::post;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
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
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });
    (url, rx)
}

/// `config` with the bot at `fake`, its default chat `-1001`, and `user-71`'s own chat `555`.
fn with_telegram(config: &mut Config, fake: &FakeTelegram, token: &str) {
    let telegram = &mut config.notify.telegram;
    telegram.bot_token = Some(SecretString::from(token.to_owned()));
    telegram.base_url = fake.base_url().parse().unwrap();
    telegram.default_chat_id = Some(ChatId::Id(-1001));
    telegram.chats.insert("user-71".into(), ChatId::Id(555));
}

#[tokio::test(flavor = "multi_thread")]
async fn needs_attention_reaches_the_webhook_and_telegram_with_no_secret_in_them() {
    let telegram = FakeTelegram::start(BOT_TOKEN).await;
    telegram.add_chat(-1001);
    telegram.add_chat(555);
    let (hook_url, mut hook) = webhook().await;
    let w = world(morning(), |config| {
        config.refresh.webhook_url = Some(hook_url.parse().unwrap());
        config.server.public_url = Some("https://tokens.example.com/".parse().unwrap());
        with_telegram(config, &telegram, BOT_TOKEN);
    })
    .await;
    account(&w, 70, KiteBehaviour::SessionExpiredAfterTwofa, None);
    account(&w, 71, KiteBehaviour::SessionExpiredAfterTwofa, None);
    let happy = account(&w, 72, KiteBehaviour::Happy, None);
    let summary = w
        .refresher
        .refresh(Selection::all(), Trigger::Schedule)
        .await;
    assert_eq!((summary.successful, summary.failed), (1, 2));

    let mut bodies = Vec::new();
    for _ in 0..2 {
        bodies.push(
            tokio::time::timeout(WAIT, hook.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let mut events: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    events.sort_by_key(|e| e["user_id"].as_str().unwrap().to_owned());
    for (event, n) in events.iter().zip([70, 71]) {
        assert_eq!(event["event"], "needs_attention");
        assert_eq!(event["user_id"], format!("user-{n}"));
        assert_eq!(event["broker"], "kite");
        assert_eq!(event["broker_user_id"], format!("ZK00{n}"));
        assert_eq!(event["error_class"], "automation_blocked");
        let api_route = format!("https://tokens.example.com/api/login/kite/user-{n}/url");
        assert_eq!(event["assisted_login_url"], api_route);
        // The one-tap link: signed for this account, working for `link_ttl_secs` (12 h).
        let link = event["link"].as_str().unwrap();
        let prefix = format!("https://tokens.example.com/login/kite/user-{n}?until=");
        assert!(
            link.starts_with(&prefix) && link.contains("&sig="),
            "{link}"
        );
        assert!(event["link_expires_at"].is_string(), "{event}");
        assert!(
            event["reason"].as_str().unwrap().contains("Log in by hand"),
            "{event}"
        );
    }

    let messages = telegram.wait_for_messages(2, WAIT).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    let chat_of = |n: u32| {
        let m = messages
            .iter()
            .find(|m| m.text.contains(&format!("user user-{n} ")))
            .unwrap();
        let prefix = format!("https://tokens.example.com/login/kite/user-{n}?until=");
        assert!(m.text.contains(&prefix), "{}", m.text);
        assert!(m.text.contains("blocked the automatic login"), "{}", m.text);
        let button = &m.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["url"];
        assert!(
            button.as_str().is_some_and(|b| b.starts_with(&prefix)),
            "{button}"
        );
        m.chat_id.clone()
    };
    assert_eq!(chat_of(70), "-1001", "the default chat");
    assert_eq!(chat_of(71), "555", "user-71's own chat");

    // Nothing any channel received holds a credential of any test account or a token.
    let token = w.vault.get_token(&happy).unwrap().unwrap();
    let access_token = token.access_token.expose_secret().to_owned();
    assert!(!access_token.is_empty());
    let mut secrets = vec![access_token, BOT_TOKEN.to_owned()];
    for n in [70, 71, 72] {
        secrets.extend([
            format!("pw-{n}"),
            format!("key-{n}"),
            format!("secret-{n}"),
            totp_secret(n),
        ]);
    }
    let raw: Vec<String> = bodies.into_iter().chain(telegram.requests()).collect();
    assert_eq!(raw.len(), 4);
    for body in &raw {
        for secret in &secrets {
            assert!(
                !body.contains(secret.as_str()),
                "a notification carried a secret: {body}"
            );
        }
    }
}

fn notifier(fake: &FakeTelegram, token: &str, clock: Arc<ManualClock>) -> Notifier {
    let mut config = Config::default();
    with_telegram(&mut config, fake, token);
    config.notify.quiet_secs = 600;
    config.notify.remind_before_secs = 900;
    Notifier::new(&config, clock, None)
}

fn upstox(user: &str) -> NoticeAccount {
    NoticeAccount::new(AccountKey::parse(user, "upstox").unwrap(), "AB1234")
}

#[tokio::test(flavor = "multi_thread")]
async fn telegram_429_is_waited_out_and_a_502_retried_then_the_message_is_sent() {
    let telegram = FakeTelegram::start(BOT_TOKEN).await;
    telegram.add_chat(-1001);
    telegram.fail_next(TelegramFailure::TooManyRequests { retry_after: 1 });
    telegram.fail_next(TelegramFailure::BadGateway);
    let n = notifier(&telegram, BOT_TOKEN, Arc::new(ManualClock::new(0)));
    let started = Instant::now();
    n.assisted_login_needed(upstox("u1"), "Log in by hand.", None, None);
    let messages = telegram.wait_for_messages(1, WAIT).await;
    assert_eq!(messages.len(), 1, "{:?}", telegram.requests());
    assert_eq!(
        telegram.requests().len(),
        3,
        "429, 502, then the one that went through"
    );
    // retry_after = 1 s, then a backoff of at least 1 s after the 502.
    assert!(
        started.elapsed() >= Duration::from_millis(1_900),
        "{:?}",
        started.elapsed()
    );
    assert!(
        messages[0].text.contains("needs a login by hand"),
        "{}",
        messages[0].text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_bot_token_is_logged_without_the_token_and_not_retried() {
    crate::log_capture::install();
    let wrong = "987654321:AAwrong-token_not_logged";
    let telegram = FakeTelegram::start(BOT_TOKEN).await;
    telegram.add_chat(-1001);
    let n = notifier(&telegram, wrong, Arc::new(ManualClock::new(0)));
    n.assisted_login_needed(upstox("u2"), "Log in by hand.", None, None);
    let deadline = Instant::now() + WAIT;
    while !crate::log_capture::text().contains("Telegram refused the bot token")
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = crate::log_capture::text();
    assert!(
        log.contains("Telegram refused the bot token"),
        "no error was logged"
    );
    assert!(
        !log.contains("AAwrong-token_not_logged"),
        "the bot token was logged"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(telegram.requests().len(), 1, "a 401 is not retried");
    assert!(telegram.messages().is_empty());

    // A chat the bot is not in (user-71's own, 555): Telegram's reason is logged, and the
    // request is not retried.
    let n = notifier(&telegram, BOT_TOKEN, Arc::new(ManualClock::new(0)));
    n.assisted_login_needed(upstox("user-71"), "Log in by hand.", None, None);
    let deadline = Instant::now() + WAIT;
    while !crate::log_capture::text().contains("chat not found") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(crate::log_capture::text().contains("Bad Request: chat not found"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(telegram.requests().len(), 2, "a 400 is not retried");
    assert!(telegram.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_approval_is_announced_again_once_before_it_expires() {
    let telegram = FakeTelegram::start(BOT_TOKEN).await;
    telegram.add_chat(-1001);
    let t0 = 1_800_000_000_000;
    let clock = Arc::new(ManualClock::new(t0));
    let n = notifier(&telegram, BOT_TOKEN, clock.clone());
    let approve: url::Url = "https://login.upstox.com/approve/req-1".parse().unwrap();
    // a: an hour to approve; b: 20 minutes; c: approved after a minute.
    assert!(n.approval_requested(upstox("a"), Some(approve.clone()), t0 + 60 * MIN));
    assert!(n.approval_requested(upstox("b"), None, t0 + 20 * MIN));
    assert!(n.approval_requested(upstox("c"), None, t0 + 60 * MIN));
    assert_eq!(
        telegram.wait_for_messages(3, WAIT).await.len(),
        3,
        "announced at request"
    );
    let reminded = |at: i64| -> Vec<String> {
        clock.set(at);
        let mut users: Vec<String> = (n.tick(clock.now_ms()).iter())
            .map(|notice| notice.account.key.user.to_string())
            .collect();
        users.sort();
        users
    };
    assert!(reminded(t0 + MIN).is_empty());
    n.approval_resolved(&AccountKey::parse("c", "upstox").unwrap());
    // b's window opened at once, but the quiet interval (10 min) holds it back.
    assert!(reminded(t0 + 5 * MIN).is_empty());
    assert!(reminded(t0 + 10 * MIN - 1).is_empty());
    assert_eq!(reminded(t0 + 10 * MIN), ["b"]);
    assert!(reminded(t0 + 11 * MIN).is_empty(), "once only");
    assert!(reminded(t0 + 44 * MIN).is_empty());
    assert_eq!(reminded(t0 + 45 * MIN), ["a"], "15 minutes before expiry");
    assert!(reminded(t0 + 50 * MIN).is_empty());
    assert!(reminded(t0 + 60 * MIN).is_empty(), "nothing at expiry");
    assert_eq!(
        n.pending_approvals(),
        0,
        "expired and resolved approvals are forgotten"
    );
    assert!(reminded(t0 + 120 * MIN).is_empty());

    let messages = telegram.wait_for_messages(5, WAIT).await;
    assert_eq!(messages.len(), 5, "3 announcements and 2 reminders");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(telegram.messages().len(), 5, "and nothing more");
    let reminder = messages
        .iter()
        .rfind(|m| m.text.contains("still waits"))
        .unwrap();
    assert!(reminder.text.contains("user a "), "{}", reminder.text);
    assert!(
        reminder
            .text
            .contains("Approve the Upstox token request: tap the link")
    );
    assert!(reminder.text.contains(approve.as_str()));
    assert!(reminder.text.contains("Expires: "), "{}", reminder.text);
}
