//! Step plugins: finding component files, checking that they implement the
//! step world, compiling them, and keeping the compiled code for reuse.
//!
//! A plugin is a component file `<name>.wasm` in the plugin directory. Loading
//! checks the world (`stepwise:step/step@0.1.0` exports, imports the host
//! provides) before any code runs; a refused component never reaches the
//! engine. Calls themselves go through [`crate::sandbox`].

mod cache;
mod directory;
mod fingerprint;
mod grants;
mod manifest;
pub mod quickjs;
mod registry;
pub mod tenant_upload;
mod world;

pub use cache::{CacheOutcome, CodeCache};
pub use directory::PluginDirectory;
pub use manifest::{Capabilities, LimitOverrides, Manifest, SecretSource};
pub use registry::{content_hash, LoadedPlugin, PluginRegistry, PluginStatus, RegistryStats};
pub use world::{check_world, describe_component, ComponentDescription, CONTRACT_PACKAGE, CONTRACT_VERSION};

use std::path::PathBuf;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No file for this plugin name in the directory.
    #[error("unknown plugin `{name}`: no `{name}.wasm` in {}", dir.display())]
    NotFound {
        /// The plugin asked for.
        name: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The file could not be read.
    #[error("plugin file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid WebAssembly component.
    #[error("plugin file {} is not a valid WebAssembly component: {reason}", path.display())]
    Compile {
        /// The file.
        path: PathBuf,
        /// What the compiler said.
        reason: String,
    },
    /// The manifest beside the component is invalid.
    #[error("plugin manifest for {}: {}", path.display(), problems.join("; "))]
    Manifest {
        /// The component file.
        path: PathBuf,
        /// What is wrong.
        problems: Vec<String>,
    },
    /// The plugin's current version is not the one a workflow step pins.
    #[error("step `{step}` pins plugin `{name}@{pin}`, but the plugin is at version {}", version.as_deref().unwrap_or("(none: it has no manifest version)"))]
    VersionMismatch {
        /// The plugin.
        name: String,
        /// Its current version.
        version: Option<String>,
        /// The version the step pins.
        pin: String,
        /// The step.
        step: String,
    },
    /// The component does not implement the step world.
    #[error("plugin file {} does not implement world `stepwise:step/step@0.1.0`: {}", path.display(), problems.join("; "))]
    World {
        /// The file.
        path: PathBuf,
        /// Each wrong or missing import and export.
        problems: Vec<String>,
    },
}
