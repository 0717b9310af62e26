//! A directory of workflow files, kept loaded and (with [`WorkflowDirectory::watch`])
//! hot-reloaded: a changed file is validated first, and a broken one never
//! replaces the good version of its workflow; its error is kept for listings.
//! The files of a directory see each other: a step may run any workflow of
//! the directory as a child (`workflow = "name"`). A workflow whose only
//! problem is a plugin that is not loaded waits for it: every file is
//! checked again when plugins change ([`WorkflowDirectory::follow_plugins`]).

use super::{PluginCatalog, Workflow, WorkflowCatalog, WorkflowDefinition, WorkflowError};
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
    /// The workflow its current content defines, when it parses (valid or not).
    pub defines: Option<String>,
    /// When all that keeps its current content from loading is plugins that
    /// are not loaded: those (it loads once they arrive).
    pub missing_plugins: Vec<String>,
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
    /// The current content of every file that parses, valid or not.
    parsed: BTreeMap<PathBuf, WorkflowDefinition>,
}

/// The workflow files of a directory, parsed (not validated), by workflow
/// name: where `stepwise run` finds the children of the workflow it runs.
pub struct DirectoryCatalog {
    definitions: BTreeMap<String, WorkflowDefinition>,
}

impl DirectoryCatalog {
    /// Reads every `*.toml` of `dir`; files that do not parse are left out
    /// (a step naming their workflow is refused as unknown).
    pub fn scan(dir: &Path) -> std::io::Result<Self> {
        let mut definitions = BTreeMap::new();
        for file in toml_files(dir)? {
            let Ok(text) = std::fs::read_to_string(&file) else { continue };
            if let Ok(definition) = Workflow::parse_toml(&file.display().to_string(), &text) {
                definitions.insert(definition.name.clone(), definition);
            }
        }
        Ok(Self { definitions })
    }
}

impl WorkflowCatalog for DirectoryCatalog {
    fn workflow_definition(&self, name: &str) -> Option<WorkflowDefinition> {
        self.definitions.get(name).cloned()
    }
}

fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    files.sort();
    Ok(files)
}

impl WorkflowDirectory {
    /// Loads every `*.toml` of `dir`, validating against `plugins`.
    pub fn load(dir: &Path, plugins: Arc<dyn PluginCatalog + Send + Sync>) -> std::io::Result<Self> {
        // Absolute, as the watcher reports paths: one file, one entry.
        let dir = std::fs::canonicalize(dir)?;
        let directory = Self { dir, plugins, state: RwLock::new(State::default()) };
        {
            let mut state = directory.state.write().expect("workflow lock poisoned");
            for file in toml_files(&directory.dir)? {
                state.read_file(&file);
            }
            state.revalidate(directory.plugins.as_ref());
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

    /// Whose each version of `name` is (the live one, and every file that
    /// defines it now, loaded or not): `None` for the platform's.
    pub fn owners_of(&self, name: &str) -> Vec<Option<String>> {
        let state = self.state.read().expect("workflow lock poisoned");
        let live = state.workflows.get(name).map(|workflow| workflow.definition().tenant.clone());
        let defined = state.parsed.values().filter(|d| d.name == name).map(|d| d.tenant.clone());
        live.into_iter().chain(defined).collect()
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
    /// recorded and the previous version keeps serving; a deleted one removes
    /// it. Every workflow is then checked again, since children may have changed.
    pub fn reload_file(&self, path: &Path) {
        let mut state = self.state.write().expect("workflow lock poisoned");
        state.read_file(path);
        state.revalidate(self.plugins.as_ref());
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

impl State {
    /// Parses one file into `parsed` (or records why it does not parse, or forgets it if deleted).
    fn read_file(&mut self, path: &Path) {
        if !path.is_file() {
            if let Some(name) = self.files.remove(path).and_then(|status| status.workflow) {
                self.workflows.remove(&name);
            }
            self.parsed.remove(path);
            return;
        }
        let source = path.display().to_string();
        let parsed = std::fs::read_to_string(path)
            .map_err(|error| format!("invalid workflow {source}: cannot read the file: {error}"))
            .and_then(|text| Workflow::parse_toml(&source, &text).map_err(|error| error.to_string()));
        match parsed {
            Ok(definition) => {
                self.files.entry(path.to_path_buf()).or_default().defines = Some(definition.name.clone());
                self.parsed.insert(path.to_path_buf(), definition);
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), "keeping the previous version of the workflow: {error}");
                self.parsed.remove(path);
                let status = self.files.entry(path.to_path_buf()).or_default();
                status.error = Some(error);
                status.defines = None;
                status.missing_plugins.clear();
            }
        }
    }

    /// Validates every parsed file against the plugins and the other files.
    fn revalidate(&mut self, plugins: &(dyn PluginCatalog + Send + Sync)) {
        // One file per workflow name: the one that serves it, else the first.
        let mut holders: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (path, definition) in &self.parsed {
            let serves = self.files.get(path).is_some_and(|status| status.workflow.as_ref() == Some(&definition.name));
            if serves || !holders.contains_key(&definition.name) {
                holders.insert(definition.name.clone(), path.clone());
            }
        }
        let catalog: BTreeMap<String, WorkflowDefinition> =
            holders.iter().map(|(name, path)| (name.clone(), self.parsed[path].clone())).collect();
        for (path, definition) in &self.parsed {
            let source = path.display().to_string();
            let holder = &holders[&definition.name];
            if holder != path {
                let status = self.files.entry(path.clone()).or_default();
                let shown = holder.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
                status.error = Some(format!(
                    "invalid workflow {source}: workflow `{}` is defined by {shown} already",
                    definition.name
                ));
                status.missing_plugins.clear();
                continue;
            }
            match Workflow::from_definition_with(&source, definition.clone(), plugins, &catalog) {
                Ok(workflow) => {
                    let name = workflow.name().to_string();
                    let status = self.files.entry(path.clone()).or_default();
                    if let Some(previous) = status.workflow.replace(name.clone()).filter(|previous| previous != &name) {
                        self.workflows.remove(&previous);
                    }
                    status.error = None;
                    status.missing_plugins.clear();
                    self.workflows.insert(name, Arc::new(workflow));
                }
                Err(error) => {
                    let status = self.files.entry(path.clone()).or_default();
                    if status.error.as_deref() != Some(&error.to_string()) {
                        tracing::warn!(file = %path.display(), "keeping the previous version of the workflow: {error}");
                    }
                    status.error = Some(error.to_string());
                    status.missing_plugins = error.only_missing_plugins().unwrap_or_default();
                }
            }
        }
    }
}

/// What [`WorkflowDirectory::install`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The file the workflow lives in now.
    pub file: PathBuf,
    /// Whether it replaced an earlier version.
    pub replaced: bool,
    /// The plugins it names that are not loaded: it was kept, and goes live
    /// once they arrive (until then an earlier version, if any, serves).
    pub missing_plugins: Vec<String>,
}

impl WorkflowDirectory {
    /// Checks `text` as the workflow `name` (against the plugins and the
    /// other workflows of the directory, as a file of it would be), then
    /// writes it into the directory (`<name>.toml`, or the file that already
    /// defines `name`) and loads it, as one step: the watcher sees either
    /// the old file or the new one. A text whose only problem is plugins
    /// that are not loaded is kept, and loads once they arrive, unless a
    /// version of `name` is live (it is never replaced by one that cannot
    /// run yet). A refused text changes nothing.
    pub fn install(&self, name: &str, text: &str) -> Result<Installed, WorkflowError> {
        let mut state = self.state.write().expect("workflow lock poisoned");
        // The file that serves `name`, else one that defines it and waits (for plugins, or a fix).
        let serving = state.files.iter().find(|(_, status)| status.workflow.as_deref() == Some(name));
        let defining = || state.files.iter().find(|(_, status)| status.defines.as_deref() == Some(name));
        let existing = serving.or_else(defining).map(|(path, _)| path.clone());
        let file = existing.clone().unwrap_or_else(|| self.dir.join(format!("{name}.toml")));
        // Errors name the file, not where the directory is on the server.
        let source = file.file_name().map_or_else(|| format!("{name}.toml"), |f| f.to_string_lossy().into_owned());
        // What the file holds now (or, if that does not parse, what it served).
        let other =
            state.files.get(&file).and_then(|status| status.defines.clone().or_else(|| status.workflow.clone()));
        if let Some(other) = other.filter(|w| w != name) {
            return Err(refused(&source, "name", format!("{source} defines workflow `{other}`: it is not replaced")));
        }
        let definition = Workflow::parse_toml(&source, text)?;
        if definition.name != name {
            return Err(refused(
                &source,
                "name",
                format!("the file defines workflow `{}`, not `{name}`", definition.name),
            ));
        }
        let mut catalog: BTreeMap<String, WorkflowDefinition> =
            state.parsed.iter().filter(|(path, _)| **path != file).map(|(_, d)| (d.name.clone(), d.clone())).collect();
        catalog.insert(name.to_string(), definition.clone());
        let checked = Workflow::from_definition_with(&source, definition, self.plugins.as_ref(), &catalog);
        let missing_plugins = match checked {
            Ok(_) => Vec::new(),
            Err(mut error) => match error.only_missing_plugins() {
                // A live version is never replaced by one that cannot run
                // yet: a typo would take the workflow down (at the next
                // restart, or for good if the plugin never comes).
                Some(_) if state.workflows.contains_key(name) => {
                    error.problems.push(super::Problem::workflow(
                        None,
                        format!("`{name}` is live: load the plugins it names first, then replace it"),
                    ));
                    return Err(error);
                }
                Some(missing) => missing,
                None => return Err(error),
            },
        };
        let partial = self.dir.join(format!(".{name}.toml.partial"));
        let written = std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, &file));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(refused(&source, "file", format!("cannot write it: {error}")));
        }
        state.read_file(&file);
        state.revalidate(self.plugins.as_ref());
        Ok(Installed { file, replaced: existing.is_some(), missing_plugins })
    }

    /// Checks every file again: after plugins arrived or left, a workflow
    /// that named a missing plugin may load now (and one may stop loading;
    /// its previous version keeps serving).
    pub fn revalidate(&self) {
        let mut state = self.state.write().expect("workflow lock poisoned");
        state.revalidate(self.plugins.as_ref());
    }

    /// Checks every file again each time `changes` (the plugin registry's)
    /// moves; stops when the handle drops.
    pub fn follow_plugins(self: &Arc<Self>, mut changes: tokio::sync::watch::Receiver<u64>) -> PluginFollow {
        let directory = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(directory) = directory.upgrade() else { break };
                directory.revalidate();
            }
        });
        PluginFollow { task }
    }
}

/// Re-checks a workflow directory when plugins change; stops when dropped.
pub struct PluginFollow {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginFollow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn refused(source: &str, field: &str, message: String) -> WorkflowError {
    WorkflowError { source_name: source.to_string(), problems: vec![super::Problem::workflow(Some(field), message)] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_file(name: &str, plugin: &str) -> String {
        format!("name = \"{name}\"\n[[steps]]\nid = \"s\"\nplugin = \"{plugin}\"\n")
    }

    /// Two files that define one workflow: the first serves it, the other
    /// is reported (never silently taking over), and an upload of that name
    /// replaces the file that serves it.
    #[test]
    fn a_workflow_defined_by_two_files_is_served_by_one_and_the_other_is_reported() {
        let dir = std::env::temp_dir().join(format!("stepwise-directory-dup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a-dup.toml"), step_file("dup", "echo")).unwrap();
        std::fs::write(dir.join("z-dup.toml"), step_file("dup", "other")).unwrap();
        let plugins: std::collections::BTreeSet<String> = ["echo", "other"].iter().map(|p| p.to_string()).collect();
        let directory = WorkflowDirectory::load(&dir, Arc::new(plugins)).unwrap();
        let served = |directory: &WorkflowDirectory| match &directory.get("dup").unwrap().steps()[0].kind {
            crate::workflow::StepKind::Plugin { name, .. } => name.to_string(),
            _ => unreachable!(),
        };
        assert_eq!(served(&directory), "echo");
        let files = directory.files();
        let loser = &files[&directory.dir().join("z-dup.toml")];
        assert!(loser.error.as_deref().unwrap().contains("`dup` is defined by a-dup.toml already"), "{loser:?}");
        // The loser changing does not take over either.
        std::fs::write(dir.join("z-dup.toml"), step_file("dup", "echo")).unwrap();
        directory.reload_file(&directory.dir().join("z-dup.toml"));
        assert_eq!(served(&directory), "echo");
        let installed = directory.install("dup", &step_file("dup", "other")).unwrap();
        assert_eq!(installed.file.file_name().unwrap(), "a-dup.toml");
        assert_eq!(served(&directory), "other", "the upload replaced the version that serves");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
