//! The OpenAPI document: it validates against the OpenAPI Initiative's JSON Schema of OpenAPI 3.1
//! (vendored in `tests/fixtures/openapi-3.1`, checked with `jsonschema`, offline) and its Schema
//! Objects against draft 2020-12, and breaking it fails that check; it parses as OpenAPI 3.1
//! (`oas3`), every `$ref` resolves, every path parameter is declared, and it lists exactly the
//! routes of `api::ROUTES`, each of which the router serves.

use std::collections::BTreeSet;

use super::support::*;
use axum::http::Method;
use serde_json::Value;
use tokenbot::api::ROUTES;

async fn document() -> (Value, String) {
    let t = TestApi::new();
    let r = t
        .send(request(Method::GET, "/openapi.json", &As::Nobody, None))
        .await;
    r.expect(200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    (r.json, r.text)
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_owned());
                }
                refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_parses_as_openapi_3_1_and_its_refs_resolve() {
    let (doc, text) = document().await;
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    let version = spec
        .validate_version()
        .expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1));
    let paths = spec.paths.as_ref().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.methods() {
            assert!(
                !op.responses.as_ref().map(|r| r.is_empty()).unwrap_or(true),
                "{method} {path} has no responses"
            );
            // Every `{param}` in the template is declared as a path parameter.
            let declared: BTreeSet<String> = op
                .parameters
                .iter()
                .filter_map(|p| p.resolve(&spec).ok())
                .filter(|p| p.location == oas3::spec::ParameterIn::Path)
                .map(|p| p.name)
                .collect();
            let in_template: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .map(str::to_owned)
                .collect();
            assert_eq!(declared, in_template, "{method} {path}");
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').expect("local refs only");
        assert!(doc.pointer(pointer).is_some(), "unresolved $ref {r}");
    }
    for scheme in ["jwt", "api_key", "api_key_bearer"] {
        assert!(
            doc["components"]["securitySchemes"][scheme].is_object(),
            "{scheme}"
        );
    }
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_router_serves() {
    let (doc, _) = document().await;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    // Every route of the JSON API; the console's HTML pages are routes, but no API.
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|r| r.openapi)
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, routed);
    for route in ROUTES.iter().filter(|r| !r.openapi) {
        assert!(route.path.starts_with("/console"), "{}", route.path);
    }

    // And the router serves every one of them: no route answers the router's 404 or 405.
    let t = TestApi::new();
    for route in ROUTES {
        let path = route
            .path
            .replace("{userId}", "u1")
            .replace("{broker}", "kite");
        let method: Method = route.method.parse().unwrap();
        let r = t.send(request(method, &path, &As::Nobody, None)).await;
        assert!(
            r.status.as_u16() != 405 && !(r.status.as_u16() == 404 && r.code() == "not_found"),
            "{} {}: {} {}",
            route.method,
            route.path,
            r.status,
            r.text
        );
    }
}

#[tokio::test]
async fn the_refresh_summary_schema_matches_what_is_sent() {
    let (doc, _) = document().await;
    let props: BTreeSet<String> = doc["components"]["schemas"]["RefreshSummary"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let sent = serde_json::to_value(tokenbot::refresh::RefreshSummary::default()).unwrap();
    let sent: BTreeSet<String> = sent.as_object().unwrap().keys().cloned().collect();
    assert_eq!(props, sent);
}

/// The OpenAPI Initiative's JSON Schema of OpenAPI 3.1 documents (vendored: see
/// `tests/fixtures/openapi-3.1/README.md`), compiled offline with format checks on.
fn oas_3_1_validator() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openapi-3.1/schema.json"
    );
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        schema["$id"], "https://spec.openapis.org/oas/3.1/schema/2022-10-07",
        "the vendored schema"
    );
    jsonschema::draft202012::meta::validate(&schema).expect("the schema is valid draft 2020-12");
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the OpenAPI 3.1 schema compiles offline")
}

/// The errors of `doc` against the OpenAPI 3.1 schema, one a line.
fn oas_errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every Schema Object of the document (named in `components.schemas`, or under `schema` in a
/// parameter, media type or header), with where it is. The OpenAPI schema only checks that these
/// are objects or booleans; their content is JSON Schema 2020-12.
fn schema_objects(doc: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let here = format!("{at}/{k}");
                    if k == "schema" {
                        out.push((here, v));
                    } else {
                        walk(v, here, out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        out.push((format!("/components/schemas/{name}"), schema));
    }
    walk(&doc["paths"], "/paths".to_owned(), &mut out);
    for part in ["parameters", "requestBodies", "responses", "headers"] {
        walk(
            &doc["components"][part],
            format!("/components/{part}"),
            &mut out,
        );
    }
    out
}

fn schema_errors(doc: &Value) -> Vec<String> {
    schema_objects(doc)
        .into_iter()
        .filter_map(|(at, schema)| {
            jsonschema::draft202012::meta::validate(schema)
                .err()
                .map(|e| format!("{at}: {e}"))
        })
        .collect()
}

#[tokio::test]
async fn the_document_validates_against_the_openapi_3_1_json_schema() {
    let (doc, _) = document().await;
    let validator = oas_3_1_validator();
    let errors = oas_errors(&validator, &doc);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let schemas = schema_objects(&doc);
    assert!(
        schemas.len() > 20,
        "the walk finds the schemas: {}",
        schemas.len()
    );
    let errors = schema_errors(&doc);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The validation is strict enough to fail: each of these breaks of the document is caught.
#[tokio::test]
async fn the_openapi_validation_refuses_broken_documents() {
    let (doc, _) = document().await;
    let validator = oas_3_1_validator();
    type Break = fn(&mut Value);
    let breaks: [(&str, &str, Break); 12] = [
        ("no info", "\"info\" is a required property", |d| {
            d.as_object_mut().unwrap().remove("info");
        }),
        ("no info.title", "\"title\" is a required property", |d| {
            d["info"].as_object_mut().unwrap().remove("title");
        }),
        ("an OpenAPI 3.0 version", "/openapi: \"3.0.3\"", |d| {
            d["openapi"] = "3.0.3".into()
        }),
        ("paths as an array", "/paths: [] is not of type", |d| {
            d["paths"] = serde_json::json!([])
        }),
        (
            "a path not starting with /",
            "'health' was unexpected",
            |d| {
                let item = d["paths"]["/health"].clone();
                d["paths"]["health"] = item;
            },
        ),
        ("responses as a string", "/get/responses: \"ok\"", |d| {
            d["paths"]["/health"]["get"]["responses"] = "ok".into()
        }),
        (
            "a response status that is no status",
            "'20' was unexpected",
            |d| {
                let ok = d["paths"]["/health"]["get"]["responses"]["200"].clone();
                d["paths"]["/health"]["get"]["responses"]["20"] = ok;
            },
        ),
        (
            "an unknown operation field",
            "'bogus' was unexpected",
            |d| d["paths"]["/health"]["get"]["bogus"] = true.into(),
        ),
        (
            "a parameter in the body (OpenAPI 2)",
            "/parameters/0/in",
            |d| d["paths"]["/api/tokens/{userId}"]["get"]["parameters"][0]["in"] = "body".into(),
        ),
        (
            "a path parameter that is not required",
            "/parameters/0/required",
            |d| {
                d["paths"]["/api/tokens/{userId}"]["get"]["parameters"][0]["required"] =
                    false.into()
            },
        ),
        // `$dynamicRef: "#meta"` resolved: a Schema Object must be an object or a boolean.
        (
            "a Schema Object that is a number",
            "/components/schemas/ErrorBody",
            |d| d["components"]["schemas"]["ErrorBody"] = 5.into(),
        ),
        (
            "an unknown security scheme type",
            "/securitySchemes/jwt/type",
            |d| d["components"]["securitySchemes"]["jwt"]["type"] = "magic".into(),
        ),
    ];
    for (what, needle, break_it) in breaks {
        let mut broken = doc.clone();
        break_it(&mut broken);
        assert_ne!(broken, doc, "{what}: nothing changed");
        assert!(
            oas_errors(&validator, &broken)
                .iter()
                .any(|e| e.contains(needle)),
            "{what}: not refused by the OpenAPI 3.1 schema for `{needle}`: {:?}",
            oas_errors(&validator, &broken)
        );
    }
    // Schema Objects are checked against draft 2020-12.
    let schema_breaks: [(&str, &str, Break); 3] = [
        (
            "a type that is no type",
            "/components/schemas/ErrorBody",
            |d| d["components"]["schemas"]["ErrorBody"]["type"] = "strung".into(),
        ),
        (
            "required as a string",
            "\"error\" is not of type \"array\"",
            |d| d["components"]["schemas"]["ErrorBody"]["required"] = "error".into(),
        ),
        (
            "an inline parameter schema with a bad minimum",
            "\"one\" is not of type \"number\"",
            |d| {
                d["paths"]["/api/tokens/{userId}"]["get"]["parameters"][0]["schema"]["minimum"] =
                    "one".into()
            },
        ),
    ];
    for (what, needle, break_it) in schema_breaks {
        let mut broken = doc.clone();
        break_it(&mut broken);
        assert_ne!(broken, doc, "{what}: nothing changed");
        assert!(
            schema_errors(&broken).iter().any(|e| e.contains(needle)),
            "{what}: not refused by the draft 2020-12 meta-schema for `{needle}`: {:?}",
            schema_errors(&broken)
        );
    }
}

#[test]
fn the_served_document_is_the_one_the_code_describes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = tokenbot::api::openapi::generate();
    if std::env::var("TOKENBOT_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == committed && committed == tokenbot::api::openapi::document(),
        "daemon/openapi.json is not the document the code describes; rewrite it with \
         `TOKENBOT_BLESS=1 cargo test -p tokenbot --test it -- api::openapi::the_served_document` \
         and commit it"
    );
}
