//! The values a mirror statement binds: each record field converts itself to whatever type the
//! prepared statement's column wants (text, integer, timestamp, JSON), checked at prepare time.

use bytes::BytesMut;
use secrecy::ExposeSecret;
use tokio_postgres::types::{IsNull, Kind, ToSql, Type, to_sql_checked};

use super::template::Param;
use crate::vault::{OutboxRecord, OutboxStatus};

/// One bound value. Converts itself to whatever type the prepared statement wants (checked at
/// prepare time by [`supports`]).
#[derive(Debug)]
pub(super) enum Value<'a> {
    Text(Option<&'a str>),
    /// JSON text, sent as `json`, `jsonb` or text, whichever the statement wants.
    Json(Option<&'a str>),
    /// Unix ms.
    Time(Option<i64>),
    Int(u64),
}

pub(super) fn value(param: Param, r: &OutboxRecord) -> Value<'_> {
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
pub(super) fn supports(param: Param, ty: &Type) -> bool {
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
