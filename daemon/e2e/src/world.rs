//! The provisioned accounts, reading every token over HTTP, and the Postgres mirror's table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fake_brokers::KiteUser;
use serde_json::json;
use tokio_postgres::{Client, NoTls};

use crate::http::{Api, Auth};
use crate::stats::{random_hex, random_totp_secret};

/// One Kite account: the platform user and the credentials the driver provisioned (known, so the
/// audit can look for each of them).
#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub broker_user_id: String,
    pub password: String,
    pub api_key: String,
    pub api_secret: String,
    pub totp_secret: String,
}

impl Account {
    /// Account `n` of a series (`prefix` `u` for the main vault's accounts).
    pub fn generate(prefix: char, n: usize) -> Account {
        Account {
            user: format!("e2e-{prefix}{n:05}"),
            broker_user_id: format!("Z{}{n:05}", prefix.to_ascii_uppercase()),
            password: format!("pw-{}", random_hex(12)),
            api_key: format!("ak{}", random_hex(10)),
            api_secret: format!("as-{}", random_hex(16)),
            totp_secret: random_totp_secret(),
        }
    }

    pub fn kite_user(&self) -> KiteUser {
        KiteUser::new(
            &self.broker_user_id,
            &self.password,
            &self.api_key,
            &self.api_secret,
            &self.totp_secret,
        )
    }

    pub fn provision_body(&self) -> serde_json::Value {
        json!({
            "broker_user_id": self.broker_user_id,
            "password": self.password,
            "api_key": self.api_key,
            "api_secret": self.api_secret,
            "totp_secret": self.totp_secret,
        })
    }

    /// Every plaintext credential of the account, labelled.
    pub fn secrets(&self) -> [(String, String); 4] {
        [
            (format!("password of {}", self.user), self.password.clone()),
            (format!("api_key of {}", self.user), self.api_key.clone()),
            (
                format!("api_secret of {}", self.user),
                self.api_secret.clone(),
            ),
            (
                format!("totp_secret of {}", self.user),
                self.totp_secret.clone(),
            ),
        ]
    }
}

/// Run `f` over `items` with at most `limit` at once; results in input order.
pub async fn bounded<T, R, F, Fut>(items: &[T], limit: usize, f: F) -> Vec<R>
where
    T: Clone + Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let semaphore = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut handles = Vec::with_capacity(items.len());
    for item in items {
        let permit = semaphore.clone().acquire_owned().await.expect("open");
        let fut = f(item.clone());
        handles.push(tokio::spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// Every account's token as `GET /api/tokens/:userId` answers it: user -> token (None on 404).
/// Any other answer is an error.
pub async fn read_tokens(
    api: &Api,
    users: &[String],
) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    let results = bounded(users, 32, |user: String| {
        let api = api.clone();
        async move {
            let r = api.get(&format!("/api/tokens/{user}"), Auth::Key).await;
            (user, r)
        }
    })
    .await;
    let mut out = BTreeMap::new();
    for (user, reply) in results {
        let reply = reply?;
        match reply.status {
            200 => {
                let token = reply.json()["access_token"]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("token of {user} without access_token"))?;
                out.insert(user, Some(token));
            }
            404 => {
                out.insert(user, None);
            }
            s => bail!("GET /api/tokens/{user}: {s} {}", reply.text()),
        }
    }
    Ok(out)
}

/// The mirror's database: a schema of the run's own.
pub struct Mirror {
    client: Client,
    pub schema: String,
}

impl Mirror {
    pub async fn connect(url: &str, schema: &str) -> anyhow::Result<Mirror> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL ({})", redact_url(url)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
            ))
            .await?;
        Ok(Mirror {
            client,
            schema: schema.to_owned(),
        })
    }

    /// Active rows of the default table: user -> token.
    pub async fn active_tokens(&self) -> BTreeMap<String, String> {
        self.client
            .query(
                &format!(
                    "SELECT user_id, access_token FROM {}.tokenbot_tokens \
                     WHERE status = 'active' AND broker = 'kite'",
                    self.schema
                ),
                &[],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| Some((r.get::<_, String>(0), r.get::<_, Option<String>>(1)?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait until the table holds exactly `expected` (`timeout` at most); the time it took.
    pub async fn converge(
        &self,
        expected: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let rows = self.active_tokens().await;
            if &rows == expected {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                let missing = expected
                    .iter()
                    .filter(|(u, t)| rows.get(*u) != Some(t))
                    .count();
                let extra = rows.keys().filter(|u| !expected.contains_key(*u)).count();
                return Err(format!(
                    "mirror did not converge in {timeout:?}: {missing} rows differ or are missing, {extra} extra"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Run `sql` (statements separated by `;`).
    pub async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        Ok(self.client.batch_execute(sql).await?)
    }

    pub async fn drop_schema(&self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
    }
}

/// `postgres://user:***@host:port/db` for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}
