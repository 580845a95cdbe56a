//! The console's sessions: in memory, by the SHA-256 of a random 256-bit id (the cookie's value),
//! on the API's clock. A session ends after `[console] session_idle_secs` unused, after
//! `session_max_secs` whatever its use, at sign-out, or when the daemon stops. Each holds a
//! random CSRF token that every state-changing form must carry (compared in constant time).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::auth::KeyName;
use crate::config::ConsoleConfig;

/// The cookie's name.
pub const COOKIE: &str = "tokenbot_console";
/// Sessions at once; past this a new sign-in ends the session unused longest.
const MAX_SESSIONS: usize = 1_000;

/// What a page shows once after an action (the outcome of "Log in now", a removal).
#[derive(Debug, Clone)]
pub struct Flash {
    /// Whether the action succeeded (the page's colour).
    pub ok: bool,
    /// Plain words; never a secret.
    pub text: String,
}

struct Session {
    /// The API key it was signed in with (its name, for the log).
    key: KeyName,
    csrf: [u8; 32],
    created_ms: i64,
    seen_ms: i64,
    flash: Option<Flash>,
}

/// A request's live session.
#[derive(Debug, Clone)]
pub struct Signed {
    digest: [u8; 32],
    /// The name of the key it signed in with.
    pub key: KeyName,
    /// The session's CSRF token (hex), for the forms of the page.
    pub csrf: String,
}

/// Every live session.
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
    idle_ms: i64,
    max_ms: i64,
}

fn random() -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl Sessions {
    /// Per `[console]`.
    pub fn new(config: &ConsoleConfig) -> Sessions {
        Sessions {
            by_digest: Mutex::new(HashMap::new()),
            idle_ms: secs_ms(config.session_idle_secs),
            max_ms: secs_ms(config.session_max_secs),
        }
    }

    fn live(&self, s: &Session, now_ms: i64) -> bool {
        now_ms.saturating_sub(s.seen_ms) < self.idle_ms
            && now_ms.saturating_sub(s.created_ms) < self.max_ms
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock leaves nothing half-done worth refusing for.
        self.by_digest.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session for `key`: the cookie's value (hex of 32 random bytes), or `None` when the
    /// system has no randomness to give.
    pub fn create(&self, key: KeyName, now_ms: i64) -> Option<String> {
        let id = random()?;
        let csrf = random()?;
        let mut map = self.lock();
        map.retain(|_, s| self.live(s, now_ms));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.seen_ms).map(|(d, _)| *d)
        {
            map.remove(&oldest);
        }
        map.insert(
            digest(&id),
            Session {
                key,
                csrf,
                created_ms: now_ms,
                seen_ms: now_ms,
                flash: None,
            },
        );
        Some(hex::encode(id))
    }

    /// The live session of the cookie value `id`, marked as used now; an expired one is
    /// forgotten.
    pub fn find(&self, id: &str, now_ms: i64) -> Option<Signed> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(id, &mut bytes).ok()?;
        // Looked up by digest: the map's comparisons never touch the id itself.
        let d = digest(&bytes);
        let mut map = self.lock();
        let session = map.get_mut(&d)?;
        if !self.live(session, now_ms) {
            map.remove(&d);
            return None;
        }
        session.seen_ms = now_ms;
        Some(Signed {
            digest: d,
            key: session.key.clone(),
            csrf: hex::encode(session.csrf),
        })
    }

    /// Whether `presented` is the session's CSRF token (constant time).
    pub fn csrf_ok(&self, signed: &Signed, presented: Option<&str>) -> bool {
        let mut bytes = [0u8; 32];
        let Some(presented) = presented else {
            return false;
        };
        if hex::decode_to_slice(presented.trim(), &mut bytes).is_err() {
            return false;
        }
        let map = self.lock();
        map.get(&signed.digest)
            .is_some_and(|s| bool::from(s.csrf.ct_eq(&bytes)))
    }

    /// End the session (sign-out).
    pub fn end(&self, signed: &Signed) {
        self.lock().remove(&signed.digest);
    }

    /// Show `flash` on the session's next page.
    pub fn set_flash(&self, signed: &Signed, flash: Flash) {
        if let Some(s) = self.lock().get_mut(&signed.digest) {
            s.flash = Some(flash);
        }
    }

    /// The flash waiting for this session, once.
    pub fn take_flash(&self, signed: &Signed) -> Option<Flash> {
        self.lock()
            .get_mut(&signed.digest)
            .and_then(|s| s.flash.take())
    }
}

/// The session cookie's value among the request's cookies.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}
