//! Leadership among the daemons sharing one vault (the postgres engine): every daemon serves the
//! API and runs the logins asked of it; only the leader runs what must happen once per vault:
//! the schedules and catch-up, approval reminders, the Postgres mirror and the events webhook.
//!
//! A daemon on a vault file is its only daemon, hence always the leader. On a shared vault,
//! leadership is the vault's (`Vault::lead`: an advisory lock on a session of its own); this
//! module asks for it, and checks the leader still holds it, on the timings `[vault]
//! failover_secs` sets, and publishes the role.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::vault::{Location, Vault, blocking};

/// What this daemon is among those sharing its vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the schedules, catch-up, reminders, the mirror and the events webhook.
    Leader,
    /// Serves and runs the logins asked of it; takes over when the leader ends.
    Follower,
}

impl Role {
    /// `leader` or `follower`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

/// This daemon's role, as the leadership task last found it.
#[derive(Debug)]
pub struct Cluster {
    role: watch::Sender<Role>,
    /// How often a leader checks it still leads (a fifth of `failover_secs`); none for a file.
    leader_check: Option<Duration>,
}

/// How often a follower asks for leadership.
const FOLLOWER_ASKS_EVERY: Duration = Duration::from_secs(1);

impl Cluster {
    /// The role of a daemon on `vault`: a file's daemon leads; a shared vault's is a follower
    /// until [`run`] wins the leadership.
    pub fn new(vault: &Vault) -> Cluster {
        let leader_check = match vault.location() {
            Location::Postgres(target) if vault.is_shared() => {
                Some(Duration::from_secs(target.failover_secs.max(3)) / 5)
            }
            _ => None,
        };
        let role = if leader_check.is_some() {
            Role::Follower
        } else {
            Role::Leader
        };
        Cluster {
            role: watch::Sender::new(role),
            leader_check,
        }
    }

    /// The role now.
    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Follow the role as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }
}

/// The leadership task: ask for leadership, or check it still holds, until `shutdown`. Nothing
/// to do for a file's daemon.
pub async fn run(cluster: Arc<Cluster>, vault: Arc<Vault>, shutdown: impl Future<Output = ()>) {
    let Some(leader_check) = cluster.leader_check else {
        return;
    };
    tokio::pin!(shutdown);
    let mut unreachable = false;
    loop {
        let v = vault.clone();
        let leads = match blocking(move || v.lead()).await {
            Ok(leads) => {
                unreachable = false;
                leads
            }
            Err(e) => {
                if !std::mem::replace(&mut unreachable, true) {
                    tracing::warn!(error = %e, "cluster: cannot reach the vault's database to lead");
                }
                false
            }
        };
        let role = if leads { Role::Leader } else { Role::Follower };
        let was = cluster.role.send_replace(role);
        if was != role {
            tracing::warn!(
                role = role.as_str(),
                "cluster: this daemon is now the {}",
                role.as_str()
            );
        }
        let pause = if leads {
            leader_check
        } else {
            FOLLOWER_ASKS_EVERY
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut shutdown => break,
        }
    }
    // Shutting down: another daemon takes over now, not when this process has drained. The
    // leader's tasks stop with the role (logins in flight finish, under their leases).
    let v = vault.clone();
    let _ = blocking(move || {
        v.resign();
        Ok(())
    })
    .await;
    if cluster.role.send_replace(Role::Follower) == Role::Leader {
        tracing::info!("cluster: handed leadership over for shutdown");
    }
}

/// Run `task` while this daemon leads: started each time it becomes the leader, dropped when it
/// stops leading, until `shutdown`.
pub async fn while_leading<Fut>(
    mut role: watch::Receiver<Role>,
    shutdown: impl Future<Output = ()>,
    mut task: impl FnMut() -> Fut,
) where
    Fut: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            led = role.wait_for(|r| *r == Role::Leader) => if led.is_err() { return },
            () = &mut shutdown => return,
        }
        let mut lost = role.clone();
        tokio::select! {
            () = task() => return,
            _ = lost.wait_for(|r| *r != Role::Leader) => {
                tracing::info!("cluster: no longer leading; stopping the leader's tasks");
            }
            () = &mut shutdown => return,
        }
    }
}
