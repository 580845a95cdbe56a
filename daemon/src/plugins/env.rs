//! The environment every plugin call runs in: the clock, the TOTP guard, pooled HTTP clients and
//! the call limits; and a fresh [`PluginCall`] for each call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Egress;
use super::host::{self, PluginCall};
use super::{Plugin, skew, totp};

/// The limits of every plugin call: how long it may take and how much it may read.
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// Whole-call deadline.
    pub timeout: Duration,
    /// Timeout of one HTTP exchange.
    pub request_timeout: Duration,
    /// Largest HTTP response body.
    pub response_cap: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            timeout: Duration::from_secs(90),
            request_timeout: Duration::from_secs(15),
            response_cap: 2 << 20,
        }
    }
}

/// Deadline `limits.timeout` from now.
pub fn deadline(limits: &CallLimits) -> Instant {
    Instant::now() + limits.timeout
}

/// The plugin call environment: what every plugin call shares (the clock, the TOTP guard, HTTP
/// clients, the limits). One per daemon; each call gets its own [`PluginCall`] from it.
#[derive(Debug)]
pub struct PluginEnv {
    /// The clock plugins see.
    pub clock: Arc<dyn crate::clock::Clock>,
    /// TOTP steps handed out, process-wide.
    pub steps: Arc<totp::StepGuard>,
    /// Each broker's clock skew, from the `Date` of its responses.
    pub skew: Arc<skew::ClockSkew>,
    /// Deadlines and caps.
    pub limits: CallLimits,
    /// One pooled client per egress family (`true`: IPv4 only); built on first use.
    clients: parking_lot::Mutex<BTreeMap<bool, reqwest::Client>>,
}

/// The account a plugin call acts for, and what the call may reach and know.
pub struct AccountAccess<'a> {
    /// The plugin.
    pub plugin: &'a Plugin,
    /// `user_id/broker`.
    pub account: String,
    /// Configured base URLs of this broker.
    pub configured_urls: &'a BTreeMap<String, String>,
    /// Extra allowed hosts from configuration.
    pub extra_hosts: &'a [String],
    /// Force IPv4 egress.
    pub ipv4_only: bool,
    /// The account's decoded TOTP secret.
    pub totp_secret: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// Secrets to redact from plugin logs (password, API secret, ...).
    pub secrets: Vec<&'a str>,
}

impl PluginEnv {
    /// An environment on `clock` with `limits`.
    pub fn new(clock: Arc<dyn crate::clock::Clock>, limits: CallLimits) -> PluginEnv {
        PluginEnv {
            clock,
            steps: Arc::default(),
            skew: Arc::default(),
            limits,
            clients: Default::default(),
        }
    }

    fn client(&self, ipv4_only: bool) -> reqwest::Client {
        let mut clients = self.clients.lock();
        clients
            .entry(ipv4_only)
            .or_insert_with(|| {
                let mut builder = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("tokenbot/", env!("CARGO_PKG_VERSION")))
                    .pool_idle_timeout(Duration::from_secs(30))
                    .connect_timeout(Duration::from_secs(10));
                if ipv4_only {
                    builder = builder.local_address(std::net::IpAddr::from([0, 0, 0, 0]));
                }
                builder.build().unwrap_or_else(|e| {
                    tracing::error!(error = %e, "HTTP client with custom settings failed; using defaults");
                    reqwest::Client::new()
                })
            })
            .clone()
    }

    /// A fresh call (new cookie jar, new deadline) acting for `target`. Must be called inside a
    /// tokio runtime.
    pub fn call_for(&self, target: AccountAccess<'_>) -> PluginCall {
        let redactor = host::Redactor::default();
        for secret in &target.secrets {
            redactor.add(secret);
        }
        PluginCall {
            broker: target.plugin.id.clone(),
            account: target.account,
            http: Egress {
                client: self.client(target.ipv4_only),
                jar: Arc::default(),
                allowed_hosts: Arc::new(
                    target
                        .plugin
                        .allowed_hosts(target.configured_urls, target.extra_hosts),
                ),
                response_cap: self.limits.response_cap,
                default_timeout: self.limits.request_timeout,
                limiter: None,
            },
            runtime: tokio::runtime::Handle::current(),
            clock: self.clock.clone(),
            totp_secret: target.totp_secret,
            steps: self.steps.clone(),
            skew: self.skew.clone(),
            step_log: None,
            deadline: deadline(&self.limits),
            clock_deadline_ms: self
                .clock
                .now_ms()
                .saturating_add(i64::try_from(self.limits.timeout.as_millis()).unwrap_or(i64::MAX)),
            redactor,
        }
    }
}
