//! Load: many keep-alive connections reading tokens. Also the HTTP client both load phases use
//! (`connect`, `read_token`) and the response bodies they keep for the secrets audit.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::daemon::memory_kib;
use crate::stats::{Rng, mib, ms, percentile};

/// Distinct response bodies seen by the load phases (kept for the secrets audit: the same body is
/// served many times, so one copy of each is enough).
#[derive(Default)]
pub struct Bodies {
    seen: Mutex<HashSet<u64>>,
    kept: Mutex<Vec<Bytes>>,
}

impl Bodies {
    pub fn note(&self, status: u16, body: &Bytes) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        status.hash(&mut h);
        body.hash(&mut h);
        if self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(h.finish())
        {
            self.kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(body.clone());
        }
    }

    pub fn all(&self) -> Vec<Bytes> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What a request loop needs.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub key: Arc<str>,
    pub users: Arc<Vec<String>>,
    pub bodies: Arc<Bodies>,
}

pub type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

pub async fn connect(addr: SocketAddr) -> Result<Sender, &'static str> {
    let stream = TcpStream::connect(addr).await.map_err(|_| "connect")?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The kind of a `read_token` error, for counting: its text up to the first `:`.
fn error_kind(error: &str) -> &str {
    error.split(':').next().unwrap_or("")
}

/// One token read on `sender`: Ok on 200 with a body, else what went wrong.
pub async fn read_token(target: &Target, sender: &mut Sender, user: &str) -> Result<(), String> {
    sender.ready().await.map_err(|_| "connection closed")?;
    let request = Request::get(format!("/api/tokens/{user}"))
        .header(hyper::header::HOST, target.addr.to_string())
        .header("x-api-key", &*target.key)
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    target.bodies.note(status, &body);
    if status == 200 && !body.is_empty() {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// What the load phase measured.
pub struct LoadReport {
    pub connections: usize,
    pub connected: usize,
    pub secs: f64,
    pub requests: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub p50_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
    pub connect_time: Duration,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
    pub hwm_kib: u64,
}

impl LoadReport {
    pub fn pass(&self) -> bool {
        self.errors == 0 && self.connected == self.connections && self.requests > 0
    }

    pub fn figures(&self) -> String {
        let kinds = if self.error_kinds.is_empty() {
            String::new()
        } else {
            format!(" {:?}", self.error_kinds)
        };
        format!(
            "{} keep-alive connections ({} connected in {:.1} s) for {:.0} s: {} requests, {:.0} req/s, \
             p50 {} p99 {} max {}, errors {}{kinds}; daemon RSS {} before, peak {} (VmHWM {})",
            self.connections,
            self.connected,
            self.connect_time.as_secs_f64(),
            self.secs,
            self.requests,
            self.requests as f64 / self.secs,
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.max_us),
            self.errors,
            mib(self.rss_before_kib),
            mib(self.rss_peak_kib),
            mib(self.hwm_kib),
        )
    }
}

/// Counts of the connection phase, shared by every connection's task.
#[derive(Default)]
struct Connecting {
    connected: AtomicUsize,
    failed: AtomicUsize,
}

/// What one connection's task measured: its timed latencies and its errors by kind.
type Measured = (Vec<u32>, BTreeMap<String, u64>);

/// `connections` keep-alive connections, one task each, reading random users' tokens for
/// `duration` once all are connected (until then, one untimed read a second each). Any I/O error
/// or non-200 answer is an error (the connection is then replaced).
pub async fn keep_alive(
    target: &Target,
    pid: u32,
    connections: usize,
    duration: Duration,
) -> LoadReport {
    let (rss_before_kib, _) = memory_kib(pid);
    let connecting = Arc::new(Connecting::default());
    let (start_tx, start_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    // Connection set-up is paced (a burst of thousands of SYNs overflows the listen backlog and
    // measures the kernel, not the daemon); the timed window starts once every one is up.
    let pace = Arc::new(tokio::sync::Semaphore::new(256));
    let connect_started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(keep_alive_connection(
                target.clone(),
                connecting.clone(),
                pace.clone(),
                start_rx.clone(),
            ))
        })
        .collect();
    let all_tried =
        || connecting.connected.load(Ordering::SeqCst) + connecting.failed.load(Ordering::SeqCst);
    while all_tried() < connections {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_time = connect_started.elapsed();
    let n_connected = connecting.connected.load(Ordering::SeqCst);

    let sampler = RssSampler::start(pid);
    let window_start = Instant::now();
    let _ = start_tx.send(Some(window_start + duration));
    let (mut latencies, error_kinds) = gather(tasks).await;
    let secs = window_start.elapsed().as_secs_f64();
    let rss_peak_kib = sampler.stop().await;
    let (rss_now, hwm) = memory_kib(pid);
    latencies.sort_unstable();
    let errors = error_kinds.values().sum();
    LoadReport {
        connections,
        connected: n_connected,
        secs,
        requests: latencies.len() as u64,
        errors,
        error_kinds,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        max_us: latencies.last().copied().unwrap_or(0),
        connect_time,
        rss_before_kib,
        rss_peak_kib: rss_peak_kib.max(rss_now),
        hwm_kib: hwm,
    }
}

/// One keep-alive connection: connect (paced), keep it alive until the window opens, then read
/// tokens back to back until the window closes.
async fn keep_alive_connection(
    target: Target,
    connecting: Arc<Connecting>,
    pace: Arc<tokio::sync::Semaphore>,
    mut start_rx: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Measured {
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut latencies: Vec<u32> = Vec::new();
    let permit = pace.acquire_owned().await.expect("open");
    let mut sender = match connect(target.addr).await {
        Ok(s) => Some(s),
        Err(kind) => {
            *errors.entry(kind.to_owned()).or_default() += 1;
            connecting.failed.fetch_add(1, Ordering::SeqCst);
            None
        }
    };
    drop(permit);
    if sender.is_some() {
        connecting.connected.fetch_add(1, Ordering::SeqCst);
    }
    let mut rng = Rng::new();
    // Until the window opens, a read every second, not timed: the daemon closes a connection
    // that sends nothing for its header read timeout, and opening 10,000 takes longer than that.
    let deadline = loop {
        if let Some(at) = *start_rx.borrow_and_update() {
            break at;
        }
        if let Some(s) = sender.as_mut() {
            let user = &target.users[rng.below(target.users.len())];
            if let Err(kind) = read_token(&target, s, user).await {
                *errors
                    .entry(format!("{} (before the window)", error_kind(&kind)))
                    .or_default() += 1;
                sender = None;
            }
        }
        tokio::select! {
            changed = start_rx.changed() => if changed.is_err() {
                return (latencies, errors);
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    while Instant::now() < deadline {
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(target.addr).await {
                Ok(s) => sender.insert(s),
                Err(kind) => {
                    *errors.entry(kind.to_owned()).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let user = &target.users[rng.below(target.users.len())];
        let t = Instant::now();
        let result = read_token(&target, s, user).await;
        latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        if let Err(kind) = result {
            *errors.entry(error_kind(&kind).to_owned()).or_default() += 1;
            sender = None;
        }
    }
    (latencies, errors)
}

/// Every connection's latencies, and the errors of all of them by kind.
async fn gather(tasks: Vec<tokio::task::JoinHandle<Measured>>) -> Measured {
    let mut latencies = Vec::new();
    let mut error_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok((l, e)) => {
                latencies.extend(l);
                for (k, v) in e {
                    *error_kinds.entry(k).or_default() += v;
                }
            }
            Err(_) => *error_kinds.entry("task panicked".into()).or_default() += 1,
        }
    }
    (latencies, error_kinds)
}

/// The daemon's RSS sampled through the window, for its peak.
struct RssSampler {
    peak: Arc<AtomicU64>,
    sampling: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let sampling = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let (peak, sampling) = (peak.clone(), sampling.clone());
            async move {
                while sampling.load(Ordering::SeqCst) {
                    peak.fetch_max(memory_kib(pid).0, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        });
        RssSampler {
            peak,
            sampling,
            task,
        }
    }

    /// Stop sampling; the peak seen, in KiB.
    async fn stop(self) -> u64 {
        self.sampling.store(false, Ordering::SeqCst);
        let _ = self.task.await;
        self.peak.load(Ordering::SeqCst)
    }
}
