//! The driver's HTTP client for everything but the load phases. Every response it receives
//! (status, headers, body) is appended to `responses.log` in the work directory for the secrets
//! audit; request bodies (which carry the provisioned secrets) are never written there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

/// Where responses are kept.
pub struct Capture {
    path: PathBuf,
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Capture {
    pub fn create(path: &Path) -> anyhow::Result<Capture> {
        Ok(Capture {
            path: path.to_owned(),
            file: Mutex::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one response.
    pub fn record(&self, what: &str, status: u16, headers: &[(String, String)], body: &[u8]) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(f, "=== {what} -> {status}");
        for (k, v) in headers {
            let _ = writeln!(f, "{k}: {v}");
        }
        let _ = f.write_all(b"\n");
        let _ = f.write_all(body);
        let _ = f.write_all(b"\n");
    }

    pub fn flush(&self) {
        let _ = self.file.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

/// How a request authenticates.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    /// `X-API-Key`.
    Key,
    /// `Authorization: Bearer <JWT>`.
    Jwt(&'a str),
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client for one daemon address.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    pub base: String,
    key: String,
    capture: std::sync::Arc<Capture>,
}

impl Api {
    pub fn new(addr: &str, key: &str, capture: std::sync::Arc<Capture>) -> Api {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(300))
            .pool_max_idle_per_host(64)
            .build()
            .expect("an HTTP client");
        Api {
            client,
            base: format!("http://{addr}"),
            key: key.to_owned(),
            capture,
        }
    }

    /// The same client pointed at another address (a restarted daemon).
    pub fn at(&self, addr: &str) -> Api {
        Api {
            base: format!("http://{addr}"),
            ..self.clone()
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<String>,
    ) -> anyhow::Result<Reply> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        request = match auth {
            Auth::Key => request.header("x-api-key", &self.key),
            Auth::Jwt(jwt) => request.header("authorization", format!("Bearer {jwt}")),
        };
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .bytes()
            .await
            .with_context(|| format!("{method} {path}: body"))?
            .to_vec();
        self.capture
            .record(&format!("{method} {path}"), status, &headers, &body);
        Ok(Reply { status, body })
    }

    pub async fn get(&self, path: &str, auth: Auth<'_>) -> anyhow::Result<Reply> {
        self.send(reqwest::Method::GET, path, auth, None).await
    }

    pub async fn post(&self, path: &str, auth: Auth<'_>) -> anyhow::Result<Reply> {
        self.send(reqwest::Method::POST, path, auth, None).await
    }

    pub async fn put_json(
        &self,
        path: &str,
        auth: Auth<'_>,
        body: &serde_json::Value,
    ) -> anyhow::Result<Reply> {
        self.send(reqwest::Method::PUT, path, auth, Some(body.to_string()))
            .await
    }
}

/// An HS256 JWT for `sub`, valid for `ttl_secs`.
pub fn mint_jwt(secret: &str, sub: &str, ttl_secs: u64) -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = crate::stats::unix_secs();
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + ttl_secs});
    let payload = b64(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let sig = b64(&mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}
