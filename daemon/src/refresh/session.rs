//! The market session a rolling token must last through. Tokens that expire a fixed time after
//! issue (Dhan: 24 h) have no time of day to schedule after, so they are replaced when they would
//! die during the next session: by catch-up once that session opens within
//! `[refresh] rolling_refresh_ahead_secs`, and by the broker's scheduled run at any time. Every
//! day has a session (no holiday calendar): a weekend login costs one mint and keeps the rule
//! simple.

use std::sync::Arc;

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use tokio::sync::watch;

use super::{Named, RefreshSummary, Refresher, Selection};
use crate::config::{ConfigError, RefreshConfig};
use crate::vault::{AccountKey, Trigger, VaultError, blocking};

/// `[refresh] session_open`, `session_close`, `session_timezone`, `rolling_refresh_ahead_secs`.
#[derive(Debug, Clone, Copy)]
pub struct MarketSession {
    open: NaiveTime,
    close: NaiveTime,
    tz: chrono_tz::Tz,
    ahead_ms: i64,
}

fn parse_time(key: &str, value: &str) -> Result<NaiveTime, ConfigError> {
    NaiveTime::parse_from_str(value, "%H:%M")
        .map_err(|e| ConfigError::invalid(format!("refresh.{key}"), value, format!("{e} (HH:MM)")))
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
        let tz = (config.session_timezone.parse::<chrono_tz::Tz>()).map_err(|e| {
            ConfigError::invalid(
                "refresh.session_timezone",
                &config.session_timezone,
                e.to_string(),
            )
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

    fn at(&self, date: NaiveDate, time: NaiveTime) -> i64 {
        self.tz
            .from_local_datetime(&date.and_time(time))
            .earliest()
            .map_or(i64::MAX, |t| t.timestamp_millis())
    }

    /// Open and close (Unix ms) of the session in progress at `now_ms`, else of the next one.
    pub fn current_or_next(&self, now_ms: i64) -> (i64, i64) {
        let Some(now) = Utc.timestamp_millis_opt(now_ms).single() else {
            return (i64::MAX, i64::MAX);
        };
        let today = now.with_timezone(&self.tz).date_naive();
        let close = self.at(today, self.close);
        let day = if now_ms < close {
            today
        } else {
            today.succ_opt().unwrap_or(today)
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
    fn ist(d: u32, h: u32, m: u32) -> i64 {
        chrono_tz::Asia::Kolkata
            .with_ymd_and_hms(2026, 3, d, h, m, 0)
            .unwrap()
            .timestamp_millis()
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
