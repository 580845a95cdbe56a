//! TLS to PostgreSQL (`TOKENBOT_TEST_DATABASE_URL`'s server, whose Debian snake-oil certificate is
//! issued to `localhost`). With the cargo feature `postgres-tls` the mirror delivers over verified
//! TLS; without it, a URL demanding TLS shows a clear error in the status.

use std::sync::Arc;

use super::support::*;
use tokenbot::mirror::Mirror;

/// Where the test server's certificate lives on Debian.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// The test database on `localhost` (the certificate's name) at 127.0.0.1, demanding TLS.
fn tls_url(url: &str, application: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_host(Some("localhost")).unwrap();
    format!(
        "{parsed}?hostaddr=127.0.0.1&sslmode=require&application_name={application}{}",
        if cfg!(feature = "postgres-tls") {
            format!("&sslrootcert={SNAKEOIL}")
        } else {
            String::new()
        }
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_demanding_tls_is_honoured() {
    let Some(url) = database_url("a_url_demanding_tls_is_honoured") else {
        return;
    };
    if cfg!(feature = "postgres-tls") && !std::path::Path::new(SNAKEOIL).exists() {
        eprintln!("SKIPPED a_url_demanding_tls_is_honoured: no {SNAKEOIL} on this machine");
        return;
    }
    let db = TestDb::new(&url, "tls").await;
    let application = format!("tokenbot_tls_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let vault = vault(dir.path());
    let key = add_account(&vault, "u1", "kite");
    put_token(&vault, &key, 1);
    let mirror = Arc::new(Mirror::new(
        &db.mirror_config(&tls_url(&url, &application)),
        vault.clone(),
    ));
    let task = mirror.spawn();
    if cfg!(feature = "postgres-tls") {
        wait_for("delivery over TLS", || async { db.rows().await.len() == 1 }).await;
        let ssl: bool = db
            .client
            .query_one(
                "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&application],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl);
    } else {
        wait_for("the error in the status", || {
            let status = mirror.status();
            async move { status.last_error.is_some() }
        })
        .await;
        let error = mirror.status().last_error.unwrap();
        assert!(error.contains("TLS"), "{error}");
        assert_eq!(vault.outbox_len().unwrap(), 1);
    }
    mirror.stop();
    task.await.unwrap();
    db.drop_schema().await;
}
