//! Files a phone sends with an input: kept on disk beside the session's record (so a
//! phone that comes back sees them again in the history), and turned into the content
//! blocks Claude Code's stream-json input takes.
//!
//! A file is stored under a name the worker makes (`a-` and 32 hex digits, the first
//! twelve the time it came), never under the name the phone gave, so no name can reach
//! outside the session's folder. The folder is bounded: past [`KEPT_BYTES`] the oldest
//! files go, and their conversation entries say so when asked.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::protocol::{is_text, Attachment, AttachmentInfo, AttachmentKind};
use crate::store::{atomic_write, StoreError};

/// Bytes of attachments one session keeps; older files are let go past this.
const KEPT_BYTES: u64 = 64 * 1024 * 1024;

/// One session's attachment folder.
#[derive(Debug, Clone)]
pub struct AttachmentStore {
    dir: PathBuf,
}

/// A file as stored: what the conversation shows of it, and what Claude is sent.
#[derive(Debug, Clone)]
pub struct Kept {
    /// For `message.attachments`.
    pub info: AttachmentInfo,
    /// The content block for the CLI.
    pub block: Value,
}

impl AttachmentStore {
    /// The folder of session `session_id` in `sessions_dir`.
    pub fn new(sessions_dir: &Path, session_id: &str) -> Self {
        Self {
            dir: sessions_dir.join(format!("{session_id}.files")),
        }
    }

    /// Writes each file (each atomically, mode 0600), then lets the oldest go if the
    /// folder is over its budget. On an error nothing of this input stays behind: the
    /// input is refused whole, and the phone still has it to send again.
    pub async fn keep(&self, files: Vec<Attachment>) -> Result<Vec<Kept>, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.keep_now(files))
            .await
            .unwrap_or_else(|panicked| std::panic::resume_unwind(panicked.into_panic()))
    }

    fn keep_now(&self, files: Vec<Attachment>) -> Result<Vec<Kept>, StoreError> {
        let mut kept: Vec<Kept> = Vec::with_capacity(files.len());
        for file in files {
            let id = new_id();
            if let Err(err) = atomic_write(&self.dir.join(&id), &file.data.0) {
                for done in &kept {
                    let _ = std::fs::remove_file(self.dir.join(&done.info.id));
                }
                return Err(err);
            }
            kept.push(Kept {
                block: block_for(&file),
                info: AttachmentInfo {
                    id,
                    name: shown_name(&file.name),
                    media_type: file.media_type,
                    size: file.data.0.len() as u64,
                },
            });
        }
        self.trim(KEPT_BYTES);
        Ok(kept)
    }

    /// Deletes the oldest files until the folder holds at most `budget` bytes.
    fn trim(&self, budget: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(String, u64)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                valid_id(&name).then_some((name, e.metadata().ok()?.len()))
            })
            .collect();
        // The id starts with the time it came, in fixed-width hex: by name is by age.
        files.sort();
        let mut total: u64 = files.iter().map(|(_, len)| len).sum();
        for (name, len) in files {
            if total <= budget {
                break;
            }
            match std::fs::remove_file(self.dir.join(&name)) {
                Ok(()) => total -= len,
                Err(err) => tracing::warn!(%err, "could not delete an old attachment"),
            }
        }
    }

    /// The bytes of file `id`, if it is still kept.
    pub async fn read(&self, id: &str) -> Option<Vec<u8>> {
        if !valid_id(id) {
            return None;
        }
        tokio::fs::read(self.dir.join(id)).await.ok()
    }

    /// Lets files go whose conversation entries are gone (the history dropped them).
    pub fn forget(&self, ids: impl IntoIterator<Item = String>) {
        for id in ids.into_iter().filter(|id| valid_id(id)) {
            if let Err(err) = std::fs::remove_file(self.dir.join(&id)) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%err, "could not delete an attachment the history dropped");
                }
            }
        }
    }

    /// Deletes the whole folder (the session is closed).
    pub fn remove_all(&self) {
        if let Err(err) = std::fs::remove_dir_all(&self.dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%err, dir = %self.dir.display(), "could not delete a closed session's attachments");
            }
        }
    }
}

/// `a-`, 12 hex digits of milliseconds since the epoch, 20 random hex digits.
fn new_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("a-{:012x}{}", crate::protocol::now_ms(), &random[..20])
}

/// Whether `id` is one [`new_id`] could have made: the only names ever joined to the
/// folder's path.
fn valid_id(id: &str) -> bool {
    id.len() == 34
        && id.starts_with("a-")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The name to show: its last path part, without control characters, never empty.
fn shown_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    if clean.is_empty() {
        "attachment".to_owned()
    } else {
        clean.to_owned()
    }
}

/// The block Claude Code is given for one file: an image, a PDF document, or the text
/// of a text file under a line that names it.
fn block_for(file: &Attachment) -> Value {
    if is_text(&file.media_type) {
        // The parser checked it is UTF-8.
        let text = String::from_utf8_lossy(&file.data.0);
        return json!({
            "type": "text",
            "text": format!("The attached file `{}`:\n\n{text}", shown_name(&file.name)),
        });
    }
    let kind = match file.kind {
        AttachmentKind::Image => "image",
        AttachmentKind::Document => "document",
    };
    json!({
        "type": kind,
        "source": {
            "type": "base64",
            "media_type": file.media_type,
            "data": STANDARD.encode(&file.data.0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Base64Data;

    fn file(kind: AttachmentKind, media_type: &str, name: &str, data: &[u8]) -> Attachment {
        Attachment {
            kind,
            media_type: media_type.into(),
            data: Base64Data(data.to_vec()),
            name: name.into(),
        }
    }

    fn png(name: &str, data: &[u8]) -> Attachment {
        file(AttachmentKind::Image, "image/png", name, data)
    }

    #[tokio::test]
    async fn a_kept_file_reads_back_under_its_own_id_whatever_name_the_phone_gave() {
        let dir = tempfile::tempdir().unwrap();
        let store = AttachmentStore::new(dir.path(), "s-1");
        let kept = store
            .keep(vec![png("../../../etc/passwd\u{7}", b"\x89PNG")])
            .await
            .unwrap();
        let info = &kept[0].info;
        assert_eq!(info.name, "passwd");
        assert!(valid_id(&info.id), "{}", info.id);
        assert_eq!(info.size, 4);
        assert_eq!(store.read(&info.id).await.unwrap(), b"\x89PNG");
        assert_eq!(
            kept[0].block["source"]["data"],
            STANDARD.encode(b"\x89PNG"),
            "sent to Claude as an image block"
        );
        // Only names the store made are ever looked up.
        for bad in [
            "../s-1.json",
            "a-../../x",
            "",
            "a-0123456789abcdef0123456789abcdeF",
        ] {
            assert_eq!(store.read(bad).await, None, "{bad}");
        }
        store.remove_all();
        assert_eq!(store.read(&info.id).await, None, "gone with the session");
    }

    #[tokio::test]
    async fn text_files_go_to_claude_as_text_and_pdfs_as_documents() {
        let dir = tempfile::tempdir().unwrap();
        let store = AttachmentStore::new(dir.path(), "s-1");
        let kept = store
            .keep(vec![
                file(AttachmentKind::Document, "text/csv", "a.csv", b"x,y\n1,2\n"),
                file(
                    AttachmentKind::Document,
                    "application/pdf",
                    "b.pdf",
                    b"%PDF-1.4",
                ),
            ])
            .await
            .unwrap();
        assert_eq!(kept[0].block["type"], "text");
        assert_eq!(
            kept[0].block["text"],
            "The attached file `a.csv`:\n\nx,y\n1,2\n"
        );
        assert_eq!(kept[1].block["type"], "document");
        assert_eq!(kept[1].block["source"]["media_type"], "application/pdf");
    }

    #[tokio::test]
    async fn past_the_budget_the_oldest_files_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = AttachmentStore::new(dir.path(), "s-1");
        let mut ids = Vec::new();
        for _ in 0..3 {
            let kept = store.keep(vec![png("p.png", &[0; 100])]).await.unwrap();
            ids.push(kept[0].info.id.clone());
            // Ids carry milliseconds: the next one must be younger.
            let now = crate::protocol::now_ms();
            while crate::protocol::now_ms() == now {
                std::thread::yield_now();
            }
        }
        store.trim(250);
        assert_eq!(store.read(&ids[0]).await, None, "the oldest went");
        assert!(store.read(&ids[1]).await.is_some());
        assert!(store.read(&ids[2]).await.is_some());
        store.forget([ids[1].clone()]);
        assert_eq!(store.read(&ids[1]).await, None, "forgotten with its entry");
    }

    #[tokio::test]
    async fn a_folder_that_cannot_be_made_refuses_the_input_and_says_where() {
        let dir = tempfile::tempdir().unwrap();
        // The session's folder cannot be made: a file is in its place.
        std::fs::write(dir.path().join("s-1.files"), b"").unwrap();
        let store = AttachmentStore::new(dir.path(), "s-1");
        let err = store.keep(vec![png("p.png", b"x")]).await.unwrap_err();
        assert!(err.to_string().contains("s-1.files"), "{err}");
    }
}
