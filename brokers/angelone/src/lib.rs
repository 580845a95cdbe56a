//! Angel One SmartAPI login strategy (`../shared/protocols/angelone.md` in the design notes). SKELETON: to be
//! written.

use std::collections::BTreeMap;

use broker_api::wire::{
    ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, Validity, WIRE_VERSION,
};
use broker_api::{Host, Strategy};

/// The Angel One SmartAPI strategy.
pub struct AngelOne;

impl Strategy for AngelOne {
    const ID: &'static str = "angelone";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "Angel One SmartAPI".into(),
            credential_fields: Vec::new(),
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: String::new(),
            base_urls: BTreeMap::new(),
            settings: BTreeMap::new(),
            allowed_hosts: Vec::new(),
            max_concurrency: 4,
            rate_limit_per_sec: 5.0,
            served_extras: Vec::new(),
            validity: Validity::Daily,
            min_login_interval_ms: 0,
            callback_has_state: true,
        }
    }

    fn login(_host: &Host<'_>, _req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        Err(
            ErrorOutput::new(ErrorClass::Protocol, "angelone: not written yet")
                .before_credentials(),
        )
    }
}

broker_api::define_entry!(AngelOne);
