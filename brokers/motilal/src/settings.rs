//! The operator's configuration of the Motilal calls: endpoint paths (versions move, motilal.md
//! risk 2) and the device/client headers every call carries (risk 4). None of these is a
//! credential; every one is a `[brokers.motilal]` setting with the default below.

use std::collections::BTreeMap;

use broker_api::wire::{ErrorClass, ErrorOutput};

/// Setting names and defaults, as the manifest declares them.
pub const DEFAULTS: &[(&str, &str)] = &[
    // Endpoint paths under `api_url` (docs' current versions; the SDK pins older ones).
    ("login_path", "/rest/login/v7/authdirectapi"),
    ("access_token_path", "/rest/login/v1/getaccesstoken"),
    ("profile_path", "/rest/login/v5/getprofile"),
    // The static IP registered with Motilal: no default can be right, so empty stops the login
    // before the password is sent.
    ("client_public_ip", ""),
    ("client_local_ip", "127.0.0.1"),
    ("mac_address", "00:00:00:00:00:00"),
    ("source_id", "WEB"),
    // Empty: the account's client code (motilal.md: dealers put their vendor name here).
    ("vendor_info", ""),
    ("user_agent", "MOSL/V.1.1.0"),
    ("os_name", "Linux"),
    ("os_version", "6"),
    ("installed_app_id", "tokenbot"),
    ("device_model", "server"),
    ("manufacturer", "unknown"),
    ("product_name", "Investor"),
    ("product_version", "1"),
    ("latitude", "19.0760"),
    ("longitude", "72.8777"),
    ("sdk_version", "V.1.1.0"),
    ("browser_name", "Chrome"),
    ("browser_version", "120"),
    // Assisted login (disabled unless `assisted_login_url` is configured): the callback's query
    // parameter carrying the AuthToken.
    ("assisted_token_param", "authtoken"),
];

/// The effective settings of one call.
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    /// The effective settings (the host's), the defaults filling any gap (an older host).
    pub fn new(given: &BTreeMap<String, String>) -> Settings {
        let mut values: BTreeMap<String, String> = DEFAULTS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        values.extend(given.iter().map(|(k, v)| (k.clone(), v.trim().to_owned())));
        Settings { values }
    }

    /// A setting's value (empty when unknown).
    pub fn get(&self, name: &str) -> &str {
        self.values.get(name).map_or("", String::as_str)
    }

    /// The headers every call carries (motilal.md "Conventions"), checked before any is sent.
    pub fn common_headers(
        &self,
        api_key: &str,
        client_code: &str,
    ) -> Result<Vec<(&'static str, String)>, ErrorOutput> {
        let public_ip = self.get("client_public_ip");
        if public_ip.is_empty() {
            return Err(ErrorOutput::new(
                ErrorClass::AppNotAuthorized,
                "motilal: setting client_public_ip is empty: set [brokers.motilal] \
                 client_public_ip to the static IP registered with Motilal",
            )
            .before_credentials());
        }
        let source = self.get("source_id").to_ascii_uppercase();
        if source != "WEB" && source != "DESKTOP" {
            return Err(bad("source_id", &source, "WEB or DESKTOP"));
        }
        let vendor = match self.get("vendor_info") {
            "" => client_code.to_owned(),
            v => v.to_owned(),
        };
        let mut h = vec![
            ("Accept", "application/json".to_owned()),
            ("User-Agent", self.get("user_agent").to_owned()),
            ("ApiKey", api_key.to_owned()),
            ("ClientLocalIp", self.get("client_local_ip").to_owned()),
            ("ClientPublicIp", public_ip.to_owned()),
            ("MacAddress", self.get("mac_address").to_owned()),
            ("SourceId", source.clone()),
            ("vendorinfo", vendor),
        ];
        for (header, setting) in [
            ("osname", "os_name"),
            ("osversion", "os_version"),
            ("installedappid", "installed_app_id"),
            ("devicemodel", "device_model"),
            ("manufacturer", "manufacturer"),
            ("productname", "product_name"),
            ("productversion", "product_version"),
            ("latitude", "latitude"),
            ("longitude", "longitude"),
            ("sdkversion", "sdk_version"),
        ] {
            h.push((header, self.get(setting).to_owned()));
        }
        if source == "WEB" {
            h.push(("browsername", self.get("browser_name").to_owned()));
            h.push(("browserversion", self.get("browser_version").to_owned()));
        }
        Ok(h)
    }
}

fn bad(name: &str, value: &str, expected: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!("motilal: setting {name} = {value:?}: must be {expected}"),
    )
    .before_credentials()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_public_ip_stops_before_any_credential() {
        let s = Settings::new(&BTreeMap::new());
        let e = s.common_headers("K", "AA017").unwrap_err();
        assert_eq!(e.class, ErrorClass::AppNotAuthorized);
        assert!(!e.credentials_sent);
        let s = Settings::new(&BTreeMap::from([
            ("client_public_ip".into(), "203.0.113.7".into()),
            ("source_id".into(), "desktop".into()),
        ]));
        let h = s.common_headers("K", "AA017").unwrap();
        assert!(h.contains(&("vendorinfo", "AA017".into())));
        assert!(h.contains(&("SourceId", "DESKTOP".into())));
        assert!(!h.iter().any(|(n, _)| *n == "browsername"));
    }
}
