//! The content hash of a plugin file, remembered by the file's identity on
//! disk (device, inode, size, modification and change times) as git's index
//! does, so that loading an unchanged plugin neither reads nor hashes it
//! again (hashing a 1.7 MB JavaScript component is most of its cached load).
//!
//! Why a matching identity means the same bytes: every write to a file, and
//! every rename onto its path, sets its change time to the kernel's clock,
//! which nobody can set back. A record is made only for a file whose change
//! time is older than [`SETTLED`] when it is read, and only if the file's
//! identity did not move while it was read and hashed; a later write then
//! has a later change time, whatever the clock's granularity. The manifest
//! (part of the content hash) is compared as text.
//!
//! Records live in the code cache (`fingerprints/<hash of the path>.json`),
//! trusted like the compiled code next to them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How old a file's last change must be before its hash is remembered.
pub(super) const SETTLED: Duration = Duration::from_secs(2);

/// A file's identity on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl FileIdentity {
    pub(super) fn of(metadata: &Metadata) -> Self {
        let ns = |seconds: i64, nanos: i64| i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            changed_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    /// Its size in bytes.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// Whether its last change is at least [`SETTLED`] older than `now`.
    fn settled_at(&self, now: SystemTime) -> bool {
        let now_ns = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as i128);
        self.changed_ns <= now_ns - SETTLED.as_nanos() as i128
    }
}

/// What is remembered of one plugin file.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    identity: FileIdentity,
    manifest: Option<String>,
    hash: String,
}

/// The fingerprints of one code cache.
pub(super) struct Fingerprints {
    dir: PathBuf,
}

impl Fingerprints {
    pub(super) fn new(cache_dir: &Path) -> Self {
        Self { dir: cache_dir.join("fingerprints") }
    }

    fn record_path(&self, file: &Path) -> PathBuf {
        let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
        let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    /// The content hash of `file` with `manifest`, and its identity, if the
    /// file is exactly as when its hash was remembered.
    pub(super) fn remembered(&self, file: &Path, manifest: Option<&str>) -> Option<(String, FileIdentity)> {
        let identity = FileIdentity::of(&std::fs::metadata(file).ok()?);
        let text = std::fs::read(self.record_path(file)).ok()?;
        let record: Record = serde_json::from_slice(&text).ok()?;
        (record.identity == identity && record.manifest.as_deref() == manifest).then_some((record.hash, identity))
    }

    /// Remembers `hash` for `file` with `manifest`, whose identity was
    /// `before` when it was read: only if the file has not changed since and
    /// had settled (see the module's documentation). A failure to write is
    /// not an error: the next load hashes the file again.
    pub(super) fn remember(&self, file: &Path, before: &FileIdentity, manifest: Option<&str>, hash: &str) {
        self.remember_at(file, before, manifest, hash, SystemTime::now())
    }

    fn remember_at(&self, file: &Path, before: &FileIdentity, manifest: Option<&str>, hash: &str, now: SystemTime) {
        let Ok(after) = std::fs::metadata(file).map(|metadata| FileIdentity::of(&metadata)) else { return };
        if after != *before || !after.settled_at(now) {
            return;
        }
        let record = Record { identity: after, manifest: manifest.map(str::to_string), hash: hash.to_string() };
        let path = self.record_path(file);
        if let Ok(json) = serde_json::to_vec(&record) {
            if let Err(error) = super::cache::write_atomically(&path, &json) {
                tracing::debug!(path = %path.display(), "cannot remember a plugin's hash: {error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stepwise-fingerprints-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn identity(file: &Path) -> FileIdentity {
        FileIdentity::of(&std::fs::metadata(file).unwrap())
    }

    /// As if remembered well after the file's last change.
    fn remember_settled(prints: &Fingerprints, file: &Path, manifest: Option<&str>, hash: &str) {
        let later = SystemTime::now() + SETTLED * 2;
        prints.remember_at(file, &identity(file), manifest, hash, later);
    }

    #[test]
    fn an_unchanged_file_is_remembered_with_its_manifest() {
        let dir = scratch("unchanged");
        let (prints, file) = (Fingerprints::new(&dir.join("cache")), dir.join("p.wasm"));
        std::fs::write(&file, b"component").unwrap();
        remember_settled(&prints, &file, Some("[limits]"), "h1");
        assert_eq!(prints.remembered(&file, Some("[limits]")).map(|(hash, _)| hash), Some("h1".into()));
        assert_eq!(prints.remembered(&file, None), None, "another manifest is another version");
        assert_eq!(prints.remembered(&file, Some("[limits]\n")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_changed_in_place_is_not_recognised_even_with_its_size_and_mtime_kept() {
        let dir = scratch("rewritten");
        let (prints, file) = (Fingerprints::new(&dir.join("cache")), dir.join("p.wasm"));
        std::fs::write(&file, b"version-1").unwrap();
        remember_settled(&prints, &file, None, "h1");
        let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
        // Same length, same modification time set back: the change time moves.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, b"version-2").unwrap();
        std::fs::File::options().write(true).open(&file).unwrap().set_modified(modified).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), modified);
        assert_eq!(prints.remembered(&file, None), None);
        // A file renamed onto the path is another inode (or a later change time).
        std::fs::write(dir.join("next.wasm"), b"version-3").unwrap();
        remember_settled(&prints, &file, None, "h2");
        std::fs::rename(dir.join("next.wasm"), &file).unwrap();
        assert_eq!(prints.remembered(&file, None), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_changed_recently_or_while_read_is_not_remembered() {
        let dir = scratch("recent");
        let (prints, file) = (Fingerprints::new(&dir.join("cache")), dir.join("p.wasm"));
        std::fs::write(&file, b"fresh").unwrap();
        // Changed just now: a write within the clock's granularity could follow unseen.
        prints.remember(&file, &identity(&file), None, "h1");
        assert_eq!(prints.remembered(&file, None), None);
        // Changed between the read and the record.
        let before = identity(&file);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, b"fresher").unwrap();
        prints.remember_at(&file, &before, None, "h1", SystemTime::now() + SETTLED * 2);
        assert_eq!(prints.remembered(&file, None), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
