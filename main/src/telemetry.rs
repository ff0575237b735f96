//! Logging, set up once at start-up: readable lines for a terminal or JSON lines for a log
//! collector, filtered by the configured level unless `RUST_LOG` says otherwise.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::settings::{LogConfig, LogFormat};

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `RUST_LOG` holds something that is not a filter.
    #[error("RUST_LOG is not a valid log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A subscriber was already installed (only possible when embedding the library).
    #[error("logging was already initialised")]
    AlreadyInitialised,
}

/// Installs the global subscriber described by `config`.
///
/// # Errors
/// [`TelemetryError`] when `RUST_LOG` is invalid or logging is already set up.
pub fn init(config: &LogConfig) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(config.level.as_str())?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let installed = match config.format {
        // Colours only where a person is reading; captured output stays plain text.
        LogFormat::Pretty => builder
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        // The current span's fields (the connection id) go on every line, and event fields sit
        // at the top level where log queries expect them.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInitialised)
}
