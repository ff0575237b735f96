//! The AIMCS backend's composition root: configuration, logging, wiring of adapters to the
//! application, the command line and shutdown.
//!
//! # Layout
//! - [`settings`]: `Settings::load()`, layered defaults, TOML file and environment.
//! - [`telemetry`]: logging, set up once.
//! - [`app`]: `App::build()`, `App::local_addr()`, `App::run_until_stopped()`, signals.
//! - [`cli`]: the `aimcs-backend` commands.
//! - [`check`]: the smoke test of a running deployment (`aimcs-backend check URL`).

pub mod app;
pub mod check;
pub mod cli;
pub mod consume;
pub mod settings;
pub mod telemetry;

pub use aimcs_adapters::ShutdownReport;
pub use app::{App, Overrides, StartupError, VERSION};
pub use settings::Settings;
