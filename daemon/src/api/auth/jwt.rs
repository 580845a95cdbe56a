//! Users' JWTs: HS256 only, `exp` required, `nbf` when present, `iss` and `aud` when configured;
//! the user id from `auth.user_claim`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::config::{AuthConfig, MIN_JWT_SECRET_BYTES};
use crate::vault::UserId;

/// The JWT key and checks, and the claim that names the user.
pub(super) struct JwtVerifier {
    /// None without a usable `auth.jwt_secret`: then no JWT is accepted.
    key: Option<(DecodingKey, Validation)>,
    user_claim: String,
}

impl JwtVerifier {
    /// A secret under 32 bytes that slipped past validation is left out with an error logged.
    pub(super) fn from_config(config: &AuthConfig) -> JwtVerifier {
        super::jwt_crypto::install();
        let key = config.jwt_secret.as_ref().and_then(|secret| {
            let secret = secret.expose_secret().as_bytes();
            if secret.len() < MIN_JWT_SECRET_BYTES {
                tracing::error!(
                    "auth.jwt_secret is under {MIN_JWT_SECRET_BYTES} bytes; no JWT is accepted"
                );
                return None;
            }
            Some((DecodingKey::from_secret(secret), jwt_validation(config)))
        });
        JwtVerifier {
            key,
            user_claim: config.user_claim.clone(),
        }
    }

    /// Whether any JWT can be accepted.
    pub(super) fn is_configured(&self) -> bool {
        self.key.is_some()
    }

    /// The claim that names the user.
    pub(super) fn user_claim(&self) -> &str {
        &self.user_claim
    }

    /// The user a JWT speaks for. The reason of a refusal is for the log only.
    pub(super) fn user(&self, token: &str) -> Result<UserId, &'static str> {
        let Some((key, validation)) = &self.key else {
            return Err("no JWT secret is configured");
        };
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, validation)
            .map_err(|_| "invalid, expired or not HS256")?;
        let claims = data.claims;
        let mut names = vec![self.user_claim.as_str()];
        if self.user_claim == "sub" {
            names.extend(["userId", "id"]);
        }
        let id = names
            .iter()
            .find_map(|name| match claims.get(*name) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            .ok_or("no user claim")?;
        UserId::new(id).map_err(|_| "the user claim is not a valid user id")
    }
}

/// JWT checks: HS256, `exp` required, `nbf` when present, `iss` and `aud` when configured.
fn jwt_validation(config: &AuthConfig) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    let mut required = vec!["exp"];
    validation.validate_exp = true;
    validation.validate_nbf = true;
    if let Some(issuer) = &config.jwt_issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    // jsonwebtoken refuses every token carrying `aud` when no audience is set: an identity
    // provider that names its audiences would lock every user out of a daemon told none.
    match &config.jwt_audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}
