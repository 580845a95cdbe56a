//! Slowloris: connections that never finish their headers, held while normal requests are
//! served.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::load::{Sender, Target, connect, read_token};
use crate::stats::{Rng, ms, percentile};

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

/// Connections held open at once, now and at most.
#[derive(Default)]
struct Held {
    now: AtomicUsize,
    peak: AtomicUsize,
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
    let held = Arc::new(Held::default());
    let pace = Arc::new(tokio::sync::Semaphore::new(128));
    let slow_tasks: Vec<_> = (0..slow)
        .map(|i| {
            let user = target.users[i % target.users.len()].clone();
            tokio::spawn(slow_client(
                target.addr,
                user,
                until,
                held.clone(),
                pace.clone(),
            ))
        })
        .collect();
    // Normal traffic starts once the slow connections are in place.
    let ramp = Instant::now();
    while held.peak.load(Ordering::SeqCst) < slow && ramp.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let normal: Vec<_> = (0..8)
        .map(|worker| tokio::spawn(normal_client(target.clone(), worker % 2 == 0, until)))
        .collect();
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
    latencies.sort_unstable();
    let mut report = SlowReport {
        slow,
        window,
        timeout_secs,
        opened: 0,
        cut: 0,
        answered: 0,
        lifetimes_ms: Vec::new(),
        still_open_past_limit: 0,
        peak_held: held.peak.load(Ordering::SeqCst),
        normal_requests: latencies.len() as u64,
        normal_errors,
        normal_p50_us: percentile(&latencies, 50.0),
        normal_p99_us: percentile(&latencies, 99.0),
        normal_max_us: latencies.last().copied().unwrap_or(0),
    };
    for task in slow_tasks {
        for end in task.await.unwrap_or_default() {
            report.count(end);
        }
    }
    report
}

impl SlowReport {
    /// One slow connection's end, in the counts.
    fn count(&mut self, end: SlowEnd) {
        let limit =
            Duration::from_millis(self.timeout_secs * 1000 + u64::from(SlowReport::GRACE_MS));
        self.opened += 1;
        match end {
            SlowEnd::Cut(d) => {
                self.cut += 1;
                self.lifetimes_ms.push(d.as_millis() as u32);
            }
            SlowEnd::Answered => self.answered += 1,
            SlowEnd::Open(d) if d > limit => self.still_open_past_limit += 1,
            SlowEnd::Open(_) => {}
        }
    }
}

/// One attacker's connection, opened again each time the daemon cuts it, until `until`; how each
/// ended.
async fn slow_client(
    addr: SocketAddr,
    user: String,
    until: Instant,
    held: Arc<Held>,
    pace: Arc<tokio::sync::Semaphore>,
) -> Vec<SlowEnd> {
    let mut ends = Vec::new();
    while Instant::now() < until {
        let permit = pace.clone().acquire_owned().await.expect("open");
        let conn = slow_connection(addr, &user, until);
        tokio::pin!(conn);
        // Count the connection as held once it is open (give the connect a moment).
        let end = tokio::select! {
            end = &mut conn => end,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                drop(permit);
                let now = held.now.fetch_add(1, Ordering::SeqCst) + 1;
                held.peak.fetch_max(now, Ordering::SeqCst);
                let end = conn.await;
                held.now.fetch_sub(1, Ordering::SeqCst);
                end
            }
        };
        match end {
            Some(e) => ends.push(e),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    ends
}

/// A normal client reading random users' tokens every 20 ms until `until`, on a fresh connection
/// each time or on one kept alive; its latencies and errors by kind.
async fn normal_client(
    target: Target,
    fresh: bool,
    until: Instant,
) -> (Vec<u32>, BTreeMap<String, u64>) {
    let mut rng = Rng::new();
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut kept: Option<Sender> = None;
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
}
