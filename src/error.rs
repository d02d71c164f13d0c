//! The gateway's error type and the table of Web API error codes.
//!
//! Every refusal the gateway makes is one [`Error`] value; its code, statusCode (1 retry /
//! 2 give up), HTTP status and client-facing message are decided here and nowhere else. The
//! edge turns it into the JSON reply (`edge::error`). Internal causes (a backend's own words)
//! go to the log, not to the client. The table is documented in `docs/errors.md`.

use axum::http::StatusCode;
use backend_api::{BackendError, FileRefusal};
use email::IntakeError;

use crate::edge::body::BodyTooSlow;

/// Everything that can refuse a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    #[error("field `{field}` has the wrong type: {detail}")]
    WrongType { field: String, detail: String },
    #[error("field `{field}` is invalid: {reason}")]
    InvalidValue { field: &'static str, reason: String },
    #[error("unknown operationName `{0}`")]
    UnknownOperation(String),
    #[error("unsupported content type `{0}`")]
    UnsupportedMediaType(String),
    /// The same refusal on a GMS route, whose advice names the types GMS routes take.
    #[error("unsupported content type `{0}`")]
    GmsUnsupportedMediaType(String),
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    #[error("invalid credentials for this chat")]
    BadCredentials,
    #[error("unknown alias `{0}`")]
    UnknownAlias(String),
    #[error("no chat server instance can take a new chat now")]
    NoInstance,
    #[error("the chat's instance `{0}` is unavailable and this chat cannot move to another one (its backend has no shared store); retry later")]
    CannotMove(String),
    #[error(
        "the chat's instance `{0}` is unavailable and no other instance can take the chat now"
    )]
    InstanceDown(String),
    #[error("the request took too long")]
    Timeout,
    #[error("the form body could not be read: {0}")]
    MalformedForm(String),
    #[error("unknown GMS service `{0}`")]
    UnknownService(String),
    #[error("a valid API key is required for this service")]
    BadApiKey,
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("too many requests from this client address")]
    RateLimitedClient,
    #[error("too many requests on this chat")]
    RateLimitedChat,
    #[error("too many failed credential checks on this chat")]
    CredentialsThrottled,
    #[error(transparent)]
    BodyTimeout(BodyTooSlow),
    #[error("the request headers are larger than {0} bytes")]
    HeaderTooLarge(usize),
    #[error("too many open connections")]
    TooManyConnections,
    #[error("too many open connections from this client address")]
    TooManyConnectionsFromClient,
    #[error("too many new chats from this client address")]
    TooManyChatStarts,
    #[error("the stream token is invalid, expired or for another chat")]
    BadStreamToken,
    #[error("too many open event streams")]
    TooManyStreams,
    #[error("too many open event streams from this client address")]
    TooManyStreamsFromClient,
    #[error("too many CometD connects are held open")]
    TooManyHeldConnects,
    #[error("too many CometD connects are held open for this client address")]
    TooManyHeldConnectsFromClient,
    #[error("this admin request needs `Authorization: Bearer <admin.token>`")]
    AdminUnauthorized,
    #[error("admin.token is not set: the instance endpoints are off")]
    AdminOff,
    #[error("unknown alias `{0}`")]
    UnknownInstance(String),
    #[error("the body must be {{\"state\": \"ready\" | \"drain\" | \"maint\"}}: {0}")]
    BadAdminState(String),
    #[error("the e-mail spool's dead-letter folder could not be read or moved: {0}")]
    AdminEmailSpool(std::io::Error),
    #[error("origin `{0}` is not allowed")]
    OriginNotAllowed(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("an e-mail must be sent as multipart/form-data with a boundary, not `{0}`")]
    NotMultipart(String),
    /// The same refusal on the GMS e-mail route, which also takes a form without files.
    #[error("an e-mail must be sent as multipart/form-data with a boundary, or as application/x-www-form-urlencoded without files, not `{0}`")]
    GmsNotMultipart(String),
    #[error("the multipart body is malformed: {0}")]
    MalformedMultipart(String),
    #[error(transparent)]
    Email(#[from] IntakeError),
    #[error("too many e-mails from this client address")]
    EmailRateLimitedClient,
    #[error("too many e-mails are being sent through this gateway right now")]
    EmailRateLimitedAll,
}

/// The wire form of an error, decided in one place.
pub struct Wire {
    /// Stable numeric code (docs/errors.md).
    pub code: u16,
    /// Web API statusCode: 1 retry later, 2 stop.
    pub status_code: u8,
    pub http: StatusCode,
    pub advice: Option<&'static str>,
}

impl Error {
    pub fn wire(&self) -> Wire {
        use Error::*;
        let (code, http, advice) = match self {
            MalformedJson(_) => (100, StatusCode::BAD_REQUEST, None),
            NotAnObject => (101, StatusCode::BAD_REQUEST, None),
            MissingField(_) => (102, StatusCode::BAD_REQUEST, None),
            WrongType { .. } => (103, StatusCode::BAD_REQUEST, None),
            InvalidValue { .. } => (104, StatusCode::BAD_REQUEST, None),
            UnknownOperation(_) => (
                105,
                StatusCode::BAD_REQUEST,
                Some("operationName is one of SendMessage, SendStartTypingNotification, SendStopTypingNotification, UpdateUserNickname, SendUrl, UpdateUserData, Complete, GetChat"),
            ),
            UnsupportedMediaType(_) => (
                110,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("send the body as application/json"),
            ),
            GmsUnsupportedMediaType(_) => (
                110,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("send the body as application/x-www-form-urlencoded or multipart/form-data"),
            ),
            BodyTooLarge(_) => (111, StatusCode::PAYLOAD_TOO_LARGE, None),
            NotFound => (120, StatusCode::NOT_FOUND, Some("see the Chat API v2 routes")),
            MethodNotAllowed => (121, StatusCode::METHOD_NOT_ALLOWED, Some("Chat API v2 requests are POST")),
            UnknownTenant(_) => (130, StatusCode::BAD_REQUEST, None),
            BadCredentials => (200, StatusCode::UNAUTHORIZED, Some("send the userId, secureKey and tenantName of the chat's latest reply")),
            AdminUnauthorized => (203, StatusCode::UNAUTHORIZED, None),
            AdminOff => (204, StatusCode::FORBIDDEN, Some("set admin.token to use the instance endpoints")),
            UnknownInstance(_) => (205, StatusCode::NOT_FOUND, Some("see GET /admin/instances")),
            BadAdminState(_) => (206, StatusCode::BAD_REQUEST, None),
            AdminEmailSpool(_) => (207, StatusCode::SERVICE_UNAVAILABLE, Some("see the gateway's log; check the spool folder's permissions and disk")),
            UnknownAlias(_) => (201, StatusCode::BAD_REQUEST, Some("send the alias of the chat's latest reply")),
            Backend(e) => return backend_wire(e),
            NotMultipart(_) => (
                146,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("send the e-mail as multipart/form-data"),
            ),
            GmsNotMultipart(_) => (
                146,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("send the e-mail as multipart/form-data, or without files as application/x-www-form-urlencoded"),
            ),
            MalformedMultipart(_) => (147, StatusCode::BAD_REQUEST, None),
            Email(e) => email_wire(e),
            EmailRateLimitedClient => (162, StatusCode::TOO_MANY_REQUESTS, Some("send the e-mail later")),
            EmailRateLimitedAll => (163, StatusCode::TOO_MANY_REQUESTS, Some("send the e-mail later")),
            NoInstance => (300, StatusCode::SERVICE_UNAVAILABLE, Some("retry later")),
            CannotMove(_) => (600, StatusCode::SERVICE_UNAVAILABLE, Some("retry later: the chat continues when its instance is back")),
            InstanceDown(_) => (601, StatusCode::SERVICE_UNAVAILABLE, Some("retry the same request later")),
            // The deadline may pass with a backend request in flight (a SendMessage that may
            // have arrived): never a status HTTP stacks resend by themselves (edge::error).
            Timeout => (303, StatusCode::INTERNAL_SERVER_ERROR, Some("retry later")),
            MalformedForm(_) => (500, StatusCode::BAD_REQUEST, Some("send application/x-www-form-urlencoded or multipart/form-data")),
            UnknownService(_) => (501, StatusCode::NOT_FOUND, Some("the service name is one of gms.services")),
            BadApiKey => (502, StatusCode::UNAUTHORIZED, Some("send the service's key in the apikey or x-api-key header")),
            NotReady(_) => (305, StatusCode::SERVICE_UNAVAILABLE, Some("retry later")),
            RateLimitedClient => (400, StatusCode::TOO_MANY_REQUESTS, Some("slow down and retry later")),
            RateLimitedChat => (401, StatusCode::TOO_MANY_REQUESTS, Some("poll this chat less often")),
            CredentialsThrottled => (402, StatusCode::TOO_MANY_REQUESTS, Some("retry later with the credentials of the chat's latest reply")),
            BodyTimeout(_) => (412, StatusCode::REQUEST_TIMEOUT, Some("send the whole body at once")),
            TooManyConnectionsFromClient => (413, StatusCode::TOO_MANY_REQUESTS, Some("close idle connections and retry later")),
            TooManyChatStarts => (414, StatusCode::TOO_MANY_REQUESTS, Some("retry later; chats already started go on")),
            TooManyStreams => (415, StatusCode::SERVICE_UNAVAILABLE, Some("retry later, or poll Get Messages meanwhile")),
            TooManyStreamsFromClient => (416, StatusCode::TOO_MANY_REQUESTS, Some("close other event streams from this address, or poll Get Messages")),
            BadStreamToken => (240, StatusCode::UNAUTHORIZED, Some("open the stream with the streamToken of the chat's latest reply")),
            TooManyHeldConnects => (430, StatusCode::SERVICE_UNAVAILABLE, Some("connect again after the advised interval")),
            TooManyHeldConnectsFromClient => (431, StatusCode::TOO_MANY_REQUESTS, Some("connect again after the advised interval; close other tabs")),
            HeaderTooLarge(_) => (410, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, None),
            TooManyConnections => (411, StatusCode::SERVICE_UNAVAILABLE, Some("retry later")),
            OriginNotAllowed(_) => (420, StatusCode::FORBIDDEN, Some("the page's origin is not in the tenant's cors_origins")),
        };
        let status_code = if matches!(self, Timeout)
            || http == StatusCode::SERVICE_UNAVAILABLE
            || http == StatusCode::TOO_MANY_REQUESTS
        {
            1
        } else {
            2
        };
        Wire {
            code,
            status_code,
            http,
            advice,
        }
    }

    /// What the client reads. Backend internals stay out of it.
    pub fn client_message(&self) -> String {
        match self {
            Error::Backend(e) => match e {
                BackendError::Unreachable(_) => "the chat server is unreachable".into(),
                BackendError::Interrupted(_) => "the chat server did not answer in time".into(),
                BackendError::Overloaded(_) => "the chat server is busy".into(),
                BackendError::StoreUnavailable(_) => {
                    "the chat server could not save the request; nothing was done".into()
                }
                BackendError::Moved(_) => {
                    "the chat moved and no other chat server can take it now".into()
                }
                BackendError::Rejected { field: Some(f), .. } => {
                    format!("the chat server rejected field `{f}`")
                }
                BackendError::Rejected { .. } => "the chat server rejected the request".into(),
                BackendError::TooLong { field, limit } => {
                    format!("field `{field}` is longer than {limit} bytes")
                }
                BackendError::TranscriptFull(_) => {
                    "the chat's transcript is full: no more messages can be added".into()
                }
                BackendError::TooLarge(_) => {
                    "the request or its reply is too large for the chat server".into()
                }
                // GMS's own words are meant for its clients: passed through as they came.
                BackendError::Remote { message, .. } => message.clone(),
                other => other.to_string(),
            },
            Error::Email(IntakeError::Spool(_)) => {
                "the e-mail could not be stored; retry later".into()
            }
            Error::OriginNotAllowed(_) => "this origin is not allowed".into(),
            other => other.to_string(),
        }
    }
}

/// Codes 140–169: the Email API.
fn email_wire(e: &IntakeError) -> (u16, StatusCode, Option<&'static str>) {
    match e {
        IntakeError::MissingField(_) => (140, StatusCode::BAD_REQUEST, None),
        IntakeError::InvalidField { .. } => (141, StatusCode::BAD_REQUEST, None),
        IntakeError::BadAddress(_) => (142, StatusCode::BAD_REQUEST, None),
        IntakeError::MailboxNotAllowed(_) => (
            148,
            StatusCode::FORBIDDEN,
            Some("leave mailbox out, or name one of the contact center's mailboxes"),
        ),
        IntakeError::TextTooLong { .. } => (
            149,
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("send a shorter text; attach longer documents as files"),
        ),
        IntakeError::Busy => (161, StatusCode::SERVICE_UNAVAILABLE, Some("retry later")),
        IntakeError::TooManyFiles { .. } => {
            (143, StatusCode::BAD_REQUEST, Some("send fewer attachments"))
        }
        IntakeError::TooLarge { .. } => (
            144,
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("send smaller attachments"),
        ),
        IntakeError::ForbiddenType { .. } => (
            145,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("attach only files of the allowed types"),
        ),
        IntakeError::Spool(_) => (
            160,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("retry the same request later"),
        ),
    }
}

fn backend_wire(e: &BackendError) -> Wire {
    let retry = Some("retry the same request later");
    let (code, http, advice) = match e {
        BackendError::Unreachable(_) => (301, StatusCode::SERVICE_UNAVAILABLE, retry),
        // May have arrived: 500, never 503 (edge::error::ReplyStatus says why).
        BackendError::Interrupted(_) => (302, StatusCode::INTERNAL_SERVER_ERROR, retry),
        BackendError::Overloaded(_) => (304, StatusCode::SERVICE_UNAVAILABLE, retry),
        BackendError::StoreUnavailable(_) => (306, StatusCode::SERVICE_UNAVAILABLE, retry),
        BackendError::Moved(_) => (307, StatusCode::SERVICE_UNAVAILABLE, retry),
        BackendError::UnknownChat => (210, StatusCode::NOT_FOUND, Some("start a new chat")),
        BackendError::ChatEnded { .. } => (
            211,
            StatusCode::CONFLICT,
            Some("the chat has ended; start a new chat"),
        ),
        BackendError::BadCredentials => (200, StatusCode::UNAUTHORIZED, None),
        BackendError::Rejected { .. } => (212, StatusCode::BAD_REQUEST, None),
        BackendError::Unsupported(_) => (213, StatusCode::BAD_REQUEST, None),
        BackendError::TooLong { .. } => (
            214,
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("send a shorter text"),
        ),
        BackendError::TranscriptFull(_) => (
            215,
            StatusCode::CONFLICT,
            Some("the chat can still be read and completed; start a new chat to go on"),
        ),
        BackendError::TooLarge(_) => (216, StatusCode::BAD_GATEWAY, None),
        BackendError::Remote {
            code, chat_ended, ..
        } => {
            // GMS's code passes through; 530 when it sent none.
            let code = if *code == 0 { 530 } else { *code };
            // A gateway in front of this one passes on "may have arrived" (302, 303) as it
            // came: never as a status HTTP stacks resend by themselves.
            let http = if e.retryable() && matches!(code, 302 | 303) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else if e.retryable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else if *chat_ended {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            (code, http, None)
        }
        BackendError::File(refusal) => file_wire(refusal),
    };
    Wire {
        code,
        status_code: if e.retryable() { 1 } else { 2 },
        http,
        advice,
    }
}

fn file_wire(refusal: &FileRefusal) -> (u16, StatusCode, Option<&'static str>) {
    match refusal {
        FileRefusal::TooLarge(_) => (510, StatusCode::PAYLOAD_TOO_LARGE, Some("see file/limits")),
        FileRefusal::TooMany(_) => (511, StatusCode::BAD_REQUEST, Some("see file/limits")),
        FileRefusal::TotalTooLarge(_) => (512, StatusCode::BAD_REQUEST, Some("see file/limits")),
        FileRefusal::TypeNotAllowed(_) => (
            513,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("see upload-file-types in file/limits"),
        ),
        FileRefusal::NeedAgent => (
            514,
            StatusCode::CONFLICT,
            Some("upload once an agent has joined"),
        ),
        FileRefusal::UnknownFile => (515, StatusCode::NOT_FOUND, None),
        FileRefusal::DownloadsExhausted => (516, StatusCode::FORBIDDEN, None),
        FileRefusal::DeleteNotAllowed => (517, StatusCode::FORBIDDEN, None),
        FileRefusal::NoRoom(_) => (
            518,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("retry the upload later"),
        ),
    }
}
