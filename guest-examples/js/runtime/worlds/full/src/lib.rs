//! The QuickJS step runtime for world `skippable-step` (log, config, kv and services).
// wit-bindgen's export glue passes the flattened record as arguments.
#![allow(clippy::too_many_arguments)]
stepwise_qjs::export_runtime!(world: "skippable-step", wit: "../../../../../wit", services: true, config: true);
