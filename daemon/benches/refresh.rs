//! Refresh-all throughput: 2,000 accounts against the fake Kite with 20 ms added to every request,
//! concurrency 32. Prints wall time, the floor (accounts x requests per login x latency /
//! concurrency), their ratio, and peak RSS.
//!
//! cargo bench -p tokenbot --bench refresh [-- ACCOUNTS LATENCY_MS CONCURRENCY]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_brokers::{FakeKite, FakeOptions, KiteUser, ist};
use secrecy::SecretString;
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::{BrokerConfig, Config, PluginsConfig};
use tokenbot::plugins::{CallLimits, PluginEnv, Registry};
use tokenbot::refresh::{Refresher, Selection};
use tokenbot::vault::{
    AccountKey, Credentials, Engine, KeyMaterial, MasterKey, NewAccount, Trigger, Vault,
    VaultOptions,
};

fn totp_secret(n: u32) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..32u32)
        .map(|i| {
            ALPHABET[((n.wrapping_mul(2654435761) >> (i % 27)) as usize + i as usize) % 32] as char
        })
        .collect()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let accounts = *args.first().unwrap_or(&2_000) as u32;
    let latency = Duration::from_millis(*args.get(1).unwrap_or(&20));
    let concurrency = *args.get(2).unwrap_or(&32) as u32;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        // A frozen clock with 20 s left in the TOTP step: no login waits for a fresh step.
        let clock = Arc::new(ManualClock::new(ist::at(2026, 11, 23, 8, 0, 10)));
        let fake_clock = clock.clone();
        let kite = FakeKite::start_with(FakeOptions {
            now: Arc::new(move || fake_clock.now_ms()),
            latency,
            ..Default::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let key = KeyMaterial::Key(MasterKey::from_bytes([3; 32]));
        let vault = Arc::new(
            Vault::create(
                dir.path().join("vault.redb"),
                Engine::Redb,
                &key,
                VaultOptions::default(),
            )
            .unwrap(),
        );
        let mut batch = Vec::new();
        for n in 0..accounts {
            let user = format!("BK{n:05}");
            kite.add_user(KiteUser::new(
                &user,
                &format!("pw-{n}"),
                &format!("key-{n}"),
                &format!("sec-{n}"),
                &totp_secret(n),
            ));
            batch.push(NewAccount {
                key: AccountKey::parse(&format!("user-{n}"), "kite").unwrap(),
                broker_user_id: user,
                credentials: Credentials {
                    password: Some(SecretString::from(format!("pw-{n}"))),
                    api_key: Some(SecretString::from(format!("key-{n}"))),
                    api_secret: Some(SecretString::from(format!("sec-{n}"))),
                    totp_secret: Some(SecretString::from(totp_secret(n))),
                    extra: Default::default(),
                },
                auto_refresh: true,
                managed_externally: false,
            });
        }
        vault.put_accounts(&batch).unwrap();
        let mut config = Config::default();
        config.refresh.concurrency = concurrency;
        config.brokers.insert(
            "kite".into(),
            BrokerConfig {
                urls: kite.base_urls(),
                concurrency: Some(concurrency),
                rate_limit_per_sec: Some(1_000_000.0),
                ..BrokerConfig::default()
            },
        );
        let plugins = Arc::new(Registry::load(&PluginsConfig {
            dir: dir.path().join("plugins"),
            sha256_allowlist: vec![],
        }));
        let services = Arc::new(PluginEnv::new(clock.clone(), CallLimits::default()));
        let refresher = Arc::new(Refresher::new(vault, plugins, services, Arc::new(config)));

        let started = Instant::now();
        let summary = refresher.refresh(Selection::all(), Trigger::Api).await;
        let wall = started.elapsed();

        let requests = kite.recorder().total_requests();
        let per_login = requests as f64 / f64::from(accounts);
        let floor = Duration::from_secs_f64(
            f64::from(accounts) * per_login * latency.as_secs_f64() / f64::from(concurrency),
        );
        println!(
            "refresh-all: {accounts} kite accounts, +{} ms per request, concurrency {concurrency}",
            latency.as_millis()
        );
        println!(
            "outcome          successful {} failed {} skipped {} total {}",
            summary.successful, summary.failed, summary.skipped, summary.total
        );
        println!("requests         {requests} ({per_login:.2} per login)");
        println!(
            "max in flight    {} logins",
            kite.recorder().max_logins_in_flight()
        );
        println!("wall time        {:.3} s", wall.as_secs_f64());
        println!("floor            {:.3} s", floor.as_secs_f64());
        println!(
            "ratio            {:.3}",
            wall.as_secs_f64() / floor.as_secs_f64()
        );
        let stats = refresher.stats();
        println!(
            "mean login       {} ms (floor per login {} ms)",
            stats.avg_execution_ms,
            (per_login * latency.as_secs_f64() * 1000.0).round()
        );
        println!("peak RSS         {:.1} MiB", peak_rss_kib() as f64 / 1024.0);
        assert_eq!(
            summary.successful as u32,
            accounts,
            "{:?}",
            summary.results.iter().find(|r| r.error_class.is_some())
        );
    });
}

/// The daemon's allocator (src/main.rs), so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
