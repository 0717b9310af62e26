//! Tenants and their hook handlers: which plugins each tenant (a merchant)
//! binds to which hook point of which workflow.
//!
//! A tenant directory holds one file per tenant, `<tenant>.toml`:
//!
//! ```toml
//! [[handlers]]
//! hook = "validate-cart"      # a hook point declared by a workflow ([[hooks]] name)
//! plugin = "cart-limit"       # a plugin of the plugin directory (its manifest grants it)
//! priority = 10               # lower runs first; ties run in plugin-name order
//! workflow = "accept-quote"   # optional: only this workflow's hook (default: every workflow's)
//! ```
//!
//! The engine asks [`TenantBindings::handlers`] when an execution with a
//! tenant starts and pins the answer in the execution's log, so a resumed
//! execution runs the handlers it started with. This module only reads and
//! checks the files; it knows nothing about running them.

use crate::journal::ids::{PluginName, StepId};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use crate::journal::HandlerBinding;

/// A tenant file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    #[serde(default)]
    handlers: Vec<HandlerEntry>,
}

/// One `[[handlers]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlerEntry {
    hook: String,
    plugin: String,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    workflow: Option<String>,
}

/// Whether `name` can name a tenant (`[a-z0-9][a-z0-9_-]*`, at most 64 bytes).
pub fn is_valid_tenant(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Every tenant's handler bindings, from a tenant directory (or none).
#[derive(Default)]
pub struct TenantBindings {
    dir: Option<PathBuf>,
    tenants: RwLock<BTreeMap<String, Vec<HandlerEntry>>>,
    errors: RwLock<BTreeMap<PathBuf, String>>,
}

impl TenantBindings {
    /// No tenant binds anything: every hook is a no-op.
    pub fn none() -> Self {
        Self::default()
    }

    /// Loads every `<tenant>.toml` of `dir`; the first broken file is an error
    /// naming the file, the handler and the field.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let bindings = Self { dir: Some(dir.to_path_buf()), ..Self::default() };
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("reading the tenant directory {}: {e}", dir.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("toml"))
            .collect();
        files.sort();
        for file in files {
            let (tenant, handlers) = read_tenant_file(&file)?;
            bindings.tenants.write().expect("tenant lock poisoned").insert(tenant, handlers);
        }
        Ok(bindings)
    }

    /// The directory the bindings come from, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Re-reads one tenant file: a good one replaces the tenant's bindings, a
    /// broken one is reported and the previous bindings stay, a deleted one
    /// removes the tenant's bindings.
    pub fn reload_file(&self, path: &Path) {
        let Some(tenant) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { return };
        if !path.is_file() {
            self.tenants.write().expect("tenant lock poisoned").remove(&tenant);
            self.errors.write().expect("tenant lock poisoned").remove(path);
            return;
        }
        match read_tenant_file(path) {
            Ok((tenant, handlers)) => {
                self.tenants.write().expect("tenant lock poisoned").insert(tenant, handlers);
                self.errors.write().expect("tenant lock poisoned").remove(path);
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), "keeping the previous bindings of tenant `{tenant}`: {error}");
                self.errors.write().expect("tenant lock poisoned").insert(path.to_path_buf(), error);
            }
        }
    }

    /// Files whose current content was refused, with the reason.
    pub fn errors(&self) -> BTreeMap<PathBuf, String> {
        self.errors.read().expect("tenant lock poisoned").clone()
    }

    /// The handlers `tenant` binds to hook `hook` of workflow `workflow`, in
    /// the order they run: priority, then plugin name.
    pub fn handlers(&self, tenant: &str, workflow: &str, hook: &str) -> Vec<HandlerBinding> {
        let tenants = self.tenants.read().expect("tenant lock poisoned");
        let Some(entries) = tenants.get(tenant) else { return Vec::new() };
        let mut handlers: Vec<HandlerBinding> = entries
            .iter()
            .filter(|entry| entry.hook == hook && entry.workflow.as_deref().is_none_or(|w| w == workflow))
            .map(|entry| HandlerBinding { plugin: PluginName::new(&entry.plugin), priority: entry.priority })
            .collect();
        handlers.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.plugin.cmp(&b.plugin)));
        handlers.dedup_by(|a, b| a.plugin == b.plugin);
        handlers
    }

    /// Watches the tenant directory and reloads changed files; stops when the handle drops.
    pub fn watch(self: &Arc<Self>) -> Result<Option<TenantWatch>, String> {
        let Some(dir) = self.dir.clone() else { return Ok(None) };
        let (watcher, mut changes) =
            crate::watch::watch(&dir).map_err(|e| format!("watching {}: {e}", dir.display()))?;
        let bindings = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            while let Some(paths) = changes.recv().await {
                let Some(bindings) = bindings.upgrade() else { break };
                for stem in crate::watch::changed_stems(&paths, &["toml"]) {
                    bindings.reload_file(&dir.join(format!("{stem}.toml")));
                }
            }
        });
        Ok(Some(TenantWatch { _watcher: watcher, task }))
    }
}

/// Keeps tenant bindings in step with the disk; stops when dropped.
pub struct TenantWatch {
    _watcher: crate::watch::DirectoryWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TenantWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads and checks one tenant file; the error names the file, handler and field.
fn read_tenant_file(path: &Path) -> Result<(String, Vec<HandlerEntry>), String> {
    let file = path.display();
    let tenant = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    if !is_valid_tenant(&tenant) {
        return Err(format!(
            "invalid tenant file {file}: `{tenant}` is not a valid tenant name (lowercase letters, digits, `-`, `_`)"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("invalid tenant file {file}: cannot read it: {e}"))?;
    let parsed: TenantFile = toml::from_str(&text).map_err(|error| {
        let line = error.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map(|line| format!("line {line}: ")).unwrap_or_default();
        format!("invalid tenant file {file}: {at}{}", error.message().trim())
    })?;
    let mut seen = std::collections::BTreeSet::new();
    for (position, entry) in parsed.handlers.iter().enumerate() {
        let problem = |field: &str, message: String| {
            format!("invalid tenant file {file}: handlers[{position}].{field}: {message}")
        };
        if !StepId::is_valid(&entry.hook) {
            return Err(problem("hook", format!("`{}` is not a valid hook name", entry.hook)));
        }
        if !PluginName::is_valid(&entry.plugin) {
            return Err(problem("plugin", format!("`{}` is not a valid plugin name", entry.plugin)));
        }
        if let Some(workflow) = &entry.workflow {
            if !StepId::is_valid(workflow) {
                return Err(problem("workflow", format!("`{workflow}` is not a valid workflow name")));
            }
        }
        if !seen.insert((entry.hook.clone(), entry.plugin.clone(), entry.workflow.clone())) {
            return Err(problem(
                "plugin",
                format!("plugin `{}` is bound to hook `{}` twice", entry.plugin, entry.hook),
            ));
        }
    }
    Ok((tenant, parsed.handlers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(label: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stepwise-tenants-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn handlers_run_by_priority_then_name_and_only_for_their_tenant_and_workflow() {
        let dir = dir_with(
            "order",
            &[
                (
                    "acme.toml",
                    r#"
                [[handlers]]
                hook = "validate-cart"
                plugin = "zeta"
                [[handlers]]
                hook = "validate-cart"
                plugin = "alpha"
                [[handlers]]
                hook = "validate-cart"
                plugin = "first"
                priority = -5
                [[handlers]]
                hook = "validate-cart"
                plugin = "other-flow"
                workflow = "refund"
                "#,
                ),
                ("globex.toml", ""),
            ],
        );
        let bindings = TenantBindings::load(&dir).unwrap();
        let order: Vec<String> = bindings
            .handlers("acme", "accept-quote", "validate-cart")
            .into_iter()
            .map(|h| h.plugin.to_string())
            .collect();
        assert_eq!(order, vec!["first", "alpha", "zeta"]);
        assert_eq!(bindings.handlers("acme", "refund", "validate-cart").len(), 4);
        assert!(bindings.handlers("globex", "accept-quote", "validate-cart").is_empty());
        assert!(bindings.handlers("nobody", "accept-quote", "validate-cart").is_empty());
    }

    #[test]
    fn broken_files_are_refused_naming_file_handler_and_field() {
        for (text, expected) in [
            (
                "[[handlers]]\nhook = \"h\"\nplugin = \"Bad Name\"\n",
                "handlers[0].plugin: `Bad Name` is not a valid plugin name",
            ),
            ("[[handlers]]\nhook = \"h\"\nplugin = \"p\"\nprio = 1\n", "line 4: unknown field `prio`"),
            (
                "[[handlers]]\nhook = \"h\"\nplugin = \"p\"\n[[handlers]]\nhook = \"h\"\nplugin = \"p\"\n",
                "bound to hook `h` twice",
            ),
        ] {
            let dir = dir_with(&format!("broken-{}", expected.len()), &[("acme.toml", text)]);
            let error = TenantBindings::load(&dir).err().expect("refused");
            assert!(error.contains("acme.toml") && error.contains(expected), "{error}");
        }
    }

    #[test]
    fn a_broken_reload_keeps_the_previous_bindings() {
        let dir = dir_with("reload", &[("acme.toml", "[[handlers]]\nhook = \"h\"\nplugin = \"p\"\n")]);
        let bindings = TenantBindings::load(&dir).unwrap();
        std::fs::write(dir.join("acme.toml"), "[[handlers]\n").unwrap();
        bindings.reload_file(&dir.join("acme.toml"));
        assert_eq!(bindings.handlers("acme", "w", "h").len(), 1);
        assert!(bindings.errors().values().next().unwrap().contains("acme.toml"));
    }
}
