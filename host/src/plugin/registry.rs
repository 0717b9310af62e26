//! The plugin registry: compiles each plugin on first use and keeps the
//! compiled, linked code (`StepPre`) for every later call.

use super::{check_world, Manifest, PluginDirectory, PluginError};
use crate::ids::PluginName;
use crate::sandbox::{limits::POOL_MAX_MEMORY_BYTES, Grants, Sandbox, SandboxedPlugin, StepPre};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;
use wasmtime::component::Component;

/// A plugin compiled, checked against the step world, and linked.
pub struct LoadedPlugin {
    /// Its name.
    pub name: PluginName,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex: identifies exactly this code.
    pub hash: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// The manifest (the default, empty one when the plugin has none).
    pub manifest: Manifest,
    runtime: SandboxedPlugin,
}

impl LoadedPlugin {
    /// Reads, compiles, checks and links a component file.
    pub fn load(sandbox: &Sandbox, name: &str, path: &Path) -> Result<Self, PluginError> {
        let manifest_error = |problems: Vec<String>| PluginError::Manifest { path: path.to_path_buf(), problems };
        let manifest =
            Manifest::for_component(path).map_err(|problem| manifest_error(vec![problem]))?.unwrap_or_default();
        let (grants, limits) = grants_and_limits(sandbox, name, &manifest).map_err(manifest_error)?;
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read { path: path.to_path_buf(), source })?;
        let hash = hex(&Sha256::digest(&bytes));
        let component = Component::from_binary(sandbox.engine(), &bytes)
            .map_err(|error| PluginError::Compile { path: path.to_path_buf(), reason: format!("{error:#}") })?;
        let world_error = |problems: Vec<String>| PluginError::World { path: path.to_path_buf(), problems };
        let problems = check_world(sandbox.engine(), &component, &grants);
        if !problems.is_empty() {
            return Err(world_error(problems));
        }
        let instance_pre = sandbox
            .linker()
            .instantiate_pre(&component)
            .map_err(|error| world_error(vec![format!("imports do not match the host's: {error:#}")]))?;
        let pre = StepPre::new(instance_pre)
            .map_err(|error| world_error(vec![format!("exports do not match the step world: {error:#}")]))?;
        let runtime = SandboxedPlugin { pre, limits, grants: Arc::new(grants) };
        Ok(Self {
            name: PluginName::new(name),
            path: path.to_path_buf(),
            hash,
            size: bytes.len() as u64,
            manifest,
            runtime,
        })
    }

    /// The plugin as the sandbox calls it: linked code, limits, grants.
    pub fn runtime(&self) -> &SandboxedPlugin {
        &self.runtime
    }
}

/// The grants and limits a manifest gives a plugin, or what is wrong with it.
fn grants_and_limits(
    sandbox: &Sandbox,
    name: &str,
    manifest: &Manifest,
) -> Result<(Grants, crate::sandbox::Limits), Vec<String>> {
    let mut problems = manifest.check(name, POOL_MAX_MEMORY_BYTES);
    let registered: Vec<&str> = sandbox.resources().services.names().collect();
    for service in &manifest.capabilities.services {
        if !registered.contains(&service.as_str()) {
            problems.push(format!(
                "`capabilities.services` grants `{service}`, which this host does not register (registered: {})",
                if registered.is_empty() { "none".to_string() } else { registered.join(", ") }
            ));
        }
    }
    let config = if manifest.capabilities.config {
        match manifest.config_values() {
            Ok(values) => Some(values),
            Err(problem) => {
                problems.push(problem);
                None
            }
        }
    } else {
        None
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok((manifest.grants(name, config), manifest.limits(sandbox.limits())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Plugins of one directory, compiled on first use.
pub struct PluginRegistry {
    sandbox: Arc<Sandbox>,
    directory: PluginDirectory,
    loaded: Mutex<HashMap<String, Arc<OnceCell<Arc<LoadedPlugin>>>>>,
}

impl PluginRegistry {
    /// A registry over the plugins of `directory`.
    pub fn new(sandbox: Arc<Sandbox>, directory: PluginDirectory) -> Self {
        Self { sandbox, directory, loaded: Mutex::new(HashMap::new()) }
    }

    /// The sandbox plugins run in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The directory the plugins come from.
    pub fn directory(&self) -> &PluginDirectory {
        &self.directory
    }

    /// The compiled plugin `name`, compiling it (off the async threads) on first use.
    pub async fn get(&self, name: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        let path = self
            .directory
            .path_of(name)
            .ok_or_else(|| PluginError::NotFound { name: name.to_string(), dir: self.directory.dir().to_path_buf() })?
            .to_path_buf();
        let cell = self.loaded.lock().expect("registry lock poisoned").entry(name.to_string()).or_default().clone();
        cell.get_or_try_init(|| async {
            let sandbox = self.sandbox.clone();
            let name = name.to_string();
            tokio::task::spawn_blocking(move || LoadedPlugin::load(&sandbox, &name, &path).map(Arc::new))
                .await
                .expect("plugin compilation panicked")
        })
        .await
        .cloned()
    }
}
