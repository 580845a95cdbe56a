//! Service API keys, kept as SHA-256 digests only and compared in constant time.

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::KeyName;
use crate::config::AuthConfig;

/// The configured keys: `[auth.api_keys]` (name, hex digest) and `TOKENBOT_API_KEY` (`env`).
pub(super) struct ApiKeys {
    /// (name, SHA-256 of the key).
    keys: Vec<(KeyName, [u8; 32])>,
}

impl ApiKeys {
    /// A digest that is not 64 hex chars is left out with an error logged.
    pub(super) fn from_config(config: &AuthConfig) -> ApiKeys {
        let mut keys = Vec::new();
        for (name, hex_digest) in &config.api_keys {
            let mut digest = [0u8; 32];
            match hex::decode_to_slice(hex_digest, &mut digest) {
                Ok(()) => keys.push((KeyName::from(name.as_str()), digest)),
                Err(_) => {
                    tracing::error!(key = %name, "auth.api_keys entry is not a SHA-256 hex digest; ignored")
                }
            }
        }
        if let Some(key) = &config.api_key {
            keys.push((KeyName::from("env"), sha256(key.expose_secret())));
        }
        ApiKeys { keys }
    }

    /// The name of the key `presented`, if it is one.
    pub(super) fn name(&self, presented: &str) -> Option<&KeyName> {
        let digest = sha256(presented);
        let mut found = None;
        for (name, stored) in &self.keys {
            // Every digest is compared; only the result of each comparison is branched on.
            if bool::from(stored.ct_eq(&digest)) {
                found = Some(name);
            }
        }
        found
    }

    /// The names, for `Debug`.
    pub(super) fn names(&self) -> Vec<&KeyName> {
        self.keys.iter().map(|k| &k.0).collect()
    }
}

pub(super) fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}
