//! A broker login's credentials, and the one list of their field names.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};

/// The credential fields every broker shares, as the CLI, the API, `--from-json`, strategy
/// manifests and the vault's records spell them: `broker_user_id` (the account's, not secret) and
/// then the secrets [`Credentials`] holds, in the order records store them. A strategy's manifest
/// may declare more ([`is_extra_field_name`]); those live in [`Credentials::extra`].
pub const CREDENTIAL_FIELDS: &[&str] = &[
    "broker_user_id",
    "password",
    "api_key",
    "api_secret",
    "totp_secret",
];

/// Whether `name` can be the name of a field a strategy declares beyond [`CREDENTIAL_FIELDS`]:
/// 1-32 of `[a-z0-9_]`, starting with a letter, and none of the shared names (`pin`, `mobile`,
/// `api_user_id`, `dob_or_pan`, ...).
pub fn is_extra_field_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !CREDENTIAL_FIELDS.contains(&name)
}

/// A broker login's secrets. Which are needed depends on the strategy's manifest.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Login password.
    pub password: Option<SecretString>,
    /// API (app) key. Not strictly secret at every broker, stored encrypted all the same.
    pub api_key: Option<SecretString>,
    /// API (app) secret.
    pub api_secret: Option<SecretString>,
    /// TOTP secret (base32 or an `otpauth://` URI).
    pub totp_secret: Option<SecretString>,
    /// Fields a strategy declares beyond the five, by name (`pin`, `mobile`, ...). Stored
    /// encrypted like every other field, whether or not the manifest calls them secret.
    pub extra: BTreeMap<String, SecretString>,
}

impl Credentials {
    /// The secret fields' names: every credential field but `broker_user_id`, in list order.
    pub fn secret_fields() -> impl Iterator<Item = &'static str> {
        CREDENTIAL_FIELDS
            .iter()
            .copied()
            .filter(|&name| name != "broker_user_id")
    }

    /// Every field that holds a value: the shared ones in list order, then the extras by name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let shared: Vec<&str> = Credentials::secret_fields()
            .filter(|name| self.get(name).is_some())
            .collect();
        shared
            .into_iter()
            .chain(self.extra.keys().map(String::as_str))
    }

    /// The fields `self` sets to a value other than `other`'s. A field `self` leaves out is not
    /// a change: dropping a field never fixes a credential the broker refused.
    pub fn changed_fields(&self, other: &Credentials) -> Vec<String> {
        let value = |c: &Credentials, name: &str| c.get(name).map(|s| s.expose_secret().to_owned());
        self.names()
            .filter(|&name| value(self, name) != value(other, name))
            .map(str::to_owned)
            .collect()
    }

    /// The field called `name`, shared or extra.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        match self.slot(name) {
            Some(slot) => slot.as_ref(),
            None => self.extra.get(name),
        }
    }

    /// Set the field called `name`; false for a name that is neither a shared secret field nor a
    /// possible extra one ([`is_extra_field_name`]).
    pub fn set(&mut self, name: &str, value: SecretString) -> bool {
        if let Some(slot) = self.slot_mut(name) {
            *slot = Some(value);
            true
        } else if is_extra_field_name(name) {
            self.extra.insert(name.to_owned(), value);
            true
        } else {
            false
        }
    }

    /// Where the secret field called `name` lives.
    fn slot(&self, name: &str) -> Option<&Option<SecretString>> {
        match name {
            "password" => Some(&self.password),
            "api_key" => Some(&self.api_key),
            "api_secret" => Some(&self.api_secret),
            "totp_secret" => Some(&self.totp_secret),
            _ => None,
        }
    }

    fn slot_mut(&mut self, name: &str) -> Option<&mut Option<SecretString>> {
        match name {
            "password" => Some(&mut self.password),
            "api_key" => Some(&mut self.api_key),
            "api_secret" => Some(&mut self.api_secret),
            "totp_secret" => Some(&mut self.totp_secret),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_field_has_a_slot() {
        let mut credentials = Credentials::default();
        for name in Credentials::secret_fields() {
            assert!(credentials.set(name, SecretString::from(name)), "{name}");
            assert_eq!(credentials.get(name).map(|s| s.expose_secret()), Some(name));
        }
        assert!(!credentials.set("broker_user_id", SecretString::from("x")));
        assert!(!credentials.set("Not A Name", SecretString::from("x")));
        assert!(credentials.set("pin", SecretString::from("1234")));
        assert_eq!(
            credentials.get("pin").map(|s| s.expose_secret()),
            Some("1234")
        );
        assert_eq!(
            credentials.changed_fields(&Credentials::default()),
            ["password", "api_key", "api_secret", "totp_secret", "pin"]
        );
        assert!(
            Credentials::default()
                .changed_fields(&credentials)
                .is_empty(),
            "leaving fields out changes nothing"
        );
    }
}
