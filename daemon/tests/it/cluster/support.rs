//! A cluster of `tokenbot serve` processes (the test binary) on one PostgreSQL vault: a schema of
//! the test's own (dropped on exit), `tokenbot init` and `user add` through the CLI, a fake Kite
//! holding the accounts, nodes on `127.0.0.1:0` each with its own work directory and stderr log,
//! and what the tests ask of them over HTTP.
//!
//! The harness is synchronous: the fake Kite (and a test's proxy) run on a runtime of its own, and
//! HTTP calls block on it, so tests can use plain threads and `std::thread::sleep`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fake_brokers::{FakeKite, KiteUser};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tokenbot");
/// The service key every node accepts (`TOKENBOT_API_KEY`).
pub const API_KEY: &str = "cluster-service-key-0123456789";
/// The master key (`ENCRYPTION_KEY`).
const MASTER_KEY: &str = "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b";
/// `[vault] failover_secs` of every node: the bound on a leader's failover.
pub const FAILOVER_SECS: u64 = 3;

/// One Kite account: the platform user, and the fake's account (its credentials).
#[derive(Clone, Debug)]
pub struct Account {
    /// The platform's user id (`GET /api/tokens/{user}`).
    pub user: String,
    /// The fake Kite's account.
    pub kite: KiteUser,
}

/// How a cluster is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Kite accounts added before any node starts (the first leader's catch-up logs them in).
    pub accounts: usize,
    /// `[refresh] concurrency` and `[brokers.kite] concurrency`.
    pub concurrency: u32,
    /// `user add --auto-refresh`: off keeps the leader's catch-up away from the accounts (a
    /// refresh naming the user still logs them in).
    pub auto_refresh: bool,
    /// `[mirror.postgres]` into the vault's schema (table `tokenbot_tokens`).
    pub mirror: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            accounts: 1,
            concurrency: 16,
            auto_refresh: true,
            mirror: false,
        }
    }
}

/// A running `tokenbot serve`.
pub struct Node {
    child: Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// Its stderr, line by line.
    pub log: PathBuf,
}

impl Node {
    /// SIGKILL and reap.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Nodes on one PostgreSQL vault, the fake Kite they log in to, and the schema they share.
pub struct Cluster {
    /// Node `i`, `None` while killed.
    nodes: Vec<Option<Node>>,
    /// Each node's vault URL (the test database's, or a proxy's).
    urls: Vec<String>,
    pub accounts: Vec<Account>,
    pub kite: FakeKite,
    /// The test database.
    pub db_url: String,
    pub schema: String,
    options: Options,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    /// Last: everything above that runs on it is dropped first.
    pub rt: tokio::runtime::Runtime,
}

impl Cluster {
    /// A fresh schema named after `test`, a vault created there by `tokenbot init`, and
    /// `options.accounts` Kite accounts added to it and to a fake Kite. No node runs yet.
    /// `None` (the test is skipped) without a test database.
    pub fn new(test: &str, options: Options) -> Option<Cluster> {
        let db_url = crate::mirror::support::database_url(test)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let schema = format!("tbc_{test}_{}", std::process::id());
        rt.block_on(async {
            let client = crate::mirror::support::connect(&db_url).await;
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
                .unwrap();
        });
        let kite = rt.block_on(FakeKite::start());
        let accounts: Vec<Account> = (0..options.accounts)
            .map(|n| Account {
                user: format!("u{n:03}"),
                kite: KiteUser::new(
                    &format!("HA{n:04}"),
                    &format!("pass-{n}-word"),
                    &format!("kiteapikey{n:04}"),
                    &format!("kite-api-secret-{n:04}"),
                    &totp_secret(n),
                ),
            })
            .collect();
        for account in &accounts {
            kite.add_user(account.kite.clone());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let cluster = Cluster {
            nodes: Vec::new(),
            urls: Vec::new(),
            accounts,
            kite,
            db_url,
            schema,
            options,
            http,
            dir: tempfile::tempdir().unwrap(),
            rt,
        };
        let init = cluster.cli(&["init"], None);
        assert!(
            init.status.success(),
            "tokenbot init: {}",
            output_text(&init)
        );
        let started = Instant::now();
        for account in &cluster.accounts {
            let k = &account.kite;
            let fields = json!({
                "broker_user_id": k.user_id,
                "password": k.password,
                "api_key": k.api_key,
                "api_secret": k.api_secret,
                "totp_secret": k.totp_secret,
            });
            let added = cluster.cli(
                &[
                    "user",
                    "add",
                    &account.user,
                    "--broker",
                    "kite",
                    "--from-json",
                    "-",
                    "--auto-refresh",
                    if cluster.options.auto_refresh {
                        "on"
                    } else {
                        "off"
                    },
                ],
                Some(&fields.to_string()),
            );
            assert!(
                added.status.success(),
                "tokenbot user add {}: {}",
                account.user,
                output_text(&added)
            );
        }
        eprintln!(
            "{test}: init and {} account(s) added in {} ms",
            cluster.accounts.len(),
            started.elapsed().as_millis()
        );
        Some(cluster)
    }

    /// The environment every run of the binary gets (and nothing of the caller's).
    fn env(&self, vault_url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("TOKENBOT_VAULT__ENGINE", "postgres".into()),
            ("TOKENBOT_VAULT_URL", vault_url.into()),
            ("TOKENBOT_VAULT__SCHEMA", self.schema.clone()),
            ("TOKENBOT_VAULT__FAILOVER_SECS", FAILOVER_SECS.to_string()),
            ("ENCRYPTION_KEY", MASTER_KEY.into()),
            ("TOKENBOT_API_KEY", API_KEY.into()),
            ("RUST_BACKTRACE", "1".into()),
        ]
    }

    /// Run the CLI in the cluster's directory on the vault; its output.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .envs(self.env(&self.db_url))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Start `n` nodes on the test database at once; their indexes.
    pub fn start_nodes(&mut self, n: usize) -> Vec<usize> {
        let url = self.db_url.clone();
        let spawned: Vec<_> = (0..n).map(|_| self.spawn(&url)).collect();
        spawned.into_iter().map(|s| self.finish_start(s)).collect()
    }

    /// Start one more node whose vault URL is `vault_url` (e.g. through a proxy); its index.
    pub fn start_node_via(&mut self, vault_url: &str) -> usize {
        let spawned = self.spawn(vault_url);
        self.finish_start(spawned)
    }

    /// Start node `i` again (after [`Cluster::kill`]), with its work directory and vault URL.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let spawned = self.spawn_at(i, &self.urls[i].clone());
        let node = self.wait_listening(spawned);
        self.nodes[i] = Some(node);
    }

    fn spawn(&mut self, vault_url: &str) -> Spawned {
        let i = self.nodes.len();
        self.nodes.push(None);
        self.urls.push(vault_url.to_owned());
        self.spawn_at(i, vault_url)
    }

    fn finish_start(&mut self, spawned: Spawned) -> usize {
        let i = spawned.index;
        let node = self.wait_listening(spawned);
        self.nodes[i] = Some(node);
        i
    }

    /// Spawn `serve` as node `i` in `work/node-i` (its `tokenbot.toml`; stderr to `node-i.N.log`).
    fn spawn_at(&self, i: usize, vault_url: &str) -> Spawned {
        let work = self.dir.path().join(format!("node-{i}"));
        std::fs::create_dir_all(work.join("plugins")).unwrap();
        let urls = self.kite.base_urls();
        let c = self.options.concurrency;
        std::fs::write(
            work.join("tokenbot.toml"),
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n\
                 [refresh]\nconcurrency = {c}\nmax_attempts = 3\nbackoff_initial_ms = 200\n\
                 backoff_max_ms = 2000\nlogin_timeout_secs = 90\n\
                 [brokers.kite]\nweb_url = {:?}\napi_url = {:?}\n\
                 rate_limit_per_sec = 100000.0\nconcurrency = {c}\n\
                 [plugins]\ndir = {:?}\n\
                 [log]\nlevel = \"info,tokenbot=debug\"\nformat = \"json\"\n{}",
                urls["web_url"],
                urls["api_url"],
                work.join("plugins").display().to_string(),
                if self.options.mirror {
                    format!(
                        "[mirror.postgres]\nurl = {:?}\nschema = {:?}\npoll_interval_ms = 100\n",
                        self.db_url, self.schema
                    )
                } else {
                    String::new()
                },
            ),
        )
        .unwrap();
        let run = (0..)
            .find(|n| !work.join(format!("node-{i}.{n}.log")).exists())
            .unwrap();
        let log = work.join(format!("node-{i}.{run}.log"));
        let mut child = Command::new(BIN)
            .arg("serve")
            .current_dir(&work)
            .env_clear()
            .envs(self.env(vault_url))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let log_path = log.clone();
        // Keeps reading to the end, so the node never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&log_path).unwrap());
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
                if let Some(sender) = &tx {
                    let json: Value = serde_json::from_str(&line).unwrap_or_default();
                    if json["fields"]["message"] == "listening"
                        && let Some(addr) = json["fields"]["addr"].as_str()
                    {
                        let _ = sender.send(addr.to_owned());
                        tx = None;
                    }
                }
            }
        });
        Spawned {
            index: i,
            child,
            log,
            listening: rx,
        }
    }

    /// Wait for the node's "listening" line (30 s at most) and a `/health` answer (10 s).
    fn wait_listening(&self, mut spawned: Spawned) -> Node {
        let addr = match spawned.listening.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = spawned.child.kill();
                let status = spawned.child.wait();
                panic!(
                    "node {} did not log \"listening\" within 30 s (exit: {status:?}):\n{}",
                    spawned.index,
                    tail(&spawned.log, 40)
                );
            }
        };
        let node = Node {
            child: spawned.child,
            addr,
            log: spawned.log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.health_of(&node.addr).is_none() {
            assert!(
                Instant::now() < deadline,
                "node {} at {} does not answer /health:\n{}",
                spawned.index,
                node.addr,
                tail(&node.log, 40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    /// SIGKILL node `i` (it stays down until [`Cluster::restart`]).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].take().expect("a running node").kill();
    }

    /// Indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> &str {
        &self.nodes[i].as_ref().expect("a running node").addr
    }

    /// The runtime the fake Kite runs on, for calls from other threads.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }

    /// The HTTP client (cheap to clone; usable from other threads with [`Cluster::handle`]).
    pub fn client(&self) -> reqwest::Client {
        self.http.clone()
    }

    fn health_of(&self, addr: &str) -> Option<(u16, Value)> {
        self.rt.block_on(async {
            let r = self
                .http
                .get(format!("http://{addr}/health"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            let body = r.text().await.ok()?;
            Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
        })
    }

    /// `GET /health` of node `i`: HTTP status and body, `None` when it does not answer.
    pub fn health(&self, i: usize) -> Option<(u16, Value)> {
        self.health_of(self.addr(i))
    }

    /// Node `i`'s `role` in `/health` (`None`: no answer, or no role in it).
    pub fn role(&self, i: usize) -> Option<String> {
        let (_, body) = self.health(i)?;
        body["role"].as_str().map(str::to_owned)
    }

    /// The running nodes that say they lead, as `(node, role)` for every running node.
    pub fn roles(&self) -> Vec<(usize, Option<String>)> {
        self.running()
            .into_iter()
            .map(|i| (i, self.role(i)))
            .collect()
    }

    /// The running nodes whose `/health` says `leader`.
    pub fn leaders(&self) -> Vec<usize> {
        self.roles()
            .into_iter()
            .filter(|(_, role)| role.as_deref() == Some("leader"))
            .map(|(i, _)| i)
            .collect()
    }

    /// Poll (every 50 ms) until exactly one running node says it leads, within `within`; it.
    pub fn wait_for_one_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let leaders = self.leaders();
            if let [leader] = leaders[..] {
                return leader;
            }
            if Instant::now() > deadline {
                panic!(
                    "no single leader within {within:?}: roles {:?}{}",
                    self.roles(),
                    self.logs_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `method path` on node `i` with the service key; HTTP status and JSON body (`Value::String`
    /// when not JSON). Panics when the node does not answer.
    pub fn call(&self, i: usize, method: reqwest::Method, path: &str) -> (u16, Value) {
        let addr = self.addr(i).to_owned();
        call(&self.handle(), &self.http, &addr, method, path)
    }

    /// `GET /api/tokens/{user}` on node `i`: the access token, `None` on 404. Panics on another
    /// answer.
    pub fn token(&self, i: usize, user: &str) -> Option<String> {
        let (status, body) = self.call(i, reqwest::Method::GET, &format!("/api/tokens/{user}"));
        match status {
            200 => Some(
                body["access_token"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no access_token in {body}"))
                    .to_owned(),
            ),
            404 => None,
            _ => panic!("GET /api/tokens/{user} on node {i}: {status} {body}"),
        }
    }

    /// `POST /api/integration/tokens/refresh/{user}` on node `i`: status and summary.
    pub fn refresh(&self, i: usize, user: &str) -> (u16, Value) {
        self.call(
            i,
            reqwest::Method::POST,
            &format!("/api/integration/tokens/refresh/{user}"),
        )
    }

    /// `GET /metrics` of node `i` (text).
    pub fn metrics(&self, i: usize) -> (u16, String) {
        let (status, body) = self.call(i, reqwest::Method::GET, "/metrics");
        let text = match body {
            Value::String(text) => text,
            other => other.to_string(),
        };
        (status, text)
    }

    /// Whether the fake Kite accepts `account`'s token as node `i` serves it now.
    pub fn has_valid_token(&self, i: usize, account: &Account) -> bool {
        self.token(i, &account.user)
            .is_some_and(|t| self.kite.token_is_valid(&account.kite.api_key, &t))
    }

    /// Poll node `i` (every 200 ms, asking again only for the accounts still without one) until
    /// every account has a token the fake accepts (`within` at most).
    pub fn wait_for_valid_tokens(&self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        let mut missing: Vec<&Account> = self.accounts.iter().collect();
        loop {
            missing.retain(|a| !self.has_valid_token(i, a));
            if missing.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let names: Vec<&str> = missing.iter().map(|a| a.user.as_str()).collect();
                panic!(
                    "after {within:?}, node {i} serves no valid token for {} account(s): {:?}{}",
                    names.len(),
                    &names[..names.len().min(10)],
                    self.logs_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last `lines` lines of every node's current log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(node) = node {
                out.push_str(&format!(
                    "\n--- node {i} ({}) {}:\n{}",
                    node.addr,
                    node.log.display(),
                    tail(&node.log, lines)
                ));
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "cluster {}: logs at the failure:{}",
                self.schema,
                self.logs_tail(25)
            );
            // Keep the work directories (every node's whole log) of a failed test.
            if let Ok(spare) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.dir, spare).keep();
                eprintln!("cluster {}: logs kept in {}", self.schema, kept.display());
            }
        }
        for node in self.nodes.drain(..).flatten() {
            node.kill();
        }
        let (url, schema) = (self.db_url.clone(), self.schema.clone());
        self.rt.block_on(async {
            let client = crate::mirror::support::connect(&url).await;
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await;
        });
    }
}

/// A node spawned, not yet listening.
struct Spawned {
    index: usize,
    child: Child,
    log: PathBuf,
    listening: mpsc::Receiver<String>,
}

/// `method path` on `addr` with the service key, blocking on `handle`: HTTP status and JSON body
/// (`Value::String` when not JSON). Panics when the node does not answer.
pub fn call(
    handle: &tokio::runtime::Handle,
    http: &reqwest::Client,
    addr: &str,
    method: reqwest::Method,
    path: &str,
) -> (u16, Value) {
    handle.block_on(async {
        let r = http
            .request(method.clone(), format!("http://{addr}{path}"))
            .header("x-api-key", API_KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

/// A gauge's value in a Prometheus text exposition (its first sample), if present.
pub fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A distinct base32 TOTP secret (32 characters, 20 bytes) per account.
fn totp_secret(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..32)
        .map(|i| ALPHABET[(n * 7 + i * 13 + (n / 32) * i) % 32] as char)
        .collect()
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
