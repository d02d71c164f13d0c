//! Files inside a chat: the rules (like the Chat Server's file-transfer options), and the
//! upload / download / delete rules applied to one [`ChatRecord`].
//!
//! Memory is bounded twice: a chat holds at most `max_total_size` bytes of files (deleted
//! ones are freed but still count against the quota), and the engine holds at most
//! `Behaviour::max_file_bytes_total` for all its chats together (the caller's `reserve`,
//! asked before a file is kept). A chat's files are released when it ends, while its
//! transcript stays readable for the retention.

use std::sync::Arc;

use backend_api::{BackendError, FileContent, FileLimits, FileRefusal, NewFile, UserData};
use serde::{Deserialize, Serialize};

/// File-transfer rules of an instance, like the Chat Server's options. Plain data,
/// validated with the [`crate::Behaviour`] holding it; the gateway reads it as `[mock.files]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileRules {
    /// Most files the customer may upload on one chat (0 turns uploads off).
    pub max_files: u32,
    /// Largest single file, in bytes.
    pub max_file_size: u64,
    /// Largest sum of the chat's uploads, in bytes.
    pub max_total_size: u64,
    /// Allowed extensions, lower case without the dot (read in any case, kept lowercased);
    /// empty allows any.
    #[serde(deserialize_with = "lowercase")]
    pub file_types: Vec<String>,
    /// Refuse uploads until an agent has joined.
    pub need_agent: bool,
    /// Downloads allowed per file; 0 is unlimited.
    pub download_attempts: u32,
    /// Whether the customer may delete files.
    pub delete_allowed: bool,
}

impl Default for FileRules {
    fn default() -> Self {
        FileRules {
            max_files: 5,
            max_file_size: 512 * 1024,
            max_total_size: 1024 * 1024,
            file_types: ["pdf", "txt", "jpg", "jpeg", "png", "gif", "doc", "docx"]
                .map(String::from)
                .to_vec(),
            need_agent: false,
            download_attempts: 0,
            delete_allowed: true,
        }
    }
}

/// Reads `file_types` lowercased, so matching a file's extension needs no case folding.
fn lowercase<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let types = Vec::<String>::deserialize(d)?;
    Ok(types.iter().map(|t| t.to_lowercase()).collect())
}

/// One uploaded file, kept with its chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredFile {
    pub id: String,
    pub name: String,
    pub content_type: Option<String>,
    pub bytes: Arc<[u8]>,
    pub downloads: u32,
}

/// A chat's files and its use of the quota.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChatFiles {
    pub files: Vec<StoredFile>,
    pub uploaded: u32,
    pub uploaded_bytes: u64,
}

impl ChatFiles {
    pub fn limits(&self, rules: &FileRules) -> FileLimits {
        FileLimits {
            max_files: rules.max_files,
            max_file_size: rules.max_file_size,
            max_total_size: rules.max_total_size,
            file_types: rules.file_types.clone(),
            need_agent: rules.need_agent,
            download_attempts: rules.download_attempts,
            delete_allowed: rules.delete_allowed,
            used_files: self.uploaded,
            used_total_size: self.uploaded_bytes,
            used_downloads: self.files.iter().map(|f| f.downloads).sum(),
        }
    }

    /// Checks the rules, then asks `reserve` for room for the file's bytes (the engine's
    /// budget), and only then stores it; returns the event attributes of its `FileUploaded`
    /// event (the first is its id). A refused file is not kept: its bytes go with the request.
    pub fn upload(
        &mut self,
        file: NewFile,
        rules: &FileRules,
        agent_present: bool,
        reserve: impl FnOnce(u64) -> Result<(), BackendError>,
    ) -> Result<(String, UserData), BackendError> {
        if rules.need_agent && !agent_present {
            return Err(FileRefusal::NeedAgent.into());
        }
        let ext = extension(&file.name);
        if !rules.file_types.is_empty() && !rules.file_types.contains(&ext) {
            return Err(FileRefusal::TypeNotAllowed(ext).into());
        }
        let size = file.bytes.len() as u64;
        if size > rules.max_file_size {
            return Err(FileRefusal::TooLarge(rules.max_file_size).into());
        }
        if self.uploaded >= rules.max_files {
            return Err(FileRefusal::TooMany(rules.max_files).into());
        }
        if self.uploaded_bytes + size > rules.max_total_size {
            return Err(FileRefusal::TotalTooLarge(rules.max_total_size).into());
        }
        reserve(size)?;
        self.uploaded += 1;
        self.uploaded_bytes += size;
        let id = format!("F{:04}", self.uploaded);
        let mut attributes = UserData::new();
        attributes.insert("file-id".into(), id.clone());
        attributes.insert("file-name".into(), file.name.clone());
        attributes.insert("file-size".into(), size.to_string());
        if let Some(t) = &file.content_type {
            attributes.insert("file-type".into(), t.clone());
        }
        if let Some(d) = &file.description {
            attributes.insert("file-description".into(), d.clone());
        }
        self.files.push(StoredFile {
            id: id.clone(),
            name: file.name,
            content_type: file.content_type,
            bytes: file.bytes,
            downloads: 0,
        });
        Ok((id, attributes))
    }

    pub fn download(&mut self, id: &str, rules: &FileRules) -> Result<FileContent, BackendError> {
        let file = self
            .files
            .iter_mut()
            .find(|f| f.id == id)
            .ok_or(FileRefusal::UnknownFile)?;
        if rules.download_attempts > 0 && file.downloads >= rules.download_attempts {
            return Err(FileRefusal::DownloadsExhausted.into());
        }
        file.downloads += 1;
        Ok(FileContent {
            name: file.name.clone(),
            content_type: file.content_type.clone(),
            bytes: Arc::clone(&file.bytes),
        })
    }

    /// Bytes of the files held (what the engine's budget counts).
    pub fn held_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes.len() as u64).sum()
    }

    /// Drops every file's bytes (the chat ended). The quota counters stay: they are part of
    /// the chat's history, and an ended chat takes no uploads anyway.
    pub fn release(&mut self) {
        self.files = Vec::new();
    }

    /// Removes the file; returns the attributes of its `FileDeleted` event.
    pub fn delete(&mut self, id: &str, rules: &FileRules) -> Result<UserData, BackendError> {
        if !rules.delete_allowed {
            return Err(FileRefusal::DeleteNotAllowed.into());
        }
        let i = self
            .files
            .iter()
            .position(|f| f.id == id)
            .ok_or(FileRefusal::UnknownFile)?;
        let file = self.files.remove(i);
        let mut attributes = UserData::new();
        attributes.insert("file-id".into(), file.id);
        attributes.insert("file-name".into(), file.name);
        Ok(attributes)
    }
}

/// The extension of a file name, lower case ("" when it has none).
fn extension(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: usize) -> NewFile {
        NewFile {
            name: name.into(),
            content_type: None,
            description: None,
            bytes: Arc::from(vec![7u8; size]),
        }
    }

    impl ChatFiles {
        fn upload_unbounded(
            &mut self,
            file: NewFile,
            rules: &FileRules,
            agent_present: bool,
        ) -> Result<(String, UserData), BackendError> {
            self.upload(file, rules, agent_present, |_| Ok(()))
        }
    }

    #[test]
    fn the_budget_is_asked_last_and_a_refusal_keeps_nothing() {
        let rules = FileRules {
            file_types: Vec::new(),
            ..FileRules::default()
        };
        let mut files = ChatFiles::default();
        let mut asked = Vec::new();
        // The chat's own rules refuse first: the budget is not asked.
        let too_big = files.upload(file("a", 600 * 1024), &rules, true, |n| {
            asked.push(n);
            Ok(())
        });
        assert_eq!(too_big, Err(FileRefusal::TooLarge(512 * 1024).into()));
        assert!(asked.is_empty());
        let full = files.upload(file("a", 10), &rules, true, |n| {
            asked.push(n);
            Err(FileRefusal::NoRoom(5).into())
        });
        assert_eq!(full, Err(FileRefusal::NoRoom(5).into()));
        assert_eq!(asked, [10]);
        assert_eq!(
            files,
            ChatFiles::default(),
            "a refused file leaves no trace"
        );
        files.upload_unbounded(file("a", 10), &rules, true).unwrap();
        files.upload_unbounded(file("b", 20), &rules, true).unwrap();
        assert_eq!(files.held_bytes(), 30);
        files.release();
        assert_eq!(files.held_bytes(), 0);
        assert_eq!(files.limits(&rules).used_files, 2, "the quota remembers");
    }

    #[test]
    fn quota_counts_deleted_files_and_memory_is_freed() {
        let rules = FileRules {
            max_files: 2,
            max_file_size: 10,
            max_total_size: 15,
            file_types: vec!["txt".into()],
            need_agent: true,
            download_attempts: 1,
            delete_allowed: true,
        };
        let mut files = ChatFiles::default();
        let refused = |r: Result<(String, UserData), BackendError>| match r {
            Err(BackendError::File(f)) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(files.upload_unbounded(file("a.txt", 1), &rules, false)),
            FileRefusal::NeedAgent
        );
        assert_eq!(
            refused(files.upload_unbounded(file("a.TXT.exe", 1), &rules, true)),
            FileRefusal::TypeNotAllowed("exe".into())
        );
        assert_eq!(
            refused(files.upload_unbounded(file(".txt", 1), &rules, true)),
            FileRefusal::TypeNotAllowed("".into())
        );
        assert_eq!(
            refused(files.upload_unbounded(file("a.txt", 11), &rules, true)),
            FileRefusal::TooLarge(10)
        );
        let (id, attrs) = files
            .upload_unbounded(file("A.TXT", 10), &rules, true)
            .unwrap();
        assert_eq!(attrs["file-size"], "10");
        assert_eq!(
            refused(files.upload_unbounded(file("b.txt", 6), &rules, true)),
            FileRefusal::TotalTooLarge(15)
        );
        assert_eq!(files.download(&id, &rules).unwrap().bytes.len(), 10);
        assert_eq!(
            files.download(&id, &rules),
            Err(FileRefusal::DownloadsExhausted.into())
        );
        files.delete(&id, &rules).unwrap();
        assert!(files.files.is_empty(), "a deleted file's bytes are freed");
        assert_eq!(
            files.download(&id, &rules),
            Err(FileRefusal::UnknownFile.into())
        );
        // Still counted: 10 of 15 bytes used, one of two files.
        assert_eq!(
            refused(files.upload_unbounded(file("c.txt", 6), &rules, true)),
            FileRefusal::TotalTooLarge(15)
        );
        files
            .upload_unbounded(file("c.txt", 5), &rules, true)
            .unwrap();
        assert_eq!(
            refused(files.upload_unbounded(file("d.txt", 0), &rules, true)),
            FileRefusal::TooMany(2)
        );
        let limits = files.limits(&rules);
        assert_eq!((limits.used_files, limits.used_total_size), (2, 15));
    }
}
