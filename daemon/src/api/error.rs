//! One error type for the whole API, one JSON shape on the wire: `{"error":{"code","message"}}`.
//! Also the JSON, query and path extractors, whose rejections become that shape (axum's own answer
//! plain text), and the middleware that gives the same shape to errors made outside any handler
//! (404 and 405 fallbacks, layers).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::vault::VaultError;

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// `code` is stable and machine-readable; `message` is for people and never holds a secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// e.g. `unauthorized`, `not_found`, `no_valid_token`, `invalid_body`.
    pub code: String,
    /// What happened and, where possible, what to do.
    pub message: String,
}

/// An error answer: status, code, message, and an optional extra header (`WWW-Authenticate`,
/// `Retry-After`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    header: Option<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    /// The same error with an extra response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.header = Some((name, value));
        self
    }

    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401, with `WWW-Authenticate`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_header(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        )
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 422.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500. The detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see the daemon's log)",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message (for people; never a secret).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<crate::vault::InvalidId> for ApiError {
    fn from(e: crate::vault::InvalidId) -> ApiError {
        VaultError::from(e).into()
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> ApiError {
        match e {
            VaultError::NoSuchAccount(key) => ApiError::not_found(
                "no_account",
                format!("no account for user {} at broker {}", key.user, key.broker),
            ),
            e @ VaultError::InvalidId { .. } => ApiError::bad_request("invalid_id", e.to_string()),
            e @ VaultError::BrokerAccountTaken { .. } => {
                ApiError::new(StatusCode::CONFLICT, "broker_account_taken", e.to_string())
            }
            e @ VaultError::Changed(_) => {
                ApiError::new(StatusCode::CONFLICT, "account_changed", e.to_string())
            }
            e @ VaultError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "vault_unavailable",
                e.to_string(),
            ),
            e @ VaultError::ReadOnly => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "read_only", e.to_string())
            }
            other => ApiError::internal(format!("vault: {other}")),
        }
    }
}

/// A JSON body. Malformed JSON is 400 `malformed_json`; a body of the wrong shape (wrong types,
/// missing or unknown fields) is 422 `invalid_body`, naming the field but never echoing a value;
/// an oversized one is 413; a non-JSON content type is 415.
pub struct ApiJson<T>(pub T);

/// As [`ApiJson`], but an empty body (no content type needed) is `T::default()`.
pub struct OptionalJson<T>(pub T);

/// The console's pages, errors included, are HTML for a person; axum's own answers never are.
fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/html"))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

async fn read_body<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<(HeaderMap, Bytes), ApiError> {
    let headers = req.headers().clone();
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad_request("unreadable_body", "the request body could not be read")
        }
    })?;
    Ok((headers, bytes))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the server accepts",
    )
}

fn parse_json_body<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A body that is not JSON is malformed even when its first value already has the wrong
        // shape (`{} {}` where fields are required): check the syntax before blaming the shape.
        match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(syntax) if !syntax.is_data() => ApiError::bad_request(
                "malformed_json",
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    syntax.line(),
                    syntax.column()
                ),
            ),
            _ => invalid_body_error(&e),
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!(
                "the body has trailing characters after the JSON value (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    Ok(value)
}

/// A message for a body that does not fit: field names and what was expected, never a value (a
/// wrong type on `password` would otherwise quote the password).
fn invalid_body_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let inner = e.inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
            "malformed_json",
            format!(
                "the body is not valid JSON (line {}, column {})",
                inner.line(),
                inner.column()
            ),
        ),
        Category::Data => {
            let text = inner.to_string();
            let text = text.split(" at line ").next().unwrap_or_default();
            let path = e.path().to_string();
            let message = if text.starts_with("missing field")
                || text.starts_with("unknown field")
                || text.starts_with("duplicate field")
            {
                if path == "." {
                    text.to_owned()
                } else {
                    format!("`{path}`: {text}")
                }
            } else {
                let expected = text
                    .split_once(", expected ")
                    .map(|(_, e)| format!("expected {e}"))
                    .unwrap_or_else(|| "invalid value".to_owned());
                if path == "." {
                    format!("the body must be a JSON object ({expected})")
                } else {
                    format!("`{path}`: wrong type or invalid value ({expected})")
                }
            };
            ApiError::unprocessable("invalid_body", message)
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (headers, bytes) = read_body(req, state).await?;
        parse_json_body(&headers, &bytes).map(ApiJson)
    }
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (headers, bytes) = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json_body(&headers, &bytes).map(OptionalJson)
    }
}

/// Query parameters; a query that does not fit is 400 `invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|r| ApiError::bad_request("invalid_query", r.body_text()))
    }
}

/// Path parameters; a path that does not decode is 400 `invalid_path`.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|r| ApiError::bad_request("invalid_path", r.body_text()))
    }
}

/// An error response that is not JSON yet (the 405 fallback, a layer's refusal) gets the JSON
/// error shape, keeping its status and headers. Applied to every response by `layers::observe`.
pub fn json_error_shape(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || is_json(response.headers())
        || is_html(response.headers())
    {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method (see the Allow header)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than the server accepts",
        ),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "unsupported media type"),
        s if s.is_server_error() => ("internal", "internal error (see the daemon's log)"),
        _ => ("bad_request", "the request was refused"),
    };
    let (mut parts, _) = response.into_parts();
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    })
    .unwrap_or_default();
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Body::from(body))
}

/// The fallback of unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}
