//! Host capabilities offered to guests as WIT imports, one module each.
//!
//! Every capability implements [`Capability`]: it names the WIT interface it
//! provides and adds its functions to the linker. Adding a capability means
//! one new file and one entry in [`all`]. Which plugin may use which
//! capability (grants) is decided in one place, at plugin load.

mod config;
pub mod http;
pub mod http_grant;
mod http_send;
pub mod kv;
mod log;
mod services;
mod types;

use super::{Grants, HostState};
use wasmtime::component::Linker;

/// A host capability: a WIT interface of package `stepwise:step` backed by host code.
pub trait Capability: Send + Sync {
    /// The interface name without package version, e.g. `stepwise:step/log`.
    fn interface(&self) -> &'static str;

    /// Whether `grants` allow a plugin to import it.
    fn is_granted(&self, grants: &Grants) -> bool;

    /// How a manifest grants it, for error messages.
    fn grant_hint(&self) -> &'static str;

    /// Adds the interface's functions to the linker.
    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
}

/// Every capability the host implements.
pub fn all() -> Vec<Box<dyn Capability>> {
    vec![
        Box::new(types::Types),
        Box::new(log::Log),
        Box::new(config::Config),
        Box::new(kv::Kv),
        Box::new(services::Services),
        Box::new(http::Http),
    ]
}
