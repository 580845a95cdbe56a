//! Vault figures, printed (a program, not a timed test): opening a vault of 10,000 accounts,
//! reading and decrypting one token, and one durable token write.
//!
//! `cargo bench -p tokenbot --bench vault` (add `--features sled` for the sled engine too).

use std::path::Path;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokenbot::vault::{
    AccountKey, Credentials, Engine, KeyMaterial, MasterKey, NewAccount, NewToken, SecretJson,
    Vault, VaultOptions,
};

const ACCOUNTS: usize = 10_000;
const OPENS: usize = 10;
const READS: usize = 10_000;

fn key() -> KeyMaterial {
    KeyMaterial::Key(MasterKey::from_bytes([7; 32]))
}

fn account(i: usize) -> NewAccount {
    NewAccount {
        key: AccountKey::parse(&format!("user-{i:05}"), "kite").unwrap(),
        broker_user_id: format!("AB{i:05}"),
        credentials: Credentials {
            password: Some(SecretString::from(format!("password-{i}"))),
            api_key: Some(SecretString::from(format!("api-key-{i}"))),
            api_secret: Some(SecretString::from(format!("api-secret-{i}"))),
            totp_secret: Some(SecretString::from("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")),
            extra: Default::default(),
        },
        auto_refresh: true,
        managed_externally: false,
    }
}

fn token(i: usize) -> NewToken {
    NewToken {
        // About the size of a Kite access token.
        access_token: SecretString::from(format!("{i:032}")),
        issued_at_ms: 1_700_000_000_000,
        expires_at_ms: 1_700_086_400_000,
        extras: SecretJson::from_value(&serde_json::json!({"public_token": format!("pt-{i}")})),
        served_extras: Default::default(),
    }
}

struct Stats(Vec<Duration>);

impl Stats {
    fn line(mut self, what: &str) {
        self.0.sort_unstable();
        let n = self.0.len();
        let total: Duration = self.0.iter().sum();
        let pct = |p: usize| self.0[(n * p / 100).min(n - 1)];
        println!(
            "{what:<44} n={n:<6} mean {:>10.3?}  p50 {:>10.3?}  p99 {:>10.3?}  max {:>10.3?}",
            total / n as u32,
            pct(50),
            pct(99),
            self.0[n - 1]
        );
    }
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn bench(engine: Engine, dir: &Path) {
    let path = dir.join(format!("bench.{engine:?}").to_lowercase());
    println!("-- {engine:?}: {ACCOUNTS} accounts, one token each");
    let vault = Vault::create(&path, engine, &key(), VaultOptions::default()).unwrap();
    let accounts: Vec<NewAccount> = (0..ACCOUNTS).map(account).collect();
    let (_, fill) = time(|| vault.put_accounts(&accounts).unwrap());
    println!(
        "{:<44} {fill:.3?}",
        format!("put {ACCOUNTS} accounts (one transaction)")
    );

    // Every token put is one durable transaction (token + outbox record).
    let writes = Stats(
        accounts
            .iter()
            .enumerate()
            .map(|(i, a)| time(|| vault.put_token(&a.key, &token(i)).unwrap()).1)
            .collect(),
    );
    writes.line("durable write of one token (+ outbox record)");
    vault.outbox_ack(u64::MAX).unwrap();
    drop(vault);
    let size: u64 = std::fs::metadata(&path)
        .map(|m| if m.is_file() { m.len() } else { 0 })
        .unwrap_or(0);
    if size > 0 {
        println!(
            "{:<44} {:.1} MiB",
            "file size",
            size as f64 / (1024.0 * 1024.0)
        );
    }

    let opens = Stats(
        (0..OPENS)
            .map(|_| {
                let (vault, took) =
                    time(|| Vault::open(&path, engine, &key(), VaultOptions::default()).unwrap());
                drop(vault);
                took
            })
            .collect(),
    );
    opens.line(&format!("open a vault of {ACCOUNTS} accounts"));

    let vault = Vault::open(&path, engine, &key(), VaultOptions::default()).unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let reads = Stats(
        (0..READS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = &accounts[(x % ACCOUNTS as u64) as usize].key;
                time(|| vault.get_token(key).unwrap().expect("token")).1
            })
            .collect(),
    );
    reads.line("read and decrypt one token");
    let (report, took) = time(|| vault.verify().unwrap());
    assert!(report.is_ok());
    println!("{:<44} {took:.3?}", "verify (decrypt every record)");
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, so keep that run quick.
    if std::env::args().all(|a| a != "--bench") {
        println!("vault bench: run with `cargo bench -p tokenbot --bench vault`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    bench(Engine::Redb, dir.path());
    if cfg!(feature = "sled") {
        bench(Engine::Sled, dir.path());
    }
}

/// The daemon's allocator (src/main.rs), so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
