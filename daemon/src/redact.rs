//! The one way secrets are kept out of text people see (log lines, the mirror's status, error
//! messages): every occurrence replaced by one marker, so a reader learns that something was
//! there and a search finds every place it happened. (A secret type's `Debug`, which shows no
//! value at all, is not redaction: `SecretJson` prints `[REDACTED]` as secrecy's types do.)

/// What a secret is replaced by.
pub const MARKER: &str = "[redacted]";

/// `text` with every one of `secrets` replaced by [`MARKER`]; empty ones are skipped. When one
/// secret contains another, give the longer first so it is replaced whole.
pub fn redact<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        if !secret.is_empty() && out.contains(secret) {
            out = out.replace(secret, MARKER);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_is_replaced_and_empty_secrets_are_skipped() {
        assert_eq!(
            redact("pw=hunter2 again hunter2", ["", "hunter2"]),
            "pw=[redacted] again [redacted]"
        );
    }
}
