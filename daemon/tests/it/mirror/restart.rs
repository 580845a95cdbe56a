//! The real `tokenbot` binary with a Postgres mirror (`TOKENBOT_TEST_DATABASE_URL`): SIGKILLed with
//! a backlog and restarted, the backlog is delivered; the URL's password never reaches a log line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::support::*;
use tokenbot::config::VaultConfig;
use tokenbot::vault::{AccountKey, Vault, VaultOptions};

const BIN: &str = env!("CARGO_BIN_EXE_tokenbot");
const ACCOUNTS: usize = 300;
/// Trust authentication accepts any password, so this one is only there to be looked for in logs.
const PASSWORD: &str = "pw-must-never-be-logged-4711";

fn vault_config(dir: &Path) -> VaultConfig {
    VaultConfig {
        path: dir.join("vault.redb"),
        key_file: Some(dir.join("vault.key")),
        ..VaultConfig::default()
    }
}

/// Open the daemon's vault from the library (only while no daemon runs).
fn open_vault(dir: &Path) -> Vault {
    Vault::open_configured(&vault_config(dir), VaultOptions::default(), true)
        .unwrap()
        .0
}

/// Write `tokenbot.toml` with the mirror pointing at `url`.
fn write_config(dir: &Path, url: &str, schema: &str, batch_size: usize) {
    std::fs::write(
        dir.join("tokenbot.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [vault]\npath = {:?}\nkey_file = {:?}\n\
             [plugins]\ndir = {:?}\n\
             [log]\nformat = \"json\"\nlevel = \"info,tokenbot=debug\"\n\
             [mirror.postgres]\nurl = {url:?}\nschema = {schema:?}\nnotify_channel = {schema:?}\n\
             batch_size = {batch_size}\npoll_interval_ms = 20\nbackoff_initial_ms = 20\n\
             backoff_max_ms = 200\nconnect_timeout_secs = 5\n",
            dir.join("vault.redb").display().to_string(),
            dir.join("vault.key").display().to_string(),
            dir.join("plugins").display().to_string(),
        ),
    )
    .unwrap();
}

/// Start `serve`; its address once it listens. Every log line is kept in `logs`.
fn serve(dir: &Path, logs: &Arc<Mutex<Vec<String>>>) -> (Child, String) {
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .env_remove("TOKENBOT_CONFIG")
        .env_remove("ENCRYPTION_KEY")
        .env_remove("PORT")
        .env_remove("DATABASE_URL")
        .args(["serve", "--dev"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        logs.lock().unwrap().push(line.clone());
        let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if json["fields"]["message"] == "listening" {
            break json["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    let logs = logs.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            logs.lock().unwrap().push(line);
        }
    });
    (child, addr)
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn sigterm_and_wait(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

/// A URL to a port nothing listens on.
fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/test")
}

/// `url` with `postgres:PASSWORD@` as its credentials.
fn with_password(url: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_password(Some(PASSWORD)).unwrap();
    parsed.to_string()
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkilled_with_a_backlog_and_restarted_the_daemon_delivers_it() {
    let Some(url) = database_url("sigkilled_with_a_backlog_and_restarted...") else {
        return;
    };
    let db = TestDb::new(&url, "restart").await;
    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));

    // Provisioned through the library before the daemon starts: ACCOUNTS accounts with a token
    // each, so ACCOUNTS outbox records wait.
    let keys: Vec<AccountKey> = {
        let vault = open_vault(dir.path());
        let keys: Vec<AccountKey> = (0..ACCOUNTS)
            .map(|n| add_account(&vault, &format!("u{n}"), "kite"))
            .collect();
        for key in &keys {
            put_token(&vault, key, 1);
        }
        assert_eq!(vault.outbox_len().unwrap(), ACCOUNTS as u64);
        keys
    };

    // 1. PostgreSQL unreachable: the daemon serves, holds the backlog, and is SIGKILLed.
    write_config(dir.path(), &closed_port_url(), &db.schema, 100);
    let (mut child, addr) = serve(dir.path(), &logs);
    assert_eq!(get(&addr, "/health").await.0, 200);
    wait_for("a failed connection attempt in the log", || {
        let seen = logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("mirror: delivery held back"));
        async move { seen }
    })
    .await;
    sigkill(&mut child);
    {
        let vault = open_vault(dir.path());
        assert_eq!(vault.outbox_len().unwrap(), ACCOUNTS as u64);
        // More changes while no daemon runs: a second token for the first 50 accounts.
        for key in &keys[..50] {
            put_token(&vault, key, 2);
        }
    }

    // 2. PostgreSQL reachable, one record per transaction: SIGKILLed as soon as delivery is under
    // way (wherever it has got to by then).
    write_config(dir.path(), &with_password(&url), &db.schema, 1);
    let (mut child, _) = serve(dir.path(), &logs);
    wait_for("delivery under way", || async {
        !db.rows().await.is_empty()
    })
    .await;
    sigkill(&mut child);
    let delivered_before_restart = db.rows().await.len();
    {
        let vault = open_vault(dir.path());
        let waiting = vault.outbox_len().unwrap() as usize;
        eprintln!(
            "killed with {delivered_before_restart} rows delivered and {waiting} records waiting"
        );
        // Nothing acknowledged was lost: every account is in the table or still in the outbox.
        let mut pending: std::collections::BTreeSet<String> = vault
            .outbox_peek(usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.user.to_string())
            .collect();
        pending.extend(db.rows().await.into_keys().map(|(user, _)| user));
        assert_eq!(pending.len(), ACCOUNTS);
    }

    // 3. Restarted: everything arrives, and a clean stop leaves nothing behind.
    let (mut child, _) = serve(dir.path(), &logs);
    let expected = {
        // Read through a copy: the daemon holds the vault file.
        wait_for("the table to match", || async {
            let rows = db.rows().await;
            rows.len() == ACCOUNTS
                && keys[..50].iter().all(|k| {
                    rows[&(k.user.to_string(), "kite".to_owned())].0.as_deref()
                        == Some(token_text(k, 2).as_str())
                })
        })
        .await;
        sigterm_and_wait(&mut child);
        vault_tokens(&open_vault(dir.path()), now_ms())
    };
    let rows = db.rows().await;
    let actual: std::collections::BTreeMap<_, _> = rows
        .into_iter()
        .map(|(key, (token, status, generation))| {
            assert_eq!(status, "active");
            (key, (token.unwrap(), generation))
        })
        .collect();
    assert_eq!(actual, expected);
    assert_eq!(open_vault(dir.path()).outbox_len().unwrap(), 0);

    // The password never reached a log line; the target did, as host:port/db.
    let logs = logs.lock().unwrap().clone();
    assert!(!logs.iter().any(|l| l.contains(PASSWORD)));
    assert!(
        logs.iter()
            .any(|l| l.contains("mirror: connected") && l.contains("127.0.0.1:5432/test")),
        "{logs:#?}"
    );
    db.drop_schema().await;
}
