//! Accept loop on hyper's HTTP/1.1 connections, so the server gets what `axum::serve` does not
//! offer: a header read timeout (slow clients cannot hold connections open for free), a cap on open
//! connections, the peer address on every request, and a bounded graceful shutdown.
//!
//! The header read timeout is this module's, not hyper's: hyper's arms a timer for every request
//! (a boxed `Sleep` registered in and removed from tokio's timer wheel each time), a cost every
//! keep-alive read would pay (docs/performance.md). Here each connection has one timer that fires
//! once per timeout period at most: a connection with no request in flight for longer than the
//! timeout is closed, whether its headers never finished, it is idle between requests (as hyper
//! did) or it never sent a byte.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::logging::Throttle;

/// How the server treats connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Time a client has to send a request's headers, from the connection's start or the end of
    /// its previous request.
    pub header_read_timeout: Duration,
    /// Time in-flight requests get to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// Connections served at once; past it, a new connection is closed as soon as accepted.
    pub max_connections: usize,
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting, let in-flight requests
/// finish (at most `drain_timeout`), and return.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let builder = http1::Builder::new();
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(
        options.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let refusals = Throttle::new(Duration::from_secs(60));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Past the cap a connection is closed at once, not left unaccepted: in the kernel's
        // backlog it would wait for a slot that keep-alive connections may hold for minutes,
        // while closed, its client (or load balancer) knows at once and can go elsewhere.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            warn_refused(&refusals, peer, options.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let activity = Arc::new(Activity::new());
        let tracked = activity.clone();
        let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(peer));
            let busy = Busy::begin(&tracked);
            let response = app.clone().oneshot(request);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        // The connection runs in its own task, and a second one watches it, so the connection's
        // polls never touch the timer.
        let running = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
        tokio::spawn(watch_connection(
            running,
            activity,
            options.header_read_timeout,
            slot,
            peer,
        ));
    }
    drop(listener);
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time; closing them");
    }
}

/// Say, at most once a minute, that connections are being closed at the cap.
fn warn_refused(refusals: &Throttle, peer: SocketAddr, max_connections: usize) {
    if let Some(others) = refusals.allow() {
        tracing::warn!(
            %peer,
            max_connections,
            others_since_last_warning = others,
            "connection limit reached (server.max_connections): new connections are closed"
        );
    }
}

/// Hold the connection's slot while it runs, and close it once it has gone `timeout` without a
/// request in flight (headers unfinished, idle between requests, or silent since it connected).
async fn watch_connection(
    mut running: tokio::task::JoinHandle<()>,
    activity: Arc<Activity>,
    timeout: Duration,
    _slot: tokio::sync::OwnedSemaphorePermit,
    peer: SocketAddr,
) {
    let timer = tokio::time::sleep_until(activity.since(0) + timeout);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            _ = &mut running => return,
            () = &mut timer => match activity.deadline(timeout) {
                Some(next) => timer.as_mut().reset(next),
                None => {
                    tracing::debug!(%peer, "no request headers within the header read timeout; connection closed");
                    running.abort();
                    return;
                }
            },
        }
    }
}

/// What a connection is doing: requests in flight, and since when it has had none.
struct Activity {
    /// When the connection was accepted; `idle_since_ms` counts from here.
    start: Instant,
    in_flight: AtomicU32,
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn since(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// When the connection must next be checked, or `None` when it has had no request in flight
    /// for `timeout` and is to be closed.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.deadline_at(Instant::now(), timeout)
    }

    fn deadline_at(&self, now: Instant, timeout: Duration) -> Option<Instant> {
        // In flight first: a request that ends stores its end before it stops counting, so a
        // connection seen idle here shows an end at least that recent.
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Some(now + timeout);
        }
        let due = self.since(self.idle_since_ms.load(Ordering::Acquire)) + timeout;
        (due > now).then_some(due)
    }
}

/// A request in flight on a connection; when dropped (answered, or abandoned by the client), the
/// connection's wait for the next request's headers starts.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = self.0.start.elapsed().as_millis();
        self.0
            .idle_since_ms
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn a_connection_without_a_request_is_due_one_timeout_after_it_started() {
        let activity = Activity::new();
        let start = activity.start;
        assert_eq!(
            activity.deadline_at(start + Duration::from_secs(3), TIMEOUT),
            Some(start + TIMEOUT)
        );
        assert_eq!(activity.deadline_at(start + TIMEOUT, TIMEOUT), None);
    }

    #[test]
    fn a_request_in_flight_is_never_cut_and_its_end_restarts_the_wait() {
        let activity = Arc::new(Activity::new());
        let start = activity.start;
        let busy = Busy::begin(&activity);
        let late = start + Duration::from_secs(25);
        assert_eq!(activity.deadline_at(late, TIMEOUT), Some(late + TIMEOUT));
        drop(busy);
        let ended = activity.since(activity.idle_since_ms.load(Ordering::Acquire));
        assert_eq!(
            activity.deadline_at(ended + Duration::from_secs(9), TIMEOUT),
            Some(ended + TIMEOUT)
        );
        assert_eq!(activity.deadline_at(ended + TIMEOUT, TIMEOUT), None);
    }

    #[test]
    fn with_two_requests_in_flight_the_wait_starts_when_both_ended() {
        let activity = Arc::new(Activity::new());
        let (a, b) = (Busy::begin(&activity), Busy::begin(&activity));
        drop(a);
        let now = activity.start + Duration::from_secs(60);
        assert_eq!(activity.deadline_at(now, TIMEOUT), Some(now + TIMEOUT));
        drop(b);
        assert_eq!(activity.in_flight.load(Ordering::Acquire), 0);
    }
}
