//! Refresh all from the console: one run per daemon at a time, followed on a page whose bar moves
//! with the run's server-sent events (`console.js`), ending in the Successful / Failed / Skipped /
//! Total summary. A second "Refresh all" while one runs joins it rather than starting another;
//! each account's single flight would make a parallel run wait anyway.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use super::pages::{self, segment};
use super::{NoFields, Posted, Session, layout, message, render, see_other};
use crate::api::ApiState;
use crate::refresh::{Progress, RefreshSummary, Selection};
use crate::vault::{Outcome, Trigger};

const PAGE: &str = "/console/refresh-all";

/// The console's refresh-all: the one in progress, or the last one.
#[derive(Default)]
pub struct RefreshAll {
    current: Mutex<Option<Run>>,
}

#[derive(Clone)]
struct Run {
    progress: watch::Receiver<Progress>,
    /// Set when the run has finished.
    summary: Arc<OnceLock<RefreshSummary>>,
}

impl RefreshAll {
    /// Whether a run is in progress.
    pub fn running(&self) -> bool {
        self.current
            .lock()
            .as_ref()
            .is_some_and(|run| run.summary.get().is_none())
    }

    fn current(&self) -> Option<Run> {
        self.current.lock().clone()
    }

    /// Start a refresh of every account unless one is in progress. Whether one was started.
    fn start(&self, api: &ApiState) -> bool {
        let mut current = self.current.lock();
        if current
            .as_ref()
            .is_some_and(|run| run.summary.get().is_none())
        {
            return false;
        }
        let (tx, rx) = watch::channel(Progress::default());
        let summary = Arc::new(OnceLock::new());
        let done = Finish(summary.clone());
        let refresher = api.refresher();
        tokio::spawn(async move {
            let result = refresher
                .refresh_observed(Selection::all(), Trigger::Api, &tx)
                .await;
            tracing::info!(
                successful = result.successful,
                failed = result.failed,
                skipped = result.skipped,
                total = result.total,
                "refresh-all from the console"
            );
            let _ = done.0.set(result);
            // Dropping `tx` here, after the summary is kept, ends the run's event streams.
        });
        *current = Some(Run {
            progress: rx,
            summary,
        });
        true
    }
}

/// Ends a run's record even if its task panics: an empty summary, so the next "Refresh all"
/// can start.
struct Finish(Arc<OnceLock<RefreshSummary>>);

impl Drop for Finish {
    fn drop(&mut self) {
        let _ = self.0.set(RefreshSummary::default());
    }
}

/// `POST /console/refresh-all`: start (or join) a refresh of every account, then its page.
pub async fn start_refresh_all(
    State(api): State<Arc<ApiState>>,
    Posted { signed, .. }: Posted<NoFields>,
) -> Response {
    if api.refresh_all.start(&api) {
        tracing::info!(key = %signed.key, "console: refresh all");
    }
    see_other(PAGE)
}

/// `GET /console/refresh-all`: the run's progress; once it has finished, the accounts it did
/// not log in.
pub async fn refresh_all_page(
    State(api): State<Arc<ApiState>>,
    Session(signed): Session,
) -> Response {
    let Some(run) = api.refresh_all.current() else {
        return message(
            StatusCode::OK,
            Some(&signed),
            "No refresh-all yet",
            "No refresh-all has been started from the console since the daemon started. Start \
             one from the overview.",
        );
    };
    let progress = *run.progress.borrow();
    let summary = run.summary.get();
    let problems = summary.map(problems).unwrap_or_default();
    let flash = api.console.take_flash(&signed);
    render(
        StatusCode::OK,
        &pages::RefreshAll {
            layout: layout("Refresh all", Some(&signed), flash),
            progress,
            finished: summary.is_some(),
            problems,
        },
    )
}

fn problems(summary: &RefreshSummary) -> Vec<pages::Problem> {
    summary
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Success)
        .map(|r| pages::Problem {
            user: r.user_id.clone(),
            broker: r.broker.clone(),
            outcome: match r.outcome {
                Outcome::Failed => "failed",
                Outcome::Skipped => "skipped",
                Outcome::PendingApproval | Outcome::Success => "awaiting approval",
            },
            message: r
                .message
                .clone()
                .or_else(|| r.error_class.clone())
                .unwrap_or_default(),
            href: format!(
                "/console/accounts/{}/{}",
                segment(&r.user_id),
                segment(&r.broker)
            ),
        })
        .collect()
}

/// One event's data.
#[derive(Serialize)]
struct Update {
    #[serde(flatten)]
    progress: Progress,
    /// The run has ended: this is the last event.
    finished: bool,
}

/// `GET /console/refresh-all/events`: `event: progress` with the counts
/// (`{"done","total","successful","failed","skipped","finished"}`) as accounts finish, then one
/// `event: done` with the final counts, and the stream ends. 204 when no run was started.
pub async fn progress_events(State(api): State<Arc<ApiState>>, Session(_): Session) -> Response {
    let Some(run) = api.refresh_all.current() else {
        // Nothing to follow: 204 tells an `EventSource` not to reconnect.
        return StatusCode::NO_CONTENT.into_response();
    };
    // (receiver, whether the first event went, whether the last did)
    let stream = futures::stream::unfold(
        (run.progress, false, false),
        |(mut rx, started, ended)| async move {
            if ended {
                return None;
            }
            // The first event is the state now, once the run has listed its accounts; after
            // it, each change. The run's task drops the sender once its summary is kept, so a
            // closed channel means the run ended, and its last value is final.
            let listing = |p: &Progress| p.total == 0;
            let mut closed = rx.has_changed().is_err();
            let mut wait = !closed && (started || listing(&rx.borrow()));
            while wait {
                closed = rx.changed().await.is_err();
                wait = !closed && listing(&rx.borrow());
            }
            let update = Update {
                progress: *rx.borrow_and_update(),
                finished: closed,
            };
            let event = Event::default()
                .event(if closed { "done" } else { "progress" })
                .data(serde_json::to_string(&update).unwrap_or_default());
            Some((Ok::<_, Infallible>(event), (rx, true, closed)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
