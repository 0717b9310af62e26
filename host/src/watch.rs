//! Watching a directory for changed files (the `notify` crate, debounced),
//! for hot reload of plugins and workflows. The watcher only reports which
//! paths changed; what to do with them is the caller's business.

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a path must be quiet before its change is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Stops watching when dropped.
pub struct DirectoryWatcher {
    _debouncer: Debouncer<RecommendedWatcher>,
}

/// Watches `dir` (not recursively); each message is a batch of changed paths.
pub fn watch(
    dir: &Path,
) -> notify_debouncer_mini::notify::Result<(DirectoryWatcher, mpsc::UnboundedReceiver<Vec<PathBuf>>)> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            let paths: Vec<PathBuf> = events.into_iter().map(|event| event.path).collect();
            let _ = sender.send(paths);
        }
        Err(error) => tracing::warn!("watching failed: {error}"),
    })?;
    debouncer.watcher().watch(dir, RecursiveMode::NonRecursive)?;
    Ok((DirectoryWatcher { _debouncer: debouncer }, receiver))
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
