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

mod gateway;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::OnceCell;

use soarjobd_clients::soar::SoarClient;
use soarjobd_core::definition::{FieldError, JobSpec, ParamValue, Parameters};
use soarjobd_core::job::{Job, JobContext, JobError, Outcome};
use soarjobd_core::platform::Configured;
use soarjobd_core::redact::escape_controls;

use crate::exec::{KILL_GRACE, LINE_MAX, RUN_LINES_MAX};
use crate::process::Contained;
use gateway::{ContextOp, Gateway, OpKind};

/// The implementation id.
pub const ID: &str = "secops-script";
/// The default interpreter (`secops.python`).
pub const DEFAULT_PYTHON: &str = "python3";
/// Environment variables passed through from the daemon.
const PASS_ENV: &[&str] = &["PATH", "HOME", "LANG", "TZ"];
/// The most of the script's stdout (its output object) that is read.
const STDOUT_MAX: u64 = 8 * 1024 * 1024;
/// How many trailing stderr lines are kept for the failure reason.
const STDERR_TAIL: usize = 20;
/// The SecOps SDK's context key of `fetch_timestamp` / `save_timestamp`; kept as the job's
/// last-success timestamp, so `list`/`history` show it.
const TIMESTAMP_KEY: &str = soarjobd_core::job::DEFAULT_TIMESTAMP_KEY;

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

/// How a script is started.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Launch {
    /// `python <script>`, in the script's folder.
    Script,
    /// `python -m <module>`, in `root` (on `PYTHONPATH` too).
    Module { module: String, root: PathBuf },
}

struct Config {
    script: PathBuf,
    python: Option<String>,
    env: Vec<(String, String)>,
}

impl Config {
    fn parse(extra: &Map<String, Value>, errs: &mut Vec<FieldError>) -> Option<Config> {
        let script = match extra.get("script") {
            Some(Value::String(s)) if !s.is_empty() => Some(PathBuf::from(s)),
            Some(_) => {
                errs.push(FieldError::new("script", "`script` must be a path"));
                None
            }
            None => {
                errs.push(FieldError::new(
                    "job",
                    "a `secops-script` job needs `script` (or a `<Name>.py` beside its definition)",
                ));
                None
            }
        };
        let python = match extra.get("python") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                errs.push(FieldError::new(
                    "python",
                    "`python` must be a program name or path",
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
                    if matches!(k.as_str(), "APP_IP" | "APP_PORT" | "APP_USE_SSL") {
                        errs.push(FieldError::new(
                            format!("env.{k}"),
                            format!("`{k}` is set by soarjobd (it points at the SDK gateway)"),
                        ));
                    }
                }
            }
            Some(_) => errs.push(FieldError::new(
                "env",
                "`env` must be a mapping of variable names to values",
            )),
        }
        Some(Config {
            script: script?,
            python,
            env,
        })
    }

    /// The script's path: absolute, or relative to the job file's folder. Made absolute,
    /// since the script runs in another working directory than the daemon's.
    fn script_path(&self, job_file: &Path) -> PathBuf {
        absolute(
            &job_file
                .parent()
                .unwrap_or(Path::new(""))
                .join(&self.script),
        )
    }
}

/// `p` against the daemon's working directory (a relative jobs folder gives relative paths).
fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// Whether the script imports its integration package-relatively, and if so how to run it
/// as a module: `<integration>/jobs/<Name>.py` -> `<integration>.jobs.<Name>` from the
/// integration's parent.
fn launch_for(script: &Path, source: &str) -> Result<Launch, String> {
    let relative = source.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("from .") || l.starts_with("import .")
    });
    if !relative {
        return Ok(Launch::Script);
    }
    let ident = |s: &str| {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
    };
    let stem = script.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let jobs = script.parent();
    let integration = jobs.and_then(Path::parent);
    let (Some(jobs), Some(integration)) = (jobs, integration) else {
        return Err(
            "a script with package-relative imports must sit in <integration>/jobs/".into(),
        );
    };
    let name = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string()
    };
    let parts = [name(integration), name(jobs), stem.to_string()];
    if let Some(bad) = parts.iter().find(|p| !ident(p)) {
        return Err(format!(
            "the script uses package-relative imports, so it runs as the module \
             `{}`; `{bad}` is not a Python identifier",
            parts.join(".")
        ));
    }
    Ok(Launch::Module {
        module: parts.join("."),
        root: integration.parent().unwrap_or(Path::new("/")).to_path_buf(),
    })
}

/// Whether `program` can be started: a path to a file, or a name found in `PATH`.
fn find_program(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

impl JobSpec for SecopsScript {
    fn summary(&self) -> &'static str {
        "runs a SecOps SOAR Python job script unchanged (SDK launch contract, loopback SDK gateway)"
    }

    fn extra_keys(&self) -> &'static [&'static str] {
        &["script", "python", "env"]
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

/// This job instance as `GetInstalledJobs` lists it (TIPCommon reads its parameter list from
/// there, matching `uniqueIdentifier` with the stdin's `unique_identifier`). Values are the
/// instance's, except passwords, which travel only on stdin.
fn installed_job(ctx: &JobContext) -> Value {
    use soarjobd_core::definition::ParamType;
    let parameters: Vec<Value> = ctx
        .params()
        .iter()
        .map(|p| {
            // ScriptParamType codes (soar-api.md §6); csv is a string there.
            let code = match p.ty {
                ParamType::Boolean => 0,
                ParamType::Integer => 1,
                ParamType::String | ParamType::Csv => 2,
                ParamType::Password => 3,
                ParamType::Ip => 4,
                ParamType::IpOrHost => 5,
                ParamType::Url => 6,
                ParamType::Domain => 7,
                ParamType::Email => 8,
            };
            let value = match p.ty {
                ParamType::Password => String::new(),
                _ => param_text(&p.value),
            };
            json!({
                "name": p.name,
                "displayName": p.name,
                "isMandatory": p.mandatory,
                "mandatory": p.mandatory,
                "type": code,
                "value": value,
            })
        })
        .collect();
    json!([{
        "uniqueIdentifier": ctx.job_id(),
        "name": ctx.definition().name,
        "isEnabled": ctx.definition().enabled,
        "parameters": parameters,
    }])
}

/// A parameter as the SDK gets it: its text, as typed in the SecOps UI.
fn param_text(v: &ParamValue) -> String {
    match v.to_exposed_json() {
        Value::String(s) => s,
        Value::Null => String::new(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
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
        cmd.env_clear();
        for k in PASS_ENV {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
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

        let mut child = Contained::spawn(ctx, &mut cmd, &python).await?;
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

/// The run's outcome from the script's output object (`end_script`), logging its
/// `DebugOutput` lines as the run's events.
fn outcome_of(ctx: &JobContext, out: &[u8]) -> Outcome {
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

/// A line as logged: control characters escaped, at most [`LINE_MAX`] bytes.
fn shown(text: &str) -> String {
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
async fn bounded_lines<R: tokio::io::AsyncRead + Unpin>(
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

/// An integer timestamp as the SDK saves it: a JSON number or a JSON string of digits.
fn as_millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Answers a job context property request from the job's state.
async fn serve_op(ctx: &JobContext, op: ContextOp) {
    let answer = context_answer(ctx, &op).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "SecOps SDK gateway: a context property request failed");
        (500, serde_json::to_vec(&e.to_string()).unwrap_or_default())
    });
    let _ = op.reply.send(answer);
}

/// The job's context key of a SecOps job context property: `<Identifier>/<PropertyKey>` (the
/// job's own state is already per job). The SDK's timestamp is the job's last-success
/// timestamp instead.
fn context_key(op: &ContextOp) -> String {
    format!("{}/{}", op.identifier, op.key)
}

async fn context_answer(ctx: &JobContext, op: &ContextOp) -> Result<(u16, Vec<u8>), JobError> {
    let enc = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    let current = async {
        if op.key == TIMESTAMP_KEY
            && let Some(ms) = ctx.stored_timestamp(TIMESTAMP_KEY).await?
        {
            // As the SDK saved it: `json.dumps(ms)`, a string of digits.
            return Ok::<_, JobError>(Some(Value::String(ms.to_string())));
        }
        ctx.context_get(&context_key(op)).await
    };
    let set = |value: Value| async move {
        match as_millis(&value).filter(|_| op.key == TIMESTAMP_KEY) {
            Some(ms) => {
                let at = chrono::DateTime::from_timestamp_millis(ms)
                    .ok_or_else(|| JobError::msg(format!("timestamp {ms} is out of range")))?;
                ctx.save_timestamp_by_key(TIMESTAMP_KEY, at).await
            }
            None => ctx.context_set(&context_key(op), &value).await,
        }
    };
    match op.kind {
        OpKind::Get => Ok(match current.await? {
            Some(v) => (200, enc(&v)),
            None => (204, Vec::new()),
        }),
        OpKind::Set => {
            set(op.value.clone().unwrap_or(Value::Null)).await?;
            Ok((200, enc(&Value::Bool(true))))
        }
        OpKind::TrySet => {
            if current.await?.is_some() {
                return Ok((200, enc(&Value::Bool(false))));
            }
            set(op.value.clone().unwrap_or(Value::Null)).await?;
            Ok((200, enc(&Value::Bool(true))))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Launch, launch_for};

    #[tokio::test]
    async fn output_lines_are_bounded_and_the_pipe_drained() {
        let data = format!("{}\nshort\nlast", "x".repeat(100_000));
        let mut got = Vec::new();
        super::bounded_lines(data.as_bytes(), 10, |l| got.push(l)).await;
        assert_eq!(got, ["xxxxxxxxxx", "short", "last"]);
        let long = super::shown(&"é".repeat(20_000));
        assert!(long.ends_with("bytes]") && long.len() < super::LINE_MAX + 40);
    }

    #[test]
    fn package_relative_imports_run_as_a_module() {
        let script = Path::new("/srv/integrations/tools/jobs/TagCases.py");
        assert_eq!(launch_for(script, "import json\n"), Ok(Launch::Script));
        assert_eq!(
            launch_for(script, "from ..core.Manager import Manager\n"),
            Ok(Launch::Module {
                module: "tools.jobs.TagCases".into(),
                root: "/srv/integrations".into(),
            })
        );
        let spaced = Path::new("/srv/integrations/tools/jobs/Tag Cases.py");
        let e = launch_for(spaced, "from ..core import x\n").unwrap_err();
        assert!(e.contains("`Tag Cases` is not a Python identifier"), "{e}");
    }
}
