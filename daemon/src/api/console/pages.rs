//! The console's pages: askama templates (`daemon/templates/console/`, compiled into the binary
//! and HTML-escaped by default) and what they show. Built from the API's own views
//! ([`AccountView`], [`AttemptView`], the `/health/detailed` figures): no token or credential
//! field reaches a page, since none of those views holds one.

use askama::Template;
use chrono::{DateTime, FixedOffset};

use super::session::Flash;
use crate::api::status::{MirrorView, PluginFailureView, PluginView};
use crate::refresh::Progress;
use broker_api::wire::ErrorClass;

/// What every page's frame needs.
pub struct Layout {
    pub title: String,
    /// The session's CSRF token; empty when signed out.
    pub csrf: String,
    pub flash: Option<Flash>,
}

impl Layout {
    pub fn signed_in(&self) -> bool {
        !self.csrf.is_empty()
    }
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
pub struct SignIn {
    pub layout: Layout,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/message.html")]
pub struct Message {
    pub layout: Layout,
    pub heading: String,
    pub text: String,
    pub back: String,
}

pub struct Count {
    pub label: &'static str,
    pub n: usize,
    pub href: String,
}

pub struct Schedule {
    pub broker: String,
    pub next_run: String,
    pub breaker: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
pub struct Overview {
    pub layout: Layout,
    pub counts: Vec<Count>,
    pub users: usize,
    pub accounts: usize,
    pub attempts: u64,
    pub success_rate: Option<f64>,
    pub schedules: Vec<Schedule>,
    pub mirror: MirrorView,
    pub mirror_error_at: Option<String>,
    pub plugins: Vec<PluginView>,
    pub plugin_failures: Vec<PluginFailureView>,
    pub clock_warning: Option<String>,
    pub last_run: Option<LastRun>,
    /// A console refresh-all is running.
    pub running: bool,
}

/// The last refresh of every account (or of a broker's), in words.
pub struct LastRun {
    /// "every account", "every account at kite".
    pub scope: String,
    /// What started it.
    pub trigger: &'static str,
    /// When it finished (IST).
    pub finished: String,
    pub seconds: i64,
    pub progress: Progress,
}

/// The refresh-all page: the bar as it stands when the page is made; `console.js` moves it.
#[derive(Template)]
#[template(path = "console/refresh_all.html")]
pub struct RefreshAll {
    pub layout: Layout,
    pub progress: Progress,
    pub finished: bool,
    /// The run's failed and skipped accounts, once it has finished.
    pub problems: Vec<Problem>,
}

/// An account a refresh-all did not log in.
pub struct Problem {
    pub user: String,
    pub broker: String,
    pub outcome: &'static str,
    pub message: String,
    pub href: String,
}

/// One field of the credentials form.
pub struct Field {
    pub name: String,
    pub label: String,
    /// Only ever the broker's user id: no credential is filled in.
    pub value: String,
    pub secret: bool,
    pub required: bool,
    pub hint: &'static str,
}

#[derive(Template)]
#[template(path = "console/credentials.html")]
pub struct Credentials {
    pub layout: Layout,
    pub heading: String,
    /// Where the form posts.
    pub action: String,
    pub back: String,
    /// For a new account: the brokers to choose from (empty for a stored account).
    pub brokers: Vec<Choice>,
    pub broker: String,
    pub user: String,
    pub fields: Vec<Field>,
    pub error: Option<String>,
}

/// A `<select>` option.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// Why an account waits for a person, and what to do, in plain words.
pub struct Reason {
    /// e.g. "wrong password".
    pub what: &'static str,
    /// e.g. "update it".
    pub remedy: &'static str,
    /// The longer explanation the notices give.
    pub detail: &'static str,
    /// What the broker said (never a secret).
    pub message: String,
    /// Since when (IST).
    pub since: String,
    /// Whether "Clear attention" may be offered: not after the broker said the password is
    /// wrong or the account locked, where clearing would send the same password again (the
    /// lockout rules); changing the credentials lets logins resume by itself.
    pub clearable: bool,
}

pub struct AccountRow {
    pub user: String,
    pub broker: String,
    pub state: String,
    pub state_label: &'static str,
    pub expires: String,
    pub reason: Option<Reason>,
    pub href: String,
}

#[derive(Template)]
#[template(path = "console/accounts.html")]
pub struct Accounts {
    pub layout: Layout,
    pub brokers: Vec<Choice>,
    pub states: Vec<Choice>,
    pub q: String,
    pub rows: Vec<AccountRow>,
    pub total: usize,
}

pub struct AttemptRow {
    pub time: String,
    pub trigger: String,
    pub attempt: u32,
    pub outcome: String,
    pub error_class: String,
    pub message: String,
    pub duration_ms: u64,
}

#[derive(Template)]
#[template(path = "console/account.html")]
pub struct Account {
    pub layout: Layout,
    pub user: String,
    pub broker: String,
    pub href: String,
    pub broker_user_id: String,
    pub state_label: &'static str,
    pub has_token: bool,
    pub last_login: String,
    pub expires: String,
    pub auto_refresh: bool,
    pub pending_until: Option<String>,
    pub reason: Option<Reason>,
    pub assisted: bool,
    pub attempts: Vec<AttemptRow>,
}

#[derive(Template)]
#[template(path = "console/confirm_remove.html")]
pub struct ConfirmRemove {
    pub layout: Layout,
    pub user: String,
    pub broker: String,
    pub href: String,
}

/// The states of [`crate::api::views::AccountView::state`], with their labels, in the order
/// the console lists them.
pub const STATES: [(&str, &str); 5] = [
    ("needs_attention", "needs attention"),
    ("awaiting_approval", "awaiting approval"),
    ("active", "active"),
    ("paused", "paused"),
    ("managed_externally", "managed externally"),
];

/// The label of an account state.
pub fn state_label(state: &str) -> &'static str {
    STATES
        .iter()
        .find(|(s, _)| *s == state)
        .map_or("unknown", |(_, label)| label)
}

/// A needs-attention class in plain words with its remedy, and the notices' explanation.
pub fn reason(class: &str, message: &str, since_iso: &str) -> Reason {
    let parsed: ErrorClass = serde_json::from_value(serde_json::Value::String(class.to_owned()))
        .unwrap_or(ErrorClass::Unknown);
    let (what, remedy) = match parsed {
        ErrorClass::InvalidCredentials => (
            "wrong password",
            "update it (\"Change the credentials…\" on the account's page, PUT /api/users/{userId}/accounts/{broker}, or tokenbot user add): logins resume once it changes",
        ),
        ErrorClass::TwofaRejected => (
            "one-time code refused",
            "check the stored TOTP secret and the host's clock, then clear attention",
        ),
        ErrorClass::TwofaUnavailable => (
            "second factor tokenbot cannot produce",
            "use assisted login",
        ),
        ErrorClass::AppNotAuthorized => (
            "app not authorised",
            "open the broker's consent page once (assisted login)",
        ),
        ErrorClass::AccountLocked => (
            "account locked at the broker",
            "unlock it at the broker (a new password or PIN), then update it with \"Change the credentials…\": logins resume once it changes",
        ),
        ErrorClass::AutomationBlocked => ("automation blocked", "use assisted login"),
        _ => (
            "login failed in a way retrying cannot fix",
            "use assisted login, or read the broker's message below",
        ),
    };
    Reason {
        what,
        remedy,
        detail: crate::notify::attention_reason(parsed),
        message: message.to_owned(),
        since: ist(since_iso),
        clearable: !matches!(
            parsed,
            ErrorClass::InvalidCredentials | ErrorClass::AccountLocked
        ),
    }
}

/// An RFC 3339 time as IST wall time (how operators in India read it); "–" for none.
pub fn ist(iso: &str) -> String {
    let offset = FixedOffset::east_opt(19_800).expect("+05:30 is a valid offset");
    DateTime::parse_from_rfc3339(iso).map_or_else(
        |_| iso.to_owned(),
        |t| {
            t.with_timezone(&offset)
                .format("%Y-%m-%d %H:%M:%S IST")
                .to_string()
        },
    )
}

/// [`ist`] of an optional time.
pub fn ist_or_dash(iso: Option<&str>) -> String {
    iso.map_or_else(|| "–".to_owned(), ist)
}

/// A path segment, percent-encoded (user ids may hold `/`, `?`, `#`, `%`).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
