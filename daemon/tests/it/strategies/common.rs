//! Shared harness of the `strategies` tests: the real plugin host (registry, services, call
//! contexts, blocking runner) on a `ManualClock`, a captured log, and account fixtures.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use broker_api::wire::{
    AssistedFinishRequest, AssistedUrlOutput, AssistedUrlRequest, Credentials, ErrorClass,
    LoginOutput, LoginRequest, Sensitive, VerifyOutput, VerifyRequest, WIRE_VERSION,
};
use tokenbot::clock::{Clock, ManualClock};
use tokenbot::config::PluginsConfig;
use tokenbot::plugins::totp::parse_secret;
use tokenbot::plugins::{
    self, AccountAccess, CallLimits, Plugin, PluginEnv, PluginError, Registry,
};

use crate::log_capture;

/// An account as the vault would hand it to the host.
#[derive(Clone, Debug, Default)]
pub struct Account {
    pub user_id: String,
    pub broker_user_id: String,
    pub password: Option<String>,
    pub api_key: String,
    pub api_secret: String,
    pub totp_secret: Option<String>,
    /// Fields the broker declares beyond the five (`pin`, `mobile`, ...).
    pub extra: BTreeMap<String, String>,
}

impl Account {
    pub fn credentials(&self) -> Credentials {
        Credentials {
            password: self.password.as_deref().map(Sensitive::new),
            api_key: Some(self.api_key.clone()),
            api_secret: Some(Sensitive::new(self.api_secret.as_str())),
            extra: (self.extra.iter())
                .map(|(k, v)| (k.clone(), Sensitive::new(v.as_str())))
                .collect(),
        }
    }
}

/// Distinct base32 TOTP secrets (each 20 bytes) for the accounts of a test.
pub fn totp_secret(n: u32) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..32u32)
        .map(|i| ALPHABET[((n.wrapping_mul(7919) + i * 13 + i * i * n) % 32) as usize] as char)
        .collect()
}

/// The plugin host of a test.
pub struct Harness {
    pub clock: Arc<ManualClock>,
    pub services: Arc<PluginEnv>,
    pub registry: Registry,
    /// Configured settings, as `[brokers.<id>]` would give them.
    settings: Mutex<BTreeMap<String, String>>,
    _plugins: tempfile::TempDir,
}

impl Harness {
    /// Bundled strategies only, the clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness::with_plugins_dir(now_ms, dir)
    }

    /// Bundled strategies plus the `.so` files of `dir`.
    pub fn with_plugins_dir(now_ms: i64, dir: tempfile::TempDir) -> Harness {
        capture_logs();
        let clock = Arc::new(ManualClock::new(now_ms));
        let registry = Registry::load(&PluginsConfig {
            dir: dir.path().to_owned(),
            ..PluginsConfig::default()
        });
        Harness {
            services: Arc::new(PluginEnv::new(clock.clone(), CallLimits::default())),
            clock,
            registry,
            settings: Mutex::default(),
            _plugins: dir,
        }
    }

    /// The fakes' clock: the same `ManualClock`.
    pub fn now_fn(&self) -> fake_brokers::NowFn {
        let clock = self.clock.clone();
        Arc::new(move || clock.now_ms())
    }

    pub fn fake_options(&self) -> fake_brokers::FakeOptions {
        fake_brokers::FakeOptions {
            now: self.now_fn(),
            latency: std::time::Duration::ZERO,
            ..Default::default()
        }
    }

    /// Set a `[brokers.<id>]` setting for every later call of this harness.
    pub fn set_setting(&self, name: &str, value: &str) {
        self.settings
            .lock()
            .unwrap()
            .insert(name.to_owned(), value.to_owned());
    }

    fn settings(&self, plugin: &Plugin) -> BTreeMap<String, String> {
        plugin.settings(&self.settings.lock().unwrap()).unwrap()
    }

    pub fn plugin(&self, broker: &str) -> Arc<Plugin> {
        self.registry
            .get(broker)
            .unwrap_or_else(|| panic!("no plugin {broker}"))
    }

    fn context(
        &self,
        plugin: &Plugin,
        account: &Account,
        urls: &BTreeMap<String, String>,
    ) -> plugins::host::PluginCall {
        remember_secrets(account);
        let mut secrets: Vec<&str> = vec![account.api_secret.as_str()];
        secrets.extend(account.password.as_deref());
        secrets.extend(account.totp_secret.as_deref());
        secrets.extend(account.extra.values().map(String::as_str));
        self.services.call_for(AccountAccess {
            plugin,
            account: format!("{}/{}", account.user_id, plugin.id),
            configured_urls: urls,
            extra_hosts: &[],
            ipv4_only: false,
            totp_secret: account
                .totp_secret
                .as_deref()
                .map(|s| parse_secret(s).unwrap()),
            secrets,
        })
    }

    /// A headless login through the plugin ABI.
    pub async fn login(
        &self,
        broker: &str,
        account: &Account,
        urls: &BTreeMap<String, String>,
    ) -> Result<LoginOutput, PluginError> {
        let plugin = self.plugin(broker);
        let req = LoginRequest {
            v: WIRE_VERSION,
            user_id: account.user_id.clone(),
            broker_user_id: account.broker_user_id.clone(),
            credentials: account.credentials(),
            base_urls: plugin.base_urls(urls),
            settings: self.settings(&plugin),
            attempt: 1,
            redirect_url: None,
        };
        let ctx = self.context(&plugin, account, urls);
        let mark = log_capture::len();
        let out =
            plugins::run_blocking(plugin, ctx, move |p, ctx| p.login_blocking(ctx, &req)).await;
        if let Ok(out) = &out {
            remember_from(out.access_token.expose(), mark);
        }
        out
    }

    pub async fn verify(
        &self,
        broker: &str,
        account: &Account,
        urls: &BTreeMap<String, String>,
        token: &str,
    ) -> Result<VerifyOutput, PluginError> {
        let plugin = self.plugin(broker);
        let req = VerifyRequest {
            v: WIRE_VERSION,
            broker_user_id: account.broker_user_id.clone(),
            access_token: Sensitive::new(token),
            credentials: account.credentials(),
            base_urls: plugin.base_urls(urls),
            settings: self.settings(&plugin),
        };
        let ctx = self.context(&plugin, account, urls);
        plugins::run_blocking(plugin, ctx, move |p, ctx| p.verify_blocking(ctx, &req)).await
    }

    pub async fn assisted_url(
        &self,
        broker: &str,
        account: &Account,
        urls: &BTreeMap<String, String>,
        state: &str,
        redirect_url: &str,
    ) -> Result<AssistedUrlOutput, PluginError> {
        let plugin = self.plugin(broker);
        let req = AssistedUrlRequest {
            v: WIRE_VERSION,
            broker_user_id: account.broker_user_id.clone(),
            credentials: account.credentials(),
            state: state.into(),
            redirect_url: redirect_url.into(),
            base_urls: plugin.base_urls(urls),
            settings: self.settings(&plugin),
        };
        let ctx = self.context(&plugin, account, urls);
        plugins::run_blocking(plugin, ctx, move |p, ctx| {
            p.assisted_url_blocking(ctx, &req)
        })
        .await
    }

    pub async fn assisted_finish(
        &self,
        broker: &str,
        account: &Account,
        urls: &BTreeMap<String, String>,
        query: BTreeMap<String, String>,
    ) -> Result<LoginOutput, PluginError> {
        let plugin = self.plugin(broker);
        let req = AssistedFinishRequest {
            v: WIRE_VERSION,
            user_id: account.user_id.clone(),
            broker_user_id: account.broker_user_id.clone(),
            credentials: account.credentials(),
            query,
            delivery: None,
            redirect_url: None,
            base_urls: plugin.base_urls(urls),
            settings: self.settings(&plugin),
        };
        let ctx = self.context(&plugin, account, urls);
        let mark = log_capture::len();
        let out = plugins::run_blocking(plugin, ctx, move |p, ctx| {
            p.assisted_finish_blocking(ctx, &req)
        })
        .await;
        if let Ok(out) = &out {
            remember_from(out.access_token.expose(), mark);
        }
        out
    }
}

/// The class of a failed call (panics on success or a non-typed failure).
pub fn class_of<T: std::fmt::Debug>(result: &Result<T, PluginError>) -> ErrorClass {
    failure(result).class
}

/// The strategy's typed failure (asserting there is one).
pub fn failure<T: std::fmt::Debug>(
    result: &Result<T, PluginError>,
) -> &broker_api::wire::ErrorOutput {
    match result {
        Err(PluginError::Failed(e)) => e,
        other => panic!("expected a typed failure, got {other:?}"),
    }
}

/// The query of a URL as a map.
pub fn query_of(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Every password sent to a fake at most once, and no TOTP step used twice.
pub fn assert_one_password_distinct_steps(recorder: &fake_brokers::Recorder, user: &str) {
    let passwords = recorder.passwords(user);
    assert!(
        passwords.len() <= 1,
        "{user}: the password was sent {} times",
        passwords.len()
    );
    let steps: Vec<u64> = recorder
        .totp_uses(user)
        .iter()
        .filter_map(|u| u.step)
        .collect();
    let mut distinct = steps.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        steps.len(),
        "{user}: a TOTP step was used twice: {steps:?}"
    );
    // Codes the fake matched to no step (a wrong secret, a skewed clock) count too: the same
    // code sent twice is a reused step on the broker's side.
    let mut codes: Vec<String> = recorder
        .totp_uses(user)
        .into_iter()
        .map(|u| u.code)
        .collect();
    let sent = codes.len();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), sent, "{user}: a TOTP code was sent twice");
}

// ---- captured log -------------------------------------------------------------------------------

/// The values that must never be logged, and how far the log has been checked for them. The log
/// is one buffer for the whole test binary, so each check reads only what is new since the last
/// one, with every value in one pass (Aho-Corasick), rather than the whole log once per value.
#[derive(Default)]
struct LeakCheck {
    /// Each value, with the log offset from which it is looked for.
    secrets: BTreeMap<String, usize>,
    /// Log bytes before this offset were checked against every value in `secrets` (from its
    /// offset on), except those in `back`.
    checked: usize,
    /// Values remembered after the log they might be in was checked: looked for once, from
    /// their offset up to `checked`, at the next check.
    back: Vec<String>,
}

static LEAKS: Mutex<Option<LeakCheck>> = Mutex::new(None);

/// Install (once per test binary) a subscriber writing every event at TRACE into a buffer.
pub fn capture_logs() {
    log_capture::install();
}

/// Everything logged so far.
pub fn captured_log() -> String {
    log_capture::text()
}

/// Remember a value that must never be logged from log offset `from` on.
fn remember_from(secret: &str, from: usize) {
    if secret.len() < 4 {
        return;
    }
    let mut leaks = LEAKS.lock().unwrap_or_else(|e| e.into_inner());
    let leaks = leaks.get_or_insert_with(LeakCheck::default);
    match leaks.secrets.get_mut(secret) {
        Some(known) if *known <= from => return,
        Some(known) => *known = from,
        None => {
            leaks.secrets.insert(secret.to_owned(), from);
        }
    }
    if from < leaks.checked {
        leaks.back.push(secret.to_owned());
    }
}

/// Remember a value that must never be logged, wherever in the log it is (a token a login just
/// returned, which that login may have logged already).
pub fn remember(secret: &str) {
    remember_from(secret, 0);
}

/// Remember a credential before it is handed to a plugin.
fn remember_secrets(account: &Account) {
    let now = log_capture::len();
    remember_from(&account.api_secret, now);
    if let Some(p) = &account.password {
        remember_from(p, now);
    }
    if let Some(t) = &account.totp_secret {
        remember_from(t, now);
    }
    // A short PIN could match a port or a time in a log line: tests give their accounts PINs
    // that no log line would hold by chance.
    for value in account.extra.values() {
        remember_from(value, now);
    }
}

/// Whether `line` holds `secret`. A PIN is digits, and so are the microseconds of every log line's
/// time: a secret of digits only counts where it stands alone (no letter or digit either side),
/// as a leaked one would (`pin=739164`, `"739164"`), not inside `22:43:12.739311Z`.
fn leaks(line: &str, secret: &str) -> bool {
    if !secret.bytes().all(|b| b.is_ascii_digit()) {
        return line.contains(secret);
    }
    let alone = |c: Option<char>| !c.is_some_and(|c| c.is_ascii_alphanumeric());
    line.match_indices(secret).any(|(at, _)| {
        alone(line[..at].chars().next_back()) && alone(line[at + secret.len()..].chars().next())
    })
}

/// The lines of `text` (which starts at log offset `start`) that leak one of `secrets`, each
/// looked for from its offset on.
fn leaked_lines(text: &[u8], start: usize, secrets: &[(&str, usize)]) -> Vec<String> {
    if secrets.is_empty() || text.is_empty() {
        return Vec::new();
    }
    let matcher = aho_corasick::AhoCorasick::new(secrets.iter().map(|(s, _)| s)).unwrap();
    let mut lines = Vec::new();
    for m in matcher.find_overlapping_iter(text) {
        let (secret, from) = secrets[m.pattern().as_usize()];
        if start + m.start() < from {
            continue;
        }
        let line_start = text[..m.start()]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line_end = text[m.end()..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| m.end() + i);
        let line = String::from_utf8_lossy(&text[line_start..line_end]);
        if leaks(&line, secret) {
            lines.push(format!("({} characters) {line}", secret.len()));
        }
    }
    lines
}

/// No remembered secret (passwords, API secrets, TOTP secrets, tokens) is in the captured log.
pub fn assert_no_secret_logged() {
    // A test run alone may not have installed the capture yet: then nothing was logged to it.
    log_capture::install();
    let mut leaks = LEAKS.lock().unwrap_or_else(|e| e.into_inner());
    let leaks = leaks.get_or_insert_with(LeakCheck::default);
    // Values remembered late, against the part of the log already checked.
    let back: Vec<(&str, usize)> = leaks
        .back
        .iter()
        .map(|s| (s.as_str(), leaks.secrets[s]))
        .collect();
    let mut found = match back.iter().map(|(_, from)| *from).min() {
        Some(from) => {
            let text = log_capture::since(from);
            let text = &text[..text.len().min(leaks.checked - from)];
            leaked_lines(text, from, &back)
        }
        None => Vec::new(),
    };
    // Every value, against what was logged since the last check.
    let text = log_capture::since(leaks.checked);
    let all: Vec<(&str, usize)> = leaks
        .secrets
        .iter()
        .map(|(s, from)| (s.as_str(), *from))
        .collect();
    found.extend(leaked_lines(&text, leaks.checked, &all));
    assert!(
        found.is_empty(),
        "a secret or token appears in the log:\n{}",
        found.join("\n")
    );
    leaks.checked += text.len();
    leaks.back.clear();
}

#[test]
fn the_leak_check_finds_each_value_from_its_offset_on_in_one_pass() {
    let text = b"a hunter22 b\nc 739311 d\ne 12:43:12.739311Z\n";
    // The text starts at log offset 100; "hunter22" is at 102, "739311" alone at 115.
    let found = leaked_lines(text, 100, &[("hunter22", 0), ("739311", 0), ("absent!", 0)]);
    assert_eq!(
        found,
        ["(8 characters) a hunter22 b", "(6 characters) c 739311 d"]
    );
    assert_eq!(
        leaked_lines(text, 100, &[("hunter22", 103)]),
        Vec::<String>::new()
    );
    assert_eq!(leaked_lines(text, 100, &[("hunter22", 102)]).len(), 1);
}

#[test]
fn the_leak_check_sees_a_pin_alone_but_not_inside_a_timestamp() {
    assert!(leaks("D1 pin=739311&totp=1", "739311"));
    assert!(leaks(r#"{"pin":"739311"}"#, "739311"));
    assert!(!leaks(
        "2026-12-06T22:43:12.739311Z  INFO plugin: ok",
        "739311"
    ));
    assert!(!leaks("step 17397393110", "739311"));
    assert!(leaks("token abc-739311-x", "abc-739311"));
}
