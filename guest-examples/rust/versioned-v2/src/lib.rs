//! Version v2 of the `versioned` test step (see `../versioned/step.rs`).

const VERSION: &str = "v2";

include!("../../versioned/step.rs");
