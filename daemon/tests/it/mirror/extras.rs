//! Token extras in the Postgres mirror (`TOKENBOT_TEST_DATABASE_URL`): the served ones reach the
//! default table's `extras` column, the others never do, and a default table made before the
//! column existed gets it.

use std::sync::Arc;

use secrecy::SecretString;
use tokenbot::mirror::Mirror;
use tokenbot::vault::{NewToken, SecretJson};

use super::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn served_extras_reach_the_default_table_and_the_others_never_do() {
    let Some(url) = database_url("served_extras_reach_the_default_table...") else {
        return;
    };
    let db = TestDb::new(&url, "extras").await;
    // The default table as an earlier tokenbot created it: no `extras` column.
    db.client
        .batch_execute(&format!(
            "CREATE TABLE {}.tokenbot_tokens (\
             user_id text NOT NULL, broker text NOT NULL, broker_user_id text NOT NULL, \
             access_token text, issued_at timestamptz, expires_at timestamptz, \
             status text NOT NULL, generation bigint NOT NULL, \
             updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (user_id, broker))",
            db.schema
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vault = vault(dir.path());
    let angel = add_account(&vault, "u1", "angelone");
    let kite = add_account(&vault, "u2", "kite");
    let now = now_ms();
    vault
        .put_token(
            &angel,
            &NewToken {
                access_token: SecretString::from("jwt-angel".to_owned()),
                issued_at_ms: now,
                expires_at_ms: now + 3_600_000,
                extras: SecretJson::from_value(&serde_json::json!({
                    "feed_token": "feed-77", "refresh_token": "refresh-must-stay-in-the-vault"
                })),
                served_extras: SecretJson::from_value(
                    &serde_json::json!({ "feed_token": "feed-77" }),
                ),
            },
        )
        .unwrap();
    put_token(&vault, &kite, 1);

    let mirror = Arc::new(Mirror::new(&db.mirror_config(&url), vault.clone()));
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
                "SELECT user_id, extras::text FROM {}.tokenbot_tokens ORDER BY user_id",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        rows,
        vec![
            ("u1".into(), Some(r#"{"feed_token": "feed-77"}"#.into())),
            ("u2".into(), Some("{}".into())),
        ]
    );
    let leaked = db
        .client
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.tokenbot_tokens t WHERE t::text LIKE '%refresh-must%'",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        leaked.get::<_, i64>(0),
        0,
        "a refresh token reached the mirror"
    );
    assert_eq!(mirror.status().last_error, None);
    mirror.stop();
    task.await.unwrap();
    db.drop_schema().await;
}
