//! libFuzzer's entry for [`c10k_fuzz::chunked_body`]; the target and what it checks are in src/lib.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| c10k_fuzz::chunked_body(data));
