//! The images of saved conversations, kept by content: the first time an image is used in a
//! turn its bytes are copied to `<sessions dir>/images/<sha256>/<file name>`, and every later
//! turn, `/load`, export and server reads that copy, never the original path again. So a scan
//! replaced at the same path, moved or deleted after the question cannot change what a
//! continued conversation is about.
//!
//! A stored copy is checked against its SHA-256 each time it is used. One that is missing or
//! damaged is restored from the original path only when the file there still has the recorded
//! SHA-256; otherwise the turn is refused with one line naming the image.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::model::preprocess::PreprocessError;
use crate::protocol::ImageRef;

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not a regular file, too large, missing or unreadable (the one rule of
    /// `model::preprocess::read_file`).
    #[error(transparent)]
    Read(#[from] PreprocessError),
    #[error(
        "image {}: the file changed since it was attached (its SHA-256 is not the one shown); attach it again",
        .0.display()
    )]
    Changed(PathBuf),
    #[error(
        "image {} of this conversation is gone: its stored copy is missing or damaged and the file at that path is not the same image; the conversation cannot continue about it (start a new one, or restore the file)",
        .0.display()
    )]
    Lost(PathBuf),
    #[error("cannot store image {} in {}: {source}", image.display(), store.display())]
    Store {
        image: PathBuf,
        store: PathBuf,
        source: std::io::Error,
    },
}

/// The content-addressed store of one sessions directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    /// Copies nothing: a one-shot question without a session reads the files where they are
    /// (still checked against the hash they were shown with).
    transient: bool,
}

impl ImageStore {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            transient: false,
        }
    }

    /// A store that keeps nothing, for questions that are not part of a saved conversation.
    pub fn transient() -> Self {
        Self {
            dir: PathBuf::new(),
            transient: true,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the image at `image.path`: reads it (a regular file, bounded in size), checks it
    /// is the image that was shown (`image.sha256`, when known) and copies it into the store.
    /// Returns the image with its SHA-256 and the path of the stored copy.
    pub fn keep(&self, image: &ImageRef) -> Result<(ImageRef, PathBuf), ImageError> {
        self.keep_bytes(image, false)
    }

    /// [`ImageStore::keep`] for an image new to the conversation, which must also look like an
    /// image huatuo reads (DICOM, PNG, JPEG…, from its first bytes): a file that is not one is
    /// refused before any model is downloaded or loaded.
    pub fn keep_new(&self, image: &ImageRef) -> Result<(ImageRef, PathBuf), ImageError> {
        self.keep_bytes(image, true)
    }

    fn keep_bytes(&self, image: &ImageRef, sniff: bool) -> Result<(ImageRef, PathBuf), ImageError> {
        let bytes = read_image(&image.path)?;
        if sniff {
            crate::model::preprocess::sniff(&image.path, &bytes)?;
        }
        let sha = hex(&Sha256::digest(&bytes));
        if image.sha256.as_ref().is_some_and(|s| *s != sha) {
            return Err(ImageError::Changed(image.path.clone()));
        }
        let stored = if self.transient {
            image.path.clone()
        } else {
            self.write(&image.path, &sha, &bytes)?
        };
        let kept = ImageRef {
            sha256: Some(sha),
            ..image.clone()
        };
        Ok((kept, stored))
    }

    /// The stored copy of an image of the conversation, checked; restored from the original
    /// path when that file still has the recorded SHA-256. An image recorded without a hash
    /// (sessions of older versions that never read it) is kept from its path as it is now.
    pub fn resolve(&self, image: &ImageRef) -> Result<PathBuf, ImageError> {
        let Some(sha) = image.sha256.as_ref().filter(|_| !self.transient) else {
            return self.keep(image).map(|(_, stored)| stored);
        };
        if let Some(stored) = self.find(sha) {
            if read_image(&stored).is_ok_and(|b| hex(&Sha256::digest(&b)) == *sha) {
                return Ok(stored);
            }
            // Damaged: take it out of the way so it is rewritten from the original.
            let _ = std::fs::remove_dir_all(self.dir.join(sha));
        }
        self.keep(image)
            .map(|(_, stored)| stored)
            .map_err(|_| ImageError::Lost(image.path.clone()))
    }

    /// Bytes held by the store.
    pub fn size(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_dir(e.path()).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Removes the stored images whose SHA-256 is in `candidates` but not in `in_use`;
    /// returns the bytes freed.
    pub fn release(&self, candidates: &HashSet<String>, in_use: &HashSet<String>) -> u64 {
        let mut freed = 0;
        for sha in candidates.difference(in_use) {
            if let Some(stored) = self.find(sha) {
                freed += std::fs::metadata(&stored).map(|m| m.len()).unwrap_or(0);
                let _ = std::fs::remove_dir_all(self.dir.join(sha));
            }
        }
        freed
    }

    /// The stored file of `sha`, if there is one.
    fn find(&self, sha: &str) -> Option<PathBuf> {
        if !is_sha256(sha) {
            return None;
        }
        std::fs::read_dir(self.dir.join(sha))
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.is_file() && !is_temporary(p))
    }

    /// Writes `bytes` as `<sha>/<file name of original>` unless already there (atomically:
    /// a temporary file renamed into place).
    fn write(&self, original: &Path, sha: &str, bytes: &[u8]) -> Result<PathBuf, ImageError> {
        if let Some(stored) = self.find(sha) {
            return Ok(stored);
        }
        let folder = self.dir.join(sha);
        let name = original
            .file_name()
            .filter(|n| !n.is_empty())
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "image".into());
        let stored = folder.join(&name);
        let tmp = folder.join(format!(".tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&folder)?;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &stored)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            ImageError::Store {
                image: original.to_path_buf(),
                store: self.dir.clone(),
                source,
            }
        })?;
        Ok(stored)
    }
}

/// Reads an image file by the one rule every reader follows: regular files only (no FIFOs,
/// devices or directories, checked before opening), bounded in size
/// ([`crate::model::preprocess::read_file`]).
pub fn read_image(path: &Path) -> Result<Vec<u8>, ImageError> {
    Ok(crate::model::preprocess::read_file(path)?)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_temporary(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(path: &Path) -> ImageRef {
        ImageRef {
            path: path.to_path_buf(),
            sha256: None,
            ..ImageRef::default()
        }
    }

    #[test]
    fn keeps_by_content_and_survives_the_original() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = ImageStore::new(tmp.path().join("images"));
        let scan = tmp.path().join("scan.png");
        std::fs::write(&scan, b"abc").expect("write");
        let (kept, stored) = store.keep(&image(&scan)).expect("keep");
        // sha256("abc")
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(kept.sha256.as_deref(), Some(sha));
        assert_eq!(stored, store.dir().join(sha).join("scan.png"));
        assert_eq!(store.size(), 3);

        // Replaced at the same path: the stored copy is what the conversation saw.
        std::fs::write(&scan, b"another scan").expect("overwrite");
        assert_eq!(store.resolve(&kept).expect("resolve"), stored);
        std::fs::remove_file(&scan).expect("rm");
        assert_eq!(store.resolve(&kept).expect("resolve"), stored);

        // The same content under another name is stored once.
        let copy = tmp.path().join("copy.png");
        std::fs::write(&copy, b"abc").expect("write");
        assert_eq!(store.keep(&image(&copy)).expect("keep").1, stored);
        assert_eq!(store.size(), 3);
    }

    #[test]
    fn a_changed_file_is_not_the_image_shown() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = ImageStore::new(tmp.path().join("images"));
        let scan = tmp.path().join("scan.png");
        std::fs::write(&scan, b"abc").expect("write");
        let shown = ImageRef {
            path: scan.clone(),
            sha256: Some("0".repeat(64)),
            ..ImageRef::default()
        };
        let err = store.keep(&shown).expect_err("changed");
        assert!(matches!(err, ImageError::Changed(_)), "{err}");
    }

    #[test]
    fn damaged_copies_are_restored_only_from_the_same_original() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = ImageStore::new(tmp.path().join("images"));
        let scan = tmp.path().join("scan.png");
        std::fs::write(&scan, b"abc").expect("write");
        let (kept, stored) = store.keep(&image(&scan)).expect("keep");
        std::fs::write(&stored, b"tampered").expect("tamper");
        // The original still matches: restored.
        assert_eq!(store.resolve(&kept).expect("restore"), stored);
        assert_eq!(std::fs::read(&stored).expect("read"), b"abc");
        // Tampered again, and the original replaced: refused, naming the image.
        std::fs::write(&stored, b"tampered").expect("tamper");
        std::fs::write(&scan, b"xyz").expect("replace");
        let err = store.resolve(&kept).expect_err("lost");
        assert!(matches!(err, ImageError::Lost(_)), "{err}");
        assert!(err.to_string().contains("scan.png"), "{err}");
    }

    #[test]
    fn only_regular_files_are_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let err = read_image(tmp.path()).expect_err("a directory");
        assert!(
            err.to_string()
                .ends_with("it is a directory (give an image file in it)"),
            "{err}"
        );
        // A FIFO is refused without opening it (which would block forever).
        let fifo = tmp.path().join("fifo.png");
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success())
        {
            let err = read_image(&fifo).expect_err("a FIFO");
            assert!(err.to_string().contains(": not a regular file"), "{err}");
        }
        let err = read_image(Path::new("/dev/zero")).expect_err("a device");
        assert!(err.to_string().contains(": not a regular file"), "{err}");
        let err = read_image(&tmp.path().join("none.png")).expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!("image not found: {}", tmp.path().join("none.png").display())
        );
    }

    #[test]
    fn release_frees_only_unused_images() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = ImageStore::new(tmp.path().join("images"));
        let (a, b) = (tmp.path().join("a.png"), tmp.path().join("b.png"));
        std::fs::write(&a, b"aaaa").expect("write");
        std::fs::write(&b, b"bb").expect("write");
        let sha_a = store.keep(&image(&a)).expect("a").0.sha256.expect("sha");
        let sha_b = store.keep(&image(&b)).expect("b").0.sha256.expect("sha");
        let candidates = HashSet::from([sha_a.clone(), sha_b.clone()]);
        let in_use = HashSet::from([sha_b]);
        assert_eq!(store.release(&candidates, &in_use), 4);
        assert_eq!(store.size(), 2);
    }
}
