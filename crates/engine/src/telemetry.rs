//! Logging setup: `tracing` with a pretty or JSON formatter and an `EnvFilter`.
//!
//! `RUST_LOG` wins over the configured level, so an operator can turn up one module without
//! editing the config. Event messages and field names (`job_id`, `run_id`, `error`) are part
//! of the user interface: shippers match on them, so they change only deliberately.
//!
//! Text from outside (a script's output, a server's error) may carry terminal control
//! sequences. `exec` escapes its output lines itself (so the JSON and the stored message are
//! clean too); the pretty format additionally passes every record through [`Escaping`], which
//! escapes the control characters left (carriage return, ESC, other C0 and C1 controls), so
//! nothing in a log line can move the cursor, recolour or overwrite a terminal. The JSON
//! format needs no such step: JSON strings escape control characters.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::prelude::*;

use crate::ops::RunLogLayer;

use crate::config::LogFormat;

/// The filter: `RUST_LOG` if set and valid, else `level`.
pub fn filter(level: &str) -> EnvFilter {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// Builds a subscriber writing to `writer` (tests pass a buffer). Besides the formatted log,
/// it carries [`RunLogLayer`], which keeps the events of each run with the run (at `info` and
/// above, whatever the console's filter: a run's stored log does not depend on `log.level`).
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let runs = RunLogLayer.with_filter(LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(runs);
    match format {
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_writer(writer)
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            ),
        ),
        LogFormat::Pretty => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(false)
                    .with_writer(Escaping(writer))
                    .with_filter(filter),
            ),
        ),
    }
}

/// A writer that escapes control characters in what it writes, except the newline that ends
/// (or separates lines of) a record and tab: `\r` and C0/DEL bytes become `\xNN`, C1 controls
/// (U+0080..U+009F) and the bidirectional-formatting and invisible characters of
/// [`soarjobd_core::is_bidi_or_invisible`] (U+202E, U+2066, ...) become `\u{NNNN}`. It works on
/// bytes, so a record split across writes cannot be corrupted (a multi-byte character split
/// across two writes is the only thing it would miss; the formatter writes a record in one
/// call), and bytes that are not UTF-8 pass through as they are.
pub struct Escaping<W>(pub W);

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Escaping<W> {
    type Writer = Escaping<W::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        Escaping(self.0.make_writer())
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Escaping(self.0.make_writer_for(meta))
    }
}

/// The character starting at `buf[i]` (a multi-byte UTF-8 sequence), with its length.
fn char_at(buf: &[u8], i: usize) -> Option<(char, usize)> {
    let len = match buf[i] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let c = std::str::from_utf8(buf.get(i..i + len)?)
        .ok()?
        .chars()
        .next()?;
    Some((c, len))
}

impl<W: std::io::Write> std::io::Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Fast path: printable ASCII (with newline and tab) needs nothing.
        let clean = |b: u8| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\t';
        if buf.iter().all(|b| clean(*b)) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 16);
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            if b >= 0x80 {
                if let Some((c, len)) = char_at(buf, i) {
                    if c.is_control() || soarjobd_core::is_bidi_or_invisible(c) {
                        out.extend_from_slice(format!("\\u{{{:x}}}", c as u32).as_bytes());
                    } else {
                        out.extend_from_slice(&buf[i..i + len]);
                    }
                    i += len;
                } else {
                    out.push(b);
                    i += 1;
                }
                continue;
            }
            if clean(b) {
                out.push(b);
            } else if b == b'\r' {
                out.extend_from_slice(b"\\r");
            } else {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            i += 1;
        }
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Installs the global subscriber (stderr). Safe to call more than once: later calls are
/// ignored.
pub fn init(format: LogFormat, level: &str) {
    let sub = subscriber(format, filter(level), std::io::stderr);
    let _ = tracing::subscriber::set_global_default(sub);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn the_pretty_format_escapes_control_characters_from_any_field() {
        let buf = Buf::default();
        let sub = subscriber(LogFormat::Pretty, EnvFilter::new("info"), buf.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                error = %"server said: 50%\rdone \x1b[31mred\x1b[0m \u{9b}2J é\tok\ncaused by: x",
                "request failed"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(
                "server said: 50%\\rdone \\x1b[31mred\\x1b[0m \\u{9b}2J é\tok\ncaused by: x"
            ),
            "{text}"
        );
        assert!(!text.bytes().any(|b| b == 0x1b || b == b'\r'), "{text:?}");
        assert!(text.ends_with('\n'));
    }

    /// A right-to-left override (or an isolate) in a field reaches the terminal escaped, so it
    /// cannot reorder what the operator reads; other non-ASCII text is left alone.
    #[test]
    fn the_pretty_format_escapes_bidi_overrides() {
        let buf = Buf::default();
        let sub = subscriber(LogFormat::Pretty, EnvFilter::new("info"), buf.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                job = %"evil\u{202e}txt.exe \u{2066}x\u{2069} \u{feff}ok",
                name = "Ñandú 日本",
                "loaded"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("evil\\u{202e}txt.exe \\u{2066}x\\u{2069} \\u{feff}ok"),
            "{text}"
        );
        assert!(text.contains("Ñandú 日本"), "{text}");
        assert!(
            !text.chars().any(soarjobd_core::is_bidi_or_invisible),
            "{text:?}"
        );
    }
}
