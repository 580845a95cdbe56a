//! One mirror connection: connect, create the default table if missing, prepare the upsert, and
//! deliver batches of outbox records in one transaction each.

use std::error::Error as _;
use std::time::Duration;

use bytes::BytesMut;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::types::{IsNull, Kind, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Statement};

use super::template::{Param, Template};
use crate::vault::{OutboxRecord, OutboxStatus};

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

/// Create the default table if missing; prepare the upsert (checking its parameter types) and
/// `NOTIFY`. The upsert's parameters come with it.
async fn setup(
    client: &Client,
    target: &Target,
) -> Result<(Statement, Option<Statement>, Vec<Param>), PgError> {
    let mut template = std::borrow::Cow::Borrowed(&target.upsert);
    if let Some((schema, table)) = &target.default_table {
        // Create only what is missing: `CREATE ... IF NOT EXISTS` checks privileges first, and
        // a role that may write the table need not be allowed to create anything.
        let schema_exists = client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[schema])
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
                &[schema, table],
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
                &[schema, table],
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
                template = std::borrow::Cow::Owned(
                    Template::parse(&sql)
                        .map_err(|e| PgError(format!("the default upsert without extras: {e}")))?,
                );
            }
        }
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

/// One bound value. Converts itself to whatever type the prepared statement wants (checked at
/// prepare time by [`supports`]).
#[derive(Debug)]
enum Value<'a> {
    Text(Option<&'a str>),
    /// JSON text, sent as `json`, `jsonb` or text, whichever the statement wants.
    Json(Option<&'a str>),
    /// Unix ms.
    Time(Option<i64>),
    Int(u64),
}

fn value(param: Param, r: &OutboxRecord) -> Value<'_> {
    match param {
        Param::UserId => Value::Text(Some(r.user.as_str())),
        Param::Broker => Value::Text(Some(r.broker.as_str())),
        Param::BrokerUserId => Value::Text(Some(&r.broker_user_id)),
        Param::AccessToken => Value::Text(r.access_token.as_ref().map(|t| t.expose_secret())),
        Param::IssuedAt => Value::Time(r.issued_at_ms),
        Param::ExpiresAt => Value::Time(r.expires_at_ms),
        Param::Status => Value::Text(Some(match r.status {
            OutboxStatus::Active => "active",
            OutboxStatus::Revoked => "revoked",
        })),
        Param::Generation => Value::Int(r.generation),
        Param::Extras => Value::Json(match r.status {
            OutboxStatus::Revoked => None,
            OutboxStatus::Active => {
                Some(r.served_extras.as_ref().map_or("{}", |e| e.expose_text()))
            }
        }),
    }
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    ) || ty.name() == "citext"
        || matches!(ty.kind(), Kind::Enum(_))
}

fn is_int(ty: &Type) -> bool {
    matches!(*ty, Type::INT8 | Type::INT4)
}

fn is_timestamp(ty: &Type) -> bool {
    matches!(*ty, Type::TIMESTAMPTZ | Type::TIMESTAMP)
}

/// Whether `param` can be sent as `ty`.
fn supports(param: Param, ty: &Type) -> bool {
    match param {
        // Ids may live in integer columns (`"userID" integer`); a non-numeric id then fails that
        // record with a clear error.
        Param::UserId | Param::BrokerUserId => is_text(ty) || is_int(ty),
        Param::Broker | Param::AccessToken | Param::Status => is_text(ty),
        Param::Extras => is_text(ty) || matches!(*ty, Type::JSON | Type::JSONB),
        Param::IssuedAt | Param::ExpiresAt => is_timestamp(ty) || is_int(ty) || is_text(ty),
        Param::Generation => is_int(ty) || is_text(ty),
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn put_int(
    ty: &Type,
    n: i64,
    out: &mut BytesMut,
) -> Result<(), Box<dyn std::error::Error + Sync + Send>> {
    if *ty == Type::INT4 {
        out.extend_from_slice(&i32::try_from(n)?.to_be_bytes());
    } else {
        out.extend_from_slice(&n.to_be_bytes());
    }
    Ok(())
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Text(None) | Value::Json(None) | Value::Time(None) => return Ok(IsNull::Yes),
            Value::Json(Some(s)) => {
                // jsonb's binary form is a version byte, then the text.
                if *ty == Type::JSONB {
                    out.extend_from_slice(&[1]);
                }
                out.extend_from_slice(s.as_bytes());
            }
            Value::Text(Some(s)) if is_int(ty) => {
                let n: i64 = s.parse().map_err(|_| {
                    format!("{s:?} is not an integer, but the column is {}", ty.name())
                })?;
                put_int(ty, n, out)?;
            }
            Value::Text(Some(s)) => out.extend_from_slice(s.as_bytes()),
            Value::Time(Some(ms)) if is_timestamp(ty) => {
                let micros = ms
                    .checked_mul(1000)
                    .and_then(|m| m.checked_sub(PG_EPOCH_MICROS))
                    .ok_or("time out of range")?;
                out.extend_from_slice(&micros.to_be_bytes());
            }
            Value::Time(Some(ms)) if is_int(ty) => put_int(ty, *ms, out)?,
            Value::Time(Some(ms)) => {
                let time =
                    chrono::DateTime::from_timestamp_millis(*ms).ok_or("time out of range")?;
                out.extend_from_slice(
                    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                        .as_bytes(),
                );
            }
            Value::Int(n) if is_int(ty) => put_int(ty, i64::try_from(*n)?, out)?,
            Value::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        is_text(ty) || is_int(ty) || is_timestamp(ty) || matches!(*ty, Type::JSON | Type::JSONB)
    }

    to_sql_checked!();
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

    #[test]
    fn values_take_the_shape_of_the_column() {
        let encode = |v: Value<'_>, ty: &Type| {
            let mut out = BytesMut::new();
            let null = v.to_sql(ty, &mut out).map_err(|e| e.to_string())?;
            Ok::<_, String>((matches!(null, IsNull::Yes), out.to_vec()))
        };
        // 2000-01-01T00:00:00.001Z is 1000 µs after PostgreSQL's epoch.
        let ms = 946_684_800_001;
        let micros = 1000i64.to_be_bytes().to_vec();
        assert_eq!(
            encode(Value::Time(Some(ms)), &Type::TIMESTAMPTZ),
            Ok((false, micros.clone()))
        );
        assert_eq!(
            encode(Value::Time(Some(ms)), &Type::TIMESTAMP),
            Ok((false, micros))
        );
        assert_eq!(
            encode(Value::Time(Some(ms)), &Type::TEXT),
            Ok((false, b"2000-01-01T00:00:00.001Z".to_vec()))
        );
        assert_eq!(
            encode(Value::Time(Some(ms)), &Type::INT8),
            Ok((false, ms.to_be_bytes().to_vec()))
        );
        assert_eq!(
            encode(Value::Time(None), &Type::TIMESTAMP),
            Ok((true, vec![]))
        );
        assert_eq!(
            encode(Value::Text(Some("28748327")), &Type::INT4),
            Ok((false, 28_748_327i32.to_be_bytes().to_vec()))
        );
        assert!(encode(Value::Text(Some("abc")), &Type::INT8).is_err());
        assert_eq!(
            encode(Value::Int(7), &Type::TEXT),
            Ok((false, b"7".to_vec()))
        );
        assert!(supports(Param::IssuedAt, &Type::TIMESTAMP));
        assert!(!supports(Param::AccessToken, &Type::INT8));
        assert!(!supports(Param::Generation, &Type::UUID));
    }
}
