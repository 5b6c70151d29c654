//! The real binary under a stand-in for systemd's notify socket: `READY=1` once the first
//! schedule is loaded, `WATCHDOG=1` while the scheduler loop turns, `STOPPING=1` on SIGTERM;
//! and `soarjobd probe` (the container HEALTHCHECK) against its admin server's `/livez`.

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{SOARJOBD_BIN, soarjobd_in};

fn recv_until(sock: &UnixDatagram, want: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                break;
            }
        }
    }
    seen
}

#[test]
fn notifies_systemd_and_answers_the_probe() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/nap.yaml"),
        "name: Nap\njob: exec\nschedule: {every: 1h}\ncommand: [/bin/true]\n",
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // systemd names the watched process in WATCHDOG_PID: a shell that sets it to its own pid
    // and then becomes the daemon (`exec` keeps the pid).
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run", SOARJOBD_BIN])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("SOARJOBD__JOBS_DIR", dir.path().join("jobs"))
        .env(
            "SOARJOBD__DATABASE_URL",
            format!("sqlite:{}", dir.path().join("state.db").display()),
        )
        .env("NOTIFY_SOCKET", &sock_path)
        // Half of it is the ping interval: a ping every 0.5 s.
        .env("WATCHDOG_USEC", "1000000")
        .env("SOARJOBD__ADMIN__LISTEN", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let seen = recv_until(&sock, "READY=1", Duration::from_secs(60));
    assert!(seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    let seen = recv_until(&sock, "WATCHDOG=1", Duration::from_secs(30));
    assert!(seen.iter().any(|m| m.contains("WATCHDOG=1")), "{seen:?}");

    // The HEALTHCHECK: exit 0 while alive; exit 1 for a path that does not answer 200.
    let probe = soarjobd_in(dir.path(), &["probe", "--addr", &addr])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let probe = soarjobd_in(
        dir.path(),
        &["probe", "--addr", &addr, "--path", "/nowhere"],
    )
    .output()
    .unwrap();
    assert_eq!(probe.status.code(), Some(1));

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let seen = recv_until(&sock, "STOPPING=1", Duration::from_secs(30));
    assert!(seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");
    assert!(child.wait().unwrap().success());
    // Nothing listens any more: the probe says unhealthy.
    let probe = soarjobd_in(dir.path(), &["probe", "--addr", &addr])
        .output()
        .unwrap();
    assert_eq!(probe.status.code(), Some(1));
}
