//! The QuickJS step runtime for world `skippable-step-services` (log and services).
// wit-bindgen's export glue passes the flattened record as arguments.
#![allow(clippy::too_many_arguments)]
stepwise_qjs::export_runtime!(world: "skippable-step-services", wit: "../../../../../wit", services: true, config: false);
