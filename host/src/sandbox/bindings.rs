//! Host bindings generated from `wit/step.wit`.

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
