//! Where a capability is granted: a plugin's manifest becomes its
//! [`Grants`] (and limits), checked against what this host provides (its
//! registered services, the config values), and every Stepwise capability
//! a component imports must be granted there, or the plugin is refused at
//! load naming the import. What a grant *is* lives in
//! [`crate::sandbox::Grants`]; the capabilities that honour it at run time
//! live in `sandbox/capabilities/`.

use super::Manifest;
use crate::sandbox::{capabilities, limits::POOL_MAX_MEMORY_BYTES, Grants, Sandbox};

/// The grants and limits a manifest gives a plugin, or what is wrong with it.
pub(super) fn from_manifest(
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

/// Why a component's import is not allowed for the plugin, if it is a
/// Stepwise capability the plugin was not granted.
pub(super) fn check_import(import: &str, grants: &Grants) -> Option<String> {
    let interface = import.split('@').next().unwrap_or(import);
    let capability = capabilities::all().into_iter().find(|c| c.interface() == interface)?;
    (!capability.is_granted(grants)).then(|| {
        format!(
            "imports `{import}`, which plugin `{}` is not granted (grant it in its manifest: {})",
            grants.plugin,
            capability.grant_hint()
        )
    })
}
