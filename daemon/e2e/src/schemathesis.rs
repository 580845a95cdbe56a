//! Schemathesis (`schemathesis run`, installed from PyPI into a venv by `scripts/e2e`) against the
//! daemon's `/openapi.json`, with valid credentials for each of the document's security schemes.
//!
//! The checks are the issue's: no server error, and every response conforms to the document
//! (status code, content type, headers, body schema). Its HAR report (every request and
//! response) is kept; the responses in it go to the secrets audit.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;

/// The checks run, all of them must pass.
pub const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance";

pub struct SchemaReport {
    pub pass: bool,
    pub figures: String,
    pub har: PathBuf,
}

/// Run schemathesis; `examples` per operation (`--max-examples`).
pub fn run(
    bin: &Path,
    work: &Path,
    addr: &str,
    key: &str,
    jwt: &str,
    examples: u32,
    users: &[String],
) -> anyhow::Result<SchemaReport> {
    let dir = work.join("schemathesis");
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("schemathesis.toml");
    write_config(&config, users)?;
    let har = dir.join("report.har");
    let output = dir.join("output.txt");
    let started = Instant::now();
    let out = Command::new(bin)
        // Its own cache (`.schemathesis/`) goes into the work directory, not the checkout.
        .current_dir(&dir)
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(format!("http://{addr}/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--workers", "2"])
        .args(["--request-timeout", "120"])
        .args(["--seed", &crate::stats::unix_secs().to_string()])
        .args(["--generation-database", "none"])
        // An event stream never ends: schemathesis reads each body whole, so it would report the
        // connection it cuts as the server's error. `api::events` tests the stream.
        .args(["--exclude-path", "/api/tokens/events"])
        // Valid credentials only (the terms). With generated ones, the coverage phase
        // sends requests without them, and after 20 failed authentications from 127.0.0.1 within
        // 60 s the daemon answers 429 instead of 401 to each further one: much of the run would
        // test the limiter.
        .args(["--generation-with-security-parameters", "false"])
        .args(["--report", "har,junit"])
        .arg("--report-dir")
        .arg(&dir)
        .arg("--report-har-path")
        .arg(&har)
        .env("E2E_API_KEY", key)
        .env("E2E_JWT", jwt)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env("NO_PROXY", "*")
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let took = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&output, &text)?;
    let mut figures = summary(&text);
    let pass = out.status.success();
    if !pass {
        figures.push(format!(
            "exit {}; failures in {}",
            out.status.code().unwrap_or(-1),
            output.display()
        ));
    }
    Ok(SchemaReport {
        pass,
        figures: format!(
            "{examples} examples per operation, checks {}: {} ({:.0} s)",
            CHECKS.replace(",", " "),
            figures.join("; "),
            took.as_secs_f64()
        ),
        har,
    })
}

/// Schemathesis's configuration file.
fn write_config(config: &Path, users: &[String]) -> std::io::Result<()> {
    // Credentials by security scheme (the names in /openapi.json; values from the env), and
    // real user ids and broker for half of the generated path parameters, so that requests reach
    // existing accounts, not only 404s.
    let users: Vec<String> = users.iter().map(|u| format!("{u:?}")).collect();
    std::fs::write(
        config,
        format!(
            "[auth.openapi.jwt]\nbearer = \"${{E2E_JWT}}\"\n\
             [auth.openapi.api_key]\napi_key = \"${{E2E_API_KEY}}\"\n\
             [auth.openapi.api_key_bearer]\nbearer = \"${{E2E_API_KEY}}\"\n\
             [dictionaries.users]\nvalues = [{}]\n\
             [dictionaries.brokers]\nvalues = [\"kite\"]\n\
             [parameters]\n\
             \"path.userId\" = {{ dictionary = \"users\", probability = 0.5 }}\n\
             \"path.broker\" = {{ dictionary = \"brokers\", probability = 0.5 }}\n",
            users.join(", ")
        ),
    )
}

/// The figures of schemathesis's closing summary: operations tested, test cases, and the last
/// line (failures, errors, warnings, time).
fn summary(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let after = |heading: &str, prefix: &str| {
        let at = lines.iter().rposition(|l| *l == heading)?;
        lines[at + 1..]
            .iter()
            .take_while(|l| !l.is_empty())
            .find(|l| l.starts_with(prefix))
            .map(|l| l.to_string())
    };
    let mut out = Vec::new();
    if let Some(tested) = after("API Operations:", "Tested:") {
        out.push(format!("operations {tested}"));
    }
    if let Some(cases) = after("Test cases:", "") {
        out.push(format!("test cases: {cases}"));
    }
    if let Some(seed) = lines.iter().rev().find_map(|l| l.strip_prefix("Seed: ")) {
        out.push(format!("seed {seed}"));
    }
    if let Some(last) = lines
        .iter()
        .rev()
        .find(|l| l.starts_with('=') && l.ends_with('=') && l.len() > 2)
    {
        out.push(last.trim_matches('=').trim().to_owned());
    }
    out
}

/// One response of a HAR file: the request's method and URL (for context only: requests carry the
/// credentials on purpose and are never searched), and the response as text (status, headers,
/// body).
pub struct HarResponse {
    pub method: String,
    pub url: String,
    pub status: u64,
    pub text: Vec<u8>,
}

/// The responses in a HAR file.
pub fn har_responses(har: &Path) -> Vec<HarResponse> {
    let Ok(text) = std::fs::read(har) else {
        return Vec::new();
    };
    let doc: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    doc["log"]["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let r = &e["response"];
                    let mut out = format!("{}\n", r["status"]);
                    for h in r["headers"].as_array().into_iter().flatten() {
                        out.push_str(&format!(
                            "{}: {}\n",
                            h["name"].as_str().unwrap_or(""),
                            h["value"].as_str().unwrap_or("")
                        ));
                    }
                    out.push('\n');
                    let mut bytes = out.into_bytes();
                    let body = r["content"]["text"].as_str().unwrap_or("");
                    if r["content"]["encoding"] == "base64" {
                        use base64::Engine;
                        bytes.extend(
                            base64::engine::general_purpose::STANDARD
                                .decode(body)
                                .unwrap_or_else(|_| body.as_bytes().to_vec()),
                        );
                    } else {
                        bytes.extend_from_slice(body.as_bytes());
                    }
                    HarResponse {
                        method: e["request"]["method"].as_str().unwrap_or("").to_owned(),
                        url: e["request"]["url"].as_str().unwrap_or("").to_owned(),
                        status: r["status"].as_u64().unwrap_or(0),
                        text: bytes,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}
