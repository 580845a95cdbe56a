//! Connection strings as tokio-postgres takes them: Prisma's `DATABASE_URL` rewritten for libpq,
//! the target named without its user or password, and tokio-postgres's quoting of a mistyped URL
//! kept out of messages.

/// Query parameters Prisma puts in `DATABASE_URL` that libpq-style clients refuse.
const PRISMA_PARAMS: &[&str] = &[
    "schema",
    "connection_limit",
    "pool_timeout",
    "pgbouncer",
    "statement_cache_size",
    "socket_timeout",
    "sslaccept",
    "sslidentity",
    "sslpassword",
];

/// A `DATABASE_URL` made acceptable to tokio-postgres: Prisma-only parameters dropped, `schema=X`
/// turned into the search path Prisma would have used (`options=-c search_path=X`), and libpq's
/// `sslrootcert` taken out (returned second: the TLS set-up reads it). Other URLs and key=value
/// strings are returned as they are.
pub(crate) fn libpq_url(raw: &str) -> (String, Option<String>) {
    let Ok(mut url) = url::Url::parse(raw) else {
        return (raw.to_owned(), None);
    };
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return (raw.to_owned(), None);
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let dropped = |k: &str| PRISMA_PARAMS.contains(&k) || k == "sslrootcert";
    if !pairs.iter().any(|(k, _)| dropped(k)) {
        return (raw.to_owned(), None);
    }
    let root_cert = pairs
        .iter()
        .find(|(k, _)| k == "sslrootcert")
        .map(|(_, v)| v.clone());
    let schema = pairs.iter().find(|(k, _)| k == "schema").map(|(_, v)| v);
    let has_options = pairs.iter().any(|(k, _)| k == "options");
    let mut kept: Vec<(String, String)> =
        pairs.iter().filter(|(k, _)| !dropped(k)).cloned().collect();
    if let Some(schema) = schema
        && !has_options
    {
        kept.push(("options".into(), format!("-c search_path={schema}")));
    }
    // Percent-encoded by hand: libpq-style parsers do not read `+` as a space.
    let query: Vec<String> = kept
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    url.set_query((!query.is_empty()).then(|| query.join("&")).as_deref());
    (url.to_string(), root_cert)
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `host:port/db` of the target: no user, no password.
pub(crate) fn target_text(pg: &tokio_postgres::Config) -> String {
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => format!("{}:{port}", p.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    format!(
        "{hosts}/{}",
        pg.get_dbname().or(pg.get_user()).unwrap_or("postgres")
    )
}

/// tokio-postgres reads what is not a `postgres://` URL as key=value pairs, and quotes a key it
/// does not know. For a mistyped URL (`postgress://u:pw@h/db?sslmode=require`) that "key" is the
/// URL up to its first `=`, password included: a quoted key that is not a word is not repeated.
pub(crate) fn hide_odd_option(message: &str) -> String {
    const UNKNOWN: &str = "unknown option `";
    let Some(start) = message.find(UNKNOWN) else {
        return message.to_owned();
    };
    let key = start + UNKNOWN.len();
    match message.rfind('`') {
        Some(end)
            if end >= key
                && !message[key..end]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            format!(
                "{}neither a postgres:// URL nor key=value pairs{}",
                &message[..start],
                &message[end + 1..]
            )
        }
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prisma_urls_lose_prisma_parameters_and_keep_the_schema_as_search_path() {
        let (url, root) =
            libpq_url("postgresql://u:pw@db:5432/app?schema=trading&connection_limit=5");
        assert_eq!(root, None);
        let pg: tokio_postgres::Config = url.parse().unwrap();
        assert_eq!(pg.get_options(), Some("-c search_path=trading"));
        assert_eq!(pg.get_dbname(), Some("app"));
        assert_eq!(target_text(&pg), "db:5432/app");
        let plain = "postgres://u@h/db?sslmode=disable";
        assert_eq!(libpq_url(plain), (plain.to_owned(), None));
        let (url, root) = libpq_url("postgres://u@h/db?sslmode=require&sslrootcert=/etc/ca.pem");
        assert_eq!(
            (url.as_str(), root.as_deref()),
            ("postgres://u@h/db?sslmode=require", Some("/etc/ca.pem"))
        );
    }
}
