//! docs/openapi.yaml stays true to the code: every public route is described, and every
//! described operation is answered by the gateway (CI also runs schemathesis against it).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::gateway;
use serde_json::Value;

const METHODS: [&str; 6] = ["get", "post", "put", "delete", "patch", "options"];

fn document() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid YAML")
}

fn documented() -> BTreeSet<(String, String)> {
    let doc = document();
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((path.clone(), method.to_string()));
            }
        }
    }
    ops
}

/// `.route("PATH", get(..).post(..))` calls in the public edge's source (the admin
/// listener's routes are not public).
fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")];
    let edge = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/edge");
    for entry in std::fs::read_dir(edge).unwrap() {
        files.push(entry.unwrap().path());
    }
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let Some(start) = rest.find('"') else { break };
            let Some(len) = rest[start + 1..].find('"') else {
                break;
            };
            let path = rest[start + 1..start + 1 + len].to_string();
            // The handlers: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(rest.len(), |(j, _)| j);
            let args = &rest[start + 1 + len..end];
            for method in METHODS {
                let call = format!("{method}(");
                let mut at = 0;
                while let Some(k) = args[at..].find(&call) {
                    let before = args[..at + k].chars().last().unwrap_or(' ');
                    if !before.is_alphanumeric() && before != '_' {
                        found.insert((path.clone(), method.to_string()));
                    }
                    at += k + call.len();
                }
            }
        }
    }
    found
}

#[test]
fn every_public_route_is_described() {
    let documented = documented();
    let routes = routes_in_source();
    assert!(
        routes.len() >= 5,
        "the route scan found too little: {routes:?}"
    );
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from docs/openapi.yaml: {missing:?}"
    );
}

#[test]
fn every_refusal_shares_the_error_shape() {
    let doc = document();
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(
        error["required"],
        serde_json::json!(["statusCode", "errors"])
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            for (status, response) in op["responses"].as_object().unwrap() {
                if !status.starts_with('2') {
                    assert_eq!(
                        response["$ref"], "#/components/responses/Refused",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn every_described_operation_is_served() {
    let gw = gateway().start().await;
    let http = reqwest::Client::new();
    for (path, method) in documented() {
        let url = format!("{}{}", gw.base, path.replace("{chat_id}", "0001abc"));
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = http
            .request(method.clone(), &url)
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("a JSON reply");
        let code = body["errors"][0]["code"].as_i64();
        assert!(
            !matches!(code, Some(120 | 121)),
            "{method} {path}: not served ({status} {body})"
        );
    }
}
