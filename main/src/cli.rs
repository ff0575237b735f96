//! The command line: run the service (the default), probe a local one for a container
//! `HEALTHCHECK`, or smoke-test a deployment.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::app::{App, VERSION, shutdown_signal};
use crate::settings::Settings;
use crate::{check, consume, telemetry};

/// Exit code for a bad command line or configuration (`EX_USAGE`).
const EXIT_USAGE: u8 = 64;
/// Exit code when the service cannot start (`EX_UNAVAILABLE`).
const EXIT_UNAVAILABLE: u8 = 69;

const USAGE: &str = "\
AIMCS backend: real-time audio ingest over WebSocket, plus a small HTTP API.

Usage:
  aimcs-backend [serve] [--config PATH]        run the service (the default)
  aimcs-backend healthcheck [--config PATH]    exit 0 if the local service's /livez answers 200
  aimcs-backend check URL [--origin ORIGIN]    smoke-test a running deployment, e.g.
                                               aimcs-backend check http://127.0.0.1:3000
                                               (CORS is checked for ORIGIN, by default
                                               https://aimcs.net, the front end's)
  aimcs-backend redis-consume --session ID --out FILE [--config PATH]
                                               write one session's audio, read back from its
                                               Redis stream, to FILE (the bytes as sent)
  aimcs-backend redis-consume --group NAME --dir DIR [--consumer NAME]
                [--max-sessions N] [--config PATH]
                                               a worker of consumer group NAME: each session
                                               the index announces, to DIR/<session>.<ext>
  aimcs-backend --help | --version

Settings come from embedded defaults, then the TOML file given by --config or APP_CONFIG,
then PORT and NODE_ENV, then APP_* variables (APP_SERVER__PORT=8080); see README.md.";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the service.
    Serve {
        /// `--config PATH`.
        config: Option<PathBuf>,
    },
    /// Probe the local service's `/health`.
    Healthcheck {
        /// `--config PATH`, to find the port.
        config: Option<PathBuf>,
    },
    /// Smoke-test a deployment.
    Check {
        /// Base URL of the deployment.
        url: String,
        /// The browser origin whose CORS access is checked.
        origin: String,
    },
    /// Read sessions back from Redis.
    Consume {
        /// `--config PATH`, for the Redis settings.
        config: Option<PathBuf>,
        /// What to read.
        target: ConsumeTarget,
    },
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// What `redis-consume` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumeTarget {
    /// One session, to one file.
    Session {
        /// The session id.
        session: String,
        /// The file to write.
        out: PathBuf,
    },
    /// Every session the index announces, as one worker of a consumer group.
    Group {
        /// The group.
        group: String,
        /// This worker's name in it.
        consumer: String,
        /// Where files go.
        dir: PathBuf,
        /// Stop after this many sessions; `None` runs until stopped.
        max_sessions: Option<u64>,
    },
}

impl Command {
    /// Parses the arguments after the program name.
    ///
    /// # Errors
    /// A message saying what is wrong with the arguments.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let args: Vec<String> = args
            .into_iter()
            .map(|arg| {
                arg.into_string()
                    .map_err(|arg| format!("argument {arg:?} is not valid UTF-8"))
            })
            .collect::<Result<_, _>>()?;
        let mut args = args.iter().map(String::as_str).peekable();
        #[derive(Clone, Copy)]
        enum Verb {
            Serve,
            Healthcheck,
            Check,
            Consume,
        }
        let verb = match args.peek().copied() {
            Some("serve") => Some(Verb::Serve),
            Some("healthcheck") => Some(Verb::Healthcheck),
            Some("check") => Some(Verb::Check),
            Some("redis-consume") => Some(Verb::Consume),
            _ => None,
        };
        if verb.is_some() {
            args.next();
        }
        let mut config = None;
        let mut origin = None;
        let mut consume = std::collections::HashMap::new();
        let mut positional = Vec::new();
        while let Some(arg) = args.next() {
            match arg {
                "--session" | "--out" | "--group" | "--consumer" | "--dir" | "--max-sessions"
                    if matches!(verb, Some(Verb::Consume)) =>
                {
                    let value = args.next().ok_or(format!("{arg} needs a value"))?;
                    consume.insert(arg, value.to_owned());
                }
                "-h" | "--help" => return Ok(Self::Help),
                "-V" | "--version" => return Ok(Self::Version),
                "--config" => {
                    let path = args.next().ok_or("--config needs a path")?;
                    config = Some(PathBuf::from(path));
                }
                _ if arg.starts_with("--config=") => {
                    config = Some(PathBuf::from(&arg["--config=".len()..]))
                }
                "--origin" => {
                    origin = Some(args.next().ok_or("--origin needs an origin")?.to_owned());
                }
                _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
                _ => positional.push(arg),
            }
        }
        match (verb, positional.as_slice()) {
            (None | Some(Verb::Serve), []) => Ok(Self::Serve { config }),
            (Some(Verb::Healthcheck), []) => Ok(Self::Healthcheck { config }),
            (Some(Verb::Check), [url]) => Ok(Self::Check {
                url: (*url).to_owned(),
                origin: origin.unwrap_or_else(|| check::DEFAULT_ORIGIN.to_owned()),
            }),
            (Some(Verb::Check), _) => {
                Err("check needs exactly one URL, e.g. http://127.0.0.1:3000".into())
            }
            (Some(Verb::Consume), []) => Ok(Self::Consume {
                config,
                target: consume_target(consume)?,
            }),
            (_, [extra, ..]) => Err(format!("unexpected argument {extra:?}")),
        }
    }
}

fn consume_target(
    mut options: std::collections::HashMap<&str, String>,
) -> Result<ConsumeTarget, String> {
    let target = match (options.remove("--session"), options.remove("--group")) {
        (Some(session), None) => ConsumeTarget::Session {
            session,
            out: options
                .remove("--out")
                .ok_or("--session needs --out FILE")?
                .into(),
        },
        (None, Some(group)) => ConsumeTarget::Group {
            group,
            consumer: options
                .remove("--consumer")
                .unwrap_or_else(|| format!("worker-{}", std::process::id())),
            dir: options
                .remove("--dir")
                .ok_or("--group needs --dir DIR")?
                .into(),
            max_sessions: match options.remove("--max-sessions") {
                Some(n) => Some(
                    n.parse()
                        .map_err(|_| format!("--max-sessions {n:?} is not a whole number"))?,
                ),
                None => None,
            },
        },
        _ => return Err("redis-consume needs either --session ID or --group NAME".into()),
    };
    match options.keys().next() {
        Some(extra) => Err(format!("{extra} does not go with this redis-consume")),
        None => Ok(target),
    }
}

/// Runs the command line and returns the process's exit code.
pub async fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let command = match Command::parse(args) {
        Ok(command) => command,
        Err(message) => return usage_error(&message),
    };
    match command {
        Command::Help => say(USAGE),
        Command::Version => say(&format!("aimcs-backend {VERSION}")),
        Command::Serve { config } => serve(config).await,
        Command::Healthcheck { config } => healthcheck(config).await,
        Command::Check { url, origin } => check::run(&url, &origin).await,
        Command::Consume { config, target } => {
            let settings = match Settings::load(config.as_deref()) {
                Ok(settings) => settings,
                Err(error) => return usage_error(&error.to_string()),
            };
            consume::run(&settings, target).await
        }
    }
}

async fn serve(config: Option<PathBuf>) -> ExitCode {
    let settings = match Settings::load(config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => return usage_error(&error.to_string()),
    };
    if let Err(error) = telemetry::init(&settings.log) {
        return usage_error(&error.to_string());
    }
    let app = match App::build(&settings).await {
        Ok(app) => app,
        Err(error) => {
            let mut causes = Vec::new();
            let mut next = std::error::Error::source(&error);
            while let Some(cause) = next {
                causes.push(cause.to_string());
                next = cause.source();
            }
            // Some causes repeat their own cause in their message; each is said once.
            causes.dedup_by(|later, earlier| earlier.ends_with(later.as_str()));
            let cause = causes.join(": ");
            tracing::error!(error = %error, cause, "cannot start");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    // Signal handlers go in before the service says it is listening.
    let shutdown = shutdown_then_force_on_second_signal();
    for variable in Settings::ignored_variables() {
        tracing::warn!(
            variable,
            "ignored: not a setting (nested settings use __, e.g. APP_SERVER__PORT)"
        );
    }
    tracing::info!(
        addr = %app.local_addr(),
        version = VERSION,
        environment = settings.environment,
        sink = ?settings.audio.sink.kinds(),
        "listening"
    );
    let report = app.run_until_stopped(shutdown).await;
    tracing::info!(
        drained = report.drained,
        abandoned = report.abandoned,
        "stopped"
    );
    ExitCode::SUCCESS
}

/// The first signal starts a graceful shutdown; a second one, for an operator who will not
/// wait, exits at once. Both listeners are installed before this returns.
fn shutdown_then_force_on_second_signal() -> impl std::future::Future<Output = ()> {
    let first = shutdown_signal();
    async move {
        first.await;
        let second = shutdown_signal();
        tokio::spawn(async move {
            second.await;
            tracing::warn!("second signal: exiting without waiting for connections");
            std::process::exit(1);
        });
    }
}

async fn healthcheck(config: Option<PathBuf>) -> ExitCode {
    let settings = match Settings::load(config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => return usage_error(&error.to_string()),
    };
    let host = match settings.server.host {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let tls = settings.server.tls.is_some();
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{}/livez", settings.server.port);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        // The certificate names the public host, not the loopback address asked here; the
        // check sends nothing secret and reads one status code, so it does not verify.
        .danger_accept_invalid_certs(tls)
        .build();
    let status = match client {
        Ok(client) => client
            .get(&url)
            .send()
            .await
            .map(|response| response.status()),
        Err(error) => Err(error),
    };
    match status {
        Ok(status) if status.is_success() => ExitCode::SUCCESS,
        Ok(status) => {
            let _ = writeln!(std::io::stderr(), "unhealthy: {url} answered {status}");
            ExitCode::FAILURE
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "unhealthy: {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn say(text: &str) -> ExitCode {
    let _ = writeln!(std::io::stdout(), "{text}");
    ExitCode::SUCCESS
}

fn usage_error(message: &str) -> ExitCode {
    let _ = writeln!(
        std::io::stderr(),
        "aimcs-backend: {message}\nRun `aimcs-backend --help` for usage."
    );
    ExitCode::from(EXIT_USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        Command::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_arguments_runs_the_service() {
        assert_eq!(parse(&[]), Ok(Command::Serve { config: None }));
    }

    #[test]
    fn a_config_file_can_be_given_to_serve_and_healthcheck() {
        let config = Some(PathBuf::from("prod.toml"));
        assert_eq!(
            parse(&["--config", "prod.toml"]),
            Ok(Command::Serve {
                config: config.clone()
            })
        );
        assert_eq!(
            parse(&["serve", "--config=prod.toml"]),
            Ok(Command::Serve {
                config: config.clone()
            })
        );
        assert_eq!(
            parse(&["healthcheck", "--config", "prod.toml"]),
            Ok(Command::Healthcheck { config })
        );
    }

    #[test]
    fn check_takes_one_url() {
        assert_eq!(
            parse(&["check", "http://x:1"]),
            Ok(Command::Check {
                url: "http://x:1".into(),
                origin: "https://aimcs.net".into(),
            })
        );
        assert!(parse(&["check"]).is_err());
        assert!(parse(&["check", "a", "b"]).is_err());
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(parse(&["--config"]), Err("--config needs a path".into()));
        assert_eq!(
            parse(&["--verbose"]),
            Err("unknown option --verbose".into())
        );
        assert_eq!(
            parse(&["launch"]),
            Err("unexpected argument \"launch\"".into())
        );
    }

    #[test]
    fn redis_consume_reads_one_session_or_works_in_a_group() {
        assert_eq!(
            parse(&["redis-consume", "--session", "s1", "--out", "a.pcm"]),
            Ok(Command::Consume {
                config: None,
                target: ConsumeTarget::Session {
                    session: "s1".into(),
                    out: "a.pcm".into()
                }
            })
        );
        assert_eq!(
            parse(&[
                "redis-consume",
                "--group",
                "stt",
                "--consumer",
                "w1",
                "--dir",
                "out",
                "--max-sessions",
                "2"
            ]),
            Ok(Command::Consume {
                config: None,
                target: ConsumeTarget::Group {
                    group: "stt".into(),
                    consumer: "w1".into(),
                    dir: "out".into(),
                    max_sessions: Some(2)
                }
            })
        );
        assert_eq!(
            parse(&["redis-consume", "--session", "s1"]),
            Err("--session needs --out FILE".into())
        );
        assert_eq!(
            parse(&[
                "redis-consume",
                "--session",
                "s1",
                "--out",
                "f",
                "--dir",
                "d"
            ]),
            Err("--dir does not go with this redis-consume".into())
        );
        assert!(parse(&["redis-consume"]).is_err());
        assert_eq!(
            parse(&["serve", "--session", "s1"]),
            Err("unknown option --session".into())
        );
    }

    #[test]
    fn help_and_version_win_over_everything_else() {
        assert_eq!(parse(&["check", "--help"]), Ok(Command::Help));
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
    }
}
