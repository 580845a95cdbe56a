//! Several daemons sharing one PostgreSQL vault (the HA figures, `scenario::ha`): the vault's
//! schema and `tokenbot init`, starting a node, and each node's role as `GET /health` reports it.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::daemon::{Daemon, DaemonEnv};
use crate::http::{Api, Auth};
use crate::world::Mirror;

/// The daemons of the cluster.
pub const NODES: usize = 3;

/// A shared vault: its schema in the test database, and the settings every node gets.
pub struct SharedVault {
    pub schema: String,
    /// `TOKENBOT_VAULT__*` (and the URL) for the postgres engine in that schema.
    pub env: Vec<(String, String)>,
}

impl SharedVault {
    /// A fresh schema `schema` in the test database (dropped first, as the mirror's is), and
    /// `tokenbot init` creating the vault in it.
    pub async fn create(
        env: &DaemonEnv,
        db: &Mirror,
        pg_url: &str,
        schema: &str,
        failover_secs: u64,
    ) -> anyhow::Result<SharedVault> {
        db.execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
        ))
        .await?;
        let vault = SharedVault {
            schema: schema.to_owned(),
            env: vec![
                ("TOKENBOT_VAULT__ENGINE".into(), "postgres".into()),
                ("TOKENBOT_VAULT_URL".into(), pg_url.to_owned()),
                ("TOKENBOT_VAULT__SCHEMA".into(), schema.to_owned()),
                (
                    "TOKENBOT_VAULT__FAILOVER_SECS".into(),
                    failover_secs.to_string(),
                ),
            ],
        };
        let (ok, out) = env.run_cli("ha-init", &["init"], &vault.env)?;
        if !ok || !out.contains("created") {
            bail!("tokenbot init on the postgres vault (schema {schema}) failed:\n{out}");
        }
        Ok(vault)
    }

    /// Start one node on the vault (`serve`, no `--dev`: `init` made the vault), with `extra`
    /// settings besides the vault's.
    pub fn start(
        &self,
        env: &DaemonEnv,
        label: &str,
        log_level: &str,
        extra: &[(String, String)],
    ) -> anyhow::Result<Daemon> {
        let mut settings = self.env.clone();
        settings.extend(extra.iter().cloned());
        env.start_serve(label, log_level, &settings, false)
    }

    pub async fn drop_schema(&self, db: &Mirror) {
        let _ = db
            .execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
    }
}

/// `GET /health` of one node: `(status, role)`, or `None` when it does not answer 200 within a
/// second (a killed node refuses the connection at once).
pub async fn health(api: &Api, addr: &str) -> Option<(String, String)> {
    let reply = tokio::time::timeout(
        Duration::from_secs(1),
        api.at(addr).get("/health", Auth::Key),
    )
    .await
    .ok()?
    .ok()?;
    if reply.status != 200 {
        return None;
    }
    let json = reply.json();
    Some((
        json["status"].as_str()?.to_owned(),
        json["role"].as_str()?.to_owned(),
    ))
}

/// Every node's `/health`, read at once.
pub async fn roles(api: &Api, nodes: &[Daemon]) -> Vec<Option<(String, String)>> {
    let reads: Vec<_> = nodes
        .iter()
        .map(|d| {
            let (api, addr) = (api.clone(), d.addr.clone());
            tokio::spawn(async move { health(&api, &addr).await })
        })
        .collect();
    let mut out = Vec::with_capacity(reads.len());
    for read in reads {
        out.push(read.await.ok().flatten());
    }
    out
}

/// Wait (`timeout` at most) until exactly one node reports `leader`, every other `follower`, and
/// all `ok`; the leader's index.
pub async fn one_leader(api: &Api, nodes: &[Daemon], timeout: Duration) -> anyhow::Result<usize> {
    let started = Instant::now();
    loop {
        let seen = roles(api, nodes).await;
        let leaders: Vec<usize> = (seen.iter().enumerate())
            .filter(|(_, h)| h.as_ref().is_some_and(|(_, r)| r == "leader"))
            .map(|(i, _)| i)
            .collect();
        let settled = seen
            .iter()
            .all(|h| h.as_ref().is_some_and(|(s, _)| s == "ok"));
        if leaders.len() == 1 && settled {
            return Ok(leaders[0]);
        }
        if started.elapsed() > timeout {
            bail!(
                "not exactly one leader among {} nodes within {timeout:?}: {}",
                nodes.len(),
                describe(nodes, &seen)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `label status/role, ...` for messages.
pub fn describe(nodes: &[Daemon], seen: &[Option<(String, String)>]) -> String {
    nodes
        .iter()
        .zip(seen)
        .map(|(d, h)| match h {
            Some((status, role)) => format!("{} {status}/{role}", d.label),
            None => format!("{} no answer", d.label),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Poll the nodes' `/health` every `every` until one reports `leader` (`timeout` at most): its
/// index, and the time since `since`.
pub async fn first_leader(
    api: &Api,
    nodes: &[Daemon],
    since: Instant,
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<(usize, Duration)> {
    loop {
        let tick = Instant::now();
        let seen = roles(api, nodes).await;
        if let Some(i) = seen
            .iter()
            .position(|h| h.as_ref().is_some_and(|(_, r)| r == "leader"))
        {
            return Ok((i, since.elapsed()));
        }
        if since.elapsed() > timeout {
            bail!(
                "no node reported leader within {timeout:?} of the kill: {}",
                describe(nodes, &seen)
            );
        }
        tokio::time::sleep(every.saturating_sub(tick.elapsed())).await;
    }
}
