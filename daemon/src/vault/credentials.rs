//! A broker login's secrets.

use secrecy::SecretString;

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
    /// The fields whose value differs from `other`'s (a field set on one side only counts).
    pub fn changed_fields(&self, other: &Credentials) -> Vec<&'static str> {
        use secrecy::ExposeSecret;
        fn value(s: &Option<SecretString>) -> Option<&str> {
            s.as_ref().map(|s| s.expose_secret())
        }
        [
            ("password", &self.password, &other.password),
            ("api_key", &self.api_key, &other.api_key),
            ("api_secret", &self.api_secret, &other.api_secret),
            ("totp_secret", &self.totp_secret, &other.totp_secret),
        ]
        .into_iter()
        .filter(|(_, a, b)| value(a) != value(b))
        .map(|(name, _, _)| name)
        .collect()
    }

    /// Names of the secret credential fields, as the CLI, the API and `--from-json` spell them.
    pub const FIELDS: [&'static str; 4] = ["password", "api_key", "api_secret", "totp_secret"];

    /// The field called `name`.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        match name {
            "password" => self.password.as_ref(),
            "api_key" => self.api_key.as_ref(),
            "api_secret" => self.api_secret.as_ref(),
            "totp_secret" => self.totp_secret.as_ref(),
            _ => None,
        }
    }

    /// Set the field called `name`; false for an unknown name.
    pub fn set(&mut self, name: &str, value: SecretString) -> bool {
        let slot = match name {
            "password" => &mut self.password,
            "api_key" => &mut self.api_key,
            "api_secret" => &mut self.api_secret,
            "totp_secret" => &mut self.totp_secret,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}
