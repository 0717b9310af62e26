//! The QuickJS step runtime for world `skippable-step-log` (the log only).
// wit-bindgen's export glue passes the flattened record as arguments.
#![allow(clippy::too_many_arguments)]
stepwise_qjs::export_runtime!(world: "skippable-step-log", wit: "../../../../../wit", services: false, config: false);
