//! How job processes (`exec`, `secops-script`) are started: under which user, and how many
//! at once. The `exec:` config section (`exec.user`, `exec.max_concurrent`) and a job's own
//! `run_as` key end up here; the runner hands the policy to every run ([`JobContext`]), and
//! the jobs' process code (`soarjobd-jobs`' `process`) applies it through
//! [`crate::containment::RunContainment::configure`].
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

use std::ffi::{CStr, CString};
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

/// A user to run job processes as, looked up in the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The user's home folder (the process's `HOME`).
    pub home: String,
}

impl RunAs {
    /// Looks `name` up (a user name, or a numeric uid) in the user database.
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        let name = name.trim();
        if name.is_empty() {
            return Err("the user name is empty".into());
        }
        let c = CString::new(name).map_err(|_| format!("`{name}` is not a user name"))?;
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0u8; 16 * 1024];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwnam_r/getpwuid_r write into `pwd` and `buf`, both ours and large
        // enough (ERANGE otherwise, reported below); `out` points to `pwd` or is null.
        let rc = unsafe {
            match name.parse::<u32>() {
                Ok(uid) => {
                    libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut out)
                }
                Err(_) => libc::getpwnam_r(
                    c.as_ptr(),
                    &mut pwd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut out,
                ),
            }
        };
        if rc != 0 {
            return Err(format!(
                "cannot look up user `{name}`: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if out.is_null() {
            return Err(format!("no user `{name}` on this host"));
        }
        // SAFETY: on success the strings point into `buf`, NUL-terminated.
        let (user, home) = unsafe {
            (
                CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
                CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned(),
            )
        };
        Ok(RunAs {
            name: user,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home,
        })
    }

    /// Whether this process can start processes as this user: it is root, or it is that
    /// user already (then nothing changes).
    pub fn check_can_switch(&self) -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid == 0 || euid == self.uid {
            Ok(())
        } else {
            Err(format!(
                "running job processes as `{}` needs the daemon to run as root (it runs as \
                 uid {euid}); start it as root, or remove the setting",
                self.name
            ))
        }
    }

    /// Whether starting a process as this user changes anything.
    pub fn is_switch(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() != self.uid }
    }
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
    /// The policy of `settings`: looks the user up (an unknown user is an error). Whether the
    /// daemon may switch to it is checked by [`ExecPolicy::check_can_switch`], at start.
    pub fn from_settings(settings: &ExecSettings) -> Result<ExecPolicy, String> {
        let user = match &settings.user {
            Some(u) => Some(RunAs::lookup(u).map_err(|e| format!("`exec.user`: {e}"))?),
            None => None,
        };
        Ok(ExecPolicy {
            user,
            slots: (settings.max_concurrent > 0).then(|| {
                (
                    settings.max_concurrent,
                    Arc::new(Semaphore::new(settings.max_concurrent)),
                )
            }),
        })
    }

    /// The user job processes run as by default (`exec.user`).
    pub fn user(&self) -> Option<&RunAs> {
        self.user.as_ref()
    }

    /// Fails when `exec.user` is set and this process cannot switch to it.
    pub fn check_can_switch(&self) -> Result<(), String> {
        match &self.user {
            Some(u) => u
                .check_can_switch()
                .map_err(|e| format!("`exec.user`: {e}")),
            None => Ok(()),
        }
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

    #[test]
    fn users_are_looked_up_by_name_and_uid() {
        let root = RunAs::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(RunAs::lookup("0").unwrap().name, "root");
        assert!(
            RunAs::lookup("no-such-user-soarjobd")
                .unwrap_err()
                .contains("no user")
        );
    }

    #[tokio::test]
    async fn slots_queue_and_a_cancelled_wait_gives_up() {
        let p = ExecPolicy::from_settings(&ExecSettings {
            user: None,
            max_concurrent: 1,
        })
        .unwrap();
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
