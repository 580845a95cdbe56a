//! Records as bytes: plain JSON (accounts, logs), or JSON sealed per record with the record keys
//! (credentials, tokens, outbox). Errors name the table and the record's key, never its contents.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::credentials::Credentials;
use super::crypto::RecordKeys;
use super::error::VaultError;
use super::ids::AccountKey;
use super::model::{NewToken, SecretJson, Token};
use super::store::Table;

/// A printable name for a record key: ids and sequence numbers only.
pub(crate) fn record_key_text(table: Table, key: &[u8]) -> String {
    match table {
        Table::Meta => String::from_utf8_lossy(key).into_owned(),
        Table::Accounts | Table::Credentials | Table::Tokens => {
            match AccountKey::decode_prefix(key) {
                Some((k, [])) => k.to_string(),
                _ => format!("(undecodable key of {} bytes)", key.len()),
            }
        }
        Table::Attempts => match AccountKey::decode_prefix(key) {
            Some((k, rest)) if rest.len() == 8 => {
                format!("{k}#{}", seq_of(rest).unwrap_or_default())
            }
            _ => format!("(undecodable key of {} bytes)", key.len()),
        },
        Table::Audit | Table::Outbox => match seq_of(key) {
            Some(n) => format!("#{n}"),
            None => format!("(undecodable key of {} bytes)", key.len()),
        },
    }
}

/// Seal `plain` for `table`/`key`.
pub(crate) fn seal(keys: &RecordKeys, table: Table, key: &[u8], plain: &[u8]) -> Vec<u8> {
    keys.seal(table.name(), key, plain)
}

/// Open a sealed record, or a typed integrity error naming it.
pub(crate) fn unseal(
    keys: &RecordKeys,
    table: Table,
    key: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    keys.open(table.name(), key, sealed)
        .map_err(|_| VaultError::Integrity {
            table: table.name(),
            key: record_key_text(table, key),
        })
}

/// The sequence number a log key (8 bytes, big-endian) holds.
pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
    key.try_into().map(u64::from_be_bytes).ok()
}

/// Serialise into a buffer that is zeroized when dropped.
pub(crate) fn to_secret_json(value: &impl Serialize) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(1024));
    serde_json::to_writer(&mut *buf, value).expect("records serialise");
    buf
}

/// Parse decrypted JSON. The error never quotes the plaintext.
pub(crate) fn from_secret_json<T: serde::de::DeserializeOwned>(
    table: Table,
    key: &[u8],
    plain: &[u8],
) -> Result<T, VaultError> {
    serde_json::from_slice(plain).map_err(|e| {
        VaultError::malformed(
            table.name(),
            record_key_text(table, key),
            format!("decrypted record does not parse ({:?})", e.classify()),
        )
    })
}

/// Parse a plain JSON record.
pub(crate) fn from_plain_json<T: serde::de::DeserializeOwned>(
    table: Table,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, VaultError> {
    serde_json::from_slice(bytes)
        .map_err(|e| VaultError::malformed(table.name(), record_key_text(table, key), e))
}

/// Credentials as their record stores them: a JSON object with every shared secret field, in list
/// order, `null` when unset, then each extra field that has a value.
struct CredentialsOut<'a>(&'a Credentials);

impl Serialize for CredentialsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for name in Credentials::secret_fields() {
            map.serialize_entry(name, &self.0.get(name).map(|s| s.expose_secret()))?;
        }
        for (name, value) in &self.0.extra {
            map.serialize_entry(name, value.expose_secret())?;
        }
        map.end()
    }
}

/// A credentials record read back: names it does not know are ignored.
type CredentialsIn = std::collections::BTreeMap<String, Option<SecretString>>;

#[derive(Serialize)]
struct TokenOut<'a> {
    access_token: &'a str,
    issued_at_ms: i64,
    expires_at_ms: i64,
    extras: &'a str,
    served_extras: &'a str,
    generation: u64,
}

#[derive(Deserialize)]
pub(crate) struct TokenIn {
    access_token: SecretString,
    issued_at_ms: i64,
    expires_at_ms: i64,
    extras: String,
    #[serde(default = "empty_object")]
    served_extras: String,
    generation: u64,
}

fn empty_object() -> String {
    "{}".to_owned()
}

pub(crate) fn seal_credentials(keys: &RecordKeys, key: &[u8], c: &Credentials) -> Vec<u8> {
    let out = CredentialsOut(c);
    seal(keys, Table::Credentials, key, &to_secret_json(&out))
}

pub(crate) fn open_credentials(
    keys: &RecordKeys,
    key: &[u8],
    sealed: &[u8],
) -> Result<Credentials, VaultError> {
    let plain = unseal(keys, Table::Credentials, key, sealed)?;
    let record: CredentialsIn = from_secret_json(Table::Credentials, key, &plain)?;
    let mut credentials = Credentials::default();
    for (name, value) in record {
        if let Some(value) = value {
            credentials.set(&name, value);
        }
    }
    Ok(credentials)
}

pub(crate) fn seal_token(keys: &RecordKeys, key: &[u8], t: &NewToken, generation: u64) -> Vec<u8> {
    let out = TokenOut {
        access_token: t.access_token.expose_secret(),
        issued_at_ms: t.issued_at_ms,
        expires_at_ms: t.expires_at_ms,
        extras: t.extras.expose_text(),
        served_extras: t.served_extras.expose_text(),
        generation,
    };
    seal(keys, Table::Tokens, key, &to_secret_json(&out))
}

pub(crate) fn open_token(
    keys: &RecordKeys,
    key: &[u8],
    sealed: &[u8],
) -> Result<Token, VaultError> {
    let plain = unseal(keys, Table::Tokens, key, sealed)?;
    let t: TokenIn = from_secret_json(Table::Tokens, key, &plain)?;
    let json = |text: String| {
        SecretJson::from_text(text).map_err(|_| {
            VaultError::malformed(
                Table::Tokens.name(),
                record_key_text(Table::Tokens, key),
                "token extras are not JSON",
            )
        })
    };
    let extras = json(t.extras)?;
    let served_extras = json(t.served_extras)?;
    Ok(Token {
        access_token: t.access_token,
        issued_at_ms: t.issued_at_ms,
        expires_at_ms: t.expires_at_ms,
        extras,
        served_extras,
        generation: t.generation,
    })
}
