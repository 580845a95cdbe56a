//! Zerodha Kite Connect login strategy.

use std::collections::BTreeMap;

use broker_api::wire::{
    CredentialField, ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, WIRE_VERSION,
};
use broker_api::{Host, Strategy};

/// The Kite strategy.
pub struct Kite;

impl Strategy for Kite {
    const ID: &'static str = "kite";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "Zerodha Kite".into(),
            credential_fields: ["broker_user_id", "password", "api_key", "api_secret", "totp_secret"]
                .iter()
                .map(|&name| CredentialField {
                    name: name.into(),
                    secret: matches!(name, "password" | "api_secret" | "totp_secret"),
                    required: true,
                })
                .collect(),
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "until the first 06:00 Asia/Kolkata after login".into(),
            base_urls: BTreeMap::from([
                ("web_url".into(), "https://kite.zerodha.com".into()),
                ("api_url".into(), "https://api.kite.trade".into()),
            ]),
            allowed_hosts: vec!["kite.zerodha.com".into(), "api.kite.trade".into()],
            max_concurrency: 8,
            rate_limit_per_sec: 10.0,
        }
    }

    fn login(_host: &Host<'_>, _req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        Err(ErrorOutput::new(ErrorClass::Protocol, "kite login is not implemented yet"))
    }
}

broker_api::export_strategy!(Kite);
