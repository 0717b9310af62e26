//! The compiled plugins an execution uses: loaded before it starts (or is
//! adopted), so that a broken plugin is reported up front rather than
//! halfway through a saga, at the versions the execution pinned.

use super::calls::Plugins;
use super::EngineError;
use crate::journal::PluginName;
use crate::plugin::{PluginError, PluginRegistry};
use crate::workflow::{StepKind, Workflow};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Loads `names`: the versions pinned in `pinned` (name -> content hash),
/// else the current ones.
pub(super) async fn resolve(
    registry: &PluginRegistry,
    names: &BTreeSet<PluginName>,
    pinned: &BTreeMap<String, String>,
) -> Result<Plugins, EngineError> {
    let mut plugins = HashMap::new();
    for name in names {
        let plugin = match pinned.get(name.as_str()) {
            Some(hash) => registry.get_pinned(name.as_str(), hash).await?,
            None => registry.get(name.as_str()).await?,
        };
        plugins.insert(name.clone(), plugin);
    }
    Ok(plugins)
}

/// Refuses to start when a step pins a plugin version (`name@1.2`) that the
/// current plugin does not have.
pub(super) fn check_version_pins(workflow: &Workflow, plugins: &Plugins) -> Result<(), EngineError> {
    for step in workflow.steps() {
        let StepKind::Plugin { name, version: Some(pin) } = &step.kind else { continue };
        let version = plugins[name].version();
        let matches =
            version.is_some_and(|v| v == pin || v.strip_prefix(pin.as_str()).is_some_and(|r| r.starts_with('.')));
        if !matches {
            return Err(PluginError::VersionMismatch {
                name: name.to_string(),
                version: version.map(str::to_string),
                pin: pin.clone(),
                step: step.id.to_string(),
            }
            .into());
        }
    }
    Ok(())
}
