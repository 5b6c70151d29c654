//! `job: exec`: runs a program in any language as a job.
//!
//! The program is started directly from `command` (an argv list, no shell, so no quoting
//! surprises), with a clean environment: only `PATH`, `HOME`, `LANG`, `TZ`, the job's `env`
//! and the run markers `SOARJOBD_RUN_ID` / `SOARJOBD_RUN_TOKEN` are passed, so the daemon's
//! own secrets (API keys given as environment variables) never reach a script. Parameters,
//! passwords included, arrive as one JSON document on stdin; they are never put into
//! environment variables, which other processes of the same user can read. `check` verifies
//! that the program exists (absolute, relative to `working_dir`, or found in `PATH`) and that
//! `working_dir` exists.
//!
//! stdout and stderr lines become log events in the run's span, after the run's secrets are
//! redacted and control characters escaped. A line is cut at [`LINE_MAX`] bytes (marked
//! `… [cut N bytes]`) and a run logs at most [`RUN_OUTPUT_MAX`] bytes or [`RUN_LINES_MAX`]
//! lines of output, then one summary event at the end; the pipes are always drained, so a chatty program is never blocked. Two
//! stdout line forms are commands rather than output: `::stats {"name": 1}` merges counters
//! into the run's stats and `::context {"key": value}` writes keys of the job's context (such
//! lines may be up to [`COMMAND_LINE_MAX`] bytes). A `::context` line that cannot be applied
//! fails the run: the job's state would be incomplete.
//!
//! Exit status 0 is success (the run's start time is saved as the last-success timestamp),
//! 3 is partial success, anything else is failure with the last stderr lines as the message.
//! The run is over when the program exits: whatever it left running is killed then. On
//! cancellation (timeout, replace, shutdown) the program's process group and cgroup get
//! SIGTERM, then SIGKILL after [`KILL_GRACE`]. [`soarjobd_containment`] makes sure no
//! descendant outlives the run, even if the daemon is killed.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

use soarjobd_core::definition::{FieldError, JobSpec, Parameters};
use soarjobd_core::{Job, JobContext, JobError, Outcome, error_chain};
use soarjobd_core::{Redactor, escape_controls};

use crate::process::{self, Contained};

/// Time between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How many trailing stderr lines make a failure message.
const STDERR_TAIL: usize = 10;
/// The failure message quotes at most this many bytes of those lines (the end is kept).
const TAIL_MAX: usize = 4 * 1024;
/// A logged output line is cut after this many bytes.
pub const LINE_MAX: usize = 16 * 1024;
/// A `::stats` / `::context` line may be this long (it must be read whole to be parsed).
pub const COMMAND_LINE_MAX: usize = 1024 * 1024;
/// A run logs at most this many bytes of its program's output (both streams together)...
pub const RUN_OUTPUT_MAX: usize = 1024 * 1024;
/// ...and at most this many lines (each is an event: tiny lines cost more than their bytes);
/// the rest is counted and summarised in one event at the end.
pub const RUN_LINES_MAX: usize = 10_000;
/// Read buffer per pipe.
const READ_BUF: usize = 64 * 1024;

pub struct Exec;

struct ExecConfig {
    command: Vec<String>,
    working_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl ExecConfig {
    fn parse(extra: &Map<String, Value>, errs: &mut Vec<FieldError>) -> Option<ExecConfig> {
        let command = match extra.get("command") {
            Some(Value::Array(items)) if !items.is_empty() => {
                let mut argv = Vec::new();
                for (i, it) in items.iter().enumerate() {
                    match it {
                        Value::String(s) if !s.is_empty() => argv.push(s.clone()),
                        Value::Number(n) => argv.push(n.to_string()),
                        _ => errs.push(FieldError::new(
                            format!("command[{i}]"),
                            "each `command` item must be a non-empty string",
                        )),
                    }
                }
                argv
            }
            Some(_) => {
                errs.push(FieldError::new(
                    "command",
                    "`command` must be a non-empty list: the program and its arguments \
                     (no shell), e.g. [\"/usr/bin/python3\", \"sync.py\"]",
                ));
                Vec::new()
            }
            None => {
                errs.push(FieldError::new(
                    "job",
                    "an `exec` job needs `command`: the program and its arguments as a list",
                ));
                Vec::new()
            }
        };
        let working_dir = match extra.get("working_dir") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(PathBuf::from(s)),
            Some(_) => {
                errs.push(FieldError::new(
                    "working_dir",
                    "`working_dir` must be a path",
                ));
                None
            }
        };
        let env = process::parse_env(extra, |_| None, errs);
        (!command.is_empty()).then_some(ExecConfig {
            command,
            working_dir,
            env,
        })
    }

    /// The program's working directory: `working_dir` relative to the job file's folder, or
    /// `None` for the daemon's own.
    fn resolved_working_dir(&self, job_file: &Path) -> Option<PathBuf> {
        let base = job_file.parent().unwrap_or(Path::new(""));
        self.working_dir.as_ref().map(|wd| base.join(wd))
    }

    /// The `PATH` the program is looked up in: the job's `env.PATH`, else the daemon's.
    fn search_path(&self) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("PATH").ok())
    }

    /// Checks that `working_dir` exists and that the program can be found the way the run
    /// will look for it: an absolute path as is, a relative path with a `/` from the working
    /// directory, a bare name in `PATH`.
    fn check_paths(&self, job_file: &Path, errs: &mut Vec<FieldError>) {
        let wd = self.resolved_working_dir(job_file);
        if let (Some(raw), Some(dir)) = (&self.working_dir, &wd) {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => errs.push(FieldError::new(
                    "working_dir",
                    format!("working_dir `{}` is not a folder", raw.display()),
                )),
                Err(e) => errs.push(FieldError::new(
                    "working_dir",
                    format!(
                        "working_dir `{}` does not exist ({}: {e})",
                        raw.display(),
                        dir.display()
                    ),
                )),
            }
        }
        let program = &self.command[0];
        if program.contains('/') {
            let path = Path::new(program);
            let full = if path.is_absolute() {
                path.to_path_buf()
            } else {
                match &wd {
                    Some(dir) => dir.join(path),
                    None => std::env::current_dir().unwrap_or_default().join(path),
                }
            };
            if let Err(why) = process::executable(&full) {
                let from = if path.is_absolute() {
                    String::new()
                } else if wd.is_some() {
                    " (relative to working_dir)".to_string()
                } else {
                    " (relative to the daemon's working directory; set working_dir)".to_string()
                };
                errs.push(FieldError::new(
                    "command[0]",
                    format!("program `{program}`{from} {why}"),
                ));
            }
        } else {
            let path = self.search_path().unwrap_or_default();
            let cwd = wd
                .clone()
                .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
            if !process::in_path(program, &path, &cwd) {
                errs.push(FieldError::new(
                    "command[0]",
                    format!(
                        "program `{program}` is not found in PATH ({path}); give its absolute \
                         path or set env.PATH"
                    ),
                ));
            }
        }
    }
}

impl JobSpec for Exec {
    fn summary(&self) -> &'static str {
        "runs a program; parameters as JSON on stdin; exit 0 ok, 3 partial, else failed"
    }

    fn extra_keys(&self) -> &'static [&'static str] {
        &["command", "working_dir", "env", "run_as"]
    }

    fn validate(&self, _params: &Parameters, extra: &Map<String, Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        ExecConfig::parse(extra, &mut errs);
        if !matches!(
            extra.get("run_as"),
            None | Some(Value::Null | Value::String(_))
        ) {
            errs.push(FieldError::new(
                "run_as",
                "`run_as` must be a user name (or a numeric uid)",
            ));
        }
        errs
    }

    fn validate_file(
        &self,
        file: &Path,
        _params: &Parameters,
        extra: &Map<String, Value>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(cfg) = ExecConfig::parse(extra, &mut errs) {
            cfg.check_paths(file, &mut errs);
        }
        crate::process::validate_run_as(extra, &mut errs);
        errs
    }
}

#[async_trait]
impl Job for Exec {
    fn id(&self) -> &'static str {
        "exec"
    }

    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        let mut errs = Vec::new();
        let cfg = ExecConfig::parse(&ctx.definition().extra, &mut errs)
            .ok_or_else(|| JobError::msg("invalid exec configuration"))?;
        // From here on the context is only read; a shared borrow lets the output readers and
        // the waiter below use it concurrently.
        let ctx: &JobContext = ctx;
        let mut cmd = Command::new(&cfg.command[0]);
        process::clean_env(&mut cmd);
        cmd.args(&cfg.command[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &cfg.env {
            cmd.env(k, v);
        }
        if let Some(wd) = cfg.resolved_working_dir(&ctx.definition().source) {
            // A relative working_dir is relative to the job file's folder, like every other
            // path in a job file.
            cmd.current_dir(wd);
        }

        let since = ctx
            .stored_timestamp(soarjobd_core::DEFAULT_TIMESTAMP_KEY)
            .await?;
        let input = json!({
            "job_id": ctx.job_id(),
            "run_id": ctx.run_id(),
            "scheduled_at": ctx.scheduled_at().to_rfc3339(),
            "trigger": ctx.trigger().as_str(),
            "job_start_time": ctx.job_start_time().timestamp_millis(),
            "last_success_time": since,
            "parameters": ctx.params().to_exposed_json(),
            "context": ctx.context_all().await?,
        });

        // Containment: own group, run token, cgroup where possible (see `process`).
        let user =
            crate::process::run_as(ctx, crate::process::run_as_key(&ctx.definition().extra))?;
        let mut child = Contained::spawn(ctx, &mut cmd, &cfg.command[0], user.as_ref()).await?;
        let stdin = child.take_stdin();
        let stdout = child.take_stdout();
        let stderr = child.take_stderr();
        let write_input = async move {
            if let Some(mut s) = stdin {
                let mut bytes = serde_json::to_vec(&input).unwrap_or_default();
                bytes.push(b'\n');
                // A program that does not read stdin closes the pipe; that is not an error.
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
            }
        };
        let out = Output::new(ctx.redactor().clone());
        let read_stdout = async {
            let Some(pipe) = stdout else { return };
            let mut lines = LineReader::new(pipe);
            while let Some(line) = lines.next(&out).await {
                self.stdout_line(ctx, &out, line).await;
            }
        };
        let mut tail: VecDeque<String> = VecDeque::new();
        let read_stderr = async {
            let Some(pipe) = stderr else { return };
            let mut lines = LineReader::new(pipe);
            while let Some(line) = lines.next(&out).await {
                let text = out.display(&line);
                out.log("stderr", &text);
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
        };
        let cancel = ctx.cancellation().clone();
        // The waiter owns the child and its containment; if this future is dropped (the run
        // abandoned), dropping the containment kills everything.
        let wait = async move { child.wait(&cancel, KILL_GRACE).await };
        let ((), (), (), status) = tokio::join!(write_input, read_stdout, read_stderr, wait);
        out.summarise();

        let Some(status) = status else {
            return Err(JobError::Cancelled);
        };
        let status = status.map_err(|e| JobError::context("cannot wait for the process", e))?;
        let tail_text = tail_message(&tail);
        let context_failure = out.context_failure();
        let outcome = match status.code() {
            Some(0) => match &context_failure {
                None => {
                    ctx.save_timestamp(ctx.job_start_time()).await?;
                    Outcome::succeeded("exit status 0")
                }
                // The program did its work, but the state it wanted kept for the next run is
                // not (all) there: the run must not look successful, and the window stays.
                Some(why) => Outcome::failed(format!("exit status 0, but {why}")),
            },
            Some(3) => Outcome::partial(if tail_text.is_empty() {
                "exit status 3 (partial success)".to_string()
            } else {
                format!("exit status 3 (partial success): {tail_text}")
            }),
            code => {
                use std::os::unix::process::ExitStatusExt;
                let what = match (code, status.signal()) {
                    (Some(c), _) => format!("exit status {c}"),
                    (None, Some(s)) => format!("killed by signal {s}"),
                    _ => "unknown exit status".to_string(),
                };
                Outcome::failed(if tail_text.is_empty() {
                    what
                } else {
                    format!("{what}: {tail_text}")
                })
            }
        };
        Ok(match (context_failure, outcome.status) {
            (Some(why), soarjobd_core::OutcomeStatus::Partial) => {
                Outcome::failed(format!("{}; and {why}", outcome.message))
            }
            _ => outcome,
        })
    }
}

impl Exec {
    /// Handles one stdout line: a `::stats` / `::context` command, or output to log.
    async fn stdout_line(&self, ctx: &JobContext, out: &Output, line: RawLine) {
        if let Some(rest) = line.bytes.strip_prefix(b"::stats ") {
            if line.is_cut() {
                tracing::warn!(
                    bytes = line.total,
                    limit = COMMAND_LINE_MAX,
                    "ignoring a ::stats line that is too long"
                );
                return;
            }
            match serde_json::from_slice::<Map<String, Value>>(rest) {
                Ok(m) => {
                    for (k, v) in m {
                        match v.as_i64() {
                            Some(n) => ctx.stats().add(&k, n),
                            None => ctx.stats().set(&k, v),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed ::stats line"),
            }
            return;
        }
        if let Some(rest) = line.bytes.strip_prefix(b"::context ") {
            if line.is_cut() {
                out.context_failed(format!(
                    "a ::context line of {} bytes is longer than the limit ({COMMAND_LINE_MAX})",
                    line.total
                ));
                return;
            }
            match serde_json::from_slice::<Map<String, Value>>(rest) {
                Ok(m) => {
                    for (k, v) in m {
                        if let Err(e) = ctx.context_set(&k, &v).await {
                            out.context_failed(format!(
                                "the context key `{}` could not be saved: {}",
                                escape_controls(&ctx.redactor().redact(&k)),
                                error_chain(&e).replace('\n', ": ")
                            ));
                        }
                    }
                }
                Err(e) => out.context_failed(format!("a ::context line is not a JSON object: {e}")),
            }
            return;
        }
        let text = out.display(&line);
        out.log("stdout", &text);
    }
}

/// The failure message's quote of the last stderr lines, at most [`TAIL_MAX`] bytes (the end
/// is kept: the last words are usually the reason).
fn tail_message(tail: &VecDeque<String>) -> String {
    let text = tail
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n");
    if text.len() <= TAIL_MAX {
        return text;
    }
    let mut start = text.len() - TAIL_MAX;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// One line as read: its first bytes (up to the line's limit) and its full length.
struct RawLine {
    bytes: Vec<u8>,
    /// The line's length in bytes, without the newline.
    total: usize,
}

impl RawLine {
    fn is_cut(&self) -> bool {
        self.total > self.bytes.len()
    }
}

/// Reads lines of any length in bounded memory: a line keeps at most its limit of bytes and
/// the rest is counted and discarded as it arrives, so the pipe keeps being drained.
struct LineReader<R> {
    inner: BufReader<R>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(pipe: R) -> LineReader<R> {
        LineReader {
            inner: BufReader::with_capacity(READ_BUF, pipe),
        }
    }

    /// The next line, or `None` at the end of the stream (or on a read error).
    async fn next(&mut self, out: &Output) -> Option<RawLine> {
        let mut line = RawLine {
            bytes: Vec::new(),
            total: 0,
        };
        loop {
            let buf = match self.inner.fill_buf().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the process output");
                    return (line.total > 0).then_some(line);
                }
            };
            if buf.is_empty() {
                return (line.total > 0).then_some(line);
            }
            let newline = buf.iter().position(|b| *b == b'\n');
            let chunk = &buf[..newline.unwrap_or(buf.len())];
            let limit = out.keep_for(&line.bytes, chunk);
            let room = limit.saturating_sub(line.bytes.len());
            line.bytes
                .extend_from_slice(&chunk[..room.min(chunk.len())]);
            line.total += chunk.len();
            let used = chunk.len() + usize::from(newline.is_some());
            self.inner.consume(used);
            if newline.is_some() {
                // `\r\n` line ends count as `\n`.
                if line.total == line.bytes.len() && line.bytes.last() == Some(&b'\r') {
                    line.bytes.pop();
                    line.total -= 1;
                }
                return Some(line);
            }
        }
    }
}

/// The run's output policy and accounting, shared by both pipe readers (they run in one task,
/// but the future must be `Send`, hence atomics rather than cells).
struct Output {
    redactor: Redactor,
    logged: AtomicUsize,
    logged_lines: AtomicUsize,
    dropped_lines: AtomicU64,
    dropped_bytes: AtomicU64,
    over: AtomicBool,
    context_failures: AtomicUsize,
    first_context_failure: Mutex<Option<String>>,
}

impl Output {
    fn new(redactor: Redactor) -> Output {
        Output {
            redactor,
            logged: AtomicUsize::new(0),
            logged_lines: AtomicUsize::new(0),
            dropped_lines: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            over: AtomicBool::new(false),
            context_failures: AtomicUsize::new(0),
            first_context_failure: Mutex::new(None),
        }
    }

    /// How many bytes of a line to keep, given its start: command lines whole (up to
    /// [`COMMAND_LINE_MAX`]), others [`LINE_MAX`] plus enough to recognise a secret
    /// straddling the cut.
    fn keep_for(&self, start: &[u8], next: &[u8]) -> usize {
        let head: Vec<u8> = start.iter().chain(next.iter()).take(10).copied().collect();
        if head.starts_with(b"::stats ") || head.starts_with(b"::context ") {
            COMMAND_LINE_MAX
        } else {
            LINE_MAX + self.redactor.longest()
        }
    }

    /// The loggable form of a line: secrets redacted, cut at [`LINE_MAX`], control characters
    /// escaped.
    fn display(&self, line: &RawLine) -> String {
        let (text, covered) = self.redactor.redact_prefix(&line.bytes, LINE_MAX);
        let text = escape_controls(&text).into_owned();
        let cut = line.total.saturating_sub(covered);
        if cut > 0 {
            format!("{text} … [cut {cut} bytes]")
        } else {
            text
        }
    }

    /// Logs a line unless the run's output budget is spent.
    fn log(&self, stream: &'static str, text: &str) {
        let before = self.logged.fetch_add(text.len(), Ordering::Relaxed);
        let lines_before = self.logged_lines.fetch_add(1, Ordering::Relaxed);
        if before < RUN_OUTPUT_MAX && lines_before < RUN_LINES_MAX {
            tracing::info!(stream, line = %text, "process output");
            return;
        }
        if !self.over.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit_bytes = RUN_OUTPUT_MAX,
                limit_lines = RUN_LINES_MAX,
                "process output limit reached; the rest of this run's output is not logged"
            );
        }
        self.dropped_lines.fetch_add(1, Ordering::Relaxed);
        self.dropped_bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
    }

    /// One event for what the budget kept out of the log.
    fn summarise(&self) {
        let lines = self.dropped_lines.load(Ordering::Relaxed);
        if lines > 0 {
            tracing::warn!(
                lines,
                bytes = self.dropped_bytes.load(Ordering::Relaxed),
                limit_bytes = RUN_OUTPUT_MAX,
                limit_lines = RUN_LINES_MAX,
                "process output not logged (over the run's limit)"
            );
        }
    }

    fn context_failed(&self, why: String) {
        tracing::error!(error = %why, "cannot apply a ::context line");
        self.context_failures.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_context_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(why);
    }

    /// What went wrong with `::context` lines, if anything.
    fn context_failure(&self) -> Option<String> {
        let n = self.context_failures.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        let first = self
            .first_context_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        Some(if n == 1 {
            format!("a ::context write failed ({first}); the job's context is incomplete")
        } else {
            format!("{n} ::context writes failed (first: {first}); the job's context is incomplete")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: Vec<u8>, redactor: Redactor) -> Vec<(String, usize, usize)> {
        let out = Output::new(redactor);
        let mut r = LineReader::new(std::io::Cursor::new(input));
        let mut v = Vec::new();
        while let Some(l) = r.next(&out).await {
            v.push((out.display(&l), l.bytes.len(), l.total));
        }
        v
    }

    #[tokio::test]
    async fn long_lines_are_cut_in_bounded_memory_and_marked() {
        let mut input = vec![b'x'; 3 * 1024 * 1024];
        input.extend_from_slice(b"\nshort\r\nlast without newline");
        let lines = lines_of(input, Redactor::default()).await;
        assert_eq!(lines.len(), 3);
        let (text, kept, total) = &lines[0];
        assert_eq!(*total, 3 * 1024 * 1024);
        assert!(*kept <= LINE_MAX, "kept {kept}");
        assert!(
            text.ends_with(&format!(" … [cut {} bytes]", 3 * 1024 * 1024 - LINE_MAX)),
            "{}",
            &text[text.len() - 40..]
        );
        assert_eq!(lines[1].0, "short");
        assert_eq!(lines[2].0, "last without newline");
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced_and_reading_goes_on() {
        // Before, a line that was not UTF-8 ended the reading (and the pipe was no longer
        // drained, so a chatty program blocked).
        let lines = lines_of(b"ok\n\xff\xfebinary\nafter\n".to_vec(), Redactor::default()).await;
        let texts: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
        assert_eq!(texts, ["ok", "\u{fffd}\u{fffd}binary", "after"]);
    }

    #[tokio::test]
    async fn command_lines_are_kept_whole_up_to_their_limit() {
        let value = "v".repeat(100 * 1024);
        let input = format!("::context {{\"k\": \"{value}\"}}\n").into_bytes();
        let out = Output::new(Redactor::default());
        let mut r = LineReader::new(std::io::Cursor::new(input));
        let l = r.next(&out).await.unwrap();
        assert!(!l.is_cut());
        let big = format!("::stats {}\n", "x".repeat(COMMAND_LINE_MAX + 10)).into_bytes();
        let mut r = LineReader::new(std::io::Cursor::new(big));
        let l = r.next(&out).await.unwrap();
        assert!(l.is_cut());
        assert_eq!(l.bytes.len(), COMMAND_LINE_MAX);
    }

    #[tokio::test]
    async fn a_secret_straddling_the_cut_is_not_shown_in_part() {
        let secret = "TOPSECRET-0123456789";
        let mut input = vec![b'a'; LINE_MAX - 5];
        input.extend_from_slice(secret.as_bytes());
        input.extend_from_slice(&[b'b'; 100]);
        let lines = lines_of(input, Redactor::new([secret])).await;
        let text = &lines[0].0;
        assert!(!text.contains("TOPSE"), "{}", &text[text.len() - 60..]);
        assert!(
            text.contains("[redacted] … [cut 100 bytes]"),
            "{}",
            &text[text.len() - 60..]
        );
    }

    #[test]
    fn a_run_logs_at_most_its_byte_budget() {
        let out = Output::new(Redactor::default());
        let line = "y".repeat(1000);
        for _ in 0..2000 {
            out.log("stdout", &line);
        }
        // A line is logged while the bytes before it are under the limit.
        let logged = RUN_OUTPUT_MAX.div_ceil(1000);
        assert_eq!(
            out.dropped_lines.load(Ordering::Relaxed),
            (2000 - logged) as u64
        );
        assert_eq!(
            out.dropped_bytes.load(Ordering::Relaxed),
            (2000 - logged) as u64 * 1000
        );
    }

    #[test]
    fn the_failure_tail_keeps_the_end() {
        let tail: VecDeque<String> = ["a".repeat(3000), "é".repeat(1000), "the reason".into()]
            .into_iter()
            .collect();
        let msg = tail_message(&tail);
        assert!(msg.starts_with('…') && msg.ends_with("the reason"), "{msg}");
        assert!(msg.len() <= TAIL_MAX + '…'.len_utf8());
    }

    #[test]
    fn check_finds_missing_programs_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let job_file = dir.path().join("job.yaml");
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        let script = dir.path().join("scripts").join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let plain = dir.path().join("scripts").join("plain.txt");
        std::fs::write(&plain, "").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let check = |command: &[&str], wd: Option<&str>, path: Option<&str>| {
            let mut extra = Map::new();
            extra.insert("command".into(), json!(command));
            if let Some(wd) = wd {
                extra.insert("working_dir".into(), json!(wd));
            }
            if let Some(p) = path {
                extra.insert("env".into(), json!({"PATH": p}));
            }
            Exec.validate_file(&job_file, &Parameters::default(), &extra)
                .into_iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
        };
        assert!(check(&["/bin/sh"], None, None).is_empty());
        assert!(check(&["sh", "-c", "true"], None, None).is_empty());
        assert!(check(&["./run.sh"], Some("scripts"), None).is_empty());
        assert!(
            check(
                &["run.sh"],
                None,
                Some(script.parent().unwrap().to_str().unwrap())
            )
            .is_empty()
        );
        let e = check(&["/nonexistent/program"], None, None);
        assert!(
            e[0].starts_with("command[0]: program `/nonexistent/program` does not exist"),
            "{e:?}"
        );
        let e = check(&["no-such-program-xyz"], None, None);
        assert!(e[0].contains("is not found in PATH"), "{e:?}");
        let e = check(&["./plain.txt"], Some("scripts"), None);
        assert!(
            e[0].contains("(relative to working_dir) is not executable"),
            "{e:?}"
        );
        let e = check(&["./scripts"], Some("."), None);
        assert!(e[0].contains("is a folder"), "{e:?}");
        let e = check(&["/bin/sh"], Some("missing"), None);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("working_dir: working_dir `missing` does not exist"),
            "{e:?}"
        );
    }
}
