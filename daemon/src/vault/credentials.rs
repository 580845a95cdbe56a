//! A broker login's credentials, and the one list of their field names.

use secrecy::{ExposeSecret, SecretString};

/// The credential fields, as the CLI, the API, `--from-json`, strategy manifests and the vault's
/// records spell them: `broker_user_id` (the account's, not secret) and then the secrets
/// [`Credentials`] holds, in the order records store them. Every part of the daemon that names
/// credential fields consults this list; fields a broker declares for itself are to join it here.
pub const CREDENTIAL_FIELDS: &[&str] = &[
    "broker_user_id",
    "password",
    "api_key",
    "api_secret",
    "totp_secret",
];

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
}

impl Credentials {
    /// The secret fields' names: every credential field but `broker_user_id`, in list order.
    pub fn secret_fields() -> impl Iterator<Item = &'static str> {
        CREDENTIAL_FIELDS
            .iter()
            .copied()
            .filter(|&name| name != "broker_user_id")
    }

    /// The fields whose value differs from `other`'s (a field set on one side only counts).
    pub fn changed_fields(&self, other: &Credentials) -> Vec<&'static str> {
        fn value<'a>(c: &'a Credentials, name: &str) -> Option<&'a str> {
            c.get(name).map(|s| s.expose_secret())
        }
        Credentials::secret_fields()
            .filter(|&name| value(self, name) != value(other, name))
            .collect()
    }

    /// The field called `name`.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.slot(name)?.as_ref()
    }

    /// Set the field called `name`; false for an unknown name.
    pub fn set(&mut self, name: &str, value: SecretString) -> bool {
        match self.slot_mut(name) {
            Some(slot) => {
                *slot = Some(value);
                true
            }
            None => false,
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
        assert_eq!(
            Credentials::default().changed_fields(&credentials),
            ["password", "api_key", "api_secret", "totp_secret"]
        );
    }
}
