//! What a strategy's id, version and manifest must satisfy to be loaded.

use broker_api::wire::Manifest;

use super::LoadError;
use crate::vault::{CREDENTIAL_FIELDS, is_extra_field_name};

pub(super) fn validate(id: &str, version: &str, manifest: &Manifest) -> Result<(), LoadError> {
    let bad = |m: String| Err(LoadError::BadManifest(m));
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad(format!("id {id:?} must be 1-64 of [a-z0-9-]"));
    }
    if version.is_empty() {
        return bad("empty version".into());
    }
    if manifest.v == 0 {
        return bad("manifest version 0".into());
    }
    for field in &manifest.credential_fields {
        let name = field.name.as_str();
        if !CREDENTIAL_FIELDS.contains(&name) && !is_extra_field_name(name) {
            return bad(format!(
                "credential field {name:?} must be one of {} or 1-32 of [a-z0-9_] starting with a letter",
                CREDENTIAL_FIELDS.join(", ")
            ));
        }
    }
    if !manifest
        .credential_fields
        .iter()
        .any(|f| f.name == "broker_user_id")
    {
        return bad("credential fields must include broker_user_id".into());
    }
    (manifest.schedule.parse::<croner::Cron>())
        .map_err(|e| LoadError::BadManifest(format!("schedule: {e}")))?;
    crate::clock::timezone(&manifest.timezone)
        .map_err(|e| LoadError::BadManifest(format!("timezone: {e}")))?;
    for (name, url) in &manifest.base_urls {
        url::Url::parse(url)
            .map_err(|e| LoadError::BadManifest(format!("base URL {name}: {e}")))?;
    }
    for host in &manifest.allowed_hosts {
        // `*.domain` needs a domain of two labels at least: never `*` or `*.com`.
        if host.contains('*')
            && !host
                .strip_prefix("*.")
                .is_some_and(|d| d.contains('.') && !d.contains('*'))
        {
            return bad(format!(
                "allowed host {host:?}: a wildcard is `*.` and a domain"
            ));
        }
    }
    if let Some(name) =
        (manifest.served_extras.iter()).find(|n| n.to_ascii_lowercase().contains("refresh"))
    {
        return bad(format!(
            "served extra {name:?}: refresh tokens are never served"
        ));
    }
    let rate = manifest.rate_limit_per_sec;
    if manifest.max_concurrency == 0 || !(rate.is_finite() && rate > 0.0) {
        return bad("max_concurrency and rate_limit_per_sec must be positive".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use broker_api::wire::{CredentialField, Validity};

    use super::*;

    fn manifest(fields: &[&str], served: &[&str]) -> Manifest {
        Manifest {
            v: 1,
            display_name: "x".into(),
            credential_fields: fields
                .iter()
                .map(|&name| CredentialField {
                    name: name.into(),
                    label: String::new(),
                    secret: true,
                    required: true,
                })
                .collect(),
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: String::new(),
            base_urls: Default::default(),
            settings: Default::default(),
            allowed_hosts: vec![],
            max_concurrency: 1,
            rate_limit_per_sec: 1.0,
            served_extras: served.iter().map(|&s| s.into()).collect(),
            validity: Validity::Rolling,
            min_login_interval_ms: 120_000,
            callback_has_state: true,
            token_webhook: false,
            kept_extras: Vec::new(),
        }
    }

    fn check(m: &Manifest) -> Result<(), String> {
        validate("b", "1", m).map_err(|e| e.to_string())
    }

    #[test]
    fn fields_beyond_the_five_load_when_their_names_are_well_formed() {
        check(&manifest(
            &["broker_user_id", "pin", "dob_or_pan"],
            &["feed_token"],
        ))
        .unwrap();
        for bad in ["Pin", "1pin", "pin-code", ""] {
            let e = check(&manifest(&["broker_user_id", bad], &[])).unwrap_err();
            assert!(e.contains("credential field"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_manifest_that_would_serve_a_refresh_token_is_refused() {
        for name in ["refresh_token", "RefreshToken"] {
            let e = check(&manifest(&["broker_user_id"], &[name])).unwrap_err();
            assert!(e.contains("refresh tokens are never served"), "{e}");
        }
    }
}
