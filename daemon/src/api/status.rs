//! The daemon's state as `/health/detailed` shows it and the console's overview reads it: token
//! figures, login statistics, schedules, breakers, plugins, the mirror, broker clocks. Computed
//! here once for both (route files never import each other). None of it holds a secret.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use super::error::ApiError;
use super::views::iso;

/// A loaded strategy.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PluginOut)]
pub struct PluginView {
    /// Broker id.
    pub id: String,
    /// Strategy version.
    pub version: String,
    /// ABI version, `major.minor`.
    pub abi: String,
    /// `bundled` or the `.so` path.
    pub source: String,
    /// SHA-256 of the `.so` (none for bundled).
    pub sha256: Option<String>,
    /// Whether it offers assisted (browser) login.
    pub assisted_login: bool,
}

/// A plugin that failed to load.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = PluginFailureOut)]
pub struct PluginFailureView {
    /// The file.
    pub path: String,
    /// Why.
    pub error: String,
}

/// The Postgres mirror.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = MirrorOut)]
pub struct MirrorView {
    /// Whether `[mirror.postgres]` is configured.
    pub enabled: bool,
    /// Whether it holds a working connection.
    pub connected: bool,
    /// Token changes waiting for delivery (the outbox).
    pub backlog: u64,
    /// Records delivered since start.
    pub delivered: u64,
    /// The latest error, until the next success: for an error PostgreSQL reported, its
    /// severity, SQLSTATE and primary message (never its DETAIL, which may quote a row).
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<String>,
}

/// `GET /health/detailed`
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DetailedHealthOut)]
pub struct DetailedHealthView {
    /// `ok` when the vault answers; `degraded` while its database cannot be reached (the token
    /// figures are then those last counted, zeros if none were).
    pub status: String,
    /// This daemon's role among those sharing its vault (`[vault] engine = "postgres"`): the
    /// `leader` runs the schedules, catch-up, reminders, the mirror and the events webhook; a
    /// `follower` serves and runs the logins asked of it. A vault file's daemon always leads.
    pub role: crate::cluster::Role,
    /// Whether the vault's database could not be reached lately: tokens are then served from
    /// this daemon's cache while they are valid.
    pub degraded: bool,
    /// Seconds since this router was built (≈ daemon uptime).
    pub uptime_secs: u64,
    /// Distinct users with at least one account.
    pub users: usize,
    /// Accounts (user × broker).
    pub accounts: usize,
    /// Tokens valid now (counted at most once a second).
    pub active_tokens: usize,
    /// Tokens valid now that expire within the hour.
    pub tokens_expiring_within_hour: usize,
    /// Percentage (0–100) of login attempts since start that produced a token; null before the
    /// first attempt.
    pub success_rate: Option<f64>,
    /// Mean duration of a login attempt since start, in milliseconds (0 before the first).
    pub avg_execution_ms: u64,
    /// Login attempts since start.
    pub attempts: u64,
    /// Next scheduled run per broker (null: disabled or no future run).
    pub next_runs: BTreeMap<String, Option<String>>,
    /// Loaded strategies.
    pub plugins: Vec<PluginView>,
    /// Plugins that failed to load at the last scan.
    pub plugin_failures: Vec<PluginFailureView>,
    /// The Postgres mirror.
    pub mirror: MirrorView,
    /// Per-broker circuit breakers: brokers whose scheduled and catch-up logins pause after
    /// several accounts in a row found them unavailable. Brokers never tripped are absent.
    pub breakers: BTreeMap<String, BreakerView>,
    /// Each broker's clock minus this host's, in milliseconds, from the `Date` of its recent
    /// responses (brokers not heard from lately are absent).
    pub clock_skew_ms: BTreeMap<String, i64>,
    /// Set when a broker's clock is more than 5 s from this host's: TOTP codes then follow the
    /// broker's time (up to 10 minutes off), and the host's NTP wants checking.
    pub clock_warning: Option<String>,
}

/// One broker's circuit breaker.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = BreakerOut)]
pub struct BreakerView {
    /// Whether scheduled and catch-up logins of this broker pause now.
    pub open: bool,
    /// Until when they pause (RFC 3339), if the breaker ever opened.
    pub open_until: Option<String>,
    /// Distinct accounts in the current run of `broker_unavailable` refreshes.
    pub failing_accounts: usize,
}

/// The figures of `/health/detailed`.
pub async fn detailed(api: &ApiState) -> Result<DetailedHealthView, ApiError> {
    let counts = super::token_counts::token_counts(api).await?;
    let outbox = super::token_counts::backlog(api).await?;
    let refresher = api.refresher();
    let stats = refresher.stats();
    let clock_skew_ms = (api.app.plugin_env.skew).report(api.now_ms());
    let (plugins, plugin_failures) = plugin_views(api);
    let mirror = mirror_view(api, outbox);
    let degraded = api.app.vault.is_degraded();
    Ok(DetailedHealthView {
        status: if degraded { "degraded" } else { "ok" }.into(),
        role: api.app.cluster.role(),
        degraded,
        uptime_secs: api.started.elapsed().as_secs(),
        users: counts.users,
        accounts: counts.accounts,
        active_tokens: counts.valid,
        tokens_expiring_within_hour: counts.expiring_within_hour,
        success_rate: (stats.attempts > 0)
            .then(|| (stats.successes as f64 * 1000.0 / stats.attempts as f64).round() / 10.0),
        avg_execution_ms: stats.avg_execution_ms,
        attempts: stats.attempts,
        next_runs: refresher
            .next_runs()
            .into_iter()
            .map(|(broker, at)| (broker, at.map(iso)))
            .collect(),
        plugins,
        plugin_failures,
        mirror,
        breakers: breaker_views(&refresher),
        clock_warning: clock_warning(&clock_skew_ms),
        clock_skew_ms,
    })
}

/// The warning of `/health/detailed` for brokers whose clock is more than 5 s from ours.
fn clock_warning(skews: &BTreeMap<String, i64>) -> Option<String> {
    use crate::plugins::skew::{PLAUSIBLE_MS, WARN_MS};
    let off: Vec<String> = skews
        .iter()
        .filter(|(_, ms)| ms.abs() > WARN_MS)
        .map(|(broker, ms)| {
            let note = if ms.abs() > PLAUSIBLE_MS {
                "; implausible, not corrected for"
            } else {
                ""
            };
            format!("{broker} {:+.1} s{note}", *ms as f64 / 1000.0)
        })
        .collect();
    (!off.is_empty()).then(|| {
        format!(
            "broker clocks differ from this host's by more than 5 s ({}): TOTP codes follow the \
             broker's time; check the host's NTP",
            off.join(", ")
        )
    })
}

/// The loaded strategies, and the plugin files that failed to load.
fn plugin_views(api: &ApiState) -> (Vec<PluginView>, Vec<PluginFailureView>) {
    let plugins = api
        .app
        .plugins
        .all()
        .values()
        .map(|p| PluginView {
            id: p.id.clone(),
            version: p.version.clone(),
            abi: format!("{}.{}", p.abi.0, p.abi.1),
            source: p.source.to_string(),
            sha256: p.sha256.clone(),
            assisted_login: p.has_assisted(),
        })
        .collect();
    let plugin_failures = api
        .app
        .plugins
        .failures()
        .into_iter()
        .map(|f| PluginFailureView {
            path: f.path.display().to_string(),
            error: f.error.to_string(),
        })
        .collect();
    (plugins, plugin_failures)
}

/// The Postgres mirror's state; `backlog` is the vault's outbox length.
fn mirror_view(api: &ApiState, backlog: u64) -> MirrorView {
    match &api.app.mirror {
        Some(m) => {
            let s = m.status();
            MirrorView {
                enabled: s.enabled,
                connected: s.connected,
                backlog,
                delivered: s.delivered,
                last_error: s.last_error,
                last_error_at: s.last_error_at_ms.map(iso),
            }
        }
        None => MirrorView {
            enabled: false,
            connected: false,
            backlog,
            delivered: 0,
            last_error: None,
            last_error_at: None,
        },
    }
}

/// Each broker's circuit breaker.
fn breaker_views(refresher: &crate::refresh::Refresher) -> BTreeMap<String, BreakerView> {
    refresher
        .breakers()
        .into_iter()
        .map(|(broker, b)| {
            let view = BreakerView {
                open: b.open,
                open_until: (b.open_until_ms > 0).then(|| iso(b.open_until_ms)),
                failing_accounts: b.failing_accounts,
            };
            (broker, view)
        })
        .collect()
}
