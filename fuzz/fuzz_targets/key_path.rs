//! `key_path`: see `hearsay::fuzzing::key_path` for what the bytes are and what
//! they are driven into.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hearsay::fuzzing::key_path(data));
