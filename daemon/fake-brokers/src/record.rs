//! What a fake saw, for assertions and benchmark figures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One TOTP code a fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TotpUse {
    /// The code as sent.
    pub code: String,
    /// The step it belongs to (current ±1 on the fake's clock), if any.
    pub step: Option<u64>,
    /// Whether the fake accepted it.
    pub accepted: bool,
}

/// One login of one account: its password step, its last step so far, whether it ended.
#[derive(Debug)]
struct LoginSpan {
    login: String,
    begin: Instant,
    last: Instant,
    ended: bool,
}

/// Counters shared by a fake's routes. Cheap per request: atomics and briefly held mutexes.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    latency_us: AtomicU64,
    routes: Mutex<HashMap<String, u64>>,
    statuses: Mutex<HashMap<(String, u16), u64>>,
    passwords: Mutex<HashMap<String, Vec<String>>>,
    totp: Mutex<HashMap<String, Vec<TotpUse>>>,
    logins: Mutex<HashSet<String>>,
    max_logins: AtomicUsize,
    /// Every login per account (uppercase user id), for [`Recorder::max_concurrent_logins_per_account`].
    spans: Mutex<HashMap<String, Vec<LoginSpan>>>,
    requests_in_flight: AtomicUsize,
    max_requests: AtomicUsize,
    per_second: Mutex<Vec<u64>>,
}

impl Recorder {
    pub(crate) fn new(latency: Duration) -> Recorder {
        Recorder {
            started: Instant::now(),
            latency_us: AtomicU64::new(latency.as_micros() as u64),
            routes: Mutex::default(),
            statuses: Mutex::default(),
            passwords: Mutex::default(),
            totp: Mutex::default(),
            logins: Mutex::default(),
            max_logins: AtomicUsize::new(0),
            spans: Mutex::default(),
            requests_in_flight: AtomicUsize::new(0),
            max_requests: AtomicUsize::new(0),
            per_second: Mutex::default(),
        }
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }

    /// Latency added to every later request.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn request_started(&self, route: &str) {
        *self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route.to_owned())
            .or_default() += 1;
        let second = self.started.elapsed().as_secs() as usize;
        {
            let mut per_second = self.per_second.lock().unwrap_or_else(|e| e.into_inner());
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += 1;
        }
        let now = self.requests_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_requests.fetch_max(now, Ordering::SeqCst);
    }

    pub(crate) fn request_finished(&self, route: &str, status: u16) {
        *self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route.to_owned(), status))
            .or_default() += 1;
        self.requests_in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn password(&self, user: &str, password: &str) {
        self.passwords
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user.to_owned())
            .or_default()
            .push(password.to_owned());
    }

    pub(crate) fn totp(&self, user: &str, used: TotpUse) {
        self.totp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user.to_owned())
            .or_default()
            .push(used);
    }

    /// A login of `user` started (its first request naming the user).
    pub(crate) fn login_begin(&self, user: &str) {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.insert(user.to_owned());
        self.max_logins.fetch_max(logins.len(), Ordering::SeqCst);
    }

    /// A login of `user` ended (token issued, or an error answered).
    pub(crate) fn login_end(&self, user: &str) {
        self.logins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user);
    }

    /// A login of `user` sent its password (its first step), within the login session `login`
    /// (e.g. Kite's `kf_session` cookie: whatever tells two logins of one account apart).
    pub(crate) fn account_login_begin(&self, user: &str, login: &str) {
        let now = Instant::now();
        self.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user.to_ascii_uppercase())
            .or_default()
            .push(LoginSpan {
                login: login.to_owned(),
                begin: now,
                last: now,
                ended: false,
            });
    }

    /// A later step of that login (ignored when no login of `user` in session `login` is open).
    pub(crate) fn account_login_step(&self, user: &str, login: &str) {
        self.touch_span(user, login, false);
    }

    /// That login ended: a token issued, or a failure answered.
    pub(crate) fn account_login_end(&self, user: &str, login: &str) {
        self.touch_span(user, login, true);
    }

    fn touch_span(&self, user: &str, login: &str, end: bool) {
        let now = Instant::now();
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(span) = spans
            .get_mut(&user.to_ascii_uppercase())
            .and_then(|v| v.iter_mut().rev().find(|s| !s.ended && s.login == login))
        {
            span.last = now;
            span.ended = end;
        }
    }

    /// Most logins of one account in flight at once, per account (uppercase user id) that sent a
    /// password. A login is in flight from its password to its end (token issued or failure
    /// answered); one that never ended (abandoned: its client was killed) counts as in flight up
    /// to its last step only, so a login started after it is concurrent with it only if the old
    /// one still made a step afterwards. Judged when asked, over every login since the start (or
    /// [`Recorder::reset`]).
    pub fn concurrent_logins_per_account(&self) -> BTreeMap<String, usize> {
        let spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        spans
            .iter()
            .map(|(user, spans)| {
                // The most intervals sharing one point is reached at some interval's start.
                let most = spans
                    .iter()
                    .map(|a| {
                        spans
                            .iter()
                            .filter(|b| b.begin <= a.begin && a.begin <= b.last)
                            .count()
                    })
                    .max()
                    .unwrap_or(0);
                (user.clone(), most)
            })
            .collect()
    }

    /// The largest of [`Recorder::concurrent_logins_per_account`] (0 before any login): 1 when
    /// no account ever had two logins in flight at once.
    pub fn max_concurrent_logins_per_account(&self) -> usize {
        self.concurrent_logins_per_account()
            .into_values()
            .max()
            .unwrap_or(0)
    }

    /// Passwords `user` sent (each one a login begun), e.g. for "exactly one login".
    pub fn password_posts(&self, user: &str) -> usize {
        self.passwords
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .map_or(0, Vec::len)
    }

    /// Requests seen on `route` (the axum route path, e.g. `/api/login`).
    pub fn requests(&self, route: &str) -> u64 {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    /// Requests per route.
    pub fn requests_by_route(&self) -> BTreeMap<String, u64> {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Requests on `route` answered with HTTP `status` (the handler's status, e.g. 429).
    pub fn requests_with_status(&self, route: &str, status: u16) -> u64 {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(route.to_owned(), status))
            .copied()
            .unwrap_or(0)
    }

    /// Answered requests per route and HTTP status.
    pub fn requests_by_route_and_status(&self) -> BTreeMap<(String, u16), u64> {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// All requests.
    pub fn total_requests(&self) -> u64 {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// Every password `user` sent, in order (IIFL: after decryption).
    pub fn passwords(&self, user: &str) -> Vec<String> {
        self.passwords
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    /// Every TOTP code `user` sent, in order.
    pub fn totp_uses(&self, user: &str) -> Vec<TotpUse> {
        self.totp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    /// Most logins in flight at once (a login runs from the first request naming the user to the
    /// token, or to an error answer; one abandoned without either stays counted until the user's
    /// next login).
    pub fn max_logins_in_flight(&self) -> usize {
        self.max_logins.load(Ordering::SeqCst)
    }

    /// Logins in flight now.
    pub fn logins_in_flight(&self) -> usize {
        self.logins.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Most HTTP requests in flight at once.
    pub fn max_requests_in_flight(&self) -> usize {
        self.max_requests.load(Ordering::SeqCst)
    }

    /// Requests started in each wall-clock second since the fake started.
    pub fn requests_per_second(&self) -> Vec<u64> {
        self.per_second
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forget every count (not the accounts or tokens).
    pub fn reset(&self) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.passwords
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.totp.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.logins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.max_logins.store(0, Ordering::SeqCst);
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.max_requests.store(
            self.requests_in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        self.per_second
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Middleware: count the request under its route, add the latency, track requests in flight.
pub(crate) async fn track(
    axum::extract::State(recorder): axum::extract::State<std::sync::Arc<Recorder>>,
    path: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = path.as_ref().map(|p| p.as_str()).unwrap_or("?");
    recorder.request_started(route);
    let latency = recorder.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = next.run(request).await;
    recorder.request_finished(route, response.status().as_u16());
    response
}
