//! Watching a directory for changed files (the `notify` crate), for hot
//! reload of plugins and workflows. Only changes to a file's content or name
//! count: creation, writes, renames and removal. Opening, reading, closing
//! and metadata changes do not, so that reading a watched file (loading a
//! plugin it just reported) never reports it again, and an idle server
//! receives nothing. Changes are debounced: a batch is reported once the
//! directory has been quiet for [`DEBOUNCE`]. The watcher only reports which
//! paths changed; what to do with them is the caller's business.

use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a directory must be quiet before its changes are reported.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Stops watching when dropped.
pub struct DirectoryWatcher {
    _watcher: RecommendedWatcher,
}

/// Whether an event changes a file's content or name.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Name(_) | ModifyKind::Any) => true,
        EventKind::Modify(ModifyKind::Metadata(_) | ModifyKind::Other) => false,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Watches `dir` (not recursively); each message is a batch of changed paths.
pub fn watch(dir: &Path) -> notify::Result<(DirectoryWatcher, mpsc::UnboundedReceiver<Vec<PathBuf>>)> {
    let (raw_sender, raw) = mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| match result {
        Ok(event) if changes_content(&event.kind) => {
            for path in event.paths {
                let _ = raw_sender.send(path);
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!("watching failed: {error}"),
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(debounce(raw, sender));
    Ok((DirectoryWatcher { _watcher: watcher }, receiver))
}

/// Collects paths until none arrived for [`DEBOUNCE`], then sends them as
/// one batch. Ends when the watcher is dropped.
async fn debounce(mut raw: mpsc::UnboundedReceiver<PathBuf>, batches: mpsc::UnboundedSender<Vec<PathBuf>>) {
    while let Some(first) = raw.recv().await {
        let mut batch = vec![first];
        loop {
            match tokio::time::timeout(DEBOUNCE, raw.recv()).await {
                Ok(Some(path)) => batch.push(path),
                Ok(None) => break,
                Err(_quiet) => break,
            }
        }
        batch.sort();
        batch.dedup();
        if batches.send(batch).is_err() {
            return;
        }
    }
}

/// The stems of the changed files with extension `extensions`, deduplicated.
pub fn changed_stems(paths: &[PathBuf], extensions: &[&str]) -> Vec<String> {
    let mut stems: Vec<String> = paths
        .iter()
        .filter(|path| path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e)))
        .filter_map(|path| path.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .filter(|stem| !stem.starts_with('.'))
        .collect();
    stems.sort();
    stems.dedup();
    stems
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, RenameMode};

    #[test]
    fn only_content_and_name_changes_count() {
        assert!(changes_content(&EventKind::Create(CreateKind::File)));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Data(DataChange::Content))));
        assert!(changes_content(&EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(changes_content(&EventKind::Remove(notify::event::RemoveKind::File)));
        assert!(!changes_content(&EventKind::Access(AccessKind::Open(AccessMode::Read))));
        assert!(!changes_content(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(!changes_content(&EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime))));
    }

    #[tokio::test]
    async fn reading_a_watched_file_reports_nothing_and_writing_it_reports_it_once() {
        let dir = std::env::temp_dir().join(format!("stepwise-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(&file, "x").unwrap();
        let (_watcher, mut batches) = watch(&dir).unwrap();
        for _ in 0..20 {
            std::fs::read(&file).unwrap();
        }
        std::fs::write(&file, "y").unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(10), batches.recv()).await.unwrap().unwrap();
        assert_eq!(batch, vec![file.clone()]);
        // The reads before the write and the write itself made one batch; reads now make none.
        for _ in 0..20 {
            std::fs::read(&file).unwrap();
        }
        std::fs::write(dir.join("marker.toml"), "m").unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(10), batches.recv()).await.unwrap().unwrap();
        assert_eq!(batch, vec![dir.join("marker.toml")], "the reads were not reported");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
