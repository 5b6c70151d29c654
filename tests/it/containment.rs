//! Process containment with the real binary: no process of an `exec` run outlives the run,
//! not after a timeout with a `setsid` child, not after `kill -9` of the daemon. Each test runs
//! twice: with the cgroup the daemon creates where it can, and with cgroups switched off
//! (`SOARJOBD_CGROUP=off`: process group + environment token only).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use soarjobd_core::store::RunStatus;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_soarjobd");

fn soarjobd(dir: &Path, cgroup: bool, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("SOARJOBD__JOBS_DIR", dir.join("jobs"))
        .env("SOARJOBD__SHUTDOWN_GRACE", "1s")
        .env(
            "SOARJOBD__DATABASE_URL",
            format!("sqlite:{}", dir.join("state.db").display()),
        );
    if !cgroup {
        c.env("SOARJOBD_CGROUP", "off");
    }
    c
}

/// True if `pid` is a live process (a zombie waiting for its reaper counts as dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

/// Kills the daemon if a failed assertion left it running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills the processes whose pids are in these files, if a failed assertion left them behind.
struct Reaper(Vec<PathBuf>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for f in &self.0 {
            for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
                if let Ok(pid) = line.trim().parse::<i32>()
                    && alive(pid)
                {
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

async fn sigkilled_daemon_leaves_no_process_behind(cgroup: bool) {
    let app = TestApp::new();
    let dir = app.dir.path();
    let (gk, sk, all, overlap) = (
        app.path("grandchild.pid"),
        app.path("session.pid"),
        app.path("all.pids"),
        app.path("overlap"),
    );
    let _reaper = Reaper(vec![all.clone()]);
    // Each run first checks that no process of an earlier run is alive (else it records the
    // overlap), then leaves a grandchild in its process group and one in a session of its
    // own, and waits.
    let script = format!(
        r#"for f in {gk} {sk}; do p=$(cat $f 2>/dev/null); if [ -n "$p" ] && [ -e /proc/$p ] && ! grep -q ') [ZX] ' /proc/$p/stat; then echo "$p" >> {overlap}; fi; done
rm -f {gk} {sk}
sleep 1000 & echo $! >> {all}; echo $! > {gk}.tmp; mv {gk}.tmp {gk}
setsid sh -c 'echo $$ >> {all}; echo $$ > {sk}.tmp; mv {sk}.tmp {sk}; exec sleep 1000' &
wait"#,
        gk = gk.display(),
        sk = sk.display(),
        all = all.display(),
        overlap = overlap.display(),
    );
    app.write_job(
        "hold",
        &format!(
            "name: Hold\njob: exec\nschedule: {{every: 1s}}\ntimeout: 1h\ncommand: [/bin/sh, -c, {script:?}]\n"
        ),
    );
    let mut first = Daemon(
        soarjobd(dir, cgroup, &["run", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            read_pid(&gk).is_some() && read_pid(&sk).is_some()
        })
        .await,
        "the first run did not start its children"
    );
    let (old_gk, old_sk) = (read_pid(&gk).unwrap(), read_pid(&sk).unwrap());
    // The run recorded where its processes are.
    let store = app.store().await;
    let recorded = store.run_processes().await.unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let cgroup_dir = recorded[0].cgroup.clone();
    assert_eq!(
        cgroup_dir.is_some(),
        cgroup && cgroup_available(),
        "{recorded:?}"
    );
    store.close().await;

    unsafe {
        libc::kill(first.0.id() as i32, libc::SIGKILL);
    }
    let _ = first.0.wait();
    // The direct child died with the daemon (PDEATHSIG); the grandchildren did not.
    assert!(
        alive(old_gk) && alive(old_sk),
        "nothing to clean up: the test proves nothing"
    );

    let log = app.path("second.log");
    let mut second = Daemon(
        soarjobd(dir, cgroup, &["run", "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    // A new run starts (its grandchild has a new pid)...
    assert!(
        eventually(Duration::from_secs(20), || async {
            read_pid(&gk).is_some_and(|p| p != old_gk) && read_pid(&sk).is_some()
        })
        .await,
        "the restarted daemon did not run the job"
    );
    // ...and at its start nothing of the old run was alive.
    assert!(
        !overlap.exists(),
        "a new run met processes of the killed daemon's run: {}",
        std::fs::read_to_string(&overlap).unwrap_or_default()
    );
    assert!(!alive(old_gk) && !alive(old_sk));
    if let Some(dir) = &cgroup_dir {
        assert!(
            !Path::new(dir).exists(),
            "the old run's cgroup {dir} is left"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("killed processes left running by the previous shutdown or crash"),
        "{text}"
    );
    assert!(
        text.contains("each exec run gets its own cgroup v2")
            || text.contains("no cgroup v2 for exec runs"),
        "the containment mode is not logged: {text}"
    );

    // A graceful stop (grace 1s, then the run is cancelled) leaves nothing either.
    let (new_gk, new_sk) = (read_pid(&gk).unwrap(), read_pid(&sk).unwrap());
    unsafe {
        libc::kill(second.0.id() as i32, libc::SIGTERM);
    }
    assert_eq!(wait_exit(&mut second.0, Duration::from_secs(30)), Some(0));
    assert!(
        !alive(new_gk) && !alive(new_sk),
        "the cancelled run left processes"
    );
    let store = app.store().await;
    assert!(store.run_processes().await.unwrap().is_empty());
    let runs = runs(&store, "hold").await;
    assert!(count(&runs, RunStatus::Interrupted) >= 1, "{runs:?}");
    assert_eq!(count(&runs, RunStatus::Running), 0, "{runs:?}");
}

/// Whether this machine lets the daemon create cgroups (the daemon logs which it found).
fn cgroup_available() -> bool {
    // The daemon detects cgroup support itself; mirror its probe in the simplest way: a
    // cgroup2 mount under which this process's own cgroup directory accepts mkdir.
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Some(own) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
    else {
        return false;
    };
    mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
        .any(|mount| {
            let probe = mount
                .join(own.trim_start_matches('/'))
                .join(format!("soarjobd-test-probe-{}", std::process::id()));
            let ok = std::fs::create_dir(&probe).is_ok();
            let _ = std::fs::remove_dir(&probe);
            ok
        })
}

#[tokio::test]
async fn a_sigkilled_daemon_leaves_no_process_behind_with_cgroups() {
    sigkilled_daemon_leaves_no_process_behind(true).await;
}

#[tokio::test]
async fn a_sigkilled_daemon_leaves_no_process_behind_without_cgroups() {
    sigkilled_daemon_leaves_no_process_behind(false).await;
}

fn timeout_kills_a_setsid_child(cgroup: bool) {
    let app = TestApp::new();
    let pid_file = app.path("session.pid");
    let _reaper = Reaper(vec![pid_file.clone()]);
    let script = format!(
        "setsid sh -c 'echo $$ > {pid}.tmp; mv {pid}.tmp {pid}; exec sleep 1000' & wait",
        pid = pid_file.display()
    );
    app.write_job(
        "hang",
        &format!("name: Hang\njob: exec\ntimeout: 1s\ncommand: [/bin/sh, -c, {script:?}]\n"),
    );
    let out = soarjobd(app.dir.path(), cgroup, &["run-once", "hang"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("timed_out"), "{stdout}");
    let pid = read_pid(&pid_file).expect("the child wrote its pid");
    // Checked right when run-once returned: the run is over, so must its processes be.
    assert!(!alive(pid), "the setsid child {pid} survived the run");
}

#[test]
fn a_timeout_kills_a_setsid_child_with_cgroups() {
    timeout_kills_a_setsid_child(true);
}

#[test]
fn a_timeout_kills_a_setsid_child_without_cgroups() {
    timeout_kills_a_setsid_child(false);
}

/// The program exits but leaves a background process holding its stdout: the run ends with
/// the program (it does not wait for the pipe), and the background process is killed.
#[test]
fn what_a_finished_program_leaves_running_is_killed() {
    let app = TestApp::new();
    let pid_file = app.path("bg.pid");
    let _reaper = Reaper(vec![pid_file.clone()]);
    let script = format!(
        "setsid sh -c 'echo $$ > {pid}.tmp; mv {pid}.tmp {pid}; exec sleep 1000' & \
         while [ ! -f {pid} ]; do sleep 0.05; done; echo done",
        pid = pid_file.display()
    );
    app.write_job(
        "bg",
        // Before the fix the run waited for the pipe until its timeout.
        &format!("name: Bg\njob: exec\ntimeout: 20s\ncommand: [/bin/sh, -c, {script:?}]\n"),
    );
    for cgroup in [true, false] {
        let _ = std::fs::remove_file(&pid_file);
        let out = soarjobd(app.dir.path(), cgroup, &["run-once", "bg"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        let pid = read_pid(&pid_file).expect("the background process wrote its pid");
        assert!(
            !alive(pid),
            "cgroup={cgroup}: the background process {pid} survived"
        );
    }
}
