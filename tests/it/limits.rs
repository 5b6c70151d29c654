//! Hostile or broken job files, through the real binary: size/depth/node limits, secrets
//! that job files must not reach, odd folder entries and database URLs `run` would refuse.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_soarjobd");

fn soarjobd(app: &TestApp, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(app.dir.path())
        .env_remove("RUST_LOG")
        .env_remove("SOARJOBD_CONFIG")
        .env("SOARJOBD__JOBS_DIR", app.jobs_dir())
        .env(
            "SOARJOBD__DATABASE_URL",
            format!("sqlite:{}", app.path("state.db").display()),
        );
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const GOOD: &str = "name: Good\njob: exec\nschedule: {every: 15m}\ncommand: [/bin/true]\n";

#[test]
fn check_reports_each_limit_at_its_place_and_keeps_the_other_jobs() {
    let app = TestApp::new();
    app.write_job("good", GOOD);
    let head = "name: N\njob: exec\ncommand: [/bin/true]\n";
    // 300 KB of nested flow sequences: 40 s of CPU before the limits.
    app.write_job(
        "nested",
        &format!("{head}description: {}\n", "[".repeat(300_000)),
    );
    // Block-style nesting by indentation.
    let block: String = (0..80)
        .map(|d| format!("{}k{d}:\n", "  ".repeat(d)))
        .collect();
    app.write_job("indented", &format!("{head}env:\n{block}"));
    // 3 MiB flat map: over the size limit (27 MB took 1.4 GB of RSS before).
    let huge: String = (0..300_000).map(|i| format!("  K{i}: v\n")).collect();
    app.write_job("huge", &format!("{head}env:\n{huge}"));
    // Under the size limit, over the node limit.
    let many: String = (0..60_000).map(|i| format!("  K{i}: v\n")).collect();
    app.write_job("many", &format!("{head}env:\n{many}"));

    let out = soarjobd(&app, &["check"]).output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let jobs = app.jobs_dir().display().to_string();
    assert!(all.contains("good  job=exec  enabled"), "{all}");
    assert!(
        all.contains(&format!(
            "{jobs}/nested.yaml:4:{}: nesting deeper than 64 levels",
            "description: ".len() + 64
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!("{jobs}/indented.yaml:")) && all.contains("nesting deeper"),
        "{all}"
    );
    assert!(
        all.contains(&format!("{jobs}/huge.yaml:"))
            && all.contains("larger than 1024 KiB, the limit for a job file"),
        "{all}"
    );
    assert!(
        all.contains(&format!("{jobs}/many.yaml:")) && all.contains("more than 100000 YAML nodes"),
        "{all}"
    );
    assert!(all.contains("1 job(s) valid, 4 error(s)"), "{all}");
}

#[tokio::test]
async fn the_daemon_runs_the_other_jobs_beside_a_nested_file_and_stops_on_sigterm() {
    let app = TestApp::new();
    let marker = app.path("ran");
    app.write_job(
        "nested",
        &format!(
            "name: N\njob: exec\ncommand: [/bin/true]\nx: {}\n",
            "[".repeat(300_000)
        ),
    );
    app.write_job(
        "tick",
        &format!(
            "name: Tick\njob: exec\nschedule: {{every: 1s}}\ncommand: [/bin/sh, -c, 'touch {}']\n",
            marker.display()
        ),
    );
    let mut child = soarjobd(&app, &["run"])
        .env("SOARJOBD__RELOAD_POLL", "1s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(20), || async { marker.exists() }).await);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let code = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(0));
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn exfiltration_attempts_are_refused_at_their_place() {
    let app = TestApp::new();
    let secrets = app.path("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(app.path("outside.txt"), "outside-secret-7f3").unwrap();
    std::os::unix::fs::symlink(app.path("outside.txt"), secrets.join("link")).unwrap();
    std::fs::write(secrets.join("ok"), "fine-from-file").unwrap();
    std::fs::write(app.jobs_dir().join("local-key"), "fine-local").unwrap();
    let param =
        |name: &str, source: &str| format!("  - {{name: {name}, type: password, {source}}}\n");
    app.write_job(
        "exfil",
        &format!(
            "name: Exfil\njob: exec\ncommand: [/bin/true]\nparameters:\n{}{}{}{}{}",
            param("A", "value_from_env: SOARJOBD__SOAR__APP_KEY"),
            param("B", "value_from_env: EXFIL_NOT_ALLOWED"),
            param("C", "value_from_file: /proc/self/environ"),
            param("D", "value_from_file: ../../etc/passwd"),
            param(
                "E",
                &format!("value_from_file: {}", secrets.join("link").display())
            ),
        ),
    );
    app.write_job(
        "allowed",
        &format!(
            "name: Allowed\njob: exec\ncommand: [/bin/true]\nparameters:\n{}{}{}",
            param("A", "value_from_env: EXFIL_ALLOWED_KEY"),
            param(
                "B",
                &format!("value_from_file: {}", secrets.join("ok").display())
            ),
            param("C", "value_from_file: local-key"),
        ),
    );
    let out = soarjobd(&app, &["check"])
        .env("SOARJOBD__SOAR__APP_KEY", "platform-key-91c")
        .env("EXFIL_NOT_ALLOWED", "nope-value-5d1")
        .env("EXFIL_ALLOWED_KEY", "allowed-value")
        .env("SOARJOBD__SECRETS__ENV_ALLOW", "EXFIL_ALLOWED_*")
        .env(
            "SOARJOBD__SECRETS__DIRS",
            format!("{},{}", app.jobs_dir().display(), secrets.display()),
        )
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let file = format!("{}/exfil.yaml", app.jobs_dir().display());
    let col = "  - {name: A, type: password, value_from_env: ".len() + 1;
    for (line, what) in [
        (5, "daemon's own configuration"),
        (6, "is not allowed for job files"),
        (7, "outside the secrets folders"),
        (8, "must not contain `..`"),
        (9, "symbolic link that leads outside"),
    ] {
        let c = if line >= 7 { col + 1 } else { col };
        let prefix = format!("{file}:{line}:{c}: ");
        assert!(
            all.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(what)),
            "{prefix}{what}\n{all}"
        );
    }
    assert!(all.contains("allowed  job=exec"), "{all}");
    assert!(all.contains("1 job(s) valid, 5 error(s)"), "{all}");
    for secret in [
        "platform-key-91c",
        "nope-value-5d1",
        "outside-secret-7f3",
        "root:",
    ] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
}

#[test]
fn odd_entries_in_the_jobs_folder_are_reported_without_blocking() {
    use std::os::unix::ffi::OsStrExt;
    let app = TestApp::new();
    let d = app.jobs_dir();
    app.write_job("good", GOOD);
    std::fs::create_dir(d.join("folder.yaml")).unwrap();
    std::os::unix::fs::symlink(d.join("b.yaml"), d.join("a.yaml")).unwrap();
    std::os::unix::fs::symlink(d.join("a.yaml"), d.join("b.yaml")).unwrap();
    let fifo = std::ffi::CString::new(d.join("pipe.yaml").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::fs::write(
        d.join(std::ffi::OsStr::from_bytes(b"caf\xe9.yaml")),
        GOOD.replace("Good", "Cafe"),
    )
    .unwrap();
    let out = soarjobd(&app, &["check"]).output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let jobs = d.display().to_string();
    for (name, what) in [
        ("folder.yaml", "is a folder"),
        ("a.yaml", "symbolic link loop"),
        ("b.yaml", "symbolic link loop"),
        ("pipe.yaml", "FIFO"),
    ] {
        assert!(
            all.contains(&format!("{jobs}/{name}: this is a")) && all.contains(what),
            "{name}: {all}"
        );
    }
    assert!(all.contains("not valid UTF-8"), "{all}");
    assert!(all.contains("1 job(s) valid, 5 error(s)"), "{all}");
}

#[test]
fn check_rejects_the_database_urls_run_rejects() {
    let app = TestApp::new();
    app.write_job("good", GOOD);
    for url in ["sqlite::memory:", "sqlite:state.db?mode=ro"] {
        let out = soarjobd(&app, &["check"])
            .env("SOARJOBD__DATABASE_URL", url)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{url}: {}", text(&out));
        assert!(text(&out).contains("database_url"), "{url}: {}", text(&out));
        let out = soarjobd(&app, &["run"])
            .env("SOARJOBD__DATABASE_URL", url)
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "{url}: {}", text(&out));
        assert!(!Path::new(&app.path(":memory:")).exists());
    }
}
