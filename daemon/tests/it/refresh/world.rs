//! The world of the refresher tests: the fake Kite and the refresher on one manual clock, a
//! temporary vault, and the backoffs the refresher asked for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_brokers::{FakeKite, FakeOptions, KiteBehaviour, KiteUser, ist};
use futures::FutureExt;
use secrecy::SecretString;
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::{BrokerConfig, Config, PluginsConfig};
use tokenbot::plugins::{CallLimits, PluginEnv, Registry};
use tokenbot::refresh::Refresher;
use tokenbot::vault::{
    AccountKey, Argon2Params, Credentials, Engine, KeyMaterial, MasterKey, NewAccount, Vault,
    VaultOptions,
};

pub struct World {
    pub clock: Arc<ManualClock>,
    pub kite: FakeKite,
    pub vault: Arc<Vault>,
    pub refresher: Arc<Refresher>,
    /// Every backoff the refresher asked for.
    pub sleeps: Arc<Mutex<Vec<Duration>>>,
    _dir: tempfile::TempDir,
}

/// 2026-11-23 08:00:10 IST: 20 s left in the TOTP step.
pub fn morning() -> i64 {
    ist::at(2026, 11, 23, 8, 0, 10)
}

pub async fn world(now_ms: i64, tune: impl FnOnce(&mut Config)) -> World {
    let clock = Arc::new(ManualClock::new(now_ms));
    let fake_clock = clock.clone();
    let kite = FakeKite::start_with(FakeOptions {
        now: Arc::new(move || fake_clock.now_ms()),
        ..FakeOptions::default()
    })
    .await;
    let mut config = Config::default();
    config.refresh.backoff_initial_ms = 100;
    config.refresh.backoff_max_ms = 1_000;
    config.brokers.insert(
        "kite".into(),
        BrokerConfig {
            urls: kite.base_urls(),
            rate_limit_per_sec: Some(10_000.0),
            ..BrokerConfig::default()
        },
    );
    tune(&mut config);
    let dir = tempfile::tempdir().unwrap();
    let options = VaultOptions {
        argon2: Argon2Params {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
        ..VaultOptions::default()
    };
    let key = KeyMaterial::Key(MasterKey::from_bytes([7; 32]));
    let vault = Arc::new(
        Vault::create(dir.path().join("vault.redb"), Engine::Redb, &key, options).unwrap(),
    );
    let plugins = Arc::new(Registry::load(&PluginsConfig {
        dir: dir.path().join("plugins"),
        sha256_allowlist: vec![],
    }));
    let services = Arc::new(PluginEnv::new(clock.clone(), CallLimits::default()));
    let sleeps = Arc::new(Mutex::new(Vec::new()));
    let recorded = sleeps.clone();
    let refresher = Arc::new(Refresher::with_sleep(
        vault.clone(),
        plugins,
        services,
        Arc::new(config),
        Arc::new(move |d| {
            recorded.lock().unwrap().push(d);
            async {}.boxed()
        }),
    ));
    World {
        clock,
        kite,
        vault,
        refresher,
        sleeps,
        _dir: dir,
    }
}

pub fn totp_secret(n: u32) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..32u32)
        .map(|i| ALPHABET[((n * 31 + i * 7 + i * i) % 32) as usize] as char)
        .collect()
}

/// Add account `n` at the fake and in the vault; `stored_password` is what the vault holds.
pub fn account(
    w: &World,
    n: u32,
    behaviour: KiteBehaviour,
    stored_password: Option<&str>,
) -> AccountKey {
    let user = format!("ZK{n:04}");
    let password = format!("pw-{n}");
    w.kite.add_user(
        KiteUser::new(
            &user,
            &password,
            &format!("key-{n}"),
            &format!("secret-{n}"),
            &totp_secret(n),
        )
        .with_behaviour(behaviour),
    );
    let key = AccountKey::parse(&format!("user-{n}"), "kite").unwrap();
    let credentials = Credentials {
        password: Some(SecretString::from(
            stored_password.unwrap_or(&password).to_owned(),
        )),
        api_key: Some(SecretString::from(format!("key-{n}"))),
        api_secret: Some(SecretString::from(format!("secret-{n}"))),
        totp_secret: Some(SecretString::from(totp_secret(n))),
        extra: Default::default(),
    };
    w.vault
        .put_account(&NewAccount {
            key: key.clone(),
            broker_user_id: user,
            credentials,
            auto_refresh: true,
            managed_externally: false,
        })
        .unwrap();
    key
}

pub fn logins(w: &World) -> u64 {
    w.kite.recorder().requests("/api/login")
}
