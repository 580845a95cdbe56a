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
    /// A name that is neither a shared credential field nor one the broker declares.
    #[error("unknown field `{field}` (broker {broker} takes: {takes}); nothing was written")]
    Unknown {
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
            FieldError::NotUsed { field, .. } | FieldError::Unknown { field, .. } => field,
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
        // Not a shared field (those have fields of their own): one of the manifest's, or refused.
        if !wanted.contains(name.as_str()) || !given.set(&name, value) {
            return Err(FieldError::Unknown {
                field: name,
                broker: broker.to_owned(),
                takes: takes(),
            });
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

#[cfg(test)]
mod tests {
    use broker_api::wire::{CredentialField, Validity};

    use super::*;

    fn field(name: &str, secret: bool, required: bool) -> CredentialField {
        CredentialField {
            name: name.into(),
            label: String::new(),
            secret,
            required,
        }
    }

    /// A broker that takes a PIN and an optional mobile number besides the id and TOTP secret.
    fn manifest() -> Manifest {
        Manifest {
            v: 1,
            display_name: "PIN broker".into(),
            credential_fields: vec![
                field("broker_user_id", false, true),
                field("pin", true, true),
                field("totp_secret", true, true),
                field("mobile", false, false),
            ],
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: String::new(),
            base_urls: Default::default(),
            settings: Default::default(),
            allowed_hosts: vec![],
            max_concurrency: 1,
            rate_limit_per_sec: 1.0,
            served_extras: vec![],
            validity: Validity::Daily,
            min_login_interval_ms: 0,
            callback_has_state: true,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn fields(json: &str) -> Fields {
        serde_json::from_str(json).unwrap()
    }

    const TOTP: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    #[test]
    fn a_declared_extra_field_is_taken_and_stored_with_the_others() {
        let json = format!(r#"{{"broker_user_id":"C1","pin":"739164","totp_secret":"{TOTP}"}}"#);
        let (id, credentials) = check_fields(&manifest(), "pinb", fields(&json)).unwrap();
        assert_eq!(id, "C1");
        assert_eq!(
            credentials.get("pin").map(|p| p.expose_secret()),
            Some("739164")
        );
        assert_eq!(
            credentials.names().collect::<Vec<_>>(),
            ["totp_secret", "pin"]
        );
    }

    #[test]
    fn a_required_extra_field_that_is_missing_or_blank_is_refused_by_name() {
        for json in [
            format!(r#"{{"broker_user_id":"C1","totp_secret":"{TOTP}"}}"#),
            format!(r#"{{"broker_user_id":"C1","pin":"  ","totp_secret":"{TOTP}"}}"#),
        ] {
            let e = check_fields(&manifest(), "pinb", fields(&json)).unwrap_err();
            assert_eq!(e.field(), "pin", "{e}");
        }
    }

    #[test]
    fn names_the_broker_does_not_declare_are_refused_naming_them_never_their_values() {
        let json = format!(
            r#"{{"broker_user_id":"C1","pin":"739164","totp_secret":"{TOTP}","pn":"482913"}}"#
        );
        let e = check_fields(&manifest(), "pinb", fields(&json)).unwrap_err();
        assert!(matches!(e, FieldError::Unknown { .. }), "{e:?}");
        assert_eq!(e.field(), "pn");
        assert!(e.to_string().contains("unknown field `pn`"), "{e}");
        assert!(!e.to_string().contains("482913") && !e.to_string().contains("739164"));
        // A shared field the broker does not take is refused as before.
        let json = format!(
            r#"{{"broker_user_id":"C1","pin":"739164","totp_secret":"{TOTP}","password":"pw"}}"#
        );
        let e = check_fields(&manifest(), "pinb", fields(&json)).unwrap_err();
        assert!(matches!(e, FieldError::NotUsed { .. }), "{e:?}");
        assert_eq!(e.field(), "password");
    }
}
