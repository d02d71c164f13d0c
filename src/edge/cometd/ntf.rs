//! `POST /genesys/2/chat-ntf`: the file operations of a chat started over CometD, which GMS
//! serves beside the CometD channel (form-encoded or multipart: `operation` = `fileGetLimits`
//! | `fileUpload` | `fileDownload` | `fileDelete`, `secureKey` = the CometD chat token,
//! `fileId`, `file`).
//!
//! Owns the mapping of those operations onto `operation::{file_limits, upload_file,
//! download_file, delete_file}`, in the GMS dialect's reply shapes (`gms::wire`, with the
//! chat token as `secureKey`). The token is the only credential: a token that does not open
//! is refused before any backend. It must not keep anything between requests.

use axum::extract::State;
use axum::response::Response;

use crate::edge::error::GmsFailure;
use crate::edge::gms::body::GmsBody;
use crate::edge::gms::{download_reply, file_reply, limits_reply};
use crate::error::Error;
use crate::operation::{self, Chats, ClientCredentials};

/// The operations of `/genesys/2/chat-ntf`.
pub const FILE_OPERATIONS: &[&str] = &["fileGetLimits", "fileUpload", "fileDownload", "fileDelete"];

/// `POST /genesys/2/chat-ntf`.
pub async fn chat_ntf(
    State(chats): State<Chats>,
    mut body: GmsBody,
) -> Result<Response, GmsFailure> {
    let fields = &body.fields;
    let op = fields
        .get("operation")
        .ok_or(Error::MissingField("operation"))?
        .to_owned();
    if !FILE_OPERATIONS.contains(&op.as_str()) {
        return Err(Error::UnknownOperation(op.chars().take(64).collect()).into());
    }
    let token = fields
        .get("secureKey")
        .ok_or(Error::MissingField("secureKey"))?
        .to_owned();
    let (chat_id, creds) = operation::open_chat_token(&chats, &token)?;
    let on_chat = |e| GmsFailure::on_chat(e, &chat_id);
    // The reply names the CometD key, the one the client holds.
    let shown = ClientCredentials {
        secure_key: token.clone(),
        ..creds.clone()
    };
    match op.as_str() {
        "fileGetLimits" => {
            let served = operation::file_limits(&chats, &chat_id, &creds)
                .await
                .map_err(on_chat)?;
            Ok(limits_reply(&served, &shown, &chat_id))
        }
        "fileUpload" => {
            let file = body
                .file
                .take()
                .ok_or_else(|| on_chat(Error::MissingField("file")))?;
            let served = operation::upload_file(&chats, &chat_id, &creds, file)
                .await
                .map_err(on_chat)?;
            let data = [("file-id".to_owned(), served.value.clone())].into();
            Ok(file_reply(&served, &shown, &chat_id, &data))
        }
        "fileDownload" => {
            let file_id = body
                .fields
                .get("fileId")
                .ok_or_else(|| on_chat(Error::MissingField("fileId")))?;
            let file = operation::download_file(&chats, &chat_id, &creds, file_id)
                .await
                .map_err(on_chat)?;
            Ok(download_reply(file))
        }
        _ => {
            let file_id = body
                .fields
                .get("fileId")
                .ok_or_else(|| on_chat(Error::MissingField("fileId")))?
                .to_owned();
            let served = operation::delete_file(&chats, &chat_id, &creds, &file_id)
                .await
                .map_err(on_chat)?;
            let data = [("file-id".to_owned(), file_id)].into();
            Ok(file_reply(&served, &shown, &chat_id, &data))
        }
    }
}
