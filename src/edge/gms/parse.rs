//! GMS dialect form fields → operations (`NewChat`, `OnChat`). The GMS Chat API v2 names its
//! fields differently from the Web API (`message` for `text`, `userData[key]=value`,
//! `firstName` + `lastName` for a nickname, the tenant from the service name) but asks for
//! the same operations, so both dialects run through `operation`. Knows nothing of HTTP.

use backend_api::{Action, NewChat, Refresh, Transcript, UserData};

use crate::error::Error;
use crate::operation::{ClientCredentials, OnChat};

/// The text fields of a form-encoded or multipart GMS body, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormFields(pub Vec<(String, String)>);

impl FormFields {
    /// The field's value; the first one when repeated, absent when empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    fn required(&self, name: &'static str) -> Result<String, Error> {
        self.owned(name).ok_or(Error::MissingField(name))
    }

    /// Every `userData[key]=value` field (the last wins for a repeated key). A key in
    /// quotes, `userData["Product"]` or `userData['Product']` (as a jQuery widget writes
    /// it), is the key without them: `Product`.
    pub fn user_data(&self) -> UserData {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let key = unquoted(k.strip_prefix("userData[")?.strip_suffix(']')?);
                (!key.is_empty()).then(|| (key.to_owned(), v.clone()))
            })
            .collect()
    }

    pub fn transcript(&self) -> Result<Transcript, Error> {
        match self.get("transcriptPosition") {
            None => Ok(Transcript::None),
            Some(p) => match whole_number(p.trim()) {
                Some(0) => Ok(Transcript::None),
                Some(n) => Ok(Transcript::From(n)),
                None => Err(Error::InvalidValue {
                    field: "transcriptPosition",
                    reason: "must be a whole number".into(),
                }),
            },
        }
    }
}

/// A key without the quotes around it, when it has the same one (`"` or `'`) on both sides.
fn unquoted(key: &str) -> &str {
    ['"', '\'']
        .into_iter()
        .find_map(|q| key.strip_prefix(q)?.strip_suffix(q))
        .unwrap_or(key)
}

/// ASCII digits, any number of them: a position past `u64::MAX` is past the end of any
/// transcript, so it saturates rather than being refused (the document's pattern is digits).
fn whole_number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse::<u64>().unwrap_or(u64::MAX))
}

/// `POST /genesys/2/chat/{service}`: the tenant and endpoint come from the service.
pub fn parse_gms_request_chat(
    fields: &FormFields,
    tenant: &str,
    endpoint: Option<&str>,
) -> Result<NewChat, Error> {
    let first_name = fields.owned("firstName");
    let last_name = fields.owned("lastName");
    // GMS accepts firstName + lastName instead of a nickname.
    let nickname = match fields.owned("nickname") {
        Some(n) => n,
        None => {
            let joined = [first_name.as_deref(), last_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            if joined.trim().is_empty() {
                return Err(Error::MissingField("nickname"));
            }
            joined
        }
    };
    Ok(NewChat {
        tenant_name: tenant.to_owned(),
        nickname,
        first_name,
        last_name,
        email_address: fields.owned("emailAddress"),
        subject: fields.owned("subject"),
        // Empty: the tenant's default endpoint.
        endpoint: endpoint.unwrap_or_default().to_owned(),
        user_data: fields.user_data(),
    })
}

/// The GMS credentials of a request on a chat, with the tenant of its service.
pub fn gms_credentials(fields: &FormFields, tenant: &str) -> Result<ClientCredentials, Error> {
    Ok(ClientCredentials {
        user_id: fields.required("userId")?,
        secure_key: fields.required("secureKey")?,
        alias: fields.required("alias")?,
        tenant_name: tenant.to_owned(),
    })
}

/// `POST /genesys/2/chat/{service}/{chatId}/{op}`. An unknown `op` is an unknown route.
pub fn parse_gms_operation(op: &str, fields: &FormFields, tenant: &str) -> Result<OnChat, Error> {
    let operation = parse_gms_refresh(op, fields)?;
    Ok(OnChat {
        credentials: gms_credentials(fields, tenant)?,
        operation,
    })
}

/// What a GMS operation asks of the chat, from its fields, credentials aside (the CometD
/// dialect carries them in one token): `op` is the GMS operation's URL name (`send`,
/// `refresh`, `startTyping`…). An unknown `op` is [`Error::NotFound`].
pub fn parse_gms_refresh(op: &str, fields: &FormFields) -> Result<Refresh, Error> {
    let action = match op {
        "send" => Action::SendMessage {
            text: fields.required("message")?,
            message_type: fields.owned("messageType"),
        },
        "startTyping" => Action::StartTyping {
            text: fields.owned("message"),
        },
        "stopTyping" => Action::StopTyping {
            text: fields.owned("message"),
        },
        "refresh" => Action::Poll,
        "disconnect" => Action::Complete,
        "pushUrl" => {
            let url = fields.required("pushUrl")?;
            // Absolute `http` / `https` only, as in the Web API dialect.
            backend_api::check_push_url(&url).map_err(|reason| Error::InvalidValue {
                field: "pushUrl",
                reason: reason.into(),
            })?;
            Action::PushUrl { url }
        }
        "updateNickname" => Action::UpdateNickname {
            nickname: fields.required("nickname")?,
        },
        "updateData" => Action::UpdateUserData {
            data: fields.user_data(),
            text: fields.owned("message"),
        },
        "customNotice" => Action::CustomNotice {
            text: fields.required("message")?,
        },
        // Its `transcriptPosition` is the event read up to, not a transcript request.
        "readReceipt" => return read_receipt(fields),
        _ => return Err(Error::NotFound),
    };
    Ok(Refresh {
        // A refresh also reports the chat's user data, as GMS does.
        details: action == Action::Poll,
        action,
        transcript: fields.transcript()?,
    })
}

/// `readReceipt`: the customer has read up to `transcriptPosition` (required). It asks for
/// no events back: a widget acknowledging what it shows is not sent it again.
fn read_receipt(fields: &FormFields) -> Result<Refresh, Error> {
    let position = match fields.transcript()? {
        Transcript::From(n) => n,
        Transcript::None if fields.get("transcriptPosition").is_some() => 0,
        Transcript::None => return Err(Error::MissingField("transcriptPosition")),
    };
    Ok(Refresh {
        action: Action::ReadReceipt { position },
        transcript: Transcript::None,
        details: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(s: &str) -> FormFields {
        FormFields(
            form_urlencoded::parse(s.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    #[test]
    fn request_chat_with_names_and_user_data() {
        let f = form(
            "firstName=First&lastName=Last&subject=s&userData%5BTimeZone%5D=120&userData%5Bk%5D=v",
        );
        let r = parse_gms_request_chat(&f, "Environment", Some("sales")).unwrap();
        assert_eq!(r.nickname, "First Last");
        assert_eq!(r.user_data.get("TimeZone").map(String::as_str), Some("120"));
        assert_eq!(r.user_data.len(), 2);
        assert_eq!(r.endpoint, "sales");
        assert!(matches!(
            parse_gms_request_chat(&form("subject=s"), "E", None),
            Err(Error::MissingField("nickname"))
        ));
    }

    #[test]
    fn quoted_user_data_keys_lose_their_quotes() {
        let f = form(
            "nickname=n&userData%5B%22Product%22%5D=TOL&userData%5B'Region'%5D=EU\
             &userData%5B%22half%5D=1&userData%5B%22%5D=2&userData%5B%22mixed'%5D=3\
             &userData%5B%22%22%5D=4&userData%5B%22%22x%22%22%5D=5",
        );
        let data = parse_gms_request_chat(&f, "E", None).unwrap().user_data;
        let got: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("\"", "2"),
                ("\"half", "1"),
                ("\"mixed'", "3"),
                ("\"x\"", "5"),
                ("Product", "TOL"),
                ("Region", "EU"),
            ]
        );
    }

    #[test]
    fn operations_carry_transcript_positions() {
        let creds = "userId=u&secureKey=k&alias=117";
        let o = parse_gms_operation(
            "send",
            &form(&format!("{creds}&message=hi&transcriptPosition=3")),
            "E",
        )
        .unwrap();
        assert_eq!(o.credentials.tenant_name, "E");
        assert_eq!(
            o.operation,
            Refresh {
                action: Action::SendMessage {
                    text: "hi".into(),
                    message_type: None
                },
                transcript: Transcript::From(3),
                details: false,
            }
        );
        assert!(matches!(
            parse_gms_operation("send", &form(creds), "E"),
            Err(Error::MissingField("message"))
        ));
        assert!(matches!(
            parse_gms_operation(
                "refresh",
                &form(&format!("{creds}&transcriptPosition=x")),
                "E"
            ),
            Err(Error::InvalidValue { .. })
        ));
        let o = parse_gms_operation(
            "readReceipt",
            &form(&format!("{creds}&transcriptPosition=7")),
            "E",
        )
        .unwrap();
        assert_eq!(o.operation.action, Action::ReadReceipt { position: 7 });
        assert_eq!(o.operation.transcript, Transcript::None);
        assert!(matches!(
            parse_gms_operation("readReceipt", &form(creds), "E"),
            Err(Error::MissingField("transcriptPosition"))
        ));
        assert!(matches!(
            parse_gms_operation("dance", &form(creds), "E"),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            parse_gms_operation("refresh", &form("userId=u"), "E"),
            Err(Error::MissingField("secureKey"))
        ));
    }
}
