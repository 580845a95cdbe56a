//! Reading a JWT's `exp` without checking its signature: brokers (Fyers, Kotak Neo) issue tokens
//! whose own expiry may come before their documented time-of-day rule, and the earlier one wins.

use base64::Engine;

/// The `exp` claim of a JWT-shaped token, in Unix milliseconds; `None` when the token is not a
/// JWT or has no numeric `exp`. The signature is not checked: the broker's profile call is what
/// proves a token works, this only bounds its lifetime.
pub fn exp_ms(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let secs = exp
        .as_i64()
        .or_else(|| exp.as_f64().map(|f| f as i64))
        .or_else(|| exp.as_str().and_then(|s| s.trim().parse().ok()))?;
    secs.checked_mul(1000)
}

/// `min(jwt.exp, rule_ms)`: the token's own `exp` when it is earlier than the broker's rule, else
/// the rule (also when the token cannot be decoded). An `exp` at or before `issued_ms` is a clock
/// or broker mistake, not a lifetime: honouring it would have the scheduler log the account in
/// again every minute, so the rule stands.
pub fn expiry_min(token: &str, issued_ms: i64, rule_ms: i64) -> i64 {
    exp_ms(token)
        .filter(|&exp| exp > issued_ms)
        .map_or(rule_ms, |exp| exp.min(rule_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        format!(
            "{}.{}.sig",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims.as_bytes())
        )
    }

    #[test]
    fn reads_exp_in_every_form() {
        assert_eq!(
            exp_ms(&jwt(r#"{"exp":1700000000}"#)),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            exp_ms(&jwt(r#"{"exp":"1700000000"}"#)),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            exp_ms(&jwt(r#"{"exp":1700000000.0}"#)),
            Some(1_700_000_000_000)
        );
        assert_eq!(exp_ms(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(exp_ms("not-a-jwt"), None);
        assert_eq!(exp_ms("a.!!!.c"), None);
    }

    #[test]
    fn the_earlier_of_exp_and_the_rule_wins() {
        let t = jwt(r#"{"exp":1000}"#);
        assert_eq!(expiry_min(&t, 0, 2_000_000), 1_000_000);
        assert_eq!(expiry_min(&t, 0, 500_000), 500_000);
        assert_eq!(expiry_min("opaque", 0, 500_000), 500_000);
        assert_eq!(
            expiry_min(&t, 1_000_000, 2_000_000),
            2_000_000,
            "exp at issue: ignored"
        );
    }
}
