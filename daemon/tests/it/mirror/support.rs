//! Helpers of the Postgres-mirror tests: the test database, a schema per test, a `LISTEN` client,
//! a vault, and a loopback TCP proxy that can cut PostgreSQL off and bring it back.
//!
//! The tests need a real PostgreSQL named by `TOKENBOT_TEST_DATABASE_URL` (`scripts/test` sets it);
//! without it they print that they were skipped and pass, except under CI, where they fail.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use tokenbot::config::PostgresMirrorConfig;
use tokenbot::vault::{
    AccountKey, Argon2Params, Credentials, Engine, KeyMaterial, MasterKey, NewAccount, NewToken,
    SecretJson, Vault, VaultOptions,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The test database's URL, or `None` after saying plainly that the test is skipped. Under CI
/// (`CI` set) a missing database is a failure, never a skip: CI must run these tests.
pub fn database_url(test: &str) -> Option<String> {
    match std::env::var("TOKENBOT_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: TOKENBOT_TEST_DATABASE_URL is not set under CI; run the tests with scripts/test"
            );
            crate::support::say_skipped(
                test,
                "TOKENBOT_TEST_DATABASE_URL is not set (scripts/test sets it when PostgreSQL runs \
                 on 127.0.0.1:5432)",
            );
            None
        }
    }
}

/// A client whose connection runs on its own task.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connecting to the test database");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A schema of the test's own, dropped (with everything in it) by [`TestDb::drop_schema`] and
/// re-created empty at the start, so a failed earlier run leaves nothing in the way.
pub struct TestDb {
    pub schema: String,
    pub client: Client,
}

impl TestDb {
    pub async fn new(url: &str, name: &str) -> TestDb {
        // The process id keeps concurrent runs of the same test (several checkouts) apart.
        let schema = format!("tbm_{name}_{}", std::process::id());
        let client = connect(url).await;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
            ))
            .await
            .unwrap();
        TestDb { schema, client }
    }

    /// Mirror settings writing the default table into this schema, notifying on a channel named
    /// after the schema (channels are database-wide), with short backoffs.
    pub fn mirror_config(&self, url: &str) -> PostgresMirrorConfig {
        let mut config = PostgresMirrorConfig::new(SecretString::from(url.to_owned()));
        config.schema = self.schema.clone();
        config.notify_channel = self.schema.clone();
        config.poll_interval_ms = 20;
        config.backoff_initial_ms = 20;
        config.backoff_max_ms = 200;
        config.connect_timeout_secs = 5;
        config
    }

    /// `(user_id, broker) -> (access_token, status, generation)` of the default table.
    pub async fn rows(&self) -> BTreeMap<(String, String), (Option<String>, String, i64)> {
        self.client
            .query(
                &format!(
                    "SELECT user_id, broker, access_token, status, generation \
                     FROM {}.tokenbot_tokens",
                    self.schema
                ),
                &[],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4))))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn drop_schema(&self) {
        self.client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await
            .unwrap();
    }
}

/// One notification as received.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Notice {
    pub user_id: String,
    pub broker: String,
    pub generation: u64,
}

/// A client `LISTEN`ing on a channel, collecting every payload.
pub struct Listener {
    pub payloads: Arc<Mutex<Vec<String>>>,
    _client: Client,
}

impl Listener {
    pub async fn start(url: &str, channel: &str) -> Listener {
        let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        let payloads = Arc::new(Mutex::new(Vec::new()));
        let sink = payloads.clone();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                if let Ok(AsyncMessage::Notification(n)) = message {
                    sink.lock().unwrap().push(n.payload().to_owned());
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN \"{channel}\""))
            .await
            .unwrap();
        Listener {
            payloads,
            _client: client,
        }
    }

    pub fn notices(&self) -> Vec<Notice> {
        self.payloads
            .lock()
            .unwrap()
            .iter()
            .map(|p| serde_json::from_str(p).unwrap())
            .collect()
    }
}

/// Poll `check` until it holds. The deadline only guards against a hang (it is not a timing
/// assertion): it is far above what any of these waits needs.
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..6_000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for: {what}");
}

/// A fresh redb vault in `dir` with a fixed key and cheap argon2.
pub fn vault(dir: &std::path::Path) -> Arc<Vault> {
    let options = VaultOptions {
        argon2: Argon2Params {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
        ..VaultOptions::default()
    };
    let key = KeyMaterial::Key(MasterKey::from_bytes([9; 32]));
    Arc::new(Vault::create(dir.join("vault.redb"), Engine::Redb, &key, options).unwrap())
}

/// Store an account (paused, so no scheduler ever logs it in) without a token.
pub fn add_account(vault: &Vault, user: &str, broker: &str) -> AccountKey {
    let key = AccountKey::parse(user, broker).unwrap();
    vault
        .put_account(&NewAccount {
            key: key.clone(),
            broker_user_id: format!("C-{user}"),
            credentials: Credentials {
                password: Some(SecretString::from("account-password".to_owned())),
                ..Credentials::default()
            },
            auto_refresh: false,
            managed_externally: false,
        })
        .unwrap();
    key
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Store a token valid for a day, named after the account and `round`; its generation.
pub fn put_token(vault: &Vault, key: &AccountKey, round: u32) -> u64 {
    let now = now_ms();
    vault
        .put_token(
            key,
            &NewToken {
                access_token: SecretString::from(token_text(key, round)),
                issued_at_ms: now,
                expires_at_ms: now + 86_400_000,
                extras: SecretJson::empty(),
                served_extras: Default::default(),
            },
        )
        .unwrap()
}

pub fn token_text(key: &AccountKey, round: u32) -> String {
    format!("tok-{}-{}-r{round}", key.user, key.broker)
}

/// The vault's tokens still valid at `now` (Unix ms; the clock the tokens were minted by):
/// `(user, broker) -> (token, generation)`.
pub fn vault_tokens(vault: &Vault, now: i64) -> BTreeMap<(String, String), (String, i64)> {
    use secrecy::ExposeSecret;
    let mut out = BTreeMap::new();
    for account in vault.list_accounts().unwrap() {
        if let Some(token) = vault.get_token(&account.key()).unwrap()
            && token.expires_at_ms > now
        {
            out.insert(
                (account.user.to_string(), account.broker.to_string()),
                (
                    token.access_token.expose_secret().to_owned(),
                    token.generation as i64,
                ),
            );
        }
    }
    out
}

/// A loopback TCP proxy to PostgreSQL that can be cut (every open connection closed, new ones
/// accepted and closed at once, as a server refusing service) and restored.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    /// Bumped on every cut; each forwarding task ends when it changes.
    epoch: watch::Sender<u64>,
    pub accepted: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (epoch, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let (up2, epoch2, accepted2) = (up.clone(), epoch.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                accepted2.fetch_add(1, Ordering::SeqCst);
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = epoch2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            up,
            epoch,
            accepted,
        }
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).unwrap();
        parsed.set_host(Some("127.0.0.1")).unwrap();
        parsed.set_port(Some(self.port)).unwrap();
        parsed.to_string()
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Host and port of a `postgres://` URL.
pub fn upstream(url: &str) -> std::net::SocketAddr {
    let parsed = url::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap_or("127.0.0.1");
    let port = parsed.port().unwrap_or(5432);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .unwrap()
        .next()
        .unwrap()
}
