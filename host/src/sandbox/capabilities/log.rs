//! `stepwise:step/log`: levelled log lines into the execution's timeline.
//! Always granted; bounded per call by `Limits::max_log_bytes`.

use super::Capability;
use crate::journal::LogLevel;
use crate::sandbox::bindings::stepwise::step::log::{self, Level};
use crate::sandbox::{Grants, HostState};
use wasmtime::component::{HasSelf, Linker};

/// The log capability.
pub struct Log;

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.logs.push(level, message, self.max_log_bytes);
    }
}

impl Capability for Log {
    fn interface(&self) -> &'static str {
        "stepwise:step/log"
    }

    fn is_granted(&self, _grants: &Grants) -> bool {
        true
    }

    fn grant_hint(&self) -> &'static str {
        "always granted"
    }

    fn add_to_linker(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }
}
