//! How far each broker's clock is from ours, read from the `Date` header of its responses. TOTP
//! logins fail when the host clock drifts: a broker accepts a code for its own current step (and
//! perhaps one either side), so a host 40 s off sends codes the broker has never heard of, and
//! each refused code counts towards the account's lockout.
//!
//! A `Date` has a resolution of one second and arrives after the network's delay, so one sample
//! says little: the estimate is the median of a broker's last [`SAMPLES`] within [`FRESH_MS`],
//! and needs two. Beyond [`WARN_MS`] it is logged (once per crossing), shown in
//! `/health/detailed`, and the TOTP callback reads the broker's time (ours plus the skew) to
//! choose its step. A skew beyond [`PLAUSIBLE_MS`] is not a drifting clock but a broken server or
//! a cached page: shown, never applied.

use std::collections::{BTreeMap, HashMap, VecDeque};

use parking_lot::Mutex;

/// A skew beyond this (either way) is warned about and corrected for.
pub const WARN_MS: i64 = 5_000;
/// A skew beyond this is taken for a broken `Date`, not a clock: never corrected for.
pub const PLAUSIBLE_MS: i64 = 10 * 60_000;
/// Samples kept per broker.
const SAMPLES: usize = 5;
/// Samples older than this are forgotten.
const FRESH_MS: i64 = 10 * 60_000;

/// One broker's recent samples, and whether its skew was last reported as beyond [`WARN_MS`].
#[derive(Debug, Default)]
struct Broker {
    /// (when observed on our clock, the broker's time minus ours), oldest first.
    samples: VecDeque<(i64, i64)>,
    warned: bool,
}

/// Every broker's clock skew. One per daemon (`PluginEnv::skew`).
#[derive(Debug, Default)]
pub struct ClockSkew {
    brokers: Mutex<HashMap<String, Broker>>,
}

impl ClockSkew {
    /// Record a response of `broker` whose `Date` header is `date`, received at `now_ms`.
    /// An unparseable date is ignored.
    pub fn observe(&self, broker: &str, date: &str, now_ms: i64) {
        let Ok(at) = httpdate::parse_http_date(date.trim()) else {
            return;
        };
        let Ok(since_epoch) = at.duration_since(std::time::UNIX_EPOCH) else {
            return;
        };
        // The header is truncated to its second: its middle is the better guess.
        let theirs = i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX) + 500;
        let mut brokers = self.brokers.lock();
        let entry = brokers.entry(broker.to_owned()).or_default();
        entry
            .samples
            .push_back((now_ms, theirs.saturating_sub(now_ms)));
        while entry.samples.len() > SAMPLES {
            entry.samples.pop_front();
        }
        let skew = estimate(&entry.samples, now_ms);
        let beyond = skew.is_some_and(|s| s.abs() > WARN_MS);
        if beyond != entry.warned {
            entry.warned = beyond;
            match skew {
                Some(ms) if beyond => tracing::warn!(
                    broker,
                    skew_ms = ms,
                    corrected = ms.abs() <= PLAUSIBLE_MS,
                    "the broker's clock (its Date header) is more than 5 s from this host's: TOTP \
                     codes follow the broker's time; check the host's NTP"
                ),
                _ => tracing::info!(broker, "the broker's clock agrees with this host's again"),
            }
        }
    }

    /// The estimated skew of `broker` (its time minus ours, ms) at `now_ms`, if known.
    pub fn skew_ms(&self, broker: &str, now_ms: i64) -> Option<i64> {
        let brokers = self.brokers.lock();
        estimate(&brokers.get(broker)?.samples, now_ms)
    }

    /// What to add to our clock to read `broker`'s, for choosing TOTP steps: the skew when it
    /// is beyond [`WARN_MS`] and plausible, else 0.
    pub fn correction_ms(&self, broker: &str, now_ms: i64) -> i64 {
        self.skew_ms(broker, now_ms)
            .filter(|s| s.abs() > WARN_MS && s.abs() <= PLAUSIBLE_MS)
            .unwrap_or(0)
    }

    /// Every broker's estimated skew at `now_ms`.
    pub fn report(&self, now_ms: i64) -> BTreeMap<String, i64> {
        let brokers = self.brokers.lock();
        brokers
            .iter()
            .filter_map(|(id, b)| Some((id.clone(), estimate(&b.samples, now_ms)?)))
            .collect()
    }
}

/// The median of the samples observed within [`FRESH_MS`] of `now_ms`, if there are two.
fn estimate(samples: &VecDeque<(i64, i64)>, now_ms: i64) -> Option<i64> {
    let mut fresh: Vec<i64> = samples
        .iter()
        .filter(|(at, _)| now_ms - at <= FRESH_MS)
        .map(|(_, skew)| *skew)
        .collect();
    if fresh.len() < 2 {
        return None;
    }
    fresh.sort_unstable();
    Some(fresh[fresh.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Date` of Unix ms `ms`.
    fn date(ms: i64) -> String {
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64))
    }

    const NOW: i64 = 1_765_000_000_000;

    #[test]
    fn two_samples_make_an_estimate_and_the_median_ignores_one_odd_date() {
        let skew = ClockSkew::default();
        skew.observe("kite", &date(NOW + 40_000), NOW);
        assert_eq!(skew.skew_ms("kite", NOW), None, "one sample is not enough");
        skew.observe("kite", &date(NOW + 40_000), NOW + 100);
        let ms = skew.skew_ms("kite", NOW + 100).unwrap();
        assert!((39_000..=40_600).contains(&ms), "{ms}");
        assert_eq!(skew.correction_ms("kite", NOW + 100), ms);
        // A cached page with an old Date among good ones.
        skew.observe("kite", &date(NOW - 3_600_000), NOW + 200);
        let ms = skew.skew_ms("kite", NOW + 200).unwrap();
        assert!((39_000..=40_600).contains(&ms), "{ms}");
        assert_eq!(skew.skew_ms("dhan", NOW), None);
        assert_eq!(skew.correction_ms("dhan", NOW), 0);
    }

    #[test]
    fn small_or_implausible_skews_are_not_corrected_and_old_samples_are_forgotten() {
        let skew = ClockSkew::default();
        for n in 0..2 {
            skew.observe("kite", &date(NOW + 2_000), NOW + n);
            skew.observe("iifl", &date(NOW + 3_600_000), NOW + n);
        }
        assert!(skew.skew_ms("kite", NOW).is_some());
        assert_eq!(skew.correction_ms("kite", NOW), 0, "within 5 s");
        assert!(skew.skew_ms("iifl", NOW).unwrap() > PLAUSIBLE_MS);
        assert_eq!(skew.correction_ms("iifl", NOW), 0, "an hour is no drift");
        assert_eq!(skew.report(NOW).len(), 2);
        assert_eq!(skew.skew_ms("kite", NOW + FRESH_MS + 10), None);
        skew.observe("kite", "not a date", NOW);
    }
}
