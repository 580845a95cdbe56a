//! The overview: counts by state, schedules and breakers, the last refresh-all, the mirror and
//! the plugins, from the `/health/detailed` figures.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::pages::{self, ist, ist_or_dash};
use super::sign_in::sign_in_page;
use super::{error_page, layout, render, signed_in};
use crate::api::ApiState;
use crate::api::status::{self, DetailedHealthView};
use crate::api::views::{AccountView, account_views};
use crate::clock::iso;
use crate::refresh::LastRun;
use crate::vault::Trigger;

/// `GET /console`: the overview, or the sign-in form.
pub async fn overview(State(api): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let Some(signed) = signed_in(&api, &headers) else {
        return sign_in_page(StatusCode::OK, None);
    };
    let figures = match status::detailed(&api).await {
        Ok(f) => f,
        Err(e) => return error_page(Some(&signed), &e),
    };
    let views = match account_views(&api, None, None).await {
        Ok(v) => v,
        Err(e) => return error_page(Some(&signed), &e),
    };
    let counts = counts(&figures, &views);
    let schedules = schedules(&figures);
    let flash = api.console.take_flash(&signed);
    render(
        StatusCode::OK,
        &pages::Overview {
            layout: layout("Overview", Some(&signed), flash),
            counts,
            users: figures.users,
            accounts: figures.accounts,
            attempts: figures.attempts,
            success_rate: figures.success_rate,
            schedules,
            mirror_error_at: figures.mirror.last_error_at.as_deref().map(ist),
            mirror: figures.mirror,
            plugins: figures.plugins,
            plugin_failures: figures.plugin_failures,
            clock_warning: figures.clock_warning,
            last_run: api.refresher().last_run().map(|run| last_run_view(&run)),
            running: api.refresh_all.running(),
        },
    )
}

/// The account counts, each a link to the accounts it counts.
fn counts(figures: &DetailedHealthView, views: &[AccountView]) -> Vec<pages::Count> {
    let all = "/console/accounts".to_owned();
    let of = |label: &'static str, state: &str| pages::Count {
        label,
        n: views.iter().filter(|v| v.state == state).count(),
        href: format!("/console/accounts?state={state}"),
    };
    vec![
        pages::Count {
            label: "logged in",
            n: figures.active_tokens,
            href: all.clone(),
        },
        pages::Count {
            label: "expiring within the hour",
            n: figures.tokens_expiring_within_hour,
            href: all,
        },
        of("need attention", "needs_attention"),
        of("paused", "paused"),
        of("managed externally", "managed_externally"),
        of("awaiting approval", "awaiting_approval"),
    ]
}

/// Each broker's next scheduled run (IST) and its circuit breaker.
fn schedules(figures: &DetailedHealthView) -> Vec<pages::Schedule> {
    let brokers: BTreeSet<&String> = figures
        .next_runs
        .keys()
        .chain(figures.breakers.keys())
        .collect();
    brokers
        .into_iter()
        .map(|broker| pages::Schedule {
            broker: broker.clone(),
            next_run: ist_or_dash(figures.next_runs.get(broker).cloned().flatten().as_deref()),
            breaker: match figures.breakers.get(broker) {
                None => "closed".to_owned(),
                Some(b) if b.open => format!(
                    "open until {}: scheduled logins pause ({} accounts found the broker down)",
                    ist_or_dash(b.open_until.as_deref()),
                    b.failing_accounts
                ),
                Some(b) => format!("closed ({} accounts failing in a row)", b.failing_accounts),
            },
        })
        .collect()
}

/// The last refresh-all in words.
fn last_run_view(run: &LastRun) -> pages::LastRun {
    pages::LastRun {
        scope: run.broker.as_ref().map_or_else(
            || "every account".to_owned(),
            |b| format!("every account at {b}"),
        ),
        trigger: match run.trigger {
            Trigger::Schedule => "the schedule",
            Trigger::CatchUp => "catch-up",
            Trigger::Manual => "the command line",
            Trigger::Api => "the API or the console",
            Trigger::Assisted => "an assisted login",
        },
        finished: ist(&iso(run.finished_ms)),
        seconds: (run.finished_ms - run.started_ms).max(0) / 1000,
        progress: run.progress,
    }
}
