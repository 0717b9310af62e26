//! Where the `kv` capability's data lives: the [`KvStore`] trait the stores
//! implement (SQLite persists it beside the executions; [`MemoryKv`] keeps
//! it in memory), and the quotas every implementation enforces. The
//! capability that guests call is in `sandbox::capabilities::kv`; this
//! module knows nothing of guests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Most entries per namespace.
pub const MAX_ENTRIES: usize = 10_000;

/// Where kv data lives: in memory now, in the execution store once it is durable.
pub trait KvStore: Send + Sync {
    /// The value of `key` in `namespace`.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, String>;
    /// Sets `key` in `namespace`, within the quotas.
    fn set(&self, namespace: &str, key: &str, value: &str) -> Result<(), String>;
    /// Deletes `key` in `namespace`; whether it existed.
    fn delete(&self, namespace: &str, key: &str) -> Result<bool, String>;
    /// Whether an operation may wait on a disk or a database (it then runs
    /// on a blocking thread, under the step's deadline).
    fn may_block(&self) -> bool {
        true
    }
}

/// A kv store in memory.
#[derive(Default)]
pub struct MemoryKv {
    namespaces: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

/// Checks a write against the quotas.
pub fn check_quota(key: &str, value: &str, entries: usize, is_new: bool) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("key must be 1 to {MAX_KEY_BYTES} bytes"));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("value of {} bytes exceeds the limit of {MAX_VALUE_BYTES} bytes", value.len()));
    }
    if is_new && entries >= MAX_ENTRIES {
        return Err(format!("the namespace holds the maximum of {MAX_ENTRIES} entries"));
    }
    Ok(())
}

impl KvStore for MemoryKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<String>, String> {
        let namespaces = self.namespaces.lock().expect("kv lock");
        Ok(namespaces.get(namespace).and_then(|entries| entries.get(key)).cloned())
    }

    fn set(&self, namespace: &str, key: &str, value: &str) -> Result<(), String> {
        let mut namespaces = self.namespaces.lock().expect("kv lock");
        let entries = namespaces.entry(namespace.to_string()).or_default();
        check_quota(key, value, entries.len(), !entries.contains_key(key))?;
        entries.insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool, String> {
        let mut namespaces = self.namespaces.lock().expect("kv lock");
        Ok(namespaces.get_mut(namespace).is_some_and(|entries| entries.remove(key).is_some()))
    }

    fn may_block(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_separate_and_quotas_hold() {
        let kv = MemoryKv::default();
        kv.set("a", "k", "1").unwrap();
        assert_eq!(kv.get("a", "k").unwrap().as_deref(), Some("1"));
        assert_eq!(kv.get("b", "k").unwrap(), None);
        assert!(!kv.delete("b", "k").unwrap());
        assert!(kv.set("a", "big", &"x".repeat(MAX_VALUE_BYTES + 1)).is_err());
        assert!(kv.set("a", "", "v").is_err());
        assert!(kv.delete("a", "k").unwrap());
    }
}
