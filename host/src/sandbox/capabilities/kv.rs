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

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.resources.kv.get(&self.kv_namespace, &key).ok().flatten()
    }

    fn set(&mut self, key: String, value: String) -> Result<(), String> {
        self.resources.kv.set(&self.kv_namespace, &key, &value)
    }

    fn delete(&mut self, key: String) -> bool {
        self.resources.kv.delete(&self.kv_namespace, &key).unwrap_or(false)
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
