//! Checks that a component implements world `stepwise:step/step@0.1.0`,
//! naming every wrong export or import, before anything is instantiated.

use crate::sandbox::{capabilities, Grants};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The WIT package of the step contract.
pub const CONTRACT_PACKAGE: &str = "stepwise:step";
/// The contract version this host implements.
pub const CONTRACT_VERSION: &str = "0.1.0";

const REQUIRED_EXPORTS: [&str; 2] = ["invoke", "compensate"];

/// What a component exports and imports, as names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentDescription {
    /// Export names with their kind (`func`, `instance`, ...).
    pub exports: Vec<(String, &'static str)>,
    /// Import names with their kind.
    pub imports: Vec<(String, &'static str)>,
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// Lists a compiled component's exports and imports.
pub fn describe_component(engine: &Engine, component: &Component) -> ComponentDescription {
    let ty = component.component_type();
    ComponentDescription {
        exports: ty.exports(engine).map(|(name, item)| (name.to_string(), kind(&item.ty))).collect(),
        imports: ty.imports(engine).map(|(name, item)| (name.to_string(), kind(&item.ty))).collect(),
    }
}

/// Every reason the component does not fit the step world (empty when it does).
///
/// Signatures are checked afterwards by the linker and the generated bindings;
/// this pass gives the errors people need first: missing exports, a contract
/// version this host does not implement, imports the host does not provide.
pub fn check_world(engine: &Engine, component: &Component, grants: &Grants) -> Vec<String> {
    let description = describe_component(engine, component);
    let mut problems = Vec::new();
    for required in REQUIRED_EXPORTS {
        match description.exports.iter().find(|(name, _)| name == required) {
            None => problems.push(format!("missing export `{required}`")),
            Some((_, "func")) => {}
            Some((_, other)) => problems.push(format!("export `{required}` is a {other}, expected a function")),
        }
    }
    let capabilities = capabilities::all();
    let provided: Vec<&str> = capabilities.iter().map(|c| c.interface()).collect();
    for (import, _) in &description.imports {
        if let Some(problem) = check_import(import, &provided) {
            problems.push(problem);
            continue;
        }
        problems.extend(super::grants::check_import(import, grants));
    }
    problems
}

fn check_import(import: &str, provided: &[&str]) -> Option<String> {
    if import.starts_with("wasi:") {
        return None; // every WASI 0.2 interface is linked, with no authority
    }
    let Some(rest) = import.strip_prefix(CONTRACT_PACKAGE).and_then(|r| r.strip_prefix('/')) else {
        return Some(format!("imports `{import}`, which this host does not provide"));
    };
    let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
    if version != CONTRACT_VERSION {
        let version = if version.is_empty() { "no version" } else { version };
        return Some(format!(
            "imports `{import}`: built for {CONTRACT_PACKAGE}@{version}, this host implements {CONTRACT_PACKAGE}@{CONTRACT_VERSION}"
        ));
    }
    let name = format!("{CONTRACT_PACKAGE}/{interface}");
    if !provided.contains(&name.as_str()) {
        return Some(format!("imports `{import}`, an interface this host does not provide"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_checked_against_package_version_and_interfaces() {
        let provided = ["stepwise:step/log", "stepwise:step/types"];
        assert_eq!(check_import("wasi:cli/environment@0.2.9", &provided), None);
        assert_eq!(check_import("stepwise:step/log@0.1.0", &provided), None);
        let future = check_import("stepwise:step/log@0.9.0", &provided).unwrap();
        assert!(future.contains("built for stepwise:step@0.9.0"), "{future}");
        let unknown = check_import("stepwise:step/teleport@0.1.0", &provided).unwrap();
        assert!(unknown.contains("does not provide"), "{unknown}");
        let foreign = check_import("acme:payments/charge", &provided).unwrap();
        assert!(foreign.contains("`acme:payments/charge`"), "{foreign}");
    }
}
