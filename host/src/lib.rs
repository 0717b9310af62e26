//! Stepwise: a workflow engine whose steps are sandboxed WebAssembly components.
//!
//! A workflow is a graph of steps; each step is a component implementing the
//! WIT world `stepwise:step/step@0.1.0` (`invoke` and `compensate`). The engine
//! wires outputs into later inputs, runs independent steps concurrently,
//! retries transient failures with backoff and, when a step fails for good,
//! compensates the completed steps in reverse order (a saga).
//!
//! Module map (see DESIGN.md):
//! - [`access`]: API tokens and what each scope may do;
//! - [`journal`]: the execution log's vocabulary (ids, events, statuses), a leaf
//!   every other module speaks and that imports none of them;
//! - [`workflow`]: definitions (file format, Rust builder), validation, the step graph;
//! - [`plugin`]: finding, validating and compiling step components;
//! - [`sandbox`]: the wasmtime engines (one per lane), linkers, limits and host capabilities;
//! - [`engine`]: the saga state machine and the one owner per live execution that
//!   records its events and performs its commands;
//! - [`store`]: where executions are persisted (`ExecutionStore`): logs, claims, inbox, timers;
//! - [`tenants`]: which hook handlers each tenant binds;
//! - [`cli`]: the `stepwise` command line;
//! - [`bench`]: the performance harness (`stepwise bench`).

pub mod access;
pub mod bench;
pub mod cli;
pub mod engine;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod journal;
pub mod plugin;
pub mod sandbox;
pub mod server;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod watch;
pub mod workflow;
