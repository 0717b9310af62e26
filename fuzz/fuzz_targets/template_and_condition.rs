//! Fuzzes `stepwise::fuzz_targets::template_and_condition` (see its documentation).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stepwise::fuzz_targets::template_and_condition(data));
