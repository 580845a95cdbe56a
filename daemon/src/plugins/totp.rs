//! TOTP for the `totp` host callback: secret parsing, and the fresh-step and no-reuse rules.
//!
//! Rules (kite.md, TOTP): RFC 6238 with SHA-1, 6 digits, 30 s steps. If fewer than
//! [`MIN_REMAINING_MS`] remain in the current step, wait for the next one. Never hand out a step
//! already handed out for the same account: a broker that saw a code once may reject it, and a
//! rejected code counts towards the account's lockout.

use parking_lot::Mutex;
use std::collections::HashMap;

use totp_rs::{Algorithm, Builder, Secret};
use zeroize::Zeroizing;

use crate::clock::Clock;

/// RFC 6238 step length.
pub const STEP_MS: i64 = 30_000;
/// A code with less validity than this left is not handed out; the next step's is.
pub const MIN_REMAINING_MS: i64 = 5_000;

/// Why a TOTP secret was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TotpSecretError {
    /// Neither base32 nor an `otpauth://` URI with a `secret` parameter.
    #[error("the TOTP secret is neither base32 nor an otpauth:// URI with a secret")]
    Unparseable,
    /// Decoded to nothing useful.
    #[error("the TOTP secret is too short ({0} bytes; at least 10 expected)")]
    TooShort(usize),
    /// An `otpauth://` URI asking for codes other than the brokers' (6 digits, 30 s, SHA1), or
    /// for counter-based codes. The value is a parameter, never the secret.
    #[error(
        "the otpauth:// URI asks for {param}={value}; tokenbot makes the codes Indian brokers use \
         (totp, 6 digits, period 30, SHA1): check that this is the broker's TOTP QR code"
    )]
    Unsupported {
        /// `type`, `digits`, `period` or `algorithm`.
        param: &'static str,
        /// What the URI asked for.
        value: String,
    },
}

/// The `otpauth://` URI's `secret`, once its type and parameters are the brokers' (RFC 6238 as
/// Google Authenticator's key-URI format spells it: the defaults are 6 digits, 30 s, SHA1).
fn otpauth_secret(input: &str) -> Result<Zeroizing<String>, TotpSecretError> {
    let url = url::Url::parse(input).map_err(|_| TotpSecretError::Unparseable)?;
    let kind = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if kind != "totp" {
        return Err(TotpSecretError::Unsupported {
            param: "type",
            value: kind,
        });
    }
    let mut secret = None;
    for (k, v) in url.query_pairs() {
        let k = k.to_ascii_lowercase();
        let supported = match k.as_str() {
            "secret" => {
                secret = Some(Zeroizing::new(v.into_owned()));
                continue;
            }
            "digits" => ("digits", v.trim() == "6"),
            "period" => ("period", v.trim() == "30"),
            "algorithm" => ("algorithm", v.trim().eq_ignore_ascii_case("SHA1")),
            _ => continue,
        };
        if let (param, false) = supported {
            // Upper case: the same URI in either case is refused alike (a QR code's text is
            // case-insensitive but for the secret).
            let value: String = v.trim().chars().take(16).collect();
            let value = value.to_ascii_uppercase();
            return Err(TotpSecretError::Unsupported { param, value });
        }
    }
    secret.ok_or(TotpSecretError::Unparseable)
}

/// Decode a TOTP secret as users paste it: base32 with spaces, dashes, lowercase or `=` padding,
/// or an `otpauth://totp/...?secret=...` URI (a QR code's text), whose `digits`, `period` and
/// `algorithm`, when given, must be the brokers' 6, 30 and SHA1.
pub fn parse_secret(input: &str) -> Result<Zeroizing<Vec<u8>>, TotpSecretError> {
    let input = input.trim();
    let base32: Zeroizing<String> =
        if input.len() >= 10 && input.as_bytes()[..10].eq_ignore_ascii_case(b"otpauth://") {
            otpauth_secret(input)?
        } else {
            Zeroizing::new(input.to_owned())
        };
    let normalised: Zeroizing<String> = Zeroizing::new(
        base32
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '=' | '\t'))
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    );
    if normalised.is_empty() {
        return Err(TotpSecretError::Unparseable);
    }
    let secret =
        Secret::try_from_base32(normalised.as_str()).map_err(|_| TotpSecretError::Unparseable)?;
    let bytes = Zeroizing::new(secret.as_bytes().to_vec());
    if bytes.len() < 10 {
        return Err(TotpSecretError::TooShort(bytes.len()));
    }
    Ok(bytes)
}

/// The 6-digit code of `step` for `secret`.
pub fn code_at_step(secret: &[u8], step: u64) -> Zeroizing<String> {
    let totp = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret)
        .build_noncompliant();
    Zeroizing::new(totp.generate(step * 30).to_string())
}

/// Remembers, per account, the last step handed out. Shared by every login of the process.
#[derive(Debug, Default)]
pub struct StepGuard {
    /// account key -> last step handed out. Entries only grow; one per account.
    last: Mutex<HashMap<String, u64>>,
}

/// A step reserved for an account, and how long to wait before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The step reserved.
    pub step: u64,
    /// Milliseconds until the step starts (0 if current).
    pub wait_ms: u64,
}

impl StepGuard {
    /// Reserve the step whose code to hand out for `account` at `now_ms`: the current one if
    /// enough of it remains and it was never handed out, else the first later one that qualifies.
    /// Reserving before waiting means two concurrent callers never get the same step. A step that
    /// starts more than `max_wait_ms` from now is not reserved (`Err` with its wait): a caller that
    /// cannot wait for it must not push every later login's step further out.
    pub fn reserve(
        &self,
        account: &str,
        now_ms: i64,
        max_wait_ms: u64,
    ) -> Result<Reservation, u64> {
        let mut last = self.last.lock();
        let next = next_step(last.get(account).copied(), now_ms);
        if next.wait_ms > max_wait_ms {
            return Err(next.wait_ms);
        }
        last.insert(account.to_owned(), next.step);
        Ok(next)
    }

    /// How long a login of `account` starting at `now_ms` would wait for its code, reserving
    /// nothing. The refresher waits this out before it sends a password.
    pub fn wait_ms(&self, account: &str, now_ms: i64) -> u64 {
        let last = self.last.lock();
        next_step(last.get(account).copied(), now_ms).wait_ms
    }
}

/// The first step at or after `now_ms` with enough validity left that comes after `used`.
fn next_step(used: Option<u64>, now_ms: i64) -> Reservation {
    let current = (now_ms / STEP_MS) as u64;
    let remaining = STEP_MS - now_ms.rem_euclid(STEP_MS);
    let mut step = if remaining < MIN_REMAINING_MS {
        current + 1
    } else {
        current
    };
    if let Some(used) = used
        && used >= step
    {
        step = used + 1;
    }
    let start_ms = step as i64 * STEP_MS;
    Reservation {
        step,
        wait_ms: (start_ms - now_ms).max(0) as u64,
    }
}

/// A code handed out by [`fresh_code`].
pub struct FreshCode {
    /// Six digits.
    pub code: Zeroizing<String>,
    /// Its step.
    pub step: u64,
    /// Milliseconds of validity left when handed out.
    pub valid_for_ms: u64,
}

impl StepGuard {
    /// Record that `account` may have used codes up to `step` (e.g. by an earlier process, known
    /// from its attempt log): later reservations start after it.
    pub fn mark_used(&self, account: &str, step: u64) {
        let mut last = self.last.lock();
        let entry = last.entry(account.to_owned()).or_insert(step);
        *entry = (*entry).max(step);
    }
}

/// Hand out a code for `account`, waiting on `clock` when the rules require it, but never longer
/// than `max_wait_ms` (then `Err` with the wait that would have been needed, and nothing reserved).
/// Steps are counted on the broker's time: `clock` plus `offset_ms` (its skew, `plugins::skew`).
pub fn fresh_code(
    guard: &StepGuard,
    clock: &dyn Clock,
    offset_ms: i64,
    account: &str,
    secret: &[u8],
    max_wait_ms: u64,
) -> Result<FreshCode, u64> {
    let reservation = guard.reserve(account, clock.now_ms() + offset_ms, max_wait_ms)?;
    if reservation.wait_ms > 0 {
        clock.sleep_ms(reservation.wait_ms);
    }
    let end_ms = (reservation.step as i64 + 1) * STEP_MS;
    Ok(FreshCode {
        code: code_at_step(secret, reservation.step),
        step: reservation.step,
        valid_for_ms: (end_ms - clock.now_ms() - offset_ms).max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn rfc6238_vectors() {
        let secret = parse_secret(RFC_SECRET).unwrap();
        for (t, code) in [
            (59u64, "287082"),
            (1111111109, "081804"),
            (1234567890, "005924"),
            (2000000000, "279037"),
        ] {
            assert_eq!(code_at_step(&secret, t / 30).as_str(), code, "t={t}");
        }
    }

    #[test]
    fn secrets_are_normalised() {
        let plain = parse_secret(RFC_SECRET).unwrap();
        for variant in [
            "gezd gnbv gy3t qojq gezd gnbv gy3t qojq",
            "GEZD-GNBV-GY3T-QOJQ-GEZD-GNBV-GY3T-QOJQ",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====",
            "otpauth://totp/Kite:AB1234?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Kite",
            "OTPAUTH://TOTP/Zerodha%20Kite:AB1234?secret=gezdgnbvgy3tqojqgezdgnbvgy3tqojq\
             &issuer=Zerodha%20Kite&algorithm=sha1&digits=6&period=30",
        ] {
            assert_eq!(*parse_secret(variant).unwrap(), *plain, "{variant}");
        }
    }

    #[test]
    fn an_otpauth_uri_asking_for_other_codes_is_refused_naming_the_parameter_not_the_secret() {
        let uri = |query: &str| {
            format!("otpauth://totp/Kite:AB1234?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&{query}")
        };
        for (query, param, value) in [
            ("period=60", "period", "60"),
            ("digits=8", "digits", "8"),
            ("algorithm=SHA256", "algorithm", "SHA256"),
            ("period=15&digits=6", "period", "15"),
        ] {
            let e = parse_secret(&uri(query)).unwrap_err();
            assert_eq!(
                e,
                TotpSecretError::Unsupported {
                    param,
                    value: value.into()
                },
                "{query}"
            );
            let text = e.to_string();
            assert!(text.contains(&format!("{param}={value}")), "{text}");
            assert!(!text.contains("GEZDGNBV"), "{text}");
        }
        let hotp = "otpauth://hotp/x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&counter=1";
        assert!(matches!(
            parse_secret(hotp),
            Err(TotpSecretError::Unsupported { param: "type", .. })
        ));
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert_eq!(
            parse_secret("not base32 at all!"),
            Err(TotpSecretError::Unparseable)
        );
        assert_eq!(
            parse_secret("otpauth://totp/x?issuer=y"),
            Err(TotpSecretError::Unparseable)
        );
        assert_eq!(parse_secret(""), Err(TotpSecretError::Unparseable));
        assert!(matches!(
            parse_secret("GEZDGNBV"),
            Err(TotpSecretError::TooShort(5))
        ));
        // Found by `daemon/fuzz`: a character across byte 10 made the `otpauth://` check panic.
        assert_eq!(
            parse_secret("GEZDGNBVGé"),
            Err(TotpSecretError::Unparseable)
        );
    }

    #[test]
    fn waits_for_next_step_when_three_seconds_remain() {
        let clock = ManualClock::new(27_000 + 300_000);
        let guard = StepGuard::default();
        let code =
            fresh_code(&guard, &clock, 0, "u/kite", b"12345678901234567890", 60_000).unwrap();
        assert_eq!(code.step, 11);
        assert_eq!(clock.sleeps(), vec![3_000]);
        assert_eq!(code.valid_for_ms, 30_000);
    }

    #[test]
    fn never_hands_out_a_step_twice_for_one_account() {
        let clock = ManualClock::new(1_000_000_000_000);
        let guard = StepGuard::default();
        let mut steps = Vec::new();
        for _ in 0..4 {
            let code =
                fresh_code(&guard, &clock, 0, "u/kite", b"12345678901234567890", 60_000).unwrap();
            steps.push(code.step);
        }
        steps.dedup();
        assert_eq!(steps.len(), 4, "{steps:?}");
        // A step marked as used elsewhere (an earlier process) is skipped too.
        guard.mark_used("w/kite", 33_333_334);
        let reserved = guard.reserve("w/kite", 1_000_000_000_000, 60_000).unwrap();
        assert!(reserved.step > 33_333_334);
        // Another account is independent: its current step is fine.
        let before = clock.sleeps().len();
        fresh_code(&guard, &clock, 0, "v/kite", b"12345678901234567890", 60_000).unwrap();
        assert_eq!(clock.sleeps().len(), before);
    }

    #[test]
    fn a_step_out_of_reach_is_not_reserved() {
        // Step 100 was used; at 3_000_000 + 1 s (step 100 itself) the next is 29 s away.
        let now = 100 * STEP_MS + 1_000;
        let guard = StepGuard::default();
        guard.mark_used("u/kite", 100);
        assert_eq!(guard.wait_ms("u/kite", now), 29_000);
        // A caller that can wait 3 s is refused, repeatedly, without pushing the step out.
        for _ in 0..5 {
            assert_eq!(guard.reserve("u/kite", now, 3_000), Err(29_000));
        }
        assert_eq!(guard.wait_ms("u/kite", now), 29_000);
        let reserved = guard.reserve("u/kite", now, 30_000).unwrap();
        assert_eq!((reserved.step, reserved.wait_ms), (101, 29_000));
        // Once reserved, the wait for the next login moves to step 102.
        assert_eq!(guard.wait_ms("u/kite", now), 59_000);
    }
}
