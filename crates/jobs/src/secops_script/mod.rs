//! `job: secops-script`: a SecOps SOAR Python job script, run unchanged, launched exactly as
//! the platform launches it (`specs/secops-sdk-launch.md`).
//!
//! * argv: `[python, <script>, <API key>]`, or `[python, -m, <integration>.jobs.<Name>, <API
//!   key>]` with the integration's parent as working directory and on `PYTHONPATH` when the
//!   script imports its integration package-relatively (`from ..core.X import Y`). The API key
//!   is a per-run token of the loopback [`gateway`], never the tenant's key.
//! * stdin: `{"parameters": {<display name>: <string>}, "unique_identifier": <job id>,
//!   "use_proxy_settings": false, "vault_settings": null}`. Passwords travel only here.
//! * environment: a clean one (`PATH`, `HOME`, `LANG`, `TZ`, the job's `env`) plus `APP_IP`,
//!   `APP_PORT`, `APP_USE_SSL=False` pointing at the gateway.
//! * the output object on stdout (`Message`, `ResultValue`, `ExecutionState`, `DebugOutput`):
//!   `DebugOutput` lines become the run's log events, `ExecutionState` 0 succeeded, 2 failed,
//!   3 timed out; a non-zero exit is a failure whose reason is the traceback's last line.
//! * timeouts and containment as for `exec` ([`crate::process`]).

mod context;
mod gateway;
mod launch;
mod output;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::OnceCell;

use soarjobd_clients::soar::SoarClient;
use soarjobd_core::Configured;
use soarjobd_core::definition::{FieldError, JobSpec, Parameters};
use soarjobd_core::{Job, JobContext, JobError, Outcome};

use crate::exec::{KILL_GRACE, LINE_MAX, RUN_LINES_MAX};
use crate::process::Contained;
use context::serve_op;
use gateway::Gateway;
pub(crate) use gateway::ct_eq;
pub(crate) use launch::find_program;
use launch::{Config, Launch, absolute, installed_job, launch_for, param_text};
use output::outcome_of;
pub(crate) use output::{bounded_lines, shown};

/// The implementation id.
pub const ID: &str = "secops-script";
/// The default interpreter (`secops.python`).
pub const DEFAULT_PYTHON: &str = "python3";
/// The most of the script's stdout (its output object) that is read.
const STDOUT_MAX: u64 = 8 * 1024 * 1024;
/// How many trailing stderr lines are kept for the failure reason.
const STDERR_TAIL: usize = 20;

/// The `secops-script` job: holds the SOAR client the gateway forwards to, and the gateway
/// (started by the first run, on the daemon's runtime).
pub struct SecopsScript {
    soar: Configured<SoarClient>,
    python: String,
    gateway: Arc<OnceCell<Gateway>>,
}

impl SecopsScript {
    pub fn new(soar: Configured<SoarClient>, python: Option<String>) -> SecopsScript {
        SecopsScript {
            soar,
            python: python.unwrap_or_else(|| DEFAULT_PYTHON.to_string()),
            gateway: Arc::new(OnceCell::new()),
        }
    }
}

impl JobSpec for SecopsScript {
    fn summary(&self) -> &'static str {
        "runs a SecOps SOAR Python job script unchanged (SDK launch contract, loopback SDK gateway)"
    }

    fn extra_keys(&self) -> &'static [&'static str] {
        &["script", "python", "env", "run_as"]
    }

    fn script_extension(&self) -> Option<&'static str> {
        Some("py")
    }

    fn validate(&self, _params: &Parameters, extra: &Map<String, Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        Config::parse(extra, &mut errs);
        errs
    }

    fn validate_file(
        &self,
        file: &Path,
        _params: &Parameters,
        extra: &Map<String, Value>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        crate::process::validate_run_as(extra, &mut errs);
        let Some(cfg) = Config::parse(extra, &mut errs) else {
            return errs;
        };
        let script = cfg.script_path(file);
        match std::fs::read_to_string(&script) {
            Ok(src) => {
                if let Err(e) = launch_for(&script, &src) {
                    errs.push(FieldError::new("script", e));
                }
            }
            Err(e) => errs.push(FieldError::new(
                "script",
                format!("cannot read the script {}: {e}", script.display()),
            )),
        }
        let python = cfg.python.as_deref().unwrap_or(&self.python);
        if !find_program(python) {
            errs.push(FieldError::new(
                "python",
                format!(
                    "the Python interpreter `{python}` is not found (set `python` or secops.python)"
                ),
            ));
        }
        errs
    }
}

#[async_trait]
impl Job for SecopsScript {
    fn id(&self) -> &'static str {
        ID
    }

    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        let mut errs = Vec::new();
        let cfg = Config::parse(&ctx.definition().extra, &mut errs)
            .ok_or_else(|| JobError::msg("invalid secops-script configuration"))?;
        let ctx: &JobContext = ctx;
        let job_file = ctx.definition().source.clone();
        let script = cfg.script_path(&job_file);
        let source = tokio::fs::read_to_string(&script)
            .await
            .map_err(|e| JobError::context(format!("cannot read {}", script.display()), e))?;
        let launch = launch_for(&script, &source).map_err(JobError::msg)?;
        let gateway = self
            .gateway
            .get_or_try_init(|| Gateway::start(self.soar.clone()))
            .await
            .map_err(|e| JobError::context("cannot start the SecOps SDK gateway", e))?;
        let (guard, mut ops) = gateway.open(ctx.span().clone(), installed_job(ctx));
        let token = guard.session.token().to_string();

        let python = cfg.python.clone().unwrap_or_else(|| self.python.clone());
        let mut cmd = Command::new(&python);
        crate::process::clean_env(&mut cmd);
        let base = absolute(job_file.parent().unwrap_or(Path::new("")));
        let mut pythonpath: Vec<PathBuf> = Vec::new();
        for (k, v) in &cfg.env {
            if k == "PYTHONPATH" {
                // Relative entries are relative to the job file, like every path in it.
                pythonpath.extend(std::env::split_paths(v).map(|p| base.join(p)));
            } else {
                cmd.env(k, v);
            }
        }
        match &launch {
            Launch::Script => {
                cmd.arg(&script);
                cmd.current_dir(script.parent().unwrap_or(Path::new(".")));
            }
            Launch::Module { module, root } => {
                cmd.arg("-m").arg(module);
                cmd.current_dir(root);
                pythonpath.insert(0, root.clone());
            }
        }
        cmd.arg(&token);
        if !pythonpath.is_empty()
            && let Ok(joined) = std::env::join_paths(&pythonpath)
        {
            cmd.env("PYTHONPATH", joined);
        }
        let addr = gateway.addr();
        cmd.env("APP_IP", addr.ip().to_string())
            .env("APP_PORT", addr.port().to_string())
            .env("APP_USE_SSL", "False")
            // Vendored integration folders stay as they were copied.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let parameters: Map<String, Value> = ctx
            .params()
            .iter()
            .map(|p| (p.name.clone(), Value::String(param_text(&p.value))))
            .collect();
        let input = json!({
            "parameters": parameters,
            "unique_identifier": ctx.job_id(),
            "use_proxy_settings": false,
            "vault_settings": null,
        });

        let user =
            crate::process::run_as(ctx, crate::process::run_as_key(&ctx.definition().extra))?;
        let mut child = Contained::spawn(ctx, &mut cmd, &python, user.as_ref()).await?;
        let stdin = child.take_stdin();
        let stdout = child.take_stdout();
        let stderr = child.take_stderr();
        let write_input = async move {
            if let Some(mut s) = stdin {
                let bytes = serde_json::to_vec(&input).unwrap_or_default();
                let _ = s.write_all(&bytes).await;
                let _ = s.shutdown().await;
            }
        };
        let read_stdout = async {
            let mut buf = Vec::new();
            if let Some(pipe) = stdout {
                let mut limited = pipe.take(STDOUT_MAX);
                let _ = limited.read_to_end(&mut buf).await;
                // Drain the rest so the script never blocks on a full pipe.
                let mut rest = limited.into_inner();
                let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
            }
            buf
        };
        let redactor = ctx.redactor().clone();
        let read_stderr = async {
            let mut tail: VecDeque<String> = VecDeque::new();
            let Some(pipe) = stderr else { return tail };
            let mut logged = 0usize;
            // Lines are bounded (a line without a newline cannot fill the memory), the log
            // is bounded as for `exec`, and the pipe is always drained.
            bounded_lines(pipe, LINE_MAX + redactor.longest(), |line| {
                let text = shown(&redactor.redact(&line));
                logged += 1;
                if logged <= RUN_LINES_MAX {
                    tracing::info!(stream = "stderr", line = %text, "script output");
                }
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(text);
            })
            .await;
            if logged > RUN_LINES_MAX {
                tracing::warn!(
                    lines = logged - RUN_LINES_MAX,
                    "stderr lines not logged (limit)"
                );
            }
            tail
        };
        let done = tokio_util::sync::CancellationToken::new();
        let cancel = ctx.cancellation().clone();
        let wait = async {
            let status = child.wait(&cancel, KILL_GRACE).await;
            done.cancel();
            status
        };
        // Context requests are served here, by the run's own task, until the script is gone.
        let serve = async {
            loop {
                tokio::select! {
                    op = ops.recv() => match op {
                        Some(op) => serve_op(ctx, op).await,
                        None => break,
                    },
                    _ = done.cancelled() => break,
                }
            }
        };
        let ((), out, tail, status, ()) =
            tokio::join!(write_input, read_stdout, read_stderr, wait, serve);
        let requests = guard
            .session
            .requests
            .load(std::sync::atomic::Ordering::Relaxed);
        // The token dies with the run.
        drop(guard);
        ctx.stats().set("soar_requests", requests);

        let Some(status) = status else {
            return Err(JobError::Cancelled);
        };
        let status = status.map_err(|e| JobError::context("cannot wait for the script", e))?;
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            let what = match (status.code(), status.signal()) {
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                _ => "unknown exit status".into(),
            };
            // A traceback ends with the exception: `ValueError: boom`.
            let reason = tail
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .cloned()
                .unwrap_or_default();
            return Ok(Outcome::failed(if reason.is_empty() {
                format!("the script failed ({what})")
            } else {
                format!("{} ({what})", reason.trim())
            }));
        }
        Ok(outcome_of(ctx, &out))
    }
}
