//! Assisted login's state binding: `GET /api/login/:broker/:userId/url` issues a random, single-use,
//! expiring `state` bound to one account; `GET /callback/:broker` consumes it before the plugin
//! finishes the login. A replayed, forged or stale callback finds no state and is refused, so a
//! browser redirect can never attach a token to an account it was not issued for.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Why a state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Never issued, or already consumed (a replay), or evicted.
    #[error("unknown or already used login state")]
    Unknown,
    /// Issued, but older than the store's lifetime.
    #[error("the login state expired; start the login again")]
    Expired,
    /// Too many logins pending at once.
    #[error("too many assisted logins pending")]
    Full,
    /// This user asked for too many login URLs lately.
    #[error("too many assisted logins asked for; try again in {} s", (retry_ms + 999) / 1000)]
    TooMany {
        /// When the next one may be issued.
        retry_ms: i64,
    },
    /// A callback without a state arrived while several logins were pending at its broker.
    #[error(
        "several assisted logins are pending at this broker and its callback does not say which; finish one at a time"
    )]
    Ambiguous,
    /// The OS random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
}

/// An issued state: the account it is bound to, and until when.
struct PendingState<K> {
    key: K,
    expires_ms: i64,
}

/// Most states one user may be issued per [`ISSUE_WINDOW_MS`].
pub const ISSUES_PER_USER: usize = 20;
/// The window of [`ISSUES_PER_USER`].
pub const ISSUE_WINDOW_MS: i64 = 600_000;

/// The pending states and who asked for them.
struct PendingStates<K> {
    /// By state.
    pending: HashMap<String, PendingState<K>>,
    /// The one pending state of each account: a new one replaces it, so no account, and no
    /// user, can hold more than one state per account.
    by_key: HashMap<K, String>,
    /// When each user was issued states within the window, oldest first.
    issued: HashMap<String, VecDeque<i64>>,
}

/// Issued states, each bound to one account (`K`), single use, expiring after a TTL.
pub struct StateStore<K> {
    states: Mutex<PendingStates<K>>,
    ttl_ms: i64,
    max_pending: usize,
}

impl<K> std::fmt::Debug for StateStore<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("ttl_ms", &self.ttl_ms)
            .field("max_pending", &self.max_pending)
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + std::hash::Hash> StateStore<K> {
    /// A store whose states live `ttl`, at most `max_pending` at once.
    pub fn new(ttl: Duration, max_pending: usize) -> StateStore<K> {
        StateStore {
            states: Mutex::new(PendingStates {
                pending: HashMap::new(),
                by_key: HashMap::new(),
                issued: HashMap::new(),
            }),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            max_pending,
        }
    }

    /// Issue a fresh state for `key` on behalf of `user`, replacing the account's pending one.
    pub fn issue(&self, key: K, user: &str, now_ms: i64) -> Result<String, StateError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| StateError::Random(e.to_string()))?;
        let state = hex::encode(bytes);
        let mut inner = self.states.lock();
        let PendingStates {
            pending,
            by_key,
            issued,
        } = &mut *inner;
        let times = issued.entry(user.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|&t| t <= now_ms - ISSUE_WINDOW_MS)
        {
            times.pop_front();
        }
        if times.len() >= ISSUES_PER_USER {
            let retry_ms = times.front().map_or(0, |&t| t + ISSUE_WINDOW_MS - now_ms);
            return Err(StateError::TooMany { retry_ms });
        }
        if let Some(old) = by_key.remove(&key) {
            pending.remove(&old);
        }
        if pending.len() >= self.max_pending {
            pending.retain(|_, p| p.expires_ms > now_ms);
            by_key.retain(|_, state| pending.contains_key(state));
            issued.retain(|_, t| t.back().is_some_and(|&t| t > now_ms - ISSUE_WINDOW_MS));
            if pending.len() >= self.max_pending {
                return Err(StateError::Full);
            }
        }
        issued.entry(user.to_owned()).or_default().push_back(now_ms);
        by_key.insert(key.clone(), state.clone());
        pending.insert(
            state.clone(),
            PendingState {
                key,
                expires_ms: now_ms.saturating_add(self.ttl_ms),
            },
        );
        Ok(state)
    }

    /// The account `state` was issued for, consuming it: a state is good for one callback, even
    /// one that finds it expired.
    pub fn consume(&self, state: &str, now_ms: i64) -> Result<K, StateError> {
        let mut inner = self.states.lock();
        let entry = inner.pending.remove(state).ok_or(StateError::Unknown)?;
        inner.by_key.remove(&entry.key);
        drop(inner);
        if entry.expires_ms <= now_ms {
            return Err(StateError::Expired);
        }
        Ok(entry.key)
    }

    /// For a broker whose callback carries no state: the account of the one unexpired pending
    /// state whose account `matches`, left pending. None is [`StateError::Unknown`]; several is
    /// [`StateError::Ambiguous`]. Anyone can send such a callback, so the state is dropped
    /// ([`StateStore::forget`]) only once the broker has finished the login: a forged one cannot
    /// use it up.
    pub fn only_pending(&self, matches: impl Fn(&K) -> bool, now_ms: i64) -> Result<K, StateError> {
        let inner = self.states.lock();
        let mut found = (inner.pending.values())
            .filter(|p| p.expires_ms > now_ms && matches(&p.key))
            .map(|p| p.key.clone());
        let key = found.next().ok_or(StateError::Unknown)?;
        if found.next().is_some() {
            return Err(StateError::Ambiguous);
        }
        Ok(key)
    }

    /// Drop the pending state of `key`, if any.
    pub fn forget(&self, key: &K) {
        let mut inner = self.states.lock();
        if let Some(state) = inner.by_key.remove(key) {
            inner.pending.remove(&state);
        }
    }

    /// States outstanding (expired ones included until the next `issue`).
    pub fn len(&self) -> usize {
        self.states.lock().pending.len()
    }

    /// Whether no state is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> StateStore<(String, String)> {
        StateStore::new(Duration::from_secs(600), 3)
    }

    fn account(user: &str) -> (String, String) {
        (user.to_owned(), "kite".to_owned())
    }

    #[test]
    fn a_new_state_for_an_account_replaces_its_pending_one() {
        let s = store();
        let first = s.issue(account("u1"), "u1", 0).unwrap();
        let second = s.issue(account("u1"), "u1", 1).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.consume(&first, 2), Err(StateError::Unknown));
        assert_eq!(s.consume(&second, 2), Ok(account("u1")));
        // One user cannot fill the store: three accounts' worth at most here.
        for n in 0..100 {
            s.issue(account("u1"), "u1", 3 + n % 5).ok();
        }
        assert!(s.len() <= 1);
    }

    #[test]
    fn a_user_asking_for_too_many_states_is_told_when_to_come_back() {
        let s = StateStore::new(Duration::from_secs(600), 10_000);
        for n in 0..ISSUES_PER_USER {
            s.issue(account(&format!("a{n}")), "u1", n as i64).unwrap();
        }
        assert_eq!(
            s.issue(account("late"), "u1", 1_000),
            Err(StateError::TooMany {
                retry_ms: ISSUE_WINDOW_MS - 1_000
            })
        );
        assert!(
            s.issue(account("other"), "u2", 1_000).is_ok(),
            "other users are not held"
        );
        assert!(s.issue(account("late"), "u1", ISSUE_WINDOW_MS).is_ok());
    }

    #[test]
    fn a_callback_without_state_takes_the_one_pending_login_of_its_broker_and_never_guesses() {
        let s = store();
        let at_dhan = |k: &(String, String)| k.1 == "dhan";
        let u1 = ("u1".to_owned(), "dhan".to_owned());
        assert_eq!(s.only_pending(at_dhan, 0), Err(StateError::Unknown));
        s.issue(("u1".into(), "kite".into()), "u1", 0).unwrap();
        s.issue(u1.clone(), "u1", 0).unwrap();
        assert_eq!(s.only_pending(at_dhan, 1), Ok(u1.clone()));
        assert_eq!(s.only_pending(at_dhan, 1), Ok(u1.clone()), "left pending");
        s.forget(&u1);
        assert_eq!(
            s.only_pending(at_dhan, 1),
            Err(StateError::Unknown),
            "forgotten"
        );
        assert_eq!(s.len(), 1, "the kite state stays");
        s.issue(u1.clone(), "u1", 2).unwrap();
        s.issue(("u2".into(), "dhan".into()), "u2", 2).unwrap();
        assert_eq!(s.only_pending(at_dhan, 3), Err(StateError::Ambiguous));
        assert_eq!(
            s.only_pending(at_dhan, 600_003),
            Err(StateError::Unknown),
            "expired"
        );
    }

    #[test]
    fn a_state_is_consumed_once() {
        let s = store();
        let state = s.issue(account("u1"), "u1", 1_000).unwrap();
        assert_eq!(state.len(), 64);
        assert_eq!(s.consume(&state, 2_000), Ok(account("u1")));
        assert_eq!(
            s.consume(&state, 2_000),
            Err(StateError::Unknown),
            "a replay is refused"
        );
    }

    #[test]
    fn forged_states_are_refused() {
        let s = store();
        let state = s.issue(account("u1"), "u1", 0).unwrap();
        assert_eq!(s.consume("0000", 1), Err(StateError::Unknown));
        assert_eq!(
            s.consume(&state.to_uppercase(), 1),
            Err(StateError::Unknown)
        );
        assert_eq!(
            s.consume(&state, 1),
            Ok(account("u1")),
            "a forged attempt does not burn the real state"
        );
    }

    #[test]
    fn states_expire_and_are_gone_after_a_late_callback() {
        let s = store();
        let state = s.issue(account("u1"), "u1", 0).unwrap();
        assert_eq!(s.consume(&state, 600_000), Err(StateError::Expired));
        assert_eq!(s.consume(&state, 600_001), Err(StateError::Unknown));
    }

    #[test]
    fn states_are_distinct_and_bound_to_their_account() {
        let s = store();
        let a = s.issue(account("u1"), "u1", 0).unwrap();
        let b = s.issue(account("u2"), "u2", 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(s.consume(&b, 1), Ok(account("u2")));
        assert_eq!(s.consume(&a, 1), Ok(account("u1")));
    }

    #[test]
    fn pending_states_are_bounded_and_expired_ones_purged() {
        let s = store();
        for u in ["a", "b", "c"] {
            s.issue(account(u), u, 0).unwrap();
        }
        assert_eq!(s.issue(account("d"), "d", 1), Err(StateError::Full));
        // Once the first three expired, issuing purges them.
        assert!(s.issue(account("d"), "d", 600_000).is_ok());
        assert_eq!(s.len(), 1);
    }
}
