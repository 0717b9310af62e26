//! Stepwise: a workflow engine whose steps are sandboxed WebAssembly components.
//!
//! A workflow is a graph of steps; each step is a component implementing the
//! WIT world `stepwise:step/step@0.1.0` (`invoke` and `compensate`). The engine
//! wires outputs into later inputs, runs independent steps concurrently,
//! retries transient failures with backoff and, when a step fails for good,
//! compensates the completed steps in reverse order (a saga).
//!
//! Module map (see DESIGN.md):
//! - [`workflow`]: definitions (file format, Rust builder), validation, the step graph;
//! - [`plugin`]: finding, validating and compiling step components;
//! - [`sandbox`]: the wasmtime engine, linker, limits and host capabilities;
//! - [`engine`]: the saga state machine and the driver that performs its commands;
//! - [`store`]: the execution log (`ExecutionStore`);
//! - [`tenants`]: which hook handlers each tenant binds;
//! - [`cli`]: the `stepwise` command line;
//! - [`bench`]: the performance harness (`stepwise bench`).

pub mod bench;
pub mod cli;
pub mod engine;
pub mod failure;
pub mod ids;
pub mod plugin;
pub mod sandbox;
pub mod server;
pub mod services;
pub mod store;
pub mod tenants;
pub mod time;
pub mod watch;
pub mod workflow;
