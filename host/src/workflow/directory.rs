//! A directory of workflow files, kept loaded and (with [`WorkflowDirectory::watch`])
//! hot-reloaded: a changed file is validated first, and a broken one never
//! replaces the good version of its workflow; its error is kept for listings.

use super::{PluginCatalog, Workflow};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What is known about one file of the directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkflowFileStatus {
    /// The workflow the file defines (from its last good version).
    pub workflow: Option<String>,
    /// Why its current content was refused, if it was.
    pub error: Option<String>,
}

/// The workflows of one directory, by name.
pub struct WorkflowDirectory {
    dir: PathBuf,
    plugins: Arc<dyn PluginCatalog + Send + Sync>,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    workflows: BTreeMap<String, Arc<Workflow>>,
    files: BTreeMap<PathBuf, WorkflowFileStatus>,
}

impl WorkflowDirectory {
    /// Loads every `*.toml` of `dir`, validating against `plugins`.
    pub fn load(dir: &Path, plugins: Arc<dyn PluginCatalog + Send + Sync>) -> std::io::Result<Self> {
        let directory = Self { dir: dir.to_path_buf(), plugins, state: RwLock::new(State::default()) };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("toml"))
            .collect();
        files.sort();
        for file in files {
            directory.reload_file(&file);
        }
        Ok(directory)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The workflow called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Workflow>> {
        self.state.read().expect("workflow lock poisoned").workflows.get(name).cloned()
    }

    /// Every workflow, by name.
    pub fn workflows(&self) -> Vec<Arc<Workflow>> {
        self.state.read().expect("workflow lock poisoned").workflows.values().cloned().collect()
    }

    /// Every file's status.
    pub fn files(&self) -> BTreeMap<PathBuf, WorkflowFileStatus> {
        self.state.read().expect("workflow lock poisoned").files.clone()
    }

    /// Re-reads one file: a valid one replaces its workflow; an invalid one is
    /// recorded and the previous version keeps serving; a deleted one removes it.
    pub fn reload_file(&self, path: &Path) {
        let loaded = if path.is_file() { Some(Workflow::load_file(path, self.plugins.as_ref())) } else { None };
        let mut state = self.state.write().expect("workflow lock poisoned");
        let previous = state.files.get(path).and_then(|status| status.workflow.clone());
        match loaded {
            None => {
                if let Some(name) = previous {
                    state.workflows.remove(&name);
                }
                state.files.remove(path);
            }
            Some(Ok(workflow)) => {
                let name = workflow.name().to_string();
                if let Some(previous) = previous.filter(|previous| previous != &name) {
                    state.workflows.remove(&previous);
                }
                state.workflows.insert(name.clone(), Arc::new(workflow));
                state.files.insert(path.to_path_buf(), WorkflowFileStatus { workflow: Some(name), error: None });
            }
            Some(Err(error)) => {
                tracing::warn!(file = %path.display(), "keeping the previous version of the workflow: {error}");
                let status = state.files.entry(path.to_path_buf()).or_default();
                status.error = Some(error.to_string());
            }
        }
    }

    /// Watches the directory and reloads changed files; stops when the handle drops.
    pub fn watch(self: &Arc<Self>) -> Result<WorkflowWatch, String> {
        let (watcher, mut changes) =
            crate::watch::watch(&self.dir).map_err(|e| format!("watching {}: {e}", self.dir.display()))?;
        let directory = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            while let Some(paths) = changes.recv().await {
                let Some(directory) = directory.upgrade() else { break };
                for path in paths {
                    let is_workflow = path.extension().and_then(|e| e.to_str()) == Some("toml");
                    let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
                    if is_workflow && !hidden {
                        directory.reload_file(&path);
                    }
                }
            }
        });
        Ok(WorkflowWatch { _watcher: watcher, task })
    }
}

/// Keeps a workflow directory in step with the disk; stops when dropped.
pub struct WorkflowWatch {
    _watcher: crate::watch::DirectoryWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WorkflowWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
