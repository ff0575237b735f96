//! The `aimcs-backend` binary: everything it does lives in the library, so that tests can
//! build and run the same service.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    aimcs_backend::cli::run(std::env::args_os().skip(1)).await
}
