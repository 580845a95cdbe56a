//! Assisted login's state binding: `GET /api/login/:broker/:userId/url` issues a random, single-use,
//! expiring `state` bound to one account; `GET /callback/:broker` consumes it before the plugin
//! finishes the login. A replayed, forged or stale callback finds no state and is refused, so a
//! browser redirect can never attach a token to an account it was not issued for.

use std::collections::HashMap;
use std::sync::Mutex;
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
    /// The OS random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
}

struct Pending<K> {
    key: K,
    expires_ms: i64,
}

/// Pending assisted logins, by state. Shared by the URL and callback handlers; each entry is taken
/// out by the first `consume`, whatever its outcome.
pub struct StateStore<K> {
    /// state -> (account, expiry). Expired entries are purged whenever a state is issued.
    pending: Mutex<HashMap<String, Pending<K>>>,
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

impl<K: Clone> StateStore<K> {
    /// A store whose states live `ttl` and of which at most `max_pending` are outstanding.
    pub fn new(ttl: Duration, max_pending: usize) -> StateStore<K> {
        StateStore {
            pending: Mutex::new(HashMap::new()),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            max_pending,
        }
    }

    /// A fresh state (256 random bits, hex) bound to `key` until `now_ms + ttl`.
    pub fn issue(&self, key: K, now_ms: i64) -> Result<String, StateError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| StateError::Random(e.to_string()))?;
        let state = hex::encode(bytes);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.expires_ms > now_ms);
        if pending.len() >= self.max_pending {
            return Err(StateError::Full);
        }
        pending.insert(
            state.clone(),
            Pending {
                key,
                expires_ms: now_ms.saturating_add(self.ttl_ms),
            },
        );
        Ok(state)
    }

    /// The account `state` was issued for; the state is gone afterwards (single use).
    pub fn consume(&self, state: &str, now_ms: i64) -> Result<K, StateError> {
        let entry = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(state)
            .ok_or(StateError::Unknown)?;
        if entry.expires_ms <= now_ms {
            return Err(StateError::Expired);
        }
        Ok(entry.key)
    }

    /// States outstanding (expired ones included until the next `issue`).
    pub fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
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
    fn a_state_is_consumed_once() {
        let s = store();
        let state = s.issue(account("u1"), 1_000).unwrap();
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
        let state = s.issue(account("u1"), 0).unwrap();
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
        let state = s.issue(account("u1"), 0).unwrap();
        assert_eq!(s.consume(&state, 600_000), Err(StateError::Expired));
        assert_eq!(s.consume(&state, 600_001), Err(StateError::Unknown));
    }

    #[test]
    fn states_are_distinct_and_bound_to_their_account() {
        let s = store();
        let a = s.issue(account("u1"), 0).unwrap();
        let b = s.issue(account("u2"), 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(s.consume(&b, 1), Ok(account("u2")));
        assert_eq!(s.consume(&a, 1), Ok(account("u1")));
    }

    #[test]
    fn pending_states_are_bounded_and_expired_ones_purged() {
        let s = store();
        for u in ["a", "b", "c"] {
            s.issue(account(u), 0).unwrap();
        }
        assert_eq!(s.issue(account("d"), 1), Err(StateError::Full));
        // Once the first three expired, issuing purges them.
        assert!(s.issue(account("d"), 600_000).is_ok());
        assert_eq!(s.len(), 1);
    }
}
