//! Store faults: a full disk (a real tmpfs, and a size-limited SQLite file), a store that fails
//! N times and then recovers. The scheduler must stop claiming while the store fails, never run
//! a tick twice, and resume on its own (saying so in the log) when the store works again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use soarjobd::store::RunStatus;

use crate::support::*;

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "4m") at `path`. The fault suite runs as root (CI runs
    /// as root on this project's machines); a machine where mounting is refused fails the test
    /// loudly instead of skipping it, so the disk-full path is never silently untested.
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("the `mount` command must exist for the disk-full fault test");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (this fault test needs root, as CI has): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Writes zeros to `fill` until the filesystem is full.
    fn fill(&self) -> PathBuf {
        let fill = self.path.join("fill");
        let mut f = std::fs::File::create(&fill).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let _ = f.sync_all();
        fill
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a file the daemon still holds open cannot keep the mount busy.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The reproduction: the database on a small tmpfs, filled for a few seconds, then
/// freed. Before the fix a write transaction whose COMMIT failed went back to the pool still
/// open, and every later claim failed with "attempted to call begin_with at non-zero
/// transaction depth" for as long as the process lived.
#[tokio::test]
async fn a_full_disk_stops_claims_and_scheduling_resumes_when_space_returns() {
    let mut app = TestApp::new();
    let fs = Tmpfs::mount(&app.path("db"), "4m");
    app.settings.database_url = format!("sqlite:{}", fs.path.join("state.db").display());
    app.write_job("tick", &sleep_job("Tick", "{every: 1s}", 0, ""));
    let (logs, _g) = capture_logs();
    let d = app.start().await;
    let store = d.store().clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            count(&runs(&store, "tick").await, RunStatus::Succeeded) >= 2
        })
        .await,
        "the job never ran before the fault"
    );

    let fill = fs.fill();
    assert!(
        eventually(Duration::from_secs(15), || async {
            logs.text().contains("database or disk is full")
        })
        .await,
        "filling the disk caused no store error: {}",
        logs.text()
    );
    // Stay full for a few ticks: every claim in this window fails.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::remove_file(&fill).unwrap();
    let freed = Utc::now();

    assert!(
        eventually(Duration::from_secs(20), || async {
            runs(&store, "tick")
                .await
                .iter()
                .any(|r| r.status == RunStatus::Succeeded && r.started_at > freed)
        })
        .await,
        "scheduling did not resume after the disk was freed: {}",
        logs.text()
    );
    let text = logs.text();
    assert!(
        !text.contains("non-zero transaction depth"),
        "a connection went back to the pool with an open transaction: {text}"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            logs.text().contains("\"message\":\"store recovered\"")
        })
        .await,
        "no recovery was logged: {}",
        logs.text()
    );
    // The failure is logged once at error level when it starts, not once per tick.
    let failing = text.matches("\"message\":\"store failing\"").count();
    assert_eq!(failing, 1, "{text}");
    d.shutdown().await;

    // No tick ran twice and nothing is left running.
    let store = app.store().await;
    let all = runs(&store, "tick").await;
    assert_eq!(count(&all, RunStatus::Running), 0, "{all:?}");
    let mut ticks: Vec<_> = all
        .iter()
        .filter(|r| r.status != RunStatus::Skipped)
        .map(|r| r.scheduled_at)
        .collect();
    let n = ticks.len();
    ticks.sort();
    ticks.dedup();
    assert_eq!(ticks.len(), n, "a tick ran twice: {all:?}");
    drop(fs);
}
