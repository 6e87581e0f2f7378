//! `kv_body`: see `hearsay::fuzzing::kv_body` for what the bytes are and what
//! they are driven into.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hearsay::fuzzing::kv_body(data));
