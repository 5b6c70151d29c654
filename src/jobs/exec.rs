//! `job: exec`: runs a program in any language as a job.
//!
//! The program is started directly from `command` (an argv list, no shell, so no quoting
//! surprises), in its own process group, with a clean environment: only `PATH`, `HOME`,
//! `LANG`, `TZ` and the job's `env` are passed, so the daemon's own secrets (API keys given as
//! environment variables) never reach a script. Parameters, passwords included, arrive as one
//! JSON document on stdin; they are never put into environment variables, which other
//! processes of the same user can read.
//!
//! stdout and stderr lines become log events in the run's span. Two stdout line forms are
//! commands rather than output: `::stats {"name": 1}` merges counters into the run's stats
//! and `::context {"key": value}` writes keys of the job's context.
//!
//! Exit status 0 is success (the run's start time is saved as the last-success timestamp),
//! 3 is partial success, anything else is failure with the last stderr lines as the message.
//! On cancellation (timeout, replace, shutdown) the group gets SIGTERM, then SIGKILL after
//! [`KILL_GRACE`]; a drop guard kills the group if the run's task is aborted, so no child is
//! ever orphaned.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::definition::{FieldError, JobSpec, Parameters};
use crate::job::{Job, JobContext, JobError, Outcome};

/// Time between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How many trailing stderr lines make a failure message.
const STDERR_TAIL: usize = 10;
/// Environment variables passed through from the daemon.
const PASS_ENV: &[&str] = &["PATH", "HOME", "LANG", "TZ"];

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
        let mut env = Vec::new();
        match extra.get("env") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) => env.push((k.clone(), s.clone())),
                        Value::Number(_) | Value::Bool(_) => env.push((k.clone(), v.to_string())),
                        _ => errs.push(FieldError::new(
                            format!("env.{k}"),
                            "environment values must be strings",
                        )),
                    }
                }
            }
            Some(_) => errs.push(FieldError::new(
                "env",
                "`env` must be a mapping of variable names to values",
            )),
        }
        (!command.is_empty()).then_some(ExecConfig {
            command,
            working_dir,
            env,
        })
    }
}

impl JobSpec for Exec {
    fn summary(&self) -> &'static str {
        "runs a program; parameters as JSON on stdin; exit 0 ok, 3 partial, else failed"
    }

    fn extra_keys(&self) -> &'static [&'static str] {
        &["command", "working_dir", "env"]
    }

    fn validate(&self, _params: &Parameters, extra: &Map<String, Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        ExecConfig::parse(extra, &mut errs);
        errs
    }
}

/// Kills the whole process group when dropped, unless disarmed after the child was reaped.
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn signal(&self, sig: i32) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) with a negative pid signals a process group; it has no memory
            // effects. The group is the child's own (process_group(0)), never ours.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
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
        let base = ctx
            .definition()
            .source
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut cmd = Command::new(&cfg.command[0]);
        cmd.args(&cfg.command[1..])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so the whole tree can be signalled at once.
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe. If the daemon is killed outright (SIGKILL, OOM), the
        // kernel then kills the program too instead of leaving it orphaned.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        for k in PASS_ENV {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        for (k, v) in &cfg.env {
            cmd.env(k, v);
        }
        if let Some(wd) = &cfg.working_dir {
            // A relative working_dir is relative to the job file's folder, like every other
            // path in a job file.
            cmd.current_dir(base.join(wd));
        }

        let since = ctx
            .store
            .get_timestamp(ctx.job_id(), crate::job::DEFAULT_TIMESTAMP_KEY)
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

        let mut child = cmd
            .spawn()
            .map_err(|e| JobError::context(format!("cannot start `{}`", cfg.command[0]), e))?;
        let guard = GroupGuard {
            pgid: child.id().map(|p| p as i32),
        };
        tracing::debug!(pid = child.id(), "process started");

        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let write_input = async move {
            if let Some(mut s) = stdin.take() {
                let mut bytes = serde_json::to_vec(&input).unwrap_or_default();
                bytes.push(b'\n');
                // A program that does not read stdin closes the pipe; that is not an error.
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
            }
        };
        let read_stdout = async {
            let Some(out) = stdout else { return };
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                self.stdout_line(ctx, &line).await;
            }
        };
        let mut tail: VecDeque<String> = VecDeque::new();
        let read_stderr = async {
            let Some(err) = stderr else { return };
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(stream = "stderr", line = %line, "process output");
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        };
        let cancel = ctx.cancellation().clone();
        let wait = async {
            tokio::select! {
                status = child.wait() => Some(status),
                _ = cancel.cancelled() => {
                    tracing::info!(grace_s = KILL_GRACE.as_secs(), "stopping the process (SIGTERM)");
                    guard.signal(libc::SIGTERM);
                    match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                        Ok(_) => {}
                        Err(_) => {
                            tracing::warn!("the process ignored SIGTERM; killing it (SIGKILL)");
                            guard.signal(libc::SIGKILL);
                            let _ = child.wait().await;
                        }
                    }
                    None
                }
            }
        };
        let ((), (), (), status) = tokio::join!(write_input, read_stdout, read_stderr, wait);
        // Children of the program that kept running in its group die with it.
        drop(guard);

        let Some(status) = status else {
            return Err(JobError::Cancelled);
        };
        let status = status.map_err(|e| JobError::context("cannot wait for the process", e))?;
        let tail_text = tail.into_iter().collect::<Vec<_>>().join("\n");
        match status.code() {
            Some(0) => {
                ctx.save_timestamp(ctx.job_start_time()).await?;
                Ok(Outcome::succeeded("exit status 0"))
            }
            Some(3) => Ok(Outcome::partial(if tail_text.is_empty() {
                "exit status 3 (partial success)".to_string()
            } else {
                format!("exit status 3 (partial success): {tail_text}")
            })),
            code => {
                use std::os::unix::process::ExitStatusExt;
                let what = match (code, status.signal()) {
                    (Some(c), _) => format!("exit status {c}"),
                    (None, Some(s)) => format!("killed by signal {s}"),
                    _ => "unknown exit status".to_string(),
                };
                Ok(Outcome::failed(if tail_text.is_empty() {
                    what
                } else {
                    format!("{what}: {tail_text}")
                }))
            }
        }
    }
}

impl Exec {
    /// Handles one stdout line: a `::stats` / `::context` command, or output to log.
    async fn stdout_line(&self, ctx: &JobContext, line: &str) {
        if let Some(rest) = line.strip_prefix("::stats ") {
            match serde_json::from_str::<Map<String, Value>>(rest) {
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
        if let Some(rest) = line.strip_prefix("::context ") {
            match serde_json::from_str::<Map<String, Value>>(rest) {
                Ok(m) => {
                    for (k, v) in m {
                        if let Err(e) = ctx.context_set(&k, &v).await {
                            tracing::error!(error = %crate::job::error_chain(&e), "cannot save context");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed ::context line"),
            }
            return;
        }
        tracing::info!(stream = "stdout", line = %line, "process output");
    }
}
