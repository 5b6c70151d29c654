//! The simulator on its own, driven with raw HTTP and its own signing (not the crate's
//! client, which is tested against the simulator in `soarjobd_clients::threatconnect`).

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::*;

const ID: &str = "12345678901234567890";
const SECRET: &str = "tc-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz";

fn cfg() -> TcSimConfig {
    TcSimConfig {
        access_id: ID.into(),
        secret_key: SECRET.into(),
        tokens: vec!["APIV2:1:tok".into()],
        max_indicators_per_job: 3,
        max_upload_bytes: 4_000,
        behaviour: Behaviour {
            processing_delay_ms: 40,
            ..Behaviour::default()
        },
        ..TcSimConfig::default()
    }
}

async fn sim(c: TcSimConfig) -> TcSimHandle {
    start(c, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn signature(target: &str, method: &str, ts: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{target}:{method}:{ts}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Sends `method target` signed over `signed_target` at `ts`.
async fn call_as(
    h: &TcSimHandle,
    method: &str,
    target: &str,
    signed_target: &str,
    ts: i64,
    body: Option<Vec<u8>>,
) -> (StatusCode, Vec<u8>, HeaderMap) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new()
        .request(m, format!("{}{target}", h.url()))
        .header(
            "Authorization",
            format!("TC {ID}:{}", signature(signed_target, method, ts)),
        )
        .header("Timestamp", ts.to_string());
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req.send().await.unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let headers = r.headers().clone();
    (status, r.bytes().await.unwrap().to_vec(), headers)
}

async fn call(
    h: &TcSimHandle,
    method: &str,
    target: &str,
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let now = chrono::Utc::now().timestamp();
    let (s, b, _) = call_as(h, method, target, target, now, body).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn inspect(h: &TcSimHandle, path: &str) -> Value {
    reqwest::get(format!("{}{path}", h.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Creates a job, uploads `file`, and waits for `Completed`; returns the job id and status.
async fn run_job(h: &TcSimHandle, owner: &str, file: Value) -> (u64, Value) {
    let settings = json!({"version": "V2", "owner": owner, "haltOnError": "false",
                          "action": "Create", "attributeWriteType": "Replace"});
    let (s, v) = call(
        h,
        "POST",
        "/api/v2/batch",
        Some(settings.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["data"]["batchId"].as_u64().unwrap();
    let (s, v) = call(
        h,
        "POST",
        &format!("/api/v2/batch/{id}"),
        Some(file.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "Queued");
    for _ in 0..200 {
        let (_, v) = call(
            h,
            "GET",
            &format!("/api/v2/batch/{id}?includeAdditional=true"),
            None,
        )
        .await;
        if v["data"]["batchStatus"]["status"] == "Completed" {
            return (id, v["data"]["batchStatus"].clone());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {id} never completed");
}

#[tokio::test]
async fn debug_output_hides_secrets() {
    let c = cfg();
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains(SECRET) && !dbg.contains("APIV2:1:tok"),
        "{dbg}"
    );
    // The running handle too (its state holds the credentials it checks against).
    let h = sim(c).await;
    let dbg = format!("{h:?}");
    assert!(dbg.contains("SimState"), "{dbg}");
    assert!(
        !dbg.contains(SECRET) && !dbg.contains("APIV2:1:tok"),
        "{dbg}"
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn hmac_is_checked_over_the_target_as_received() {
    let h = sim(cfg()).await;
    let now = chrono::Utc::now().timestamp();
    let (s, _, _) = call_as(&h, "GET", "/api/v2/owners", "/api/v2/owners", now, None).await;
    assert_eq!(s, StatusCode::OK);
    // `+` and `%20` are different request-targets: signing one and sending the other fails.
    let plus = "/api/v2/groups/incidents?owner=Common+Community";
    let pct = "/api/v2/groups/incidents?owner=Common%20Community";
    assert_eq!(
        call_as(&h, "GET", plus, plus, now, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call_as(&h, "GET", pct, pct, now, None).await.0,
        StatusCode::OK
    );
    let (s, body, _) = call_as(&h, "GET", plus, pct, now, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("Access Denied"));
    // The method is signed too.
    assert_eq!(
        call_as(&h, "POST", "/api/v2/owners", "/api/v2/owners", now, None)
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let (s, body, _) = call_as(
        &h,
        "GET",
        "/api/v2/owners",
        "/api/v2/owners",
        now - 301,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("Timestamp out of acceptable time range"));
    assert_eq!(
        call_as(
            &h,
            "GET",
            "/api/v2/owners",
            "/api/v2/owners",
            now - 290,
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    // Tokens.
    for (token, want) in [("APIV2:1:tok", 200), ("APIV2:1:nope", 401)] {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v2/owners", h.url()))
            .header("Authorization", format!("TC-Token {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want);
    }
    let stats = inspect(&h, "/_sim/stats").await;
    assert_eq!(stats["authFailures"], 3);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn batch_jobs_process_asynchronously_with_per_item_errors() {
    let h = sim(cfg()).await;
    let file = json!({
        "indicator": [
            {"summary": "10.0.0.1", "type": "Address", "rating": 3, "tag": [{"name": "a"}],
             "associatedGroups": [{"groupXid": "x-1"}, {"groupXid": "missing"}]},
            {"summary": "http://Evil.example/", "type": "URL"},
        ],
        "group": [
            {"name": "Case 1", "type": "Incident", "xid": "x-1", "status": "Open"},
            {"name": "Case 2", "type": "Incident", "xid": "x-2", "status": "Sleeping"},
        ],
        "association": [{"ref_1": "10.0.0.1", "type_1": "Address", "ref_2": "x-2"}],
    });
    // Errors are not readable while the job runs.
    let settings = json!({"version": "V2", "owner": "Org", "haltOnError": false,
                          "action": "Create", "attributeWriteType": "Replace"});
    let (_, v) = call(
        &h,
        "POST",
        "/api/v2/batch",
        Some(settings.to_string().into_bytes()),
    )
    .await;
    let id = v["data"]["batchId"].as_u64().unwrap();
    assert_eq!(
        call(&h, "GET", &format!("/api/v2/batch/{id}"), None)
            .await
            .1["data"]["batchStatus"]["status"],
        "Created"
    );
    h.set_behaviour(Behaviour {
        processing_delay_ms: 400,
        ..h.behaviour()
    });
    call(
        &h,
        "POST",
        &format!("/api/v2/batch/{id}"),
        Some(file.to_string().into_bytes()),
    )
    .await;
    let (s, v) = call(&h, "GET", &format!("/api/v2/batch/{id}/errors"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["description"], "Batch still in Running state");
    h.set_behaviour(Behaviour {
        processing_delay_ms: 40,
        ..h.behaviour()
    });

    let (id2, status) = run_job(&h, "Org", file).await;
    assert_eq!(status["errorCount"], 4, "{status}");
    assert_eq!(status["successCount"], 2, "{status}");
    assert_eq!(status["errorGroupCount"], 1, "{status}");
    let now = chrono::Utc::now().timestamp();
    let target = format!("/api/v2/batch/{id2}/errors");
    let (s, body, headers) = call_as(&h, "GET", &target, &target, now, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "gzip");
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut json).unwrap();
    let errors: Vec<Value> = serde_json::from_slice(&json).unwrap();
    let pairs: Vec<(String, String)> = errors
        .iter()
        .map(|e| {
            (
                e["errorSource"].as_str().unwrap_or("").to_string(),
                e["errorReason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        pairs[0],
        (
            "Case 2 is not valid.".into(),
            "Incident Case 2 has an invalid status.".into()
        )
    );
    assert_eq!(pairs[1].0, "10.0.0.1");
    assert!(pairs[1].1.contains("missing"), "{pairs:?}");
    assert_eq!(pairs[2].0, "http://Evil.example/");
    assert!(pairs[2].1.contains("lower case"), "{pairs:?}");
    // The `association` entry to the refused group fails, named by its indicator side.
    assert_eq!(pairs[3].0, "10.0.0.1");
    assert!(pairs[3].1.starts_with("Association failed"), "{pairs:?}");
    // The association to the invalid group did not land; the one to x-1 did.
    let assocs = inspect(&h, "/_sim/owners/Org/associations").await;
    assert_eq!(assocs.as_array().unwrap().len(), 1, "{assocs}");
    assert_eq!(assocs[0]["groupName"], "Case 1");

    // A job with no errors answers 404 on /errors.
    let (id3, status) = run_job(
        &h,
        "Org",
        json!({"indicator": [{"summary": "10.0.0.1", "type": "Address"}]}),
    )
    .await;
    assert_eq!(status["errorCount"], 0);
    assert_eq!(
        call(&h, "GET", &format!("/api/v2/batch/{id3}/errors"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn reruns_upsert_and_files_merge_on_shared_hashes() {
    let h = sim(cfg()).await;
    let md5 = "BE7DE2F0CF48294400C714C9E28ECD01";
    let sha256 = "B".repeat(64);
    let file = json!({
        "indicator": [
            {"summary": "evil.example", "type": "Host", "tag": [{"name": "x"}]},
            {"summary": md5, "type": "File", "fileOccurrence": [{"fileName": "a.exe"}],
             "associatedGroups": [{"groupXid": "g"}]},
        ],
        "group": [{"name": "G", "type": "Adversary", "xid": "g"}],
    });
    run_job(&h, "Org", file.clone()).await;
    run_job(&h, "Org", file).await;
    run_job(&h, "Org", json!({"indicator": [
        {"summary": format!("{md5} : {sha256}"), "type": "File", "fileOccurrence": [{"fileName": "a.exe"}]}
    ]}))
    .await;
    let groups = inspect(&h, "/_sim/owners/Org/groups").await;
    assert_eq!(groups.as_array().unwrap().len(), 1);
    let inds = inspect(&h, "/_sim/owners/Org/indicators").await;
    assert_eq!(inds.as_array().unwrap().len(), 2, "{inds}");
    let file = inds
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "File")
        .unwrap();
    assert_eq!(file["summary"], format!("{md5} : {sha256}"));
    assert_eq!(file["fileOccurrences"].as_array().unwrap().len(), 1);
    assert_eq!(
        inspect(&h, "/_sim/owners/Org/associations")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Another owner is separate.
    assert_eq!(
        inspect(&h, "/_sim/owners/Other/indicators").await,
        json!([])
    );

    // The name lookup finds the group.
    let (s, v) = call(
        &h,
        "GET",
        "/api/v2/groups/adversaries?owner=Org&filters=name%3DG",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"]["resultCount"], 1);
    assert_eq!(v["data"]["adversary"][0]["name"], "G");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn limits_and_critical_errors() {
    let h = sim(cfg()).await;
    let many: Vec<Value> = (1..=4)
        .map(|n| json!({"summary": format!("10.0.0.{n}"), "type": "Address"}))
        .collect();
    let (id, status) = run_job(&h, "Org", json!({"indicator": many})).await;
    assert_eq!(status["unprocessCount"], 4);
    let (_, v) = call(&h, "GET", &format!("/api/v2/batch/{id}"), None).await;
    assert_eq!(v["data"]["batchStatus"]["errorCount"], 1);
    assert_eq!(inspect(&h, "/_sim/owners/Org/indicators").await, json!([]));

    h.set_behaviour(Behaviour {
        critical_trigger: Some("boom.example".into()),
        ..h.behaviour()
    });
    let (_, status) = run_job(
        &h,
        "Org",
        json!({"indicator": [
            {"summary": "ok.example", "type": "Host"},
            {"summary": "boom.example", "type": "Host"},
            {"summary": "late.example", "type": "Host"},
        ]}),
    )
    .await;
    assert_eq!(status["successCount"], 1);
    assert_eq!(status["unprocessCount"], 2);

    // Too big an upload is refused up front.
    let settings = json!({"version": "V2", "owner": "Org", "haltOnError": false,
                          "action": "Create", "attributeWriteType": "Replace"});
    let (_, v) = call(
        &h,
        "POST",
        "/api/v2/batch",
        Some(settings.to_string().into_bytes()),
    )
    .await;
    let id = v["data"]["batchId"].as_u64().unwrap();
    let (s, v) = call(
        &h,
        "POST",
        &format!("/api/v2/batch/{id}"),
        Some(vec![b' '; 4_001]),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["description"],
        "File size greater than allowable limit of 4000"
    );

    // Settings are checked.
    let (s, _) = call(
        &h,
        "POST",
        "/api/v2/batch",
        Some(br#"{"owner":"Org"}"#.to_vec()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn injected_faults_and_behaviour_route() {
    let h = sim(cfg()).await;
    h.set_behaviour(Behaviour {
        fail_next: vec![503, 429],
        ..h.behaviour()
    });
    assert_eq!(
        call(&h, "GET", "/api/v2/owners", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let now = chrono::Utc::now().timestamp();
    let (s, _, headers) = call_as(&h, "GET", "/api/v2/owners", "/api/v2/owners", now, None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "0");
    assert_eq!(
        call(&h, "GET", "/api/v2/owners", None).await.0,
        StatusCode::OK
    );

    let r = reqwest::Client::new()
        .put(format!("{}/_sim/behaviour", h.url()))
        .json(&json!({"failBatchCreate": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(h.behaviour().fail_batch_create);
    let settings = json!({"version": "V2", "owner": "Org", "haltOnError": false,
                          "action": "Create", "attributeWriteType": "Replace"});
    let (s, _) = call(
        &h,
        "POST",
        "/api/v2/batch",
        Some(settings.to_string().into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let stats = inspect(&h, "/_sim/stats").await;
    assert_eq!(stats["faultsInjected"], 2);
    assert_eq!(stats["routes"]["GET /api/v2/owners"], 3);
    assert_eq!(stats["requests"], 4);
    h.shutdown().await.unwrap();
}
