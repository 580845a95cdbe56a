//! The OpenAPI document: it parses and validates as OpenAPI 3.1 (`oas3`), every `$ref` resolves,
//! every path parameter is declared, and it lists exactly the routes of `api::ROUTES`, each of
//! which the router serves.

mod api_support;

use std::collections::BTreeSet;

use api_support::*;
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
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, routed);

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
