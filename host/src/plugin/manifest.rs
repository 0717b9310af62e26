//! Plugin manifests: `<name>.toml` beside `<name>.wasm`, declaring what the
//! plugin is, which capabilities it is granted and how its limits differ from
//! the host defaults. A plugin without a manifest gets the defaults and only
//! the `log` capability.

use crate::sandbox::{Grants, Limits};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A plugin manifest as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name; must match the component's file name.
    #[serde(default)]
    pub name: Option<String>,
    /// The plugin's version (free text, e.g. `1.2.0`).
    #[serde(default)]
    pub version: Option<String>,
    /// What the plugin does.
    #[serde(default)]
    pub description: Option<String>,
    /// Capabilities granted to the plugin.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Settings readable through the `config` capability.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secrets readable through the `config` capability, each taken from a
    /// host environment variable when the plugin loads.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Limits overriding the host defaults.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// The tenant that owns the plugin: set by the server when a tenant's
    /// token uploads it; only that tenant (or an admin) may replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Capabilities a manifest can grant (`log` is always granted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Read the manifest's `config` and `secrets`.
    #[serde(default)]
    pub config: bool,
    /// Use a key-value store private to the plugin.
    #[serde(default)]
    pub kv: bool,
    /// Host services the plugin may call, by name.
    #[serde(default)]
    pub services: Vec<String>,
    /// Where the plugin may send HTTP requests: `host`, an IP address (`[v6]`)
    /// or a CIDR range, each with `:port` (without one, only the scheme's port:
    /// 80 or 443). A name must resolve to public addresses, or to addresses
    /// another entry grants.
    #[serde(default)]
    pub http: Vec<String>,
}

/// Where a secret's value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Name of the host environment variable holding the value.
    pub env: String,
}

/// Per-invocation limits; each absent field keeps the host default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Fuel (roughly, wasm instructions) per call.
    pub fuel: Option<u64>,
    /// Wall-clock deadline per call, in milliseconds (a step's `timeout_ms` overrides it).
    pub deadline_ms: Option<u64>,
    /// Linear memory per memory, in bytes.
    pub memory_bytes: Option<usize>,
    /// Elements per table.
    pub table_elements: Option<usize>,
    /// Core and component instances per call.
    pub instances: Option<usize>,
    /// Bytes of JSON input.
    pub max_input_bytes: Option<usize>,
    /// Bytes of JSON output and compensation data.
    pub max_output_bytes: Option<usize>,
    /// Bytes of stdout and of stderr captured.
    pub max_stdio_bytes: Option<usize>,
    /// Bytes of log lines kept.
    pub max_log_bytes: Option<usize>,
}

impl Manifest {
    /// Reads `<component stem>.toml` beside the component, if it exists.
    pub fn for_component(component: &Path) -> Result<Option<Self>, String> {
        match Self::text_for_component(component)? {
            Some(text) => Self::parse(&text, &component.with_extension("toml")).map(Some),
            None => Ok(None),
        }
    }

    /// The text of `<component stem>.toml` beside the component, if it exists.
    pub fn text_for_component(component: &Path) -> Result<Option<String>, String> {
        let path = component.with_extension("toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(format!("manifest {}: {error}", path.display())),
        }
    }

    /// Parses a manifest's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, String> {
        toml::from_str(text).map_err(|error| format!("manifest {}: {}", path.display(), error.message()))
    }

    /// Checks the manifest against the plugin's name and the host's limits.
    pub fn check(&self, plugin: &str, pool_max_memory: usize) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(name) = &self.name {
            if name != plugin {
                problems.push(format!("`name` is `{name}` but the component file is `{plugin}.wasm`"));
            }
        }
        for entry in &self.capabilities.http {
            if let Err(problem) = entry.parse::<crate::sandbox::capabilities::http_grant::HttpGrant>() {
                problems.push(problem);
            }
        }
        if !self.capabilities.config && (!self.config.is_empty() || !self.secrets.is_empty()) {
            problems.push("`config`/`secrets` are set but `capabilities.config` is not granted".to_string());
        }
        if let Some(memory) = self.limits.memory_bytes {
            if memory > pool_max_memory {
                problems
                    .push(format!("`limits.memory_bytes` = {memory} exceeds the host maximum of {pool_max_memory}"));
            }
        }
        for (field, value) in [
            ("fuel", self.limits.fuel.map(|v| v as usize)),
            ("deadline_ms", self.limits.deadline_ms.map(|v| v as usize)),
            ("memory_bytes", self.limits.memory_bytes),
            ("instances", self.limits.instances),
        ] {
            if value == Some(0) {
                problems.push(format!("`limits.{field}` must be greater than 0"));
            }
        }
        problems
    }

    /// The host defaults with this manifest's overrides applied.
    pub fn limits(&self, defaults: &Limits) -> Limits {
        let o = &self.limits;
        Limits {
            fuel: o.fuel.unwrap_or(defaults.fuel),
            deadline: o.deadline_ms.map(Duration::from_millis).unwrap_or(defaults.deadline),
            memory_bytes: o.memory_bytes.unwrap_or(defaults.memory_bytes),
            max_table_elements: o.table_elements.unwrap_or(defaults.max_table_elements),
            max_instances: o.instances.unwrap_or(defaults.max_instances),
            max_input_bytes: o.max_input_bytes.unwrap_or(defaults.max_input_bytes),
            max_output_bytes: o.max_output_bytes.unwrap_or(defaults.max_output_bytes),
            max_stdio_bytes: o.max_stdio_bytes.unwrap_or(defaults.max_stdio_bytes),
            max_log_bytes: o.max_log_bytes.unwrap_or(defaults.max_log_bytes),
            max_wasm_stack_bytes: defaults.max_wasm_stack_bytes,
        }
    }

    /// The grants this manifest gives plugin `plugin`, with its resolved
    /// config values (`None` unless `config` is granted).
    pub fn grants(&self, plugin: &str, config: Option<BTreeMap<String, String>>) -> Grants {
        Grants {
            plugin: plugin.to_string(),
            config: if self.capabilities.config { Some(config.unwrap_or_default()) } else { None },
            kv: self.capabilities.kv,
            services: self.capabilities.services.iter().cloned().collect(),
            // Entries that do not parse are reported by `check`, which refuses the plugin.
            http_hosts: self.capabilities.http.iter().filter_map(|entry| entry.parse().ok()).collect(),
        }
    }

    /// Resolves the `config` settings and `secrets` (from the host environment).
    pub fn config_values(&self) -> Result<BTreeMap<String, String>, String> {
        let mut values = self.config.clone();
        for (key, source) in &self.secrets {
            let value = std::env::var(&source.env)
                .map_err(|_| format!("secret `{key}`: environment variable `{}` is not set", source.env))?;
            values.insert(key.clone(), value);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_the_fields_they_set() {
        let manifest: Manifest = toml::from_str("[limits]\nfuel = 1000\ndeadline_ms = 250\n").unwrap();
        let limits = manifest.limits(&Limits::default());
        assert_eq!(limits.fuel, 1000);
        assert_eq!(limits.deadline, Duration::from_millis(250));
        assert_eq!(limits.memory_bytes, Limits::default().memory_bytes);
    }

    #[test]
    fn unknown_fields_and_inconsistent_grants_are_refused() {
        assert!(toml::from_str::<Manifest>("[capabilities]\nnetwork = true\n").is_err());
        let manifest: Manifest = toml::from_str("name = \"other\"\n[config]\nk = \"v\"\n").unwrap();
        let problems = manifest.check("mine", 1 << 30);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let manifest: Manifest = toml::from_str(
            "[capabilities]\nconfig = true\n[secrets]\ntoken = { env = \"STEPWISE_TEST_UNSET_SECRET\" }\n",
        )
        .unwrap();
        let error = manifest.config_values().unwrap_err();
        assert!(error.contains("STEPWISE_TEST_UNSET_SECRET"), "{error}");
    }
}
