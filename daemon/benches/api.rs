//! HTTP API figures, printed (a program, not a timed test): `GET /api/tokens/:userId` with a valid
//! key (audited, group commit) under 64 keep-alive connections, against a minimal hyper server
//! answering a fixed body of the same size on the same machine as the ceiling; requests/s, p99
//! and the ratio.
//!
//! `cargo bench -p tokenbot --bench api` (needs `wrk`: `apt-get install wrk`).
//! `BENCH_SECS` sets the duration of each run (default 5), `BENCH_ROUNDS` the rounds (default 5).
//!
//! This machine's speed drifts (a VM with neighbours: the ceiling alone measured 80k to 160k
//! req/s from one minute to the next), so one run of each says little: each round runs the
//! ceiling and then the daemon back to back, and the figures are medians over the rounds, the
//! ratio the median of the rounds' ratios.
//!
//! Both servers run in this process on one 2-worker tokio runtime, the daemon's real accept loop
//! (`tokenbot::run`), 1,000 accounts with a valid token each, requests spread over them by a wrk
//! Lua script: each user is read again every few milliseconds, so nearly every read is answered
//! from the API's body cache, as when a backend polls its users' tokens. No tracing subscriber is installed (as with `[log] level = "warn"`).

use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokenbot::AppState;
use tokenbot::config::Config;
use tokenbot::vault::{
    AccountKey, Credentials, Engine, KeyMaterial, MasterKey, NewAccount, NewToken, SecretJson,
    Vault, VaultOptions,
};

const ACCOUNTS: usize = 1_000;
const CONNECTIONS: usize = 64;
const KEY: &str = "bench-service-key-0123456789abcdef";

fn setup_vault(dir: &Path) -> Vault {
    let vault = Vault::create(
        &dir.join("vault.redb"),
        Engine::Redb,
        &KeyMaterial::Key(MasterKey::from_bytes([7; 32])),
        VaultOptions::default(),
    )
    .unwrap();
    let accounts: Vec<NewAccount> = (0..ACCOUNTS)
        .map(|i| NewAccount {
            key: AccountKey::parse(&format!("user-{i:05}"), "kite").unwrap(),
            broker_user_id: format!("AB{i:05}"),
            credentials: Credentials {
                password: Some(SecretString::from(format!("password-{i}"))),
                api_key: Some(SecretString::from(format!("api-key-{i}"))),
                api_secret: Some(SecretString::from(format!("api-secret-{i}"))),
                totp_secret: Some(SecretString::from("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")),
            },
            auto_refresh: true,
            managed_externally: false,
        })
        .collect();
    vault.put_accounts(&accounts).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for account in &accounts {
        vault
            .put_token(
                &account.key,
                &NewToken {
                    // About the size of a Kite access token.
                    access_token: SecretString::from(format!(
                        "{:032}",
                        account.broker_user_id.len()
                    )),
                    issued_at_ms: now - 3_600_000,
                    expires_at_ms: now + 86_400_000,
                    extras: SecretJson::empty(),
                },
            )
            .unwrap();
    }
    vault
}

/// One wrk run against one server.
struct Run {
    rps: f64,
    p99_ms: f64,
    /// CPU time of this process (both servers, only one loaded at a time) per request, in µs:
    /// steadier than requests/s on a machine whose speed drifts.
    cpu_us: f64,
    raw: String,
}

/// Run wrk for `secs` against `url`.
fn wrk(url: &str, script: &Path, secs: u64) -> Run {
    let cpu_before = cpu_secs();
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("running wrk");
    let cpu = cpu_secs() - cpu_before;
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {raw}");
    let rps = raw
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let p99_ms = raw
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| to_ms(v.trim()))
        .unwrap_or(f64::NAN);
    let requests: f64 = raw
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.to_owned())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN);
    Run {
        rps,
        p99_ms,
        cpu_us: cpu * 1e6 / requests,
        raw,
    }
}

/// User and system CPU time of this process so far, in seconds (`/proc/self/stat`, in units of
/// USER_HZ, which Linux fixes at 100 per second).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
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

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("wrk is not installed (apt-get install wrk); nothing measured");
        return;
    }
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(setup_vault(dir.path()));
    let audit_vault = vault.clone();
    let mut config = Config::default();
    config
        .auth
        .api_keys
        .insert("bench".into(), hex::encode(Sha256::digest(KEY.as_bytes())));
    config.plugins.dir = dir.path().join("plugins");
    config.vault.path = dir.path().join("vault.redb");
    let state = Arc::new(AppState::with_vault(config, vault));

    let in_process = in_process_cost(state.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (api_addr, body_len) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(tokenbot::run(state, listener, std::future::pending()));
        let body = reqwest::Client::new()
            .get(format!("http://{addr}/api/tokens/user-00001"))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("access_token"), "{body}");
        (addr, body.len())
    });
    let ceiling_addr = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = axum::body::Bytes::from(vec![b'x'; body_len]);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let body = body.clone();
                        async move {
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(axum::body::Body::from(body))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    });

    let script = dir.path().join("tokens.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.headers[\"X-API-Key\"] = \"{KEY}\"\n\
             counter = 0\n\
             request = function()\n\
               counter = counter + 1\n\
               return wrk.format(\"GET\", string.format(\"/api/tokens/user-%05d\", counter % {ACCOUNTS}))\n\
             end\n"
        ),
    )
    .unwrap();

    println!(
        "GET /api/tokens/:userId, {CONNECTIONS} keep-alive connections, wrk -t2, {rounds} rounds of {secs} s each, body {body_len} bytes, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Warm both up (connection set-up, page cache, allocator).
    wrk(&format!("http://{ceiling_addr}"), &script, 2);
    wrk(&format!("http://{api_addr}"), &script, 2);
    let mut ceiling: Vec<Run> = Vec::new();
    let mut api: Vec<Run> = Vec::new();
    for round in 1..=rounds {
        let c = wrk(&format!("http://{ceiling_addr}"), &script, secs);
        let a = wrk(&format!("http://{api_addr}"), &script, secs);
        for (what, run) in [("ceiling", &c), ("api", &a)] {
            if std::env::var_os("BENCH_VERBOSE").is_some() {
                println!("--- {what}, round {round} ---\n{}", run.raw);
            }
            if let Some(errors) = run
                .raw
                .lines()
                .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
            {
                println!("{what}, round {round}: {}", errors.trim());
            }
        }
        println!(
            "round {round}: ceiling {:>7.0} req/s p99 {:.2} ms {:.1} µs CPU/req; tokenbot {:>7.0} req/s p99 {:.2} ms {:.1} µs CPU/req; ratio {:.2}",
            c.rps,
            c.p99_ms,
            c.cpu_us,
            a.rps,
            a.p99_ms,
            a.cpu_us,
            a.rps / c.rps
        );
        ceiling.push(c);
        api.push(a);
    }
    let ratios: Vec<f64> = api
        .iter()
        .zip(&ceiling)
        .map(|(a, c)| a.rps / c.rps)
        .collect();
    for (what, runs) in [
        ("minimal hyper server (ceiling)", &ceiling),
        ("tokenbot GET /api/tokens/:userId", &api),
    ] {
        println!(
            "{what:<34} {:>8.0} req/s   p99 {:>6.3} ms (worst {:.3})   server CPU {:>5.1} µs/req",
            median(runs.iter().map(|r| r.rps)),
            median(runs.iter().map(|r| r.p99_ms)),
            runs.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
            median(runs.iter().map(|r| r.cpu_us)),
        );
    }
    println!(
        "ratio {:.2} of the ceiling (median of {rounds} rounds; {:.2} to {:.2})",
        median(ratios.iter().copied()),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "router + handler alone (oneshot, no socket, one thread): {in_process:.1} µs per request"
    );
    let audited = audit_vault.audit(usize::MAX).map_or(0, |a| a.len());
    println!("audit entries in the vault afterwards: {audited} (kept: the newest 100,000)");
    drop(runtime);
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Mean time of one token read through the router without a socket, on a current-thread runtime.
fn in_process_cost(state: Arc<AppState>) -> f64 {
    use tower::ServiceExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let app = tokenbot::api::app(state);
        let peer: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let run = |n: usize| {
            let app = app.clone();
            async move {
                let started = std::time::Instant::now();
                for i in 0..n {
                    let mut req = axum::http::Request::builder()
                        .uri(format!("/api/tokens/user-{:05}", i % ACCOUNTS))
                        .header("x-api-key", KEY)
                        .body(axum::body::Body::empty())
                        .unwrap();
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    let response = app.clone().oneshot(req).await.unwrap();
                    assert_eq!(response.status(), 200);
                    let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
                }
                started.elapsed().as_secs_f64() * 1e6 / n as f64
            }
        };
        run(2_000).await;
        run(20_000).await
    })
}

/// The daemon's allocator (src/main.rs), so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
