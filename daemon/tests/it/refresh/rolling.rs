//! Dhan's tokens live 24 h from issue (`Validity::Rolling`): the scheduler replaces one before
//! the market session it would not last through, and keeps one that lasts, against the fake Dhan
//! on one manual clock.

use std::collections::BTreeMap;
use std::sync::Arc;

use fake_brokers::{DhanUser, FakeDhan, FakeOptions, ist};
use secrecy::SecretString;
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::{BrokerConfig, Config, PluginsConfig};
use tokenbot::plugins::{CallLimits, PluginEnv, Registry};
use tokenbot::refresh::Refresher;
use tokenbot::refresh::schedule::Scheduler;
use tokenbot::vault::{
    AccountKey, Credentials, Engine, KeyMaterial, MasterKey, NewAccount, Vault, VaultOptions,
};

const TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const PIN: &str = "739164";
const MINT: &str = "/app/generateAccessToken";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_token_is_replaced_before_the_session_it_would_not_last_through() {
    // Day 1, 08:00:05 IST.
    let start = ist::at(2026, 3, 9, 8, 0, 5);
    let clock = Arc::new(ManualClock::new(start));
    let now = clock.clone();
    let fake = FakeDhan::start_with(FakeOptions {
        now: Arc::new(move || now.now_ms()),
        latency: std::time::Duration::ZERO,
        ..FakeOptions::default()
    })
    .await;
    fake.add_user(DhanUser::new(
        "1000000401",
        PIN,
        TOTP,
        "app-1",
        "app-secret-1",
    ));
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(
        Vault::create(
            dir.path().join("vault.redb"),
            Engine::Redb,
            &KeyMaterial::Key(MasterKey::from_bytes([7; 32])),
            VaultOptions {
                clock: clock.clone(),
                ..VaultOptions::default()
            },
        )
        .unwrap(),
    );
    vault
        .put_account(&NewAccount {
            key: AccountKey::parse("u1", "dhan").unwrap(),
            broker_user_id: "1000000401".into(),
            credentials: Credentials {
                totp_secret: Some(SecretString::from(TOTP)),
                extra: BTreeMap::from([("pin".to_owned(), SecretString::from(PIN))]),
                ..Credentials::default()
            },
            auto_refresh: true,
            managed_externally: false,
        })
        .unwrap();
    let mut config = Config::default();
    config.brokers.insert(
        "dhan".into(),
        BrokerConfig {
            urls: fake.base_urls(),
            rate_limit_per_sec: Some(1_000.0),
            ..BrokerConfig::default()
        },
    );
    let refresher = Arc::new(Refresher::new(
        vault,
        Arc::new(Registry::load(&PluginsConfig {
            dir: dir.path().join("plugins"),
            sha256_allowlist: vec![],
        })),
        Arc::new(PluginEnv::new(clock.clone(), CallLimits::default())),
        Arc::new(config),
    ));
    let mut scheduler = Scheduler::new(refresher, start);
    let mints = || fake.recorder().requests(MINT);

    // Start: no token, so catch-up mints one (valid until 08:00:05 on day 2).
    scheduler.tick(start).await;
    assert_eq!(mints(), 1);
    // The rest of day 1, the day-1 08:00 schedule already past: nothing to do.
    for (h, m) in [(9, 0), (15, 31), (23, 59)] {
        let t = ist::at(2026, 3, 9, h, m, 0);
        clock.set(t);
        scheduler.tick(t).await;
    }
    // Day 2 before 07:15, more than 2 h before the open: still nothing.
    let early = ist::at(2026, 3, 10, 7, 14, 0);
    clock.set(early);
    scheduler.tick(early).await;
    assert_eq!(
        mints(),
        1,
        "the token lasts until 08:00:05, the open is over 2 h away"
    );
    // 07:16: the token would die during the 09:15-15:30 session: replaced once.
    let ahead = ist::at(2026, 3, 10, 7, 16, 0);
    clock.set(ahead);
    scheduler.tick(ahead).await;
    assert_eq!(mints(), 2, "replaced ahead of the session");
    // The 08:00 scheduled run finds a token that lasts through the session: no mint, which
    // would kill the token consumers just read.
    let scheduled = ist::at(2026, 3, 10, 8, 0, 30);
    clock.set(scheduled);
    scheduler.tick(scheduled).await;
    assert_eq!(mints(), 2, "the scheduled run kept the fresh token");
}
