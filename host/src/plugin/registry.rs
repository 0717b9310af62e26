//! The plugin registry: every plugin of the directory by name, the version
//! new executions get (the current one), and every version loaded so far by
//! content hash, so that an execution finishes on the code it started with.
//!
//! Loading compiles through the [`CodeCache`] (when one is configured) and
//! archives each version there; [`PluginRegistry::reload`] swaps a plugin's
//! current version only when the new file passes every check, and records
//! the error otherwise, leaving the previous version serving.

use super::cache::{CacheOutcome, CodeCache};
use super::{check_world, grants, Manifest, PluginDirectory, PluginError};
use crate::journal::ids::PluginName;
use crate::sandbox::{LinkedStep, Sandbox, SandboxedPlugin};
use crate::workflow::PluginCatalog;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use wasmtime::component::Component;

/// A plugin version compiled, checked against the step world, and linked.
pub struct LoadedPlugin {
    /// Its name.
    pub name: PluginName,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// SHA-256 of the component's bytes and its manifest, hex: identifies exactly this version.
    pub hash: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// The manifest (the default, empty one when the plugin has none).
    pub manifest: Manifest,
    /// Whether its compiled code came from the cache.
    pub cache: Option<CacheOutcome>,
    runtime: SandboxedPlugin,
}

/// The content hash of a plugin version: its component and its manifest.
pub fn content_hash(wasm: &[u8], manifest: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(wasm);
    if let Some(manifest) = manifest {
        hasher.update([0u8]);
        hasher.update(manifest.as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A manifest parsed, with what it grants and the limits it sets.
struct CheckedManifest {
    manifest: Manifest,
    grants: crate::sandbox::Grants,
    limits: crate::sandbox::Limits,
}

/// A version's compiled component, before it is checked and linked.
struct Version {
    hash: String,
    size: u64,
    component: Component,
    cache: Option<CacheOutcome>,
}

impl LoadedPlugin {
    /// Reads, compiles, checks and links a component file and its manifest.
    pub fn load(sandbox: &Sandbox, name: &str, path: &Path) -> Result<Self, PluginError> {
        Self::load_cached(sandbox, None, name, path)
    }

    /// Like [`LoadedPlugin::load`], compiling through (and archiving into)
    /// `cache`. A file unchanged since it was last loaded (by its identity on
    /// disk, see `fingerprint.rs`) is not read again: its version's compiled
    /// code is taken from the cache under the remembered hash.
    pub fn load_cached(
        sandbox: &Sandbox,
        cache: Option<&CodeCache>,
        name: &str,
        path: &Path,
    ) -> Result<Self, PluginError> {
        let manifest = Manifest::text_for_component(path)
            .map_err(|problem| PluginError::Manifest { path: path.to_path_buf(), problems: vec![problem] })?;
        let read_error = |source| PluginError::Read { path: path.to_path_buf(), source };
        let Some(cache) = cache else {
            let wasm = std::fs::read(path).map_err(read_error)?;
            return Self::from_bytes(sandbox, None, name, path, &wasm, manifest.as_deref());
        };
        let fingerprints = cache.fingerprints();
        let started = Instant::now();
        if let Some((hash, identity)) = fingerprints.remembered(path, manifest.as_deref()) {
            if let Some(component) = cache.compiled_only(sandbox.engine(), &hash) {
                let checked = Self::checked_manifest(sandbox, name, path, manifest.as_deref())?;
                let version = Version { hash, size: identity.size(), component, cache: Some(CacheOutcome::Hit) };
                return Self::linked(sandbox, Some(cache), name, path, checked, version, started);
            }
        }
        // Read through one open file whose identity is taken first (the clock
        // too: a write in the same tick as the last one must not be missed).
        let opened_at = std::time::SystemTime::now();
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        let before = super::fingerprint::FileIdentity::of(&file.metadata().map_err(read_error)?);
        let mut wasm = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut wasm).map_err(read_error)?;
        let loaded = Self::from_bytes(sandbox, Some(cache), name, path, &wasm, manifest.as_deref())?;
        fingerprints.remember(path, &file, (&before, opened_at), manifest.as_deref(), &loaded.hash);
        Ok(loaded)
    }

    /// Checks, compiles and links a version given as bytes; `path` names it in errors.
    pub fn from_bytes(
        sandbox: &Sandbox,
        cache: Option<&CodeCache>,
        name: &str,
        path: &Path,
        wasm: &[u8],
        manifest_text: Option<&str>,
    ) -> Result<Self, PluginError> {
        let checked = Self::checked_manifest(sandbox, name, path, manifest_text)?;
        let hash = content_hash(wasm, manifest_text);
        let compile_error =
            |error: wasmtime::Error| PluginError::Compile { path: path.to_path_buf(), reason: format!("{error:#}") };
        let started = Instant::now();
        let (component, outcome) = match cache {
            Some(cache) => {
                let (component, outcome) = cache.component(sandbox.engine(), &hash, wasm).map_err(compile_error)?;
                (component, Some(outcome))
            }
            None => (Component::from_binary(sandbox.engine(), wasm).map_err(compile_error)?, None),
        };
        let version = Version { hash, size: wasm.len() as u64, component, cache: outcome };
        let loaded = Self::linked(sandbox, cache, name, path, checked, version, started)?;
        if let Some(cache) = cache {
            if let Err(error) = cache.archive(&loaded.hash, wasm, manifest_text) {
                tracing::warn!(plugin = name, "cannot archive the plugin version: {error}");
            }
        }
        Ok(loaded)
    }

    /// The manifest parsed, and the grants and limits it asks for checked.
    fn checked_manifest(
        sandbox: &Sandbox,
        name: &str,
        path: &Path,
        manifest_text: Option<&str>,
    ) -> Result<CheckedManifest, PluginError> {
        let manifest_error = |problems: Vec<String>| PluginError::Manifest { path: path.to_path_buf(), problems };
        let manifest = match manifest_text {
            Some(text) => Manifest::parse(text, &path.with_extension("toml")).map_err(|p| manifest_error(vec![p]))?,
            None => Manifest::default(),
        };
        let (grants, limits) = grants::from_manifest(sandbox, name, &manifest).map_err(manifest_error)?;
        Ok(CheckedManifest { manifest, grants, limits })
    }

    /// A compiled version checked against the step worlds and its grants, and linked.
    fn linked(
        sandbox: &Sandbox,
        cache: Option<&CodeCache>,
        name: &str,
        path: &Path,
        checked: CheckedManifest,
        version: Version,
        started: Instant,
    ) -> Result<Self, PluginError> {
        let CheckedManifest { manifest, grants, limits } = checked;
        let world_error = |problems: Vec<String>| PluginError::World { path: path.to_path_buf(), problems };
        let problems = check_world(sandbox.engine(), &version.component, &grants);
        if !problems.is_empty() {
            return Err(world_error(problems));
        }
        let instance_pre = sandbox
            .linker()
            .instantiate_pre(&version.component)
            .map_err(|error| world_error(vec![format!("imports do not match the host's: {error:#}")]))?;
        let linked = LinkedStep::new(instance_pre)
            .map_err(|error| world_error(vec![format!("exports do not match a step world: {error}")]))?;
        let linked = sandbox
            .link_on_every_lane(&version.component, linked, |engine| {
                cache.and_then(|cache| cache.compiled_file(engine, &version.hash))
            })
            .map_err(|error| PluginError::Compile { path: path.to_path_buf(), reason: format!("{error:#}") })?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        match version.cache {
            Some(CacheOutcome::Hit) => {
                tracing::info!(plugin = name, "loaded from the compiled-code cache in {elapsed:.2} ms")
            }
            _ => tracing::info!(plugin = name, "compiled in {elapsed:.1} ms"),
        }
        let slots = sandbox.slots_for(&version.component);
        let runtime = SandboxedPlugin { linked, slots, limits, grants: Arc::new(grants) };
        Ok(Self {
            name: PluginName::new(name),
            path: path.to_path_buf(),
            hash: version.hash,
            size: version.size,
            manifest,
            cache: version.cache,
            runtime,
        })
    }

    /// The plugin as the sandbox calls it: linked code, limits, grants.
    pub fn runtime(&self) -> &SandboxedPlugin {
        &self.runtime
    }

    /// The version from its manifest, if any.
    pub fn version(&self) -> Option<&str> {
        self.manifest.version.as_deref()
    }
}

/// What the registry knows about one plugin name.
#[derive(Default)]
struct Slot {
    /// The component file in the plugin directory (none once deleted).
    path: Option<PathBuf>,
    /// The version new executions get.
    current: Option<Arc<LoadedPlugin>>,
    /// Why the file last failed to load, while the previous version (if any) serves.
    error: Option<String>,
}

/// How a plugin stands, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Hash, version and size of the current version, if one is loaded.
    pub current: Option<(String, Option<String>, u64)>,
    /// The last load error, if the file on disk is broken.
    pub error: Option<String>,
    /// Whether the file is still in the directory.
    pub present: bool,
}

/// Counters of the registry's work, for tests and metrics.
#[derive(Debug, Default)]
pub struct RegistryStats {
    /// Versions compiled from source.
    pub compiled: AtomicU64,
    /// Versions deserialized from the compiled-code cache.
    pub cache_hits: AtomicU64,
    /// Successful swaps of a plugin's current version.
    pub swaps: AtomicU64,
}

/// The plugins of one directory.
pub struct PluginRegistry {
    sandbox: Arc<Sandbox>,
    dir: PathBuf,
    cache: Option<CodeCache>,
    slots: RwLock<BTreeMap<String, Slot>>,
    versions: Mutex<HashMap<String, Arc<LoadedPlugin>>>,
    loading: tokio::sync::Mutex<()>,
    stats: RegistryStats,
    /// Counts changes to the set of plugins (one added, removed or replaced).
    changes: tokio::sync::watch::Sender<u64>,
}

impl PluginRegistry {
    /// A registry over the plugins of `directory`, compiling without a disk cache.
    pub fn new(sandbox: Arc<Sandbox>, directory: PluginDirectory) -> Self {
        Self::with_cache(sandbox, directory, None)
    }

    /// A registry over the plugins of `directory`, compiling through `cache`.
    pub fn with_cache(sandbox: Arc<Sandbox>, directory: PluginDirectory, cache: Option<CodeCache>) -> Self {
        let slots = directory
            .plugins()
            .map(|(name, path)| (name.to_string(), Slot { path: Some(path.to_path_buf()), ..Slot::default() }))
            .collect();
        Self {
            sandbox,
            dir: directory.dir().to_path_buf(),
            cache,
            slots: RwLock::new(slots),
            versions: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
            stats: RegistryStats::default(),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The sandbox plugins run in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The plugin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry's counters.
    pub fn stats(&self) -> &RegistryStats {
        &self.stats
    }

    /// The current version of `name`, loading it on first use.
    pub async fn get(&self, name: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        if let Some(current) = self.slot(name, |slot| slot.current.clone()).flatten() {
            return Ok(current);
        }
        let _loading = self.loading.lock().await;
        if let Some(current) = self.slot(name, |slot| slot.current.clone()).flatten() {
            return Ok(current);
        }
        let path = self
            .slot(name, |slot| slot.path.clone())
            .flatten()
            .ok_or_else(|| PluginError::NotFound { name: name.to_string(), dir: self.dir.clone() })?;
        let loaded = self.load_file(name, &path).await;
        let mut slots = self.slots.write().expect("registry lock poisoned");
        let slot = slots.entry(name.to_string()).or_default();
        match loaded {
            Ok(plugin) => {
                slot.current = Some(plugin.clone());
                slot.error = None;
                Ok(plugin)
            }
            Err(error) => {
                slot.error = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// The version of `name` whose content hash is `hash`: loaded, current,
    /// or archived in the cache. Executions use it to finish on the code they
    /// started with.
    pub async fn get_pinned(&self, name: &str, hash: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        if let Some(plugin) = self.versions.lock().expect("registry lock poisoned").get(hash) {
            return Ok(plugin.clone());
        }
        if let Ok(current) = self.get(name).await {
            if current.hash == hash {
                return Ok(current);
            }
        }
        let missing = || PluginError::Compile {
            path: self.dir.join(format!("{name}.wasm")),
            reason: format!("version {hash} is neither loaded nor archived in the plugin cache"),
        };
        let cache = self.cache.clone().ok_or_else(missing)?;
        let archived =
            cache.archived(hash).map_err(|source| PluginError::Read { path: cache.dir().to_path_buf(), source })?;
        let (wasm, manifest) = archived.ok_or_else(missing)?;
        let (sandbox, name_owned, path) =
            (self.sandbox.clone(), name.to_string(), self.dir.join(format!("{name}.wasm")));
        let plugin = tokio::task::spawn_blocking(move || {
            LoadedPlugin::from_bytes(&sandbox, Some(&cache), &name_owned, &path, &wasm, manifest.as_deref())
        })
        .await
        .expect("plugin compilation panicked")?;
        Ok(self.remember(plugin))
    }

    /// Re-reads `name` from the directory (after it changed): on success its
    /// new version becomes current; on failure the error is recorded and the
    /// previous version keeps serving. A deleted file stops new executions
    /// from using the plugin; versions in use stay loaded.
    pub async fn reload(&self, name: &str) -> Result<(), PluginError> {
        let _loading = self.loading.lock().await;
        self.reload_locked(name).await
    }

    /// Writes a plugin's component and manifest (none: the manifest file is
    /// removed) into the directory and loads them, as one unit: the watcher,
    /// which reloads under the same lock, sees either the old pair or the
    /// new one, never a new manifest beside an old component.
    pub async fn install(&self, name: &str, component: &[u8], manifest: Option<&str>) -> Result<(), PluginError> {
        let _loading = self.loading.lock().await;
        let path = self.dir.join(format!("{name}.wasm"));
        write_pair(&path, component, manifest).map_err(|source| PluginError::Read { path: path.clone(), source })?;
        self.reload_locked(name).await
    }

    /// A receiver that sees each change to the set of plugins (a workflow
    /// naming a plugin that just arrived can be checked again).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The tenant that uploaded `name` (its manifest's stamp), if a tenant did.
    pub fn owner(&self, name: &str) -> Option<String> {
        let current = self.slot(name, |slot| slot.current.clone()).flatten();
        if let Some(plugin) = current {
            return plugin.manifest.tenant.clone();
        }
        let path = self.dir.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).ok()?;
        Manifest::parse(&text, &path).ok()?.tenant
    }

    async fn reload_locked(&self, name: &str) -> Result<(), PluginError> {
        let result = self.reload_file(name).await;
        self.changes.send_modify(|changes| *changes += 1);
        result
    }

    async fn reload_file(&self, name: &str) -> Result<(), PluginError> {
        let path = self.dir.join(format!("{name}.wasm"));
        if !path.is_file() {
            let mut slots = self.slots.write().expect("registry lock poisoned");
            slots.remove(name);
            tracing::info!(plugin = name, "plugin removed: new executions can no longer use it");
            return Ok(());
        }
        let loaded = self.load_file(name, &path).await;
        let mut slots = self.slots.write().expect("registry lock poisoned");
        let slot = slots.entry(name.to_string()).or_default();
        slot.path = Some(path);
        match loaded {
            Ok(plugin) => {
                let changed = slot.current.as_ref().is_none_or(|current| current.hash != plugin.hash);
                if changed && slot.current.is_some() {
                    self.stats.swaps.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(plugin = name, hash = %plugin.hash, "swapped in a new version");
                }
                slot.current = Some(plugin);
                slot.error = None;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(plugin = name, "keeping the previous version: {error}");
                slot.error = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// Every plugin's status, by name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let slots = self.slots.read().expect("registry lock poisoned");
        slots
            .iter()
            .map(|(name, slot)| PluginStatus {
                name: name.clone(),
                current: slot.current.as_ref().map(|p| (p.hash.clone(), p.manifest.version.clone(), p.size)),
                error: slot.error.clone(),
                present: slot.path.is_some(),
            })
            .collect()
    }

    /// Content hashes of the plugin files now in the directory (unreadable files are skipped).
    pub fn current_file_hashes(&self) -> Vec<String> {
        let paths: Vec<PathBuf> =
            self.slots.read().expect("registry lock poisoned").values().filter_map(|s| s.path.clone()).collect();
        paths
            .iter()
            .filter_map(|path| {
                let wasm = std::fs::read(path).ok()?;
                let manifest = Manifest::text_for_component(path).ok()?;
                Some(content_hash(&wasm, manifest.as_deref()))
            })
            .collect()
    }

    /// Hashes of every version loaded in this process.
    pub fn loaded_hashes(&self) -> Vec<String> {
        self.versions.lock().expect("registry lock poisoned").keys().cloned().collect()
    }

    /// The compiled-code cache, if any.
    pub fn cache(&self) -> Option<&CodeCache> {
        self.cache.as_ref()
    }

    fn slot<T>(&self, name: &str, read: impl FnOnce(&Slot) -> T) -> Option<T> {
        self.slots.read().expect("registry lock poisoned").get(name).map(read)
    }

    async fn load_file(&self, name: &str, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let (sandbox, cache, name_owned, path) =
            (self.sandbox.clone(), self.cache.clone(), name.to_string(), path.to_path_buf());
        let plugin = tokio::task::spawn_blocking(move || {
            LoadedPlugin::load_cached(&sandbox, cache.as_ref(), &name_owned, &path)
        })
        .await
        .expect("plugin compilation panicked")?;
        Ok(self.remember(plugin))
    }

    fn remember(&self, plugin: LoadedPlugin) -> Arc<LoadedPlugin> {
        match plugin.cache {
            Some(CacheOutcome::Hit) => self.stats.cache_hits.fetch_add(1, Ordering::Relaxed),
            _ => self.stats.compiled.fetch_add(1, Ordering::Relaxed),
        };
        let mut versions = self.versions.lock().expect("registry lock poisoned");
        versions.entry(plugin.hash.clone()).or_insert_with(|| Arc::new(plugin)).clone()
    }
}

impl PluginCatalog for PluginRegistry {
    fn contains_plugin(&self, name: &str) -> bool {
        self.slot(name, |slot| slot.path.is_some() || slot.current.is_some()).unwrap_or(false)
    }

    fn plugin_owner(&self, name: &str) -> Option<String> {
        self.owner(name)
    }
}

/// Keeps a registry in step with its directory; stops when dropped.
pub struct PluginWatch {
    _watcher: crate::watch::DirectoryWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PluginRegistry {
    /// Watches the plugin directory: a new or changed `<name>.wasm` or
    /// `<name>.toml` is validated and compiled in the background, then
    /// swapped in; a broken one is reported and the previous version keeps
    /// serving; a deleted one stops new executions from using the plugin.
    pub fn watch(self: &Arc<Self>) -> Result<PluginWatch, String> {
        let (watcher, mut changes) =
            crate::watch::watch(&self.dir).map_err(|e| format!("watching {}: {e}", self.dir.display()))?;
        let registry = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            while let Some(paths) = changes.recv().await {
                let Some(registry) = registry.upgrade() else { break };
                for name in crate::watch::changed_stems(&paths, &["wasm", "toml"]) {
                    if !PluginName::is_valid(&name) {
                        continue;
                    }
                    // Errors are recorded in the plugin's status by `reload`.
                    let _ = registry.reload(&name).await;
                }
            }
        });
        Ok(PluginWatch { _watcher: watcher, task })
    }
}

/// Writes a component and its manifest, each to a temporary name beside
/// its final one and renamed into place (a reader never sees half a file).
fn write_pair(path: &Path, component: &[u8], manifest: Option<&str>) -> std::io::Result<()> {
    let manifest_path = path.with_extension("toml");
    match manifest {
        Some(text) => {
            std::fs::write(path.with_extension("toml.partial"), text)?;
            std::fs::rename(path.with_extension("toml.partial"), &manifest_path)?;
        }
        None if manifest_path.exists() => std::fs::remove_file(&manifest_path)?,
        None => {}
    }
    std::fs::write(path.with_extension("wasm.partial"), component)?;
    std::fs::rename(path.with_extension("wasm.partial"), path)
}
