//! Loopback fake brokers for tests and benchmarks: [`FakeKite`], [`FakeIifl`] (portal + API),
//! [`FakeXts`], [`FakeAngelOne`], [`FakeDhan`] (auth + API), [`FakeShoonya`] (Noren + OAuth page), axum servers on `127.0.0.1:0` that speak the wire protocols of
//! `shared/protocols/{kite,iifl}.md` (envelopes, cookies, redirects, error bodies, content types).
//!
//! Every fake:
//! - keeps accounts with a configurable behaviour each (happy, and one per failure class);
//! - checks TOTP codes for real (RFC 6238 against the account's secret, on the fake's clock, ±1
//!   step, a step accepted once per account);
//! - issues tokens its verify route accepts (until the broker's expiry rule on the fake's clock);
//! - records what it saw in a [`Recorder`]: requests per route, passwords per user, TOTP uses,
//!   logins and requests in flight, requests per second;
//! - can add latency to every request;
//! - by default ([`Realism::Realistic`]) answers with the incidental habits of real servers
//!   (redirect bodies, chunked and gzip bodies, extra headers and cookies, odd content types; see
//!   [`Realism`]); [`Realism::Ideal`] gives tidy answers.
//!
//! [`FakeTelegram`] is Telegram's Bot API, for the notifier.
//!
//! State sits behind short-lived `std::sync::Mutex`es that are never held across an `.await`.

mod angelone;
mod dhan;
mod fivepaisa;
mod fyers;
mod iifl;
mod kite;
mod kotak_neo;
mod mess;
mod motilal;
mod record;
mod shoonya;
mod telegram;
mod upstox;
mod xts;

use std::sync::Arc;

pub use angelone::{AngelBehaviour, AngelUser, FakeAngelOne};
pub use dhan::{DhanBehaviour, DhanUser, FakeDhan};
pub use fivepaisa::{FakeFivePaisa, FivePaisaBehaviour, FivePaisaUser, TradeBookRefusal};
pub use fyers::{FakeFyers, FyersBehaviour, FyersUser};
pub use iifl::{FakeIifl, IiflBehaviour, IiflTotpAuth, IiflUser};
pub use kite::{FakeKite, KiteBehaviour, KiteUser};
pub use kotak_neo::{FakeKotakNeo, KotakBehaviour, KotakUser};
pub use mess::Realism;
pub use motilal::{
    FakeMotilal, MOTILAL_REGISTERED_IP, MotilalBehaviour, MotilalDialect, MotilalUser,
};
pub use record::{Recorder, TotpUse};
pub use shoonya::{FakeShoonya, ShoonyaBehaviour, ShoonyaUser};
pub use telegram::{FakeTelegram, SentMessage, TelegramFailure};
pub use upstox::{Delivered, FakeUpstox, Tamper, UpstoxBehaviour, UpstoxUser};
pub use xts::{FakeXts, XtsBehaviour, XtsUser};

/// The clock a fake judges TOTP codes and expiry by, in Unix milliseconds.
pub type NowFn = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_now() -> NowFn {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// How a fake starts.
#[derive(Clone)]
pub struct FakeOptions {
    /// The fake's clock (share the daemon's `ManualClock` in tests).
    pub now: NowFn,
    /// Latency added to every request.
    pub latency: std::time::Duration,
    /// Real servers' habits, or tidy answers.
    pub realism: Realism,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            now: system_now(),
            latency: std::time::Duration::ZERO,
            realism: Realism::default(),
        }
    }
}

impl std::fmt::Debug for FakeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOptions")
            .field("latency", &self.latency)
            .field("realism", &self.realism)
            .finish_non_exhaustive()
    }
}

/// A server task; aborted when dropped.
#[derive(Debug)]
struct Server {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(router: axum::Router) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Server {
        url: format!("http://{addr}"),
        task,
    }
}

/// Random URL-safe token of `len` alphanumeric characters.
pub(crate) fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("getrandom");
    bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

pub(crate) fn sha256_hex(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// An unsigned-looking JWT (HS256 header, fake signature) with these claims.
pub(crate) fn fake_jwt(claims: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64(claims.to_string().as_bytes());
    let sig = b64(
        &hex::decode(sha256_hex(&[&header, ".", &payload, &random_token(8)])).unwrap_or_default(),
    );
    format!("{header}.{payload}.{sig}")
}

/// IST time helpers (a fixed +05:30), kept separate from the strategies' own code on purpose.
pub mod ist {
    /// IST offset in milliseconds.
    pub const OFFSET_MS: i64 = 19_800_000;
    const DAY_MS: i64 = 86_400_000;

    /// First instant strictly after `ms` at which IST clocks show `hour:00`.
    pub fn next_at(ms: i64, hour: i64) -> i64 {
        let local = ms + OFFSET_MS;
        let mut t = local - local.rem_euclid(DAY_MS) + hour * 3_600_000;
        if t <= local {
            t += DAY_MS;
        }
        t - OFFSET_MS
    }

    /// `YYYY-MM-DD HH:MM:SS` in IST.
    pub fn format(ms: i64) -> String {
        let local = (ms + OFFSET_MS).div_euclid(1000);
        let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
        // civil_from_days (H. Hinnant).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }

    /// Unix ms of an IST wall time.
    pub fn at(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        (days * 86_400 + hour * 3600 + minute * 60 + second) * 1000 - OFFSET_MS
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trip() {
            let t = super::at(2025, 3, 10, 2, 30, 5);
            assert_eq!(super::format(t), "2025-03-10 02:30:05");
            assert_eq!(super::format(super::next_at(t, 6)), "2025-03-10 06:00:00");
            assert_eq!(
                super::format(super::next_at(super::at(2024, 12, 31, 23, 0, 0), 0)),
                "2025-01-01 00:00:00"
            );
        }
    }
}

/// TOTP checking on the fake's side (RFC 6238, SHA-1, 6 digits, 30 s).
pub mod totp {
    use totp_rs::{Algorithm, Builder, Secret};

    /// The decoded secret of a base32 string (spaces, dashes, lowercase and padding tolerated).
    pub fn secret_bytes(base32: &str) -> Vec<u8> {
        let clean: String = base32
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '='))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        Secret::try_from_base32(&clean)
            .expect("a base32 TOTP secret")
            .as_bytes()
            .to_vec()
    }

    /// The code of `step`.
    pub fn code_at_step(secret: &[u8], step: u64) -> String {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(6)
            .with_step_duration(30)
            .with_secret(secret)
            .build_noncompliant()
            .generate(step * 30)
            .to_string()
    }

    /// The step (current ±1 at `now_ms`) whose code is `code`.
    pub fn matching_step(secret: &[u8], code: &str, now_ms: i64) -> Option<u64> {
        let current = (now_ms / 30_000) as u64;
        [current, current.saturating_sub(1), current + 1]
            .into_iter()
            .find(|s| code_at_step(secret, *s) == code)
    }
}
