//! A job's child process under the run's containment, shared by `exec` and `secops-script`:
//! the process record written before the program starts, its own process group and cgroup
//! ([`RunContainment`]), and the stop sequence on cancellation (SIGTERM to the group, SIGKILL
//! after the grace). One place, so both jobs kill and record exactly alike.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use soarjobd_containment::RunContainment;
use soarjobd_core::job::{JobContext, JobError};

/// A started child with its containment. Dropping it (the run abandoned) kills everything.
pub struct Contained {
    child: Child,
    cont: RunContainment,
}

impl Contained {
    /// Records the run's processes, then starts `cmd` (already given its argv, environment and
    /// pipes) in its own group and cgroup, and records its pid. The record comes before the
    /// start, so a crash at any later point leaves a record the next start uses.
    pub async fn spawn(
        ctx: &JobContext,
        cmd: &mut Command,
        program: &str,
    ) -> Result<Contained, JobError> {
        cmd.kill_on_drop(true);
        let mut cont = RunContainment::prepare(ctx.processes().clone());
        cont.configure(cmd);
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
        Ok(Contained { child, cont })
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
