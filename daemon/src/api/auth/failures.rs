//! The per-client limit on failed authentications: counted per address in fixed windows; past
//! the limit a further failure is answered 429 until the window ends.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use quick_cache::sync::{EntryAction, EntryResult};

/// Failed authentications one IP may make per window.
pub const MAX_FAILURES: u32 = 20;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are counted at once. Past this, the counters the cache finds
/// least worth keeping (seen once, long ago) are evicted to make room.
pub(super) const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Failed authentications per client, in fixed windows. Touched by failed authentications only.
/// A bounded, sharded cache (quick_cache) instead of a map under one mutex: a flood of addresses
/// evicts counters one at a time, O(1) each, and never stops everyone for a sweep of the map.
pub(super) struct FailureCounts {
    /// (window start in ms since `created`, failures in the window), by client (IPv6 by /64).
    pub(super) counts: quick_cache::sync::Cache<IpAddr, (u64, u32)>,
    created: Instant,
    /// The warning of a client reaching the limit: once a window, whatever the number of clients.
    warn: crate::logging::Throttle,
}

impl FailureCounts {
    pub(super) fn new(capacity: usize) -> FailureCounts {
        FailureCounts {
            // Room is made as clients come: most routers (every test's) never count one.
            counts: quick_cache::sync::Cache::with_weighter(
                capacity.min(1024),
                capacity as u64,
                quick_cache::UnitWeighter,
            ),
            created: Instant::now(),
            warn: crate::logging::Throttle::new(FAILURE_WINDOW),
        }
    }

    /// Count a failure of `client`; `Some(wait)` when it is past the limit, until its window
    /// ends.
    pub(super) fn record(&self, client: IpAddr) -> Option<Duration> {
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let window = FAILURE_WINDOW.as_millis() as u64;
        let key = limit_key(client);
        let (start, count) = match self.counts.entry(&key, None, |_, (start, count)| {
            if now.saturating_sub(*start) >= window {
                (*start, *count) = (now, 0);
            }
            *count = count.saturating_add(1);
            EntryAction::Retain((*start, *count))
        }) {
            EntryResult::Retained(counted) => counted,
            EntryResult::Vacant(slot) => {
                let _ = slot.insert((now, 1));
                (now, 1)
            }
            // Neither is asked for (no removal, no timeout).
            _ => (now, 1),
        };
        if count <= MAX_FAILURES {
            return None;
        }
        if count == MAX_FAILURES + 1
            && let Some(others) = self.warn.allow()
        {
            tracing::warn!(
                %client,
                failures = MAX_FAILURES,
                others_since_last_warning = others,
                "authentication failures: this address gets 429 for its failures until the window ends"
            );
        }
        Some(
            Duration::from_millis((start + window).saturating_sub(now)).max(Duration::from_secs(1)),
        )
    }
}

/// What failures are counted by: the address, and for IPv6 its /64 (one host commonly holds a
/// whole /64 and could otherwise take a fresh address for every guess).
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
}
