//! Fuzzes `stepwise::fuzz_targets::workflow_file` (see its documentation).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stepwise::fuzz_targets::workflow_file(data));
