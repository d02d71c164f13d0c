//! File transfer inside a chat (the GMS dialect's `file/…` operations): limits, upload,
//! download, delete.
//!
//! Adapters that hold files implement the `ChatBackend` file methods; the others keep the
//! default, [`crate::BackendError::Unsupported`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The rules of file transfer on a chat, and what this chat has used of them (the Chat
/// Server options `upload-max-files`, `upload-max-file-size`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileLimits {
    /// Most files the customer may upload on one chat.
    pub max_files: u32,
    /// Largest single file, in bytes.
    pub max_file_size: u64,
    /// Largest sum of the sizes of the chat's files, in bytes.
    pub max_total_size: u64,
    /// Allowed file name extensions, lower case, without the dot; empty means any.
    pub file_types: Vec<String>,
    /// Uploads are refused until an agent has joined.
    pub need_agent: bool,
    /// How many times each file may be downloaded; 0 means without limit.
    pub download_attempts: u32,
    /// Whether the customer may delete files.
    pub delete_allowed: bool,
    /// Files uploaded so far on this chat (deleted ones included: the count is a quota).
    pub used_files: u32,
    /// Bytes uploaded so far on this chat (deleted ones included).
    pub used_total_size: u64,
    /// Downloads made so far of the chat's files (GMS's `used-download-attempts`).
    #[serde(default)]
    pub used_downloads: u32,
}

/// A file the customer uploads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewFile {
    /// The file name the client gave (no path).
    pub name: String,
    pub content_type: Option<String>,
    /// The customer's description (`userData[file-description]`).
    pub description: Option<String>,
    pub bytes: Arc<[u8]>,
}

/// A stored file, as downloaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileContent {
    pub name: String,
    pub content_type: Option<String>,
    pub bytes: Arc<[u8]>,
}

/// Why a file operation was refused by the chat's rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileRefusal {
    #[error("the chat already has its most files ({0})")]
    TooMany(u32),
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the chat's files would exceed {0} bytes in total")]
    TotalTooLarge(u64),
    #[error("files of type `{0}` are not allowed")]
    TypeNotAllowed(String),
    #[error("files can be uploaded once an agent has joined")]
    NeedAgent,
    #[error("no such file in this chat")]
    UnknownFile,
    #[error("the file may not be downloaded again")]
    DownloadsExhausted,
    #[error("files may not be deleted in this chat")]
    DeleteNotAllowed,
    /// The instance holds as many file bytes as its budget allows (all chats together);
    /// retryable: room comes back as chats end.
    #[error("the chat server holds its most file bytes ({0} in all); retry later")]
    NoRoom(u64),
}
