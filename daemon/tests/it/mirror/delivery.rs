//! The Postgres mirror against a real PostgreSQL (`TOKENBOT_TEST_DATABASE_URL`): a refresh-all of
//! 500 accounts through the refresher and the fake Kite reaches the default table, one `NOTIFY`
//! per change; revocations; and a PostgreSQL outage in the middle of it all.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::support::*;
use fake_brokers::{FakeKite, FakeOptions, KiteUser, ist};
use secrecy::SecretString;
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::{BrokerConfig, Config, PluginsConfig};
use tokenbot::mirror::Mirror;
use tokenbot::plugins::{CallLimits, PluginEnv, Registry};
use tokenbot::refresh::{Refresher, Selection};
use tokenbot::vault::{AccountKey, Credentials, NewAccount, Trigger, Vault};

const ACCOUNTS: u32 = 500;

fn totp_secret(n: u32) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..32u32)
        .map(|i| ALPHABET[((n * 31 + i * 7 + i * i) % 32) as usize] as char)
        .collect()
}

/// The fake Kite with `ACCOUNTS` users, the same accounts in a fresh vault, and a refresher.
struct World {
    /// The clock the refresher and the fake mint and judge tokens by.
    clock: Arc<ManualClock>,
    kite: FakeKite,
    vault: Arc<Vault>,
    refresher: Arc<Refresher>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    // 08:00:10 IST: 20 s left in the TOTP step, so no login waits for the next one.
    let clock = Arc::new(ManualClock::new(ist::at(2026, 11, 23, 8, 0, 10)));
    let fake_clock = clock.clone();
    let kite = FakeKite::start_with(FakeOptions {
        now: Arc::new(move || fake_clock.now_ms()),
        ..FakeOptions::default()
    })
    .await;
    let mut config = Config::default();
    config.refresh.concurrency = 32;
    config.brokers.insert(
        "kite".into(),
        BrokerConfig {
            urls: kite.base_urls(),
            rate_limit_per_sec: Some(100_000.0),
            concurrency: Some(32),
            ..BrokerConfig::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let vault = vault(dir.path());
    let mut accounts = Vec::new();
    for n in 0..ACCOUNTS {
        let client = format!("ZK{n:04}");
        let password = format!("pw-{n}");
        kite.add_user(KiteUser::new(
            &client,
            &password,
            &format!("key-{n}"),
            &format!("secret-{n}"),
            &totp_secret(n),
        ));
        accounts.push(NewAccount {
            key: AccountKey::parse(&format!("user-{n}"), "kite").unwrap(),
            broker_user_id: client,
            credentials: Credentials {
                password: Some(SecretString::from(password)),
                api_key: Some(SecretString::from(format!("key-{n}"))),
                api_secret: Some(SecretString::from(format!("secret-{n}"))),
                totp_secret: Some(SecretString::from(totp_secret(n))),
                extra: Default::default(),
            },
            auto_refresh: true,
            managed_externally: false,
        });
    }
    vault.put_accounts(&accounts).unwrap();
    let plugins = Arc::new(Registry::load(&PluginsConfig {
        dir: dir.path().join("plugins"),
        sha256_allowlist: vec![],
    }));
    let services = Arc::new(PluginEnv::new(clock.clone(), CallLimits::default()));
    let refresher = Arc::new(Refresher::new(
        vault.clone(),
        plugins,
        services,
        Arc::new(config),
    ));
    World {
        clock,
        kite,
        vault,
        refresher,
        _dir: dir,
    }
}

async fn backlog_drained(vault: &Arc<Vault>) -> bool {
    let vault = vault.clone();
    tokio::task::spawn_blocking(move || vault.outbox_len().unwrap() == 0)
        .await
        .unwrap()
}

/// The table's active rows as `(user, broker) -> (token, generation)`; revoked rows must have no
/// token.
async fn active_rows(db: &TestDb) -> BTreeMap<(String, String), (String, i64)> {
    let mut out = BTreeMap::new();
    for (key, (token, status, generation)) in db.rows().await {
        match status.as_str() {
            "active" => {
                out.insert(key, (token.expect("an active row has a token"), generation));
            }
            "revoked" => assert_eq!(token, None, "a revoked row keeps no token: {key:?}"),
            other => panic!("unexpected status {other}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_all_of_500_accounts_fills_the_table_with_one_notification_per_change() {
    let Some(url) = database_url("refresh_all_of_500_accounts_fills_the_table...") else {
        return;
    };
    let db = TestDb::new(&url, "delivery").await;
    let w = world().await;
    let listener = Listener::start(&url, &db.schema).await;
    let mirror = Arc::new(Mirror::new(&db.mirror_config(&url), w.vault.clone()));
    let task = mirror.spawn();

    let summary = w.refresher.refresh(Selection::all(), Trigger::Api).await;
    assert_eq!(
        (summary.successful, summary.total),
        (ACCOUNTS as usize, ACCOUNTS as usize),
        "{:?}",
        summary.results.iter().find(|r| r.error_class.is_some())
    );
    // Ten accounts removed afterwards: their rows turn `revoked`, without a token.
    let removed: Vec<AccountKey> = (0..10)
        .map(|n| AccountKey::parse(&format!("user-{}", n * 37), "kite").unwrap())
        .collect();
    for key in &removed {
        assert!(w.vault.delete_account(key).unwrap());
    }
    mirror.wake();
    wait_for("the outbox to drain", || backlog_drained(&w.vault)).await;
    let changes = ACCOUNTS as usize + removed.len();
    wait_for("every notification", || {
        let n = listener.payloads.lock().unwrap().len();
        async move { n >= changes }
    })
    .await;

    // The table holds exactly the vault's valid tokens (valid on the clock that minted them: the
    // test's fixed date is long past on the wall clock).
    let expected = vault_tokens(&w.vault, w.clock.now_ms());
    assert_eq!(expected.len(), ACCOUNTS as usize - removed.len());
    assert_eq!(active_rows(&db).await, expected);
    let rows = db.rows().await;
    assert_eq!(rows.len(), ACCOUNTS as usize);
    for key in &removed {
        let (token, status, _) = &rows[&(key.user.to_string(), "kite".to_owned())];
        assert_eq!((token, status.as_str()), (&None, "revoked"));
    }
    // Every token in the table is one the broker accepts.
    for ((user, _), (token, _)) in expected.iter().take(5) {
        let n: u32 = user.trim_start_matches("user-").parse().unwrap();
        assert!(w.kite.token_is_valid(&format!("key-{n}"), token));
    }

    // One notification per change, carrying ids and generation only.
    let notices = listener.notices();
    assert_eq!(notices.len(), changes);
    let mut generations: Vec<u64> = notices.iter().map(|n| n.generation).collect();
    generations.sort();
    generations.dedup();
    assert_eq!(generations.len(), changes, "no change notified twice");
    for payload in listener.payloads.lock().unwrap().iter() {
        let value: serde_json::Value = serde_json::from_str(payload).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(keys, ["broker", "generation", "user_id"], "{payload}");
        assert!(!payload.contains("tok"), "{payload}");
    }
    // No credential reached PostgreSQL.
    let dump: i64 = db
        .client
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.tokenbot_tokens t WHERE t::text LIKE '%pw-%' \
                 OR t::text LIKE '%secret-%'",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dump, 0);

    let status = mirror.status();
    assert!(status.enabled && status.connected, "{status:?}");
    assert_eq!((status.backlog, status.last_error), (0, None));
    assert_eq!(status.delivered, changes as u64);
    mirror.stop();
    task.await.unwrap();
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_cut_off_during_a_refresh_all_then_back_loses_nothing_and_generations_only_grow() {
    let Some(url) = database_url("postgres_cut_off_during_a_refresh_all...") else {
        return;
    };
    let db = TestDb::new(&url, "outage").await;
    // The table exists beforehand (the mirror then only checks it), with a trigger recording every
    // generation change, so the test sees each row's whole history.
    db.client
        .batch_execute(&format!(
            "SET search_path = {s};
             CREATE TABLE tokenbot_tokens (user_id text NOT NULL, broker text NOT NULL,
               broker_user_id text NOT NULL, access_token text, issued_at timestamptz,
               expires_at timestamptz, status text NOT NULL, generation bigint NOT NULL,
               updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (user_id, broker));
             CREATE TABLE history (user_id text, old_generation bigint, new_generation bigint);
             CREATE FUNCTION {s}.record() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO {s}.history VALUES (NEW.user_id,
                 CASE WHEN TG_OP = 'UPDATE' THEN OLD.generation END, NEW.generation);
               RETURN NEW;
             END $$;
             CREATE TRIGGER record AFTER INSERT OR UPDATE ON tokenbot_tokens
               FOR EACH ROW EXECUTE FUNCTION {s}.record();
             RESET search_path;",
            s = db.schema
        ))
        .await
        .unwrap();
    let w = world().await;
    let proxy = Proxy::start(upstream(&url)).await;
    let listener = Listener::start(&url, &db.schema).await;
    let mut config = db.mirror_config(&proxy.url(&url));
    config.batch_size = 20;
    let mirror = Arc::new(Mirror::new(&config, w.vault.clone()));
    let task = mirror.spawn();

    // The refresh-all runs while the mirror delivers; PostgreSQL goes away part-way through it.
    let refresher = w.refresher.clone();
    let refresh =
        tokio::spawn(async move { refresher.refresh(Selection::all(), Trigger::Api).await });
    wait_for("some rows delivered before the cut", || async {
        db.rows().await.len() >= 20
    })
    .await;
    proxy.cut();
    let summary = refresh.await.unwrap();
    assert_eq!(summary.successful, ACCOUNTS as usize);
    // While it is down, every token changes once more (a second generation for every account).
    let vault = w.vault.clone();
    tokio::task::spawn_blocking(move || {
        for account in vault.list_accounts().unwrap() {
            put_token(&vault, &account.key(), 2);
        }
    })
    .await
    .unwrap();
    wait_for("the outage to show in the status", || {
        let s = mirror.status();
        async move { !s.connected && s.last_error.is_some() && s.backlog >= ACCOUNTS as u64 }
    })
    .await;
    let during = mirror.status();
    assert!(
        !during.last_error.as_deref().unwrap().contains(&url),
        "{during:?}"
    );

    proxy.restore();
    wait_for("the outbox to drain", || backlog_drained(&w.vault)).await;
    let status = mirror.status();
    assert!(
        status.connected && status.last_error.is_none(),
        "{status:?}"
    );

    // Every change arrived: the table holds exactly the vault's (second-round) tokens.
    let expected = vault_tokens(&w.vault, now_ms());
    assert_eq!(expected.len(), ACCOUNTS as usize);
    assert!(expected.iter().all(|((user, broker), (token, _))| *token
        == super::support::token_text(&AccountKey::parse(user, broker).unwrap(), 2)));
    assert_eq!(active_rows(&db).await, expected);
    // Each row's generation only grew.
    let history = db
        .client
        .query(
            &format!(
                "SELECT user_id, old_generation, new_generation FROM {}.history",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert!(history.len() >= 2 * ACCOUNTS as usize, "{}", history.len());
    for row in &history {
        let (old, new): (Option<i64>, i64) = (row.get(1), row.get(2));
        if let Some(old) = old {
            assert!(new > old, "{}: {old} -> {new}", row.get::<_, String>(0));
        }
    }
    // Notifications per account come in growing generations, and none was lost.
    wait_for("every notification", || {
        let n = listener.payloads.lock().unwrap().len();
        async move { n >= 2 * ACCOUNTS as usize }
    })
    .await;
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for notice in listener.notices() {
        let previous = last.insert(notice.user_id.clone(), notice.generation);
        assert!(previous.is_none_or(|p| p < notice.generation), "{notice:?}");
    }
    assert_eq!(
        last.into_iter()
            .map(|(user, generation)| ((user, "kite".to_owned()), generation as i64))
            .collect::<BTreeMap<_, _>>(),
        expected
            .iter()
            .map(|(key, (_, generation))| (key.clone(), *generation))
            .collect::<BTreeMap<_, _>>()
    );
    assert!(proxy.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    mirror.stop();
    task.await.unwrap();
    db.drop_schema().await;
}
