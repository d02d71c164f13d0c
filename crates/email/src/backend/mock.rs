//! The mock backend: each e-mail becomes `<interactionId>.eml` in a folder.
//!
//! Owns that folder's writes. The file name comes from the interactionId, so a redelivery after
//! a crash overwrites the earlier file instead of adding a second e-mail. Files are streamed to
//! a temporary name, fsync'd and renamed, so a reader never sees half a message, and no
//! attachment is ever held whole in memory.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::BufWriter;

use super::{compose, DeliveryError, EmailBackend};
use crate::config::MockConfig;
use crate::envelope::Envelope;

/// Writes `.eml` files into a folder.
pub struct MockBackend {
    dir: PathBuf,
    default_mailbox: String,
    /// `From:` of every message (`email.sender`).
    sender: String,
}

impl MockBackend {
    pub fn new(
        config: &MockConfig,
        spool_dir: &Path,
        sender: &str,
    ) -> Result<Self, super::StartError> {
        let dir = config
            .dir
            .clone()
            .unwrap_or_else(|| spool_dir.join("mock-outbox"));
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|error| super::StartError::Folder {
                key: "email.backend.mock.dir",
                path: dir.clone(),
                error,
            })?;
        Ok(MockBackend {
            dir,
            default_mailbox: config.default_mailbox.clone(),
            sender: sender.to_owned(),
        })
    }
}

#[async_trait]
impl EmailBackend for MockBackend {
    fn kind(&self) -> &'static str {
        "mock"
    }

    async fn deliver(&self, email: &Envelope, dir: &Path) -> Result<(), DeliveryError> {
        let id = &email.interaction_id;
        let tmp = self.dir.join(format!(".{id}.eml.tmp"));
        let target = self.dir.join(format!("{id}.eml"));
        let io = |what: &str, e: std::io::Error| {
            DeliveryError::transient(format!("{what} in {}: {e}", self.dir.display()))
        };
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .map_err(|e| io("creating the file", e))?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        compose(email, dir, &self.default_mailbox, &self.sender, &mut out).await?;
        let file = out.into_inner();
        file.sync_all().await.map_err(|e| io("syncing", e))?;
        drop(file);
        tokio::fs::rename(&tmp, &target)
            .await
            .map_err(|e| io("renaming", e))?;
        let folder = self.dir.clone();
        tokio::task::spawn_blocking(move || fs::File::open(folder)?.sync_all())
            .await
            .map_err(|e| DeliveryError::transient(format!("mock writer task: {e}")))?
            .map_err(|e| io("syncing the folder", e))
    }
}
