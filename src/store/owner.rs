//! Who owns a `running` row, and whether that owner still lives.
//!
//! Every run row records the process that claimed it: pid, host, the process's start token
//! (boot id and start time, so a recycled pid is not mistaken for the owner) and a nonce per
//! opened store (so that, inside one process, a store that was closed — a daemon that was
//! stopped and started again in-process — counts as gone). A `running` row is *live* while its
//! owner is; the overlap check across processes looks only at live rows, and only rows whose
//! owner is dead are marked `interrupted` (at daemon start, periodically, and when a claim
//! meets them).

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

/// The process (and store instance) that claimed a run row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOwner {
    pub pid: i64,
    pub host: String,
    /// `<boot id>:<start time in clock ticks>` on Linux; `None` where it cannot be read.
    #[serde(skip)]
    pub start: Option<String>,
    /// One per opened store.
    #[serde(skip)]
    pub nonce: String,
}

/// What can be said about an owner from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    /// Another host: a pid there cannot be checked from here. Treated as alive, so a run is
    /// never declared dead by a process that cannot know.
    Unknown,
}

/// Nonces of the stores open in this process.
fn open_nonces() -> &'static Mutex<HashSet<String>> {
    static OPEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// Registers a store's owner identity while it is open; dropping (or [`OwnerGuard::release`])
/// makes its rows count as dead.
#[derive(Debug)]
pub struct OwnerGuard {
    owner: RunOwner,
}

impl OwnerGuard {
    pub fn new() -> OwnerGuard {
        let owner = RunOwner {
            pid: i64::from(std::process::id()),
            host: this_host().to_owned(),
            start: this_start().clone(),
            nonce: uuid::Uuid::new_v4().simple().to_string(),
        };
        open_nonces()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner.nonce.clone());
        OwnerGuard { owner }
    }

    pub fn owner(&self) -> &RunOwner {
        &self.owner
    }

    /// Marks the store closed: its `running` rows are no longer live.
    pub fn release(&self) {
        open_nonces()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.owner.nonce);
    }
}

impl Default for OwnerGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        self.release();
    }
}

impl RunOwner {
    /// Whether the process that claimed the row still runs (and, for this very process,
    /// whether the store that claimed it is still open).
    pub fn liveness(&self) -> Liveness {
        if self.host != this_host() {
            return Liveness::Unknown;
        }
        let me = i64::from(std::process::id());
        if self.pid == me && self.start == *this_start() {
            let open = open_nonces()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&self.nonce);
            return if open {
                Liveness::Alive
            } else {
                Liveness::Dead
            };
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return Liveness::Dead;
        };
        if pid <= 0 {
            return Liveness::Dead;
        }
        match (&self.start, process_start(pid)) {
            // A zombie or a missing /proc entry is a dead process; a different start token
            // is a recycled pid.
            (Some(recorded), Ok(Some(now))) if *recorded == now => Liveness::Alive,
            (Some(_), Ok(_)) => Liveness::Dead,
            // No start token recorded or no /proc: signal 0 tells whether the pid exists.
            _ => {
                // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
                let r = unsafe { libc::kill(pid, 0) };
                if r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                    Liveness::Alive
                } else {
                    Liveness::Dead
                }
            }
        }
    }
}

/// This machine's host name.
pub fn this_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
        let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if r != 0 {
            return "unknown".to_owned();
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
}

fn this_start() -> &'static Option<String> {
    static START: OnceLock<Option<String>> = OnceLock::new();
    START.get_or_init(|| {
        process_start(i32::try_from(std::process::id()).unwrap_or(0))
            .ok()
            .flatten()
    })
}

/// `<boot id>:<start time>` of a running process. `Ok(None)`: no such process, or a zombie.
/// `Err`: `/proc` is not available here.
fn process_start(pid: i32) -> std::io::Result<Option<String>> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    let boot = BOOT
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .as_deref()
        .ok_or_else(|| std::io::Error::other("no boot id"))?;
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3); the start time is field 22, i.e. fields[19].
    match (fields.first(), fields.get(19)) {
        (Some(&("Z" | "X" | "x")), _) => Ok(None),
        (Some(_), Some(start)) => Ok(Some(format!("{boot}:{start}"))),
        _ => Err(std::io::Error::other("unexpected /proc/PID/stat format")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_its_open_stores_are_alive_and_closed_ones_dead() {
        let guard = OwnerGuard::new();
        assert_eq!(guard.owner().liveness(), Liveness::Alive);
        let owner = guard.owner().clone();
        drop(guard);
        assert_eq!(owner.liveness(), Liveness::Dead);
    }

    #[test]
    fn other_processes_are_checked_by_pid_and_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let start = process_start(pid).expect("proc").expect("running");
        let owner = RunOwner {
            pid: i64::from(pid),
            host: this_host().to_owned(),
            start: Some(start.clone()),
            nonce: "x".into(),
        };
        assert_eq!(owner.liveness(), Liveness::Alive);
        // The same pid with another start time is a recycled pid: not the owner.
        let recycled = RunOwner {
            start: Some(format!("{start}0")),
            ..owner.clone()
        };
        assert_eq!(recycled.liveness(), Liveness::Dead);
        child.kill().expect("kill");
        // A zombie (killed, not yet reaped) is dead too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while owner.liveness() != Liveness::Dead && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(owner.liveness(), Liveness::Dead);
        child.wait().expect("reap");
        assert_eq!(owner.liveness(), Liveness::Dead);
        let elsewhere = RunOwner {
            host: format!("{}-elsewhere", this_host()),
            ..owner
        };
        assert_eq!(elsewhere.liveness(), Liveness::Unknown);
    }
}
