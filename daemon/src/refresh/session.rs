//! The market session a rolling token must last through. Tokens that expire a fixed time after
//! issue (Dhan: 24 h) have no time of day to schedule after, so they are replaced when they would
//! die during the next session: by catch-up once that session opens within
//! `[refresh] rolling_refresh_ahead_secs`, and by the broker's scheduled run at any time. Every
//! day has a session (no holiday calendar): a weekend login costs one mint and keeps the rule
//! simple.

use std::sync::Arc;

use chrono::{NaiveTime, Timelike};
use jiff::civil::{Date, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use tokio::sync::watch;

use super::{Named, RefreshSummary, Refresher, Selection};
use crate::config::{ConfigError, RefreshConfig};
use crate::vault::{AccountKey, Trigger, VaultError, blocking};

/// `[refresh] session_open`, `session_close`, `session_timezone`, `rolling_refresh_ahead_secs`.
#[derive(Debug, Clone)]
pub struct MarketSession {
    open: Time,
    close: Time,
    tz: TimeZone,
    ahead_ms: i64,
}

fn parse_time(key: &str, value: &str) -> Result<Time, ConfigError> {
    let time = NaiveTime::parse_from_str(value, "%H:%M").map_err(|e| {
        ConfigError::invalid(format!("refresh.{key}"), value, format!("{e} (HH:MM)"))
    })?;
    // Hours and minutes of a parsed time: both fit.
    Ok(jiff::civil::time(
        time.hour() as i8,
        time.minute() as i8,
        0,
        0,
    ))
}

impl MarketSession {
    /// The session of `config`; refused at start with the key when a value does not parse or
    /// the session closes before it opens.
    pub fn from_config(config: &RefreshConfig) -> Result<MarketSession, ConfigError> {
        let open = parse_time("session_open", &config.session_open)?;
        let close = parse_time("session_close", &config.session_close)?;
        if close <= open {
            return Err(ConfigError::invalid(
                "refresh.session_close",
                &config.session_close,
                format!("must be later than session_open ({})", config.session_open),
            ));
        }
        let tz = crate::clock::timezone(&config.session_timezone).map_err(|e| {
            ConfigError::invalid("refresh.session_timezone", &config.session_timezone, e)
        })?;
        let ahead_ms = i64::try_from(config.rolling_refresh_ahead_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        Ok(MarketSession {
            open,
            close,
            tz,
            ahead_ms,
        })
    }

    /// The instant of a wall-clock time on `date`: the earlier one where clocks were set back,
    /// none (`i64::MAX`) in a gap where they were set forward.
    fn at(&self, date: Date, time: Time) -> i64 {
        let local = self.tz.to_ambiguous_timestamp(date.to_datetime(time));
        match local.offset() {
            AmbiguousOffset::Gap { .. } => i64::MAX,
            _ => local.earlier().map_or(i64::MAX, |t| t.as_millisecond()),
        }
    }

    /// Open and close (Unix ms) of the session in progress at `now_ms`, else of the next one.
    pub fn current_or_next(&self, now_ms: i64) -> (i64, i64) {
        let Ok(now) = jiff::Timestamp::from_millisecond(now_ms) else {
            return (i64::MAX, i64::MAX);
        };
        let today = self.tz.to_datetime(now).date();
        let close = self.at(today, self.close);
        let day = if now_ms < close {
            today
        } else {
            today.tomorrow().unwrap_or(today)
        };
        (self.at(day, self.open), self.at(day, self.close))
    }

    /// Whether a token expiring at `expires_at_ms` stays valid until the close of the session in
    /// progress at `now_ms`, or of the next one.
    pub fn lasts_through(&self, now_ms: i64, expires_at_ms: i64) -> bool {
        expires_at_ms >= self.current_or_next(now_ms).1
    }

    /// Whether catch-up replaces a rolling token expiring at `expires_at_ms` at `now_ms`: it has
    /// expired, or it would die during a session that opens within the lead time.
    pub fn due(&self, now_ms: i64, expires_at_ms: i64) -> bool {
        let (open, _) = self.current_or_next(now_ms);
        expires_at_ms <= now_ms
            || (now_ms >= open.saturating_sub(self.ahead_ms)
                && !self.lasts_through(now_ms, expires_at_ms))
    }
}

impl Refresher {
    /// The configured market session (checked at start, so a failure here falls back to the
    /// defaults rather than stopping the scheduler).
    pub(super) fn session(&self) -> MarketSession {
        MarketSession::from_config(&self.config.refresh).unwrap_or_else(|_| {
            MarketSession::from_config(&RefreshConfig::default()).expect("defaults parse")
        })
    }

    /// A rolling-validity broker's scheduled run: log in the selected accounts whose token is
    /// missing or would not last through the next session; the others are not counted.
    pub(super) async fn refresh_rolling(
        self: &Arc<Self>,
        selection: Selection,
        now_ms: i64,
    ) -> RefreshSummary {
        let keys = match self.select(&selection).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::error!(error = %e, "cannot list accounts");
                return RefreshSummary::default();
            }
        };
        let (vault, session) = (self.vault.clone(), self.session());
        let due = blocking(move || -> Result<Vec<AccountKey>, VaultError> {
            let mut due = Vec::new();
            for key in keys {
                let fresh = (vault.get_token(&key)?)
                    .is_some_and(|t| session.lasts_through(now_ms, t.expires_at_ms));
                if !fresh {
                    due.push(key);
                }
            }
            Ok(due)
        })
        .await;
        match due {
            Ok(keys) => {
                let progress = watch::Sender::default();
                let summary = self
                    .refresh_keys_observed(keys, Trigger::Schedule, Named::No, &progress)
                    .await;
                self.record_run(&selection, Trigger::Schedule, now_ms, *progress.borrow());
                summary
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduled refresh cannot read the vault");
                RefreshSummary::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a wall-clock time in IST.
    fn ist(d: i8, h: i8, m: i8) -> i64 {
        jiff::civil::date(2026, 3, d)
            .at(h, m, 0, 0)
            .in_tz("Asia/Kolkata")
            .unwrap()
            .timestamp()
            .as_millisecond()
    }

    fn session() -> MarketSession {
        MarketSession::from_config(&RefreshConfig::default()).unwrap()
    }

    #[test]
    fn a_dhan_token_minted_yesterday_morning_is_replaced_two_hours_before_the_open() {
        let s = session();
        // Minted at 08:00 on the 9th: expires at 08:00 on the 10th, before that day's close.
        let expires = ist(10, 8, 0);
        assert!(
            !s.due(ist(9, 16, 0), expires),
            "valid through the 9th: nothing to do"
        );
        assert!(!s.due(ist(10, 7, 14), expires), "outside the lead time");
        assert!(s.due(ist(10, 7, 15), expires), "09:15 opens within 2 h");
    }

    #[test]
    fn a_token_minted_after_the_open_is_replaced_before_it_dies_in_the_next_session() {
        let s = session();
        // Minted at 11:00 on the 9th (a manual refresh): dies at 11:00 on the 10th, mid-session.
        let expires = ist(10, 11, 0);
        assert!(
            !s.due(ist(9, 15, 0), expires),
            "it lasts through the 9th's session"
        );
        assert!(!s.due(ist(10, 7, 0), expires));
        assert!(s.due(ist(10, 7, 15), expires));
        assert!(s.lasts_through(ist(10, 15, 31), ist(11, 15, 30)));
    }

    #[test]
    fn a_token_that_lasts_through_the_next_session_is_kept() {
        let s = session();
        assert!(
            !s.due(ist(10, 8, 0), ist(11, 8, 0)),
            "minted at 08:00 on the 10th"
        );
        assert!(
            !s.due(ist(10, 15, 29), ist(10, 15, 30)),
            "exactly until the close"
        );
        assert!(
            s.due(ist(10, 9, 0), ist(10, 15, 29)),
            "a minute short of the close"
        );
    }

    #[test]
    fn a_wall_time_clocks_skip_has_no_instant_and_one_they_repeat_is_its_earlier() {
        let s = MarketSession::from_config(&RefreshConfig {
            session_timezone: "America/New_York".into(),
            ..RefreshConfig::default()
        })
        .unwrap();
        // 2026-03-08 02:30 never happened in New York; 2026-11-01 01:30 happened twice (EDT,
        // then EST): the first is 05:30 UTC.
        assert_eq!(
            s.at(
                jiff::civil::date(2026, 3, 8),
                jiff::civil::time(2, 30, 0, 0)
            ),
            i64::MAX
        );
        let repeated = s.at(
            jiff::civil::date(2026, 11, 1),
            jiff::civil::time(1, 30, 0, 0),
        );
        assert_eq!(repeated, 1_793_511_000_000);
    }

    #[test]
    fn sessions_that_do_not_parse_or_close_before_they_open_are_refused_naming_the_key() {
        let bad = |open: &str, close: &str| {
            let config = RefreshConfig {
                session_open: open.into(),
                session_close: close.into(),
                ..RefreshConfig::default()
            };
            MarketSession::from_config(&config).unwrap_err().to_string()
        };
        assert!(bad("9.15", "15:30").contains("refresh.session_open"));
        assert!(bad("09:15", "09:00").contains("refresh.session_close"));
    }
}
