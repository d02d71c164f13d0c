//! The durable spool: the only code that creates, moves or deletes e-mails on disk.
//!
//! Layout under `spool_dir` (every folder 0700, every file 0600):
//!
//! ```text
//! tmp/<id>/        a message being received; never read by anyone else
//! tmp/sent-<id>/   a delivered message on its way out
//! queue/<id>/      accepted, awaiting delivery: meta.json, att-0, att-1, ...
//! dead/<id>/       given up on: the same files plus reason.txt
//! ```
//!
//! An operator's requeue moves `dead/<id>/` back into `queue/` by one rename, after
//! `meta.json` was replaced (by a rename) with one that records the requeue time.
//!
//! A message becomes visible in `queue/` by one rename of its complete folder, after every file
//! and the folder itself were fsync'd, and the rename is made durable by an fsync of `queue/`.
//! So a crash at any moment leaves either nothing in `queue/` or the whole message; whatever
//! sits in `tmp/` after a crash is garbage and is removed on start-up. Leaving `queue/` is a
//! rename too, so a message is delivered again after a crash only if the crash fell between the
//! backend's acknowledgement and that rename.
//!
//! It must not decide anything about delivery (when, where, how often): that is the
//! deliverer's.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::envelope::{now_ms, Envelope};
use crate::id::InteractionId;

const TMP: &str = "tmp";
const QUEUE: &str = "queue";
const DEAD: &str = "dead";
const META: &str = "meta.json";
const META_NEW: &str = "meta.json.new";
const REASON: &str = "reason.txt";
const SENT_PREFIX: &str = "sent-";

/// A dead-lettered e-mail, as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: InteractionId,
    /// Why it was given up (`reason.txt`); empty if that file is missing.
    pub reason: String,
    /// When it was accepted (ms since the Unix epoch), if its `meta.json` is readable.
    pub accepted_at_ms: Option<u64>,
}

/// Handle on a spool folder; cheap to clone.
#[derive(Clone, Debug)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Opens (creating when missing) the spool at `root` and throws away whatever a crash left
    /// half-written in `tmp/`. Call once at start-up, before the edge accepts e-mails.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Spool> {
        let root = root.into();
        let spool = Spool { root };
        create_private_dir(&spool.root)?;
        for sub in [TMP, QUEUE, DEAD] {
            create_private_dir(&spool.root.join(sub))?;
        }
        let tmp = spool.root.join(TMP);
        for entry in fs::read_dir(&tmp)? {
            let path = entry?.path();
            tracing::info!(path = %path.display(), "removing an unfinished spool entry left by a previous run");
            remove_any(&path)?;
        }
        sync_dir(&tmp)?;
        Ok(spool)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts receiving a new message under a fresh id. Dropping the draft without committing
    /// removes everything written for it.
    pub async fn draft(&self) -> io::Result<Draft> {
        let id = InteractionId::generate();
        let dir = self.root.join(TMP).join(id.as_str());
        let spool = self.clone();
        let created = dir.clone();
        blocking(move || create_private_dir_new(&created)).await?;
        Ok(Draft {
            spool,
            id,
            dir,
            committed: false,
            next_attachment: 0,
        })
    }

    /// Folder of a queued message: where a backend reads attachment bodies.
    pub fn queued_dir(&self, id: &InteractionId) -> PathBuf {
        self.root.join(QUEUE).join(id.as_str())
    }

    /// Folder of a dead-lettered message.
    pub fn dead_dir(&self, id: &InteractionId) -> PathBuf {
        self.root.join(DEAD).join(id.as_str())
    }

    /// The queued messages, oldest first (recovery order after a restart).
    pub async fn queued(&self) -> io::Result<Vec<InteractionId>> {
        let queue = self.root.join(QUEUE);
        blocking(move || {
            let mut found = Vec::new();
            for entry in fs::read_dir(&queue)? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(id) = name.to_str().and_then(InteractionId::parse) else {
                    tracing::warn!(entry = ?name, "ignoring a foreign entry in the spool queue");
                    continue;
                };
                // Folder mtime is set when the message was written, before the rename.
                let modified = entry.metadata()?.modified()?;
                found.push((modified, id));
            }
            found.sort();
            Ok(found.into_iter().map(|(_, id)| id).collect())
        })
        .await
    }

    /// The dead-lettered messages (for tests and operators' tools).
    pub async fn dead(&self) -> io::Result<Vec<InteractionId>> {
        let dead = self.root.join(DEAD);
        blocking(move || {
            let mut found = Vec::new();
            for entry in fs::read_dir(&dead)? {
                if let Some(id) = entry?.file_name().to_str().and_then(InteractionId::parse) {
                    found.push(id);
                }
            }
            found.sort();
            Ok(found)
        })
        .await
    }

    /// The dead letters with their reasons, oldest first.
    pub async fn dead_letters(&self) -> io::Result<Vec<DeadLetter>> {
        let dead = self.root.join(DEAD);
        let ids = self.dead().await?;
        blocking(move || {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                let dir = dead.join(id.as_str());
                let reason = fs::read_to_string(dir.join(REASON))
                    .map(|r| r.trim_end().to_owned())
                    .unwrap_or_default();
                let accepted_at_ms = fs::read(dir.join(META))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Envelope>(&b).ok())
                    .map(|e| e.accepted_at_ms);
                found.push(DeadLetter {
                    id,
                    reason,
                    accepted_at_ms,
                });
            }
            found.sort_by_key(|d| d.accepted_at_ms);
            Ok(found)
        })
        .await
    }

    /// Moves a dead letter back into the queue, recording the requeue time in its
    /// `meta.json` (the give-up time counts from it) and dropping `reason.txt`. `NotFound`
    /// when it is no longer in `dead/`.
    pub async fn requeue(&self, id: &InteractionId) -> io::Result<()> {
        let from = self.dead_dir(id);
        let to = self.queued_dir(id);
        let queue = self.root.join(QUEUE);
        let dead = self.root.join(DEAD);
        blocking(move || {
            let meta = from.join(META);
            let mut envelope: Envelope = serde_json::from_slice(&fs::read(&meta)?)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            envelope.requeued_at_ms = Some(now_ms());
            let bytes = serde_json::to_vec(&envelope)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            write_private_file(&from.join(META_NEW), &bytes)?;
            fs::rename(from.join(META_NEW), &meta)?;
            remove_any(&from.join(REASON))?;
            sync_dir(&from)?;
            fs::rename(&from, &to)?;
            sync_dir(&queue)?;
            sync_dir(&dead)
        })
        .await
    }

    /// True when nothing is queued and nothing is being received or removed: the state a
    /// refused request must leave behind.
    pub async fn is_idle(&self) -> io::Result<bool> {
        let root = self.root.clone();
        blocking(move || {
            Ok(fs::read_dir(root.join(TMP))?.next().is_none()
                && fs::read_dir(root.join(QUEUE))?.next().is_none())
        })
        .await
    }

    /// Reads a queued message's fields.
    pub async fn load(&self, id: &InteractionId) -> io::Result<Envelope> {
        let path = self.queued_dir(id).join(META);
        let bytes = tokio::fs::read(&path).await?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Takes a delivered message out of the queue. The rename out of `queue/` is the durable
    /// "delivered" mark; deleting the files afterwards is housekeeping that start-up redoes if
    /// a crash interrupts it.
    pub async fn mark_delivered(&self, id: &InteractionId) -> io::Result<()> {
        let from = self.queued_dir(id);
        let to = self
            .root
            .join(TMP)
            .join(format!("{SENT_PREFIX}{}", id.as_str()));
        let queue = self.root.join(QUEUE);
        blocking(move || {
            fs::rename(&from, &to)?;
            sync_dir(&queue)?;
            remove_any(&to)
        })
        .await
    }

    /// Moves a message to `dead/`, with `reason` in `reason.txt` beside it.
    pub async fn dead_letter(&self, id: &InteractionId, reason: &str) -> io::Result<()> {
        let from = self.queued_dir(id);
        let to = self.dead_dir(id);
        let queue = self.root.join(QUEUE);
        let dead = self.root.join(DEAD);
        let reason = format!("{reason}\n");
        blocking(move || {
            write_private_file(&from.join(REASON), reason.as_bytes())?;
            sync_dir(&from)?;
            fs::rename(&from, &to)?;
            sync_dir(&dead)?;
            sync_dir(&queue)
        })
        .await
    }
}

/// A message being received: its folder in `tmp/`, removed on drop unless committed.
#[derive(Debug)]
pub struct Draft {
    spool: Spool,
    id: InteractionId,
    dir: PathBuf,
    committed: bool,
    next_attachment: usize,
}

impl Draft {
    pub fn id(&self) -> &InteractionId {
        &self.id
    }

    /// Creates the file for the next attachment's body; returns its name within the message
    /// folder and the open file.
    pub async fn create_attachment(&mut self) -> io::Result<(String, tokio::fs::File)> {
        let name = format!("att-{}", self.next_attachment);
        self.next_attachment += 1;
        let path = self.dir.join(&name);
        let file = blocking(move || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
        })
        .await?;
        Ok((name, tokio::fs::File::from_std(file)))
    }

    /// Makes the message durable and visible to the deliverer. Every attachment file must
    /// already be fsync'd by its writer; this writes `meta.json`, fsyncs it and the folder,
    /// renames the folder into `queue/` and fsyncs `queue/`. When it returns `Ok` the message
    /// survives a crash.
    pub async fn commit(mut self, envelope: &Envelope) -> io::Result<InteractionId> {
        let meta = serde_json::to_vec(envelope)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let dir = self.dir.clone();
        let target = self.spool.queued_dir(&self.id);
        let queue = self.spool.root.join(QUEUE);
        let tmp = self.spool.root.join(TMP);
        blocking(move || {
            write_private_file(&dir.join(META), &meta)?;
            sync_dir(&dir)?;
            fs::rename(&dir, &target)?;
            sync_dir(&queue)?;
            sync_dir(&tmp)
        })
        .await?;
        self.committed = true;
        Ok(self.id.clone())
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Synchronous on purpose: a refused request's files must be gone before its error
        // reply leaves, and a draft holds at most `max_size` bytes.
        if let Err(e) = remove_any(&self.dir) {
            tracing::warn!(id = %self.id, error = %e, "could not remove a refused e-mail's spool folder; start-up will");
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("spool task failed: {e}")))?
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    // An existing folder keeps its mode through `create`; spool content is the customers'.
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

fn create_private_dir_new(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(path)
}

fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the entries of a folder (creations, renames, removals) durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn remove_any(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn envelope(id: &InteractionId) -> Envelope {
        Envelope::sample(&id.to_string(), "ann@shop.example")
    }

    #[tokio::test]
    async fn dropped_draft_leaves_nothing_and_commit_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("s")).unwrap();
        {
            let mut draft = spool.draft().await.unwrap();
            let (_, mut f) = draft.create_attachment().await.unwrap();
            f.write_all(b"half").await.unwrap();
        }
        assert!(spool.is_idle().await.unwrap());

        let mut draft = spool.draft().await.unwrap();
        let (_, mut f) = draft.create_attachment().await.unwrap();
        f.write_all(b"body").await.unwrap();
        f.sync_all().await.unwrap();
        let id = draft.id().clone();
        draft.commit(&envelope(&id)).await.unwrap();
        assert_eq!(spool.queued().await.unwrap(), vec![id.clone()]);
        let qdir = spool.queued_dir(&id);
        for name in ["meta.json", "att-0"] {
            let mode = fs::metadata(qdir.join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        assert_eq!(
            fs::metadata(&qdir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(spool.load(&id).await.unwrap(), envelope(&id));

        spool.dead_letter(&id, "no luck").await.unwrap();
        assert!(spool.queued().await.unwrap().is_empty());
        assert_eq!(spool.dead().await.unwrap(), vec![id.clone()]);
        let reason = fs::read_to_string(spool.dead_dir(&id).join("reason.txt")).unwrap();
        assert_eq!(reason, "no luck\n");
        let listed = spool.dead_letters().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].id.clone(), listed[0].reason.as_str()),
            (id.clone(), "no luck")
        );

        spool.requeue(&id).await.unwrap();
        assert!(spool.dead().await.unwrap().is_empty());
        assert_eq!(spool.queued().await.unwrap(), vec![id.clone()]);
        assert!(!spool.queued_dir(&id).join("reason.txt").exists());
        let requeued = spool.load(&id).await.unwrap();
        assert!(requeued.requeued_at_ms.is_some());
        assert_eq!(requeued.tried_since_ms(), requeued.requeued_at_ms.unwrap());
        let mode = fs::metadata(spool.queued_dir(&id).join("meta.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let gone = spool.requeue(&id).await.unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn open_clears_leftovers_of_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        let spool = Spool::open(&root).unwrap();
        let draft = spool.draft().await.unwrap();
        std::mem::forget(draft); // as if the process died mid-upload
        assert!(!spool.is_idle().await.unwrap());
        let spool = Spool::open(&root).unwrap();
        assert!(spool.is_idle().await.unwrap());
    }
}
