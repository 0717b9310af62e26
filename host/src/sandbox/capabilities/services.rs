//! `stepwise:step/services`: calls into services the host registered, limited
//! to the services named in the plugin's manifest.

use super::Capability;
use crate::sandbox::bindings::stepwise::step::services;
use crate::sandbox::{Grants, HostState};
use wasmtime::component::{HasSelf, Linker};

/// The services capability.
pub struct Services;

impl services::Host for HostState {
    /// Runs a service that may block on a blocking thread: the guest waits
    /// without holding a tokio worker, and the call's deadline (which the
    /// service sees in [`crate::services::Caller::deadline`]) abandons the
    /// wait. One that answers from memory, or only waits for another thread
    /// ([`crate::services::Service::may_block`] `false`), runs in place.
    async fn call(&mut self, service: String, method: String, input: String) -> Result<String, String> {
        if !self.plugin.services.contains(&service) {
            return Err(format!("service `{service}` is not granted to plugin `{}`", self.plugin.plugin));
        }
        let Some(handler) = self.resources.services.get(&service).cloned() else {
            return Err(format!("no service `{service}` is registered in this host"));
        };
        let input = serde_json::from_str(&input).map_err(|error| format!("input is not valid JSON: {error}"))?;
        if !handler.may_block() {
            return Ok(handler.start(&method, input, &self.caller).finish().await?.to_string());
        }
        let caller = self.caller.clone();
        let output = tokio::task::spawn_blocking(move || handler.call(&method, input, &caller))
            .await
            .map_err(|error| format!("service `{service}` failed: {error}"))??;
        Ok(output.to_string())
    }
}

impl Capability for Services {
    fn interface(&self) -> &'static str {
        "stepwise:step/services"
    }

    fn is_granted(&self, grants: &Grants) -> bool {
        !grants.services.is_empty()
    }

    fn grant_hint(&self) -> &'static str {
        "`services = [\"<name>\", ...]` under [capabilities]"
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        services::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }
}
