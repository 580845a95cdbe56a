//! Identifiers: the platform's user, the broker, and the account (a user at a broker). Not secret.

use serde::{Deserialize, Serialize};

/// An identifier that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidId {
    /// `user id` or `broker id`.
    pub what: &'static str,
    /// The offending value (ids are not secret).
    pub value: String,
    /// Why.
    pub reason: &'static str,
}

/// The platform's user id (e.g. `28748327` or a UUID). Not secret. Serialised as its string
/// (without a copy: every audit entry carries one); deserialised through [`UserId::new`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct UserId(String);

/// A broker (strategy) id such as `kite` or `iifl-xts`. Serialised as its string; deserialised
/// through [`BrokerId::new`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct BrokerId(String);

impl UserId {
    /// Up to 128 bytes, printable, no whitespace.
    pub fn new(id: impl Into<String>) -> Result<UserId, InvalidId> {
        let id = id.into();
        let bad = |reason| InvalidId {
            what: "user id",
            value: id.clone(),
            reason,
        };
        if id.is_empty() || id.len() > 128 {
            return Err(bad("must be 1 to 128 bytes"));
        }
        if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("must not contain whitespace or control characters"));
        }
        Ok(UserId(id))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Key prefix shared by every account of this user (see [`AccountKey::encode`]).
    pub(crate) fn key_prefix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.0.len());
        out.extend_from_slice(&(self.0.len() as u16).to_be_bytes());
        out.extend_from_slice(self.0.as_bytes());
        out
    }
}

impl BrokerId {
    /// 1 to 32 of `a-z 0-9 - _`, starting with a letter or digit.
    pub fn new(id: impl Into<String>) -> Result<BrokerId, InvalidId> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 32
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && id.as_bytes()[0].is_ascii_alphanumeric();
        if !ok {
            return Err(InvalidId {
                what: "broker id",
                value: id,
                reason: "must be 1 to 32 of a-z, 0-9, '-' and '_'",
            });
        }
        Ok(BrokerId(id))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! id_traits {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&self.0)
            }
        }
        impl TryFrom<String> for $t {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                <$t>::new(s)
            }
        }
        impl From<$t> for String {
            fn from(id: $t) -> String {
                id.0
            }
        }
        // As its string, without the copy `#[serde(into = "String")]` makes.
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                <$t>::new(s)
            }
        }
    };
}
id_traits!(UserId);
id_traits!(BrokerId);

/// One account: a user at a broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountKey {
    /// The user.
    pub user: UserId,
    /// The broker.
    pub broker: BrokerId,
}

impl AccountKey {
    /// The key of `user` at `broker`.
    pub fn new(user: UserId, broker: BrokerId) -> AccountKey {
        AccountKey { user, broker }
    }

    /// Parse both ids.
    pub fn parse(user: &str, broker: &str) -> Result<AccountKey, InvalidId> {
        Ok(AccountKey::new(UserId::new(user)?, BrokerId::new(broker)?))
    }

    /// Storage key: `len(user) u16 BE | user | len(broker) u8 | broker`. The user part comes first
    /// so one prefix scan finds every account of a user.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.user.key_prefix();
        out.push(self.broker.0.len() as u8);
        out.extend_from_slice(self.broker.0.as_bytes());
        out
    }

    /// Inverse of [`encode`](Self::encode); also returns the bytes after the key.
    pub(crate) fn decode_prefix(bytes: &[u8]) -> Option<(AccountKey, &[u8])> {
        let user_len = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
        let user = std::str::from_utf8(bytes.get(2..2 + user_len)?).ok()?;
        let rest = &bytes[2 + user_len..];
        let broker_len = *rest.first()? as usize;
        let broker = std::str::from_utf8(rest.get(1..1 + broker_len)?).ok()?;
        let key = AccountKey::parse(user, broker).ok()?;
        Some((key, &rest[1 + broker_len..]))
    }
}

impl std::fmt::Display for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.user, self.broker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_encode_unambiguously() {
        let a = AccountKey::parse("ab", "c").unwrap();
        let b = AccountKey::parse("a", "bc").unwrap();
        assert_ne!(a.encode(), b.encode());
        let mut bytes = a.encode();
        bytes.extend_from_slice(&[1, 2]);
        let (decoded, rest) = AccountKey::decode_prefix(&bytes).unwrap();
        assert_eq!((decoded, rest), (a.clone(), &[1u8, 2][..]));
        assert!(a.encode().starts_with(&a.user.key_prefix()));
        assert!(
            !AccountKey::parse("a", "x")
                .unwrap()
                .encode()
                .starts_with(&UserId::new("ab").unwrap().key_prefix())
        );
    }

    #[test]
    fn ids_are_validated() {
        assert!(UserId::new("28748327").is_ok());
        assert!(UserId::new("6f1c1c1e-8c1a-4b5e-9d1a-1e2f3a4b5c6d").is_ok());
        assert!(UserId::new("").is_err());
        assert!(UserId::new("a b").is_err());
        assert!(BrokerId::new("iifl-xts").is_ok());
        assert!(BrokerId::new("Kite").is_err());
        assert!(BrokerId::new("-x").is_err());
    }
}
