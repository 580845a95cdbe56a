//! `/openapi.json`: the OpenAPI 3.1 document, generated from the handlers' annotations and the
//! request and response types. The tests check it against [`super::ROUTES`] both ways.
//!
//! The daemon serves `daemon/openapi.json`, the generated document as committed, compiled in:
//! generating it at run time linked utoipa's schema-building code into the binary for one answer
//! that never changes (docs/performance.md, "Binary size"). A test checks that the file is what
//! [`generate`] makes of the code now, and rewrites it when asked (`TOKENBOT_BLESS=1`).

use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref};
use utoipa::{Modify, OpenApi};

use super::{
    credentials, error, events, health, integration, login, metrics, tokens, users, views, webhook,
};

/// The document's security schemes.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A user's HS256 JWT (`JWT_SECRET`, `exp` required, `nbf` checked when present, `iss` and `aud` when `auth.jwt_issuer` and `auth.jwt_audience` are set); the user id is in `auth.user_claim` (default `sub`, then `userId`, then `id`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A named service API key (`auth.api_keys`, or `TOKENBOT_API_KEY`)",
            ))),
        );
        components.add_security_scheme(
            "api_key_bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A service API key as a bearer token (the IIFL job's integration routes, and `/metrics` for Prometheus' `authorization`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every authenticated operation can answer 429: past the per-client limit on failed
/// authentications (`super::auth`), a further failure is answered 429 instead of 401 until the
/// window ends (good credentials are still served).
struct FailedAuthLimit;

impl Modify for FailedAuthLimit {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let response = ResponseBuilder::new()
            .description(
                "Wrong credentials, and too many failed authentications from this address \
                 (`too_many_failed_authentications`); retry after `Retry-After` seconds",
            )
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(1)),
                    ))
                    .description(Some("Seconds until this address may authenticate again"))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    (operation.responses.responses)
                        .insert("429".to_owned(), response.clone().into());
                }
            }
        }
    }
}

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tokenbot",
        description = "Keeps Indian brokers' daily access tokens fresh. Errors are always `{\"error\":{\"code\",\"message\"}}`.",
    ),
    paths(
        health::health,
        health::detailed,
        credentials::create,
        credentials::status,
        credentials::remove,
        credentials::toggle,
        tokens::refresh_mine,
        tokens::status,
        tokens::read,
        events::stream,
        tokens::logs,
        integration::refresh_all,
        integration::refresh_user,
        users::provision,
        users::change,
        users::remove,
        users::list,
        login::url,
        login::link,
        login::callback,
        webhook::deliver,
        webhook::create_hook,
        openapi_json,
        metrics::metrics,
    ),
    components(schemas(error::ErrorBody, views::AccountView)),
    modifiers(&Security, &FailedAuthLimit),
    tags(
        (name = "service", description = "Health, metrics, this document"),
        (name = "credentials", description = "A user's own accounts (JWT)"),
        (name = "tokens", description = "Tokens and attempts"),
        (name = "integration", description = "The IIFL refresh job's routes (API key, also as bearer)"),
        (name = "users", description = "Service-to-service provisioning (API key)"),
        (name = "assisted login", description = "Browser login for brokers that need a person"),
    )
)]
pub struct ApiDoc;

/// The document the daemon serves: `daemon/openapi.json`, generated by [`generate`].
pub fn document() -> &'static str {
    include_str!("../../openapi.json")
}

/// The document the code describes now, as pretty JSON with a final newline. Only the tests
/// call it, to check and rewrite `daemon/openapi.json`.
pub fn generate() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut json = doc
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    json.push('\n');
    json
}

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object, content_type = "application/json"))
)]
pub async fn openapi_json() -> Response {
    let mut response = document().into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
