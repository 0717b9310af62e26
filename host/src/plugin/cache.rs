//! The plugin code cache on disk: every loaded plugin version archived by
//! content hash, and its compiled code keyed by that hash and the engine's
//! configuration, so that a restart deserializes instead of recompiling and
//! an execution pinned to an old version can load it after the plugin file
//! changed.
//!
//! Layout under the cache directory:
//! - `components/<hash>.wasm` and `components/<hash>.toml`: the version's
//!   component and manifest (the manifest only when it had one);
//! - `compiled/<hash>-<engine>.cwasm`: wasmtime's precompiled code;
//! - `fingerprints/`: the hash of each plugin file by its identity on disk
//!   ([`super::fingerprint`]), so that an unchanged file is not read again.
//!
//! Files are written to a temporary name and renamed, so a crash never
//! leaves a half-written file under a real name. Compiled code is trusted
//! when deserialized: the directory must be writable only by the host.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Whether a component came from the compiled-code cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Deserialized from the cache.
    Hit,
    /// Compiled now (and stored for next time).
    Compiled,
}

/// The cache directory.
#[derive(Clone, Debug)]
pub struct CodeCache {
    dir: PathBuf,
}

impl CodeCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    /// The default location: `$STEPWISE_CACHE`, else `$XDG_CACHE_HOME/stepwise`,
    /// else `$HOME/.cache/stepwise`, else `.stepwise-cache`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("STEPWISE_CACHE") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("stepwise");
        }
        match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".cache/stepwise"),
            None => PathBuf::from(".stepwise-cache"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn component_path(&self, hash: &str) -> PathBuf {
        self.dir.join("components").join(format!("{hash}.wasm"))
    }

    fn manifest_path(&self, hash: &str) -> PathBuf {
        self.dir.join("components").join(format!("{hash}.toml"))
    }

    /// Keeps a copy of a plugin version (component and manifest) under its hash.
    pub fn archive(&self, hash: &str, wasm: &[u8], manifest: Option<&str>) -> std::io::Result<()> {
        if !self.component_path(hash).exists() {
            if let Some(manifest) = manifest {
                write_atomically(&self.manifest_path(hash), manifest.as_bytes())?;
            }
            write_atomically(&self.component_path(hash), wasm)?;
        }
        Ok(())
    }

    /// The archived component bytes and manifest text of a version, if kept.
    pub fn archived(&self, hash: &str) -> std::io::Result<Option<(Vec<u8>, Option<String>)>> {
        let wasm = match std::fs::read(self.component_path(hash)) {
            Ok(wasm) => wasm,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let manifest = match std::fs::read_to_string(self.manifest_path(hash)) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        Ok(Some((wasm, manifest)))
    }

    /// The remembered hashes of plugin files.
    pub(super) fn fingerprints(&self) -> super::fingerprint::Fingerprints {
        super::fingerprint::Fingerprints::new(&self.dir)
    }

    fn compiled_path(&self, engine: &Engine, hash: &str) -> PathBuf {
        self.dir.join("compiled").join(format!("{hash}-{}.cwasm", engine_fingerprint(engine)))
    }

    /// The compiled component of a version that is archived and compiled
    /// already; `None` when either is missing or the code does not deserialize.
    pub(super) fn compiled_only(&self, engine: &Engine, hash: &str) -> Option<Component> {
        if !self.component_path(hash).exists() {
            return None;
        }
        self.compiled_file(engine, hash)
    }

    /// The compiled code of `hash` for `engine`, when its file is there
    /// (another lane of the sandbox loading a version just compiled).
    pub(super) fn compiled_file(&self, engine: &Engine, hash: &str) -> Option<Component> {
        let path = self.compiled_path(engine, hash);
        if !path.exists() {
            return None;
        }
        // SAFETY: as in `component`: written by `precompile_component` of an
        // engine with this configuration, in a directory only the host writes to.
        unsafe { Component::deserialize_file(engine, &path) }.ok()
    }

    /// The compiled component for `hash`: from the cache, or compiled from
    /// `wasm` and stored. A cache file that does not deserialize (another
    /// wasmtime build, a damaged file) is replaced.
    pub fn component(&self, engine: &Engine, hash: &str, wasm: &[u8]) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.compiled_path(engine, hash);
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine
            // with the same configuration (the fingerprint is in its name), into a
            // directory only the host writes to (see SECURITY.md).
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), "ignoring an unusable compiled-code file: {error}")
                }
            }
        }
        let compiled = engine.precompile_component(wasm)?;
        if let Err(error) = write_atomically(&path, &compiled) {
            tracing::warn!(path = %path.display(), "cannot write the compiled-code cache: {error}");
        }
        // SAFETY: these bytes were just produced by `precompile_component` of this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, CacheOutcome::Compiled))
    }

    /// Deletes archived versions and compiled code whose hash is not in `keep`; returns how many files went.
    pub fn retain(&self, keep: &HashSet<String>) -> std::io::Result<usize> {
        let mut removed = 0;
        for sub in ["components", "compiled"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(sub)) else { continue };
            for entry in entries {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let hash = name.split(['.', '-']).next().unwrap_or_default();
                if !keep.contains(hash) {
                    std::fs::remove_file(&path)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// A short name for the engine configuration: compiled code is valid only for
/// the same wasmtime version and settings.
fn engine_fingerprint(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Unique per process and per write: two threads of one host may cache
    // the same plugin at once, and must not share (and truncate) a temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}
