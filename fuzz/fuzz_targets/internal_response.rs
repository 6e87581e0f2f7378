//! `internal_response`: see `hearsay::fuzzing::internal_response` for what the bytes are and what
//! they are driven into.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hearsay::fuzzing::internal_response(data));
