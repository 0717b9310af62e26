//! The QuickJS step runtime for world `skippable-step-kv` (log, config and kv).
// wit-bindgen's export glue passes the flattened record as arguments.
#![allow(clippy::too_many_arguments)]
stepwise_qjs::export_runtime!(world: "skippable-step-kv", wit: "../../../../../wit", services: false, config: true);
