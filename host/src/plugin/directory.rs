//! The plugin directory: `<name>.wasm` files, one per plugin.

use crate::journal::ids::PluginName;
use crate::workflow::PluginCatalog;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The plugins found in a directory, by name.
#[derive(Clone, Debug, Default)]
pub struct PluginDirectory {
    dir: PathBuf,
    files: BTreeMap<String, PathBuf>,
    ignored: Vec<(PathBuf, String)>,
}

impl PluginDirectory {
    /// Lists `dir`. A missing directory is an error; files whose names are
    /// not valid plugin names are listed in [`PluginDirectory::ignored`].
    pub fn scan(dir: &Path) -> std::io::Result<Self> {
        let mut files = BTreeMap::new();
        let mut ignored = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("wasm") || !path.is_file() {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            if PluginName::is_valid(&stem) {
                files.insert(stem, path);
            } else {
                ignored
                    .push((path, format!("`{stem}` is not a valid plugin name (lowercase letters, digits, `-`, `_`)")));
            }
        }
        Ok(Self { dir: dir.to_path_buf(), files, ignored })
    }

    /// The directory scanned.
    /// A directory with no plugins (for commands that read executions only).
    pub fn empty(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), files: BTreeMap::new(), ignored: Vec::new() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of a plugin.
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    /// Every plugin name and file, sorted by name.
    pub fn plugins(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.files.iter().map(|(name, path)| (name.as_str(), path.as_path()))
    }

    /// Files that were skipped, with the reason.
    pub fn ignored(&self) -> &[(PathBuf, String)] {
        &self.ignored
    }
}

impl PluginCatalog for PluginDirectory {
    fn contains_plugin(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }
}
