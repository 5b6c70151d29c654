//! Logging setup: `tracing` with a pretty or JSON formatter and an `EnvFilter`.
//!
//! `RUST_LOG` wins over the configured level, so an operator can turn up one module without
//! editing the config. Event messages and field names (`job_id`, `run_id`, `error`) are part
//! of the user interface: shippers match on them, so they change only deliberately.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// The filter: `RUST_LOG` if set and valid, else `level`.
pub fn filter(level: &str) -> EnvFilter {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// Builds a subscriber writing to `writer` (tests pass a buffer).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Pretty => Box::new(builder.with_ansi(false).finish()),
    }
}

/// Installs the global subscriber (stderr). Safe to call more than once: later calls are
/// ignored.
pub fn init(format: LogFormat, level: &str) {
    let sub = subscriber(format, filter(level), std::io::stderr);
    let _ = tracing::subscriber::set_global_default(sub);
}
