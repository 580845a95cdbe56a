//! A Postgres mirror that cannot log in, cannot reach its host or has its rows refused never stops
//! the daemon: tokens are still served over HTTP, and the error shows in the mirror's status and
//! `/health/detailed`, without the password or a token. Runs against the test database's server
//! (`TOKENBOT_TEST_DATABASE_URL`) for the refused login and the refused row.

use std::sync::Arc;

use super::support::*;
use secrecy::SecretString;
use tokenbot::AppState;
use tokenbot::config::{Config, PostgresMirrorConfig, VaultConfig};

const PASSWORD: &str = "pw-never-shown-0815";
const API_KEY: &str = "mirror-test-api-key";

/// Serve a daemon in-process whose mirror points at `mirror_url`, with one account and a valid
/// token; check the token is served and the mirror's error shows; return that error.
async fn serve_with_broken_mirror(mirror_url: &str, schema: &str) -> String {
    let mut mirror = PostgresMirrorConfig::new(SecretString::from(mirror_url.to_owned()));
    mirror.schema = schema.to_owned();
    mirror.backoff_initial_ms = 20;
    mirror.backoff_max_ms = 200;
    serve_with_failing_mirror(mirror).await
}

/// [`serve_with_broken_mirror`] with the mirror's whole configuration.
async fn serve_with_failing_mirror(mirror: PostgresMirrorConfig) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        vault: VaultConfig {
            path: dir.path().join("vault.redb"),
            key_file: Some(dir.path().join("vault.key")),
            ..VaultConfig::default()
        },
        ..Config::default()
    };
    config.plugins.dir = dir.path().join("plugins");
    config.auth.api_key = Some(SecretString::from(API_KEY.to_owned()));
    config.mirror.postgres = Some(mirror);
    tokenbot::check_config(&config).unwrap();
    let state = Arc::new(AppState::open(config, true).unwrap());
    let key = add_account(&state.vault, "u1", "kite");
    put_token(&state.vault, &key, 1);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tokenbot::run(state.clone(), listener, async {
        let _ = stopped.await;
    }));

    let mirror = state.mirror.clone().expect("a mirror is configured");
    wait_for("the mirror's error", || {
        let status = mirror.status();
        async move { status.last_error.is_some() }
    })
    .await;

    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    // The token is served all the same.
    let token = http
        .get(format!("http://{addr}/api/tokens/u1?broker=kite"))
        .header("X-API-Key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(token.status().as_u16(), 200);
    let token: serde_json::Value = serde_json::from_str(&token.text().await.unwrap()).unwrap();
    assert_eq!(token["access_token"], token_text(&key, 1));
    // The error shows in /health/detailed, and the backlog with it.
    let detailed = http
        .get(format!("http://{addr}/health/detailed"))
        .header("X-API-Key", API_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let detailed: serde_json::Value = serde_json::from_str(&detailed).unwrap();
    assert!(
        !detailed.to_string().contains(&token_text(&key, 1)),
        "{detailed}"
    );
    let shown = &detailed["mirror"];
    assert_eq!(shown["enabled"], true, "{detailed}");
    assert_eq!(shown["connected"], false, "{detailed}");
    assert_eq!(shown["backlog"], 1, "{detailed}");
    let error = shown["last_error"].as_str().expect("last_error").to_owned();
    eprintln!("mirror error shown: {error}");
    assert!(!detailed.to_string().contains(PASSWORD), "{detailed}");

    let status = mirror.status();
    assert!(status.enabled && !status.connected, "{status:?}");
    assert_eq!(status.backlog, 1);
    assert_eq!(status.delivered, 0);
    assert!(!status.target.contains(PASSWORD), "{status:?}");
    assert_eq!(state.vault.outbox_len().unwrap(), 1, "the record waits");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    error
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_login_leaves_tokens_served_and_shows_in_the_status() {
    let Some(url) = database_url("a_refused_login_leaves_tokens_served...") else {
        return;
    };
    // The test server trusts loopback (any password passes), so a role that does not exist is
    // what refuses the login here.
    let mut refused = url::Url::parse(&url).unwrap();
    refused.set_username("tokenbot_no_such_role").unwrap();
    refused.set_password(Some(PASSWORD)).unwrap();
    let error = serve_with_broken_mirror(refused.as_str(), "public").await;
    assert!(error.contains("tokenbot_no_such_role"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_host_leaves_tokens_served_and_shows_in_the_status() {
    // Needs no PostgreSQL at all: nothing listens on the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://tokenbot:{PASSWORD}@127.0.0.1:{port}/trading");
    let error = serve_with_broken_mirror(&url, "public").await;
    assert!(
        error.contains(&format!("127.0.0.1:{port}/trading")),
        "{error}"
    );
    assert!(!error.contains(PASSWORD), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_row_shows_its_sqlstate_but_never_the_token_in_health_detailed() {
    let Some(url) = database_url("a_refused_row_shows_its_sqlstate...") else {
        return;
    };
    // The default table, made in advance with a check no token passes: PostgreSQL then refuses
    // the row with DETAIL "Failing row contains (u1, kite, ..., <the token>, ...)".
    let db = TestDb::new(&url, "refused_row").await;
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {}.tokenbot_tokens (\
             user_id text NOT NULL, broker text NOT NULL, broker_user_id text NOT NULL, \
             access_token text CONSTRAINT no_tokens_here CHECK (access_token IS NULL), \
             issued_at timestamptz, expires_at timestamptz, status text NOT NULL, \
             generation bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (user_id, broker))",
            db.schema
        ))
        .await
        .unwrap();
    let mut mirror = db.mirror_config(&url);
    // One refusal, then a pause longer than the test: the status holds that error throughout
    // (a reconnection would clear it until the row is refused again).
    mirror.backoff_initial_ms = 3_600_000;
    mirror.backoff_max_ms = 3_600_000;
    let error = serve_with_failing_mirror(mirror).await;
    db.drop_schema().await;
    // check_violation, the constraint's name from the primary message, and nothing of the row.
    assert!(error.contains("23514"), "{error}");
    assert!(error.contains("no_tokens_here"), "{error}");
    assert!(!error.contains("Failing row"), "{error}");
    assert!(!error.contains("tok-"), "{error}");
}
