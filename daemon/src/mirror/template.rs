//! `upsert_sql` templates: SQL with named parameters (`$user_id`, ...) translated to PostgreSQL's
//! positional ones (`$1`, ...). Quoted text (string literals, quoted identifiers, dollar-quoted
//! bodies, comments) is copied as is, so a `$` inside it is never taken for a parameter.

/// A value the mirror can bind, by the name a template uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// The platform's user id.
    UserId,
    /// The broker id.
    Broker,
    /// The user's id at the broker.
    BrokerUserId,
    /// The access token; NULL when revoked.
    AccessToken,
    /// When the token was issued; NULL when revoked.
    IssuedAt,
    /// When it expires; NULL when revoked.
    ExpiresAt,
    /// `active` or `revoked`.
    Status,
    /// The change's generation (grows with every change).
    Generation,
    /// The token's served extras as JSON (`{}` when none; NULL when revoked), e.g.
    /// `{"feed_token":"..."}`: bound as `jsonb`, `json` or text, whichever the statement wants.
    Extras,
}

impl Param {
    /// Every parameter, in the order the README lists them.
    pub const ALL: [Param; 9] = [
        Param::UserId,
        Param::Broker,
        Param::BrokerUserId,
        Param::AccessToken,
        Param::IssuedAt,
        Param::ExpiresAt,
        Param::Status,
        Param::Generation,
        Param::Extras,
    ];

    /// The name without its `$`.
    pub fn name(self) -> &'static str {
        match self {
            Param::UserId => "user_id",
            Param::Broker => "broker",
            Param::BrokerUserId => "broker_user_id",
            Param::AccessToken => "access_token",
            Param::IssuedAt => "issued_at",
            Param::ExpiresAt => "expires_at",
            Param::Status => "status",
            Param::Generation => "generation",
            Param::Extras => "extras",
        }
    }

    fn from_name(name: &str) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A template translated to positional parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The SQL with `$1`, `$2`, ... in place of the names.
    pub sql: String,
    /// What `$1`, `$2`, ... are: each name gets one number, at its first use.
    pub params: Vec<Param>,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `$name` is not one of the parameters.
    #[error("unknown parameter `${name}` (known: {known})", known = known_names())]
    Unknown {
        /// The name used.
        name: String,
    },
    /// `$1`-style parameters are not accepted: the mirror binds by name.
    #[error("positional parameter `${0}`: use the named parameters ({known})", known = known_names())]
    Positional(String),
    /// A quote or comment is never closed.
    #[error("unterminated {0}")]
    Unterminated(&'static str),
    /// Without `$user_id` no row could be told from another.
    #[error("the template does not use `$user_id`")]
    NoUserId,
}

fn known_names() -> String {
    Param::ALL
        .iter()
        .map(|p| format!("${}", p.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Template {
    /// Translate `text`, refusing unknown names.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut out = String::with_capacity(text.len());
        let mut params: Vec<Param> = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if let Some(end) = verbatim_end(&chars, i)? {
                out.extend(&chars[i..end]);
                i = end;
                continue;
            }
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            if c == '$' && next.is_some_and(|c| c.is_ascii_digit()) {
                let digits: String = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                return Err(TemplateError::Positional(digits));
            }
            if c == '$' && next.is_some_and(is_ident_start) && (i == 0 || !is_ident(chars[i - 1])) {
                let len = chars[i + 1..].iter().take_while(|&&c| is_ident(c)).count();
                let name: String = chars[i + 1..i + 1 + len].iter().collect();
                let param = Param::from_name(&name).ok_or(TemplateError::Unknown { name })?;
                let position = match params.iter().position(|&p| p == param) {
                    Some(p) => p + 1,
                    None => {
                        params.push(param);
                        params.len()
                    }
                };
                out.push_str(&format!("${position}"));
                i += 1 + len;
                continue;
            }
            out.push(c);
            i += 1;
        }
        if !params.contains(&Param::UserId) {
            return Err(TemplateError::NoUserId);
        }
        Ok(Template { sql: out, params })
    }
}

/// If a string literal, quoted identifier, comment or dollar-quoted string starts at `i`, the
/// index just past its end: it is copied as it is, `$names` inside included.
fn verbatim_end(chars: &[char], i: usize) -> Result<Option<usize>, TemplateError> {
    let next = chars.get(i + 1).copied();
    let end = match chars[i] {
        '\'' => {
            // E'...' strings take backslash escapes; standard strings only ''.
            let escapes =
                i > 0 && matches!(chars[i - 1], 'e' | 'E') && (i < 2 || !is_ident(chars[i - 2]));
            quoted_end(chars, i, '\'', escapes)
                .ok_or(TemplateError::Unterminated("string literal"))?
        }
        '"' => quoted_end(chars, i, '"', false)
            .ok_or(TemplateError::Unterminated("quoted identifier"))?,
        '-' if next == Some('-') => chars[i..]
            .iter()
            .position(|&c| c == '\n')
            .map_or(chars.len(), |p| i + p),
        '/' if next == Some('*') => {
            block_comment_end(chars, i).ok_or(TemplateError::Unterminated("comment"))?
        }
        '$' if next == Some('$') => dollar_quoted_end(chars, i, 2)
            .ok_or(TemplateError::Unterminated("dollar-quoted string"))?,
        '$' if next.is_some_and(is_ident_start) && (i == 0 || !is_ident(chars[i - 1])) => {
            let len = chars[i + 1..].iter().take_while(|&&c| is_ident(c)).count();
            if chars.get(i + 1 + len) != Some(&'$') {
                return Ok(None);
            }
            // `$tag$ ... $tag$`
            dollar_quoted_end(chars, i, len + 2)
                .ok_or(TemplateError::Unterminated("dollar-quoted string"))?
        }
        _ => return Ok(None),
    };
    Ok(Some(end))
}

/// Index just past the quote closing the one at `start`; a doubled quote is an escaped one.
fn quoted_end(chars: &[char], start: usize, quote: char, backslash: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if backslash => i += 2,
            c if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Index just past the `*/` closing the comment at `start` (PostgreSQL nests them).
fn block_comment_end(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < chars.len() {
        match (chars[i], chars[i + 1]) {
            ('/', '*') => {
                depth += 1;
                i += 2;
            }
            ('*', '/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Index just past the tag closing the dollar quote whose opening tag is `chars[start..start+len]`.
fn dollar_quoted_end(chars: &[char], start: usize, len: usize) -> Option<usize> {
    let tag = &chars[start..start + len];
    let mut i = start + len;
    while i + len <= chars.len() {
        if &chars[i..i + len] == tag {
            return Some(i + len);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_positions_in_order_of_first_use() {
        let t = Template::parse(
            "UPDATE t SET a = $access_token, b = $expires_at WHERE id = $user_id AND x = $access_token",
        )
        .unwrap();
        assert_eq!(
            t.sql,
            "UPDATE t SET a = $1, b = $2 WHERE id = $3 AND x = $1"
        );
        assert_eq!(
            t.params,
            vec![Param::AccessToken, Param::ExpiresAt, Param::UserId]
        );
    }

    #[test]
    fn quoted_text_is_left_alone() {
        let sql = r#"UPDATE "t$x" SET a = '$token', b = E'it\'s $x', c = $q$ $nope $q$, d = $$ $no $$ -- $comment
            /* $also /* nested $x */ */ WHERE "userID" = $user_id::text"#;
        let t = Template::parse(sql).unwrap();
        assert_eq!(t.params, vec![Param::UserId]);
        assert!(t.sql.ends_with(r#""userID" = $1::text"#), "{}", t.sql);
        assert!(t.sql.contains("'$token'") && t.sql.contains("$q$ $nope $q$"));
    }

    #[test]
    fn unknown_and_positional_parameters_are_refused_by_name() {
        let err = Template::parse("UPDATE t SET a = $tokn WHERE id = $user_id").unwrap_err();
        assert_eq!(
            err,
            TemplateError::Unknown {
                name: "tokn".into()
            }
        );
        let shown = err.to_string();
        assert!(
            shown.contains("$tokn") && shown.contains("$access_token"),
            "{shown}"
        );
        assert_eq!(
            Template::parse("UPDATE t SET a = $1 WHERE id = $user_id").unwrap_err(),
            TemplateError::Positional("1".into())
        );
        assert_eq!(
            Template::parse("UPDATE t SET a = 'x WHERE id = $user_id").unwrap_err(),
            TemplateError::Unterminated("string literal")
        );
        assert_eq!(
            Template::parse("UPDATE t SET a = $access_token").unwrap_err(),
            TemplateError::NoUserId
        );
    }
}
