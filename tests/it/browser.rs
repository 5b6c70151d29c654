//! The status page in a real headless Chromium (Debian's `chromium` + `chromedriver`, installed
//! with apt-get when missing), driven over WebDriver by `fantoccini`: sign in with the operator
//! token, find the job's row, click Run now, and see the new run with its stored log lines;
//! pause a job; sign out (the session cookie, which no script can read, no longer opens the
//! page).
//! A screenshot of the jobs page is saved in the test's temp dir (and, when
//! `SOARJOBD_SCREENSHOT` names a file, there too: that is how `docs/status-page.png` is made).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

use crate::admin::start_with_admin;
use crate::support::{TestApp, capture_logs, eventually};

const OPERATOR: &str = "operator-token-7b21e4";

/// The chromedriver binary, installing Debian's packages first if it is missing.
fn chromedriver() -> PathBuf {
    let find = || {
        ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(p) = find().filter(|_| PathBuf::from("/usr/bin/chromium").exists()) {
        return p;
    }
    // The same packages `.ci/run` installs, so `cargo test` alone works on a fresh machine.
    let ok = Command::new("sh")
        .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "chromium and chromium-driver are missing and apt-get could not install them"
    );
    find().expect("chromedriver installed")
}

/// A chromedriver process on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver())
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let up = eventually(Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "chromedriver listens on {port}");
    driver
}

#[tokio::test]
async fn status_page_runs_a_job_and_shows_its_logs_in_chromium() {
    // Run logs are captured by the daemon's subscriber layer: the test installs it (on this
    // thread, which runs the whole test: the current-thread runtime).
    let (_logs, _guard) = capture_logs();
    let driver = start_driver().await;
    let mut t = TestApp::new();
    t.write_job(
        "greeter",
        "name: Greeter\njob: exec\ndescription: Says hello.\nschedule: {every: 1h}\n\
         command: [/bin/sh, -c, 'echo \"hello from the status page\"']\n",
    );
    t.write_job(
        "nightly-report",
        "name: Nightly report\njob: exec\nschedule: {cron: '30 2 * * *', timezone: Europe/Berlin}\n\
         command: [/bin/true]\n",
    );
    let (daemon, server) = start_with_admin(&mut t, true).await;
    let base = server.url();

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,560"],
        }),
    );
    let c = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");

    // Without the token the page sends us to sign in.
    c.goto(&base).await.unwrap();
    c.wait()
        .for_element(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(OPERATOR)
        .await
        .unwrap();
    c.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The jobs table, the job's row, Run now.
    let row = c
        .wait()
        .for_element(Locator::Css("tr[data-job=\"greeter\"]"))
        .await
        .unwrap();
    assert!(row.text().await.unwrap().contains("every 1h"));
    row.find(Locator::Css("button.run-now"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The new run's page, then its log lines (stored within a second of its end).
    let status = c
        .wait()
        .for_element(Locator::Id("run-status"))
        .await
        .unwrap();
    let _ = status;
    let run_url = c.current_url().await.unwrap();
    assert!(run_url.path().starts_with("/runs/"), "{run_url}");
    let mut logs = String::new();
    for _ in 0..60 {
        c.goto(run_url.as_str()).await.unwrap();
        logs = c
            .find(Locator::Id("logs"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if logs.contains("hello from the status page") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(logs.contains("hello from the status page"), "{logs}");
    let page = c.source().await.unwrap();
    assert!(page.contains("s-succeeded"), "{page}");

    // Pause the other job from its row: its page says who paused it; its row offers Resume.
    c.goto(&base).await.unwrap();
    let row = c
        .wait()
        .for_element(Locator::Css("tr[data-job=\"nightly-report\"]"))
        .await
        .unwrap();
    row.find(Locator::Css("button.pause"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let note = c.wait().for_element(Locator::Id("pause")).await.unwrap();
    assert!(note.text().await.unwrap().contains("admin:operator"));
    assert!(
        daemon
            .pauses()
            .pauses()
            .await
            .unwrap()
            .iter()
            .any(|p| p.job_id == "nightly-report")
    );

    // Back on the jobs page, the rows show the run and the pause; keep a screenshot.
    c.goto(&base).await.unwrap();
    let paused = c
        .wait()
        .for_element(Locator::Css("tr[data-job=\"nightly-report\"]"))
        .await
        .unwrap();
    assert!(paused.text().await.unwrap().contains("paused"));
    paused.find(Locator::Css("button.resume")).await.unwrap();
    let row = c
        .wait()
        .for_element(Locator::Css("tr[data-job=\"greeter\"]"))
        .await
        .unwrap();
    assert!(row.text().await.unwrap().contains("succeeded"));
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    std::fs::write(t.path("status-page.png"), &png).unwrap();
    if let Some(out) = std::env::var_os("SOARJOBD_SCREENSHOT") {
        std::fs::write(out, &png).unwrap();
    }

    // The page's own inline style is allowed by the Content-Security-Policy (by its hash):
    // `body{margin:1.5rem}` applies.
    let margin = c
        .execute("return getComputedStyle(document.body).marginTop", vec![])
        .await
        .unwrap();
    assert_eq!(margin, json!("24px"), "the CSP blocked the page's style");
    // The session cookie is HttpOnly: the page's scripts cannot read it.
    let seen = c.execute("return document.cookie", vec![]).await.unwrap();
    assert_eq!(seen, json!(""), "{seen}");
    // Sign out: back to the login form, and the jobs page asks to sign in again.
    c.find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("token")).await.unwrap();
    c.goto(&base).await.unwrap();
    c.wait().for_element(Locator::Id("token")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/login");
    c.close().await.unwrap();
    daemon.shutdown().await;
    server.stop().await;
}
