//! `stepwise:step/types`: types only, no functions; linked so that components
//! importing it (all of them) instantiate.

use super::Capability;
use crate::sandbox::bindings::stepwise::step::types;
use crate::sandbox::{Grants, HostState};
use wasmtime::component::{HasSelf, Linker};

/// The types-only interface.
pub struct Types;

impl types::Host for HostState {}

impl Capability for Types {
    fn interface(&self) -> &'static str {
        "stepwise:step/types"
    }

    fn is_granted(&self, _grants: &Grants) -> bool {
        true
    }

    fn grant_hint(&self) -> &'static str {
        "always granted (types only)"
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }
}
