//! Version v1 of the `versioned` test step (see `../versioned/step.rs`).

const VERSION: &str = "v1";

include!("../../versioned/step.rs");
