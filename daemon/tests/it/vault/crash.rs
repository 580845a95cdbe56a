//! Crash consistency (after redb's `tests/crash_consistency.rs`): a child process writes accounts
//! and tokens in a loop, printing each committed write, and is SIGKILLed at a random moment. After
//! every kill the vault opens, verifies, and holds every write the child reported as committed.
//!
//! The child is this test binary itself, re-run with `VAULT_CRASH_CHILD` set: the test
//! `crash_child_writer` then writes until it is killed (without the variable it returns at once).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokenbot::vault::{
    AccountKey, Credentials, Engine, KeyMaterial, MasterKey, NewAccount, NewToken, SecretJson,
    Vault, VaultOptions,
};

const CHILD_ENV: &str = "VAULT_CRASH_CHILD";
const ROUNDS: u64 = 20;

fn key() -> KeyMaterial {
    KeyMaterial::Key(MasterKey::from_bytes([0x42; 32]))
}

fn engine_from(name: &str) -> Engine {
    match name {
        "sled" => Engine::Sled,
        _ => Engine::Redb,
    }
}

fn account(id: u64) -> NewAccount {
    NewAccount {
        key: AccountKey::parse(&format!("user{id}"), "kite").unwrap(),
        broker_user_id: format!("B{id}"),
        credentials: Credentials {
            password: Some(SecretString::from(format!("password-{id}"))),
            totp_secret: Some(SecretString::from(format!("totp-{id}"))),
            ..Credentials::default()
        },
        auto_refresh: true,
        managed_externally: false,
    }
}

fn token(id: u64, n: u64) -> NewToken {
    NewToken {
        access_token: SecretString::from(format!("token-{id}-{n}")),
        issued_at_ms: n as i64,
        expires_at_ms: n as i64 + 1,
        extras: SecretJson::empty(),
        served_extras: Default::default(),
    }
}

/// The child: open (or create) the vault and write until killed. Prints `@@ account <id>` after an
/// account commits and `@@ token <id> <n> <generation>` after a token commits.
#[test]
fn crash_child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (engine, rest) = spec.split_once(':').unwrap();
    let (start, path) = rest.split_once(':').unwrap();
    let engine = engine_from(engine);
    let start: u64 = start.parse().unwrap();
    // sled releases its file lock from a background thread after the last handle is dropped, so
    // the parent's verification handle of the previous round may still hold it for a moment.
    // Only that is waited out; any other failure to open fails the test.
    let mut tries = 0;
    let vault = loop {
        match Vault::open_or_create(Path::new(path), engine, &key(), VaultOptions::default()) {
            Err(tokenbot::vault::VaultError::Locked) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => break other.unwrap(),
        }
    };
    // libtest has printed `test crash_child_writer ... ` without a newline: start a fresh line.
    println!("\n@@ open");
    for id in start.. {
        vault.put_account(&account(id)).unwrap();
        println!("@@ account {id}");
        for n in 0..3 {
            let generation = vault.put_token(&account(id).key, &token(id, n)).unwrap();
            println!("@@ token {id} {n} {generation}");
        }
        if id % 5 == 0 {
            vault.outbox_ack(u64::MAX).unwrap();
            println!("@@ acked");
        }
    }
}

/// The child test's name as `--exact` matches it: its module path inside this test binary.
fn child_test_name() -> String {
    let (_crate, module) = module_path!().split_once("::").unwrap();
    format!("{module}::crash_child_writer")
}

/// A small xorshift, seeded from the clock: kill times vary between runs without a `rand` crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn crash_rounds(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("vault.{engine}"));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    eprintln!("seed {seed}");
    // What the child reported as committed: account ids, and per account the last token.
    let mut accounts: Vec<u64> = Vec::new();
    let mut tokens: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for round in 0..ROUNDS {
        let start = round * 100_000;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                child_test_name().as_str(),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{engine}:{start}:{}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(report) = line.strip_prefix("@@ ") else {
                    continue;
                };
                if tx.send(report.to_owned()).is_err() {
                    break;
                }
            }
        });
        // Wait until the child has opened the vault, then kill it 0-300 ms later.
        loop {
            // A liveness guard, not a timing assertion: a child that never opens must not hang CI.
            match rx.recv_timeout(Duration::from_secs(300)) {
                Ok(line) if line == "open" => break,
                Ok(_) => {}
                Err(e) => {
                    let _ = child.kill();
                    let mut stderr = String::new();
                    let _ = child
                        .stderr
                        .take()
                        .map(|mut s| s.read_to_string(&mut stderr));
                    panic!("round {round}: the child did not open the vault ({e}):\n{stderr}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 300));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let mut written = 0;
        for line in rx.try_iter() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["account", id] => {
                    accounts.push(id.parse().unwrap());
                    written += 1;
                }
                ["token", id, n, generation] => {
                    tokens.insert(
                        id.parse().unwrap(),
                        (n.parse().unwrap(), generation.parse().unwrap()),
                    );
                }
                _ => {}
            }
        }
        eprintln!("round {round}: {written} accounts committed before the kill");

        let vault = Vault::open(&path, engine_from(engine), &key(), VaultOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: the vault does not open after a kill: {e}"));
        let report = vault.verify().unwrap();
        assert!(
            report.is_ok(),
            "round {round}: verify failed: {:?}",
            report.failures
        );
        assert!(report.counts["accounts"] >= accounts.len() as u64);
        for id in &accounts {
            let key = account(*id).key;
            let creds = vault
                .credentials(&key)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: committed account {id} is missing"));
            assert_eq!(
                creds.password.unwrap().expose_secret(),
                format!("password-{id}")
            );
        }
        for (id, (n, generation)) in &tokens {
            let t = vault
                .get_token(&account(*id).key)
                .unwrap()
                .unwrap_or_else(|| panic!("token of {id} missing"));
            // The child may have committed a later token without reporting it yet.
            assert!(
                t.generation >= *generation,
                "round {round}: token of {id} went back"
            );
            if t.generation == *generation {
                assert_eq!(t.access_token.expose_secret(), format!("token-{id}-{n}"));
            }
        }
    }
    assert!(!accounts.is_empty(), "no round committed anything");
}

#[test]
fn killed_writer_loses_no_committed_write_redb() {
    crash_rounds("redb");
}

#[cfg(feature = "sled")]
#[test]
fn killed_writer_loses_no_committed_write_sled() {
    crash_rounds("sled");
}
