//! `job: tcex-app`: a ThreatConnect TcEx job app, run unchanged, launched exactly as the
//! platform launches it (`specs/tcex-job-app-launch.md`).
//!
//! * Files: the app folder as vendored (`install.json`, `<programMain>.py`, `lib_*/`), used by
//!   an instance file (`uses: ../apps/<app>/install.json`, `values:` keyed by the app's param
//!   names). The definition loader reads `install.json` through this job's manifest hook
//!   ([`manifest`]): params become the job's parameters (`encrypt` ones passwords, which must
//!   come from `value_from_env`/`value_from_file`), and the manifest is part of the job, so a
//!   change of it reloads the job.
//! * Launch: `<python> <app>/<programMain>.py`, cwd = the app folder, no arguments, a clean
//!   environment plus `TC_APP_PARAM_FILE`/`TC_APP_PARAM_KEY`; a private per-run folder (0700)
//!   with `in/ out/ temp/ log/` and the AES-CBC encrypted params file (0600, a fresh
//!   32-character key), removed after the run ([`launch`]). The params file holds the app's
//!   values in the platform's formats and the `tc_*` inputs: `tc_api_path` points at the
//!   loopback [`gateway`], `tc_token` is a per-run token expiring at the run's deadline. Never
//!   the real ThreatConnect credentials.
//! * Results: exit 0 succeeded, 3 partial, other failed; killed by its timeout: timed out
//!   (the runner's). `out/message.tc` is the run's message; the lines of `log/app.log` (and its
//!   rotations) become the run's log lines, redacted (the run's passwords, the platform
//!   credentials, the per-run token); the run's stats count the forwarded requests
//!   (`tc_requests`).
//! * Persisted values: `out/results.tc` pairs of a run exiting 0 or 3 (params of the app, never
//!   `encrypt` ones) are kept in the job's context and override the instance's values on later
//!   runs; a feed's `firstRunParams` apply until the job's first success (both assumed by the
//!   spec).
//! * Containment, timeouts and output limits as for `exec` ([`crate::process`]).

mod deps;
mod gateway;
mod launch;
mod manifest;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::process::Command;
use tokio::sync::OnceCell;

use soarjobd_clients::threatconnect::ThreatConnectClient;
use soarjobd_core::definition::{FieldError, JobSpec, Parameters};
use soarjobd_core::{Configured, Redactor};
use soarjobd_core::{Job, JobContext, JobError, Outcome};

use crate::exec::{KILL_GRACE, LINE_MAX, RUN_LINES_MAX};
use crate::process::Contained;
use crate::secops_script::{bounded_lines, shown};
use gateway::Gateway;
use launch::RunDir;
use manifest::{INSTALL_JSON, Manifest, platform_value};

pub use deps::{DepsError, build_deps};

/// The implementation id.
pub const ID: &str = "tcex-app";
/// The default interpreter (`tcex.python`).
pub const DEFAULT_PYTHON: &str = "python3";
/// How many trailing stderr lines are kept for the failure reason.
const STDERR_TAIL: usize = 20;
/// The most of `message.tc` read (tcex writes at most 255 characters).
const MESSAGE_MAX: u64 = 4096;
/// The most of the app's log files read, all rotations together.
const APP_LOG_MAX: u64 = 64 * 1024 * 1024;
/// The job's context key holding the values the app persisted (`results.tc`).
const RESULTS_KEY: &str = "tcex.results";
/// The job's context key set by its first succeeded run (`firstRunParams` apply until then).
const SUCCEEDED_KEY: &str = "tcex.succeeded";
/// The most of `results.tc` read.
const RESULTS_MAX: u64 = 1024 * 1024;

/// Inputs the params file always carries, which an app's values cannot replace.
const RESERVED: &[&str] = &[
    "tc_api_path",
    "tc_token",
    "tc_token_expires",
    "tc_api_access_id",
    "tc_api_secret_key",
    "api_access_id",
    "api_secret_key",
    "tc_in_path",
    "tc_out_path",
    "tc_temp_path",
    "tc_log_path",
    "tc_log_file",
    "tc_log_to_api",
    "tc_verify",
    "tc_proxy_tc",
    "tc_aot_enabled",
];

/// The `tcex-app` job: holds the ThreatConnect client the gateway forwards to, and the
/// gateway (started by the first run, on the daemon's runtime).
pub struct TcexApp {
    tc: Configured<ThreatConnectClient>,
    python: String,
    gateway: Arc<OnceCell<Gateway>>,
}

impl TcexApp {
    pub fn new(tc: Configured<ThreatConnectClient>, python: Option<String>) -> TcexApp {
        TcexApp {
            tc,
            python: python.unwrap_or_else(|| DEFAULT_PYTHON.to_string()),
            gateway: Arc::new(OnceCell::new()),
        }
    }
}

/// The job's own keys.
struct Config {
    app: PathBuf,
    python: Option<String>,
    env: Vec<(String, String)>,
}

impl Config {
    fn parse(extra: &Map<String, Value>, errs: &mut Vec<FieldError>) -> Option<Config> {
        let app = match extra.get("app") {
            Some(Value::String(s)) if !s.is_empty() => Some(PathBuf::from(s)),
            _ => {
                errs.push(FieldError::new(
                    "uses",
                    "a `tcex-app` job is an instance file: `uses: <app folder>/install.json`",
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
        let env = crate::process::parse_env(
            extra,
            |k| {
                matches!(
                    k,
                    "TC_APP_PARAM_FILE"
                        | "TC_APP_PARAM_KEY"
                        | "TCEX_APP_CONFIG_DEV"
                        | "TC_TOKEN_SLEEP_INTERVAL"
                )
                .then(|| format!("`{k}` is set (or kept unset) by soarjobd"))
            },
            errs,
        );
        Some(Config {
            app: app?,
            python,
            env,
        })
    }
}

impl JobSpec for TcexApp {
    fn summary(&self) -> &'static str {
        "runs a ThreatConnect TcEx job app unchanged (platform launch contract, loopback TC gateway)"
    }

    fn extra_keys(&self) -> &'static [&'static str] {
        &["app", "python", "env", "run_as"]
    }

    fn manifest_name(&self) -> Option<&'static str> {
        Some(INSTALL_JSON)
    }

    fn manifest_definition(&self, path: &Path, text: &str) -> Result<Value, Vec<String>> {
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(Manifest::parse(dir, text)?.definition())
    }

    fn passwords_from_secrets_only(&self) -> bool {
        true
    }

    fn validate(&self, _params: &Parameters, extra: &Map<String, Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        Config::parse(extra, &mut errs);
        errs
    }

    fn validate_file(
        &self,
        _file: &Path,
        params: &Parameters,
        extra: &Map<String, Value>,
    ) -> Vec<FieldError> {
        let mut errs = Vec::new();
        crate::process::validate_run_as(extra, &mut errs);
        let Some(cfg) = Config::parse(extra, &mut errs) else {
            return errs;
        };
        match Manifest::read(&cfg.app) {
            Ok(m) => m.check_values(params, &mut errs),
            Err(problems) => errs.extend(problems.into_iter().map(|p| FieldError::new("uses", p))),
        }
        for p in params.iter() {
            // An app may declare such a param; giving it a value is what cannot work.
            if RESERVED.contains(&p.name.as_str())
                && !matches!(p.value, soarjobd_core::definition::ParamValue::Null)
            {
                errs.push(FieldError::new(
                    format!("parameters.{}", p.name),
                    format!("`{}` is set by soarjobd, not by the app's values", p.name),
                ));
            }
        }
        let python = cfg.python.as_deref().unwrap_or(&self.python);
        if !crate::secops_script::find_program(python) {
            errs.push(FieldError::new(
                "python",
                format!(
                    "the Python interpreter `{python}` is not found (set `python` or tcex.python)"
                ),
            ));
        }
        errs
    }
}

/// The params file's content: the app's values, then the runtime inputs over them.
fn params_document(
    ctx: &JobContext,
    manifest: &Manifest,
    dir: &RunDir,
    api_path: String,
    token: &str,
    deadline: i64,
) -> Map<String, Value> {
    let mut m = Map::new();
    for p in ctx.params().iter() {
        if let Some(v) = platform_value(&p.value, &manifest.list_delimiter) {
            m.insert(p.name.clone(), Value::String(v));
        }
    }
    let folder = |sub: &str| Value::String(dir.path(sub).display().to_string());
    let text = |s: &str| Value::String(s.to_string());
    m.insert("tc_api_path".into(), Value::String(api_path));
    m.insert("tc_token".into(), text(token));
    m.insert(
        "tc_token_expires".into(),
        Value::String(deadline.to_string()),
    );
    m.insert("tc_in_path".into(), folder("in"));
    m.insert("tc_out_path".into(), folder("out"));
    m.insert("tc_temp_path".into(), folder("temp"));
    m.insert("tc_log_path".into(), folder("log"));
    m.insert("tc_log_file".into(), text("app.log"));
    if !m.contains_key("tc_log_level") {
        m.insert("tc_log_level".into(), text("info"));
    }
    m.insert("tc_log_to_api".into(), text("false"));
    m.insert("tc_verify".into(), text("true"));
    m.insert("tc_proxy_tc".into(), text("false"));
    m.insert("tc_aot_enabled".into(), text("false"));
    m
}

#[async_trait]
impl Job for TcexApp {
    fn id(&self) -> &'static str {
        ID
    }

    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        let mut errs = Vec::new();
        let cfg = Config::parse(&ctx.definition().extra, &mut errs)
            .ok_or_else(|| JobError::msg("invalid tcex-app configuration"))?;
        let ctx: &JobContext = ctx;
        let manifest = Manifest::read(&cfg.app).map_err(|e| JobError::msg(e.join("; ")))?;
        let gateway = self
            .gateway
            .get_or_try_init(|| Gateway::start(self.tc.clone()))
            .await
            .map_err(|e| JobError::context("cannot start the TC gateway", e))?;
        let timeout =
            chrono::Duration::from_std(ctx.definition().timeout).unwrap_or(chrono::Duration::MAX);
        let deadline = ctx
            .job_start_time()
            .checked_add_signed(timeout)
            .map(|t| t.timestamp())
            .unwrap_or(i64::MAX);
        let guard = gateway.open(ctx.span().clone(), deadline);
        let token = guard.session.token().to_string();

        let user =
            crate::process::run_as(ctx, crate::process::run_as_key(&ctx.definition().extra))?;
        let owner = user.as_ref().map(|u| (u.uid, u.gid));
        let dir = RunDir::create(&std::env::temp_dir(), owner)
            .map_err(|e| JobError::context("cannot create the run's folder", e))?;
        let api_path = format!("http://{}/api", gateway.addr());
        let mut doc = params_document(ctx, &manifest, &dir, api_path, &token, deadline);
        // A feed app's first-run values, until the job has succeeded once (spec §8, assumed).
        if !manifest.first_run.is_empty() && ctx.context_get(SUCCEEDED_KEY).await?.is_none() {
            for (k, v) in &manifest.first_run {
                if persistable(&manifest, k) {
                    doc.insert(k.clone(), Value::String(v.clone()));
                }
            }
        }
        // Values the app persisted on earlier runs (`results.tc`) win over the instance's, as
        // the platform keeps them as the job's new param values (spec §5, assumed).
        if let Some(Value::Object(kept)) = ctx.context_get(RESULTS_KEY).await? {
            for (k, v) in kept {
                if let (Some(text), true) = (v.as_str(), persistable(&manifest, &k)) {
                    doc.insert(k, Value::String(text.to_string()));
                }
            }
        }
        let (params_file, key) = dir
            .write_params(&doc, owner)
            .map_err(|e| JobError::context("cannot write the params file", e))?;
        drop(doc);

        let python = cfg.python.clone().unwrap_or_else(|| self.python.clone());
        let mut cmd = Command::new(&python);
        crate::process::clean_env(&mut cmd);
        for (k, v) in &cfg.env {
            cmd.env(k, v);
        }
        cmd.arg(manifest.dir.join(format!("{}.py", manifest.program_main)))
            .current_dir(&manifest.dir)
            .env("TC_APP_PARAM_FILE", &params_file)
            .env("TC_APP_PARAM_KEY", &key)
            // Vendored app folders stay as they were copied.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());

        let redactor = ctx.redactor().clone();
        let own = Redactor::new([token.as_str(), key.as_str()]);
        let clean = |s: &str| shown(&own.redact(&redactor.redact(s)));
        let mut child = Contained::spawn(ctx, &mut cmd, &python, user.as_ref()).await?;
        drop(cmd);
        let stdout = child.take_stdout();
        let stderr = child.take_stderr();
        let max = LINE_MAX + redactor.longest() + 64;
        let read = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>, stream| {
            let clean = &clean;
            async move {
                let mut tail: VecDeque<String> = VecDeque::new();
                let Some(pipe) = pipe else { return tail };
                let mut logged = 0usize;
                bounded_lines(pipe, max, |line| {
                    let text = clean(&line);
                    logged += 1;
                    if logged <= RUN_LINES_MAX {
                        tracing::info!(stream, line = %text, "app output");
                    }
                    if tail.len() == STDERR_TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(text);
                })
                .await;
                tail
            }
        };
        let out_pipe = stdout.map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
        let err_pipe = stderr.map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
        let cancel = ctx.cancellation().clone();
        let (_, tail, status) = tokio::join!(
            read(out_pipe, "stdout"),
            read(err_pipe, "stderr"),
            child.wait(&cancel, KILL_GRACE)
        );

        // The app's log and message, read before the folder goes.
        log_app_files(&dir.path("log"), &clean);
        let message = read_message(&dir.path("out")).map(|m| clean(&m));
        let results = read_results(&dir.path("out"), &manifest);
        let requests = guard.session.requests.load(Ordering::Relaxed);
        let refused = guard.session.refused.load(Ordering::Relaxed);
        // The token dies with the run, the folder (params file included) too.
        drop(guard);
        drop(dir);
        ctx.stats().set("tc_requests", requests);
        if refused > 0 {
            ctx.stats().set("tc_refused", refused);
        }

        let Some(status) = status else {
            return Err(JobError::Cancelled);
        };
        let status = status.map_err(|e| JobError::context("cannot wait for the app", e))?;
        use std::os::unix::process::ExitStatusExt;
        let code = status.code();
        if code == Some(0) && !manifest.first_run.is_empty() {
            ctx.context_set(SUCCEEDED_KEY, &Value::Bool(true)).await?;
        }
        if matches!(code, Some(0 | 3)) && !results.is_empty() {
            let mut kept = match ctx.context_get(RESULTS_KEY).await? {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            ctx.stats().set("tc_results", results.len() as u64);
            kept.extend(results);
            ctx.context_set(RESULTS_KEY, &Value::Object(kept)).await?;
        }
        let what = match (code, status.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown exit status".into(),
        };
        Ok(match code {
            Some(0) => Outcome::succeeded(message.unwrap_or_else(|| "Success".into())),
            Some(3) => {
                Outcome::partial(message.unwrap_or_else(|| "partial failure (exit 3)".into()))
            }
            _ => {
                let reason = message.or_else(|| {
                    tail.iter()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .map(|l| l.trim().to_string())
                });
                Outcome::failed(match reason {
                    Some(r) => format!("{r} ({what})"),
                    None => format!("the app failed ({what})"),
                })
            }
        })
    }
}

/// Whether the app may persist `name` through `results.tc`: one of its params, not a password.
fn persistable(manifest: &Manifest, name: &str) -> bool {
    manifest.params.iter().any(|p| p.name == name && !p.encrypt)
}

/// The `key = value` lines of `results.tc` for params the app may persist.
fn read_results(out: &Path, manifest: &Manifest) -> Map<String, Value> {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(out.join("results.tc")) {
        let _ = f.take(RESULTS_MAX).read_to_string(&mut text);
    }
    text.lines()
        .filter_map(|l| l.split_once(" = ").or_else(|| l.split_once('=')))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| persistable(manifest, k))
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// `message.tc`, trimmed; `None` when absent or empty.
fn read_message(out: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(out.join("message.tc")).ok()?;
    let mut text = String::new();
    f.take(MESSAGE_MAX).read_to_string(&mut text).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Logs the lines of `app.log` and its rotations (oldest first: `app.log.N` ... `app.log.1`,
/// then `app.log`) as the run's log lines, redacted and bounded as `exec` output.
fn log_app_files(log_dir: &Path, clean: &dyn Fn(&str) -> String) {
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let n = match name.strip_prefix("app.log") {
                Some("") => 0,
                Some(rest) => rest.strip_prefix('.')?.parse().ok()?,
                None => return None,
            };
            Some((n, e.path()))
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut budget = APP_LOG_MAX;
    let mut logged = 0usize;
    let mut dropped = 0usize;
    for (_, path) in files {
        use std::io::Read;
        let Ok(f) = std::fs::File::open(&path) else {
            continue;
        };
        let mut bytes = Vec::new();
        let _ = f.take(budget).read_to_end(&mut bytes);
        budget = budget.saturating_sub(bytes.len() as u64);
        for line in String::from_utf8_lossy(&bytes).lines() {
            if line.trim().is_empty() {
                continue;
            }
            logged += 1;
            if logged > RUN_LINES_MAX {
                dropped += 1;
                continue;
            }
            let text = clean(line);
            tracing::info!(stream = "app.log", line = %text, "app log");
        }
    }
    if dropped > 0 {
        tracing::warn!(lines = dropped, "app.log lines not logged (limit)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_logs_are_read_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("app.log"), "third\n").unwrap();
        std::fs::write(tmp.path().join("app.log.1"), "second\n").unwrap();
        std::fs::write(tmp.path().join("app.log.2"), "first\nsecret-x\n").unwrap();
        std::fs::write(tmp.path().join("other.log"), "no\n").unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        log_app_files(tmp.path(), &|l: &str| {
            let l = l.replace("secret-x", "***");
            seen.lock().unwrap().push(l.clone());
            l
        });
        assert_eq!(*seen.lock().unwrap(), ["first", "***", "second", "third"]);
    }
}
