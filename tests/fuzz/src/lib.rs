//! Fuzzing of the AIMCS backend's untrusted input: client frames, and the conversations they
//! make with the service. Each module is a check that panics when a property breaks; the fuzz
//! targets in `fuzz_targets/` feed it libFuzzer's inputs, and
//! `adapters/tests/fuzz_regressions.rs` replays the seeds and every crash ever found through
//! the same modules on the stable toolchain.

pub mod client_frame;
pub mod connection;
