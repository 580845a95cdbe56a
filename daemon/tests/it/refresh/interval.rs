//! A broker's minimum interval between two logins of one account (`[brokers.<id>]
//! min_login_interval_secs`, else the strategy's): a refresh asked for inside it answers at once
//! without contacting the broker.

use fake_brokers::{KiteBehaviour, ist};
use tokenbot::refresh::{Refresher, Selection};
use tokenbot::vault::{AccountKey, Outcome, Trigger};

use super::world::*;

fn two_minutes(config: &mut tokenbot::config::Config) {
    config
        .brokers
        .get_mut("kite")
        .unwrap()
        .min_login_interval_secs = Some(120);
}

async fn refresh(
    r: &std::sync::Arc<Refresher>,
    key: &AccountKey,
) -> tokenbot::refresh::AccountResult {
    let selection = Selection::account(key.clone());
    r.refresh(selection, Trigger::Api).await.results.remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_inside_the_interval_with_a_valid_token_is_skipped_without_a_login() {
    let w = world(morning(), two_minutes).await;
    let key = account(&w, 1, KiteBehaviour::Happy, None);
    assert_eq!(refresh(&w.refresher, &key).await.outcome, Outcome::Success);
    assert_eq!(logins(&w), 1);

    w.clock.advance(90_000);
    let second = refresh(&w.refresher, &key).await;
    assert_eq!(second.outcome, Outcome::Skipped, "{second:?}");
    assert_eq!(second.error_class.as_deref(), Some("min_login_interval"));
    assert_eq!(second.attempts, 0);
    assert_eq!(logins(&w), 1, "the broker was not contacted");
    assert!(second.message.unwrap().contains("every 120 s"));

    w.clock.advance(31_000);
    assert_eq!(refresh(&w.refresher, &key).await.outcome, Outcome::Success);
    assert_eq!(logins(&w), 2, "past the interval the login goes ahead");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_inside_the_interval_without_a_valid_token_is_rate_limited_with_its_retry_time() {
    // Logged in at 05:59:10 IST: the Kite token dies at 06:00, inside the two minutes.
    let w = world(ist::at(2026, 11, 23, 5, 59, 10), two_minutes).await;
    let key = account(&w, 1, KiteBehaviour::Happy, None);
    assert_eq!(refresh(&w.refresher, &key).await.outcome, Outcome::Success);

    w.clock.set(ist::at(2026, 11, 23, 6, 0, 30));
    let answer = refresh(&w.refresher, &key).await;
    assert_eq!(answer.outcome, Outcome::Failed, "{answer:?}");
    assert_eq!(answer.error_class.as_deref(), Some("rate_limited"));
    assert_eq!(answer.attempts, 0);
    assert_eq!(
        answer.retry_at.as_deref(),
        Some("2026-11-23T00:31:10.000Z"),
        "two minutes after the last login (05:59:10 IST)"
    );
    assert_eq!(logins(&w), 1, "the broker was not contacted");
    assert_eq!(
        w.vault.attempts(&key, 10).unwrap().len(),
        1,
        "no attempt was made, so none is logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_interval_a_second_refresh_logs_in_again() {
    let w = world(morning(), |_| {}).await;
    let key = account(&w, 1, KiteBehaviour::Happy, None);
    refresh(&w.refresher, &key).await;
    w.clock.advance(40_000);
    assert_eq!(refresh(&w.refresher, &key).await.outcome, Outcome::Success);
    assert_eq!(logins(&w), 2);
}
