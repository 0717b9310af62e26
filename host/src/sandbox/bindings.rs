//! Host bindings generated from `wit/step.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "step",
    exports: { default: async },
});
