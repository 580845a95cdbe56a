//! Credential fields as people give them, checked against their broker's manifest. Shared by
//! `tokenbot user add` and the HTTP API (`POST /api/credentials`, `PUT /api/users/.../accounts/...`),
//! so both accept and refuse exactly the same input. Errors name fields, never values. The field
//! names are the vault's list ([`crate::vault::CREDENTIAL_FIELDS`]) plus those the broker's
//! manifest declares for itself (`pin`, `mobile`, ...); any other name is refused, naming it.

use std::collections::{BTreeMap, BTreeSet};

use broker_api::wire::Manifest;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::vault::Credentials;

/// The credential fields as the CLI's `--from-json` and the API spell them.
#[derive(Default, Deserialize)]
pub struct Fields {
    /// The user's id at the broker (not secret).
    pub broker_user_id: Option<String>,
    /// Login password.
    pub password: Option<SecretString>,
    /// API (app) key.
    pub api_key: Option<SecretString>,
    /// API (app) secret.
    pub api_secret: Option<SecretString>,
    /// TOTP secret (base32 or an `otpauth://` URI).
    pub totp_secret: Option<SecretString>,
    /// Every other key: the fields the broker's manifest declares beyond the five, and anything
    /// else, which [`check_fields`] refuses by name.
    #[serde(flatten)]
    pub extra: BTreeMap<String, SecretString>,
}

/// Why fields were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A field the broker's strategy does not take.
    #[error("field `{field}` is not used by broker {broker} (it takes: {takes})")]
    NotUsed {
        /// The field.
        field: String,
        /// The broker.
        broker: String,
        /// The fields it takes.
        takes: String,
    },
    /// A field the strategy requires is absent or blank.
    #[error("missing field `{field}` (broker {broker} needs: {takes}); nothing was written")]
    Missing {
        /// The field.
        field: String,
        /// The broker.
        broker: String,
        /// The fields it takes.
        takes: String,
    },
    /// The TOTP secret does not decode.
    #[error("field `totp_secret`: {0}; nothing was written")]
    BadTotp(String),
}

impl FieldError {
    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            FieldError::NotUsed { field, .. } => field,
            FieldError::Missing { field, .. } => field,
            FieldError::BadTotp(_) => "totp_secret",
        }
    }
}

/// Check `fields` against `manifest`: every required one present, none it does not use, a TOTP
/// secret that parses. Blank values count as absent. Returns the broker-side user id and the
/// secrets to store.
pub fn check_fields(
    manifest: &Manifest,
    broker: &str,
    fields: Fields,
) -> Result<(String, Credentials), FieldError> {
    let wanted: BTreeSet<&str> = manifest
        .credential_fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    let takes = || {
        manifest
            .credential_fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let not_used = |field: &str| FieldError::NotUsed {
        field: field.to_owned(),
        broker: broker.to_owned(),
        takes: takes(),
    };
    let mut given = Credentials {
        password: fields.password,
        api_key: fields.api_key,
        api_secret: fields.api_secret,
        totp_secret: fields.totp_secret,
        extra: BTreeMap::new(),
    };
    for (name, value) in fields.extra {
        // A shared name here is a key the manifest may not use (`broker_user_id` aside, which
        // has a field of its own); anything else must be one of the manifest's own fields.
        if !wanted.contains(name.as_str()) || !given.set(&name, value) {
            return Err(not_used(&name));
        }
    }
    let mut credentials = Credentials::default();
    let broker_user_id = fields
        .broker_user_id
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if broker_user_id.is_some() && !wanted.contains("broker_user_id") {
        return Err(not_used("broker_user_id"));
    }
    for name in given.names() {
        let Some(value) = given
            .get(name)
            .filter(|v| !v.expose_secret().trim().is_empty())
        else {
            continue;
        };
        if !wanted.contains(name) {
            return Err(not_used(name));
        }
        credentials.set(name, value.clone());
    }
    for field in manifest.credential_fields.iter().filter(|f| f.required) {
        let present = match field.name.as_str() {
            "broker_user_id" => broker_user_id.is_some(),
            name => credentials.get(name).is_some(),
        };
        if !present {
            return Err(FieldError::Missing {
                field: field.name.clone(),
                broker: broker.to_owned(),
                takes: takes(),
            });
        }
    }
    if let Some(totp) = &credentials.totp_secret {
        crate::plugins::totp::parse_secret(totp.expose_secret())
            .map_err(|e| FieldError::BadTotp(e.to_string()))?;
    }
    Ok((broker_user_id.unwrap_or_default(), credentials))
}
