//! Any bytes as a client frame: decoded as the WebSocket task decodes them, and compared with
//! serde_json's reading of the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|frame: &[u8]| aimcs_fuzz::client_frame::check(frame));
