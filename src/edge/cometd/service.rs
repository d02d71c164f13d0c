//! The chat service channel, `/service/chatV2/{serviceName}`: a publish's `data` (GMS's
//! CometD operations) → the same operations the GMS dialect runs, and their result in GMS's
//! CometD `data` shape.
//!
//! Owns the operation names of the channel, the conversion of a JSON `data` object into the
//! GMS dialect's fields (so `gms::parse` applies its rules once for both), the chat token as
//! the only credential (`operation::{seal,open}_chat_token`), and which operations change
//! the chats a client follows. Errors go into `data` in the GMS error shape
//! (`edge::error`). It must not read or write cookies (`follow` does), nor hold anything
//! between requests.

use axum::http::HeaderMap;
use backend_api::{Action, Event, Refresh, Transcript, UserData};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::edge::error::Failure;
use crate::edge::gms::parse::{parse_gms_refresh, parse_gms_request_chat, FormFields};
use crate::edge::gms::Services;
use crate::edge::wire::Events;
use crate::error::Error;
use crate::operation::{self, Chats, ClientCredentials, OnChat};

use super::follow::Follows;

/// The chat channel's prefix: `/service/chatV2/{serviceName}`.
pub const CHANNEL_PREFIX: &str = "/service/chatV2/";

/// The operations of the channel, as GMS names them in `data.operation`.
pub const OPERATIONS: &[&str] = &[
    "requestChat",
    "sendMessage",
    "startTyping",
    "stopTyping",
    "requestNotifications",
    "updateNickname",
    "customNotice",
    "pushUrl",
    "updateData",
    "disconnect",
    "readReceipt",
];

/// A chat's state as a message on its channel carries it (GMS's CometD `data`): a
/// publish's result, or a connect's new events.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatData<'a> {
    pub chat_id: &'a str,
    pub user_id: &'a str,
    /// The chat token: the only credential a CometD client sends back.
    pub secure_key: &'a str,
    pub alias: &'a str,
    pub messages: Events<'a>,
    pub next_position: u64,
    pub chat_ended: bool,
    pub status_code: u8,
    pub monitored: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<&'a UserData>,
}

impl<'a> ChatData<'a> {
    pub fn new(
        chat_id: &'a str,
        credentials: &'a ClientCredentials,
        token: &'a str,
        messages: &'a [Event],
        next_position: u64,
        chat_ended: bool,
    ) -> ChatData<'a> {
        ChatData {
            chat_id,
            user_id: &credentials.user_id,
            secure_key: token,
            alias: &credentials.alias,
            messages: Events::gms(messages),
            next_position,
            chat_ended,
            status_code: 0,
            monitored: false,
            user_data: None,
        }
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// An error as the `data` of a message on the channel: the GMS error shape.
pub fn error_data(error: Error, chat_id: Option<&str>) -> Value {
    let failure = match chat_id {
        Some(id) => Failure::on_chat(error, id),
        None => Failure::from(error),
    };
    serde_json::to_value(failure.gms_body()).unwrap_or(Value::Null)
}

/// Runs a publish on the chat channel of `service`; returns the `data` of its result
/// message (an error in the GMS error shape when it failed). Changes `follows` when the
/// operation starts, restarts or ends following a chat.
pub async fn publish(
    chats: &Chats,
    services: &Services,
    headers: &HeaderMap,
    service: &str,
    data: Option<&Value>,
    follows: &mut Follows,
    max_follow: usize,
) -> Value {
    let mut chat_id = None;
    match run(
        chats,
        services,
        headers,
        service,
        data,
        follows,
        max_follow,
        &mut chat_id,
    )
    .await
    {
        Ok(value) => value,
        Err(e) => error_data(e, chat_id.as_deref()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    chats: &Chats,
    services: &Services,
    headers: &HeaderMap,
    service: &str,
    data: Option<&Value>,
    follows: &mut Follows,
    max_follow: usize,
    chat_id_seen: &mut Option<String>,
) -> Result<Value, Error> {
    let svc = services.service(service, headers)?;
    let data = match data {
        Some(Value::Object(map)) => map,
        _ => return Err(Error::NotAnObject),
    };
    let fields = fields(data)?;
    let op = fields
        .get("operation")
        .ok_or(Error::MissingField("operation"))?;
    if op == "requestChat" {
        let request = parse_gms_request_chat(&fields, &svc.tenant, svc.endpoint.as_deref())?;
        let c = operation::request_chat(chats, request).await?;
        *chat_id_seen = Some(c.chat_id.clone());
        let credentials = ClientCredentials {
            user_id: c.user_id.clone(),
            secure_key: c.secure_key.clone(),
            alias: c.alias.to_string(),
            tenant_name: c.tenant_name.clone(),
        };
        let token = operation::seal_chat_token(chats, &c.chat_id, &credentials)?;
        follows.follow(
            token.clone(),
            c.chat_id.clone(),
            service,
            c.next_position,
            max_follow,
        );
        let data = ChatData::new(
            &c.chat_id,
            &credentials,
            &token,
            &c.messages,
            c.next_position,
            false,
        );
        return Ok(data.to_value());
    }
    let refresh = refresh(op, &fields)?;
    let token = fields
        .get("secureKey")
        .ok_or(Error::MissingField("secureKey"))?;
    let (chat_id, credentials) = operation::open_chat_token(chats, token)?;
    *chat_id_seen = Some(chat_id.clone());
    // A token of another tenant's chat is not this service's.
    if credentials.tenant_name != svc.tenant {
        return Err(Error::BadCredentials);
    }
    let reply = operation::on_chat(
        chats,
        &chat_id,
        OnChat {
            credentials: credentials.clone(),
            operation: refresh,
        },
    )
    .await?;
    let now = ClientCredentials {
        alias: reply.alias.to_string(),
        ..reply.credentials.clone()
    };
    // The chat moved (failover) or its backend key changed: a new token says so.
    let token = if now != credentials {
        operation::seal_chat_token(chats, &chat_id, &now)?
    } else {
        token.to_owned()
    };
    let update = &reply.update;
    match op {
        "requestNotifications" => follows.follow(
            token.clone(),
            chat_id.clone(),
            service,
            update.next_position,
            max_follow,
        ),
        "disconnect" => follows.unfollow(&chat_id),
        _ => {}
    }
    let mut data = ChatData::new(
        &chat_id,
        &now,
        &token,
        &update.messages,
        update.next_position,
        update.chat_ended,
    );
    data.user_data = update.details.as_ref().map(|d| &d.user_data);
    Ok(data.to_value())
}

/// What an operation other than requestChat asks of the chat. Only requestNotifications
/// reads the transcript: the events of every other operation reach the client once, through
/// `/meta/connect` (a publish answering them too would show them twice).
fn refresh(op: &str, fields: &FormFields) -> Result<Refresh, Error> {
    let gms_name = match op {
        "requestNotifications" => {
            // 0 or none: every event.
            let from = match fields.transcript()? {
                Transcript::From(n) => n,
                Transcript::None => 1,
            };
            return Ok(Refresh {
                action: Action::Poll,
                transcript: Transcript::From(from),
                details: false,
            });
        }
        "sendMessage" => "send",
        other if OPERATIONS.contains(&other) => other,
        other => return Err(Error::UnknownOperation(other.chars().take(64).collect())),
    };
    let mut refresh = parse_gms_refresh(gms_name, fields)?;
    refresh.transcript = Transcript::None;
    Ok(refresh)
}

/// A publish's `data` as the GMS dialect's fields: strings, numbers and booleans as their
/// text, `userData: {k: v}` as `userData[k]=v`. Other values (arrays, objects) are no field
/// the operations read, and are left out.
fn fields(data: &Map<String, Value>) -> Result<FormFields, Error> {
    let mut out = Vec::with_capacity(data.len());
    for (key, value) in data {
        if key == "userData" {
            match value {
                Value::Object(map) => {
                    for (k, v) in map {
                        let text = scalar(v).ok_or_else(|| Error::WrongType {
                            field: format!("userData.{}", k.chars().take(64).collect::<String>()),
                            detail: "each value must be a string, number or boolean".into(),
                        })?;
                        out.push((format!("userData[{k}]"), text));
                    }
                }
                Value::Null => {}
                _ => {
                    return Err(Error::WrongType {
                        field: "userData".into(),
                        detail: "must be an object".into(),
                    })
                }
            }
        } else if let Some(text) = scalar(value) {
            out.push((key.clone(), text));
        }
    }
    Ok(FormFields(out))
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        // Empty: absent, as an empty form field is.
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields_of(v: Value) -> Result<FormFields, Error> {
        fields(v.as_object().unwrap())
    }

    #[test]
    fn data_becomes_the_gms_fields_and_their_rules_apply() {
        let f = fields_of(json!({
            "operation": "requestChat", "firstName": "Ann", "lastName": "Lee",
            "userData": {"Product": "TOL", "n": 7}, "transcriptPosition": 3, "x": [1]
        }))
        .unwrap();
        let chat = parse_gms_request_chat(&f, "Environment", None).unwrap();
        assert_eq!(chat.nickname, "Ann Lee");
        assert_eq!(chat.user_data.get("n").map(String::as_str), Some("7"));
        assert_eq!(f.transcript().unwrap(), Transcript::From(3));
        assert!(fields_of(json!({"userData": "x"})).is_err());
        assert!(fields_of(json!({"userData": {"k": {"deep": 1}}})).is_err());
    }

    #[test]
    fn only_request_notifications_reads_the_transcript() {
        let f = fields_of(json!({"message": "hi", "transcriptPosition": 4})).unwrap();
        let send = refresh("sendMessage", &f).unwrap();
        assert_eq!(send.transcript, Transcript::None);
        assert!(matches!(send.action, Action::SendMessage { .. }));
        assert_eq!(
            refresh("requestNotifications", &f).unwrap().transcript,
            Transcript::From(4)
        );
        let none = fields_of(json!({})).unwrap();
        assert_eq!(
            refresh("requestNotifications", &none).unwrap().transcript,
            Transcript::From(1)
        );
        assert_eq!(
            refresh("disconnect", &none).unwrap().action,
            Action::Complete
        );
        assert!(matches!(
            refresh("dance", &none),
            Err(Error::UnknownOperation(_))
        ));
        assert!(matches!(
            refresh("sendMessage", &none),
            Err(Error::MissingField("message"))
        ));
    }
}
