//! `internal_request`: see `hearsay::fuzzing::internal_request` for what the bytes are and what
//! they are driven into.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hearsay::fuzzing::internal_request(data));
