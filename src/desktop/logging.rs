//! The tray app's log: stderr, and a daily file in the log directory ("Open logs"),
//! kept 7 days; its window's process logs to stderr, which the tray app reads into its
//! own log (`window::log_window_line`).
use crate::store::Paths;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// Starts logging; the file's writer stops with the guard (keep it until the app exits).
pub fn init_logging(paths: &Paths) -> Option<WorkerGuard> {
    let dir = paths.logs_dir();
    let file = crate::store::ensure_private_dir(&dir)
        .map_err(|err| eprintln!("cannot create the log directory: {err}"))
        .ok()
        .and_then(|()| {
            tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("desktop")
                .filename_suffix("log")
                .max_log_files(7)
                .build(&dir)
                .map_err(|err| eprintln!("cannot open a log file in {}: {err}", dir.display()))
                .ok()
        })
        .map(tracing_appender::non_blocking);
    let (file_layer, guard) = file
        .map(|(writer, guard)| {
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer)
                .with_filter(filter());
            (layer, guard)
        })
        .unzip();
    tracing_subscriber::registry()
        .with(stderr())
        .with(file_layer)
        .init();
    guard
}

/// Starts logging to stderr only: the window's process, whose stderr the tray app
/// reads into its log.
pub fn init_stderr_logging() {
    tracing_subscriber::registry().with(stderr()).init();
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env(crate::environment::LOG_FILTER)
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

fn stderr<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(crate::environment::log_colour(
            std::io::stderr().is_terminal(),
        ))
        // Nobody may be reading stderr: a line it cannot take is dropped, not a panic
        // (see the `chroxy` binary's logging).
        .log_internal_errors(false)
        .with_filter(filter())
}
