//! Replays what the fuzz targets in `tests/fuzz` start from (`seeds/<target>/`) and every
//! input they ever failed on (`regressions/<target>/`) through the targets' own checks, so a
//! crash, once found, stays a test: on the stable toolchain, in every `cargo test` run. See
//! `tests/fuzz/regressions/README.md`.
//!
//! Needs the `fuzzing` feature, which exposes the frame decoder; without it this file is empty.
#![cfg(feature = "fuzzing")]

#[path = "../../tests/fuzz/src/client_frame.rs"]
pub mod client_frame;
#[path = "../../tests/fuzz/src/connection.rs"]
pub mod connection;

use std::any::Any;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

#[test]
fn every_client_frame_the_fuzzer_started_from_or_failed_on_passes_its_checks() {
    replay("client_frame", client_frame::check);
}

#[test]
fn every_conversation_the_fuzzer_started_from_or_failed_on_passes_its_checks() {
    replay("connection", connection::check);
}

/// Runs `check` on every input of `target`, and fails naming each input that fails, not only
/// the first.
fn replay(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz");
    let seeds = inputs(&fuzz.join("seeds").join(target));
    assert!(
        !seeds.is_empty(),
        "no seeds for {target} in {}",
        fuzz.display()
    );
    let inputs: Vec<PathBuf> = seeds
        .into_iter()
        .chain(inputs(&fuzz.join("regressions").join(target)))
        .collect();
    let failures: Vec<String> = inputs
        .iter()
        .filter_map(|path| {
            let input = std::fs::read(path).expect("fuzz inputs are readable");
            let outcome = catch_unwind(|| check(&input));
            outcome
                .err()
                .map(|cause| format!("{}: {}", path.display(), panic_message(&*cause)))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {target} inputs fail:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

/// The files of `dir`, in name order; none if it does not exist. Dot files and `README.md` are
/// not inputs.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.expect("fuzz input folders are readable").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| !name.starts_with('.') && name != "README.md")
        })
        .collect();
    paths.sort();
    paths
}

fn panic_message(cause: &(dyn Any + Send)) -> &str {
    cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("panicked")
}
