//! The operator's `[brokers.shoonya]` settings. Whether QuickAuth still works for an account is
//! unknown (shoonya.md, risk 1), so which login runs on schedule is a setting, off by default.

use std::collections::BTreeMap;

use broker_api::wire::{ErrorClass, ErrorOutput};

/// `oauth` (default: scheduled logins ask for an assisted login) or `quickauth` (headless).
pub const FLOW: &str = "flow";
/// `true` turns QuickAuth on: issue #18's spelling of `flow = "quickauth"`.
pub const HEADLESS: &str = "headless";
/// The IST hour at which sessions end (shoonya.md, Validity [INF]).
pub const EXPIRY_HOUR_IST: &str = "expiry_hour_ist";

/// Which login the scheduler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Assisted OAuth only: a scheduled login contacts nobody and asks for a person.
    OAuth,
    /// Headless QuickAuth (provisional).
    QuickAuth,
}

impl Flow {
    /// The name served in the token's `flow` extra and used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Flow::OAuth => "oauth",
            Flow::QuickAuth => "quickauth",
        }
    }
}

/// The effective settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The scheduled login.
    pub flow: Flow,
    /// Sessions end at this IST hour.
    pub expiry_hour_ist: u32,
}

/// The settings with their defaults, for the manifest.
pub fn defaults() -> BTreeMap<String, String> {
    BTreeMap::from([
        (FLOW.into(), "oauth".into()),
        (HEADLESS.into(), "false".into()),
        (EXPIRY_HOUR_IST.into(), "6".into()),
    ])
}

fn bad(name: &str, value: &str, why: &str) -> ErrorOutput {
    // Settings are not secrets; the value is quoted so the operator sees the typo.
    ErrorOutput::new(
        ErrorClass::Protocol,
        format!("shoonya: setting `{name}` = {value:?}: {why}"),
    )
    .before_credentials()
}

/// Parse the effective settings; a bad value fails before anything is sent.
pub fn parse(map: &BTreeMap<String, String>) -> Result<Settings, ErrorOutput> {
    let defaults = defaults();
    let get = |name: &str| {
        map.get(name)
            .or_else(|| defaults.get(name))
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default()
    };
    let flow = match get(FLOW).as_str() {
        "oauth" => Flow::OAuth,
        "quickauth" => Flow::QuickAuth,
        // shoonya.md's provisional headless OAuth needs a value copied by hand from a web login
        // and a fake nobody has checked against the real host: not built.
        "oauth_headless" => {
            return Err(bad(
                FLOW,
                "oauth_headless",
                "the headless OAuth variant is not implemented; use \"oauth\" or \"quickauth\"",
            ));
        }
        other => return Err(bad(FLOW, other, "expected \"oauth\" or \"quickauth\"")),
    };
    let headless = match get(HEADLESS).as_str() {
        "true" | "on" | "yes" => true,
        "false" | "off" | "no" => false,
        other => return Err(bad(HEADLESS, other, "expected \"true\" or \"false\"")),
    };
    let hour = get(EXPIRY_HOUR_IST);
    let expiry_hour_ist = hour
        .parse::<u32>()
        .ok()
        .filter(|h| *h < 24)
        .ok_or_else(|| bad(EXPIRY_HOUR_IST, &hour, "expected an hour from 0 to 23"))?;
    Ok(Settings {
        // Either spelling turns QuickAuth on; neither can turn it off behind the other's back.
        flow: if headless { Flow::QuickAuth } else { flow },
        expiry_hour_ist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, ErrorOutput> {
        parse(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn oauth_by_default_and_either_spelling_turns_quickauth_on() {
        assert_eq!(with(&[]).unwrap().flow, Flow::OAuth);
        assert_eq!(with(&[]).unwrap().expiry_hour_ist, 6);
        assert_eq!(with(&[(FLOW, "QuickAuth")]).unwrap().flow, Flow::QuickAuth);
        assert_eq!(with(&[(HEADLESS, "true")]).unwrap().flow, Flow::QuickAuth);
        assert_eq!(
            with(&[(FLOW, "oauth"), (HEADLESS, "false")]).unwrap().flow,
            Flow::OAuth
        );
        for bad in [
            (FLOW, "oauth_headless"),
            (FLOW, "totp"),
            (HEADLESS, "1"),
            (EXPIRY_HOUR_IST, "24"),
            (EXPIRY_HOUR_IST, "six"),
        ] {
            let e = with(&[bad]).unwrap_err();
            assert!(!e.credentials_sent);
            assert!(e.message.contains(bad.0), "{}", e.message);
        }
    }
}
