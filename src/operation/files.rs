//! File transfer on a chat (GMS dialect `file/…`): the same checks as every chat
//! operation (`run::open_chat`), then the adapter's file call under the request deadline.

use std::sync::Arc;

use backend_api::{FileContent, FileLimits, NewFile};

use super::run::open_chat;
use super::token::stream_token;
use super::{Chats, ClientCredentials};
use crate::error::Error;

/// The alias that served a file operation, and its outcome.
pub struct Served<T> {
    pub alias: Arc<str>,
    pub value: T,
    /// Opens the chat's event stream (`operation::token`).
    pub stream_token: String,
}

impl<T> Served<T> {
    fn new(
        gw: &Chats,
        chat_id: &str,
        creds: &ClientCredentials,
        alias: &Arc<str>,
        value: T,
    ) -> Self {
        let creds = ClientCredentials {
            alias: alias.to_string(),
            ..creds.clone()
        };
        Served {
            alias: Arc::clone(alias),
            value,
            stream_token: stream_token(gw, chat_id, &creds),
        }
    }
}

pub async fn file_limits(
    gw: &Chats,
    chat_id: &str,
    creds: &ClientCredentials,
) -> Result<Served<FileLimits>, Error> {
    let (instance, chat) = open_chat(gw, chat_id, creds).await?;
    let value = gw.deadline(instance.backend.file_limits(&chat)).await?;
    Ok(Served::new(gw, chat_id, creds, &instance.alias, value))
}

/// Returns the new file's id.
pub async fn upload_file(
    gw: &Chats,
    chat_id: &str,
    creds: &ClientCredentials,
    file: NewFile,
) -> Result<Served<String>, Error> {
    let (instance, chat) = open_chat(gw, chat_id, creds).await?;
    let value = gw
        .deadline(instance.backend.upload_file(&chat, file))
        .await?;
    Ok(Served::new(gw, chat_id, creds, &instance.alias, value))
}

pub async fn download_file(
    gw: &Chats,
    chat_id: &str,
    creds: &ClientCredentials,
    file_id: &str,
) -> Result<FileContent, Error> {
    let (instance, chat) = open_chat(gw, chat_id, creds).await?;
    gw.deadline(instance.backend.download_file(&chat, file_id))
        .await
}

pub async fn delete_file(
    gw: &Chats,
    chat_id: &str,
    creds: &ClientCredentials,
    file_id: &str,
) -> Result<Served<()>, Error> {
    let (instance, chat) = open_chat(gw, chat_id, creds).await?;
    gw.deadline(instance.backend.delete_file(&chat, file_id))
        .await?;
    Ok(Served::new(gw, chat_id, creds, &instance.alias, ()))
}
