//! Process containment: no process a run started outlives the run, not even after the daemon
//! itself was killed (`kill -9`, OOM).
//!
//! # Design
//!
//! A run's program (an `exec` job) is marked three ways when it starts:
//!
//! 1. **Its own process group** (`setpgid(0, 0)`), so the whole ordinary tree can be signalled
//!    at once while the program runs (timeout, `overlap: replace`, shutdown).
//! 2. **An environment marker**, `SOARJOBD_RUN_TOKEN=<random 128-bit token>` (plus
//!    `SOARJOBD_RUN_ID=<run id>` for scripts), inherited by every descendant that does not clear
//!    its environment. It identifies the run's processes beyond doubt: a pid or a pgid can be
//!    reused by an unrelated process, a random token cannot.
//! 3. **Its own cgroup v2** (Linux), when the daemon may create one: a directory
//!    `soarjobd-run-<run id>-<token>` under the daemon's own cgroup, which the child enters
//!    (in `pre_exec`, before `exec`, so it cannot fork first). A cgroup holds every descendant,
//!    including those that leave the group (`setsid`, double fork) and those that clear their
//!    environment, and `cgroup.kill` kills all of them atomically. The daemon looks for a
//!    writable cgroup2 mount (`/proc/self/mountinfo`; `/sys/fs/cgroup` on unified hosts,
//!    `/sys/fs/cgroup/unified` on hybrid ones) and its own cgroup in it (`/proc/self/cgroup`),
//!    and probes once whether it may create a child cgroup there (root, or a systemd unit with
//!    `Delegate=yes`). If not, it says so once in the log and relies on 1 and 2.
//!
//! Where the processes are is recorded with the run (`run_processes` table) *before* the
//! program starts, with the owner's pid and start time, the boot id and the host. At startup,
//! before rows left `running` are marked interrupted, the daemon kills what is left of runs
//! whose owner is dead ([`recover`]); a live owner (a `run-once` next to the daemon) keeps its
//! runs. When a run's program exits (or is killed on timeout), whatever it left behind is
//! killed at once: the run is over when its program is.
//!
//! Guards against killing an unrelated process: a process is the run's only if it is in the
//! run's cgroup (a directory named with the token), or carries the token in
//! `/proc/<pid>/environ`, or is the group leader with the recorded start time. At the end of a
//! run (its leader just reaped by this process, so its pgid cannot have been reused yet) the
//! remaining members of its group are killed too, unless a process with the pgid as pid exists
//! and started at another time. After a crash only the token and the leader's start time are
//! trusted. Rows of another boot are forgotten (a reboot killed everything), rows of another
//! host are left alone.
//!
//! Why not `PR_SET_CHILD_SUBREAPER`: orphans re-parented to the daemon would have to be reaped
//! by it, but tokio's process driver reaps only the children it spawned, and a `waitpid(-1)`
//! loop would steal their exit statuses (and those of any other library's children). The
//! environment token finds the same orphans without that risk; the cgroup finds all of them.
//!
//! Without a cgroup, a descendant that both leaves the process group and clears its
//! environment (`setsid env -i ...`) can escape; `PR_SET_PDEATHSIG` only covers the direct
//! child. That is the degraded mode the startup log line names.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::Utc;

use soarjobd_core::store::{RunProcess, RunProcessLog, RunStore};

mod host;
pub use host::{check_can_switch, check_exec_user, exec_policy, lookup_user, open_nonblocking};

/// The environment variable that carries a run's token.
pub const TOKEN_ENV: &str = "SOARJOBD_RUN_TOKEN";
/// The environment variable that carries the run id (for scripts; not trusted as a marker).
pub const RUN_ID_ENV: &str = "SOARJOBD_RUN_ID";
/// Set to `off` to never use cgroups (containment then relies on process groups and the
/// environment token).
pub const CGROUP_SWITCH_ENV: &str = "SOARJOBD_CGROUP";

/// How long to wait for killed processes to be gone before saying so and moving on.
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);
const CGROUP_PREFIX: &str = "soarjobd-run-";

// ---------------------------------------------------------------------------------------------
// /proc readers (pure parsers are unit-tested).

/// The fields of `/proc/<pid>/stat` containment needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub pgrp: i32,
    /// Field 22: start time in clock ticks after boot.
    pub start_ticks: u64,
}

impl ProcStat {
    fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state), so field n is rest[n - 3].
    Some(ProcStat {
        pid,
        state: rest.first()?.chars().next()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid`'s initial environment holds `TOKEN_ENV=token`; `None` if it cannot be read
/// (another user's process, a zombie, a process that is gone).
fn environ_has_token(pid: i32, token: &str) -> Option<bool> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let want = format!("{TOKEN_ENV}={token}");
    Some(env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
}

/// Every pid in `/proc`.
fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// True if a live process `pid` exists and started at `start_ticks` (not a reused pid).
pub(crate) fn process_alive(pid: i32, start_ticks: u64) -> bool {
    read_stat(pid).is_some_and(|s| !s.is_dead() && s.start_ticks == start_ticks)
}

/// This boot's id, read once (it cannot change while the process lives).
fn boot_id() -> String {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
    .clone()
}

/// The host's name, read once: every record a process writes names the same host, and two
/// file reads per record showed in the `exec` profile.
fn hostname() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
    .clone()
}

fn own_start_ticks() -> u64 {
    read_stat(std::process::id() as i32)
        .map(|s| s.start_ticks)
        .unwrap_or(0)
}

/// This process as a run owner: (pid, start ticks), read once.
fn owner() -> (i32, u64) {
    static OWNER: OnceLock<(i32, u64)> = OnceLock::new();
    *OWNER.get_or_init(|| (std::process::id() as i32, own_start_ticks()))
}

// ---------------------------------------------------------------------------------------------
// Which processes belong to a run.

/// What identifies a run's processes.
#[derive(Debug, Clone)]
pub(crate) struct Marks {
    pub token: String,
    pub pgid: Option<i32>,
    pub leader_start_ticks: Option<u64>,
    /// Trust bare group membership (no token needed). Only right while the group cannot have
    /// been reused: at the end of a run, by the process that just reaped its leader.
    pub trust_group: bool,
}

/// Decides, from one scan of the process table, which processes are the run's. `env` tells
/// whether a pid's environment carries the token (`None`: unreadable).
pub(crate) fn select_ours(
    marks: &Marks,
    procs: &[ProcStat],
    env: impl Fn(i32) -> Option<bool>,
) -> Vec<i32> {
    // The group can be trusted only if no *other* process now owns the pgid as its pid: a
    // leader with another start time means the pgid was reused.
    let group = match (marks.pgid, marks.leader_start_ticks) {
        (Some(pgid), Some(ticks)) => {
            let reused = procs
                .iter()
                .any(|p| p.pid == pgid && p.start_ticks != ticks);
            (!reused).then_some((pgid, ticks))
        }
        _ => None,
    };
    procs
        .iter()
        .filter(|p| !p.is_dead())
        .filter(|p| {
            if let Some((pgid, ticks)) = group {
                if p.pid == pgid {
                    return true; // the leader itself, start time checked above
                }
                if marks.trust_group && p.pgrp == pgid && p.start_ticks >= ticks {
                    return true;
                }
            }
            // A process that started before the leader cannot be the run's: skip reading its
            // environment (most of the process table, at the end of every run).
            let young = marks.leader_start_ticks.is_none_or(|t| p.start_ticks >= t);
            young && p.pid != std::process::id() as i32 && env(p.pid) == Some(true)
        })
        .map(|p| p.pid)
        .collect()
}

/// SIGKILLs the run's processes (as [`select_ours`] finds them) until none is left or
/// [`KILL_WAIT`] passed. Returns how many were killed and whether some survived. Blocking.
fn kill_marked(marks: &Marks) -> (usize, bool) {
    let deadline = Instant::now() + KILL_WAIT;
    let mut killed = std::collections::HashSet::new();
    loop {
        let procs: Vec<ProcStat> = all_pids().into_iter().filter_map(read_stat).collect();
        let ours = select_ours(marks, &procs, |pid| environ_has_token(pid, &marks.token));
        if ours.is_empty() {
            return (killed.len(), false);
        }
        if Instant::now() > deadline {
            return (killed.len(), true);
        }
        for pid in ours {
            // SAFETY: kill(2) has no memory effects; `pid` was just identified as the run's.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed.insert(pid);
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// cgroup v2.

/// Finds the cgroup2 mounts in `/proc/self/mountinfo`: (mount point, root of the mount inside
/// the hierarchy).
pub(crate) fn cgroup2_mounts(mountinfo: &str) -> Vec<(PathBuf, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, fs) = line.split_once(" - ")?;
            if fs.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let f: Vec<&str> = fields.split_whitespace().collect();
            Some((
                PathBuf::from(unescape_mount(f.get(4)?)),
                unescape_mount(f.get(3)?),
            ))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path of this process from `/proc/self/cgroup` (the `0::` line).
pub(crate) fn own_cgroup(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_end_matches(" (deleted)").to_string())
}

/// The directory of `own` (a path in the hierarchy) under a mount of `root` at `mount`.
pub(crate) fn cgroup_dir(mount: &Path, root: &str, own: &str) -> Option<PathBuf> {
    let root = root.trim_end_matches('/');
    let rel = own.strip_prefix(root)?;
    if !(rel.is_empty() || rel.starts_with('/')) {
        return None;
    }
    Some(mount.join(rel.trim_start_matches('/')))
}

/// The name of a run's cgroup: checked at recovery, so only a directory this daemon created
/// for exactly that run is ever killed.
fn cgroup_name(run_id: i64, token: &str) -> String {
    format!("{CGROUP_PREFIX}{run_id}-{token}")
}

/// Where runs' cgroups are created, or why there are none. Detected once per process.
fn cgroup_parent() -> Option<&'static Path> {
    static PARENT: OnceLock<Option<PathBuf>> = OnceLock::new();
    PARENT
        .get_or_init(|| match detect_cgroup_parent() {
            Ok(dir) => {
                tracing::info!(
                    cgroup = %dir.display(),
                    "process containment: each exec run gets its own cgroup v2"
                );
                Some(dir)
            }
            Err(why) => {
                tracing::warn!(
                    reason = %why,
                    "process containment: no cgroup v2 for exec runs; their processes are tracked \
                     by process group and the SOARJOBD_RUN_TOKEN environment marker, so a \
                     descendant that leaves its group and clears its environment can outlive \
                     its run (run as root, or under systemd with Delegate=yes, to fix this)"
                );
                None
            }
        })
        .as_deref()
}

fn detect_cgroup_parent() -> Result<PathBuf, String> {
    if std::env::var(CGROUP_SWITCH_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
        return Err(format!("disabled by {CGROUP_SWITCH_ENV}=off"));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mounts = cgroup2_mounts(&mountinfo);
    if mounts.is_empty() {
        return Err("no cgroup2 filesystem is mounted".into());
    }
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .as_deref()
        .and_then(own_cgroup)
        .ok_or("this process is in no cgroup v2")?;
    let dir = mounts
        .iter()
        .filter_map(|(mount, root)| cgroup_dir(mount, root, &own))
        .find(|d| d.join("cgroup.procs").exists())
        .ok_or_else(|| format!("the cgroup {own} is not visible under a cgroup2 mount"))?;
    // Probe: may we create a child cgroup here?
    let probe = dir.join(format!(
        "soarjobd-probe-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir(&probe)
        .map_err(|e| format!("cannot create a cgroup in {}: {e}", dir.display()))?;
    let usable = probe.join("cgroup.procs").exists();
    let _ = std::fs::remove_dir(&probe);
    if !usable {
        return Err(format!("{} is not a cgroup v2 directory", dir.display()));
    }
    Ok(dir)
}

/// Set when a program could not enter its run's cgroup (creating one is allowed, moving a
/// process into it is not): later runs do not try again, so the warning is logged once.
static CGROUP_ENTRY_FAILED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// One run's cgroup directory.
#[derive(Debug)]
struct RunCgroup {
    dir: PathBuf,
}

impl RunCgroup {
    fn create(parent: &Path, run_id: i64, token: &str) -> io::Result<RunCgroup> {
        let dir = parent.join(cgroup_name(run_id, token));
        std::fs::create_dir(&dir)?;
        Ok(RunCgroup { dir })
    }

    /// The pids in the cgroup (empty if it is gone).
    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn populated(&self) -> bool {
        match std::fs::read_to_string(self.dir.join("cgroup.events")) {
            Ok(ev) => ev.lines().any(|l| l.trim() == "populated 1"),
            Err(_) => !self.pids().is_empty(),
        }
    }

    fn signal(&self, sig: i32) {
        for pid in self.pids() {
            // SAFETY: kill(2) has no memory effects; the pid is in the run's own cgroup.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Kills every process in the cgroup (`cgroup.kill`, Linux 5.14+; else by pid, frozen
    /// so that nothing forks in between) and waits until it is empty. Returns false if
    /// processes remain after [`KILL_WAIT`]. Blocking.
    fn kill_all(&self) -> bool {
        let deadline = Instant::now() + KILL_WAIT;
        let has_kill = std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok();
        loop {
            if !self.populated() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            if !has_kill {
                let _ = std::fs::write(self.dir.join("cgroup.freeze"), "1");
                self.signal(libc::SIGKILL);
                let _ = std::fs::write(self.dir.join("cgroup.freeze"), "0");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Removes the (empty) directory; an exiting process can keep it busy for a moment.
    fn remove(&self) {
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(POLL),
            }
        }
        tracing::debug!(cgroup = %self.dir.display(), "cannot remove the run's cgroup yet");
    }
}

// ---------------------------------------------------------------------------------------------
// One run's containment.

/// The containment of one run's program: created before it starts, applied to its
/// [`tokio::process::Command`], and [`RunContainment::finish`]ed after it exits. If dropped
/// unfinished (the run's future was abandoned), it kills the run's processes and forgets the
/// record in a background task.
pub struct RunContainment {
    run_id: i64,
    token: String,
    cgroup: Option<RunCgroup>,
    pgid: Option<i32>,
    leader_start_ticks: Option<u64>,
    /// Set once the leader was reaped: signalling the pgid blindly is then no longer safe.
    reaped: bool,
    finished: bool,
    store: RunProcessLog,
}

impl RunContainment {
    /// Prepares containment for run `run_id`: a token and, where possible, a cgroup.
    pub fn prepare(store: RunProcessLog) -> RunContainment {
        let run_id = store.run_id();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let usable = !CGROUP_ENTRY_FAILED.load(std::sync::atomic::Ordering::Relaxed);
        let cgroup = cgroup_parent().filter(|_| usable).and_then(|parent| {
            RunCgroup::create(parent, run_id, &token)
                .map_err(|e| {
                    tracing::warn!(
                        error = %e, cgroup = %parent.display(),
                        "cannot create the run's cgroup; containing it by process group and token"
                    )
                })
                .ok()
        });
        RunContainment {
            run_id,
            token,
            cgroup,
            pgid: None,
            leader_start_ticks: None,
            reaped: false,
            finished: false,
            store,
        }
    }

    /// The row that records where the run's processes are.
    pub fn record(&self) -> RunProcess {
        let (owner_pid, owner_start_ticks) = owner();
        RunProcess {
            run_id: self.run_id,
            host: hostname(),
            boot_id: boot_id(),
            owner_pid,
            owner_start_ticks,
            pgid: self.pgid,
            leader_start_ticks: self.leader_start_ticks,
            token: self.token.clone(),
            cgroup: self
                .cgroup
                .as_ref()
                .map(|c| c.dir.to_string_lossy().into_owned()),
            recorded_at: Utc::now(),
        }
    }

    /// Sets up `cmd`: own process group, the markers, death signal, entering the cgroup, and
    /// (`run_as`, a daemon running as root) the user the program runs as.
    pub fn configure(
        &self,
        cmd: &mut tokio::process::Command,
        run_as: Option<&soarjobd_core::RunAs>,
    ) {
        cmd.process_group(0)
            .env(TOKEN_ENV, &self.token)
            .env(RUN_ID_ENV, self.run_id.to_string());
        let procs = self
            .cgroup
            .as_ref()
            .and_then(|c| CString::new(c.dir.join("cgroup.procs").as_os_str().as_bytes()).ok());
        let parent = std::process::id() as libc::pid_t;
        let ids = run_as
            .filter(|u| host::is_switch(u))
            .map(|u| (u.uid, u.gid));
        // SAFETY: the closure runs in the forked child before exec and only makes raw
        // syscalls (open, write, close, setgroups, setgid, setuid, prctl, getppid), which are
        // async-signal-safe; the path was allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Enter the run's cgroup before exec, so not even the program's first fork
                // escapes it. First of all: writing `cgroup.procs` needs the daemon's rights.
                // A failure is detected by the parent (`started`).
                if let Some(path) = &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                    }
                }
                // Another user: groups, then group, then user (after setuid nothing else can
                // be changed). A failure fails the start: never run as the daemon's user by
                // mistake.
                if let Some((uid, gid)) = ids
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return Err(io::Error::last_os_error());
                }
                // If the daemon dies outright (SIGKILL, OOM), the kernel kills the program.
                // After the user change, which clears the death signal.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // ...unless it died before the line above: then nobody would kill us.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }

    /// Notes the started program (its pid is its group's id). If it did not land in the
    /// cgroup, the cgroup is dropped for this run and the token and group remain.
    pub fn started(&mut self, pid: u32) {
        let pid = pid as i32;
        self.pgid = Some(pid);
        self.leader_start_ticks = read_stat(pid).map(|s| s.start_ticks);
        live_runs().insert(self.run_id, self.record());
        if let Some(cg) = &self.cgroup
            && !cg.pids().contains(&pid)
        {
            // The program may already have exited; only a live one outside the cgroup counts.
            if read_stat(pid).is_some_and(|s| !s.is_dead()) {
                tracing::warn!(
                    cgroup = %cg.dir.display(),
                    "the program could not enter the run's cgroup; this and later runs are \
                     contained by process group and token only"
                );
                CGROUP_ENTRY_FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
                cg.remove();
                self.cgroup = None;
            }
        }
    }

    /// Sends `sig` to the run's process group and cgroup. Only while the leader has not been
    /// reaped (its pgid cannot have been reused).
    pub fn signal(&self, sig: i32) {
        if let (Some(pgid), false) = (self.pgid, self.reaped) {
            // SAFETY: kill(2) with a negative pid signals a process group; the group is the
            // child's own (setpgid(0, 0)), never ours, and its unreaped leader holds the id.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
        if let Some(cg) = &self.cgroup {
            cg.signal(sig);
        }
    }

    /// Call right after the leader was reaped (`wait` returned).
    pub fn leader_reaped(&mut self) {
        self.reaped = true;
    }

    /// Kills everything the run left behind, waits until it is gone, removes the cgroup and
    /// forgets the record. Returns the number of processes killed by the group/token scan
    /// (processes in a cgroup are not counted one by one).
    pub async fn finish(mut self) -> usize {
        self.finished = true;
        live_runs().remove(&self.run_id);
        let job = self.cleanup_job();
        let killed = tokio::task::spawn_blocking(job).await.unwrap_or(0);
        if let Err(e) = self.store.forget().await {
            tracing::warn!(
                error = %soarjobd_core::error_chain(&e),
                "cannot forget the run's process record (the next start will)"
            );
        }
        killed
    }

    /// The blocking part of the cleanup, movable to another thread. Bare group membership is
    /// trusted here: the leader is this process's child, not yet reaped or reaped just now, so
    /// its pgid has not been handed to another process.
    fn cleanup_job(&mut self) -> impl FnOnce() -> usize + Send + 'static {
        let cgroup = self.cgroup.take();
        let marks = Marks {
            token: self.token.clone(),
            pgid: self.pgid,
            leader_start_ticks: self.leader_start_ticks,
            trust_group: true,
        };
        let span = tracing::Span::current();
        move || {
            let _span = span.enter();
            // With a cgroup, every descendant is in it (leaving it takes write access to an
            // ancestor cgroup): no need to scan the process table.
            let (left, killed) = match &cgroup {
                Some(cg) => {
                    let left = !cg.kill_all();
                    cg.remove();
                    (left, 0)
                }
                None => {
                    let (killed, survivors) = kill_marked(&marks);
                    (survivors, killed)
                }
            };
            if left {
                tracing::error!("some processes of the run could not be killed");
            } else if killed > 0 {
                tracing::debug!(killed, "killed processes the program left behind");
            }
            killed
        }
    }
}

impl Drop for RunContainment {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        live_runs().remove(&self.run_id);
        // The run's future was dropped (abandoned or aborted) before `finish`: kill at once
        // what can be killed without blocking, then the rest in the background.
        self.signal(libc::SIGKILL);
        if let Some(cg) = &self.cgroup {
            let _ = std::fs::write(cg.dir.join("cgroup.kill"), "1");
        }
        let job = self.cleanup_job();
        let store = self.store.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = tokio::task::spawn_blocking(job).await;
                    let _ = store.forget().await;
                });
            }
            // No runtime (process exit): the record stays and the next start cleans up.
            Err(_) => {
                job();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The runs of this process, for a forced exit.

/// The process records of this process's runs whose program started and has not finished.
/// A plain mutex: held for an insert or a removal, never across an await.
fn live_runs() -> std::sync::MutexGuard<'static, std::collections::BTreeMap<i64, RunProcess>> {
    static LIVE: OnceLock<std::sync::Mutex<std::collections::BTreeMap<i64, RunProcess>>> =
        OnceLock::new();
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Kills every process of every run of this process now (SIGKILL to its cgroup, its group,
/// and every process carrying its token: a `setsid` grandchild included), waiting until they
/// are gone (at most a few seconds per run). For an exit that cannot wait for the runs to end
/// (a second SIGTERM): the daemon must not leave its runs' processes behind. Blocking.
/// Returns the runs whose processes were killed and whether some process survived.
pub fn kill_all_live() -> (Vec<i64>, bool) {
    let rows: Vec<RunProcess> = live_runs().values().cloned().collect();
    let mut survivors = false;
    for row in &rows {
        // The group first, at once (its leader is our unreaped child or was reaped just now,
        // and this process exits next): then the careful sweep by cgroup and token.
        if let Some(pgid) = row.pgid {
            // SAFETY: kill(2) with a negative pid signals the run's own process group.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let (_, left) = kill_leftovers(row);
        survivors |= left;
    }
    (rows.iter().map(|r| r.run_id).collect(), survivors)
}

// ---------------------------------------------------------------------------------------------
// Startup recovery.

/// What to do with a recorded run process at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Another host's row: not ours to judge.
    OtherHost,
    /// The machine rebooted since: every process of that boot is gone.
    OtherBoot,
    /// The owner (a daemon or `run-once`) still runs: the run is its business.
    OwnerAlive,
    /// The owner is dead: kill what is left.
    Orphaned,
}

pub(crate) fn verdict(
    row: &RunProcess,
    host: &str,
    boot: &str,
    owner_alive: impl Fn(i32, u64) -> bool,
) -> Verdict {
    if row.host != host {
        Verdict::OtherHost
    } else if row.boot_id != boot || boot.is_empty() {
        Verdict::OtherBoot
    } else if owner_alive(row.owner_pid, row.owner_start_ticks) {
        Verdict::OwnerAlive
    } else {
        Verdict::Orphaned
    }
}

/// Checks a recorded cgroup path before anything in it is killed: it must be a cgroup
/// directory named for exactly this run and token.
pub(crate) fn trusted_cgroup(row: &RunProcess) -> Option<PathBuf> {
    let dir = PathBuf::from(row.cgroup.as_deref()?);
    let name_ok = dir.is_absolute()
        && dir.file_name().and_then(|n| n.to_str()) == Some(&cgroup_name(row.run_id, &row.token))
        && !dir
            .components()
            .any(|c| c == std::path::Component::ParentDir);
    (name_ok && dir.join("cgroup.procs").exists()).then_some(dir)
}

/// At startup, before rows left `running` are marked interrupted: kills what is left of runs
/// whose owner died, and forgets their records. Never fails: problems are logged (a store that
/// cannot be read here fails the very next step of the start anyway).
pub async fn recover(store: &dyn RunStore) {
    // Detect (and log) the containment mode once, at start.
    let _ = cgroup_parent();
    let rows = match store.run_processes().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(
                error = %soarjobd_core::error_chain(&e),
                "cannot read the processes of earlier runs; they are not cleaned up"
            );
            return;
        }
    };
    if rows.is_empty() {
        return;
    }
    let (host, boot) = (hostname(), boot_id());
    for row in rows {
        let run_id = row.run_id;
        match verdict(&row, &host, &boot, process_alive) {
            Verdict::OtherHost | Verdict::OwnerAlive => continue,
            Verdict::OtherBoot => {}
            Verdict::Orphaned => {
                let (killed, survivors) = tokio::task::spawn_blocking(move || kill_leftovers(&row))
                    .await
                    .unwrap_or((0, true));
                if survivors {
                    // Keep the record: the next start tries again.
                    tracing::error!(
                        run_id,
                        killed,
                        "some processes left running by the previous shutdown or crash could \
                         not be killed"
                    );
                    continue;
                }
                if killed > 0 {
                    tracing::warn!(
                        run_id,
                        killed,
                        "killed processes left running by the previous shutdown or crash"
                    );
                }
            }
        }
        if let Err(e) = store.forget_run_process(run_id).await {
            tracing::warn!(
                error = %soarjobd_core::error_chain(&e),
                run_id,
                "cannot forget a run's process record"
            );
        }
    }
}

/// Kills what is left of an orphaned run: its cgroup (if the recorded one checks out), then
/// every process carrying its token or being its group leader with the recorded start time.
/// Group membership alone is not trusted: the pgid may have been reused since the crash.
/// Returns (processes killed, whether some survived). Blocking.
fn kill_leftovers(row: &RunProcess) -> (usize, bool) {
    let mut killed = 0;
    let mut survivors = false;
    if let Some(dir) = trusted_cgroup(row) {
        let cg = RunCgroup { dir };
        killed += cg.pids().len();
        survivors |= !cg.kill_all();
        cg.remove();
    }
    let marks = Marks {
        token: row.token.clone(),
        pgid: row.pgid,
        leader_start_ticks: row.leader_start_ticks,
        trust_group: false,
    };
    let (n, left) = kill_marked(&marks);
    (killed + n, survivors || left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: i32, pgrp: i32, start: u64) -> ProcStat {
        ProcStat {
            pid,
            state: 'S',
            pgrp,
            start_ticks: start,
        }
    }

    #[test]
    fn stat_lines_are_parsed_from_the_last_parenthesis() {
        let line = "4242 (we ird) (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.pid, s.state, s.pgrp, s.start_ticks),
            (4242, 'S', 4242, 987654)
        );
        assert!(parse_stat("garbage").is_none());
        // This very process.
        let me = read_stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(process_alive(me.pid, me.start_ticks));
        assert!(
            !process_alive(me.pid, me.start_ticks + 1),
            "same pid, other start: reused"
        );
    }

    #[test]
    fn a_reused_pgid_is_never_trusted() {
        let env = |pid: i32| Some(pid == 30); // only pid 30 carries the token
        let marks = Marks {
            token: "t".into(),
            pgid: Some(10),
            leader_start_ticks: Some(500),
            trust_group: true,
        };
        // Our leader (same start) and a member started after it; an unrelated process.
        let procs = [stat(10, 10, 500), stat(11, 10, 600), stat(12, 99, 700)];
        assert_eq!(select_ours(&marks, &procs, env), [10, 11]);
        // pid 10 now belongs to a process that started at another time: the group was
        // reused, so only the token counts.
        let procs = [stat(10, 10, 900), stat(11, 10, 950), stat(30, 77, 960)];
        assert_eq!(select_ours(&marks, &procs, env), [30]);
        // After a crash the group alone is not trusted, even with no leader left.
        let after_crash = Marks {
            trust_group: false,
            ..marks.clone()
        };
        let procs = [stat(11, 10, 600), stat(30, 10, 700)];
        assert_eq!(select_ours(&after_crash, &procs, env), [30]);
        // A member older than the leader is not the leader's descendant.
        let procs = [stat(11, 10, 400)];
        assert!(select_ours(&marks, &procs, env).is_empty());
        // Zombies are left to their reaper; unreadable environments do not match.
        let mut z = stat(30, 77, 960);
        z.state = 'Z';
        assert!(select_ours(&after_crash, &[z], env).is_empty());
        assert!(select_ours(&after_crash, &[stat(31, 1, 1)], |_| None).is_empty());
        // A process older than the run's leader is not read at all (and not the run's).
        let older = stat(32, 77, 499);
        assert!(select_ours(&after_crash, &[older], |_| panic!("environment read")).is_empty());
    }

    fn row() -> RunProcess {
        RunProcess {
            run_id: 7,
            host: "h".into(),
            boot_id: "b".into(),
            owner_pid: 100,
            owner_start_ticks: 5,
            pgid: Some(200),
            leader_start_ticks: Some(6),
            token: "0123abcd".into(),
            cgroup: None,
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn verdicts_follow_host_boot_and_owner() {
        let r = row();
        assert_eq!(verdict(&r, "other", "b", |_, _| false), Verdict::OtherHost);
        assert_eq!(verdict(&r, "h", "b2", |_, _| false), Verdict::OtherBoot);
        assert_eq!(
            verdict(&r, "h", "b", |p, t| (p, t) == (100, 5)),
            Verdict::OwnerAlive
        );
        // Same pid, other start time: the owner died and its pid was reused.
        assert_eq!(
            verdict(&r, "h", "b", |p, t| (p, t) == (100, 9)),
            Verdict::Orphaned
        );
    }

    #[test]
    fn only_the_runs_own_cgroup_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = row();
        let good = dir.path().join(cgroup_name(7, "0123abcd"));
        std::fs::create_dir(&good).unwrap();
        std::fs::write(good.join("cgroup.procs"), "").unwrap();
        r.cgroup = Some(good.to_string_lossy().into_owned());
        assert_eq!(trusted_cgroup(&r), Some(good.clone()));
        for bad in [
            dir.path().to_path_buf(),                         // the parent
            dir.path().join(cgroup_name(8, "0123abcd")),      // another run
            dir.path().join(cgroup_name(7, "ffff")),          // another token
            PathBuf::from(cgroup_name(7, "0123abcd")),        // relative
            good.join("..").join(cgroup_name(7, "0123abcd")), // a `..` escape
        ] {
            r.cgroup = Some(bad.to_string_lossy().into_owned());
            assert_eq!(trusted_cgroup(&r), None, "{}", bad.display());
        }
        // A directory with the right name that is not a cgroup.
        let plain = tempfile::tempdir().unwrap();
        let fake = plain.path().join(cgroup_name(7, "0123abcd"));
        std::fs::create_dir(&fake).unwrap();
        r.cgroup = Some(fake.to_string_lossy().into_owned());
        assert_eq!(trusted_cgroup(&r), None);
    }

    #[test]
    fn cgroup2_mount_and_membership_are_found() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:38 /docker/abc /mnt/my\\040cg rw - cgroup2 cgroup2 rw";
        let mounts = cgroup2_mounts(mountinfo);
        assert_eq!(
            mounts,
            [
                (PathBuf::from("/sys/fs/cgroup/unified"), "/".to_string()),
                (PathBuf::from("/mnt/my cg"), "/docker/abc".to_string()),
            ]
        );
        assert_eq!(
            own_cgroup("1:cpu:/\n0::/system.slice/soarjobd.service\n").as_deref(),
            Some("/system.slice/soarjobd.service")
        );
        assert_eq!(own_cgroup("1:cpu:/\n"), None);
        let (m, r) = &mounts[0];
        assert_eq!(
            cgroup_dir(m, r, "/system.slice/x.service"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/x.service"
            ))
        );
        assert_eq!(
            cgroup_dir(m, r, "/"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/"))
        );
        let (m, r) = &mounts[1];
        assert_eq!(
            cgroup_dir(m, r, "/docker/abc/sub"),
            Some(PathBuf::from("/mnt/my cg/sub"))
        );
        assert_eq!(cgroup_dir(m, r, "/docker/abcdef"), None);
        assert_eq!(cgroup_dir(m, r, "/other"), None);
    }

    /// A real process in its own group, recorded under a run whose owner is dead but with
    /// another token: recovery must leave it alone (its pgid matches, nothing else does).
    #[test]
    fn recovery_kills_only_processes_that_carry_the_token() {
        use std::os::unix::process::CommandExt;
        let spawn = |token: &str| {
            std::process::Command::new("/bin/sleep")
                .arg("300")
                .env(TOKEN_ENV, token)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let mut stranger = spawn("someone-else");
        let mut ours = spawn("the-token");
        let wait_stat = |pid: u32| {
            // The token is in the environment only after exec; wait for the exec'd image.
            for _ in 0..200 {
                if environ_has_token(pid as i32, "x").is_some()
                    && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == "sleep")
                {
                    return read_stat(pid as i32).unwrap();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("no exec");
        };
        let s = wait_stat(stranger.id());
        wait_stat(ours.id());
        let mut r = row();
        r.token = "the-token".into();
        // The stranger's group is recorded as the run's, with a leader start time one tick
        // off (as if the pgid had been reused since), and the token is not the stranger's.
        r.pgid = Some(s.pid);
        r.leader_start_ticks = Some(s.start_ticks - 1);
        let (killed, survivors) = kill_leftovers(&r);
        assert_eq!((killed, survivors), (1, false));
        // Ours is dead (reap it: it is this test's child).
        let status = ours.wait().unwrap();
        assert!(!status.success(), "{status:?}");
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "an unrelated process was killed"
        );
        let _ = stranger.kill();
        let _ = stranger.wait();
    }
}
