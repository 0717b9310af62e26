//! The content hash of a plugin file, remembered by the file's identity on
//! disk (device, inode, size, modification and change times) as git's index
//! does, so that loading an unchanged plugin neither reads nor hashes it
//! again (hashing a 1.7 MB JavaScript component is most of its cached load).
//!
//! Why a matching identity means the same bytes: every write to a file, and
//! every rename onto its path, sets its change time to the kernel's clock,
//! which no program can set back. A record is made only for a file whose
//! change time was older than [`SETTLED`] when it was opened, and only if
//! its identity, through the open file and through its path, did not move
//! while it was read and hashed; a later write then has a later change time,
//! whatever the clock's granularity. Files are looked at through an open
//! file (which network filesystems revalidate on open), and the birth time
//! is part of the identity where the filesystem has one. The manifest (part
//! of the content hash) is compared as text.
//!
//! What this relies on: a plugin directory on a filesystem whose change
//! times follow writes (local Linux filesystems do; some FUSE and network
//! filesystems report the modification time instead), and a clock that is
//! not stepped back by more than [`SETTLED`] between a write and a load.
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
    born_ns: Option<i128>,
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
            born_ns: metadata
                .created()
                .ok()
                .and_then(|born| born.duration_since(UNIX_EPOCH).ok())
                .map(|since| since.as_nanos() as i128),
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
        // The record first: a file loaded for the first time is not opened twice.
        let text = std::fs::read(self.record_path(file)).ok()?;
        let record: Record = serde_json::from_slice(&text).ok()?;
        let identity = FileIdentity::of(&std::fs::File::open(file).ok()?.metadata().ok()?);
        (record.identity == identity && record.manifest.as_deref() == manifest).then_some((record.hash, identity))
    }

    /// Remembers `hash` for `file` with `manifest`, read through `opened`
    /// whose identity was `before` when it was opened at `opened_at`: only
    /// if the file had settled then, and neither the open file nor the path
    /// moved since (see the module's documentation). A failure to write is
    /// not an error: the next load reads and hashes the file again.
    pub(super) fn remember(
        &self,
        file: &Path,
        opened: &std::fs::File,
        (before, opened_at): (&FileIdentity, SystemTime),
        manifest: Option<&str>,
        hash: &str,
    ) {
        let identity = |metadata: std::io::Result<Metadata>| metadata.ok().map(|m| FileIdentity::of(&m));
        let unmoved = identity(opened.metadata()).as_ref() == Some(before)
            && identity(std::fs::metadata(file)).as_ref() == Some(before);
        if !unmoved || !before.settled_at(opened_at) {
            return;
        }
        let record =
            Record { identity: before.clone(), manifest: manifest.map(str::to_string), hash: hash.to_string() };
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

    /// An empty directory, the fingerprints of a cache in it, and the path of a plugin file there.
    fn scratch(name: &str) -> (PathBuf, Fingerprints, PathBuf) {
        let dir = std::env::temp_dir().join(format!("stepwise-fingerprints-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (prints, file) = (Fingerprints::new(&dir.join("cache")), dir.join("p.wasm"));
        (dir, prints, file)
    }

    fn identity(file: &Path) -> FileIdentity {
        FileIdentity::of(&std::fs::metadata(file).unwrap())
    }

    /// As if opened well after the file's last change.
    fn remember_settled(prints: &Fingerprints, file: &Path, manifest: Option<&str>, hash: &str) {
        let opened = std::fs::File::open(file).unwrap();
        let later = SystemTime::now() + SETTLED * 2;
        prints.remember(file, &opened, (&identity(file), later), manifest, hash);
    }

    #[test]
    fn an_unchanged_file_is_remembered_with_its_manifest() {
        let (dir, prints, file) = scratch("unchanged");
        std::fs::write(&file, b"component").unwrap();
        remember_settled(&prints, &file, Some("[limits]"), "h1");
        assert_eq!(prints.remembered(&file, Some("[limits]")).map(|(hash, _)| hash), Some("h1".into()));
        assert_eq!(prints.remembered(&file, None), None, "another manifest is another version");
        assert_eq!(prints.remembered(&file, Some("[limits]\n")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_changed_in_place_is_not_recognised_even_with_its_size_and_mtime_kept() {
        let (dir, prints, file) = scratch("rewritten");
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
        let (dir, prints, file) = scratch("recent");
        std::fs::write(&file, b"fresh").unwrap();
        // Changed just before it was opened: a write within the clock's
        // granularity could follow unseen, however long the read then takes.
        let opened = std::fs::File::open(&file).unwrap();
        prints.remember(&file, &opened, (&identity(&file), SystemTime::now()), None, "h1");
        assert_eq!(prints.remembered(&file, None), None);
        // Changed between the open and the record.
        let before = identity(&file);
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, b"fresher").unwrap();
        prints.remember(&file, &opened, (&before, SystemTime::now() + SETTLED * 2), None, "h1");
        assert_eq!(prints.remembered(&file, None), None);
        // Another file renamed onto the path while the open one was read.
        let opened = std::fs::File::open(&file).unwrap();
        let before = identity(&file);
        std::fs::write(dir.join("other.wasm"), b"other").unwrap();
        std::fs::rename(dir.join("other.wasm"), &file).unwrap();
        prints.remember(&file, &opened, (&before, SystemTime::now() + SETTLED * 2), None, "h1");
        assert_eq!(prints.remembered(&file, None), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
