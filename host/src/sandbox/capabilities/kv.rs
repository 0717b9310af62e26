//! `stepwise:step/kv`: a key-value store private to each plugin.
//!
//! The namespace is chosen by the host (the plugin's name, prefixed by the
//! execution's tenant: `tenant/plugin`), never by the guest, so a plugin
//! cannot name another plugin's keys, nor one tenant's handler another's.
//! The data and its quotas are the store's ([`crate::store::kv`]).

use super::Capability;
use crate::sandbox::bindings::stepwise::step::kv;
use crate::sandbox::{Grants, HostState};
use wasmtime::component::{HasSelf, Linker};

/// The kv capability.
pub struct Kv;

/// An operation on a durable store (which waits for its disk or its
/// database) runs on a blocking thread, so the guest's wait holds no tokio
/// worker and the call's deadline can abandon it; one in memory runs in place.
impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.off_worker(move |kv, namespace| kv.get(namespace, &key).ok().flatten()).await.flatten()
    }

    async fn set(&mut self, key: String, value: String) -> Result<(), String> {
        self.off_worker(move |kv, namespace| kv.set(namespace, &key, &value))
            .await
            .unwrap_or_else(|| Err("the kv store failed".to_string()))
    }

    async fn delete(&mut self, key: String) -> bool {
        self.off_worker(move |kv, namespace| kv.delete(namespace, &key).unwrap_or(false)).await.unwrap_or(false)
    }
}

impl HostState {
    /// Runs `operation` on this plugin's kv namespace on a blocking thread;
    /// `None` if that thread panicked.
    fn off_worker<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&dyn crate::store::kv::KvStore, &str) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Option<T>> + Send + 'static {
        let (kv, namespace) = (self.resources.kv.clone(), self.kv_namespace.clone());
        async move {
            if !kv.may_block() {
                return Some(operation(kv.as_ref(), &namespace));
            }
            tokio::task::spawn_blocking(move || operation(kv.as_ref(), &namespace)).await.ok()
        }
    }
}

impl Capability for Kv {
    fn interface(&self) -> &'static str {
        "stepwise:step/kv"
    }

    fn is_granted(&self, grants: &Grants) -> bool {
        grants.kv
    }

    fn grant_hint(&self) -> &'static str {
        "`kv = true` under [capabilities]"
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        kv::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }
}
