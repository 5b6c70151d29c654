//! Per-run logs: every tracing event inside a run's span is kept with the run.
//!
//! Three parts, so that a run never waits for the database:
//! * [`RunLogLayer`], a `tracing` layer (installed by `telemetry`), hands each event that
//!   happens inside a `run` span to that run's [`RunBuffer`]: a push under a short mutex.
//! * The runner makes the buffer ([`RunLogs::open`]) and attaches it to the run's span as the
//!   span is created ([`capture_into`]): the layer takes it from a thread-local in
//!   `on_new_span`. Nothing global maps run ids to buffers, so several daemons (tests) in one
//!   process never mix their runs, and a subscriber without the layer simply stores nothing.
//! * One writer task per [`RunLogs`] writes the lines of ended runs (handed over by
//!   [`RunBuffer::close`]) and the lines so far of runs still going, every [`FLUSH_EVERY`] or
//!   soon after a run ends, but at most once per [`MIN_GAP`]: the thousand runs that end
//!   together at a tick are written in one or two batches, not a flush per run (the profile
//!   showed the writer woken per run end, each time cloning and locking every open buffer).
//!   A slow or failing database delays or loses log lines, never a run.
//!
//! What is kept follows the job's `run_logs` mode ([`RunLogMode`]): `all`; `problems`, where
//! a run's lines are held until it ends and kept only if it did not succeed or logged a
//! warning or worse; `off`, where the runner opens no buffer at all.
//!
//! Each run keeps at most `max_bytes` (config `run_logs.max_bytes`): the first half is written
//! as it comes, the last half is held back in a ring until the run ends; the lines in between
//! are replaced by one `[... N lines cut ...]` line. Every line passes the run's [`Redactor`],
//! as everything else a run stores does.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::definition::RunLogMode;
use crate::store::RunStatus;
use crate::store::ops::{OpsStore, RunLogLine};
use soarjobd_core::Redactor;
use soarjobd_core::error_chain;

/// The name of the span the runner opens for each run; events inside it are kept.
pub const RUN_SPAN: &str = "run";
/// How often buffered lines are written to the store.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// The least time between two flushes: run ends wake the writer, but a burst of them is
/// written together.
pub const MIN_GAP: Duration = Duration::from_millis(100);
/// Bytes counted per line on top of its text (the row's other columns).
const LINE_OVERHEAD: usize = 32;

thread_local! {
    /// The buffer for the `run` span being created on this thread (see [`capture_into`]).
    static PENDING: RefCell<Option<Arc<RunBuffer>>> = const { RefCell::new(None) };
}

/// Creates the run's span with `make` while `buffer` waits for it in a thread-local, so that
/// [`RunLogLayer`] attaches the buffer to exactly this span.
pub fn capture_into(
    buffer: Option<&Arc<RunBuffer>>,
    make: impl FnOnce() -> tracing::Span,
) -> tracing::Span {
    PENDING.with(|p| *p.borrow_mut() = buffer.cloned());
    let span = make();
    // Cleared whatever happened: a disabled span or a subscriber without the layer leaves it.
    PENDING.with(|p| p.borrow_mut().take());
    span
}

/// The span extension that carries a run's buffer.
struct Attached(Arc<RunBuffer>);

/// Routes the events of `run` spans to their buffers. Stateless: the buffers hang on the spans.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunLogLayer;

impl<S> tracing_subscriber::Layer<S> for RunLogLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if attrs.metadata().name() != RUN_SPAN {
            return;
        }
        if let Some(buffer) = PENDING.with(|p| p.borrow_mut().take())
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(Attached(buffer));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(Attached(buffer)) = span.extensions().get::<Attached>() {
                buffer.push(event);
                return;
            }
        }
    }
}

/// Collects an event's message and fields.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields
                .insert(field.name().to_string(), Value::String(text));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .insert(field.name().to_string(), Value::String(value.to_string()));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_string(), value.into());
    }
}

/// One run's lines on their way to the store.
pub struct RunBuffer {
    run_id: i64,
    /// Its key among the open buffers of its [`RunLogs`].
    key: u64,
    redactor: Redactor,
    half: usize,
    mode: RunLogMode,
    state: Mutex<BufferState>,
    /// The writer's side; weak, so that a buffer never closed does not keep it alive.
    shared: std::sync::Weak<Shared>,
}

#[derive(Default)]
struct BufferState {
    next_seq: i64,
    /// Bytes of the head (the lines written as they come).
    head_bytes: usize,
    head_full: bool,
    /// Head lines not yet written.
    unwritten: Vec<RunLogLine>,
    /// The newest lines once the head is full, at most `half` bytes.
    tail: VecDeque<(RunLogLine, usize)>,
    tail_bytes: usize,
    /// Lines dropped from the tail, and the seq of the first of them.
    cut: u64,
    first_cut_seq: Option<i64>,
    closed: bool,
    /// A line at WARN or worse was logged (`problems` mode keeps such a run's lines).
    problem: bool,
}

impl RunBuffer {
    fn push(&self, event: &tracing::Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        let mut fields = Value::Object(f.fields);
        self.redactor.redact_json(&mut fields);
        let message = self.redactor.redact(&f.message).into_owned();
        let size = message.len() + meta.target().len() + fields.to_string().len() + LINE_OVERHEAD;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closed {
            return;
        }
        st.next_seq += 1;
        st.problem |= *meta.level() <= tracing::Level::WARN;
        let line = RunLogLine {
            run_id: self.run_id,
            seq: st.next_seq,
            at: Utc::now(),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message,
            fields,
        };
        if !st.head_full && st.head_bytes + size <= self.half {
            st.head_bytes += size;
            st.unwritten.push(line);
            return;
        }
        st.head_full = true;
        st.tail.push_back((line, size));
        st.tail_bytes += size;
        while st.tail_bytes > self.half {
            let Some((dropped, n)) = st.tail.pop_front() else {
                break;
            };
            st.tail_bytes -= n;
            st.cut += 1;
            st.first_cut_seq.get_or_insert(dropped.seq);
        }
    }

    /// Marks the run's log complete, the run having ended with `status`: the tail (and the
    /// cut marker) are handed to the writer, or everything is dropped when the job's mode is
    /// `problems` and the run succeeded without a warning.
    pub fn close(&self, status: RunStatus) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closed {
            return;
        }
        st.closed = true;
        let keep = match self.mode {
            RunLogMode::All => true,
            RunLogMode::Problems => st.problem || status != RunStatus::Succeeded,
            RunLogMode::Off => false,
        };
        let mut lines = std::mem::take(&mut st.unwritten);
        if keep {
            if let Some(seq) = st.first_cut_seq {
                let at = st.tail.front().map(|(l, _)| l.at).unwrap_or_else(Utc::now);
                let cut = st.cut;
                lines.push(RunLogLine {
                    run_id: self.run_id,
                    seq,
                    at,
                    level: "WARN".into(),
                    target: "soarjobd::run_logs".into(),
                    message: format!("[... {cut} lines cut ...]"),
                    fields: serde_json::json!({ "cut_lines": cut }),
                });
            }
            lines.extend(st.tail.drain(..).map(|(l, _)| l));
        } else {
            lines.clear();
        }
        // Nothing of the run stays behind in the buffer.
        st.tail = VecDeque::new();
        drop(st);
        if let Some(shared) = self.shared.upgrade() {
            shared
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.key);
            if !lines.is_empty() {
                shared
                    .ready
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .append(&mut lines);
            }
            shared.wake.notify_one();
        }
    }

    /// Takes the head lines written so far of a run still going (`all` mode only: `problems`
    /// decides at the end).
    fn drain(&self, into: &mut Vec<RunLogLine>) {
        if self.mode != RunLogMode::All {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        into.append(&mut st.unwritten);
    }
}

/// What the buffers and the writer share.
#[derive(Default)]
struct Shared {
    /// The buffers of runs still going, by key.
    open: Mutex<std::collections::HashMap<u64, Arc<RunBuffer>>>,
    next_key: std::sync::atomic::AtomicU64,
    /// Lines of ended runs, ready to be written.
    ready: Mutex<Vec<RunLogLine>>,
    wake: Notify,
}

/// The run-log service of one store: opens buffers for runs and writes them in the background.
#[derive(Clone)]
pub struct RunLogs {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn OpsStore>,
    max_bytes: usize,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Lines whose write failed (the database is down), written again at the next flush;
    /// bounded by [`MAX_UNWRITTEN`] (beyond it the oldest are dropped).
    unwritten: Mutex<Vec<RunLogLine>>,
    /// Write failures, logged at most once a minute while they last.
    failing: Mutex<crate::store::failing::FailureLog>,
}

/// The most run log lines kept for a retry while the database fails.
const MAX_UNWRITTEN: usize = 100_000;

impl RunLogs {
    /// Starts the writer task (needs a tokio runtime). `max_bytes` bounds each run's log.
    pub fn start(store: Arc<dyn OpsStore>, max_bytes: usize) -> RunLogs {
        let inner = Arc::new(Inner {
            store,
            max_bytes: max_bytes.max(2 * LINE_OVERHEAD),
            shared: Arc::default(),
            unwritten: Mutex::new(Vec::new()),
            failing: Mutex::new(crate::store::failing::FailureLog::new(
                "cannot store run log lines; they are kept and written again at the next flush",
            )),
            stop: tokio_util::sync::CancellationToken::new(),
            writer: Mutex::new(None),
        });
        let task = tokio::spawn(write_loop(inner.clone()));
        *inner.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        RunLogs { inner }
    }

    /// A buffer for a run whose job keeps its lines in `mode` (`None` for `off`); give it to
    /// [`capture_into`] and [`RunBuffer::close`] it at the end.
    pub fn open(
        &self,
        run_id: i64,
        redactor: Redactor,
        mode: RunLogMode,
    ) -> Option<Arc<RunBuffer>> {
        if mode == RunLogMode::Off {
            return None;
        }
        let shared = &self.inner.shared;
        let key = shared
            .next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let buffer = Arc::new(RunBuffer {
            run_id,
            key,
            redactor,
            half: self.inner.max_bytes / 2,
            mode,
            state: Mutex::new(BufferState::default()),
            shared: Arc::downgrade(shared),
        });
        shared
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, buffer.clone());
        Some(buffer)
    }

    /// Writes what is buffered and stops the writer (at shutdown, before the store closes).
    /// Buffers still open are written as far as they got.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        let task = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

async fn write_loop(inner: Arc<Inner>) {
    loop {
        // A run that ends wakes the writer, so its last lines are stored soon; otherwise
        // lines are written every FLUSH_EVERY, in one batch for every run.
        let stopping = tokio::select! {
            _ = inner.stop.cancelled() => true,
            _ = tokio::time::sleep(FLUSH_EVERY) => false,
            _ = inner.shared.wake.notified() => false,
        };
        flush(&inner).await;
        if stopping {
            return;
        }
        // The runs that end meanwhile are written together by the next flush.
        tokio::select! {
            _ = inner.stop.cancelled() => {
                flush(&inner).await;
                return;
            }
            _ = tokio::time::sleep(MIN_GAP) => {}
        }
    }
}

async fn flush(inner: &Inner) {
    let mut lines =
        std::mem::take(&mut *inner.shared.ready.lock().unwrap_or_else(|p| p.into_inner()));
    // Runs still going: what they logged so far (long runs are followed as they go).
    let open: Vec<Arc<RunBuffer>> = inner
        .shared
        .open
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    for b in &open {
        b.drain(&mut lines);
    }
    drop(open);
    let mut unwritten =
        std::mem::take(&mut *inner.unwritten.lock().unwrap_or_else(|p| p.into_inner()));
    if !unwritten.is_empty() {
        unwritten.append(&mut lines);
        lines = unwritten;
    }
    if lines.is_empty() {
        return;
    }
    // This task is in no run's span, so its own log lines are not captured (no feedback).
    // A failed write (the database is down) keeps the lines for the next flush: a run's last
    // lines are not lost to a short outage.
    match inner.store.append_run_logs(&lines).await {
        Ok(()) => inner.failing.lock().unwrap_or_else(|p| p.into_inner()).ok(),
        Err(e) => {
            inner
                .failing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .failed(&error_chain(&e));
            if lines.len() > MAX_UNWRITTEN {
                lines.drain(..lines.len() - MAX_UNWRITTEN);
            }
            *inner.unwritten.lock().unwrap_or_else(|p| p.into_inner()) = lines;
        }
    }
}

/// Formats a stored line for people: `time LEVEL message key=value ...`.
pub fn format_line(l: &RunLogLine) -> String {
    let mut out = format!(
        "{} {:>5} {}",
        l.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        l.level,
        l.message
    );
    if let Value::Object(m) = &l.fields {
        for (k, v) in m {
            match v {
                Value::String(s) => out.push_str(&format!(" {k}={s}")),
                other => out.push_str(&format!(" {k}={other}")),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRun, Store, Trigger};
    use chrono::DateTime;
    use tracing_subscriber::prelude::*;

    async fn store_with_run() -> (tempfile::TempDir, Arc<dyn Store>, i64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("s.db").display());
        let store = soarjobd_store::open(&url).await.expect("open");
        let now = Utc::now();
        let ids = store
            .claim_runs(&[NewRun {
                job_id: "j".into(),
                scheduled_at: now,
                trigger: Trigger::Manual,
                status: RunStatus::Running,
                started_at: now,
                message: None,
            }])
            .await
            .expect("claim");
        (dir, store, ids[0].expect("claimed"))
    }

    /// Events inside the run's span are stored in order, redacted, with their fields; events
    /// outside it are not; beyond the bound the first and last halves stay around a marker.
    #[tokio::test]
    async fn a_runs_events_are_stored_redacted_and_bounded() {
        let (_dir, store, run_id) = store_with_run().await;
        let logs = RunLogs::start(store.clone(), 4096);
        let sub = tracing_subscriber::registry().with(RunLogLayer);
        let _guard = tracing::subscriber::set_default(sub);
        let buffer = logs
            .open(run_id, Redactor::new(["hunter2-secret"]), RunLogMode::All)
            .expect("a buffer");
        let span = capture_into(Some(&buffer), || tracing::info_span!("run", run_id));
        tracing::info!("outside the run");
        span.in_scope(|| {
            tracing::info!(stream = "stdout", line = %"token hunter2-secret here", "process output");
            for i in 0..400 {
                tracing::warn!(i, "line {i}");
            }
            tracing::info!("the very last line");
        });
        buffer.close(RunStatus::Succeeded);
        logs.close().await;
        let lines = store.run_logs(run_id, 0, 10_000).await.expect("read");
        let texts: Vec<String> = lines.iter().map(format_line).collect();
        let all = texts.join("\n");
        assert!(!all.contains("hunter2-secret"), "{all}");
        assert!(!all.contains("outside the run"), "{all}");
        assert_eq!(lines[0].seq, 1);
        assert_eq!(lines[0].message, "process output");
        assert_eq!(lines[0].fields["stream"], "stdout");
        assert!(
            lines[0].fields["line"]
                .as_str()
                .unwrap()
                .contains("[redacted]")
        );
        assert_eq!(lines[1].message, "line 0");
        assert_eq!(lines[1].level, "WARN");
        assert_eq!(lines[1].fields["i"], 0);
        let marker = lines
            .iter()
            .position(|l| l.message.starts_with("[... ") && l.message.ends_with(" lines cut ...]"))
            .expect("a cut marker");
        let cut = lines[marker].fields["cut_lines"].as_u64().expect("count");
        assert!(cut > 300, "{cut}");
        assert_eq!(lines.last().unwrap().message, "the very last line");
        // Every line is either kept or counted as cut, and seqs stay in order.
        assert_eq!(lines.len() as u64 - 1 + cut, 402);
        assert!(lines.windows(2).all(|w| w[0].seq < w[1].seq));
        let bytes: usize = lines
            .iter()
            .map(|l| l.message.len() + l.target.len() + l.fields.to_string().len())
            .sum();
        assert!(bytes <= 4096, "{bytes}");
        store.close().await;
    }

    /// Without a buffer (or outside a `run` span) nothing is kept and nothing leaks into the
    /// next span made on the thread.
    #[tokio::test]
    async fn a_span_made_without_a_buffer_keeps_nothing() {
        let (_dir, store, run_id) = store_with_run().await;
        let logs = RunLogs::start(store.clone(), crate::config::DEFAULT_RUN_LOG_MAX_BYTES);
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(RunLogLayer));
        let buffer = logs
            .open(
                run_id,
                Redactor::new(std::iter::empty::<&str>()),
                RunLogMode::All,
            )
            .expect("a buffer");
        // The buffer is offered to a span of another name: it must not stay pending.
        let other = capture_into(Some(&buffer), || tracing::info_span!("other"));
        let run = capture_into(None, || tracing::info_span!("run"));
        other.in_scope(|| tracing::info!("in other"));
        run.in_scope(|| tracing::info!("in a run without buffer"));
        buffer.close(RunStatus::Succeeded);
        logs.close().await;
        assert!(
            store
                .run_logs(run_id, 0, 100)
                .await
                .expect("read")
                .is_empty()
        );
        store.close().await;
    }

    /// `problems` keeps a succeeded run's lines only when it warned, and every line of a run
    /// that did not succeed; `off` opens no buffer. Nothing is written before the run ends.
    #[tokio::test]
    async fn problems_mode_keeps_only_runs_that_warned_or_did_not_succeed() {
        let (_dir, store, quiet) = store_with_run().await;
        let claim = |s: i64| NewRun {
            job_id: "j".into(),
            scheduled_at: DateTime::from_timestamp(s, 0).expect("instant"),
            trigger: Trigger::Schedule,
            status: RunStatus::Running,
            started_at: Utc::now(),
            message: None,
        };
        let ids = store
            .claim_runs(&[claim(100), claim(200)])
            .await
            .expect("claim");
        let (warned, failed) = (ids[0].expect("claimed"), ids[1].expect("claimed"));
        let logs = RunLogs::start(store.clone(), 64 * 1024);
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(RunLogLayer));
        let none = || Redactor::new(std::iter::empty::<&str>());
        assert!(logs.open(quiet, none(), RunLogMode::Off).is_none());
        let mut buffers = Vec::new();
        for (run_id, warn) in [(quiet, false), (warned, true), (failed, false)] {
            let b = logs
                .open(run_id, none(), RunLogMode::Problems)
                .expect("a buffer");
            let span = capture_into(Some(&b), || tracing::info_span!("run", run_id));
            span.in_scope(|| {
                tracing::info!("working");
                if warn {
                    tracing::warn!("something looks wrong");
                }
            });
            buffers.push(b);
        }
        // Held back until the end, even across a flush.
        tokio::time::sleep(FLUSH_EVERY + MIN_GAP).await;
        assert!(
            store
                .run_logs(warned, 0, 10)
                .await
                .expect("read")
                .is_empty()
        );
        buffers[0].close(RunStatus::Succeeded);
        buffers[1].close(RunStatus::Succeeded);
        buffers[2].close(RunStatus::Failed);
        logs.close().await;
        let count = |id| {
            let store = store.clone();
            async move { store.run_logs(id, 0, 10).await.expect("read").len() }
        };
        assert_eq!(count(quiet).await, 0);
        assert_eq!(count(warned).await, 2);
        assert_eq!(count(failed).await, 1);
        store.close().await;
    }
}
