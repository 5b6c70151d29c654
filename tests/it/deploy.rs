//! What can be checked of the container without a Docker engine: every path the Dockerfile
//! copies exists, and the binary runs with the container's config, paths and environment
//! (rebased into a temp root) and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn every_path_the_dockerfile_copies_exists() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let mut checked = 0;
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with("COPY ") || line.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
        // Every argument but the last (the destination) is a source in the build context.
        for src in &parts[..parts.len() - 1] {
            assert!(
                Path::new(ROOT).join(src).exists(),
                "Dockerfile copies missing `{src}`"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} COPY sources found");
}

#[test]
fn the_dockerfile_dependency_layer_stubs_every_declared_bench() {
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    let docker = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let stub_line = docker
        .lines()
        .find(|l| l.contains("for b in"))
        .expect("the Dockerfile stubs the benches");
    let mut lines = manifest.lines();
    while let Some(l) = lines.next() {
        if l.trim() == "[[bench]]" {
            let name = lines.next().unwrap().split('"').nth(1).unwrap();
            assert!(
                stub_line
                    .split_whitespace()
                    .any(|w| w.trim_end_matches(';') == name),
                "bench `{name}` is missing from the Dockerfile's stub loop"
            );
        }
    }
}

/// The dependency layer builds the workspace from manifests alone, so every member crate needs
/// its manifest copied and its library (and build script, if it has one) stubbed.
#[test]
fn the_dockerfile_dependency_layer_stubs_every_member_crate() {
    let docker = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let stub_line = docker
        .lines()
        .find(|l| l.contains("for c in"))
        .expect("the Dockerfile stubs the member crates");
    let mut members = 0;
    for entry in std::fs::read_dir(Path::new(ROOT).join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("Cargo.toml").exists() {
            continue;
        }
        members += 1;
        let name = dir.file_name().unwrap().to_str().unwrap();
        let copy = format!("COPY crates/{name}/Cargo.toml ./crates/{name}/");
        assert!(
            docker.lines().any(|l| l.trim() == copy),
            "the Dockerfile does not copy the manifest of `crates/{name}` before the dependency build"
        );
        assert!(
            stub_line
                .split_whitespace()
                .any(|w| w.trim_end_matches(';') == name),
            "crate `{name}` is missing from the Dockerfile's stub loop"
        );
        if dir.join("build.rs").exists() {
            let stub = format!("> crates/{name}/build.rs");
            assert!(
                docker.contains(&stub),
                "the build script of `crates/{name}` is not stubbed in the Dockerfile"
            );
        }
    }
    assert!(members >= 4, "only {members} member crates found");
}

#[test]
fn the_binary_runs_with_the_container_layout_and_stops_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/soarjobd");
    let var = root.path().join("var/lib/soarjobd");
    std::fs::create_dir_all(etc.join("jobs")).unwrap();
    std::fs::create_dir_all(&var).unwrap();
    let rebase = |s: &str| {
        s.replace("/etc/soarjobd", &etc.display().to_string())
            .replace("/var/lib/soarjobd", &var.display().to_string())
    };
    let config = std::fs::read_to_string(Path::new(ROOT).join("deploy/container.yaml")).unwrap();
    std::fs::write(etc.join("soarjobd.yaml"), rebase(&config)).unwrap();
    for entry in std::fs::read_dir(Path::new(ROOT).join("jobs")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, etc.join("jobs").join(p.file_name().unwrap())).unwrap();
    }
    // The Dockerfile's ENV and CMD.
    let mut child = Command::new(env!("CARGO_BIN_EXE_soarjobd"))
        .arg("run")
        .current_dir(&var)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SOARJOBD_CONFIG", etc.join("soarjobd.yaml"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut started = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        if line.contains("\"message\":\"daemon started\"") {
            started = Some(line);
            break;
        }
    }
    let started = started.expect("the daemon logged `daemon started` as JSON");
    assert!(started.contains("\"errors\":0"), "{started}");
    assert!(
        var.join("soarjobd.db").exists(),
        "the database is in the state volume"
    );
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // The reader thread may still be passing on the last lines after the exit: read until it
    // hangs up (stderr closed), with a bound in case a leftover child kept it open.
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l.contains("daemon stopped")),
        "{rest:?}"
    );
}
