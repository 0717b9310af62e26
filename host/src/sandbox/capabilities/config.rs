//! `stepwise:step/config`: read-only settings and secrets from the manifest.

use super::Capability;
use crate::sandbox::bindings::stepwise::step::config;
use crate::sandbox::{Grants, HostState};
use wasmtime::component::{HasSelf, Linker};

/// The config capability.
pub struct Config;

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.plugin.config.as_ref()?.get(&key).cloned()
    }
}

impl Capability for Config {
    fn interface(&self) -> &'static str {
        "stepwise:step/config"
    }

    fn is_granted(&self, grants: &Grants) -> bool {
        grants.config.is_some()
    }

    fn grant_hint(&self) -> &'static str {
        "`config = true` under [capabilities]"
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }
}
