//! The mock backend: each e-mail becomes `<interactionId>.eml` in a folder.
//!
//! Owns that folder's writes. The file name comes from the interactionId, so a redelivery after
//! a crash overwrites the earlier file instead of adding a second e-mail. Files are written to
//! a temporary name, fsync'd and renamed, so a reader never sees half a message.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{compose, DeliveryError, EmailBackend};
use crate::config::MockConfig;
use crate::envelope::Envelope;

/// Writes `.eml` files into a folder.
pub struct MockBackend {
    dir: PathBuf,
    default_mailbox: String,
}

impl MockBackend {
    pub fn new(config: &MockConfig, spool_dir: &Path) -> Result<Self, String> {
        let dir = config
            .dir
            .clone()
            .unwrap_or_else(|| spool_dir.join("mock-outbox"));
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("email.backend.mock.dir {}: {e}", dir.display()))?;
        Ok(MockBackend {
            dir,
            default_mailbox: config.default_mailbox.clone(),
        })
    }
}

#[async_trait]
impl EmailBackend for MockBackend {
    fn kind(&self) -> &'static str {
        "mock"
    }

    async fn deliver(&self, email: &Envelope, dir: &Path) -> Result<(), DeliveryError> {
        let message = compose(email, dir, &self.default_mailbox).await?;
        let bytes = message.formatted();
        let folder = self.dir.clone();
        let id = email.interaction_id.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let tmp = folder.join(format!(".{id}.eml.tmp"));
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, folder.join(format!("{id}.eml")))?;
            fs::File::open(&folder)?.sync_all()
        })
        .await
        .map_err(|e| DeliveryError::transient(format!("mock writer task: {e}")))?
        .map_err(|e| DeliveryError::transient(format!("writing to {}: {e}", self.dir.display())))
    }
}
