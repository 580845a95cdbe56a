//! Upstox login strategy (`../shared/protocols/upstox.md` in the design notes). Upstox has no
//! headless login: every day's token needs a person, by one of two modes (setting `mode`):
//!
//! - `approval` (default): `login` sends Q1, the v3 Access Token Request; Upstox asks the person
//!   in its app or on WhatsApp and, once they approve, POSTs the token to the app's notifier
//!   webhook (the daemon's `/webhook/upstox/:hook`). `login` therefore answers
//!   `pending_approval` with the request's expiry, and `assisted_finish` with a `delivery`
//!   checks the webhook's body ([`delivery`]) and the token (V) before the host stores it;
//! - `redirect`: the OAuth authorization-code flow, A1 in a browser, then A2 and V from the
//!   callback's `code`.
//!
//! Both may be on (`mode = "approval,redirect"`); the host keeps the first token that arrives.
//! Tokens die at the first 03:30 IST after issue. Base URL: `api_url` (`https://api.upstox.com`).

pub mod api;
pub mod delivery;

use std::collections::BTreeMap;

use broker_api::wire::{
    AssistedFinishRequest, AssistedUrlOutput, AssistedUrlRequest, CredentialField, Credentials,
    ErrorClass, ErrorOutput, LoginOutput, LoginRequest, Manifest, Validity, VerifyOutput,
    VerifyRequest, WIRE_VERSION,
};
use broker_api::{Host, Level, Strategy};
use broker_common::http::{self, truncate};

use api::Api;

/// The Upstox strategy.
pub struct Upstox;

/// Which ways of getting a token the operator turned on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modes {
    /// The v3 Access Token Request and the notifier webhook.
    pub approval: bool,
    /// The browser OAuth flow through `/callback/upstox`.
    pub redirect: bool,
}

impl Modes {
    /// `mode`: `approval`, `redirect`, or both separated by a comma (`"approval,redirect"`).
    pub fn parse(settings: &BTreeMap<String, String>) -> Result<Modes, ErrorOutput> {
        let text = settings.get("mode").map_or("approval", String::as_str);
        let mut modes = Modes {
            approval: false,
            redirect: false,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "approval" => modes.approval = true,
                "redirect" => modes.redirect = true,
                _ => {
                    return Err(ErrorOutput::new(
                        ErrorClass::Protocol,
                        format!(
                            "upstox: mode = {:?}: each part must be approval or redirect \
                             (e.g. \"approval,redirect\")",
                            truncate(text, 60)
                        ),
                    )
                    .before_credentials());
                }
            }
        }
        if !modes.approval && !modes.redirect {
            return Err(ErrorOutput::new(
                ErrorClass::Protocol,
                "upstox: mode is empty: set approval, redirect or \"approval,redirect\"",
            )
            .before_credentials());
        }
        Ok(modes)
    }
}

fn missing(field: &str) -> ErrorOutput {
    ErrorOutput::new(
        ErrorClass::InvalidCredentials,
        format!("upstox: the account has no {field}"),
    )
    .before_credentials()
}

fn api_key(c: &Credentials) -> Result<&str, ErrorOutput> {
    c.api_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("api_key (the app's API key)"))
}

fn secret(c: &Credentials) -> Result<&str, ErrorOutput> {
    c.api_secret
        .as_ref()
        .map(|s| s.expose())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("api_secret (the app's API secret)"))
}

/// The app's registered redirect URL: the `redirect_uri` field, else the host's callback.
fn redirect_uri(c: &Credentials, host_callback: Option<&str>) -> Result<String, ErrorOutput> {
    c.extra("redirect_uri")
        .or(host_callback.filter(|u| !u.is_empty()))
        .map(str::to_owned)
        .ok_or_else(|| missing("redirect_uri (the app's registered redirect URL)"))
}

fn base(urls: &BTreeMap<String, String>) -> Result<&str, ErrorOutput> {
    urls.get("api_url").map(String::as_str).ok_or_else(|| {
        ErrorOutput::new(
            ErrorClass::Protocol,
            "upstox: base URL `api_url` is not configured",
        )
        .before_credentials()
    })
}

fn field(name: &str, label: &str, secret: bool, required: bool) -> CredentialField {
    CredentialField {
        name: name.into(),
        label: label.into(),
        secret,
        required,
    }
}

/// Whether Q1's `notifier_url` is one of this daemon's webhook routes, judged from the host's
/// callback URL (`<public_url>/callback/upstox`). `None` when the host has no public URL.
fn notifier_matches(notifier: &str, host_callback: Option<&str>) -> Option<bool> {
    let public = host_callback?.strip_suffix("/callback/upstox")?;
    Some(notifier.starts_with(&format!("{public}/webhook/upstox/")))
}

impl Strategy for Upstox {
    const ID: &'static str = "upstox";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const HAS_VERIFY: bool = true;
    const HAS_ASSISTED: bool = true;

    fn manifest() -> Manifest {
        Manifest {
            v: WIRE_VERSION,
            display_name: "Upstox".into(),
            credential_fields: vec![
                field(
                    "broker_user_id",
                    "Upstox user id / UCC (e.g. AB1234)",
                    false,
                    true,
                ),
                field("api_key", "Upstox app API key (client_id)", false, true),
                field("api_secret", "Upstox app API secret", true, true),
                field(
                    "redirect_uri",
                    "Redirect URL registered for the Upstox app (default: this daemon's /callback/upstox)",
                    false,
                    false,
                ),
            ],
            // Upstox tokens die at 03:30 IST; the approval request of an 08:00 run stays open
            // until 03:30 the next morning, so a person has the whole day to tap it.
            schedule: "0 8 * * *".into(),
            timezone: "Asia/Kolkata".into(),
            token_validity: "until the first 03:30 Asia/Kolkata after issue; each day needs a \
                             person (an approval in the Upstox app or WhatsApp, or a browser login)"
                .into(),
            base_urls: BTreeMap::from([("api_url".into(), "https://api.upstox.com".into())]),
            settings: BTreeMap::from([("mode".into(), "approval".into())]),
            allowed_hosts: vec!["api.upstox.com".into()],
            max_concurrency: 2,
            rate_limit_per_sec: 5.0,
            // `user_id` only. `extended_token` is valid for a year: a consumer that leaks it
            // leaks a year of read access, so it stays in the vault (decisions.md).
            served_extras: vec!["user_id".into()],
            validity: Validity::Daily,
            min_login_interval_ms: 0,
            callback_has_state: true,
            token_webhook: true,
            // Minted rarely and valid a year: a daily login that does not send it keeps it.
            kept_extras: vec!["extended_token".into()],
        }
    }

    fn login(host: &Host<'_>, req: LoginRequest) -> Result<LoginOutput, ErrorOutput> {
        let modes = Modes::parse(&req.settings)?;
        if !modes.approval {
            return Err(ErrorOutput::new(
                ErrorClass::AutomationBlocked,
                "upstox: mode = redirect: Upstox has no headless login; log in through the \
                 assisted login URL",
            )
            .before_credentials());
        }
        let key = api_key(&req.credentials)?;
        let secret = secret(&req.credentials)?;
        let api = Api::new(host, base(&req.base_urls)?);
        let requested = match api.request_token(key, secret) {
            // A timeout or a reset may come after Upstox took the request: the person may have a
            // prompt on their phone. Asking again would prompt again, and a second approval
            // kills the first token, so the account waits as if the request went out. (A 5xx or
            // a WAF page is an answer: the request was refused, and may be sent again.)
            Err(e) if e.class == ErrorClass::Network => {
                host.log(
                    Level::Warn,
                    "upstox: the token request's answer was lost; waiting for an approval as if                      it was sent (no new request today unless one is asked for by name)",
                );
                api::Requested {
                    expiry_ms: api::token_expiry(host.now_unix_ms()),
                    notifier_url: None,
                }
            }
            other => other?,
        };
        if let Some(url) = &requested.notifier_url
            && notifier_matches(url.expose(), req.redirect_url.as_deref()) == Some(false)
        {
            // The URL holds the daemon's secret hook: said, never shown.
            host.log(
                Level::Warn,
                "upstox: the app's registered notifier URL is not this daemon's \
                 /webhook/upstox/ route: the token will not reach it",
            );
        }
        host.log(
            Level::Info,
            "upstox: access token request sent; waiting for the person's approval",
        );
        let mut pending = ErrorOutput::new(
            ErrorClass::PendingApproval,
            "upstox: approve the token request in the Upstox app or on WhatsApp (or on the \
             Upstox Developer Apps page, https://account.upstox.com/developer/apps)",
        );
        pending.pending_until_ms = Some(requested.expiry_ms);
        Err(pending)
    }

    fn verify(host: &Host<'_>, req: VerifyRequest) -> Result<VerifyOutput, ErrorOutput> {
        let api = Api::new(host, base(&req.base_urls)?);
        let (valid, message) = match api.profile(req.access_token.expose()) {
            Ok(id)
                if req.broker_user_id.is_empty()
                    || id.eq_ignore_ascii_case(&req.broker_user_id) =>
            {
                (true, String::new())
            }
            Ok(id) => (
                false,
                format!("the token belongs to {id}, not {}", req.broker_user_id),
            ),
            Err(Ok(refused)) => (false, refused),
            Err(Err(e)) => return Err(e),
        };
        Ok(VerifyOutput {
            v: WIRE_VERSION,
            valid,
            message,
        })
    }

    fn assisted_url(
        _host: &Host<'_>,
        req: AssistedUrlRequest,
    ) -> Result<AssistedUrlOutput, ErrorOutput> {
        if !Modes::parse(&req.settings)?.redirect {
            return Err(ErrorOutput::new(
                ErrorClass::Protocol,
                "upstox: redirect mode is off (mode = \"approval\"): approve the token request \
                 in the Upstox app, or add redirect to mode",
            )
            .before_credentials());
        }
        let key = api_key(&req.credentials)?;
        let redirect = redirect_uri(&req.credentials, Some(&req.redirect_url))?;
        let query = http::form(&[
            ("response_type", "code"),
            ("client_id", key),
            ("redirect_uri", &redirect),
            ("state", &req.state),
        ]);
        Ok(AssistedUrlOutput {
            v: WIRE_VERSION,
            url: format!(
                "{}?{query}",
                http::join(base(&req.base_urls)?, "/v2/login/authorization/dialog")
            ),
        })
    }

    fn assisted_finish(
        host: &Host<'_>,
        req: AssistedFinishRequest,
    ) -> Result<LoginOutput, ErrorOutput> {
        let modes = Modes::parse(&req.settings)?;
        let key = api_key(&req.credentials)?;
        let api = Api::new(host, base(&req.base_urls)?);
        if let Some(delivery) = &req.delivery {
            if !modes.approval {
                return Err(ErrorOutput::new(
                    ErrorClass::Protocol,
                    "upstox: approval mode is off: a webhook delivery is not expected",
                ));
            }
            return delivery::accept(host, &api, key, &req.broker_user_id, delivery);
        }
        if !modes.redirect {
            return Err(ErrorOutput::new(
                ErrorClass::Protocol,
                "upstox: redirect mode is off: a login redirect is not expected",
            ));
        }
        let secret = secret(&req.credentials)?;
        // `code` by name; Upstox reports a refused login with `error` instead.
        let code = req
            .query
            .get("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                let why = req
                    .query
                    .get("error_description")
                    .or_else(|| req.query.get("error"))
                    .map(|e| format!(" ({})", truncate(e, 80)))
                    .unwrap_or_default();
                ErrorOutput::new(
                    ErrorClass::Protocol,
                    format!("upstox: the login redirect has no code{why}: log in again"),
                )
            })?;
        let redirect = redirect_uri(&req.credentials, req.redirect_url.as_deref())?;
        host.log(Level::Info, "upstox: finishing a redirect (OAuth) login");
        api.complete(key, secret, code, &redirect, &req.broker_user_id)
    }
}

// `entry`, which the daemon bundles; `plugin/` exports it as a drop-in `.so`.
broker_api::define_entry!(Upstox);

#[cfg(test)]
mod tests {
    use super::*;

    fn modes(text: &str) -> Result<Modes, ErrorOutput> {
        Modes::parse(&BTreeMap::from([("mode".to_owned(), text.to_owned())]))
    }

    #[test]
    fn mode_spellings() {
        assert_eq!(
            modes("approval,redirect").unwrap(),
            Modes {
                approval: true,
                redirect: true
            }
        );
        assert!(!modes(" Redirect ").unwrap().approval);
        assert!(Modes::parse(&BTreeMap::new()).unwrap().approval);
        assert!(modes("approval+redirect").is_err());
        assert!(modes(",").is_err());
    }

    #[test]
    fn the_notifier_url_is_judged_against_the_public_url() {
        let cb = Some("https://tb.example.com/callback/upstox");
        assert_eq!(
            notifier_matches("https://tb.example.com/webhook/upstox/abc", cb),
            Some(true)
        );
        assert_eq!(
            notifier_matches("https://other.example.com/hook", cb),
            Some(false)
        );
        assert_eq!(notifier_matches("https://x/", None), None);
    }
}
