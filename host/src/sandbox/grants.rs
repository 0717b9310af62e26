//! What one plugin may use (its grants, from its manifest) and the host-wide
//! resources its capabilities reach (the kv store, the service registry).

use super::capabilities::http_grant::HttpGrant;
use crate::services::ServiceRegistry;
use crate::store::kv::{KvStore, MemoryKv};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The capabilities granted to one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants {
    /// The plugin's name (its kv namespace and its identity towards services).
    pub plugin: String,
    /// Settings and secrets, when `config` is granted.
    pub config: Option<BTreeMap<String, String>>,
    /// Whether `kv` is granted.
    pub kv: bool,
    /// Services it may call.
    pub services: BTreeSet<String>,
    /// Hosts, addresses and ranges it may send HTTP requests to.
    pub http_hosts: Arc<[HttpGrant]>,
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            plugin: String::new(),
            config: None,
            kv: false,
            services: BTreeSet::new(),
            http_hosts: Arc::from(Vec::new()),
        }
    }
}

impl Grants {
    /// Only `log`: what a plugin without a manifest gets.
    pub fn log_only(plugin: &str) -> Self {
        Self { plugin: plugin.to_string(), ..Self::default() }
    }

    /// Names of the granted capabilities, for listings.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec!["log".to_string()];
        if self.config.is_some() {
            names.push("config".into());
        }
        if self.kv {
            names.push("kv".into());
        }
        names.extend(self.services.iter().map(|service| format!("services:{service}")));
        names.extend(self.http_hosts.iter().map(|host| format!("http:{host}")));
        names
    }
}

/// Host-wide resources behind the capabilities, shared by every call.
#[derive(Clone)]
pub struct HostResources {
    /// Backing store of the `kv` capability.
    pub kv: Arc<dyn KvStore>,
    /// Services callable through the `services` capability.
    pub services: Arc<ServiceRegistry>,
}

impl Default for HostResources {
    fn default() -> Self {
        Self { kv: Arc::new(MemoryKv::default()), services: Arc::new(ServiceRegistry::new()) }
    }
}
