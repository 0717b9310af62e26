//! What a tenant's token may upload. A tenant writes its plugin's manifest
//! itself, so the manifest is held under a ceiling the operator's manifests
//! are not: no secrets (they read the host's environment), no services (they
//! are shared by every tenant), HTTP only to host names (never an address
//! or a range, which open private networks), and no limit above the host's
//! defaults. The uploaded manifest is stamped with the tenant (`tenant =
//! "<id>"`), and a plugin name belongs to whoever uploaded it first: a
//! tenant replaces only its own plugins, never the platform's or another
//! tenant's, whatever their names look like.

use super::Manifest;
use crate::sandbox::capabilities::http_grant::HttpGrant;
use crate::sandbox::Limits;
use std::path::Path;

/// Who owns a plugin name now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// No plugin has this name.
    Nobody,
    /// The operator's (installed without a tenant).
    Platform,
    /// This tenant's.
    Tenant(String),
}

/// Who owns the plugin whose component is (or would be) at `component`.
pub fn owner_of(component: &Path) -> Result<Owner, String> {
    if !component.exists() {
        return Ok(Owner::Nobody);
    }
    let manifest = Manifest::for_component(component)?;
    Ok(match manifest.and_then(|manifest| manifest.tenant) {
        Some(tenant) => Owner::Tenant(tenant),
        None => Owner::Platform,
    })
}

/// What in a tenant's manifest goes beyond what a tenant may grant itself.
pub fn ceiling_problems(manifest: &Manifest, defaults: &Limits) -> Vec<String> {
    let mut problems = Vec::new();
    if !manifest.secrets.is_empty() {
        problems.push("`secrets` read the host's environment: only an operator may grant them".to_string());
    }
    if !manifest.capabilities.services.is_empty() {
        problems.push("`capabilities.services` are shared by every tenant: only an operator may grant them".into());
    }
    for entry in &manifest.capabilities.http {
        if entry.parse::<HttpGrant>().is_ok_and(|grant| !grant.names_a_host()) {
            problems.push(format!(
                "`capabilities.http` entry `{entry}` names an address or a range: a tenant may grant host names only"
            ));
        }
    }
    let limits = &manifest.limits;
    let above = [
        ("fuel", limits.fuel.map(|v| v as u128), defaults.fuel as u128),
        ("deadline_ms", limits.deadline_ms.map(u128::from), defaults.deadline.as_millis()),
        ("memory_bytes", limits.memory_bytes.map(|v| v as u128), defaults.memory_bytes as u128),
        ("table_elements", limits.table_elements.map(|v| v as u128), defaults.max_table_elements as u128),
        ("instances", limits.instances.map(|v| v as u128), defaults.max_instances as u128),
        ("max_input_bytes", limits.max_input_bytes.map(|v| v as u128), defaults.max_input_bytes as u128),
        ("max_output_bytes", limits.max_output_bytes.map(|v| v as u128), defaults.max_output_bytes as u128),
        ("max_stdio_bytes", limits.max_stdio_bytes.map(|v| v as u128), defaults.max_stdio_bytes as u128),
        ("max_log_bytes", limits.max_log_bytes.map(|v| v as u128), defaults.max_log_bytes as u128),
    ];
    for (field, asked, default) in above {
        if asked.is_some_and(|asked| asked > default) {
            problems.push(format!("`limits.{field}` may not exceed the host default ({default}) in a tenant's upload"));
        }
    }
    problems
}

/// The manifest text of a tenant's upload, checked against the ceiling and
/// stamped with its tenant (an upload without a manifest gets one holding
/// only the stamp).
pub fn stamped_manifest(text: Option<&str>, tenant: &str, defaults: &Limits) -> Result<String, Vec<String>> {
    let text = text.unwrap_or("");
    let manifest = Manifest::parse(text, Path::new("manifest")).map_err(|problem| vec![problem])?;
    let mut problems = ceiling_problems(&manifest, defaults);
    if let Some(claimed) = manifest.tenant.as_deref().filter(|claimed| *claimed != tenant) {
        problems.push(format!("`tenant` is `{claimed}`: a tenant's upload belongs to `{tenant}`"));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut table: toml::Table = toml::from_str(text).map_err(|error| vec![error.to_string()])?;
    table.insert("tenant".into(), toml::Value::String(tenant.to_string()));
    toml::to_string(&table).map_err(|error| vec![error.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_may_not_grant_itself_secrets_services_addresses_or_larger_limits() {
        let defaults = Limits::default();
        let text = "[capabilities]\nconfig = true\nservices = [\"payments\"]\nhttp = [\"api.example.com\", \"169.254.169.254\", \"10.0.0.0/8:5432\"]\n[secrets]\nt = { env = \"STEPWISE_TOKEN\" }\n[limits]\nfuel = 1000000000000000\ndeadline_ms = 1\n";
        let problems = stamped_manifest(Some(text), "acme", &defaults).unwrap_err();
        let all = problems.join("\n");
        for expected in
            ["`secrets`", "`capabilities.services`", "`169.254.169.254`", "`10.0.0.0/8:5432`", "`limits.fuel`"]
        {
            assert!(all.contains(expected), "{expected} in {all}");
        }
        assert!(!all.contains("api.example.com") && !all.contains("deadline_ms"), "{all}");
    }

    #[test]
    fn an_upload_is_stamped_with_its_tenant() {
        let defaults = Limits::default();
        let stamped = stamped_manifest(Some("version = \"1.0.0\"\n[config]\ngreeting = \"hi\"\n"), "acme", &defaults);
        let manifest = Manifest::parse(&stamped.unwrap(), Path::new("m")).unwrap();
        assert_eq!(manifest.tenant.as_deref(), Some("acme"));
        assert_eq!(manifest.version.as_deref(), Some("1.0.0"));
        let bare = Manifest::parse(&stamped_manifest(None, "acme", &defaults).unwrap(), Path::new("m")).unwrap();
        assert_eq!(bare.tenant.as_deref(), Some("acme"));
        let claimed = stamped_manifest(Some("tenant = \"globex\"\n"), "acme", &defaults).unwrap_err();
        assert!(claimed[0].contains("belongs to `acme`"), "{claimed:?}");
    }
}
