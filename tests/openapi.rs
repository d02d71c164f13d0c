//! docs/openapi.yaml stays true to the code: every public route is described, and every
//! described operation is answered by the gateway (CI also runs schemathesis against it).

mod common;

use std::collections::BTreeSet;
use std::num::NonZeroU64;
use std::path::Path;

use common::gateway;
use common::gms::GmsClient;
use serde_json::{json, Value};

/// The service the GMS examples of the document name.
const GMS_SERVICE: &str = r#"
[[gms.services]]
name = "customer-support"
tenant = "Environment"
"#;

const METHODS: [&str; 6] = ["get", "post", "put", "delete", "patch", "options"];

fn document() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid YAML")
}

/// The GMS operations on a chat share one route, `{CHAT}/{op}`; the document gives each its
/// own path (each has its own required fields), all under this prefix.
const GMS_CHAT: &str = "/genesys/2/chat/{service}/{chat_id}/";

fn documented() -> BTreeSet<(String, String)> {
    let doc = document();
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        // `{CHAT}/send`, `{CHAT}/refresh`, …: the `{CHAT}/{op}` route.
        let path = match gms_op(path) {
            Some(_) => format!("{GMS_CHAT}{{op}}"),
            None => path.clone(),
        };
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((path.clone(), method.to_string()));
            }
        }
    }
    ops
}

/// The operation a documented path names when it is one of the `{CHAT}/{op}` paths.
fn gms_op(path: &str) -> Option<&str> {
    let op = path.strip_prefix(GMS_CHAT)?;
    // `file` is a folder of routes; `events` is the event stream (`edge::push`), a GET.
    (!op.contains('/') && op != "file" && op != "events").then_some(op)
}

/// The operations `edge::gms::parse::parse_gms_operation` accepts: its match arms.
fn gms_ops_in_source() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/edge/gms/parse.rs");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find("pub fn parse_gms_operation")
        .expect("parse_gms_operation in src/edge/gms/parse.rs");
    let end = start
        + text[start..]
            .find("_ => return Err(Error::NotFound)")
            .unwrap();
    text[start..end]
        .lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix('"')?;
            let (op, rest) = l.split_once('"')?;
            rest.trim_start().starts_with("=>").then(|| op.to_string())
        })
        .collect()
}

#[test]
fn every_gms_operation_has_its_own_path() {
    let doc = document();
    let paths: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|p| gms_op(p).map(str::to_string))
        .collect();
    let source = gms_ops_in_source();
    assert!(
        source.len() >= 9,
        "the scan found too few operations: {source:?}"
    );
    assert_eq!(
        paths, source,
        "GMS operations: documented paths vs the parser's arms"
    );
}

/// The `.rs` files under `dir`, in every subfolder.
fn sources(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// A route's path as written in the source: a literal, or `&format!("{PREFIX}/…")` over
/// `const PREFIX: &str = "…";` declared in the same file (the GMS routes), with `{{`/`}}`
/// unescaped. Anything else fails the test rather than being skipped.
fn route_path(literal: &str, formatted: bool, file: &str) -> String {
    if !formatted {
        return literal.to_string();
    }
    let mut path = String::new();
    let mut rest = literal;
    while let Some(i) = rest.find('{') {
        path.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("{{") {
            path.push('{');
            rest = after;
            continue;
        }
        let end = rest.find('}').expect("a closed format argument");
        let name = &rest[1..end];
        let decl = format!("const {name}: &str = \"");
        let at = file
            .find(&decl)
            .unwrap_or_else(|| panic!("route prefix `{name}` is not a const in its file"));
        let value = &file[at + decl.len()..];
        path.push_str(&value[..value.find('"').unwrap()]);
        rest = &rest[end + 1..];
    }
    path.push_str(rest);
    path.replace("}}", "}")
}

/// `.route(PATH, get(..).post(..))` calls in the public edge's source (the admin
/// listener's routes are not public), PATH a literal or a `format!` over a const.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")];
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/edge"),
        &mut files,
    );
    // The widget's routes are written relative to `widget.path` and nested there; the
    // document describes them at its default.
    let widget_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/edge/widget");
    let widget_prefix = webapi_gateway::edge::widget::DEFAULT_PATH.trim_end_matches('/');
    for file in &files {
        let nested = if file.starts_with(&widget_dir) {
            widget_prefix
        } else {
            ""
        };
        let text = std::fs::read_to_string(file).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let Some(start) = rest.find('"') else { break };
            let formatted = rest[..start].contains("format!(");
            let Some(len) = rest[start + 1..].find('"') else {
                break;
            };
            let path = format!(
                "{nested}{}",
                route_path(&rest[start + 1..start + 1 + len], formatted, &text)
            );
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
    // The GMS dialect's routes are built with `format!` in a subfolder: the scan must see
    // them, or a new one could go undescribed.
    for gms in [
        "/genesys/2/chat/{service}",
        "/genesys/2/chat/{service}/{chat_id}/{op}",
        "/genesys/2/chat/{service}/{chat_id}/file/{file_id}/download",
        "/genesys/2/email/{service}",
    ] {
        assert!(
            routes.contains(&(gms.to_string(), "post".to_string())),
            "the route scan missed {gms}: {routes:?}"
        );
    }
    assert!(routes.contains(&(
        "/genesys/2/chat/{service}/{chat_id}/file/{file_id}/download".to_string(),
        "get".to_string()
    )));
    // The widget's routes are nested under `widget.path`: the scan must see them there.
    for widget in ["/", "/widget/widget.js", "/widget/config.json"] {
        assert!(
            routes.contains(&(widget.to_string(), "get".to_string())),
            "the route scan missed {widget}: {routes:?}"
        );
    }
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
    assert_eq!(error["required"], json!(["statusCode", "errors"]));
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
    let gw = gateway().toml(GMS_SERVICE).start().await;
    let http = reqwest::Client::new();
    for (path, method) in documented() {
        let path_here = path
            .replace("{chat_id}", "0001abc")
            .replace("{service}", "customer-support")
            .replace("{op}", "refresh")
            .replace("{file_id}", "f1");
        let url = format!("{}{path_here}", gw.base);
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = http
            .request(method.clone(), &url)
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let json = resp
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
        if !json {
            // The widget's files and the demo page: served is a 200 with their own type.
            assert_eq!(status, 200, "{method} {path}: not served");
            continue;
        }
        let body: Value = resp.json().await.expect("a JSON reply");
        let code = body["errors"][0]["code"].as_i64();
        assert!(
            !matches!(code, Some(120 | 121)),
            "{method} {path}: not served ({status} {body})"
        );
    }
}

/// Checks `value` against an OpenAPI schema, for the subset of the vocabulary the document
/// uses; the error names the JSON path.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        return all.iter().try_for_each(|s| check(doc, s, value, at));
    }
    let fail = |why: &str| Err(format!("{at}: {why} in {value}"));
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        Some("number") => value.is_number(),
        _ => true,
    };
    if !type_ok {
        return fail(&format!("not of type {}", schema["type"]));
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            return fail(&format!("not one of {}", schema["enum"]));
        }
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64()) {
        if n < min {
            return fail(&format!("below {min}"));
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = schema["minItems"].as_u64() {
            if (items.len() as u64) < min {
                return fail("too few items");
            }
        }
        for (i, item) in items.iter().enumerate() {
            check(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(object) = value.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(key.as_str().unwrap()) {
                return fail(&format!("missing {key}"));
            }
        }
        for (key, v) in object {
            let sub = &schema["properties"][key];
            let sub = if sub.is_null() {
                &schema["additionalProperties"]
            } else {
                sub
            };
            if sub.is_object() {
                check(doc, sub, v, &format!("{at}.{key}"))?;
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn real_replies_match_the_document() {
    let doc = document();
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let conform = |name: &str, v: &Value| {
        if let Err(e) = check(&doc, &schema(name), v, name) {
            panic!("{e}");
        }
    };
    let gw = gateway()
        .toml(GMS_SERVICE)
        .behaviour(|b| b.session_limit = NonZeroU64::new(2).unwrap())
        .start()
        .await;
    let c = gw.client();
    let created = c
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Environment", "nickname": "Ann",
                               "userData": {"k": "v"}}),
        )
        .await;
    conform("ChatCreated", &created.body);
    let chat = common::Chat {
        chat_id: created.body["chatId"].as_str().unwrap().into(),
        user_id: created.body["userId"].as_str().unwrap().into(),
        secure_key: created.body["secureKey"].as_str().unwrap().into(),
        alias: created.body["alias"].as_str().unwrap().into(),
        tenant: "Environment".into(),
    };

    for (op, extra) in [
        ("SendMessage", json!({"text": "hi", "messageType": "t"})),
        ("SendStartTypingNotification", json!({})),
        ("SendStopTypingNotification", json!({})),
        ("UpdateUserNickname", json!({"nickname": "Bo"})),
        ("SendUrl", json!({"pushUrl": "https://example.com"})),
        ("UpdateUserData", json!({"userData": {"a": "b"}})),
        ("ReadReceipt", json!({"transcriptPosition": 1})),
        ("GetChat", json!({})),
    ] {
        let r = c.op(&chat, op, extra).await;
        assert_eq!(r.http, 200, "{op}: {}", r.body);
        conform("ChatReply", &r.body);
    }
    conform("ChatReply", &c.messages(&chat, Some(1)).await.body);

    // The GMS dialect: request chat, its operations, refresh with the chat's userData, file
    // limits, and its refusals (always with chatEnded).
    let g = GmsClient::new(&gw.base, "customer-support");
    let r = g
        .post("", &[("nickname", "Gus"), ("userData[k]", "v")])
        .await;
    assert_eq!(r.http, 200, "{}", r.body);
    conform("GmsReply", &r.body);
    let mut gms_chat = g
        .request_chat(&[("firstName", "A"), ("lastName", "B")])
        .await;
    for (op, extra) in [
        (
            "send",
            &[("message", "hi"), ("transcriptPosition", "1")][..],
        ),
        ("startTyping", &[]),
        ("stopTyping", &[("message", "x")]),
        ("pushUrl", &[("pushUrl", "https://example.com")]),
        ("updateNickname", &[("nickname", "Cy")]),
        ("updateData", &[("userData[a]", "b")]),
        ("customNotice", &[("message", "n")]),
        ("readReceipt", &[("transcriptPosition", "2")]),
    ] {
        let r = g.op(&gms_chat, op, extra).await;
        assert_eq!(r.http, 200, "{op}: {}", r.body);
        conform("GmsReply", &r.body);
    }
    let r = g.refresh(&mut gms_chat).await;
    assert_eq!(r.http, 200, "{}", r.body);
    assert!(r.body["userData"].is_object(), "{}", r.body);
    conform("GmsReply", &r.body);
    let types: Vec<_> = r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(types.iter().any(|t| t == "PushUrl"), "{types:?}");
    let r = g
        .post(
            &format!("/{}/file/limits", gms_chat.chat_id),
            &[
                ("userId", &gms_chat.user_id),
                ("secureKey", &gms_chat.secure_key),
                ("alias", &gms_chat.alias),
            ],
        )
        .await;
    assert_eq!(r.http, 200, "{}", r.body);
    conform("GmsLimitsReply", &r.body);
    let r = g
        .upload(&gms_chat, "note.txt", "text/plain", b"hello".to_vec())
        .await;
    assert_eq!(r.http, 200, "{}", r.body);
    conform("GmsReply", &r.body);
    assert!(r.body["userData"]["file-id"].is_string(), "{}", r.body);
    let email = reqwest::Client::new()
        .post(format!("{}/genesys/2/email/customer-support", gw.base))
        .form(&[
            ("firstName", "John"),
            ("lastName", "Doe"),
            ("fromAddress", "jdoe@example.com"),
            ("subject", "Order 1234"),
            ("text", "Where is my parcel?"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(email.status(), 200);
    conform("GmsEmailAccepted", &email.json().await.unwrap());
    for refused in [
        g.op(&gms_chat, "send", &[]).await,
        g.post(&format!("/{}/refresh", gms_chat.chat_id), &[]).await,
        GmsClient::new(&gw.base, "no-such-service")
            .post("", &[("nickname", "x")])
            .await,
    ] {
        assert!(refused.http >= 400, "{}", refused.body);
        conform("Error", &refused.body);
        assert_eq!(refused.body["chatEnded"], json!(false), "{}", refused.body);
    }

    let other = c.request_chat("second").await;
    let (status, ready) = {
        let r = reqwest::get(format!("{}/readyz", gw.base)).await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    // Full instances leave the gateway ready (issue 13): readiness is about serving chats.
    assert_eq!(status, 200, "{ready}");
    conform("Status", &ready);
    let r = g.op(&gms_chat, "disconnect", &[]).await;
    assert_eq!(r.body["chatEnded"], json!(true), "{}", r.body);
    conform("GmsReply", &r.body);
    conform("ChatReply", &c.op(&chat, "Complete", json!({})).await.body);
    conform(
        "Error",
        &c.op(&chat, "SendMessage", json!({"text": "x"})).await.body,
    );
    let mut wrong = other.clone();
    wrong.secure_key.push('0');
    conform("Error", &c.messages(&wrong, None).await.body);
    conform("Error", &c.post("/api/v2/chats", json!([])).await.body);
    for probe in ["/healthz"] {
        let r = reqwest::get(format!("{}{probe}", gw.base)).await.unwrap();
        conform("Status", &r.json().await.unwrap());
    }
}

// The rules below are where the server was looser or stricter than anything a document can
// say; each is now one rule, stated by docs/openapi.yaml and held by the server, so that
// `schemathesis --checks all` finds the two agree (.ci/schemathesis.sh, the strict run).

/// A multipart part header cannot carry a control character, so a field name with one is
/// refused in a form-encoded body too: the same fields get the same answer in either
/// encoding (the document's `propertyNames`).
#[tokio::test]
async fn field_names_with_control_characters_are_refused_in_every_encoding() {
    let gw = gateway().toml(GMS_SERVICE).start().await;
    let gms = GmsClient::new(&gw.base, "customer-support");
    let chat = gms.request_chat(&[("nickname", "Ann")]).await;
    let fields = [
        ("userId", chat.user_id.as_str()),
        ("secureKey", chat.secure_key.as_str()),
        ("alias", chat.alias.as_str()),
        ("userData[a\u{1}b]", "v"),
    ];
    let r = gms
        .post(&format!("/{}/updateData", chat.chat_id), &fields)
        .await;
    r.assert_error(400, 2, 500);
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("control character"),
        "{}",
        r.body
    );
    // Tab is a character a part header may carry: the same body with one is fine.
    let fields = [
        ("userId", chat.user_id.as_str()),
        ("secureKey", chat.secure_key.as_str()),
        ("alias", chat.alias.as_str()),
        ("userData[a\tb]", "v"),
    ];
    let r = gms
        .post(&format!("/{}/updateData", chat.chat_id), &fields)
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{}", r.body);
    // The GMS e-mail's form-encoded body: the same rule.
    let c = gw.client();
    let body = "firstName=A&lastName=B&fromAddress=a%40b.example&subject=s&text=t&x%01y=1";
    let r = c
        .post_raw(
            "/genesys/2/email/customer-support",
            Some("application/x-www-form-urlencoded"),
            body.as_bytes().to_vec(),
        )
        .await;
    r.assert_error(400, 2, 500);
}

/// JSON Schema's `integer` admits `5.0`; a Get Messages position written that way is the
/// number 5. A fraction, a negative number or 2^64 are still refused by name.
#[tokio::test]
async fn a_transcript_position_is_any_json_integer() {
    let gw = gateway().start().await;
    let c = gw.client();
    let created = c
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Environment", "nickname": "Ann"}),
        )
        .await;
    let chat = common::Chat::created(&created);
    let path = format!("/api/v2/chats/{}/messages", chat.chat_id);
    let with = |position: Value| {
        let mut body = chat.credentials();
        body["transcriptPosition"] = position;
        body
    };
    let whole = c.post(&path, with(json!(2))).await;
    let written_as_float = c.post(&path, with(json!(2.0))).await;
    assert_eq!(whole.status_code(), 0, "{}", whole.body);
    assert_eq!(whole.body["messages"], written_as_float.body["messages"]);
    assert_eq!(
        whole.body["messages"][0]["index"], 2,
        "from position 2: {}",
        whole.body
    );
    for bad in [
        json!(1.5),
        json!(-1),
        json!(-1.0),
        json!(18446744073709551616.0_f64),
    ] {
        let r = c.post(&path, with(bad.clone())).await;
        r.assert_error(400, 2, 103);
        assert!(
            r.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("transcriptPosition"),
            "{bad}: {}",
            r.body
        );
    }
}

/// A GMS `transcriptPosition` is ASCII digits (white space around them ignored), however
/// many: past the end of any transcript is the end, not an error.
#[tokio::test]
async fn a_gms_position_past_any_transcript_is_the_end() {
    let gw = gateway().toml(GMS_SERVICE).start().await;
    let gms = GmsClient::new(&gw.base, "customer-support");
    let chat = gms.request_chat(&[("nickname", "Ann")]).await;
    let r = gms
        .op(
            &chat,
            "refresh",
            &[("transcriptPosition", " 99999999999999999999999999 ")],
        )
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{}", r.body);
    assert_eq!(r.body["messages"], json!([]), "{}", r.body);
    for bad in ["+1", "1e3", "٣", "-1", "1.0"] {
        let r = gms
            .op(&chat, "refresh", &[("transcriptPosition", bad)])
            .await;
        r.assert_error(400, 2, 104);
    }
}

/// E-mail field lengths are characters, as the document's `maxLength` counts them: 256
/// two-byte characters are a first name, 257 are not.
#[tokio::test]
async fn email_field_lengths_are_in_characters() {
    let gw = gateway().toml(GMS_SERVICE).start().await;
    let c = gw.client();
    let send = |first: String| {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("firstName", &first)
            .append_pair("lastName", "Lee")
            .append_pair("fromAddress", "ann@shop.example")
            .append_pair("subject", "Order 1234")
            .append_pair("text", "Where is my parcel?")
            .finish();
        let c = &c;
        async move {
            c.post_raw(
                "/genesys/2/email/customer-support",
                Some("application/x-www-form-urlencoded"),
                body.into_bytes(),
            )
            .await
        }
    };
    let r = send("é".repeat(256)).await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{}", r.body);
    send("é".repeat(257)).await.assert_error(400, 2, 141);
}
