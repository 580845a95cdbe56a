//! Token-read figures of the daemon as shipped, printed (a program, not a timed test):
//! `GET /api/tokens/:userId` with a valid key, answered by the release binary `tokenbot serve`
//! run with the repository's `tokenbot.toml` (so its `[log]` set-up: level `info`, pretty, to
//! stderr), one account with a valid token, under `wrk -t2 -c64` with a Lua script that counts
//! the answers that are not 2xx. The ceiling is a minimal hyper 1.x server (http1, keep-alive,
//! tokio multi-thread) answering a fixed 102-byte JSON body. The same measurement is then taken
//! with `LOG_LEVEL=warn`.
//!
//! `cargo bench -p tokenbot --bench api` (needs `wrk`: `apt-get install wrk`).
//! `BENCH_SECS`: length of each wrk run (default 8). `BENCH_ROUNDS`: tokenbot/ceiling pairs per
//! level (default 2). `BENCH_LEVELS`: the levels, comma-separated (default `info,warn`).
//! `BENCH_BIN`: another `tokenbot` binary to measure (default: the one cargo built).
//!
//! A machine shared with other work drifts from one minute to the next, so the runs alternate
//! (tokenbot, ceiling, tokenbot, ceiling, ...), each figure is printed with the load average, and
//! the ratio is that of the mean requests/s. A run with any non-2xx answer is invalid and left
//! out of the means.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use secrecy::SecretString;
use tokenbot::vault::{
    AccountKey, Credentials, Engine, KeyMaterial, MasterKey, NewAccount, NewToken, SecretJson,
    Vault, VaultOptions,
};

const CONNECTIONS: usize = 64;
const KEY: &str = "bench-service-key-0123456789abcdef";
const USER: &str = "user-00001";
/// The master key of the bench's vault, handed to the daemon as `ENCRYPTION_KEY`.
const MASTER: [u8; 32] = [7; 32];
/// The ceiling's answer: a JSON body of 102 bytes, about the size of a token read's.
const CEILING_BODY: &[u8; 102] = br#"{"user_id":"user-00001","broker":"kite","access_token":"0123456789abcdef0123456789abcdef","live":true}"#;

/// Counts non-2xx answers per wrk thread and prints their sum; `--latency` adds percentiles.
const SCRIPT: &str = r#"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("non2xx") end
  io.write(string.format("non2xx %d\n", n))
end
"#;

/// A vault in `dir` with one account holding a token valid for a day.
fn setup_vault(dir: &Path) {
    let vault = Vault::create(
        dir.join("vault.redb"),
        Engine::Redb,
        &KeyMaterial::Key(MasterKey::from_bytes(MASTER)),
        VaultOptions::default(),
    )
    .unwrap();
    let key = AccountKey::parse(USER, "kite").unwrap();
    let secret = |s: &str| Some(SecretString::from(s.to_owned()));
    vault
        .put_accounts(&[NewAccount {
            key: key.clone(),
            broker_user_id: "AB00001".into(),
            credentials: Credentials {
                password: secret("password"),
                api_key: secret("api-key"),
                api_secret: secret("api-secret"),
                totp_secret: secret("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"),
                extra: Default::default(),
            },
            // No login is due: the daemon only serves reads.
            auto_refresh: false,
            managed_externally: false,
        }])
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    vault
        .put_token(
            &key,
            &NewToken {
                // About the size of a Kite access token.
                access_token: SecretString::from("0123456789abcdef0123456789abcdef"),
                issued_at_ms: now - 3_600_000,
                expires_at_ms: now + 86_400_000,
                extras: SecretJson::empty(),
                served_extras: Default::default(),
            },
        )
        .unwrap();
}

/// A port free now, for the daemon to listen on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tokenbot serve` with the shipped `tokenbot.toml`; `level` set through `LOG_LEVEL` unless it
/// is the file's own. Returns the child once `/health` answers.
fn start_daemon(bin: &Path, dir: &Path, level: Option<&str>) -> (Child, SocketAddr) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tokenbot.toml");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = Command::new(bin);
    command
        .current_dir(dir)
        .arg("--config")
        .arg(&shipped)
        .arg("serve")
        .env_remove("TOKENBOT_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("LOG_LEVEL")
        .env("TOKENBOT_SERVER__LISTEN", addr.to_string())
        .env("TOKENBOT_VAULT__PATH", dir.join("vault.redb"))
        .env("TOKENBOT_PLUGINS__DIR", dir.join("plugins"))
        .env("ENCRYPTION_KEY", hex::encode(MASTER))
        .env("TOKENBOT_API_KEY", KEY)
        .env("JWT_SECRET", "bench-jwt-secret-0123456789abcdefghij")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap());
    if let Some(level) = level {
        command.env("LOG_LEVEL", level);
    }
    let mut child = command.spawn().expect("starting tokenbot serve");
    let started = Instant::now();
    while get(addr, "/health").is_none_or(|(status, _)| status != 200) {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            panic!("tokenbot serve exited ({status}):\n{log}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no /health");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

/// One plain HTTP/1.1 GET with the service key: the status and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The ceiling: hyper 1.x, http1 with keep-alive, on tokio's multi-thread runtime, answering
/// [`CEILING_BODY`] to everything.
fn start_ceiling(runtime: &tokio::runtime::Runtime) -> SocketAddr {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(axum::body::Body::from(axum::body::Bytes::from_static(
                                CEILING_BODY,
                            )))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One wrk run.
struct Run {
    rps: f64,
    p99_ms: f64,
    /// Answers that were not 2xx, and socket errors: any makes the run invalid.
    faults: String,
    /// The load average when the run ended.
    load: String,
}

impl Run {
    fn valid(&self) -> bool {
        self.faults.is_empty()
    }
}

/// `wrk -t2 -c64 -d{secs}s --latency` with [`SCRIPT`] against `url`.
fn wrk(url: &str, script: &Path, secs: u64) -> Run {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s")])
        .args(["--latency", "-H", &format!("X-API-Key: {KEY}"), "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("running wrk");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {raw}");
    let field = |prefix: &str| {
        raw.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    let non2xx: u64 = field("non2xx").and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut faults = Vec::new();
    if non2xx > 0 {
        faults.push(format!("{non2xx} non-2xx answers"));
    }
    if let Some(errors) = field("Socket errors:") {
        faults.push(format!("socket errors: {errors}"));
    }
    Run {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p99_ms: field("99%").map_or(f64::NAN, to_ms),
        faults: faults.join(", "),
        load: load_average(),
    }
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn to_ms(v: &str) -> f64 {
    let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = n.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What to measure, from the environment.
struct Plan {
    bin: PathBuf,
    secs: u64,
    rounds: usize,
    script: PathBuf,
    ceiling: SocketAddr,
}

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("wrk is not installed (apt-get install wrk); nothing measured");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    setup_vault(dir.path());
    let script = dir.path().join("count-non2xx.lua");
    std::fs::write(&script, SCRIPT).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let plan = Plan {
        bin: std::env::var_os("BENCH_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_tokenbot")),
            PathBuf::from,
        ),
        secs: env_or("BENCH_SECS", 8),
        rounds: env_or("BENCH_ROUNDS", 2).max(1),
        script,
        ceiling: start_ceiling(&runtime),
    };
    let levels = std::env::var("BENCH_LEVELS").unwrap_or_else(|_| "info,warn".into());
    println!(
        "GET /api/tokens/{USER}: wrk -t2 -c{CONNECTIONS} -d{}s --latency, {} tokenbot/ceiling pairs per level, {} cores, binary {}",
        plan.secs,
        plan.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        plan.bin.display()
    );
    for level in levels.split(',').map(str::trim) {
        // The shipped file's own level is `info`: that one runs without LOG_LEVEL.
        let set = (level != "info").then_some(level);
        measure(&plan, dir.path(), level, set);
    }
    drop(runtime);
}

/// Start the daemon at `level`, then alternate tokenbot and ceiling runs; print each run, the
/// means and the ratio.
fn measure(plan: &Plan, dir: &Path, level: &str, set: Option<&str>) {
    let (mut child, addr) = start_daemon(&plan.bin, dir, set);
    let path = format!("/api/tokens/{USER}");
    let (status, body) = get(addr, &path).unwrap_or_default();
    assert_eq!(status, 200, "the token read answered {status}: {body}");
    let tokenbot_url = format!("http://{addr}{path}");
    let ceiling_url = format!("http://{}{path}", plan.ceiling);
    // Warm-up: connections, allocator, caches.
    wrk(&tokenbot_url, &plan.script, 2);
    wrk(&ceiling_url, &plan.script, 2);
    let (mut tokenbot, mut ceiling) = (Vec::new(), Vec::new());
    for round in 1..=plan.rounds {
        for (what, url, runs) in [
            ("tokenbot", &tokenbot_url, &mut tokenbot),
            ("ceiling", &ceiling_url, &mut ceiling),
        ] {
            let run = wrk(url, &plan.script, plan.secs);
            println!(
                "[{level}] round {round} {what:<8} {:>8.0} req/s  p99 {:>6.2} ms  load {}{}",
                run.rps,
                run.p99_ms,
                run.load,
                if run.valid() {
                    String::new()
                } else {
                    format!("  INVALID: {}", run.faults)
                }
            );
            runs.push(run);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let mean = |runs: &[Run]| {
        let valid: Vec<f64> = runs.iter().filter(|r| r.valid()).map(|r| r.rps).collect();
        valid.iter().sum::<f64>() / valid.len() as f64
    };
    let (t, c) = (mean(&tokenbot), mean(&ceiling));
    println!(
        "[{level}] mean: tokenbot {t:.0} req/s, ceiling {c:.0} req/s, ratio {:.2} (load {})",
        t / c,
        load_average()
    );
}

/// The daemon's allocator (src/main.rs), for the ceiling too: both answer with the same one.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
