//! IIFL Capital (generation 1) login strategy.

use std::collections::BTreeMap;

use broker_api::wire::{
    CredentialField, ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, WIRE_VERSION,
};
use broker_api::{Host, Strategy};

/// The IIFL Capital strategy.
pub struct Iifl;

impl Strategy for Iifl {
    const ID: &'static str = "iifl";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "IIFL Capital".into(),
            credential_fields: ["broker_user_id", "password", "api_key", "api_secret", "totp_secret"]
                .iter()
                .map(|&name| CredentialField {
                    name: name.into(),
                    secret: matches!(name, "password" | "api_secret" | "totp_secret"),
                    required: true,
                })
                .collect(),
            schedule: "0 3 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "until the next 00:00 Asia/Kolkata after login".into(),
            base_urls: BTreeMap::from([
                ("portal_url".into(), "https://markets.iiflcapital.com".into()),
                ("api_url".into(), "https://api.iiflcapital.com/v1".into()),
            ]),
            allowed_hosts: vec!["markets.iiflcapital.com".into(), "api.iiflcapital.com".into()],
            max_concurrency: 8,
            rate_limit_per_sec: 3.0,
        }
    }

    fn login(_host: &Host<'_>, _req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        Err(ErrorOutput::new(ErrorClass::Protocol, "iifl login is not implemented yet"))
    }
}

broker_api::export_strategy!(Iifl);
