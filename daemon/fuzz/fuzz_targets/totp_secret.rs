//! The TOTP secret parser, `tokenbot::plugins::totp::parse_secret`: what an operator pastes as an
//! account's `totp_secret` (base32 with spaces, dashes, lowercase or padding, or an `otpauth://`
//! URI), parsed on provisioning and before every login.
//!
//! Input: UTF-8 text. Invariants, beyond "never panics":
//! - an accepted secret holds at least 10 bytes, and `TooShort(n)` reports fewer than 10;
//! - surrounding whitespace and ASCII case change nothing;
//! - an accepted secret, written back as canonical base32 (own encoder, RFC 4648), grouped in
//!   lowercase, or in an `otpauth://` URI, parses to the same bytes;
//! - its code at any step is six ASCII digits;
//! - only an `otpauth://` URI is refused as `Unsupported`, and only for `type`, `digits`,
//!   `period` or `algorithm`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokenbot::plugins::totp::{TotpSecretError, code_at_step, parse_secret};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let result = parse_secret(input);
    assert_eq!(
        parse_secret(&format!(" \t{input}\r\n ")),
        result,
        "whitespace"
    );
    assert_eq!(
        parse_secret(&input.to_ascii_uppercase()),
        result,
        "upper case"
    );
    assert_eq!(
        parse_secret(&input.to_ascii_lowercase()),
        result,
        "lower case"
    );
    match result {
        Ok(secret) => {
            assert!(secret.len() >= 10, "{} bytes accepted", secret.len());
            let base32 = base32(&secret);
            let grouped: Vec<String> = base32
                .to_ascii_lowercase()
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            for form in [
                base32.clone(),
                grouped.join(" "),
                grouped.join("-"),
                format!("{base32}{}", "=".repeat((8 - base32.len() % 8) % 8)),
                format!("otpauth://totp/Kite:AB1234?secret={base32}&issuer=Kite"),
            ] {
                assert_eq!(
                    parse_secret(&form).map(|s| s.to_vec()),
                    Ok(secret.to_vec()),
                    "{form}"
                );
            }
            let step = data.len() as u64 * 1_000_003;
            let code = code_at_step(&secret, step);
            assert!(
                code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
                "code {:?}",
                code.as_str()
            );
        }
        Err(TotpSecretError::TooShort(n)) => assert!(n < 10, "TooShort({n})"),
        Err(TotpSecretError::Unparseable) => {}
        // Only a URI can ask for other codes, and only by these parameters.
        Err(TotpSecretError::Unsupported { param, .. }) => {
            assert!(
                input.trim().to_ascii_lowercase().starts_with("otpauth://"),
                "{param} refused in a non-URI"
            );
            assert!(
                ["type", "digits", "period", "algorithm"].contains(&param),
                "{param}"
            );
        }
    }
});

/// RFC 4648 base32, no padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}
