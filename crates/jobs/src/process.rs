//! A job's child process under the run's containment, shared by `exec` and `secops-script`:
//! the process record written before the program starts, its own process group and cgroup
//! ([`RunContainment`]), and the stop sequence on cancellation (SIGTERM to the group, SIGKILL
//! after the grace). One place, so both jobs kill and record exactly alike. Also what both
//! read from their job files and check alike: the `env` mapping, the clean environment the
//! process starts with, whether a program is an executable file, `run_as`.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use serde_json::{Map, Value};
use soarjobd_containment::RunContainment;
use soarjobd_core::definition::FieldError;
use soarjobd_core::{ExecSlot, RunAs};
use soarjobd_core::{JobContext, JobError};

/// Environment variables passed through from the daemon; the rest of its environment is not.
const PASS_ENV: &[&str] = &["PATH", "HOME", "LANG", "TZ"];

/// Clears `cmd`'s environment but for [`PASS_ENV`], taken from the daemon's.
pub fn clean_env(cmd: &mut Command) {
    cmd.env_clear();
    for k in PASS_ENV {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
}

/// A job file's `env` key: a mapping of variable names to strings (numbers and booleans as
/// their text). `reserved(name)` says why a variable may not be set, if it may not.
pub fn parse_env(
    extra: &Map<String, Value>,
    reserved: impl Fn(&str) -> Option<String>,
    errs: &mut Vec<FieldError>,
) -> Vec<(String, String)> {
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
                if let Some(why) = reserved(k) {
                    errs.push(FieldError::new(format!("env.{k}"), why));
                }
            }
        }
        Some(_) => errs.push(FieldError::new(
            "env",
            "`env` must be a mapping of variable names to values",
        )),
    }
    env
}

/// `Ok` if `path` is a file with an execute permission bit, else why not.
pub fn executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err("is a folder".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("is not executable".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("does not exist ({}: {e})", path.display())),
    }
}

/// Whether the bare name `program` is an executable file in a folder of `path` (a `PATH`
/// value; its relative folders taken from `cwd`).
pub fn in_path(program: &str, path: &str, cwd: &Path) -> bool {
    std::env::split_paths(path)
        .map(|dir| cwd.join(dir).join(program))
        .any(|p| executable(&p).is_ok())
}

/// A started child with its containment. Dropping it (the run abandoned) kills everything.
pub struct Contained {
    child: Child,
    cont: RunContainment,
    /// The run's place under `exec.max_concurrent`, held until the program is over.
    _slot: ExecSlot,
}

/// The user a job's process runs as: the job's `run_as`, else `exec.user`, else the daemon's
/// own (`None`). Refused when the daemon cannot switch to it (it is not root).
pub fn run_as(ctx: &JobContext, job_run_as: Option<&str>) -> Result<Option<RunAs>, JobError> {
    let user = match job_run_as {
        Some(name) => Some(
            soarjobd_containment::lookup_user(name)
                .map_err(|e| JobError::msg(format!("`run_as`: {e}")))?,
        ),
        None => ctx.exec_policy().user().cloned(),
    };
    if let Some(u) = &user {
        soarjobd_containment::check_can_switch(u).map_err(JobError::msg)?;
    }
    Ok(user)
}

/// A job file's `run_as` key: the user its process runs as (a name or a numeric uid).
pub fn run_as_key(extra: &Map<String, Value>) -> Option<&str> {
    extra.get("run_as").and_then(Value::as_str)
}

/// Checks `run_as` where a job file is validated: a text naming a user of this host. Whether
/// the daemon can switch to it (it runs as root) is checked when the run starts.
pub fn validate_run_as(extra: &Map<String, Value>, errs: &mut Vec<FieldError>) {
    match extra.get("run_as") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => {
            if let Err(e) = soarjobd_containment::lookup_user(name) {
                errs.push(FieldError::new("run_as", format!("`run_as`: {e}")));
            }
        }
        Some(_) => errs.push(FieldError::new(
            "run_as",
            "`run_as` must be a user name (or a numeric uid)",
        )),
    }
}

impl Contained {
    /// Waits for a process slot (`exec.max_concurrent`; the wait is logged and kept in the
    /// run's stats as `queued_ms`), records the run's processes, then starts `cmd` (already
    /// given its argv, environment and pipes) in its own group and cgroup, as `run_as` when
    /// given ([`run_as`]), and records its pid. The record comes before the start, so a crash
    /// at any later point leaves a record the next start uses.
    pub async fn spawn(
        ctx: &JobContext,
        cmd: &mut Command,
        program: &str,
        run_as: Option<&RunAs>,
    ) -> Result<Contained, JobError> {
        let Some(slot) = ctx.exec_policy().slot(ctx.cancellation()).await else {
            return Err(JobError::msg(
                "cancelled while waiting for a process slot (exec.max_concurrent)",
            ));
        };
        if !slot.queued.is_zero() {
            ctx.stats().set("queued_ms", slot.queued.as_millis() as u64);
        }
        if let Some(u) = run_as {
            // The daemon's HOME is not the job user's.
            cmd.env("HOME", &u.home);
        }
        cmd.kill_on_drop(true);
        let mut cont = RunContainment::prepare(ctx.processes().clone());
        cont.configure(cmd, run_as);
        if let Err(e) = ctx.processes().record(&cont.record()).await {
            cont.finish().await;
            return Err(JobError::context("cannot record the run's processes", e));
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                cont.finish().await;
                return Err(JobError::context(format!("cannot start `{program}`"), e));
            }
        };
        let pid = child.id().unwrap_or(0);
        cont.started(pid);
        tracing::debug!(pid, "process started");
        if let Err(e) = ctx.processes().record(&cont.record()).await {
            // Without the record a crash could leave the program running: do not run it.
            cont.signal(libc::SIGKILL);
            let _ = child.wait().await;
            cont.leader_reaped();
            cont.finish().await;
            return Err(JobError::context("cannot record the run's processes", e));
        }
        Ok(Contained {
            child,
            cont,
            _slot: slot,
        })
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Waits for the program. On `cancel` its group and cgroup get SIGTERM, then SIGKILL
    /// after `grace`; the answer is then `None`. When the program exits, whatever it left
    /// running is killed at once (`finish`): that also closes the pipes a background process
    /// may hold, so readers of the pipes reach their end.
    pub async fn wait(
        mut self,
        cancel: &CancellationToken,
        grace: Duration,
    ) -> Option<std::io::Result<ExitStatus>> {
        let status = tokio::select! {
            status = self.child.wait() => Some(status),
            _ = cancel.cancelled() => {
                tracing::info!(grace_s = grace.as_secs(), "stopping the process (SIGTERM)");
                self.cont.signal(libc::SIGTERM);
                if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
                    tracing::warn!("the process ignored SIGTERM; killing it (SIGKILL)");
                    self.cont.signal(libc::SIGKILL);
                    let _ = self.child.wait().await;
                }
                None
            }
        };
        self.cont.leader_reaped();
        self.cont.finish().await;
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn env_values_are_text_and_reserved_names_are_refused_by_name() {
        let extra = json!({"env": {"A": "x", "N": 3, "B": true, "L": [1], "APP_IP": "1.2.3.4"}});
        let mut errs = Vec::new();
        let env = parse_env(
            extra.as_object().unwrap(),
            |k| (k == "APP_IP").then(|| format!("`{k}` is set by soarjobd")),
            &mut errs,
        );
        let mut env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.sort();
        assert_eq!(env, ["A=x", "APP_IP=1.2.3.4", "B=true", "N=3"]);
        let mut errs: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        errs.sort();
        assert_eq!(
            errs,
            [
                ("env.APP_IP", "`APP_IP` is set by soarjobd"),
                ("env.L", "environment values must be strings")
            ]
        );

        let mut errs = Vec::new();
        parse_env(
            json!({"env": "A=1"}).as_object().unwrap(),
            |_| None,
            &mut errs,
        );
        assert_eq!(errs[0].path, "env");
    }

    #[test]
    fn only_executable_files_are_programs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        assert_eq!(executable(&prog).unwrap_err(), "is not executable");
        assert!(!in_path("prog", "bin", dir.path().parent().unwrap()));
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(executable(&prog), Ok(()));
        assert_eq!(executable(dir.path()).unwrap_err(), "is a folder");
        assert!(
            executable(&dir.path().join("none"))
                .unwrap_err()
                .starts_with("does not exist")
        );
        // A relative folder of PATH is taken from the working directory given.
        let name = dir.path().file_name().unwrap().to_str().unwrap();
        assert!(in_path(
            "prog",
            &format!("/nonexistent:{name}"),
            dir.path().parent().unwrap()
        ));
        assert!(!in_path("other", name, dir.path().parent().unwrap()));
    }
}
