//! The admin server over real HTTP on loopback: probes, token auth (401/403), the JSON API
//! (manual run through the scheduler, cancel, 404s with stable codes), audit events, the body
//! limit, cross-origin refusal, a metrics scrape parsed by a Prometheus text-format parser, and
//! `/readyz` during shutdown.

use std::time::Duration;

use serde_json::{Value, json};
use soarjobd::admin::{Admin, RunningAdmin};
use soarjobd::daemon::RunningDaemon;

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
    soarjobd::observe::platform_request(
        "test-platform",
        "GET",
        Some(429),
        Duration::from_millis(5),
    );

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
