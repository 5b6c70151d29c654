//! Hardening with the real binary: a job process cannot get at the daemon's credentials, and
//! a second SIGTERM leaves no process of a run behind.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use soarjobd_core::store::RunStatus;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_soarjobd");

/// Kills the daemon if a failed assertion left it running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn soarjobd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("SOARJOBD__JOBS_DIR", dir.join("jobs"))
        .env("SOARJOBD__ADMIN__LISTEN", "off")
        .env(
            "SOARJOBD__DATABASE_URL",
            format!("sqlite:{}", dir.join("state.db").display()),
        );
    c
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a signal to a child this test spawned and has not reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// True if `pid` is a live process (a zombie counts as dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Who runs what in a credentials case.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Users {
    /// The daemon and its job run as one non-root user (`nobody` when this test is root).
    Same,
    /// The daemon runs as root, its job as `exec.user` (`nobody`).
    ExecUser,
}

/// Bug 2 of issue 16: an `exec` job read `/proc/<daemon pid>/environ` (as the daemon's own
/// user, root or `nobody`) and printed `SOARJOBD__SOAR__APP_KEY` reversed, past redaction,
/// into the run log. Now the daemon is non-dumpable and takes its `SOARJOBD__*` variables out
/// of its environment (and overwrites them where `/proc/<pid>/environ` reads them). A job of
/// the daemon's own non-root user cannot read the daemon's environment; nothing of the key,
/// reversed or not, reaches the run's stored log or the daemon's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_the_daemons_own_user_cannot_read_its_credentials() {
    credentials_case(Users::Same).await;
}

/// The same with the daemon as root and its jobs as `exec.user`: the job cannot read the
/// daemon's environment, nor any file holding the key. Needs root (to switch users).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_under_exec_user_cannot_read_the_daemons_credentials() {
    if !is_root() {
        println!("skipped: the test is not root, so the daemon cannot switch users");
        return;
    }
    credentials_case(Users::ExecUser).await;
}

/// `exec.user` when the daemon is not root: it refuses to start, saying why (exit 2),
/// instead of running jobs as its own user. Needs root (to start the daemon as `nobody`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_user_needs_a_root_daemon() {
    if !is_root() {
        println!("skipped: the test is not root, so it cannot start the daemon as another user");
        return;
    }
    let app = TestApp::new();
    let dir = app.dir.path();
    for d in [dir, &dir.join("jobs")] {
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let out = soarjobd(dir, &["run"])
        .env("SOARJOBD__EXEC__USER", "root")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs the daemon to run as root"), "{err}");

    // A job's own `run_as`: `check` wants a user of this host (located), and a run of a
    // daemon that is not root fails saying why, without starting the program as itself.
    app.write_job(
        "typo",
        "name: Typo\njob: exec\nschedule: {every: 1h}\ncommand: [/bin/true]\nrun_as: no-such-user-x\n",
    );
    let out = soarjobd(dir, &["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("typo.yaml:5:") && text.contains("no user `no-such-user-x`"),
        "{text}"
    );
    std::fs::remove_file(dir.join("jobs").join("typo.yaml")).unwrap();
    let marker = app.path("ran");
    app.write_job(
        "as-root",
        &format!(
            "name: As root\njob: exec\nschedule: {{every: 1s}}\ncommand: [/bin/touch, {}]\nrun_as: root\n",
            marker.display()
        ),
    );
    let log = app.path("daemon.log");
    let mut daemon = Daemon(
        soarjobd(dir, &["run", "--log-format", "json"])
            .uid(65534)
            .gid(65534)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("needs the daemon to run as root")
        })
        .await,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_exit(&mut daemon.0, Duration::from_secs(30)).is_some());
    assert!(!marker.exists(), "the program ran anyway");
    let store = app.store().await;
    let rows = runs(&store, "as-root").await;
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.status == RunStatus::Failed),
        "{rows:?}"
    );
    store.close().await;
}

async fn credentials_case(users: Users) {
    let app = TestApp::new();
    let dir = app.dir.path();
    // The job user must reach its script; the state database stays private (0600).
    for d in [dir, &dir.join("jobs")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // As root, the "same user" case runs the daemon (and so its job) as `nobody`.
    let daemon_as_nobody = users == Users::Same && is_root();
    if daemon_as_nobody {
        for d in [dir, &dir.join("jobs")] {
            std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
        }
    }
    let key = format!("k3y{}", uuid::Uuid::new_v4().simple());
    let reversed: String = key.chars().rev().collect();
    // What the issue's job did, and more: every way to the daemon's environment and memory
    // maps, printed reversed (redaction knows the key, not its reverse), plus every file of
    // the test folder it can read.
    let script = format!(
        r#"echo "uid=$(id -u)"
for f in /proc/$PPID/environ /proc/$PPID/cmdline /proc/$PPID/status /proc/$PPID/maps; do
  if cat "$f" > /dev/null 2>&1; then echo "READABLE $f"; tr '\0' '\n' < "$f" | rev; else echo "UNREADABLE $f"; fi
done
for f in $(find {dir} -type f 2>/dev/null); do
  if cat "$f" > /dev/null 2>&1; then cat "$f" | tr '\0' '\n' | rev; fi
done
tr '\0' '\n' < /proc/self/environ | rev
echo done"#,
        dir = dir.display()
    );
    std::fs::write(dir.join("jobs").join("peek.sh"), script).unwrap();
    std::fs::set_permissions(
        dir.join("jobs").join("peek.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    app.write_job(
        "peek",
        "name: Peek\njob: exec\nschedule: {every: 1s}\ncommand: [/bin/sh, peek.sh]\nworking_dir: .\n",
    );
    let log = app.path("daemon.log");
    let mut cmd = soarjobd(dir, &["run", "--log-format", "json"]);
    cmd.env("SOARJOBD__SOAR__URL", "http://127.0.0.1:9")
        .env("SOARJOBD__SOAR__APP_KEY", &key)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    match users {
        Users::ExecUser => {
            cmd.env("SOARJOBD__EXEC__USER", "nobody");
        }
        Users::Same if daemon_as_nobody => {
            cmd.uid(65534).gid(65534);
        }
        Users::Same => {}
    }
    let mut daemon = Daemon(cmd.spawn().unwrap());
    let pid = daemon.0.id();
    // The daemon creates the database (as its user) before this test opens it.
    assert!(
        eventually(Duration::from_secs(30), || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("daemon started")
        })
        .await,
        "the daemon did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let store = app.store().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(&runs(&store, "peek").await, RunStatus::Succeeded) >= 1
        })
        .await,
        "the job did not run: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The environment the kernel shows for the daemon holds no value of its variables (as
    // root this test can read it; as the daemon's own non-root user it cannot at all).
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(env) => {
            let text = String::from_utf8_lossy(&env);
            assert!(
                !text.contains(&key),
                "the key is still in the environ block"
            );
            assert!(text.contains("SOARJOBD__SOAR__APP_KEY=\0"), "{text:?}");
        }
        Err(e) => println!("/proc/{pid}/environ unreadable to the test itself ({e})"),
    }
    signal(&daemon.0, libc::SIGTERM);
    assert!(
        wait_exit(&mut daemon.0, Duration::from_secs(30)).is_some_and(|s| s.success()),
        "the daemon did not stop cleanly"
    );

    let run = runs(&store, "peek")
        .await
        .into_iter()
        .find(|r| r.status == RunStatus::Succeeded)
        .unwrap();
    let lines = store.run_logs(run.id, 0, 10_000).await.unwrap();
    let stored: String = lines
        .iter()
        .map(|l| format!("{} {}\n", l.message, l.fields))
        .collect();
    assert!(
        stored.contains("done"),
        "the script ran to its end: {stored}"
    );
    assert!(
        stored.contains(&format!("UNREADABLE /proc/{pid}/environ")),
        "the job could read the daemon's environment: {stored}"
    );
    if is_root() {
        assert!(stored.contains("uid=65534"), "ran as nobody: {stored}");
    }
    let daemon_log = std::fs::read_to_string(&log).unwrap();
    for secret in [&key, &reversed] {
        assert!(
            !stored.contains(secret.as_str()),
            "the key reached the run's log: {stored}"
        );
        assert!(
            !daemon_log.contains(secret.as_str()),
            "the key reached the daemon's log"
        );
    }
    store.close().await;
}

/// A second SIGTERM used to exit at once, leaving the running job's processes (a `setsid`
/// grandchild included) alive and its row `running`. Now the runs' cgroups, groups and
/// token-carrying processes are killed before the exit, and the row is `cancelled` with the
/// reason. With the cgroup and without (group and token only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_leaves_no_process_behind() {
    for cgroup in [true, false] {
        second_sigterm(cgroup).await;
    }
}

async fn second_sigterm(cgroup: bool) {
    let app = TestApp::new();
    let dir = app.dir.path();
    let (gk, sk) = (app.path("grandchild.pid"), app.path("session.pid"));
    // A job that ignores SIGTERM, with a grandchild in its group and one in a session of its
    // own (both ignoring SIGTERM too). `overlap` is `skip` by default: one run holds.
    let script = format!(
        r#"trap '' TERM
sh -c 'trap "" TERM; exec sleep 1000' & echo $! > {gk}.tmp; mv {gk}.tmp {gk}
setsid sh -c 'trap "" TERM; echo $$ > {sk}.tmp; mv {sk}.tmp {sk}; exec sleep 1000' &
while true; do sleep 1; done"#,
        gk = gk.display(),
        sk = sk.display(),
    );
    app.write_job(
        "hold",
        &format!(
            "name: Hold\njob: exec\nschedule: {{every: 1s}}\ntimeout: 1h\ncommand: [/bin/sh, -c, {script:?}]\n"
        ),
    );
    let log = app.path("daemon.log");
    let mut cmd = soarjobd(dir, &["run", "--log-format", "json"]);
    cmd.env("SOARJOBD__SHUTDOWN_GRACE", "1h")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    if !cgroup {
        cmd.env("SOARJOBD_CGROUP", "off");
    }
    let mut daemon = Daemon(cmd.spawn().unwrap());
    let read_pid =
        |p: &Path| -> Option<i32> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    assert!(
        eventually(Duration::from_secs(30), || async {
            read_pid(&gk).is_some() && read_pid(&sk).is_some()
        })
        .await,
        "the run did not start its children: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (g, s) = (read_pid(&gk).unwrap(), read_pid(&sk).unwrap());
    // Whatever this test leaves behind on a failed assertion is killed.
    struct Reap(i32, i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            for p in [self.0, self.1] {
                if alive(p) {
                    // SAFETY: kill(2) of a process this test's job started.
                    unsafe {
                        libc::kill(p, libc::SIGKILL);
                    }
                }
            }
        }
    }
    let _reap = Reap(g, s);
    assert!(alive(g) && alive(s));

    signal(&daemon.0, libc::SIGTERM);
    // The first signal waits for the run (grace 1h): the daemon is still there.
    assert!(
        eventually(Duration::from_secs(10), || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("shutdown requested")
        })
        .await
    );
    assert!(daemon.0.try_wait().unwrap().is_none());
    signal(&daemon.0, libc::SIGTERM);
    let status = wait_exit(&mut daemon.0, Duration::from_secs(30)).expect("the daemon exits");
    assert_eq!(status.code(), Some(1), "a forced exit is a failure exit");
    // Nothing of the run is left at the moment the daemon is gone.
    assert!(
        !alive(g) && !alive(s),
        "left running (cgroup {cgroup}): grandchild {} session {}",
        alive(g),
        alive(s)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("second signal"), "{text}");
    // The row was recorded before the exit: cancelled, with the reason.
    let store = app.store().await;
    let rows = runs(&store, "hold").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, RunStatus::Cancelled, "{rows:?}");
    assert!(
        rows[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("second stop signal")),
        "{rows:?}"
    );
    store.close().await;
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Overload (issue 16): lateness that keeps coming (here the daemon is stopped for 2.5 s
/// every 3 s, so every tick fires late or is missed) is one episode, logged once with its
/// figures when it starts and once when it ends, shown by `/metrics`
/// (`soarjobd_overloaded`, `soarjobd_overload_episodes_total`) and `/readyz`. Today's code
/// only logged a `ticks missed` warning per job and tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_lateness_is_one_overload_episode_in_the_log_and_metrics() {
    let app = TestApp::new();
    let dir = app.dir.path();
    app.write_job(
        "tick",
        "name: Tick\njob: exec\nschedule: {every: 1s}\ncommand: [/bin/true]\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let log = app.path("daemon.log");
    let mut cmd = soarjobd(dir, &["run", "--log-format", "json"]);
    cmd.env("SOARJOBD__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut daemon = Daemon(cmd.spawn().unwrap());
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move { http.get(url).send().await.ok()?.text().await.ok() }
    };
    let store = app.store().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(&runs(&store, "tick").await, RunStatus::Succeeded) >= 2
        })
        .await,
        "the job did not run"
    );
    let metrics = get("/metrics").await.expect("metrics");
    assert_eq!(
        metric(&metrics, "soarjobd_overloaded"),
        Some(0.0),
        "{metrics}"
    );

    // A host that cannot keep up: the daemon gets 0.5 s of every 3 s.
    for _ in 0..4 {
        signal(&daemon.0, libc::SIGSTOP);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        signal(&daemon.0, libc::SIGCONT);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = get("/metrics").await.expect("metrics");
    assert_eq!(
        metric(&metrics, "soarjobd_overloaded"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "soarjobd_overload_episodes_total"),
        Some(1.0),
        "{metrics}"
    );
    let ready = get("/readyz").await.expect("readyz");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["overloaded"], true, "{ready}");
    assert!(
        ready["overload"]["max_lateness_ms"].as_u64().unwrap() > 1000,
        "{ready}"
    );

    // Ten seconds on time end it.
    assert!(
        eventually(Duration::from_secs(30), || async {
            get("/metrics")
                .await
                .is_some_and(|m| metric(&m, "soarjobd_overloaded") == Some(0.0))
        })
        .await,
        "the episode did not end"
    );
    let metrics = get("/metrics").await.expect("metrics");
    assert_eq!(
        metric(&metrics, "soarjobd_overload_episodes_total"),
        Some(1.0),
        "{metrics}"
    );
    signal(&daemon.0, libc::SIGTERM);
    assert!(wait_exit(&mut daemon.0, Duration::from_secs(30)).is_some());
    let text = std::fs::read_to_string(&log).unwrap();
    let starts: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"message\":\"overloaded: ticks fire late"))
        .collect();
    assert_eq!(starts.len(), 1, "logged once: {starts:#?}");
    assert!(
        starts[0].contains("\"max_lateness_ms\"") && starts[0].contains("\"late_ticks\""),
        "{}",
        starts[0]
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("\"message\":\"overload over"))
            .count(),
        1,
        "{text}"
    );
    store.close().await;
}

/// `exec.max_concurrent`: two exec jobs due at the same instant, with a cap of one process,
/// run one after the other (never both at once), and the one that waited says so in its
/// stats (`queued_ms`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_max_concurrent_queues_a_burst() {
    let mut app = TestApp::new();
    app.settings.exec.max_concurrent = 1;
    let busy = app.path("busy");
    let overlap = app.path("overlap");
    for id in ["a", "b"] {
        let script = format!(
            "if [ -e {busy} ]; then echo {id} >> {overlap}; fi; touch {busy}; sleep 1; rm -f {busy}",
            busy = busy.display(),
            overlap = overlap.display()
        );
        app.write_job(
            id,
            &format!(
                "name: {id}\njob: exec\nschedule: {{every: 10s}}\ncommand: [/bin/sh, -c, {script:?}]\n"
            ),
        );
    }
    let daemon = app.start().await;
    let store = daemon.store().clone();
    assert!(
        eventually(Duration::from_secs(40), || async {
            count(&runs(&store, "a").await, RunStatus::Succeeded) >= 1
                && count(&runs(&store, "b").await, RunStatus::Succeeded) >= 1
        })
        .await,
        "both jobs ran"
    );
    daemon.shutdown().await;
    assert!(
        !overlap.exists(),
        "two processes ran at once: {}",
        std::fs::read_to_string(&overlap).unwrap_or_default()
    );
    let store = app.store().await;
    let mut all = runs(&store, "a").await;
    all.extend(runs(&store, "b").await);
    let first_tick = all.iter().map(|r| r.scheduled_at).min().unwrap();
    let waited: Vec<u64> = all
        .iter()
        .filter(|r| r.scheduled_at == first_tick)
        .filter_map(|r| r.stats.get("queued_ms").and_then(|v| v.as_u64()))
        .collect();
    assert_eq!(waited.len(), 1, "one of the two waited: {all:#?}");
    assert!(
        waited[0] >= 500,
        "it waited for the other's 1 s: {waited:?}"
    );
    store.close().await;
}
