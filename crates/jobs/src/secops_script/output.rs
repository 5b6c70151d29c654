//! How a SecOps script's run ended: its output object (`end_script`), and its output lines,
//! bounded as `exec` bounds them.

use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use soarjobd_core::escape_controls;
use soarjobd_core::{JobContext, Outcome};

use crate::exec::{LINE_MAX, RUN_LINES_MAX};

/// The run's outcome from the script's output object (`end_script`), logging its
/// `DebugOutput` lines as the run's events; and whether it had any.
pub(super) fn outcome_of(ctx: &JobContext, out: &[u8]) -> (Outcome, bool) {
    let mut logged = false;
    let outcome = outcome_logging(ctx, out, &mut logged);
    (outcome, logged)
}

fn outcome_logging(ctx: &JobContext, out: &[u8], logged: &mut bool) -> Outcome {
    let redact = |s: &str| shown(&ctx.redactor().redact(s));
    let text = String::from_utf8_lossy(out);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        // The SDK's contract: no output object is a completed run.
        return Outcome::succeeded("the script ended without calling end_script");
    }
    let obj = serde_json::from_str::<Map<String, Value>>(trimmed)
        .ok()
        .or_else(|| {
            trimmed
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Map<String, Value>>(l.trim()).ok())
        });
    let Some(obj) = obj else {
        for line in trimmed.lines() {
            tracing::info!(stream = "stdout", line = %redact(line), "script output");
        }
        return Outcome::failed("the script's output is not an SDK output object");
    };
    if let Some(debug) = obj.get("DebugOutput").and_then(Value::as_str) {
        let lines: Vec<&str> = debug.lines().filter(|l| !l.trim().is_empty()).collect();
        *logged = !lines.is_empty();
        for line in lines.iter().take(RUN_LINES_MAX) {
            tracing::info!(stream = "debug_output", line = %redact(line), "script output");
        }
        if lines.len() > RUN_LINES_MAX {
            tracing::warn!(
                lines = lines.len() - RUN_LINES_MAX,
                "DebugOutput lines not logged (limit)"
            );
        }
    }
    if let Some(v) = obj.get("ResultValue") {
        ctx.stats().set("result_value", redact(&v.to_string()));
    }
    let message = obj
        .get("Message")
        .and_then(Value::as_str)
        .map(redact)
        .filter(|m| !m.is_empty());
    match obj
        .get("ExecutionState")
        .and_then(Value::as_i64)
        .unwrap_or(0)
    {
        0 | 1 => Outcome::succeeded(message.unwrap_or_else(|| "completed".into())),
        2 => Outcome::failed(message.unwrap_or_else(|| "the script reported failure".into())),
        3 => Outcome::timed_out(message.unwrap_or_else(|| "the script reported a timeout".into())),
        n => Outcome::failed(format!(
            "unknown ExecutionState {n}: {}",
            message.unwrap_or_default()
        )),
    }
}

/// The failure reason in a Python traceback (stderr lines): the innermost meaningful
/// exception of the chain. Python prints a chain cause first (`The above exception was the
/// direct cause...`), so the innermost is the first exception line; one with a message
/// (`ValueError: boom`) wins over a bare one (`RuntimeError`, as TIPCommon's `Job` re-raises).
/// `None` when there is no traceback (the last non-empty line is then used, if any).
pub(super) fn failure_reason(lines: &[&str]) -> Option<String> {
    let start = lines
        .iter()
        .position(|l| l.starts_with("Traceback (most recent call last):"));
    let Some(start) = start else {
        return lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string());
    };
    let is_exception = |l: &str| {
        let head = l.split(':').next().unwrap_or("");
        !l.is_empty()
            && !l.starts_with(char::is_whitespace)
            && !l.starts_with("Traceback (")
            && !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && head
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
    };
    let mut found: Vec<&str> = Vec::new();
    let mut in_frames = false;
    for l in &lines[start..] {
        if l.starts_with("Traceback (") {
            in_frames = true;
            continue;
        }
        if in_frames && is_exception(l) {
            found.push(l.trim_end());
            in_frames = false;
        }
    }
    let with_message = |l: &&&str| l.split_once(':').is_some_and(|(_, m)| !m.trim().is_empty());
    found
        .iter()
        .find(with_message)
        .or(found.last())
        .map(|l| l.to_string())
}

/// A line as logged: control characters escaped, at most [`LINE_MAX`] bytes.
pub(crate) fn shown(text: &str) -> String {
    let text = escape_controls(text);
    if text.len() <= LINE_MAX {
        return text.into_owned();
    }
    let mut end = LINE_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut {} bytes]", &text[..end], text.len() - end)
}

/// Calls `f` with each line of `pipe` (lossy UTF-8), keeping at most `max` bytes of a line
/// and discarding the rest as it arrives, until the end of the stream.
pub(crate) async fn bounded_lines<R: tokio::io::AsyncRead + Unpin>(
    pipe: R,
    max: usize,
    mut f: impl FnMut(String),
) {
    let mut r = BufReader::new(pipe);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let (used, newline) = match r.fill_buf().await {
            Ok(buf) if !buf.is_empty() => {
                let nl = buf.iter().position(|b| *b == b'\n');
                let chunk = &buf[..nl.unwrap_or(buf.len())];
                let room = max.saturating_sub(line.len()).min(chunk.len());
                line.extend_from_slice(&chunk[..room]);
                (chunk.len() + usize::from(nl.is_some()), nl.is_some())
            }
            _ => break,
        };
        r.consume(used);
        if newline {
            f(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
    }
    if !line.is_empty() {
        f(String::from_utf8_lossy(&line).into_owned());
    }
}

#[cfg(test)]
mod tests {
    use crate::exec::LINE_MAX;

    #[test]
    fn the_reason_is_the_innermost_meaningful_exception() {
        let chained = "STDOUT:\nlog line: x\nSTDERR:\nTraceback (most recent call last):\n  \
             File \"a.py\", line 3, in main\n    raise ValueError('bad parameter Tag')\n\
             ValueError: bad parameter Tag\n\n\
             The above exception was the direct cause of the following exception:\n\n\
             Traceback (most recent call last):\n  File \"job.py\", line 9, in start\n    \
             raise RuntimeError from e\nRuntimeError";
        let lines: Vec<&str> = chained.lines().collect();
        assert_eq!(
            super::failure_reason(&lines).as_deref(),
            Some("ValueError: bad parameter Tag")
        );
        let bare = [
            "Traceback (most recent call last):",
            "  File \"x\"",
            "KeyboardInterrupt",
        ];
        assert_eq!(
            super::failure_reason(&bare).as_deref(),
            Some("KeyboardInterrupt")
        );
        assert_eq!(
            super::failure_reason(&["", "killed"]).as_deref(),
            Some("killed")
        );
        assert_eq!(super::failure_reason(&[]), None);
    }

    #[tokio::test]
    async fn output_lines_are_bounded_and_the_pipe_drained() {
        let data = format!("{}\nshort\nlast", "x".repeat(100_000));
        let mut got = Vec::new();
        super::bounded_lines(data.as_bytes(), 10, |l| got.push(l)).await;
        assert_eq!(got, ["xxxxxxxxxx", "short", "last"]);
        let long = super::shown(&"é".repeat(20_000));
        assert!(long.ends_with("bytes]") && long.len() < LINE_MAX + 40);
    }
}
