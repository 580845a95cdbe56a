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
    manifest
        .timezone
        .parse::<chrono_tz::Tz>()
        .map_err(|e| LoadError::BadManifest(format!("timezone: {e}")))?;
    for (name, url) in &manifest.base_urls {
        url::Url::parse(url)
            .map_err(|e| LoadError::BadManifest(format!("base URL {name}: {e}")))?;
    }
    if let Some(name) = manifest
        .served_extras
        .iter()
        .find(|n| n.contains("refresh"))
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
