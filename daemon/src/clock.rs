//! Time as the daemon sees it. Injectable so TOTP, expiry rules and schedules are testable.

use parking_lot::Mutex;
use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};

use futures::future::BoxFuture;

/// A source of time that can also wait.
pub trait Clock: Send + Sync + Debug {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> i64;
    /// Block the calling thread for `ms` milliseconds of this clock's time.
    fn sleep_ms(&self, ms: u64);
    /// Wait `ms` milliseconds of this clock's time without holding a thread.
    fn wait_ms(&self, ms: u64) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(ms)))
    }
}

/// A timezone by IANA name (`Asia/Kolkata`), from the tz database compiled into the binary, so a
/// name means the same offsets on every host (Cargo.toml says why).
pub fn timezone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::db()
        .get(name)
        .map_err(|_| format!("{name:?} is not a timezone name of the IANA tz database"))
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        // Straight from the system clock: chrono's `Utc::now()` also works out the calendar
        // date, which every token read would pay for nothing.
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }

    fn sleep_ms(&self, ms: u64) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// A clock that only moves when told to; sleeping advances it at once and is recorded.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
    sleeps: Mutex<Vec<u64>>,
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock {
            now: AtomicI64::new(now_ms),
            sleeps: Mutex::new(Vec::new()),
        }
    }

    /// Move to `now_ms`.
    pub fn set(&self, now_ms: i64) {
        self.now.store(now_ms, Ordering::SeqCst);
    }

    /// Move forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms as i64, Ordering::SeqCst);
    }

    /// Every sleep requested so far, in milliseconds.
    pub fn sleeps(&self) -> Vec<u64> {
        self.sleeps.lock().clone()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_ms(&self, ms: u64) {
        self.sleeps.lock().push(ms);
        self.advance(ms);
    }

    fn wait_ms(&self, ms: u64) -> BoxFuture<'static, ()> {
        self.sleep_ms(ms);
        Box::pin(std::future::ready(()))
    }
}

/// Unix ms as RFC 3339 UTC with milliseconds, as the API, the CLI and log messages show times.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}
