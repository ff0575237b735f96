//! Any bytes as a script of frames, reconnects, resumes and sink failures, played against
//! the real service (see `aimcs_fuzz::connection` for the script's notation).
#![no_main]

libfuzzer_sys::fuzz_target!(|script: &[u8]| aimcs_fuzz::connection::check(script));
