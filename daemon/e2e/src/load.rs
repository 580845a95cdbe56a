//! Load: many keep-alive connections reading tokens; slowloris: connections that never finish
//! their headers, held while normal requests are served.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, &'static str> {
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
async fn read_token(target: &Target, sender: &mut Sender, user: &str) -> Result<(), String> {
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
    let connected = Arc::new(AtomicUsize::new(0));
    let failed_connects = Arc::new(AtomicUsize::new(0));
    let (start_tx, start_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    // Connection set-up is paced (a burst of thousands of SYNs overflows the listen backlog and
    // measures the kernel, not the daemon); the timed window starts once every one is up.
    let pace = Arc::new(tokio::sync::Semaphore::new(256));
    let connect_started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let target = target.clone();
        let (connected, failed_connects, pace) =
            (connected.clone(), failed_connects.clone(), pace.clone());
        let mut start_rx = start_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut latencies: Vec<u32> = Vec::new();
            let permit = pace.acquire_owned().await.expect("open");
            let mut sender = match connect(target.addr).await {
                Ok(s) => Some(s),
                Err(kind) => {
                    *errors.entry(kind.to_owned()).or_default() += 1;
                    failed_connects.fetch_add(1, Ordering::SeqCst);
                    None
                }
            };
            drop(permit);
            if sender.is_some() {
                connected.fetch_add(1, Ordering::SeqCst);
            }
            let mut rng = Rng::new();
            // Until the window opens, a read every second, not timed: the daemon closes a
            // connection that sends nothing for its header read timeout, and opening 10,000
            // takes longer than that.
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
        }));
    }
    while connected.load(Ordering::SeqCst) + failed_connects.load(Ordering::SeqCst) < connections {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_time = connect_started.elapsed();
    let n_connected = connected.load(Ordering::SeqCst);

    // RSS sampled through the window.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        async move {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(memory_kib(pid).0, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    let window_start = Instant::now();
    let _ = start_tx.send(Some(window_start + duration));
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
    let secs = window_start.elapsed().as_secs_f64();
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.await;
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
        rss_peak_kib: peak.load(Ordering::SeqCst).max(rss_now),
        hwm_kib: hwm,
    }
}

/// What the slowloris phase measured.
pub struct SlowReport {
    pub slow: usize,
    pub window: Duration,
    pub timeout_secs: u64,
    pub opened: u64,
    pub cut: u64,
    pub answered: u64,
    pub lifetimes_ms: Vec<u32>,
    pub still_open_past_limit: u64,
    pub peak_held: usize,
    pub normal_requests: u64,
    pub normal_errors: BTreeMap<String, u64>,
    pub normal_p50_us: u32,
    pub normal_p99_us: u32,
    pub normal_max_us: u32,
}

impl SlowReport {
    /// A slow connection must be cut within the header read timeout plus this.
    const GRACE_MS: u32 = 3_000;

    pub fn pass(&self) -> bool {
        self.normal_errors.is_empty()
            && self.normal_requests > 0
            && self.peak_held >= self.slow
            && self.cut > 0
            && self.still_open_past_limit == 0
            && self.answered == 0
            && self
                .lifetimes_ms
                .iter()
                .all(|l| *l <= self.timeout_secs as u32 * 1000 + Self::GRACE_MS)
    }

    pub fn figures(&self) -> String {
        let mut l = self.lifetimes_ms.clone();
        l.sort_unstable();
        format!(
            "{} slow connections (a header byte every 2 s; {} held at once) for {:.0} s: {} opened, \
             {} cut by the daemon after {:.1} s median / {:.1} s max (header_read_timeout_secs = {}), \
             {} answered, {} outlived the timeout + 3 s; meanwhile {} normal requests: errors {}, \
             p50 {} p99 {} max {}",
            self.slow,
            self.peak_held,
            self.window.as_secs_f64(),
            self.opened,
            self.cut,
            f64::from(percentile(&l, 50.0)) / 1000.0,
            f64::from(l.last().copied().unwrap_or(0)) / 1000.0,
            self.timeout_secs,
            self.answered,
            self.still_open_past_limit,
            self.normal_requests,
            if self.normal_errors.is_empty() {
                "0".to_owned()
            } else {
                format!("{:?}", self.normal_errors)
            },
            ms(self.normal_p50_us),
            ms(self.normal_p99_us),
            ms(self.normal_max_us),
        )
    }
}

/// How one slow connection ended.
enum SlowEnd {
    /// The daemon closed it (or reset it): after this long.
    Cut(Duration),
    /// The daemon sent something back (it must not: the headers never ended).
    Answered,
    /// Still open when the window closed, after this long.
    Open(Duration),
}

/// One slow connection: partial headers, then a byte every 2 s until the daemon closes it or
/// `until` passes.
async fn slow_connection(addr: SocketAddr, user: &str, until: Instant) -> Option<SlowEnd> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let opened = Instant::now();
    let head = format!("GET /api/tokens/{user} HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return Some(SlowEnd::Cut(opened.elapsed()));
    }
    let mut buf = [0u8; 512];
    loop {
        let tick = tokio::time::sleep(Duration::from_secs(2));
        tokio::select! {
            read = stream.read(&mut buf) => {
                return Some(match read {
                    Ok(0) | Err(_) => SlowEnd::Cut(opened.elapsed()),
                    // hyper may answer a timed-out head with 408 before closing: that is a cut.
                    Ok(n) if buf[..n].starts_with(b"HTTP/1.1 408") => SlowEnd::Cut(opened.elapsed()),
                    Ok(_) => SlowEnd::Answered,
                });
            }
            () = tick => {
                if Instant::now() >= until {
                    return Some(SlowEnd::Open(opened.elapsed()));
                }
                if stream.write_all(b"a").await.is_err() {
                    return Some(SlowEnd::Cut(opened.elapsed()));
                }
            }
        }
    }
}

/// `slow` slowloris connections (each re-opened when cut, as an attacker would) held for
/// `window`, while a few clients issue normal token reads, half on fresh connections.
pub async fn slowloris(
    target: &Target,
    slow: usize,
    window: Duration,
    timeout_secs: u64,
) -> SlowReport {
    let until = Instant::now() + window;
    let held = Arc::new(AtomicUsize::new(0));
    let peak_held = Arc::new(AtomicUsize::new(0));
    let pace = Arc::new(tokio::sync::Semaphore::new(128));
    let mut slow_tasks = Vec::with_capacity(slow);
    for i in 0..slow {
        let (target, held, peak_held, pace) = (
            target.clone(),
            held.clone(),
            peak_held.clone(),
            pace.clone(),
        );
        slow_tasks.push(tokio::spawn(async move {
            let user = target.users[i % target.users.len()].clone();
            let mut ends = Vec::new();
            while Instant::now() < until {
                let permit = pace.clone().acquire_owned().await.expect("open");
                let conn = slow_connection(target.addr, &user, until);
                tokio::pin!(conn);
                // Count the connection as held once it is open (give the connect a moment).
                let end = tokio::select! {
                    end = &mut conn => end,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        drop(permit);
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        peak_held.fetch_max(now, Ordering::SeqCst);
                        let end = conn.await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        end
                    }
                };
                match end {
                    Some(e) => ends.push(e),
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            ends
        }));
    }
    // Normal traffic starts once the slow connections are in place.
    let ramp = Instant::now();
    while peak_held.load(Ordering::SeqCst) < slow && ramp.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut normal = Vec::new();
    for worker in 0..8 {
        let target = target.clone();
        normal.push(tokio::spawn(async move {
            let mut rng = Rng::new();
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut kept: Option<Sender> = None;
            let fresh = worker % 2 == 0;
            while Instant::now() < until {
                let user = target.users[rng.below(target.users.len())].clone();
                let t = Instant::now();
                let sender = match kept.take() {
                    Some(s) if !fresh => Ok(s),
                    _ => connect(target.addr).await,
                };
                let result = match sender {
                    Ok(mut s) => {
                        let r = read_token(&target, &mut s, &user).await;
                        if r.is_ok() {
                            kept = Some(s);
                        }
                        r
                    }
                    Err(kind) => Err(kind.to_owned()),
                };
                latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                if let Err(kind) = result {
                    *errors.entry(kind).or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut normal_errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in normal {
        if let Ok((l, e)) = task.await {
            latencies.extend(l);
            for (k, v) in e {
                *normal_errors.entry(k).or_default() += v;
            }
        }
    }
    let mut report = SlowReport {
        slow,
        window,
        timeout_secs,
        opened: 0,
        cut: 0,
        answered: 0,
        lifetimes_ms: Vec::new(),
        still_open_past_limit: 0,
        peak_held: peak_held.load(Ordering::SeqCst),
        normal_requests: latencies.len() as u64,
        normal_errors,
        normal_p50_us: 0,
        normal_p99_us: 0,
        normal_max_us: 0,
    };
    latencies.sort_unstable();
    report.normal_p50_us = percentile(&latencies, 50.0);
    report.normal_p99_us = percentile(&latencies, 99.0);
    report.normal_max_us = latencies.last().copied().unwrap_or(0);
    let limit = Duration::from_millis(timeout_secs * 1000 + u64::from(SlowReport::GRACE_MS));
    for task in slow_tasks {
        for end in task.await.unwrap_or_default() {
            report.opened += 1;
            match end {
                SlowEnd::Cut(d) => {
                    report.cut += 1;
                    report.lifetimes_ms.push(d.as_millis() as u32);
                }
                SlowEnd::Answered => report.answered += 1,
                SlowEnd::Open(d) if d > limit => report.still_open_past_limit += 1,
                SlowEnd::Open(_) => {}
            }
        }
    }
    report
}
