//! Why a configuration was refused. No message ever shows the value of a secret key: figment's
//! own errors and the TOML parser's quote the text, so both are described here instead.

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources did not fit the schema: key, value (unless the key holds a secret) and source.
    /// Deliberately not the error's `source()`: an error chain printed with it would show
    /// figment's own text, values of secret keys included.
    #[error("configuration: {}", figment_errors_text(.0))]
    Load(Box<figment::Error>),
    /// The file is not TOML. Only the position is quoted: the line may hold a secret.
    #[error("configuration: {origin} is not valid TOML: {message} at line {line}, column {column}")]
    Syntax {
        /// The file, or "the configuration text".
        origin: String,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        /// What the parser expected (no quotation of the text).
        message: String,
    },
    /// The file exists but cannot be read.
    #[error("configuration: cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// A value has the right type but is not acceptable.
    #[error("configuration: key `{key}` = {value:?}: {reason}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// The offending value (never a secret).
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// Keys whose values are secrets: an error about one never shows the value.
const SECRET_KEYS: &[&str] = &[
    "vault.encryption_key",
    "vault.passphrase",
    "auth.jwt_secret",
    "auth.api_key",
    "mirror.postgres.url",
    "notify.telegram.bot_token",
];

/// figment's errors, each with its key and source; for a secret key the value is left out.
fn figment_errors_text(errors: &figment::Error) -> String {
    let mut lines = Vec::new();
    for e in errors.clone() {
        let key = e.path.join(".");
        let text = if SECRET_KEYS.contains(&key.as_str()) {
            let source = e.metadata.as_ref().map(|m| match &m.source {
                Some(path) => format!(" in {path} {}", m.name),
                None => format!(" in {}", m.name),
            });
            let source = source.unwrap_or_default();
            format!("invalid value for key `{key}`{source} (a secret: its value is not shown)")
        } else {
            e.to_string()
        };
        lines.push(text);
    }
    lines.join("; ")
}

/// Refuse text that is not TOML with the parser's position and reason, never the line itself
/// (figment's own error quotes it, and the line may hold a secret).
pub(super) fn check_syntax(text: &str, source: &str) -> Result<(), ConfigError> {
    let Err(e) = toml::from_str::<toml::Table>(text) else {
        return Ok(());
    };
    let start = e.span().map_or(0, |span| span.start).min(text.len());
    let before = text.get(..start).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Err(ConfigError::Syntax {
        origin: source.to_owned(),
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
        message: e.message().trim().to_owned(),
    })
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        ConfigError::Load(e)
    }
}

impl ConfigError {
    /// A value of the right type that is not acceptable: `key` is dotted, `value` never a secret.
    pub fn invalid(
        key: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}
