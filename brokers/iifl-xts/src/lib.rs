//! IIFL Blaze (XTS) login strategy: an interactive session from appKey and secretKey.

use std::collections::BTreeMap;

use broker_api::wire::{
    CredentialField, ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, WIRE_VERSION,
};
use broker_api::{Host, Strategy};

/// The IIFL Blaze (XTS) strategy.
pub struct IiflXts;

impl Strategy for IiflXts {
    const ID: &'static str = "iifl-xts";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "IIFL Blaze (XTS)".into(),
            credential_fields: vec![
                CredentialField { name: "broker_user_id".into(), secret: false, required: true },
                CredentialField { name: "api_key".into(), secret: false, required: true },
                CredentialField { name: "api_secret".into(), secret: true, required: true },
            ],
            schedule: "0 3 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "the earlier of the JWT exp and the next 00:00 Asia/Kolkata".into(),
            base_urls: BTreeMap::from([("api_url".into(), "https://ttblaze.iifl.com".into())]),
            allowed_hosts: vec!["ttblaze.iifl.com".into()],
            max_concurrency: 8,
            rate_limit_per_sec: 5.0,
        }
    }

    fn login(_host: &Host<'_>, _req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        Err(ErrorOutput::new(ErrorClass::Protocol, "iifl-xts login is not implemented yet"))
    }
}

broker_api::export_strategy!(IiflXts);
