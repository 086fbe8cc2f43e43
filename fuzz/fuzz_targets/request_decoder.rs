//! libFuzzer's entry for [`c10k_fuzz::request_decoder`]; the target and what it checks are in src/lib.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| c10k_fuzz::request_decoder(data));
