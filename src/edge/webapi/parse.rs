//! Web API JSON bodies → operations (`NewChat`, `OnChat`). Lenient about unknown fields,
//! strict about types: a field of the wrong JSON type is refused with its name. Where real
//! clients send a JSON scalar for a string (docs/gms.md "Compatibility"), it is read the way
//! the Java Web API Server reads it: `userData` numbers and booleans and a numeric `alias`
//! as written, a numeric string `transcriptPosition` as its number.
//!
//! Owns the Web API's field names and rules (required fields, types, transcript positions)
//! and its operation names; knows nothing of HTTP or of running an operation.

use backend_api::{Action, NewChat, Refresh, Transcript, UserData};
use serde::Deserialize;

use crate::error::Error;
use crate::operation::{ClientCredentials, OnChat};

/// Every field any chat request may carry. Absent and `null` are the same.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Body {
    operation_name: Option<String>,
    user_id: Option<String>,
    secure_key: Option<String>,
    #[serde(default, deserialize_with = "alias")]
    alias: Option<String>,
    tenant_name: Option<String>,
    nickname: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    email_address: Option<String>,
    subject: Option<String>,
    endpoint: Option<String>,
    #[serde(default, deserialize_with = "user_data")]
    user_data: Option<UserData>,
    text: Option<String>,
    message_type: Option<String>,
    push_url: Option<String>,
    #[serde(default, deserialize_with = "position")]
    transcript_position: Option<u64>,
}

/// A transcript position: a whole number, written as JSON writes it (`5`), with a zero
/// fraction (`5.0`, which JSON Schema's `integer` admits too), or as a string of digits
/// (`"5"`, as some clients send it; past 2^64-1 it saturates, as in the GMS dialect: it is
/// past the end of any transcript).
fn position<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    const EXPECTED: &str = "expected a whole number from 0 to 2^64-1, or a string of digits";
    // A visitor, not an untagged enum: no buffered copy of the value (issue 17).
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
            de.deserialize_any(self)
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
            u64::try_from(n).map(Some).map_err(|_| E::custom(EXPECTED))
        }
        // Below 2^64 (exact as an f64) and whole: that number.
        fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Self::Value, E> {
            if f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 {
                Ok(Some(f as u64))
            } else {
                Err(E::custom(EXPECTED))
            }
        }
        fn visit_str<E: serde::de::Error>(self, d: &str) -> Result<Self::Value, E> {
            if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) {
                Ok(Some(d.parse().unwrap_or(u64::MAX)))
            } else {
                Err(E::custom(EXPECTED))
            }
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(EXPECTED))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(EXPECTED))
        }
    }
    de.deserialize_option(Visitor)
}

/// What `userData` values and `alias` may be besides strings, for the error message.
const SCALAR: &str = "a string, a number or a boolean";

/// A JSON scalar as text: a string as it is, a number or boolean as written (`12345`,
/// `1.5`, `true`; a large integer digit for digit), as a Java server's String field reads it.
/// Objects, arrays and null are refused.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Scalar, D::Error> {
        use serde::de::{Error as _, Unexpected};
        let raw = <&serde_json::value::RawValue>::deserialize(de)?;
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"') => serde_json::from_str(text)
                .map(Scalar)
                .map_err(D::Error::custom),
            Some(b't' | b'f' | b'-' | b'0'..=b'9') => Ok(Scalar(text.to_owned())),
            Some(b'{') => Err(D::Error::invalid_type(Unexpected::Map, &SCALAR)),
            Some(b'[') => Err(D::Error::invalid_type(Unexpected::Seq, &SCALAR)),
            _ => Err(D::Error::invalid_type(Unexpected::Unit, &SCALAR)),
        }
    }
}

/// `userData`: an object whose values are strings, numbers or booleans ([`Scalar`]); a
/// nested object, an array or a null is refused naming its key (`userData.k`).
fn user_data<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<UserData>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<UserData>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of strings, numbers or booleans")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
            de.deserialize_map(self)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut data = UserData::new();
            while let Some(key) = map.next_key::<String>()? {
                let Scalar(value) = map.next_value()?;
                data.insert(key, value);
            }
            Ok(Some(data))
        }
    }
    de.deserialize_option(Visitor)
}

/// `alias`: a string, or a whole number as some clients send it (`117`, or `117.0`, which
/// JSON Schema's `integer` admits too), read as its digits.
fn alias<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    const EXPECTED: &str = "expected a string or a whole number from 0 to 2^64-1";
    // A visitor, not an untagged enum: no buffered copy of the value (issue 17).
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
            de.deserialize_any(self)
        }
        fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Self::Value, E> {
            Ok(Some(t.to_owned()))
        }
        fn visit_string<E: serde::de::Error>(self, t: String) -> Result<Self::Value, E> {
            Ok(Some(t))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n.to_string()))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
            match u64::try_from(n) {
                Ok(n) => Ok(Some(n.to_string())),
                Err(_) => Err(E::custom(EXPECTED)),
            }
        }
        fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Self::Value, E> {
            if f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 {
                Ok(Some((f as u64).to_string()))
            } else {
                Err(E::custom(EXPECTED))
            }
        }
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(EXPECTED))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(serde::de::Error::custom(EXPECTED))
        }
    }
    de.deserialize_option(Visitor)
}

fn body(bytes: &[u8]) -> Result<Body, Error> {
    // serde would take an array for a struct (fields by position): only an object will do.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(Error::NotAnObject),
            Err(e) => Err(Error::MalformedJson(strip_position(&e))),
        };
    }
    // The common case, a good body, without the field path (serde_path_to_error allocates a
    // `String` per key it passes); only a refused body is read again to name its field, which
    // gives the same error as reading it once with the path did.
    if let Ok(body) = serde_json::from_slice::<Body>(bytes) {
        return Ok(body);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, Body>(&mut *de) {
        Ok(body) => de
            .end()
            .map(|()| body)
            .map_err(|e| Error::MalformedJson(strip_position(&e))),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data if path != "." => Err(Error::WrongType {
                    field: path,
                    detail: strip_position(&inner),
                }),
                serde_json::error::Category::Data
                    if inner.to_string().starts_with("invalid type") =>
                {
                    Err(Error::NotAnObject)
                }
                _ => Err(Error::MalformedJson(strip_position(&inner))),
            }
        }
    }
}

/// serde_json's message without " at line L column C": the client has the body.
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn required(value: Option<String>, field: &'static str) -> Result<String, Error> {
    value.ok_or(Error::MissingField(field))
}

fn non_empty(value: Option<String>, field: &'static str) -> Result<String, Error> {
    let v = required(value, field)?;
    if v.trim().is_empty() {
        return Err(Error::InvalidValue {
            field,
            reason: "must not be empty".into(),
        });
    }
    Ok(v)
}

/// A pushed URL: absolute `http` / `https` only (`backend_api::check_push_url`).
fn push_url(url: String) -> Result<String, Error> {
    backend_api::check_push_url(&url).map_err(|reason| Error::InvalidValue {
        field: "pushUrl",
        reason: reason.into(),
    })?;
    Ok(url)
}

fn credentials(body: &mut Body) -> Result<ClientCredentials, Error> {
    Ok(ClientCredentials {
        user_id: required(body.user_id.take(), "userId")?,
        secure_key: required(body.secure_key.take(), "secureKey")?,
        alias: required(body.alias.take(), "alias")?,
        tenant_name: required(body.tenant_name.take(), "tenantName")?,
    })
}

/// `POST /api/v2/chats`.
pub fn parse_request_chat(bytes: &[u8]) -> Result<NewChat, Error> {
    let b = body(bytes)?;
    Ok(NewChat {
        tenant_name: required(b.tenant_name, "tenantName")?,
        nickname: non_empty(b.nickname, "nickname")?,
        first_name: b.first_name,
        last_name: b.last_name,
        email_address: b.email_address,
        subject: b.subject,
        // Empty: the tenant's default endpoint.
        endpoint: b.endpoint.unwrap_or_default(),
        user_data: b.user_data.unwrap_or_default(),
    })
}

/// `POST /api/v2/chats/{chatId}`.
pub fn parse_chat_operation(bytes: &[u8]) -> Result<OnChat, Error> {
    let mut b = body(bytes)?;
    let name = required(b.operation_name.take(), "operationName")?;
    let credentials = credentials(&mut b)?;
    let operation = match name.as_str() {
        "SendMessage" => act(Action::SendMessage {
            text: required(b.text, "text")?,
            message_type: b.message_type,
        }),
        "SendStartTypingNotification" => act(Action::StartTyping { text: b.text }),
        "SendStopTypingNotification" => act(Action::StopTyping { text: b.text }),
        "UpdateUserNickname" => act(Action::UpdateNickname {
            nickname: non_empty(b.nickname, "nickname")?,
        }),
        "SendUrl" => act(Action::PushUrl {
            url: push_url(required(b.push_url, "pushUrl")?)?,
        }),
        "UpdateUserData" => act(Action::UpdateUserData {
            data: b.user_data.ok_or(Error::MissingField("userData"))?,
            text: b.text,
        }),
        "Complete" => act(Action::Complete),
        "ReadReceipt" => act(Action::ReadReceipt {
            position: b
                .transcript_position
                .ok_or(Error::MissingField("transcriptPosition"))?,
        }),
        "GetChat" => Refresh {
            action: Action::Poll,
            transcript: Transcript::None,
            details: true,
        },
        _ => return Err(Error::UnknownOperation(name)),
    };
    Ok(OnChat {
        credentials,
        operation,
    })
}

/// `POST /api/v2/chats/{chatId}/messages`.
pub fn parse_get_messages(bytes: &[u8]) -> Result<OnChat, Error> {
    let mut b = body(bytes)?;
    let credentials = credentials(&mut b)?;
    let transcript = match b.transcript_position {
        Some(0) => Transcript::None,
        Some(n) => Transcript::From(n),
        None => Transcript::From(1),
    };
    Ok(OnChat {
        credentials,
        operation: get_messages(transcript),
    })
}

/// A Web API action: it asks for no transcript (only Get Messages does) and no details.
fn act(action: Action) -> Refresh {
    Refresh {
        action,
        transcript: Transcript::None,
        details: false,
    }
}

fn get_messages(transcript: Transcript) -> Refresh {
    Refresh {
        action: Action::Poll,
        transcript,
        details: false,
    }
}

/// The Web API's name for a request on a chat (`operationName`, or `GetMessages`), for
/// metrics and logs.
pub fn operation_name(operation: &Refresh) -> &'static str {
    match &operation.action {
        Action::Poll if operation.details => "GetChat",
        Action::Poll => "GetMessages",
        Action::SendMessage { .. } => "SendMessage",
        Action::StartTyping { .. } => "SendStartTypingNotification",
        Action::StopTyping { .. } => "SendStopTypingNotification",
        Action::UpdateNickname { .. } => "UpdateUserNickname",
        Action::PushUrl { .. } => "SendUrl",
        Action::UpdateUserData { .. } => "UpdateUserData",
        Action::CustomNotice { .. } => "CustomNotice",
        Action::Complete => "Complete",
        Action::ReadReceipt { .. } => "ReadReceipt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDS: &str =
        r#""userId":"007553ADB4D9001A","secureKey":"k","alias":"117","tenantName":"Environment""#;

    fn op(extra: &str) -> Result<OnChat, Error> {
        parse_chat_operation(format!("{{{CREDS}{extra}}}").as_bytes())
    }

    #[test]
    fn reference_examples_parse() {
        let r = parse_request_chat(
            br#"{"tenantName":"Environment","nickname":"nickname","emailAddress":"email@address",
                 "subject":"subject to","userData":{"key1":"value1","key2":"value2"}}"#,
        )
        .unwrap();
        assert_eq!(r.nickname, "nickname");
        assert_eq!(r.user_data.len(), 2);
        assert_eq!(r.first_name, None);
        let o = op(r#","operationName":"SendMessage","text":"hello","messageType":"x""#).unwrap();
        assert_eq!(
            o.operation,
            act(Action::SendMessage {
                text: "hello".into(),
                message_type: Some("x".into())
            })
        );
        assert_eq!(o.credentials.alias, "117");
        let o = op(r#","operationName":"UpdateUserData","userData":{"a":"b"}"#).unwrap();
        assert!(matches!(
            o.operation,
            Refresh {
                action: Action::UpdateUserData { .. },
                transcript: Transcript::None,
                details: false
            }
        ));
        assert_eq!(
            op(r#","operationName":"GetChat""#).unwrap().operation,
            Refresh {
                action: Action::Poll,
                transcript: Transcript::None,
                details: true,
            }
        );
    }

    #[test]
    fn json_scalars_are_read_as_a_java_server_reads_them() {
        let r = parse_request_chat(
            br#"{"tenantName":"E","nickname":"n","userData":{"CustomerID":12345,"VIP":true,
                 "Off":false,"Score":1.5,"Big":123456789012345678901234567890,"Neg":-7,
                 "Exp":1e3,"Text":"x\u00e9"}}"#,
        )
        .unwrap();
        let got: Vec<(&str, &str)> = r
            .user_data
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Big", "123456789012345678901234567890"),
                ("CustomerID", "12345"),
                ("Exp", "1e3"),
                ("Neg", "-7"),
                ("Off", "false"),
                ("Score", "1.5"),
                ("Text", "x\u{e9}"),
                ("VIP", "true"),
            ]
        );
        let body = br#"{"userId":"u","secureKey":"k","alias":117,"tenantName":"E","operationName":"GetChat"}"#;
        assert_eq!(parse_chat_operation(body).unwrap().credentials.alias, "117");
        let get = |p: &str| {
            parse_get_messages(format!("{{{CREDS},\"transcriptPosition\":{p}}}").as_bytes())
                .map(|o| o.operation)
        };
        assert_eq!(get(r#""5""#).unwrap(), get_messages(Transcript::From(5)));
        assert_eq!(get(r#""0""#).unwrap(), get_messages(Transcript::None));
        assert_eq!(
            get(r#""99999999999999999999999""#).unwrap(),
            get_messages(Transcript::From(u64::MAX))
        );
        for bad in [r#""""#, r#""-1""#, r#"" 5""#, r#""5a""#, "true", "[5]"] {
            match get(bad) {
                Err(Error::WrongType { field, .. }) => assert_eq!(field, "transcriptPosition"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn transcript_positions() {
        let get = |extra: &str| {
            parse_get_messages(format!("{{{CREDS}{extra}}}").as_bytes())
                .unwrap()
                .operation
        };
        assert_eq!(get(""), get_messages(Transcript::From(1)));
        assert_eq!(
            get(r#","transcriptPosition":0"#),
            get_messages(Transcript::None)
        );
        assert_eq!(
            get(r#","transcriptPosition":1"#),
            get_messages(Transcript::From(1))
        );
        assert_eq!(
            get(r#","transcriptPosition":7"#),
            get_messages(Transcript::From(7))
        );
    }

    /// The scalar readers (visitors since issue 17, untagged enums before) read and refuse
    /// what they did: each case, and the refusal naming its field with the same words.
    #[test]
    fn alias_and_position_scalars_read_and_refuse_as_before() {
        let alias = |v: &str| {
            let body = format!(
                r#"{{"userId":"u","secureKey":"k","alias":{v},"tenantName":"E","operationName":"GetChat"}}"#
            );
            parse_chat_operation(body.as_bytes()).map(|o| o.credentials.alias)
        };
        assert_eq!(alias(r#""117""#).unwrap(), "117");
        assert_eq!(alias(r#""a\"b""#).unwrap(), "a\"b");
        assert_eq!(alias("117").unwrap(), "117");
        assert_eq!(alias("117.0").unwrap(), "117");
        assert_eq!(
            alias("18446744073709551615").unwrap(),
            "18446744073709551615"
        );
        assert!(matches!(alias("null"), Err(Error::MissingField("alias"))));
        for bad in [
            "-1",
            "1.5",
            "-2.0",
            "1e30",
            "true",
            "{}",
            "[1]",
            "18446744073709551616",
        ] {
            match alias(bad) {
                Err(Error::WrongType { field, detail }) => {
                    assert_eq!(field, "alias", "{bad}");
                    assert_eq!(
                        detail, "expected a string or a whole number from 0 to 2^64-1",
                        "{bad}"
                    );
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let position = |v: &str| {
            parse_get_messages(format!(r#"{{{CREDS},"transcriptPosition":{v}}}"#).as_bytes())
                .map(|o| o.operation)
        };
        assert_eq!(
            position(r#""5""#).unwrap(),
            get_messages(Transcript::From(5))
        );
        assert_eq!(position("5.0").unwrap(), get_messages(Transcript::From(5)));
        assert_eq!(position("null").unwrap(), get_messages(Transcript::From(1)));
        assert_eq!(
            position(r#""99999999999999999999999""#).unwrap(),
            get_messages(Transcript::From(u64::MAX))
        );
        for bad in ["-1", "1.5", r#""""#, r#""5a""#, "true", "{}", "[]"] {
            match position(bad) {
                Err(Error::WrongType { field, detail }) => {
                    assert_eq!(field, "transcriptPosition", "{bad}");
                    assert_eq!(
                        detail, "expected a whole number from 0 to 2^64-1, or a string of digits",
                        "{bad}"
                    );
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        assert!(matches!(
            parse_request_chat(b"{"),
            Err(Error::MalformedJson(_))
        ));
        assert!(matches!(
            parse_request_chat(b""),
            Err(Error::MalformedJson(_))
        ));
        assert!(matches!(
            parse_request_chat(b"[1,2]"),
            Err(Error::NotAnObject)
        ));
        assert!(matches!(
            parse_request_chat(b"\"x\""),
            Err(Error::NotAnObject)
        ));
        assert!(matches!(
            parse_request_chat(b"{}"),
            Err(Error::MissingField("tenantName"))
        ));
        assert!(matches!(
            parse_request_chat(b"{} x"),
            Err(Error::MalformedJson(_))
        ));
        assert!(matches!(
            parse_request_chat(br#"{"tenantName":"E","nickname":" "}"#),
            Err(Error::InvalidValue {
                field: "nickname",
                ..
            })
        ));
        for nested in ["{}", "[1]", "null", r#"{"a":"b"}"#] {
            let body = format!(
                r#"{{"tenantName":"E","nickname":"n","userData":{{"ok":"v","k":{nested}}}}}"#
            );
            match parse_request_chat(body.as_bytes()) {
                Err(Error::WrongType { field, .. }) => assert_eq!(field, "userData.k", "{nested}"),
                other => panic!("{nested}: {other:?}"),
            }
        }
        match parse_request_chat(br#"{"tenantName":"E","nickname":"n","userData":[]}"#) {
            Err(Error::WrongType { field, .. }) => assert_eq!(field, "userData"),
            other => panic!("{other:?}"),
        }
        let float_alias = br#"{"userId":"u","secureKey":"k","alias":1.5,"tenantName":"E","operationName":"GetChat"}"#;
        match parse_chat_operation(float_alias) {
            Err(Error::WrongType { field, .. }) => assert_eq!(field, "alias"),
            other => panic!("{other:?}"),
        }
        match op(r#","operationName":"SendMessage","text":5"#) {
            Err(Error::WrongType { field, .. }) => assert_eq!(field, "text"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            op(r#","operationName":"SendMessage""#),
            Err(Error::MissingField("text"))
        ));
        assert!(matches!(
            op(r#","operationName":"Dance""#),
            Err(Error::UnknownOperation(_))
        ));
        assert!(matches!(op(""), Err(Error::MissingField("operationName"))));
        assert!(matches!(
            parse_chat_operation(br#"{"operationName":"GetChat"}"#),
            Err(Error::MissingField("userId"))
        ));
        match parse_get_messages(format!("{{{CREDS},\"transcriptPosition\":-1}}").as_bytes()) {
            Err(Error::WrongType { field, .. }) => assert_eq!(field, "transcriptPosition"),
            other => panic!("{other:?}"),
        }
    }
}
