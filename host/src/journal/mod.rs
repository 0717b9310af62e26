//! The execution log's vocabulary: ids, timestamps, events, timers, statuses,
//! failures and guest log lines.
//!
//! This is the leaf every other room speaks (as wasmtime's `environ` is to its
//! runtime): the state machine and the owner in `engine`, every `store`, the
//! `server` and the `cli`. It imports nothing else of the crate, holds no
//! behaviour beyond parsing and formatting its types, and must stay that way:
//! a type belongs here when it is written to (or read from) the log.

pub mod cost;
pub mod event;
pub mod failure;
pub mod ids;
pub mod json;
pub mod log_line;
pub mod status;
pub mod time;
pub mod unit;

pub use cost::CallCost;
pub use event::{EncodedEvent, Event, HandlerBinding, NodeDecision, RecordedEvent, Timer, LOG_VERSION};
pub use failure::{FailureKind, StepFailure};
pub use ids::{ExecutionId, PluginName, StepId};
pub use log_line::{LogLevel, LogLine};
pub use status::ExecutionStatus;
pub use time::Timestamp;
pub use unit::{Slot, UnitId};
