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
mod provision;
mod settings;

pub use provision::{Installed, ProvisionError, install};
pub use settings::SecopsSettings;

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
use launch::{BOOTSTRAP, Config, Launch, absolute, installed_job, launch_for, param_text};
pub(crate) use output::{bounded_lines, shown};
use output::{failure_reason, outcome_of};

/// The implementation id.
pub const ID: &str = "secops-script";
/// The default interpreter (`secops.python`).
pub const DEFAULT_PYTHON: &str = "python3";
/// The most of the script's stdout (its output object) that is read.
const STDOUT_MAX: u64 = 8 * 1024 * 1024;
/// How many trailing stderr lines are kept for the failure reason (a chained traceback).
const STDERR_TAIL: usize = 400;
/// The SDK log file's name in the run's temp folder (`--logPath`).
const LOG_FILE: &str = "job.log";

/// The `secops-script` job: holds the SOAR client the gateway forwards to, and the gateway
/// (started by the first run, on the daemon's runtime).
pub struct SecopsScript {
    soar: Configured<SoarClient>,
    python: String,
    settings: SecopsSettings,
    gateway: Arc<OnceCell<Gateway>>,
}

impl SecopsScript {
    pub fn new(soar: Configured<SoarClient>, settings: SecopsSettings) -> SecopsScript {
        SecopsScript {
            soar,
            python: settings
                .python
                .clone()
                .unwrap_or_else(|| DEFAULT_PYTHON.to_string()),
            settings,
            gateway: Arc::new(OnceCell::new()),
        }
    }
}

/// The run's own temp folder (the SDK's `--logPath` file is there), removed when the run ends.
struct RunDir(PathBuf);

impl RunDir {
    fn create(run_id: i64, user: Option<&soarjobd_core::RunAs>) -> std::io::Result<RunDir> {
        use rand::Rng;
        let n: u64 = rand::rng().random();
        let dir = std::env::temp_dir().join(format!("soarjobd-secops-{run_id}-{n:016x}"));
        std::fs::create_dir(&dir)?;
        chown(&dir, user)?;
        Ok(RunDir(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Hands `dir` to the user the script runs as (it writes there), private to it.
fn chown(dir: &Path, user: Option<&soarjobd_core::RunAs>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some(u) = user {
        std::os::unix::fs::chown(dir, Some(u.uid), Some(u.gid))?;
    }
    Ok(())
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
        if cfg.python.is_none()
            && let Some((name, folder)) = provision::integration_of(&script)
        {
            match provision::installed_python(&self.settings, &name) {
                Some(python) => {
                    // The environment must be able to import what the script imports (modules
                    // beside the script, as `python <script>` finds them, and its own package
                    // from the integration's parent).
                    let source = std::fs::read_to_string(&script).unwrap_or_default();
                    let modules = provision::imported_modules(&source);
                    let base = absolute(file.parent().unwrap_or(Path::new("")));
                    let mut path = vec![
                        absolute(script.parent().unwrap_or(Path::new("/"))),
                        absolute(folder.parent().unwrap_or(Path::new("/"))),
                    ];
                    for (k, v) in &cfg.env {
                        if k == "PYTHONPATH" {
                            path.extend(std::env::split_paths(v).map(|p| base.join(p)));
                        }
                    }
                    match provision::missing_modules(&python, &modules, &path) {
                        Ok(missing) if !missing.is_empty() => errs.push(FieldError::new(
                            "script",
                            format!(
                                "the environment of the integration `{name}` ({}) cannot import \
                                 {}: add it to the integration's dependencies (or secops.wheels) \
                                 and run `soarjobd secops install {}`",
                                python.display(),
                                missing.join(", "),
                                folder.display()
                            ),
                        )),
                        Ok(_) => {}
                        Err(e) => errs.push(FieldError::new("script", e)),
                    }
                    return errs;
                }
                None if provision::declares_dependencies(&folder) => {
                    errs.push(FieldError::new(
                        "script",
                        format!(
                            "the integration `{name}` declares dependencies but has no \
                             environment: run `soarjobd secops install {}` (or set `python`)",
                            folder.display()
                        ),
                    ));
                    return errs;
                }
                None => {}
            }
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
            .get_or_try_init(|| {
                Gateway::start(self.soar.clone(), self.settings.integrations.clone())
            })
            .await
            .map_err(|e| JobError::context("cannot start the SecOps SDK gateway", e))?;
        let (guard, mut ops) = gateway.open(ctx.span().clone(), installed_job(ctx));
        let token = guard.session.token().to_string();

        // The job's own `python`, else its integration's environment (`secops install`),
        // else secops.python.
        let python = cfg
            .python
            .clone()
            .or_else(|| {
                let (name, _) = provision::integration_of(&script)?;
                provision::installed_python(&self.settings, &name)
                    .map(|p| absolute(&p).display().to_string())
            })
            .unwrap_or_else(|| self.python.clone());
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
        let user =
            crate::process::run_as(ctx, crate::process::run_as_key(&ctx.definition().extra))?;
        let run_dir = RunDir::create(ctx.run_id(), user.as_ref())
            .map_err(|e| JobError::context("cannot create the run's temp folder", e))?;
        let log_path = run_dir.0.join(LOG_FILE);
        // Through the launcher, which gives the script the platform's argv.
        cmd.arg("-c").arg(BOOTSTRAP).arg(&script);
        match &launch {
            Launch::Script => {
                cmd.arg("");
                cmd.current_dir(script.parent().unwrap_or(Path::new(".")));
            }
            Launch::Module { module, root } => {
                cmd.arg(module);
                cmd.current_dir(root);
                pythonpath.insert(0, root.clone());
            }
        }
        cmd.arg(&token);
        cmd.arg(format!("--logPath={}", log_path.display()));
        if !cfg.env.iter().any(|(k, _)| k == "RUN_FOLDER") {
            // The SDK's scripting folder (`RUN_FOLDER`, `run_folder`): the job's own, writable.
            let folder = absolute(&self.settings.run_folder(ctx.job_id()));
            match std::fs::create_dir_all(&folder).and_then(|()| chown(&folder, user.as_ref())) {
                Ok(()) => {
                    cmd.env("RUN_FOLDER", &folder);
                }
                // Only scripts that use `run_folder` need it: they fail saying where; the
                // others run.
                Err(e) => tracing::warn!(
                    folder = %folder.display(),
                    error = %e,
                    "cannot create the job's run folder (set secops.data_dir, or RUN_FOLDER in the job's env); the SDK's default is left"
                ),
            }
        }
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
            let Some(pipe) = stderr else {
                return (tail, false);
            };
            let mut logged = 0usize;
            let mut dumped = false;
            // Lines are bounded (a line without a newline cannot fill the memory), the log
            // is bounded as for `exec`, and the pipe is always drained.
            bounded_lines(pipe, LINE_MAX + redactor.longest(), |line| {
                let text = shown(&redactor.redact(&line));
                // `@output_handler` dumps the captured stdout (the SDK log lines) here.
                dumped |= text == "STDOUT:";
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
            (tail, dumped)
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
        let ((), out, (tail, dumped), status, ()) =
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
        let (outcome, debug_logged) = if status.success() {
            outcome_of(ctx, &out)
        } else {
            use std::os::unix::process::ExitStatusExt;
            let what = match (status.code(), status.signal()) {
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                _ => "unknown exit status".into(),
            };
            let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
            let reason = failure_reason(&lines);
            (
                Outcome::failed(match reason {
                    Some(r) => format!("{r} ({what})"),
                    None => format!("the script failed ({what})"),
                }),
                false,
            )
        };
        if !debug_logged && !dumped {
            // The SDK logger's own file: the job's log lines when no output object (or
            // stderr dump) carried them, e.g. a script that never calls end_script().
            log_sdk_file(ctx, &log_path).await;
        }
        drop(run_dir);
        Ok(outcome)
    }
}

/// Logs the lines of the SDK's log file (bounded as the other script output).
async fn log_sdk_file(ctx: &JobContext, path: &Path) {
    let Ok(file) = tokio::fs::File::open(path).await else {
        return;
    };
    let redactor = ctx.redactor().clone();
    let mut logged = 0usize;
    bounded_lines(file, LINE_MAX + redactor.longest(), |line| {
        if line.trim().is_empty() {
            return;
        }
        logged += 1;
        if logged <= RUN_LINES_MAX {
            let text = shown(&redactor.redact(&line));
            tracing::info!(stream = "sdk_log", line = %text, "script output");
        }
    })
    .await;
    if logged > RUN_LINES_MAX {
        tracing::warn!(
            lines = logged - RUN_LINES_MAX,
            "SDK log lines not logged (limit)"
        );
    }
}
