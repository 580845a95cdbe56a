//! Re-notify: a pending approval is announced when it is requested and once more shortly before it
//! expires, never twice within the quiet interval, and never after it was resolved or expired.
//! The rule is [`next_step`], a pure function of the times; [`Notifier::tick`](super::Notifier::tick)
//! applies it to every pending approval at an explicit "now", so tests drive it with a manual
//! clock, and [`run`] ticks it in a serving daemon.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::Notifier;

/// How often a serving daemon applies the rule: a reminder lands within this of its time.
pub const TICK_EVERY: Duration = Duration::from_secs(30);

/// A pending approval, as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingApproval {
    /// When it was last announced (Unix ms).
    pub announced_at_ms: i64,
    /// When the request stops being approvable (Unix ms).
    pub expires_at_ms: i64,
    /// Whether the one reminder went out.
    pub reminded: bool,
}

/// What to do with a pending approval now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet (or nothing more).
    Wait,
    /// Announce it again, now.
    Remind,
    /// It expired: forget it, silently (the refresher reports the expiry as a failed login).
    Forget,
}

/// The re-notify rule. A pending approval is reminded of once, when `now_ms` is within
/// `remind_before_ms` of its expiry and at least `quiet_ms` after its last announcement; an
/// approval requested closer to its expiry than the quiet interval is never reminded of.
pub fn next_step(
    pending: &PendingApproval,
    now_ms: i64,
    remind_before_ms: i64,
    quiet_ms: i64,
) -> Step {
    if now_ms >= pending.expires_at_ms {
        Step::Forget
    } else if !pending.reminded
        && now_ms >= pending.expires_at_ms - remind_before_ms
        && now_ms - pending.announced_at_ms >= quiet_ms
    {
        Step::Remind
    } else {
        Step::Wait
    }
}

/// The re-notify task of a serving daemon: tick until `shutdown` resolves.
pub async fn run(notifier: Arc<Notifier>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        notifier.tick(notifier.clock.now_ms());
        tokio::select! {
            () = tokio::time::sleep(TICK_EVERY) => {}
            () = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn step(p: &PendingApproval, now: i64) -> Step {
        next_step(p, now, 15 * MIN, 10 * MIN)
    }

    #[test]
    fn one_reminder_fifteen_minutes_before_expiry() {
        let mut p = PendingApproval {
            announced_at_ms: 0,
            expires_at_ms: 60 * MIN,
            reminded: false,
        };
        assert_eq!(step(&p, 44 * MIN), Step::Wait);
        assert_eq!(step(&p, 45 * MIN), Step::Remind);
        p.reminded = true;
        p.announced_at_ms = 45 * MIN;
        assert_eq!(step(&p, 50 * MIN), Step::Wait);
        assert_eq!(step(&p, 60 * MIN - 1), Step::Wait);
        assert_eq!(step(&p, 60 * MIN), Step::Forget);
    }

    #[test]
    fn never_sooner_than_the_quiet_interval() {
        // Requested 20 minutes before expiry: the reminder window is open at once, but the quiet
        // interval holds it back until 10 minutes after the announcement.
        let p = PendingApproval {
            announced_at_ms: 0,
            expires_at_ms: 20 * MIN,
            reminded: false,
        };
        assert_eq!(step(&p, 5 * MIN), Step::Wait);
        assert_eq!(step(&p, 10 * MIN - 1), Step::Wait);
        assert_eq!(step(&p, 10 * MIN), Step::Remind);
        // Requested 8 minutes before expiry: the quiet interval outlasts it.
        let p = PendingApproval {
            announced_at_ms: 0,
            expires_at_ms: 8 * MIN,
            reminded: false,
        };
        assert!(
            (0..8 * MIN)
                .step_by(1_000)
                .all(|t| step(&p, t) == Step::Wait)
        );
        assert_eq!(step(&p, 8 * MIN), Step::Forget);
    }
}
