//! One mirror connection: connect, create the default table if missing, prepare the upsert, and
//! deliver batches of outbox records in one transaction each.

use std::error::Error as _;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::template::{Param, Template};
use super::values::{Value, supports, value};
use crate::vault::OutboxRecord;

/// Where and what the mirror writes, worked out once from the configuration. No `Debug`: it
/// holds the password.
pub(crate) struct Target {
    /// Connection settings (they hold the password: never logged).
    pub pg: tokio_postgres::Config,
    /// `host:port/db` for logs and the status.
    pub label: String,
    /// Strings an error message must never show (password, URL).
    pub secrets: Vec<SecretString>,
    /// The upsert: the template's, or the default table's.
    pub upsert: Template,
    /// `Some((schema, table))` for the default table.
    pub default_table: Option<(String, String)>,
    /// Channel for `NOTIFY`; empty: none.
    pub notify_channel: String,
    /// TLS settings (cargo feature `postgres-tls`); used as the URL's `sslmode` says.
    #[cfg(feature = "postgres-tls")]
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
}

/// Why the mirror could not deliver. Messages never hold a secret (see [`Target::redact`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PgError(pub String);

impl Target {
    /// `message` with every secret replaced.
    pub fn redact(&self, message: &str) -> String {
        crate::redact::redact(message, self.secrets.iter().map(|s| s.expose_secret()))
    }

    fn error(&self, context: &str, e: &tokio_postgres::Error) -> PgError {
        self.error_in_batch(context, e, &[])
    }

    /// The error for the status (served by `/health/detailed`) and the log. For an error
    /// PostgreSQL reported, its SQLSTATE and primary message only: its DETAIL, HINT and WHERE
    /// may quote row values (`Failing row contains (..., <token>, ...)`). For any other (I/O,
    /// protocol, encoding a value), the whole chain. Secrets and the tokens of `batch` (which a
    /// primary message may quote too: `invalid input syntax for type integer: "<token>"`) are
    /// redacted.
    fn error_in_batch(
        &self,
        context: &str,
        e: &tokio_postgres::Error,
        batch: &[OutboxRecord],
    ) -> PgError {
        let text = match e.as_db_error() {
            Some(db) => format!(
                "{context}: {} {}: {}",
                db.severity(),
                db.code().code(),
                db.message()
            ),
            None => {
                let mut text = format!("{context}: {e}");
                let mut source = e.source();
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                text
            }
        };
        // The batch's tokens and the string values of their served extras (a template may put
        // those in a row that PostgreSQL then quotes).
        let extras: Vec<serde_json::Value> = (batch.iter())
            .filter_map(|r| r.served_extras.as_ref().map(|e| e.expose_value()))
            .collect();
        let secrets: Vec<&str> = (batch.iter())
            .filter_map(|r| r.access_token.as_ref().map(|t| t.expose_secret()))
            .chain(
                extras
                    .iter()
                    .filter_map(|e| e.as_object())
                    .flat_map(|o| o.values().filter_map(serde_json::Value::as_str)),
            )
            .collect();
        let text = crate::redact::redact(&text.replace('\n', " "), secrets);
        PgError(self.redact(&text))
    }
}

/// A live connection with its prepared statements.
pub(crate) struct Session {
    client: Client,
    upsert: Statement,
    notify: Option<Statement>,
    params: Vec<Param>,
    /// The task driving the socket; stopped with the session.
    _connection: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Identifier quoting: `"` doubled inside.
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The upsert of the default table, as a template: it only applies when the incoming generation is
/// newer than the row's, so redelivered and out-of-date records change nothing. Without `extras`
/// for a table made before that column, which this role may not add.
pub(crate) fn default_upsert(schema: &str, table: &str, extras: bool) -> String {
    let t = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let (column, value, set) = match extras {
        true => (" extras,", " $extras::jsonb,", " extras = EXCLUDED.extras,"),
        false => ("", "", ""),
    };
    format!(
        "INSERT INTO {t} AS t (user_id, broker, broker_user_id, access_token, issued_at, \
         expires_at, status, generation,{column} updated_at) \
         VALUES ($user_id, $broker, $broker_user_id, $access_token, $issued_at::timestamptz, \
         $expires_at::timestamptz, $status, $generation::bigint,{value} now()) \
         ON CONFLICT (user_id, broker) DO UPDATE SET broker_user_id = EXCLUDED.broker_user_id, \
         access_token = EXCLUDED.access_token, issued_at = EXCLUDED.issued_at, \
         expires_at = EXCLUDED.expires_at, status = EXCLUDED.status,{set} \
         generation = EXCLUDED.generation, updated_at = now() \
         WHERE t.generation < EXCLUDED.generation"
    )
}

fn create_table(schema: &str, table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{} (\
         user_id text NOT NULL, broker text NOT NULL, broker_user_id text NOT NULL, \
         access_token text, issued_at timestamptz, expires_at timestamptz, \
         status text NOT NULL, generation bigint NOT NULL, extras jsonb, \
         updated_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (user_id, broker))",
        quote_ident(schema),
        quote_ident(table)
    )
}

impl Session {
    /// Connect, create the default table if it is missing, prepare the statements.
    pub async fn open(target: &Target, connect_timeout: Duration) -> Result<Session, PgError> {
        #[cfg(feature = "postgres-tls")]
        let tls = target.tls.clone();
        #[cfg(not(feature = "postgres-tls"))]
        let tls = tokio_postgres::NoTls;
        let (client, connection) = tokio::time::timeout(connect_timeout, target.pg.connect(tls))
            .await
            .map_err(|_| PgError(format!("connecting to {}: timed out", target.label)))?
            .map_err(|e| target.error(&format!("connecting to {}", target.label), &e))?;
        let connection = tokio::spawn(async move {
            // Ends when the server goes away or the client is dropped; the client then reports
            // `is_closed` and the mirror reconnects.
            let _ = connection.await;
        });
        let connection = AbortOnDrop(connection);
        let (upsert, notify, params) = setup(&client, target).await?;
        Ok(Session {
            client,
            upsert,
            notify,
            params,
            _connection: connection,
        })
    }
}

/// Create the default table, or what of it is missing. The upsert to use instead of the
/// target's, when the table lacks the `extras` column and this role may not add it.
async fn ensure_default_table(
    client: &Client,
    target: &Target,
    schema: &str,
    table: &str,
) -> Result<Option<Template>, PgError> {
    // Create only what is missing: `CREATE ... IF NOT EXISTS` checks privileges first, and
    // a role that may write the table need not be allowed to create anything.
    let schema_exists = client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(|e| target.error("checking the schema", &e))?
        .is_some();
    if !schema_exists {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(schema)
            ))
            .await
            .map_err(|e| target.error(&format!("creating schema {schema}"), &e))?;
    }
    let table_exists = client
        .query_opt(
            "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
            &[&schema, &table],
        )
        .await
        .map_err(|e| target.error("checking the table", &e))?
        .is_some();
    if !table_exists {
        client
            .batch_execute(&create_table(schema, table))
            .await
            .map_err(|e| target.error(&format!("creating table {schema}.{table}"), &e))?;
        tracing::info!(db = %target.label, %schema, %table, "mirror: created the table");
    } else if client
        .query_opt(
            "SELECT 1 FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 AND column_name = 'extras'",
            &[&schema, &table],
        )
        .await
        .map_err(|e| target.error("checking the table's columns", &e))?
        .is_none()
    {
        // A default table made before token extras were mirrored gets their column (only
        // then: ALTER TABLE needs the table's owner, even when the column exists). A role
        // that may not add it mirrors as before, without extras.
        let alter = format!(
            "ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS extras jsonb",
            quote_ident(schema),
            quote_ident(table)
        );
        if let Err(e) = client.batch_execute(&alter).await {
            let error = target.error(&format!("adding column extras to {schema}.{table}"), &e);
            tracing::warn!(db = %target.label, %error, "mirror: writing the table without extras");
            let sql = default_upsert(schema, table, false);
            let template = Template::parse(&sql)
                .map_err(|e| PgError(format!("the default upsert without extras: {e}")))?;
            return Ok(Some(template));
        }
    }
    Ok(None)
}

/// Create the default table if missing; prepare the upsert (checking its parameter types) and
/// `NOTIFY`. The upsert's parameters come with it.
async fn setup(
    client: &Client,
    target: &Target,
) -> Result<(Statement, Option<Statement>, Vec<Param>), PgError> {
    let mut template = std::borrow::Cow::Borrowed(&target.upsert);
    if let Some((schema, table)) = &target.default_table
        && let Some(without_extras) = ensure_default_table(client, target, schema, table).await?
    {
        template = std::borrow::Cow::Owned(without_extras);
    }
    let upsert = client
        .prepare(&template.sql)
        .await
        .map_err(|e| target.error("preparing the upsert", &e))?;
    for (param, ty) in template.params.iter().zip(upsert.params()) {
        if !supports(*param, ty) {
            return Err(PgError(format!(
                "preparing the upsert: `${}` stands where PostgreSQL expects type {}, which \
                     the mirror cannot supply; cast it in the template (e.g. `${}::text`)",
                param.name(),
                ty.name(),
                param.name()
            )));
        }
    }
    let notify = if target.notify_channel.is_empty() {
        None
    } else {
        Some(
            client
                .prepare_typed("SELECT pg_notify($1, $2)", &[Type::TEXT, Type::TEXT])
                .await
                .map_err(|e| target.error("preparing NOTIFY", &e))?,
        )
    };
    Ok((upsert, notify, template.params.clone()))
}

impl Session {
    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Write `batch` in one transaction, in order; `NOTIFY` each change that changed a row.
    /// Nothing is visible (rows or notifications) unless all of it commits.
    pub async fn deliver(
        &mut self,
        target: &Target,
        batch: &[OutboxRecord],
    ) -> Result<(), PgError> {
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| target.error("starting a transaction", &e))?;
        for record in batch {
            let values: Vec<Value<'_>> = self.params.iter().map(|p| value(*p, record)).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let changed = tx.execute(&self.upsert, &refs).await.map_err(|e| {
                let context = format!("upserting {}/{}", record.user, record.broker);
                target.error_in_batch(&context, &e, batch)
            })?;
            if let Some(notify) = &self.notify
                && changed > 0
            {
                let payload = serde_json::json!({
                    "user_id": record.user.as_str(),
                    "broker": record.broker.as_str(),
                    "generation": record.generation,
                })
                .to_string();
                tx.execute(notify, &[&target.notify_channel, &payload])
                    .await
                    .map_err(|e| target.error("NOTIFY", &e))?;
            }
        }
        // A deferred constraint fails here, with the rows of the batch.
        tx.commit()
            .await
            .map_err(|e| target.error_in_batch("committing", &e, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_upsert_parses_with_any_schema_and_table_name() {
        let sql = default_upsert("we\"ird $schema", "t$able", true);
        let template = Template::parse(&sql).unwrap();
        assert_eq!(template.params, Param::ALL.to_vec());
        assert!(template.sql.contains(r#""we""ird $schema"."t$able""#));
        let without = Template::parse(&default_upsert("s", "t", false)).unwrap();
        assert!(!without.params.contains(&Param::Extras) && !without.sql.contains("extras"));
    }
}
