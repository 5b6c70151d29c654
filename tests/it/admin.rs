//! The admin server over real HTTP on loopback: probes, token auth (401/403), the JSON API
//! (manual run through the scheduler, cancel, 404s with stable codes), audit events, the body
//! limit, cross-origin refusal, a metrics scrape parsed by a Prometheus text-format parser, and
//! `/readyz` during shutdown. Hardening (issue 16): DNS rebinding (forged `Host`), security
//! headers, sessions and sign-out, login rate limiting, refusals logged and counted, the header
//! read timeout, the idle timeout and the connection cap, over raw sockets where a client
//! library would fix the request up.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use soarjobd::admin::{Admin, RunningAdmin};
use soarjobd_engine::RunningDaemon;

use crate::support::{TestApp, capture_logs, eventually, sleep_job};

const READ: &str = "read-token-0f3a9c";
const OPERATOR: &str = "operator-token-7b21e4";

/// The test's daemon with its admin server on a free loopback port, with both tokens.
pub async fn start_with_admin(t: &mut TestApp, tokens: bool) -> (RunningDaemon, RunningAdmin) {
    let admin = if tokens {
        json!({"listen": "127.0.0.1:0", "read_token": READ, "operator_token": OPERATOR})
    } else {
        json!({"listen": "127.0.0.1:0"})
    };
    start_with_admin_section(t, admin).await
}

/// The test's daemon with its admin server configured by `admin` (the `admin` section).
pub async fn start_with_admin_section(
    t: &mut TestApp,
    admin: Value,
) -> (RunningDaemon, RunningAdmin) {
    t.settings.set_section("admin", admin);
    let app = t.app();
    let admin = Admin::bind(app.settings()).await.expect("admin binds");
    let daemon = admin
        .daemon(app.daemon())
        .start()
        .await
        .expect("daemon starts");
    let server = admin.start(&daemon).unwrap().expect("admin is on");
    (daemon, server)
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(
            method,
            format!("{}{}", self.base, path.trim_start_matches('/')),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the admin server answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }
    async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, body).await
    }
}

#[tokio::test]
async fn api_auth_audit_metrics_and_readiness() {
    let (logs, _guard) = capture_logs();
    let mut t = TestApp::new();
    t.settings.shutdown_grace = Duration::from_secs(3);
    t.write_job("nap", &sleep_job("Nap", "{every: 1h}", 20, ""));
    t.write_job(
        "long",
        &sleep_job("Long", "{every: 1h}", 60_000, "overlap: skip\n"),
    );
    let (daemon, server) = start_with_admin(&mut t, true).await;
    let api = Api {
        http: reqwest::Client::new(),
        base: server.url(),
    };

    // Probes need no token.
    assert_eq!(api.get("/livez", None).await.0, 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            api.get("/readyz", None).await.0 == 200
        })
        .await
    );

    // Reads need a token; mutations the operator's.
    let (status, body) = api.get("/api/v1/jobs", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(api.get("/api/v1/jobs", Some("wrong")).await.0, 401);
    let (status, jobs) = api.get("/api/v1/jobs", Some(READ)).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["long", "nap"]);
    assert_eq!(jobs["jobs"][1]["next_fires"].as_array().unwrap().len(), 3);
    assert!(
        jobs["jobs"][1].get("parameters").is_none(),
        "parameters are never shown"
    );
    let (status, body) = api.get("/api/v1/jobs/ghost", Some(READ)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("job_not_found"))
    );
    let (status, body) = api.get("/api/v1/runs/999999", Some(READ)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("run_not_found"))
    );
    let (status, body) = api.post("/api/v1/jobs/nap/run", Some(READ), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(
        api.post("/api/v1/jobs/ghost/run", Some(OPERATOR), None)
            .await
            .0,
        404
    );

    // A manual run through the scheduler: answered with its run id, recorded as manual.
    let (status, body) = api
        .post(
            "/api/v1/jobs/nap/run",
            Some(OPERATOR),
            Some(json!({"reason": "checking the fix"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_i64().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            api.get(&format!("/api/v1/runs/{run_id}"), Some(READ))
                .await
                .1["status"]
                == "succeeded"
        })
        .await
    );
    let (_, run) = api.get(&format!("/api/v1/runs/{run_id}"), Some(READ)).await;
    assert_eq!(
        (run["trigger"].as_str(), run["job_id"].as_str()),
        (Some("manual"), Some("nap"))
    );
    // The run's log lines are kept with it (written shortly after the run ends).
    assert!(
        eventually(Duration::from_secs(20), || async {
            let (_, logs) = api
                .get(&format!("/api/v1/runs/{run_id}/logs"), Some(READ))
                .await;
            logs["lines"]
                .as_array()
                .is_some_and(|l| l.iter().any(|l| l["message"] == "run finished"))
        })
        .await
    );
    assert_eq!(api.get("/api/v1/runs/999999/logs", Some(READ)).await.0, 404);
    let (_, page) = api.get("/api/v1/jobs/nap/runs?limit=5", Some(READ)).await;
    assert_eq!(page["runs"][0]["id"].as_i64(), Some(run_id));
    let (_, page) = api
        .get(
            &format!("/api/v1/jobs/nap/runs?before={run_id}"),
            Some(READ),
        )
        .await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 0);

    // Overlap is respected: a second run of a running `overlap: skip` job is refused.
    let (status, body) = api
        .post("/api/v1/jobs/long/run", Some(OPERATOR), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let long_run = body["run_id"].as_i64().unwrap();
    assert!(eventually(Duration::from_secs(10), || async { daemon.running() == 1 }).await);
    let (status, body) = api
        .post("/api/v1/jobs/long/run", Some(OPERATOR), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("busy"))
    );

    // Cancel: only the operator, only a running run of this daemon.
    assert_eq!(
        api.post(&format!("/api/v1/runs/{long_run}/cancel"), Some(READ), None)
            .await
            .0,
        403
    );
    let (status, body) = api
        .post(
            &format!("/api/v1/runs/{run_id}/cancel"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_running"))
    );
    let (status, _) = api
        .post(
            &format!("/api/v1/runs/{long_run}/cancel"),
            Some(OPERATOR),
            Some(json!({"reason": "stuck"})),
        )
        .await;
    assert_eq!(status, 202);
    assert!(
        eventually(Duration::from_secs(20), || async {
            api.get(&format!("/api/v1/runs/{long_run}"), Some(READ))
                .await
                .1["status"]
                == "cancelled"
        })
        .await
    );
    let (_, run) = api
        .get(&format!("/api/v1/runs/{long_run}"), Some(READ))
        .await;
    assert_eq!(run["message"], "cancelled by an operator");

    // Pause and resume, persisted, with the reason; the page and the metrics show it.
    assert_eq!(
        api.post("/api/v1/jobs/nap/pause", Some(READ), None).await.0,
        403
    );
    let (status, body) = api
        .post(
            "/api/v1/jobs/nap/pause",
            Some(OPERATOR),
            Some(json!({"reason": "maintenance window"})),
        )
        .await;
    assert_eq!(
        (status, body["already_paused"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    let (_, job) = api.get("/api/v1/jobs/nap", Some(READ)).await;
    assert_eq!(job["paused"], true);
    assert_eq!(job["pause"]["reason"], "maintenance window");
    assert_eq!(job["pause"]["actor"], "admin:operator");
    assert_eq!(job["next_fires"].as_array().unwrap().len(), 0);
    let metrics = api
        .http
        .get(format!("{}metrics", api.base))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("soarjobd_job_paused{job_name=\"nap\"} 1"),
        "{metrics}"
    );
    let (status, body) = api
        .post(
            "/api/v1/jobs/nap/resume",
            Some(OPERATOR),
            Some(json!({"reason": "done"})),
        )
        .await;
    assert_eq!(
        (status, body["was_paused"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    assert_eq!(
        api.get("/api/v1/jobs/nap", Some(READ)).await.1["paused"],
        false
    );
    assert_eq!(
        api.post("/api/v1/jobs/ghost/pause", Some(OPERATOR), None)
            .await
            .0,
        404
    );

    // Bodies are limited and must be what the API expects; other sites cannot post.
    let big = json!({"reason": "x".repeat(64 * 1024)});
    assert_eq!(
        api.post("/api/v1/jobs/nap/run", Some(OPERATOR), Some(big))
            .await
            .0,
        413
    );
    let (status, body) = api
        .post(
            "/api/v1/jobs/nap/run",
            Some(OPERATOR),
            Some(json!({"why": 1})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let cross = api
        .http
        .post(format!("{}jobs/nap/run", api.base))
        .header("Origin", "https://evil.example")
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status().as_u16(), 403);

    // Every mutating call is an audit event naming the token, never quoting it.
    let text = logs.text();
    let audits: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("actor").is_some() && v.get("action").is_some())
        .collect();
    assert!(
        audits.iter().any(|a| a["actor"] == "admin:operator"
            && a["action"] == "run"
            && a["job_id"] == "nap"
            && a["reason"] == "checking the fix"),
        "{audits:?}"
    );
    assert!(
        audits
            .iter()
            .any(|a| a["action"] == "cancel" && a["reason"] == "stuck")
    );
    assert!(audits.iter().any(|a| a["action"] == "pause"
        && a["actor"] == "admin:operator"
        && a["reason"] == "maintenance window"));
    assert!(
        audits
            .iter()
            .any(|a| a["action"] == "resume" && a["reason"] == "done")
    );
    assert!(!text.contains(OPERATOR) && !text.contains(READ));

    // Platform requests reach every metrics registry of the process through the core's hook
    // (what the clients' transport calls after each attempt).
    soarjobd_core::platform_request("test-platform", "GET", Some(429), Duration::from_millis(5));

    // The scrape, parsed by a Prometheus text-format parser.
    assert_eq!(api.get("/metrics", None).await.0, 401);
    let text = api
        .http
        .get(format!("{}metrics", api.base))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the scrape parses");
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value(
            "soarjobd_runs_total",
            &[("job_name", "nap"), ("status", "succeeded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "soarjobd_runs_total",
            &[("job_name", "long"), ("status", "cancelled")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value("soarjobd_job_consecutive_failures", &[("job_name", "nap")]),
        Some(0.0)
    );
    assert!(
        value(
            "soarjobd_job_last_success_timestamp_seconds",
            &[("job_name", "nap")]
        )
        .unwrap()
            > 1.7e9
    );
    assert!(
        value(
            "soarjobd_job_next_run_timestamp_seconds",
            &[("job_name", "nap")]
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(value("soarjobd_jobs_invalid", &[]), Some(0.0));
    assert_eq!(value("soarjobd_runs_running", &[]), Some(0.0));
    assert_eq!(
        value(
            "soarjobd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "soarjobd_platform_requests_total",
            &[
                ("platform", "test-platform"),
                ("method", "GET"),
                ("status", "429")
            ]
        ),
        Some(1.0)
    );
    for family in [
        "soarjobd_run_duration_seconds",
        "soarjobd_schedule_lateness_seconds",
        "soarjobd_ticks_missed",
        "soarjobd_platform_request_duration_seconds",
        "soarjobd_job_paused",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.labels.get("run_id").is_some())
    );

    // Not ready while shutting down (a run holds the grace period open), and never a secret.
    let (status, _) = api
        .post("/api/v1/jobs/long/run", Some(OPERATOR), None)
        .await;
    assert_eq!(status, 202);
    let stopping = tokio::spawn(daemon.shutdown());
    assert!(
        eventually(Duration::from_secs(10), || async {
            let (s, b) = api.get("/readyz", None).await;
            s == 503 && b["code"] == "shutting_down"
        })
        .await
    );
    stopping.await.unwrap();
    server.stop().await;
}

/// An answer read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body).map_or(String::new(), |v| {
            v["error"]["code"].as_str().unwrap_or("").to_string()
        })
    }
}

/// Reads one answer (head, then a `Content-Length` body); `None` when the server closed the
/// connection first.
async fn read_answer(s: &mut tokio::net::TcpStream) -> Option<Raw> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no answer within 30 s"),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Raw {
        status,
        body: String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
        head,
    })
}

/// Sends `method path` with exactly the `headers` given (`Host` included, or not) and `body`
/// on a new connection, and reads the answer.
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Raw {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    read_answer(&mut s).await.expect("an answer")
}

/// The value of `soarjobd_admin_refused_requests_total{reason}`.
async fn refused(addr: SocketAddr, reason: &str, token: Option<&str>) -> f64 {
    let host = addr.to_string();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Host", host.as_str())];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    let r = raw(addr, "GET", "/metrics", &h, "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let line = format!("soarjobd_admin_refused_requests_total{{reason=\"{reason}\"}} ");
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in\n{}", r.body))
        .trim()
        .parse()
        .unwrap()
}

fn log_lines_with(text: &str, reason: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["reason"] == reason || v["reason"] == reason)
        .collect()
}

/// Issue 16, bug 1: a page on `attacker.example`, re-pointed by DNS at 127.0.0.1, talks to a
/// loopback daemon without tokens (the default) with its own name in `Host` and `Origin`. It
/// used to read the job list, start a run (202) and pause a job through the page form (303).
/// Now every such request is 421 before any handler, an `Origin` is judged by the allowed list
/// (never by `Host`), nothing changes, and the refusals are counted and logged (once).
#[tokio::test]
async fn dns_rebinding_is_refused_and_changes_nothing() {
    let (logs, _guard) = capture_logs();
    let mut t = TestApp::new();
    t.write_job("nap", &sleep_job("Nap", "{every: 1h}", 20, ""));
    let (daemon, server) = start_with_admin(&mut t, false).await;
    let addr = server.addr;
    let port = addr.port();
    let evil_host = format!("attacker.example:{port}");
    let evil_origin = format!("http://attacker.example:{port}");
    let forged = [
        ("Host", evil_host.as_str()),
        ("Origin", evil_origin.as_str()),
    ];
    let form = [
        ("Host", evil_host.as_str()),
        ("Origin", evil_origin.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];

    // Reads, the API's run, the page's run and pause: all 421, with the security headers.
    let r = raw(addr, "GET", "/api/v1/jobs", &[("Host", &evil_host)], "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (421, "misdirected_host"),
        "{r:?}"
    );
    assert!(!r.body.contains("nap"), "{r:?}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    for (path, hdrs) in [
        ("/api/v1/jobs/nap/run", &forged[..]),
        ("/jobs/nap/run", &form[..]),
        ("/jobs/nap/pause", &form[..]),
        ("/api/v1/jobs/nap/pause", &forged[..]),
    ] {
        let r = raw(addr, "POST", path, hdrs, "").await;
        assert_eq!(r.status, 421, "{path}: {r:?}");
    }
    // A name this server does not answer to, even on its port, or no Host at all.
    let other_port = port.wrapping_add(1);
    for h in [
        format!("localhost.attacker.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("127.0.0.1:{other_port}"),
        "localhost".to_string(),
    ] {
        assert_eq!(
            raw(addr, "GET", "/livez", &[("Host", &h)], "").await.status,
            421,
            "{h}"
        );
    }
    let http10 = raw(addr, "GET", "/api/v1/jobs", &[], "").await;
    assert_eq!(http10.status, 421, "{http10:?}");
    let me = addr.to_string();
    let twice = raw(
        addr,
        "GET",
        "/api/v1/jobs",
        &[("Host", &me), ("Host", &evil_host)],
        "",
    )
    .await;
    assert_eq!(twice.status, 421, "{twice:?}");
    let absolute = raw(
        addr,
        "GET",
        &format!("http://{evil_host}/api/v1/jobs"),
        &[("Host", &me)],
        "",
    )
    .await;
    assert_eq!(absolute.status, 421, "{absolute:?}");

    // With the right Host, an Origin (or Referer) of another site is still refused: the
    // Origin is compared with the allowed names, not with the Host.
    let other_referer = format!("http://attacker.example:{port}/page");
    for hdrs in [
        vec![("Host", me.as_str()), ("Origin", evil_origin.as_str())],
        vec![("Host", me.as_str()), ("Origin", "null")],
        vec![("Host", me.as_str()), ("Referer", other_referer.as_str())],
        vec![("Host", me.as_str()), ("Sec-Fetch-Site", "cross-site")],
    ] {
        let r = raw(addr, "POST", "/jobs/nap/pause", &hdrs, "").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "cross_origin"),
            "{hdrs:?}: {r:?}"
        );
    }

    // Nothing changed: no run, no pause.
    assert!(daemon.pauses().pauses().await.unwrap().is_empty());
    assert_eq!(daemon.store().history("nap", 10).await.unwrap().len(), 0);

    // The operator's own browser still works: localhost with the port, its own Origin.
    let local = format!("localhost:{port}");
    let local_origin = format!("http://localhost:{port}");
    let r = raw(addr, "GET", "/api/v1/jobs", &[("Host", &local)], "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let r = raw(
        addr,
        "POST",
        "/jobs/nap/pause",
        &[
            ("Host", &me),
            ("Origin", &local_origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(daemon.pauses().pauses().await.unwrap().len(), 1);

    // Counted by reason, logged once per reason (not once per request).
    assert_eq!(refused(addr, "misdirected_host", None).await, 12.0);
    assert_eq!(refused(addr, "cross_origin", None).await, 4.0);
    let text = logs.text();
    let lines = log_lines_with(&text, "misdirected_host");
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        text.contains("attacker.example"),
        "the refused Host is logged"
    );
    assert_eq!(log_lines_with(&text, "cross_origin").len(), 1, "{text}");
    daemon.shutdown().await;
    server.stop().await;
}

/// Issue 16, weaknesses: every answer carries anti-framing, CSP, nosniff and referrer headers;
/// the CSP allows exactly the page's inline style and script.
#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let mut t = TestApp::new();
    t.write_job("nap", &sleep_job("Nap", "{every: 1h}", 20, ""));
    let (daemon, server) = start_with_admin(&mut t, true).await;
    let addr = server.addr;
    let me = addr.to_string();
    let bearer = format!("Bearer {READ}");
    for (path, hdrs, status) in [
        (
            "/",
            vec![("Host", me.as_str()), ("Authorization", bearer.as_str())],
            200,
        ),
        ("/api/v1/jobs", vec![("Host", me.as_str())], 401),
        ("/nope", vec![("Host", me.as_str())], 404),
        ("/livez", vec![("Host", "evil.example")], 421),
        ("/login", vec![("Host", me.as_str())], 200),
    ] {
        let r = raw(addr, "GET", path, &hdrs, "").await;
        assert_eq!(r.status, status, "{path}: {r:?}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("referrer-policy"), Some("same-origin"), "{path}");
        let csp = r.header("content-security-policy").unwrap_or("");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
    }
    daemon.shutdown().await;
    server.stop().await;
}

fn session_of(set_cookie: &str) -> &str {
    set_cookie
        .strip_prefix("soarjobd_session=")
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("not a session cookie: {set_cookie}"))
}

/// Issue 16, weaknesses: the login cookie is a random session id (never the token), HttpOnly,
/// SameSite=Strict, with an expiry; signing out ends it; `Secure` behind an HTTPS front; the
/// raw token in a cookie is no credential; login guesses are rate limited (429, Retry-After).
#[tokio::test]
async fn sessions_sign_out_and_login_rate_limit() {
    let (logs, _guard) = capture_logs();
    let mut t = TestApp::new();
    t.write_job("nap", &sleep_job("Nap", "{every: 1h}", 20, ""));
    let (daemon, server) = start_with_admin(&mut t, true).await;
    let addr = server.addr;
    let me = addr.to_string();
    let form = [
        ("Host", me.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let login = raw(addr, "POST", "/login", &form, &format!("token={OPERATOR}")).await;
    assert_eq!(login.status, 303, "{login:?}");
    let set = login.header("set-cookie").unwrap().to_string();
    let id = session_of(&set).to_string();
    assert_eq!(id.len(), 64, "{set}");
    assert!(!set.contains(OPERATOR), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{attr} missing: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP without a front: {set}");

    let cookie = format!("soarjobd_session={id}");
    let with_cookie = [("Host", me.as_str()), ("Cookie", cookie.as_str())];
    let page = raw(addr, "GET", "/", &with_cookie, "").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("id=\"sign-out\""));
    assert_eq!(
        raw(addr, "GET", "/api/v1/jobs", &with_cookie, "")
            .await
            .status,
        200
    );
    // The raw token in a cookie (what the page used to set) opens nothing.
    let old = format!("soarjobd_token={OPERATOR}");
    let r = raw(
        addr,
        "GET",
        "/api/v1/jobs",
        &[("Host", &me), ("Cookie", &old)],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");

    // Sign out: the session ends server-side, the cookie is cleared.
    let out = raw(addr, "POST", "/logout", &with_cookie, "").await;
    assert_eq!(out.status, 303, "{out:?}");
    assert_eq!(out.header("location"), Some("/login"));
    let cleared = out.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with("soarjobd_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(
        raw(addr, "GET", "/api/v1/jobs", &with_cookie, "")
            .await
            .status,
        401
    );
    let page = raw(addr, "GET", "/", &with_cookie, "").await;
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );

    // Guesses: a burst, then 429 with Retry-After, for the right token too (it is not checked).
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..20 {
        let r = raw(addr, "POST", "/login", &form, &format!("token=guess-{i}")).await;
        if r.status == 429 {
            retry_after = retry_after.or(r.header("retry-after").map(str::to_string));
        }
        statuses.push(r.status);
    }
    let guessed = statuses.iter().filter(|s| **s == 401).count();
    assert!((5..=10).contains(&guessed), "{statuses:?}");
    assert!(
        statuses[guessed..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let r = raw(addr, "POST", "/login", &form, &format!("token={OPERATOR}")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (429, "rate_limited"),
        "{r:?}"
    );
    // Bearer guesses from this client are limited too (the bucket is the client's).
    let r = raw(
        addr,
        "GET",
        "/api/v1/jobs",
        &[("Host", &me), ("Authorization", "Bearer nope")],
        "",
    )
    .await;
    assert_eq!(r.status, 429, "{r:?}");

    let text = logs.text();
    assert_eq!(log_lines_with(&text, "rate_limited").len(), 1, "{text}");
    assert_eq!(log_lines_with(&text, "unauthorized").len(), 1, "{text}");
    assert!(
        !text.contains(OPERATOR) && !text.contains(&id),
        "no credential in the logs"
    );
    daemon.shutdown().await;
    server.stop().await;

    // Behind an HTTPS front (`public_url`), the cookie is Secure and the front's name allowed.
    let mut t = TestApp::new();
    let (daemon, server) = start_with_admin_section(
        &mut t,
        json!({"listen": "127.0.0.1:0", "operator_token": OPERATOR,
               "public_url": "https://soarjobd.example.com/", "session_lifetime": "1h"}),
    )
    .await;
    let r = raw(
        server.addr,
        "POST",
        "/login",
        &[
            ("Host", "soarjobd.example.com"),
            ("Origin", "https://soarjobd.example.com"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &format!("token={OPERATOR}"),
    )
    .await;
    assert_eq!(r.status, 303, "{r:?}");
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.ends_with("; Secure") && set.contains("Max-Age=3600"),
        "{set}"
    );
    daemon.shutdown().await;
    server.stop().await;
}

/// Counted refusals by reason, read with the operator token from a server whose limiter has
/// not seen this client fail.
#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let mut t = TestApp::new();
    let (daemon, server) = start_with_admin(&mut t, true).await;
    let addr = server.addr;
    let me = addr.to_string();
    assert_eq!(
        raw(addr, "GET", "/api/v1/jobs", &[("Host", &me)], "")
            .await
            .status,
        401
    );
    let read = format!("Bearer {READ}");
    let r = raw(
        addr,
        "POST",
        "/api/v1/jobs/x/pause",
        &[("Host", &me), ("Authorization", &read)],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(refused(addr, "unauthorized", Some(OPERATOR)).await, 1.0);
    assert_eq!(refused(addr, "forbidden", Some(OPERATOR)).await, 1.0);
    assert_eq!(refused(addr, "rate_limited", Some(OPERATOR)).await, 0.0);
    daemon.shutdown().await;
    server.stop().await;
}

/// Issue 16, weaknesses: a connection that sends its request head a byte a second is closed by
/// the header read timeout (and counted), a kept-alive connection left idle is closed too, a
/// body that stops half-way is answered 408; the server serves others meanwhile.
#[tokio::test]
async fn trickling_and_idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut t = TestApp::new();
    let (daemon, server) = start_with_admin_section(
        &mut t,
        json!({"listen": "127.0.0.1:0", "header_read_timeout": "2s", "idle_timeout": "3s"}),
    )
    .await;
    let addr = server.addr;
    let me = addr.to_string();

    // The trickle: 60 bytes of head at one a second; the server closes well before the end.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET /livez HTTP/1.1\r\nHost: {me}\r\nX-Slow: ");
    let trickle = head
        .bytes()
        .chain(std::iter::repeat_n(b'a', 60 - head.len().min(60)));
    let mut sent = 0;
    let mut closed = false;
    for b in trickle.take(60) {
        if s.write_all(&[b]).await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            // hyper may answer 408 before closing.
            Ok(Ok(n)) => assert!(
                String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
                "{:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    assert!(
        closed && sent < 60,
        "the trickling connection stayed open ({sent} bytes sent)"
    );

    // Meanwhile and after, others are served.
    assert_eq!(
        raw(addr, "GET", "/livez", &[("Host", &me)], "")
            .await
            .status,
        200
    );

    // A kept-alive connection: one answer, then left idle: closed.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /livez HTTP/1.1\r\nHost: {me}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_answer(&mut s).await.unwrap().status, 200);
    let mut buf = [0u8; 64];
    let idle_end = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await;
    assert!(matches!(idle_end, Ok(Ok(0)) | Ok(Err(_))), "{idle_end:?}");

    // A body that stops half-way: 408, the connection closed.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("POST /api/v1/jobs/x/pause HTTP/1.1\r\nHost: {me}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"reason\":")
            .as_bytes(),
    )
    .await
    .unwrap();
    let r = read_answer(&mut s).await.expect("an answer");
    assert_eq!(
        (r.status, r.code().as_str()),
        (408, "body_timeout"),
        "{r:?}"
    );

    assert!(refused(addr, "header_timeout", None).await >= 2.0);
    assert_eq!(refused(addr, "body_timeout", None).await, 1.0);
    daemon.shutdown().await;
    server.stop().await;
}

/// Issue 16, weaknesses: beyond `admin.max_connections`, a connection is closed at once (and
/// counted); once one closes, new ones are served again.
#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    use tokio::io::AsyncWriteExt;
    let mut t = TestApp::new();
    let (daemon, server) = start_with_admin_section(
        &mut t,
        json!({"listen": "127.0.0.1:0", "max_connections": 2, "header_read_timeout": "5m"}),
    )
    .await;
    let addr = server.addr;
    let me = addr.to_string();
    let req = format!("GET /livez HTTP/1.1\r\nHost: {me}\r\n\r\n");
    // Two kept-alive connections, each answered once: both hold a slot.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(read_answer(&mut s).await.unwrap().status, 200);
        held.push(s);
    }
    // A third: accepted by the kernel, closed by the server without an answer.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(req.as_bytes()).await;
    assert!(read_answer(&mut s).await.is_none(), "served beyond the cap");
    // One slot freed: served again (once the server has seen the close).
    drop(held.pop());
    assert!(
        eventually(Duration::from_secs(20), || async {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(req.as_bytes()).await;
            read_answer(&mut s).await.is_some_and(|r| r.status == 200)
        })
        .await
    );
    drop(held);
    assert!(
        eventually(Duration::from_secs(20), || async {
            refused(addr, "too_many_connections", None).await >= 1.0
        })
        .await
    );
    daemon.shutdown().await;
    server.stop().await;
}

/// Issue 16, weaknesses: a client that sends requests but never reads the answers stalls the
/// connection (no byte moves either way once the buffers are full): the idle timeout closes
/// it, while the header read timeout (here 5 min) would not.
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_by_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let mut t = TestApp::new();
    let (daemon, server) = start_with_admin_section(
        &mut t,
        json!({"listen": "127.0.0.1:0", "header_read_timeout": "5m", "idle_timeout": "2s"}),
    )
    .await;
    let addr = server.addr;
    let me = addr.to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (_read_half, mut write_half) = stream.into_split();
    // 20,000 pipelined requests for the login page (about 2 KB of answer each): far more than
    // the sockets buffer. The writer blocks too once the server stops reading.
    let writer = tokio::spawn(async move {
        let req = format!("GET /login HTTP/1.1\r\nHost: {me}\r\n\r\n");
        for _ in 0..20_000 {
            if write_half.write_all(req.as_bytes()).await.is_err() {
                return;
            }
        }
        // Keep the connection's write side open: the answers are what stalls.
        std::future::pending::<()>().await;
    });
    assert!(
        eventually(Duration::from_secs(60), || async {
            refused(addr, "idle_timeout", None).await >= 1.0
        })
        .await,
        "the stalled connection was not closed"
    );
    assert_eq!(refused(addr, "header_timeout", None).await, 0.0);
    writer.abort();
    daemon.shutdown().await;
    server.stop().await;
}

/// What [`seed_thousand_jobs`] made.
pub struct Seeded {
    /// The jobs whose newest counted run failed, timed out or was interrupted, in the page's
    /// order (by name).
    pub failing: Vec<String>,
    /// The jobs of `integration: ThreatConnect`.
    pub threatconnect: std::collections::BTreeSet<String>,
    /// A job with 40 runs of every final status.
    pub rainbow: String,
}

/// 1,000 job files (`job-0000` .. `job-0999`, three integrations, every 100th disabled, a
/// schedule that does not fire during a test) and their history, written to the store before
/// the daemon starts: three runs each, a failure last for 40 of them, 40 runs of every final
/// status for `job-0003`.
pub async fn seed_thousand_jobs(t: &TestApp) -> Seeded {
    use soarjobd_core::store::{NewRun, RunFinish, RunStatus, Trigger};
    let mut threatconnect = std::collections::BTreeSet::new();
    let mut failing = Vec::new();
    let base = chrono::Utc::now() - chrono::TimeDelta::days(2);
    let mut claims = Vec::new();
    let mut ends = Vec::new();
    for i in 0..1000_i64 {
        let id = format!("job-{i:04}");
        let integration = ["ThreatConnect", "SecOps", "Tools"][(i % 3) as usize];
        if i % 3 == 0 {
            threatconnect.insert(id.clone());
        }
        let enabled = if i % 100 == 99 {
            "enabled: false\n"
        } else {
            ""
        };
        t.write_job(
            &id,
            &format!(
                "name: Job {i:04}\njob: sleep\nintegration: {integration}\n\
                 schedule: {{cron: '0 0 1 1 *'}}\n{enabled}"
            ),
        );
        use RunStatus::*;
        let statuses: Vec<RunStatus> = match i % 100 {
            _ if i == 3 => {
                let every = [
                    Partial,
                    Failed,
                    TimedOut,
                    Skipped,
                    Interrupted,
                    Cancelled,
                    Succeeded,
                ];
                (0..40).map(|k| every[(k + 2) % every.len()]).collect()
            }
            7 => vec![Succeeded, Succeeded, Failed],
            17 => vec![Succeeded, Partial, TimedOut],
            27 => vec![Succeeded, Succeeded, Interrupted],
            37 => vec![Failed, Failed, Succeeded],
            47 => vec![Succeeded, Failed, Cancelled],
            _ => vec![Succeeded, Succeeded, Succeeded],
        };
        if [7, 17, 27, 47].contains(&(i % 100)) {
            failing.push(id.clone());
        }
        for (k, status) in statuses.into_iter().enumerate() {
            let started = base + chrono::TimeDelta::seconds(i + 600 * k as i64);
            claims.push(NewRun {
                job_id: id.clone(),
                scheduled_at: started,
                trigger: Trigger::Manual,
                status: RunStatus::Running,
                started_at: started,
                message: None,
            });
            ends.push(RunFinish {
                status,
                finished_at: started
                    + chrono::TimeDelta::milliseconds(100 * (i % 7 + 1) + 37 * k as i64),
                message: Some(format!("{status}")),
                error: None,
                stats: json!({}),
            });
        }
    }
    let store = t.store().await;
    let ids = store.claim_runs(&claims).await.unwrap();
    for (id, end) in ids.into_iter().zip(&ends) {
        assert!(store.finish_run(id.unwrap(), end).await.unwrap());
    }
    store.close().await;
    Seeded {
        failing,
        threatconnect,
        rainbow: "job-0003".into(),
    }
}

/// The `data-job` ids of a jobs page's rows, in order.
fn page_rows(html: &str) -> Vec<String> {
    html.split("<tr data-job=\"")
        .skip(1)
        .map(|r| r.split('"').next().unwrap().to_string())
        .collect()
}

/// Issue 21: the jobs page's filters and paging are query parameters answered by the server
/// (no script needed): state, platform, text, page and page size, with the counts per state
/// over the jobs the other filters keep; bad values fall back to the defaults.
#[tokio::test]
async fn jobs_page_filters_and_pages_on_the_server() {
    let mut t = TestApp::new();
    let seeded = seed_thousand_jobs(&t).await;
    let (daemon, server) = start_with_admin(&mut t, true).await;
    let http = reqwest::Client::new();
    let get = |q: &'static str| {
        let req = http
            .get(format!("{}{q}", server.url()))
            .bearer_auth(READ)
            .send();
        async move {
            let r = req.await.unwrap();
            assert_eq!(r.status(), 200, "{q}");
            let timing = r.headers()["server-timing"].to_str().unwrap().to_string();
            assert!(timing.starts_with("page;dur="), "{timing}");
            r.text().await.unwrap()
        }
    };

    wait_ready(&server.url()).await;

    // Failing first, then the rest by name; 50 a page.
    let page = get("").await;
    let rows = page_rows(&page);
    assert_eq!(rows.len(), 50, "{page}");
    assert_eq!(rows[..40], seeded.failing[..]);
    assert_eq!(rows[40], "job-0000");
    assert!(page.contains("1–50 of 1000 jobs"), "{page}");
    assert!(page.contains("id=\"count-failing\" class=\"b-failing\">failing <b>40</b>"));
    assert!(page.contains("id=\"count-disabled\" class=\"b-disabled\">disabled <b>10</b>"));
    assert!(page.contains("href=\"/?page=2\" rel=\"next\""), "{page}");

    // A later page of another size: the order goes on; the links keep the size.
    let page = get("?per=100&page=3").await;
    let rows = page_rows(&page);
    assert_eq!(rows.len(), 100);
    // 40 failing, then the others by name: 95 a hundred (4 failing, 1 disabled).
    assert_eq!(rows[0], "job-0169", "{rows:?}");
    assert!(page.contains("201–300 of 1000 jobs"));
    assert!(page.contains("href=\"/?page=4&amp;per=100\" rel=\"next\""));
    assert!(page.contains("href=\"/?page=2&amp;per=100\" rel=\"prev\""));
    // Past the end: the last page; nonsense: the defaults.
    let page = get("?page=999").await;
    assert!(page.contains("951–1000 of 1000 jobs"), "{page}");
    assert!(page.contains("page 20 of 20"), "{page}");
    // Disabled jobs come last.
    assert_eq!(
        page_rows(&page)[40..],
        (0..10).map(|h| format!("job-0{h}99")).collect::<Vec<_>>()[..]
    );
    assert_eq!(
        page_rows(&get("?page=abc&per=-1&state=nope").await).len(),
        50
    );

    // State, platform and text together; the counts follow platform and text.
    let page = get("?state=failing&platform=threatconnect&q=job-01").await;
    let want: Vec<&String> = seeded
        .failing
        .iter()
        .filter(|id| seeded.threatconnect.contains(*id) && id.starts_with("job-01"))
        .collect();
    assert_eq!(page_rows(&page).iter().collect::<Vec<_>>(), want);
    assert!(page.contains(&format!(
        "all <b>{}</b>",
        (100..200).filter(|i| i % 3 == 0).count()
    )));
    assert!(page.contains("<option value=\"ThreatConnect\" selected>"));
    assert!(page.contains("value=\"job-01\""));
    assert!(page.contains("<option value=\"failing\" selected>"));
    // The text matches names too, case-insensitively; a disabled job is found as such.
    let page = get("?q=JOB%200199").await;
    assert_eq!(page_rows(&page), ["job-0199"]);
    assert!(page.contains("data-state=\"disabled\""));
    // Nothing found is an empty table, not an error.
    let page = get("?q=%3Cscript%3E").await;
    assert!(page_rows(&page).is_empty());
    assert!(page.contains("value=\"&lt;script&gt;\""));
    assert!(!page.contains("<script>alert"));

    daemon.shutdown().await;
    server.stop().await;
}

/// One server-sent event: its name, id and data.
#[derive(Debug)]
struct Sse {
    event: String,
    id: Option<i64>,
    data: Value,
}

/// Reads a whole event stream (until the server ends it).
async fn read_events(resp: reqwest::Response) -> Vec<Sse> {
    let text = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the stream ends once the run has ended")
        .unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            let mut ev = Sse {
                event: "message".into(),
                id: None,
                data: Value::Null,
            };
            let mut any = false;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    ev.event = v.into();
                    any = true;
                } else if let Some(v) = line.strip_prefix("id: ") {
                    ev.id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    ev.data = serde_json::from_str(v).unwrap();
                }
            }
            any.then_some(ev)
        })
        .collect()
}

/// Issue 21: `/runs/{id}/events` streams a running run's stored log lines as they are written,
/// each once and in order, then `end` with the final status; a reconnect with `Last-Event-ID`
/// goes on after that line; a caller without a session or token is sent to sign in.
#[tokio::test]
async fn run_events_stream_the_log_live_once_each_then_end() {
    let (_logs, _guard) = capture_logs();
    let mut t = TestApp::new();
    let script = t.path("chatter.sh");
    std::fs::write(
        &script,
        "for i in 1 2 3 4 5 6; do echo \"line $i\"; sleep 0.3; done\n",
    )
    .unwrap();
    t.write_job(
        "chatter",
        &format!(
            "name: Chatter\njob: exec\nschedule: {{cron: '0 0 1 1 *'}}\ncommand: [/bin/sh, {}]\n",
            script.display()
        ),
    );
    let (daemon, server) = start_with_admin(&mut t, true).await;
    wait_ready(&server.url()).await;
    let api = Api {
        http: reqwest::Client::new(),
        base: server.url(),
    };
    let (status, body) = api
        .post("/api/v1/jobs/chatter/run", Some(OPERATOR), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["run_id"].as_i64().unwrap();
    let url = format!("{}runs/{run_id}/events", api.base);

    // Opened while the run goes on: it ends by itself after the run.
    let resp = api.http.get(&url).bearer_auth(READ).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = read_events(resp).await;
    let (end, lines) = events.split_last().expect("events");
    assert_eq!(end.event, "end", "{events:?}");
    assert_eq!(end.data["status"], "succeeded");
    let seqs: Vec<i64> = lines.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "every line once, in order"
    );
    for (e, seq) in lines.iter().zip(&seqs) {
        assert_eq!(e.event, "line");
        assert_eq!(e.data["seq"], *seq);
    }
    let texts: Vec<&str> = lines
        .iter()
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    for i in 1..=6 {
        let n = texts
            .iter()
            .filter(|t| t.contains(&format!("line=line {i} stream=stdout")))
            .count();
        assert_eq!(n, 1, "line {i}: {texts:?}");
    }
    // The stream's lines are the API's.
    let (_, logs) = api
        .get(&format!("/api/v1/runs/{run_id}/logs"), Some(READ))
        .await;
    assert_eq!(logs["lines"].as_array().unwrap().len(), lines.len());

    // A reconnect after line 3 (the browser sends Last-Event-ID): the rest, then end.
    let resp = api
        .http
        .get(&url)
        .bearer_auth(READ)
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    let again = read_events(resp).await;
    let ids: Vec<i64> = again.iter().filter_map(|e| e.id).collect();
    assert_eq!(ids, seqs[3..], "{again:?}");
    assert_eq!(again.last().unwrap().event, "end");
    // `after` does the same for the page's first connection.
    let resp = api
        .http
        .get(format!("{url}?after={}", seqs.len()))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    let rest = read_events(resp).await;
    assert_eq!(rest.len(), 1, "{rest:?}");

    // No credential: sent to sign in; no such run: 404.
    let anon = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = anon.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let r = api
        .http
        .get(format!("{}runs/999999/events", api.base))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    daemon.shutdown().await;
    server.stop().await;
}

/// Waits until the server's `/readyz` says the jobs are loaded and the scheduler runs.
pub async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(30), || {
        let req = http.get(format!("{base}readyz")).send();
        async move { req.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(ready, "the jobs were loaded");
}

/// Issue 21: the job page shows the definition as loaded with its secrets masked (a password
/// parameter, the `env` values), where it came from, the next 5 fires in the job's zone and in
/// UTC, the pause in force and the last one, the alert episodes open and past, a duration
/// chart of the last runs, and the runs paged 50 at a time.
#[tokio::test]
async fn job_page_shows_the_definition_masked_fires_pauses_episodes_and_pages_runs() {
    use soarjobd_core::store::ops::AlertRule;
    use soarjobd_core::store::{NewRun, RunFinish, RunStatus, Trigger};
    let mut t = TestApp::new();
    t.write_job(
        "leaky",
        "name: Leaky\njob: exec\nintegration: ThreatConnect\n\
         schedule: {cron: '30 2 * * *', timezone: Europe/Berlin}\n\
         env: {APP_TOKEN: env-secret-abc}\n\
         parameters:\n  - {name: Api Key, type: password, value: hunter2-pw-xyz}\n\
         \x20 - {name: Region, type: string, value: eu-west}\n\
         command: [/bin/true]\n",
    );
    // 120 failed runs, and two episodes of this job (one resolved) and one of another.
    let store = t.store().await;
    let base = chrono::Utc::now() - chrono::TimeDelta::days(1);
    let claims: Vec<NewRun> = (0..120)
        .map(|k| NewRun {
            job_id: "leaky".into(),
            scheduled_at: base + chrono::TimeDelta::seconds(k * 60),
            trigger: Trigger::Manual,
            status: RunStatus::Running,
            started_at: base + chrono::TimeDelta::seconds(k * 60),
            message: None,
        })
        .collect();
    let ids: Vec<i64> = store
        .claim_runs(&claims)
        .await
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    for (id, c) in ids.iter().zip(&claims) {
        let end = RunFinish {
            status: RunStatus::Failed,
            finished_at: c.started_at + chrono::TimeDelta::milliseconds(300),
            message: Some("boom".into()),
            error: None,
            stats: json!({}),
        };
        assert!(store.finish_run(*id, &end).await.unwrap());
    }
    store
        .open_alert(AlertRule::NoSuccessFor, "leaky", "quiet for a day", base)
        .await
        .unwrap()
        .unwrap();
    store
        .resolve_alert(
            AlertRule::NoSuccessFor,
            "leaky",
            base + chrono::TimeDelta::hours(1),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .open_alert(
            AlertRule::FailedRunsInARow,
            "leaky",
            "120 runs failed in a row",
            base,
        )
        .await
        .unwrap()
        .unwrap();
    store
        .open_alert(AlertRule::FailedRunsInARow, "other", "not this job", base)
        .await
        .unwrap()
        .unwrap();
    store.close().await;

    let (daemon, server) = start_with_admin(&mut t, true).await;
    wait_ready(&server.url()).await;
    let api = Api {
        http: reqwest::Client::new(),
        base: server.url(),
    };
    let page = |q: &'static str| {
        let req = api
            .http
            .get(format!("{}jobs/leaky{q}", api.base))
            .bearer_auth(READ)
            .send();
        async move {
            let r = req.await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let html = page("").await;
    for secret in ["hunter2-pw-xyz", "env-secret-abc"] {
        assert!(!html.contains(secret), "{secret} is on the page");
    }
    assert!(
        html.contains("<th scope=\"row\">Api Key</th><td>password</td><td><code>********</code>")
    );
    assert!(html.contains("<code>eu-west</code>"), "{html}");
    assert!(
        html.contains("&quot;APP_TOKEN&quot;: &quot;********&quot;"),
        "{html}"
    );
    assert!(html.contains("leaky.yaml</code>"));
    // The next 5 fires: 02:30 in Berlin, 01:30 UTC in winter (the test runs in December or
    // not: either offset, but both columns, 5 rows).
    let fires = html.split("id=\"fires\"").nth(1).unwrap();
    let fires = fires.split("</table>").next().unwrap();
    assert_eq!(fires.matches("<tr><td>").count(), 5, "{fires}");
    assert_eq!(fires.matches(" 02:30:00 CE").count(), 5, "{fires}");
    assert!(fires.contains("Europe/Berlin"));
    // Episodes: this job's two, the open one first.
    let episodes = html.split("id=\"episodes\"").nth(1).unwrap();
    let episodes = episodes.split("</table>").next().unwrap();
    assert_eq!(episodes.matches("data-episode=").count(), 2, "{episodes}");
    assert!(
        episodes.find("failed_runs_in_a_row").unwrap() < episodes.find("no_success_for").unwrap()
    );
    assert!(episodes.contains(">open</b>"));
    assert!(!episodes.contains("not this job"));
    // The chart draws every run (fewer than 200); the strip the last 30; the state is failing.
    let chart = html
        .split("id=\"chart\"")
        .nth(1)
        .unwrap()
        .split("</svg>")
        .next()
        .unwrap();
    assert_eq!(chart.matches("class=\"m-failed\"").count(), 120);
    assert!(html.contains("<span class=\"badge b-failing\">failing</span>"));
    // Runs: 50 a page, newest first, then older pages by id.
    let rows = |h: &str| -> Vec<i64> {
        h.split("<tr data-run=\"")
            .skip(1)
            .map(|r| r.split('"').next().unwrap().parse().unwrap())
            .collect()
    };
    let first = rows(&html);
    let newest: Vec<i64> = ids.iter().rev().copied().collect();
    assert_eq!(first, newest[..50]);
    assert!(html.contains(&format!(
        "href=\"/jobs/leaky?before={}\" rel=\"next\"",
        newest[49]
    )));
    let resp = api
        .http
        .get(format!("{}jobs/leaky?before={}", api.base, newest[99]))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    let last = resp.text().await.unwrap();
    assert_eq!(rows(&last), newest[100..]);
    assert!(
        !last.contains("rel=\"next\""),
        "the last page has no older link"
    );
    assert!(last.contains("id=\"newest\""));

    // Pauses: the history of ended ones, newest first, and the one in force.
    assert!(html.contains("Never paused."));
    for window in ["first window", "second window"] {
        let (status, _) = api
            .post(
                "/api/v1/jobs/leaky/pause",
                Some(OPERATOR),
                Some(json!({"reason": window})),
            )
            .await;
        assert_eq!(status, 200);
        let (status, _) = api
            .post("/api/v1/jobs/leaky/resume", Some(OPERATOR), None)
            .await;
        assert_eq!(status, 200);
    }
    let html = page("").await;
    let history = html
        .split("id=\"pause-history\"")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    let second = history
        .find("second window")
        .expect("the second pause is listed");
    let first = history
        .find("first window")
        .expect("the first pause is listed");
    assert!(second < first, "newest first: {history}");
    assert_eq!(history.matches("admin:operator").count(), 4, "{history}");
    assert!(!html.contains("id=\"pause\""));
    let (status, _) = api
        .post(
            "/api/v1/jobs/leaky/pause",
            Some(OPERATOR),
            Some(json!({"reason": "third window"})),
        )
        .await;
    assert_eq!(status, 200);
    let html = page("").await;
    let pause = html
        .split("id=\"pause\"")
        .nth(1)
        .unwrap()
        .split("</p>")
        .next()
        .unwrap();
    assert!(
        pause.contains("third window") && pause.contains("admin:operator"),
        "{pause}"
    );
    assert!(html.contains("None: the job is paused."));
    assert!(html.contains("id=\"pause-history\""), "the history stays");

    daemon.shutdown().await;
    server.stop().await;
}

/// Every metric name in a PromQL text (`soarjobd_...`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("soarjobd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every query text of a Grafana dashboard (`expr`, and template variables' queries).
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// Issue 21: every metric `deploy/grafana/soarjobd.json` queries is one a daemon's `/metrics`
/// exports (a family of that name, or one of its series: a counter's `_total`, a histogram's
/// `_bucket`/`_sum`/`_count`), and the dashboard covers what an on-call analyst watches.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let mut t = TestApp::new();
    t.write_job("nap", &sleep_job("Nap", "{every: 1h}", 20, ""));
    let (daemon, server) = start_with_admin(&mut t, true).await;
    wait_ready(&server.url()).await;
    // A family shows once it has a series: one run, and one platform request through the
    // hook the platform clients report to.
    let api = Api {
        http: reqwest::Client::new(),
        base: server.url(),
    };
    let (status, body) = api.post("/api/v1/jobs/nap/run", Some(OPERATOR), None).await;
    assert_eq!(status, 202, "{body}");
    let run = body["run_id"].as_i64().unwrap();
    let done = eventually(Duration::from_secs(20), || {
        let api = &api;
        async move {
            let (_, r) = api.get(&format!("/api/v1/runs/{run}"), Some(READ)).await;
            r["status"] == "succeeded"
        }
    })
    .await;
    assert!(done);
    soarjobd_core::platform_request("soar", "GET", Some(429), Duration::from_millis(12));
    let text = reqwest::Client::new()
        .get(format!("{}metrics", server.url()))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // `# TYPE <family> <type>` for every family.
    let families: std::collections::BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some((p.next()?.to_string(), p.next()?.to_string()))
        })
        .collect();
    assert!(families.len() > 10, "{text}");
    let exported = |name: &str| {
        families.iter().any(|(f, ty)| {
            let series: &[&str] = match ty.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[],
            };
            name == f || series.iter().any(|s| name == format!("{f}{s}"))
        })
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/soarjobd.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut texts = Vec::new();
    queries(&dashboard, &mut texts);
    let used: std::collections::BTreeSet<String> =
        texts.iter().flat_map(|q| metric_names(q)).collect();
    let missing: Vec<&String> = used.iter().filter(|m| !exported(m)).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}; /metrics has {families:?}"
    );
    for needed in [
        "soarjobd_runs_total",
        "soarjobd_job_consecutive_failures",
        "soarjobd_job_last_success_timestamp_seconds",
        "soarjobd_schedule_lateness_seconds_bucket",
        "soarjobd_platform_requests_total",
        "soarjobd_build_info",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not query {needed}"
        );
    }
    daemon.shutdown().await;
    server.stop().await;
}
