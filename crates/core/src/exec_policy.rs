//! How job processes (`exec`, `secops-script`) are started: under which user, and how many
//! at once. The `exec:` config section (`exec.user`, `exec.max_concurrent`) and a job's own
//! `run_as` key end up here; the runner hands the policy to every run ([`JobContext`]), and
//! the jobs' process code (`soarjobd-jobs`' `process`) applies it through
//! `soarjobd_containment::RunContainment::configure`. This module holds the policy as data;
//! what asks the OS (the user database, the effective uid) is `soarjobd-containment`'s.
//!
//! * **Another user.** A daemon started as root runs job processes as `exec.user` (or a job's
//!   `run_as`): the child drops its supplementary groups, sets its group and user before
//!   `exec` (after entering the run's cgroup, which needs root). A job process of another
//!   user can neither read the daemon's memory or `/proc/<pid>/environ`, nor signal it, nor
//!   read a credentials file only root can read. A daemon that is not root refuses
//!   `exec.user` at start and a `run_as` naming another user at run time: it cannot switch.
//! * **A cap.** `exec.max_concurrent` job processes at most; a run beyond it waits for a slot
//!   (in FIFO order, cancellable: a timeout or a shutdown ends the wait), so a burst of runs
//!   queues instead of starving the host. The wait is logged and kept in the run's stats
//!   (`queued_ms`).
//!
//! [`JobContext`]: crate::job::JobContext

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The `exec:` config section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSettings {
    /// Run job processes as this user (the daemon must run as root). `None`: the daemon's.
    pub user: Option<String>,
    /// The most job processes at once (0: no cap).
    pub max_concurrent: usize,
}

/// A user to run job processes as, as the user database has it. Looking a user up and asking
/// whether this process may switch to it are the OS's business, so they live outside the core
/// (it depends on no libc): `soarjobd_containment::{lookup_user, check_can_switch}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The user's home folder (the process's `HOME`).
    pub home: String,
}

/// The process policy every run gets: the default user and the slots.
#[derive(Debug, Default)]
pub struct ExecPolicy {
    user: Option<RunAs>,
    slots: Option<(usize, Arc<Semaphore>)>,
}

/// A slot held while a job process runs (none without a cap).
#[derive(Debug)]
pub struct ExecSlot {
    _permit: Option<OwnedSemaphorePermit>,
    /// How long the run waited for it.
    pub queued: Duration,
}

impl ExecPolicy {
    /// The policy of `exec.max_concurrent` with `user` as the default user (`exec.user`,
    /// already looked up: `soarjobd_containment::exec_policy` builds it from the settings).
    pub fn new(user: Option<RunAs>, max_concurrent: usize) -> ExecPolicy {
        ExecPolicy {
            user,
            slots: (max_concurrent > 0)
                .then(|| (max_concurrent, Arc::new(Semaphore::new(max_concurrent)))),
        }
    }

    /// The user job processes run as by default (`exec.user`).
    pub fn user(&self) -> Option<&RunAs> {
        self.user.as_ref()
    }

    /// Waits for a slot (FIFO: tokio's semaphore is fair), or `None` when `cancel` fires
    /// first. Logs the wait when there was one.
    pub async fn slot(&self, cancel: &CancellationToken) -> Option<ExecSlot> {
        let Some((max, sem)) = &self.slots else {
            return Some(ExecSlot {
                _permit: None,
                queued: Duration::ZERO,
            });
        };
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Some(ExecSlot {
                _permit: Some(p),
                queued: Duration::ZERO,
            });
        }
        let start = Instant::now();
        tracing::info!(
            max_concurrent = max,
            "waiting for a process slot (exec.max_concurrent)"
        );
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => p.ok()?,
            _ = cancel.cancelled() => return None,
        };
        let queued = start.elapsed();
        tracing::info!(
            queued_ms = queued.as_millis() as u64,
            "process slot acquired after waiting"
        );
        Some(ExecSlot {
            _permit: Some(permit),
            queued,
        })
    }

    /// Job processes running now and the cap (`None`: no cap).
    pub fn in_use(&self) -> Option<(usize, usize)> {
        self.slots
            .as_ref()
            .map(|(max, sem)| (max - sem.available_permits(), *max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_queue_and_a_cancelled_wait_gives_up() {
        let p = ExecPolicy::new(None, 1);
        let cancel = CancellationToken::new();
        let first = p.slot(&cancel).await.unwrap();
        assert_eq!(first.queued, Duration::ZERO);
        assert_eq!(p.in_use(), Some((1, 1)));
        let waiting = tokio::time::timeout(Duration::from_millis(50), p.slot(&cancel)).await;
        assert!(waiting.is_err(), "the second waits while the first runs");
        let c2 = CancellationToken::new();
        c2.cancel();
        assert!(p.slot(&c2).await.is_none());
        drop(first);
        let second = p.slot(&cancel).await.unwrap();
        assert_eq!(p.in_use(), Some((1, 1)));
        drop(second);
        assert_eq!(p.in_use(), Some((0, 1)));
    }
}
