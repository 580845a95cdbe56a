//! `upsert_sql` templates against a real PostgreSQL (`TOKENBOT_TEST_DATABASE_URL`): the README's
//! template for the IIFL job's Prisma table, and templates PostgreSQL refuses.

use std::sync::Arc;

use super::support::*;
use secrecy::SecretString;
use tokenbot::config::PostgresMirrorConfig;
use tokenbot::mirror::Mirror;

/// The README's template, verbatim (README.md, "Postgres mirror").
const IIFL_TEMPLATE: &str = r#"
UPDATE "IIFLUser"
SET token           = $access_token,
    "tokenValidity" = $expires_at,
    "lastLoginTime" = COALESCE($issued_at, "lastLoginTime"),
    "loginStatus"   = CASE $status WHEN 'active' THEN 'SUCCESS' ELSE 'LOGGED_OUT' END
WHERE "userID" = $user_id AND $broker = 'iifl'
"#;

/// The table as Prisma creates it for the IIFL job's model.
const PRISMA_TABLE: &str = r#"
CREATE TABLE "IIFLUser" (
    "id"            SERIAL PRIMARY KEY,
    "userID"        TEXT NOT NULL,
    "clientCode"    TEXT,
    "token"         TEXT,
    "tokenValidity" TIMESTAMP(3),
    "lastLoginTime" TIMESTAMP(3),
    "loginStatus"   TEXT,
    "createdAt"     TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE UNIQUE INDEX "IIFLUser_userID_key" ON "IIFLUser"("userID");
"#;

/// `"userID"`, token, `"loginStatus"`, whether `"tokenValidity"` and `"lastLoginTime"` are set.
type IiflRow = (String, Option<String>, Option<String>, bool, bool);

#[tokio::test(flavor = "multi_thread")]
async fn the_iifl_template_updates_an_existing_prisma_table_and_creates_no_other_table() {
    let Some(url) = database_url("the_iifl_template_updates_an_existing_prisma_table...") else {
        return;
    };
    let db = TestDb::new(&url, "prisma").await;
    db.client
        .batch_execute(&format!(
            "SET search_path = {};{PRISMA_TABLE}
             INSERT INTO \"IIFLUser\" (\"userID\", \"clientCode\", token, \"loginStatus\")
               VALUES ('28748327', 'C1', 'old-1', 'FAILED'), ('28748328', 'C2', 'old-2', 'FAILED'),
                      ('99999999', 'C9', 'untouched', 'INTEGRATION_MANAGED');
             RESET search_path;",
            db.schema
        ))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let vault = vault(dir.path());
    let a = add_account(&vault, "28748327", "iifl");
    let b = add_account(&vault, "28748328", "iifl");
    // The same platform user at another broker: the template's `$broker = 'iifl'` keeps it out.
    let kite = add_account(&vault, "28748327", "kite");
    let gen_a = put_token(&vault, &a, 1);
    put_token(&vault, &b, 1);
    put_token(&vault, &kite, 1);
    let gen_b = put_token(&vault, &b, 2);
    // The IIFL job's DATABASE_URL names the schema the Prisma way.
    let prisma_url = format!("{url}?schema={}&connection_limit=5", db.schema);
    let mut config = db.mirror_config(&prisma_url);
    config.upsert_sql = Some(IIFL_TEMPLATE.to_owned());
    // Were the default table created anyway, it would be this one.
    config.table = format!("{}_never", db.schema);
    let listener = Listener::start(&url, &db.schema).await;
    let mirror = Arc::new(Mirror::new(&config, vault.clone()));
    let task = mirror.spawn();
    let drained = || {
        let vault = vault.clone();
        async move { vault.outbox_len().unwrap() == 0 }
    };
    wait_for("the outbox to drain", drained).await;

    let rows = db
        .client
        .query(
            &format!(
                "SELECT \"userID\", token, \"loginStatus\", \"tokenValidity\" IS NOT NULL, \
                 \"lastLoginTime\" IS NOT NULL FROM {}.\"IIFLUser\" ORDER BY \"userID\"",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<IiflRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "28748327".into(),
                Some(token_text(&a, 1)),
                Some("SUCCESS".into()),
                true,
                true
            ),
            (
                "28748328".into(),
                Some(token_text(&b, 2)),
                Some("SUCCESS".into()),
                true,
                true
            ),
            (
                "99999999".into(),
                Some("untouched".into()),
                Some("INTEGRATION_MANAGED".into()),
                false,
                false
            ),
        ]
    );
    // Expiry written as the UTC wall time of the vault's expiry (Prisma's `timestamp(3)`).
    let expires_ms: f64 = db
        .client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM \"tokenValidity\")::float8 * 1000 \
                 FROM {}.\"IIFLUser\" WHERE \"userID\" = '28748327'",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let token = vault.get_token(&a).unwrap().unwrap();
    assert_eq!(expires_ms as i64, token.expires_at_ms);

    // Only the table that was there: nothing created, here or under the default table's name.
    let tables: Vec<String> = db
        .client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&db.schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, ["IIFLUser"]);
    let elsewhere: i64 = db
        .client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = $1",
            &[&config.table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(elsewhere, 0);

    // Notifications still go out, one per record that changed a row (the kite one changed none).
    wait_for("notifications", || {
        let n = listener.payloads.lock().unwrap().len();
        async move { n >= 3 }
    })
    .await;
    let mut generations: Vec<u64> = listener.notices().iter().map(|n| n.generation).collect();
    generations.sort();
    assert_eq!(generations.len(), 3, "{generations:?}");
    assert!(generations.contains(&gen_a) && generations.contains(&gen_b));

    // A removed account: token cleared, status mapped, last login time kept.
    vault.delete_account(&a).unwrap();
    mirror.wake();
    wait_for("the revocation", || async {
        db.client
            .query_one(
                &format!(
                    "SELECT token IS NULL AND \"loginStatus\" = 'LOGGED_OUT' \
                     AND \"lastLoginTime\" IS NOT NULL \
                     FROM {}.\"IIFLUser\" WHERE \"userID\" = '28748327'",
                    db.schema
                ),
                &[],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    })
    .await;
    assert_eq!(mirror.status().last_error, None);
    mirror.stop();
    task.await.unwrap();
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_postgres_refuses_shows_in_the_status_and_keeps_the_records() {
    let Some(url) = database_url("a_template_postgres_refuses_shows_in_the_status...") else {
        return;
    };
    let db = TestDb::new(&url, "badtemplate").await;
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {}.accounts (\"userID\" text PRIMARY KEY, token text)",
            db.schema
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vault = vault(dir.path());
    let key = add_account(&vault, "u1", "iifl");
    put_token(&vault, &key, 1);
    let mut config: PostgresMirrorConfig = db.mirror_config(&url);
    config.upsert_sql = Some(format!(
        "UPDATE {}.accounts SET tokn = $access_token WHERE \"userID\" = $user_id",
        db.schema
    ));
    let mirror = Arc::new(Mirror::new(&config, vault.clone()));
    let task = mirror.spawn();
    wait_for("the error in the status", || {
        let status = mirror.status();
        async move {
            status
                .last_error
                .is_some_and(|e| e.contains("preparing the upsert") && e.contains("tokn"))
        }
    })
    .await;
    let status = mirror.status();
    assert!(!status.connected, "{status:?}");
    assert_eq!(vault.outbox_len().unwrap(), 1, "the record waits");
    mirror.stop();
    task.await.unwrap();
    db.drop_schema().await;

    // Unknown names never get this far: they are refused with the configuration.
    let mut config = PostgresMirrorConfig::new(SecretString::from(url.clone()));
    config.upsert_sql = Some("UPDATE t SET token = $token WHERE id = $user_id".into());
    let err = tokenbot::mirror::validate(&config).unwrap_err().to_string();
    assert!(
        err.contains("mirror.postgres.upsert_sql") && err.contains("$token"),
        "{err}"
    );
}
