//! The GMS Chat API v2 dialect: `/genesys/2/chat/{serviceName}/…`, form-encoded or
//! multipart bodies, GMS reply shapes and event names.
//!
//! Owns the GMS routes, the service name → tenant mapping and its optional API key check
//! ([`Services`]), reading its bodies (`body`), turning their fields into operations
//! (`parse`) and the GMS reply shape (`wire`). Runs the same operations as the Web API
//! dialect (`operation`), so a chat started in one dialect carries on in the other. Chat
//! handlers take [`Chats`] and [`Services`], the e-mail handler the e-mail intake's state
//! and [`Services`]. Knows nothing about backends.

pub(crate) mod body;
mod config;
pub mod parse;
pub(crate) mod wire;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use subtle::ConstantTimeEq;

use self::body::GmsBody;
pub use self::config::{GmsConfig, GmsServiceConfig};
use self::parse::{gms_credentials, parse_gms_operation, parse_gms_request_chat};
use self::wire::{limits_user_data, GmsReply, LimitsNotice, LimitsReply};
use super::email::Emails;
use super::error::GmsFailure;
use super::wire::{json, Events};
use crate::error::Error;
use crate::operation::{self, Chats, ClientCredentials};

pub use parse::FormFields;

/// The GMS services the dialect serves (an axum sub-state of the gateway): `[gms]`, fixed
/// at start-up. Cheap to clone.
#[derive(Clone)]
pub struct Services(Arc<GmsConfig>);

impl Services {
    pub fn new(config: GmsConfig) -> Services {
        Services(Arc::new(config))
    }

    /// `gms.max_upload_bytes`: the most a GMS chat request's body may hold.
    pub fn max_upload_bytes(&self) -> usize {
        self.0.max_upload_bytes
    }

    /// The tenant of the configured service a URL names, without the API key check (the
    /// event stream's: its token was minted for a reply that passed it).
    pub fn tenant_of(&self, name: &str) -> Result<&str, Error> {
        self.0
            .service(name)
            .map(|s| s.tenant.as_str())
            .ok_or_else(|| Error::UnknownService(name.chars().take(64).collect()))
    }

    /// The configured service a URL names, after its API key check (the service's key,
    /// else its tenant's).
    pub(crate) fn service(
        &self,
        name: &str,
        headers: &HeaderMap,
    ) -> Result<&GmsServiceConfig, Error> {
        let service = self
            .0
            .service(name)
            .ok_or_else(|| Error::UnknownService(name.chars().take(64).collect()))?;
        if let Some(expected) = self.0.api_key(service) {
            let given = headers
                .get("apikey")
                .or_else(|| headers.get("x-api-key"))
                .map(HeaderValue::as_bytes)
                .unwrap_or(b"");
            if !bool::from(given.ct_eq(expected.as_bytes())) {
                return Err(Error::BadApiKey);
            }
        }
        Ok(service)
    }
}

/// The route that starts a chat (`POST`), for the per-address limit on new chats
/// (`limits`); the same path as its `.route` below, which names it as a literal so the
/// OpenAPI check can read it (`hostile::the_sixth_immediate_chat_start_…` fails if they
/// part).
pub const REQUEST_CHAT_ROUTE: &str = "/genesys/2/chat/{service}";

/// The GMS routes (merged into the public application by `edge::routes`).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Chats: FromRef<S>,
    Emails: FromRef<S>,
    Services: FromRef<S>,
{
    const CHAT: &str = "/genesys/2/chat/{service}/{chat_id}";
    Router::new()
        .route("/genesys/2/chat/{service}", post(request_chat))
        .route(&format!("{CHAT}/{{op}}"), post(chat_operation))
        .route(&format!("{CHAT}/file/limits"), post(file_limits))
        .route(&format!("{CHAT}/file"), post(file_upload))
        .route(
            &format!("{CHAT}/file/{{file_id}}/download"),
            post(file_download).get(file_download),
        )
        .route(
            &format!("{CHAT}/file/{{file_id}}/delete"),
            post(file_delete),
        )
        .route("/genesys/2/email/{service}", post(send_email))
        // GmsBody applies gms.max_upload_bytes itself; e-mail applies email.max_size.
        .layer(DefaultBodyLimit::disable())
}

/// `POST /genesys/2/email/{serviceName}`: an e-mail for the service's tenant, with the Send
/// Email fields less `tenantName` (multipart, or form-encoded without files).
async fn send_email(
    State(services): State<Services>,
    State(emails): State<Emails>,
    Path(name): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, GmsFailure> {
    let tenant = services.service(&name, req.headers())?.tenant.clone();
    let id = emails.accept(req, Some(&tenant)).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"statusCode": 0, "interactionId": id.to_string()}),
    ))
}

/// `POST /genesys/2/chat/{serviceName}`: request chat.
async fn request_chat(
    State(chats): State<Chats>,
    State(services): State<Services>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: GmsBody,
) -> Result<Response, GmsFailure> {
    let svc = services.service(&name, &headers)?;
    let request = parse_gms_request_chat(&body.fields, &svc.tenant, svc.endpoint.as_deref())?;
    let c = operation::request_chat(&chats, request).await?;
    Ok(json(
        StatusCode::OK,
        &GmsReply {
            status_code: 0,
            alias: &c.alias,
            user_id: &c.user_id,
            secure_key: &c.secure_key,
            chat_id: &c.chat_id,
            chat_ended: false,
            next_position: Some(c.next_position),
            messages: Some(Events::gms(&c.messages)),
            user_data: None,
            stream_token: &c.stream_token,
        },
    ))
}

/// `POST /genesys/2/chat/{serviceName}/{chatId}/{operation}`.
async fn chat_operation(
    State(chats): State<Chats>,
    State(services): State<Services>,
    Path((name, chat_id, op)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: GmsBody,
) -> Result<Response, GmsFailure> {
    let on_chat = |e| GmsFailure::on_chat(e, &chat_id);
    let svc = services.service(&name, &headers).map_err(on_chat)?;
    let request = parse_gms_operation(&op, &body.fields, &svc.tenant).map_err(on_chat)?;
    let reply = operation::on_chat(&chats, &chat_id, request)
        .await
        .map_err(on_chat)?;
    let update = &reply.update;
    Ok(json(
        StatusCode::OK,
        &GmsReply {
            status_code: 0,
            alias: &reply.alias,
            user_id: &reply.credentials.user_id,
            secure_key: &reply.credentials.secure_key,
            chat_id: &chat_id,
            chat_ended: update.chat_ended,
            next_position: Some(update.next_position),
            messages: Some(Events::gms(&update.messages)),
            user_data: update.details.as_ref().map(|d| &d.user_data),
            stream_token: &reply.stream_token,
        },
    ))
}

/// The service check and credentials of a file operation.
fn file_request(
    services: &Services,
    name: &str,
    chat_id: &str,
    headers: &HeaderMap,
    body: &GmsBody,
) -> Result<ClientCredentials, GmsFailure> {
    let svc = services
        .service(name, headers)
        .map_err(|e| GmsFailure::on_chat(e, chat_id))?;
    gms_credentials(&body.fields, &svc.tenant).map_err(|e| GmsFailure::on_chat(e, chat_id))
}

/// A file operation's reply: the chat's credentials and `userData`.
pub(crate) fn file_reply<T>(
    served: &operation::Served<T>,
    creds: &ClientCredentials,
    chat_id: &str,
    data: &backend_api::UserData,
) -> Response {
    json(
        StatusCode::OK,
        &GmsReply {
            status_code: 0,
            alias: &served.alias,
            user_id: &creds.user_id,
            secure_key: &creds.secure_key,
            chat_id,
            chat_ended: false,
            next_position: None,
            messages: None,
            user_data: Some(data),
            stream_token: &served.stream_token,
        },
    )
}

async fn file_limits(
    State(chats): State<Chats>,
    State(services): State<Services>,
    Path((name, chat_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: GmsBody,
) -> Result<Response, GmsFailure> {
    let creds = file_request(&services, &name, &chat_id, &headers, &body)?;
    let served = operation::file_limits(&chats, &chat_id, &creds)
        .await
        .map_err(|e| GmsFailure::on_chat(e, &chat_id))?;
    Ok(limits_reply(&served, &creds, &chat_id))
}

/// `file/limits`' reply: the chat's credentials, and the limits both as a `Notice` event
/// (GMS's own form) and as `userData`.
pub(crate) fn limits_reply(
    served: &operation::Served<backend_api::FileLimits>,
    creds: &ClientCredentials,
    chat_id: &str,
) -> Response {
    let data = limits_user_data(&served.value);
    json(
        StatusCode::OK,
        &LimitsReply {
            status_code: 0,
            alias: &served.alias,
            user_id: &creds.user_id,
            secure_key: &creds.secure_key,
            chat_id,
            chat_ended: false,
            messages: [LimitsNotice::new(&data)],
            user_data: &data,
            stream_token: &served.stream_token,
        },
    )
}

async fn file_upload(
    State(chats): State<Chats>,
    State(services): State<Services>,
    Path((name, chat_id)): Path<(String, String)>,
    headers: HeaderMap,
    mut body: GmsBody,
) -> Result<Response, GmsFailure> {
    let creds = file_request(&services, &name, &chat_id, &headers, &body)?;
    let file = body
        .file
        .take()
        .ok_or_else(|| GmsFailure::on_chat(Error::MissingField("file"), &chat_id))?;
    let served = operation::upload_file(&chats, &chat_id, &creds, file)
        .await
        .map_err(|e| GmsFailure::on_chat(e, &chat_id))?;
    let data = [("file-id".to_owned(), served.value.clone())].into();
    Ok(file_reply(&served, &creds, &chat_id, &data))
}

async fn file_download(
    State(chats): State<Chats>,
    State(services): State<Services>,
    Path((name, chat_id, file_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: GmsBody,
) -> Result<Response, GmsFailure> {
    let creds = file_request(&services, &name, &chat_id, &headers, &body)?;
    let file = operation::download_file(&chats, &chat_id, &creds, &file_id)
        .await
        .map_err(|e| GmsFailure::on_chat(e, &chat_id))?;
    Ok(download_reply(file))
}

/// A downloaded file as the reply: its bytes, its type, and a safe attachment name.
pub(crate) fn download_reply(file: backend_api::FileContent) -> Response {
    let content_type = file
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    // Only safe characters in the header: the name is the client's own input.
    let safe: String = file
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._- ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    let mut response = axum::body::Bytes::from(file.bytes.to_vec()).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_DISPOSITION, disposition);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn file_delete(
    State(chats): State<Chats>,
    State(services): State<Services>,
    Path((name, chat_id, file_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: GmsBody,
) -> Result<Response, GmsFailure> {
    let creds = file_request(&services, &name, &chat_id, &headers, &body)?;
    let served = operation::delete_file(&chats, &chat_id, &creds, &file_id)
        .await
        .map_err(|e| GmsFailure::on_chat(e, &chat_id))?;
    let data = [("file-id".to_owned(), file_id)].into();
    Ok(file_reply(&served, &creds, &chat_id, &data))
}
