//! Host bindings generated from `wit/step.wit`: the `step` world, whose
//! `invoke` returns a response, and the `skippable-step` world, whose
//! `invoke` may also say the step skipped itself. Both share one set of
//! interfaces (types, log, config, kv, services), linked once.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "step",
    exports: { default: async },
    // Stepwise's imports that can wait (a service, a kv write) are async:
    // they run off the tokio workers and a call's deadline can stop them.
    imports: {
        "stepwise:step/services.call": async,
        "stepwise:step/kv.get": async,
        "stepwise:step/kv.set": async,
        "stepwise:step/kv.delete": async,
    },
});

/// The `skippable-step` world's exports, over the `step` world's interfaces.
pub mod skippable {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "skippable-step",
        exports: { default: async },
        with: {
            "stepwise:step/types": super::stepwise::step::types,
            "stepwise:step/log": super::stepwise::step::log,
            "stepwise:step/config": super::stepwise::step::config,
            "stepwise:step/kv": super::stepwise::step::kv,
            "stepwise:step/services": super::stepwise::step::services,
        },
    });
}
