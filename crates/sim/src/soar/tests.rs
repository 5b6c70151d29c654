//! The simulator on its own, driven with raw HTTP (not the crate's client, which is tested
//! against the simulator in `soarjobd_clients::soar`).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::generate::WINDOW_MS;
use super::*;
use crate::faults::Fault;

const KEY: &str = "test-key";
const BASE: i64 = 1_719_592_000_000;

fn cfg(cases: usize) -> SoarSimConfig {
    SoarSimConfig {
        cases,
        seed: 42,
        app_key: KEY.into(),
        base_time_ms: Some(BASE),
        ..SoarSimConfig::default()
    }
}

async fn sim(c: SoarSimConfig) -> SimHandle {
    start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// A filter body with all 13 keys; `over` replaces some.
fn filter(over: Value) -> Value {
    let mut f = json!({
        "start_time_from_unix_time_in_ms": BASE - WINDOW_MS - 1,
        "start_time_to_unix_time_in_ms": BASE,
        "close_time_from_unix_time_in_ms": null, "close_time_to_unix_time_in_ms": null,
        "update_time_from_unix_time_in_ms": null, "update_time_to_unix_time_in_ms": null,
        "status": "BOTH", "operator": null, "sort_by": "START_TIME", "sort_order": "DESC",
        "max_results": 10000, "environments": null, "tags": null
    });
    for (k, v) in over.as_object().unwrap() {
        f[k] = v.clone();
    }
    f
}

async fn search(h: &SimHandle, body: &Value) -> (StatusCode, Value) {
    let r = http()
        .post(format!(
            "{}/api/external/v1/sdk/GetCasesIdByFilter?format=snake",
            h.url()
        ))
        .header("AppKey", KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn debug_output_hides_the_key() {
    let c = SoarSimConfig {
        app_key: "sim-secret-123".into(),
        ..cfg(1)
    };
    assert!(!format!("{c:?}").contains("sim-secret-123"));
    assert!(!format!("{:?}", SimState::new(&c)).contains("sim-secret-123"));
}

#[test]
fn generation_is_deterministic_and_varied() {
    let a = SimState::new(&cfg(300)).cases();
    let b = SimState::new(&cfg(300)).cases();
    assert_eq!(a, b);
    let other = SimState::new(&SoarSimConfig {
        seed: 43,
        ..cfg(300)
    })
    .cases();
    assert_ne!(a, other);
    // A longer run keeps the first cases unchanged.
    assert_eq!(SimState::new(&cfg(400)).cases()[..300], a[..]);

    assert!(a.iter().any(|c| c.alert_identifiers.is_empty()));
    assert!(a.iter().any(|c| c.status == "OPEN") && a.iter().any(|c| c.status == "CLOSE"));
    for env in ENVIRONMENTS {
        assert!(a.iter().any(|c| c.environment == *env), "{env}");
    }
    for tag in ["Phishing", "Malware", "Currency"] {
        assert!(a.iter().any(|c| c.tags.iter().any(|t| t == tag)), "{tag}");
    }
    for c in &a {
        assert!(c.creation_time > BASE - WINDOW_MS && c.creation_time <= BASE);
        assert!(c.modification_time >= c.creation_time && c.modification_time <= BASE);
        assert_eq!(c.ticket_ids.len(), c.alert_identifiers.len());
    }
}

#[tokio::test]
async fn filter_matches_status_tags_environments_and_times() {
    let h = sim(cfg(500)).await;
    let cases = h.state().cases();
    let since = BASE - 12 * 3600 * 1000;
    let body = filter(json!({
        "status": "OPEN", "tags": ["Phishing", "Currency"],
        "environments": ["Prod", "Default Environment"],
        "start_time_from_unix_time_in_ms": since,
        "update_time_from_unix_time_in_ms": since, "operator": "OR",
        "sort_by": "UPDATE_TIME", "sort_order": "ASC"
    }));
    let (status, v) = search(&h, &body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut want: Vec<&CaseSummary> = cases
        .iter()
        .filter(|c| c.status == "OPEN")
        .filter(|c| c.tags.iter().any(|t| t == "Phishing" || t == "Currency"))
        .filter(|c| c.environment != "Lab")
        .filter(|c| c.creation_time >= since || c.modification_time >= since)
        .collect();
    want.sort_by_key(|c| (c.modification_time, c.id));
    let want: Vec<u64> = want.iter().map(|c| c.id).collect();
    assert!(!want.is_empty());
    assert_eq!(ids(&v), want);

    // AND narrows to cases that both started and were updated since.
    let (_, v) = search(
        &h,
        &filter(json!({
            "status": "OPEN", "start_time_from_unix_time_in_ms": since,
            "update_time_from_unix_time_in_ms": since + 3_600_000, "operator": "AND"
        })),
    )
    .await;
    let want: Vec<u64> = {
        let mut w: Vec<&CaseSummary> = cases
            .iter()
            .filter(|c| c.status == "OPEN" && c.creation_time >= since)
            .filter(|c| c.modification_time >= since + 3_600_000)
            .collect();
        w.sort_by_key(|c| std::cmp::Reverse((c.creation_time, c.id)));
        w.iter().map(|c| c.id).collect()
    };
    assert_eq!(ids(&v), want);

    // max_results truncates after sorting.
    let (_, v) = search(&h, &filter(json!({"max_results": 3, "sort_order": "ASC"}))).await;
    let mut all: Vec<&CaseSummary> = cases.iter().collect();
    all.sort_by_key(|c| (c.creation_time, c.id));
    assert_eq!(
        ids(&v),
        all.iter().take(3).map(|c| c.id).collect::<Vec<_>>()
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn filter_body_is_checked_strictly() {
    let h = sim(cfg(5)).await;
    let mut body = filter(json!({}));
    body.as_object_mut().unwrap().remove("tags");
    let (status, v) = search(&h, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v.as_str().unwrap().contains("missing key tags"));
    let (status, _) = search(&h, &filter(json!({"status": "open"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = search(&h, &filter(json!({"max_results": 0}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Without ?format=snake.
    let r = http()
        .post(format!(
            "{}/api/external/v1/sdk/GetCasesIdByFilter",
            h.url()
        ))
        .header("AppKey", KEY)
        .json(&filter(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(h.state().stats().bad_requests, 4);
}

#[tokio::test]
async fn wrong_or_missing_app_key_is_401() {
    let h = sim(cfg(5)).await;
    let url = format!(
        "{}/api/external/v1/sdk/AlertsTicketIdsByCaseId/1?format=snake",
        h.url()
    );
    let r = http()
        .get(&url)
        .header("AppKey", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http().get(&url).header("AppKey", KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h.state().stats().unauthorized, 2);
}

#[tokio::test]
async fn comment_lands_and_touches_the_case() {
    let h = sim(cfg(5)).await;
    let before = h.state().cases()[1].modification_time;
    let url = format!("{}/api/external/v1/cases/comments?format=snake", h.url());
    let r = http()
        .post(&url)
        .header("AppKey", KEY)
        .json(&json!({"case_id": 2, "alert_identifier": null, "comment": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let c = h.state().comments(Some(2));
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].comment, "hello");
    let after = h.state().cases()[1].modification_time;
    assert!(after > before && after >= BASE);

    // An extra key is refused (the SDK sends exactly three).
    let r = http()
        .post(&url)
        .header("AppKey", KEY)
        .json(&json!({"case_id": 2, "alert_identifier": null, "comment": "x", "extra": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Fetch, with the time filter.
    let list: Value = http()
        .get(format!(
            "{url}&caseId=2&spec.timeFilterType=1&spec.fromTimestamp={}",
            after + 1
        ))
        .header("AppKey", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!([]));
    let list: Value = http()
        .get(format!("{url}&caseId=2"))
        .header("AppKey", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["comment"], "hello");
    assert_eq!(list[0]["case_id"], 2);

    // Inspection route.
    let v: Value = http()
        .get(format!("{}/_sim/comments?case_id=2", h.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn faulted_writes_are_all_or_nothing() {
    let h = sim(SoarSimConfig {
        fault_rate: 1.0,
        slow_ms: 1,
        ..cfg(3)
    })
    .await;
    let url = format!("{}/api/external/v1/cases/comments?format=snake", h.url());
    let mut ok = 0;
    for i in 0..60 {
        let r = http()
            .post(&url)
            .header("AppKey", KEY)
            .json(&json!({"case_id": 1, "alert_identifier": null, "comment": format!("c{i}")}))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            ok += 1;
        }
    }
    let s = h.state().stats();
    assert_eq!(s.faults_500 + s.faults_429 + s.faults_slow, 60);
    assert!(
        s.faults_500 > 0 && s.faults_429 > 0 && s.faults_slow > 0,
        "{s:?}"
    );
    assert!(
        s.faults_500_applied > 0 && s.faults_500_applied < s.faults_500,
        "{s:?}"
    );
    // Every stored comment is either a slow success or an applied 500; nothing else.
    assert_eq!(ok, s.faults_slow);
    assert_eq!(
        h.state().comments(Some(1)).len() as u64,
        s.faults_slow + s.faults_500_applied
    );
}

#[tokio::test]
async fn slow_write_lands_after_the_client_gave_up() {
    let h = sim(SoarSimConfig {
        fault_rate: 1.0,
        // Find a fault seed whose first fault is "slow".
        fault_seed: (0..1000)
            .find(|s| {
                let st = SimState::new(&SoarSimConfig {
                    fault_rate: 1.0,
                    fault_seed: *s,
                    ..cfg(1)
                });
                matches!(st.roll_fault(), Some(Fault::Slow))
            })
            .unwrap(),
        slow_ms: 300,
        ..cfg(2)
    })
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let r = client
        .post(format!(
            "{}/api/external/v1/cases/comments?format=snake",
            h.url()
        ))
        .header("AppKey", KEY)
        .json(&json!({"case_id": 1, "alert_identifier": null, "comment": "late"}))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    assert!(h.state().comments(Some(1)).is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.state().comments(Some(1)).len(), 1);
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let h = sim(SoarSimConfig {
        rate_limit: Some(2),
        ..cfg(2)
    })
    .await;
    let url = format!(
        "{}/api/external/v1/sdk/AlertsTicketIdsByCaseId/1?format=snake",
        h.url()
    );
    let mut limited = 0;
    for _ in 0..6 {
        let r = http().get(&url).header("AppKey", KEY).send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().get("retry-after").is_some());
            limited += 1;
        }
    }
    assert!(limited >= 3, "{limited}");
    assert_eq!(h.state().stats().rate_limited, limited);
}

#[tokio::test]
async fn one_platform_routes_need_a_bearer_token() {
    let h = sim(cfg(3)).await;
    let base = format!(
        "{}/v1alpha/projects/p/locations/l/instances/i/legacySdk:legacy",
        h.url()
    );
    let url = format!("{base}CaseFullDetails?caseId=1&populateOriginalFile=False&format=snake");
    let r = http().get(&url).header("AppKey", KEY).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = http()
        .get(&url)
        .header("AppKey", KEY)
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["identifier"], "1");
    let r = http()
        .get(format!(
            "{base}GetCaseComments/1?fetchUpdates=False&format=snake"
        ))
        .header("AppKey", KEY)
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h.state().stats().requests["GetCaseComments"], 1);
}

#[tokio::test]
async fn overrides_and_case_upserts() {
    let h = sim(cfg(3)).await;
    h.state().add_override(Override {
        endpoint: "AlertsTicketIdsByCaseId".into(),
        status: 200,
        body: "[{\"oops\":1}]".into(),
        times: Some(1),
    });
    let url = format!(
        "{}/api/external/v1/sdk/AlertsTicketIdsByCaseId/1?format=snake",
        h.url()
    );
    let t1 = http().get(&url).header("AppKey", KEY).send().await.unwrap();
    assert_eq!(t1.text().await.unwrap(), "[{\"oops\":1}]");
    let t2: Value = http()
        .get(&url)
        .header("AppKey", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(t2.is_array() && t2.as_array().unwrap().iter().all(Value::is_string));

    let s: CaseSummary = {
        let v: Value = http()
            .post(format!("{}/_sim/cases", h.url()))
            .json(&json!({"id": 77, "status": "OPEN", "tags": ["Currency"], "alerts": 0}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["id"], 77);
        h.state().cases().into_iter().find(|c| c.id == 77).unwrap()
    };
    assert_eq!(s.tags, vec!["Currency".to_string()]);
    assert!(s.alert_identifiers.is_empty());
    let v: Value = http()
        .get(format!("{}/_sim/stats", h.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["overrides_served"], 1);
}
