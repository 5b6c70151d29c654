//! The client against the simulator over real HTTP on 127.0.0.1:0. The two sides share no wire
//! types, so these tests check that both read the spec the same way.

use std::time::Duration;

use secrecy::SecretString;

use super::*;
use crate::http::{HttpError, RetryPolicy};
use soarjobd_sim::soar::{self as sim, CasePatch, CaseSummary, Override, SimHandle, SoarSimConfig};

const KEY: &str = "k3y-THAT-must-never-leak";
const BASE: i64 = 1_719_592_000_000;

fn sim_cfg(cases: usize) -> SoarSimConfig {
    SoarSimConfig {
        cases,
        seed: 9,
        app_key: KEY.into(),
        base_time_ms: Some(BASE),
        ..SoarSimConfig::default()
    }
}

async fn start(cfg: SoarSimConfig) -> SimHandle {
    sim::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
        max_retry_after: Duration::from_secs(2),
        jitter: true,
    }
}

fn client_with(h: &SimHandle, key: &str, tweak: impl FnOnce(&mut SoarConfig)) -> SoarClient {
    let mut cfg = SoarConfig::legacy(h.url(), key);
    tweak(&mut cfg);
    SoarClient::with_retry(&cfg, fast_retry()).unwrap()
}

fn client(h: &SimHandle) -> SoarClient {
    client_with(h, KEY, |_| {})
}

/// Asserts that neither the message nor the debug form of `e` carries the key.
fn assert_no_key(e: &SoarError) {
    let shown = format!("{e} / {e:?}");
    assert!(!shown.contains(KEY), "key leaked: {shown}");
}

#[tokio::test]
async fn filter_returns_the_right_cases() {
    let h = start(sim_cfg(400)).await;
    let cases = h.state().cases();
    let since = BASE - 6 * 3600 * 1000;
    let mut f = CaseFilter::new(CaseStatusFilter::Open);
    f.tags = Some(vec!["Phishing".into(), "Malware".into()]);
    f.environments = Some(vec!["Default Environment".into(), "Prod".into()]);
    f.start_time_from_unix_time_in_ms = Some(since);
    f.update_time_from_unix_time_in_ms = Some(since);
    f.operator = Some(FilterOperator::Or);
    f.sort_by = SortBy::UpdateTime;
    f.sort_order = SortOrder::Asc;
    f.max_results = 50_000; // capped client-side
    let got = client(&h).get_cases_ids_by_filter(&f).await.unwrap();

    let mut want: Vec<&CaseSummary> = cases
        .iter()
        .filter(|c| c.status == "OPEN" && c.environment != "Lab")
        .filter(|c| c.tags.iter().any(|t| t == "Phishing" || t == "Malware"))
        .filter(|c| c.creation_time >= since || c.modification_time >= since)
        .collect();
    want.sort_by_key(|c| (c.modification_time, c.id));
    let want: Vec<u64> = want.iter().map(|c| c.id).collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // A filter the SDK would refuse never reaches the server.
    let mut bad = CaseFilter::new(CaseStatusFilter::Open);
    bad.sort_by = SortBy::CloseTime;
    let err = client(&h).get_cases_ids_by_filter(&bad).await.unwrap_err();
    assert!(matches!(err, SoarError::InvalidFilter(_)), "{err:?}");
    assert_eq!(h.state().stats().requests["GetCasesIdByFilter"], 1);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn details_ticket_ids_and_comments_round_trip() {
    let h = start(sim_cfg(30)).await;
    let c = client(&h);
    let summary = h
        .state()
        .cases()
        .into_iter()
        .find(|c| c.alert_identifiers.len() >= 2)
        .unwrap();
    let id = summary.id;

    let details = c.get_case_full_details(id, false).await.unwrap();
    assert_eq!(details.identifier, id.to_string());
    assert_eq!(details.cyber_alerts.len(), summary.alert_identifiers.len());
    assert!(
        details
            .cyber_alerts
            .iter()
            .all(|a| !a.domain_entities.is_empty())
    );
    let from_details: Vec<String> = details
        .cyber_alerts
        .iter()
        .filter_map(|a| a.ticket_id().map(str::to_string))
        .collect();
    let tickets = c.get_alerts_ticket_ids_by_case_id(id).await.unwrap();
    assert_eq!(tickets, from_details);

    let alert = details.cyber_alerts[0].identifier.clone();
    c.add_comment(id, Some(&alert), "hello from the client")
        .await
        .unwrap();
    let stored = h.state().comments(Some(id));
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].alert_identifier.as_deref(), Some(alert.as_str()));
    // Commenting touches the case.
    let after = c.get_case_full_details(id, true).await.unwrap();
    assert!(after.modification_time > details.modification_time);
    assert!(after.modification_time >= BASE);

    let fetched = c.fetch_case_comments(id, None).await.unwrap();
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].comment, "hello from the client");
    assert_eq!(fetched[0].case_id, id as i64);
    let since = CommentsSince {
        field: CommentTimeField::Modification,
        from_ms: fetched[0].modification_time_unix_time_in_ms + 1,
    };
    assert!(
        c.fetch_case_comments(id, Some(since))
            .await
            .unwrap()
            .is_empty()
    );
    let wall = c.get_case_comments(id).await.unwrap();
    assert_eq!(wall, fetched);

    c.add_tag(id, None, "Reviewed").await.unwrap();
    let s = h.state().cases().into_iter().find(|c| c.id == id).unwrap();
    assert!(s.tags.contains(&"Reviewed".to_string()));

    let err = c.get_case_full_details(99_999, false).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn wrong_key_is_a_clear_auth_error_without_the_key() {
    let h = start(sim_cfg(3)).await;
    let wrong = "wrong-key-also-secret";
    let c = client_with(&h, wrong, |_| {});
    let err = c.get_alerts_ticket_ids_by_case_id(1).await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("HTTP 401"), "{msg}");
    assert!(msg.contains("soar.app_key"), "{msg}");
    assert!(
        msg.contains("/api/external/v1/sdk/AlertsTicketIdsByCaseId/1"),
        "{msg}"
    );
    assert!(!format!("{msg} {err:?}").contains(wrong));
    // Not retried: a wrong key does not become right.
    assert_eq!(h.state().stats().unauthorized, 1);
}

#[tokio::test]
async fn malformed_json_names_the_json_path() {
    let h = start(sim_cfg(3)).await;
    h.state().add_override(Override {
        endpoint: "CaseFullDetails".into(),
        status: 200,
        body: r#"{"identifier":"1","cyber_alerts":[{"identifier":"a","domain_entities":[
                  {"identifier":"x","is_pivot":"perhaps"}]}]}"#
            .into(),
        times: Some(1),
    });
    h.state().add_override(Override {
        endpoint: "AlertsTicketIdsByCaseId".into(),
        status: 200,
        body: r#"["ok", {"id": 1}]"#.into(),
        times: Some(1),
    });
    h.state().add_override(Override {
        endpoint: "GetCasesIdByFilter".into(),
        status: 200,
        body: "[1, 2,".into(),
        times: Some(1),
    });
    let c = client(&h);

    let err = c.get_case_full_details(1, false).await.unwrap_err();
    match err.http() {
        Some(HttpError::BadResponse {
            json_path, path, ..
        }) => {
            assert_eq!(json_path, "cyber_alerts[0].domain_entities[0].is_pivot");
            assert_eq!(path, "/api/external/v1/sdk/CaseFullDetails/1/False");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("is_pivot"), "{err}");

    let err = c.get_alerts_ticket_ids_by_case_id(1).await.unwrap_err();
    match err.http() {
        Some(HttpError::BadResponse { json_path, .. }) => assert_eq!(json_path, "[1]"),
        other => panic!("{other:?}"),
    }

    let err = c
        .get_cases_ids_by_filter(&CaseFilter::new(CaseStatusFilter::Both))
        .await
        .unwrap_err();
    assert!(
        matches!(err.http(), Some(HttpError::BadResponse { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn rate_limited_calls_are_retried_until_they_succeed() {
    let h = start(sim_cfg(3)).await;
    h.state().add_override(Override {
        endpoint: "AlertsTicketIdsByCaseId".into(),
        status: 429,
        body: "slow down".into(),
        times: Some(2),
    });
    let ids = client(&h)
        .get_alerts_ticket_ids_by_case_id(1)
        .await
        .unwrap();
    assert_eq!(ids, h.state().cases()[0].ticket_ids);
    assert_eq!(h.state().stats().requests["AlertsTicketIdsByCaseId"], 3);

    // The simulator's own limit, with Retry-After: every call eventually gets through.
    let h = start(SoarSimConfig {
        rate_limit: Some(4),
        ..sim_cfg(3)
    })
    .await;
    let c = client(&h);
    let calls = (0..8).map(|_| c.get_alerts_ticket_ids_by_case_id(2));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert!(h.state().stats().rate_limited > 0);
}

#[tokio::test]
async fn add_comment_answered_500_is_in_doubt_and_not_retried() {
    let h = start(sim_cfg(3)).await;
    h.state().add_override(Override {
        endpoint: "AddComment".into(),
        status: 500,
        body: "boom".into(),
        times: Some(1),
    });
    let err = client(&h).add_comment(1, None, "once").await.unwrap_err();
    assert!(err.is_in_doubt(), "{err:?}");
    // The server's own answer: what the case shows now is final.
    assert_eq!(err.write_fate(), WriteFate::Answered);
    assert!(
        err.to_string()
            .contains("POST /api/external/v1/cases/comments")
    );
    assert_eq!(h.state().stats().requests["AddComment"], 1);
    assert_no_key(&err);
}

#[tokio::test]
async fn add_comment_failures_say_whether_the_write_may_have_landed() {
    let h = start(sim_cfg(3)).await;
    let c = client(&h);
    let add = |status: u16, times: u32| {
        h.state().add_override(Override {
            endpoint: "AddComment".into(),
            status,
            body: "{}".into(),
            times: Some(times),
        })
    };
    // A gateway's answer says nothing about the server behind it: no answer.
    add(502, 1);
    let err = c.add_comment(1, None, "a").await.unwrap_err();
    assert_eq!(err.write_fate(), WriteFate::Unanswered, "{err:?}");
    // Another 5xx of the server's own: read before writing again, as after a 500.
    add(507, 1);
    let err = c.add_comment(1, None, "s").await.unwrap_err();
    assert_eq!(err.write_fate(), WriteFate::Answered, "{err:?}");
    // Still 429 after the transport's retries: refused before processing, worth resending.
    add(429, 4);
    let err = c.add_comment(1, None, "b").await.unwrap_err();
    assert_eq!(err.write_fate(), WriteFate::NotApplied, "{err:?}");
    assert!(err.is_transient(), "{err:?}");
    // Refused as sent: not applied, and sending it again cannot help.
    add(400, 1);
    let err = c.add_comment(1, None, "c").await.unwrap_err();
    assert_eq!(err.write_fate(), WriteFate::NotApplied, "{err:?}");
    assert!(!err.is_transient(), "{err:?}");
    assert!(h.state().comments(None).is_empty());
}

#[tokio::test]
async fn a_slow_next_write_times_out_and_lands_anyway() {
    let h = start(sim_cfg(3)).await;
    h.state().set_slow_ms(300);
    h.state().slow_next("AddComment", 1);
    let c = client_with(&h, KEY, |c| c.timeout = Duration::from_millis(100));
    let err = c.add_comment(2, None, "late").await.unwrap_err();
    assert_eq!(err.write_fate(), WriteFate::Unanswered, "{err:?}");
    assert_eq!(h.state().stats().faults_slow, 1);
    // Only the next call was slow.
    c.add_comment(3, None, "now").await.unwrap();
    let landed = |case| {
        h.state()
            .comments(Some(case))
            .iter()
            .filter(|c| c.comment == "late")
            .count()
    };
    for _ in 0..100 {
        if landed(2) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(landed(2), 1, "the slow write never landed");
}

#[tokio::test]
async fn add_comment_timing_out_is_in_doubt_and_lands_later() {
    let h = start(SoarSimConfig {
        fault_rate: 1.0,
        slow_ms: 400,
        ..sim_cfg(3)
    })
    .await;
    // Every request is faulted; retry a few times until the fault sequence gives "slow"
    // (a 429 is retried by the client; a 500 is in doubt too, but we want the timeout here).
    let c = client_with(&h, KEY, |c| c.timeout = Duration::from_millis(100));
    let mut timed_out = false;
    for _ in 0..20 {
        let before = h.state().stats();
        let err = match c.add_comment(2, None, "maybe").await {
            Ok(()) => continue,
            Err(e) => e,
        };
        let after = h.state().stats();
        if after.faults_slow > before.faults_slow {
            assert!(err.is_in_doubt(), "{err:?}");
            assert_eq!(err.write_fate(), WriteFate::Unanswered);
            assert!(err.to_string().contains("timed out"), "{err}");
            timed_out = true;
            break;
        }
    }
    assert!(timed_out, "the fault sequence never produced a slow reply");
    // The server was slow, not dead: the write lands after the client gave up.
    h.state().set_fault_rate(0.0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let landed = client(&h).fetch_case_comments(2, None).await.unwrap();
    assert!(landed.iter().any(|c| c.comment == "maybe"));
}

#[tokio::test]
async fn one_platform_mode_works_end_to_end() {
    let h = start(sim_cfg(10)).await;
    let c = client_with(&h, KEY, |c| {
        c.api = ApiFlavor::OnePlatform;
        c.bearer_token = Some(SecretString::from("tok".to_string()));
        c.project = Some("p".into());
        c.location = Some("us".into());
        c.instance = Some("i".into());
    });
    // The simulator's cases lie before BASE, outside the SDK's default "last 30 days".
    let mut f = CaseFilter::new(CaseStatusFilter::Both);
    f.start_time_from_unix_time_in_ms = Some(BASE - 49 * 3600 * 1000);
    let ids = c.get_cases_ids_by_filter(&f).await.unwrap();
    assert_eq!(ids.len(), 10);
    let d = c.get_case_full_details(ids[0], false).await.unwrap();
    assert_eq!(d.identifier, ids[0].to_string());
    c.get_alerts_ticket_ids_by_case_id(ids[0]).await.unwrap();
    c.add_comment(ids[0], None, "1p").await.unwrap();
    assert_eq!(c.get_case_comments(ids[0]).await.unwrap().len(), 1);
    c.add_tag(ids[0], None, "X").await.unwrap();
    let s = h.state().stats();
    assert_eq!(s.unauthorized, 0);
    assert_eq!(s.bad_requests, 0);
}

#[tokio::test]
async fn bearer_token_file_is_used_in_one_platform_mode() {
    let h = start(sim_cfg(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, "file-token\n").unwrap();
    let c = client_with(&h, KEY, |c| {
        c.api = ApiFlavor::OnePlatform;
        c.bearer_token_file = Some(tok.clone());
        c.project = Some("p".into());
        c.location = Some("l".into());
        c.instance = Some("i".into());
    });
    c.get_alerts_ticket_ids_by_case_id(1).await.unwrap();
    assert_eq!(h.state().stats().unauthorized, 0);
}

#[tokio::test]
async fn the_key_never_appears_in_errors() {
    let h = start(sim_cfg(3)).await;
    let mut errors: Vec<SoarError> = Vec::new();
    let c = client(&h);

    errors.push(c.get_case_full_details(12345, false).await.unwrap_err());
    h.state().add_override(Override {
        endpoint: "GetCaseComments".into(),
        status: 200,
        body: format!("[{{\"comment\": {{\"echo\": \"{}\"}}}}]", "x"),
        times: Some(1),
    });
    errors.push(c.get_case_comments(1).await.unwrap_err());
    h.state().add_override(Override {
        endpoint: "AddTag".into(),
        status: 503,
        body: String::new(),
        times: None,
    });
    errors.push(c.add_tag(1, None, "t").await.unwrap_err());
    h.state().add_override(Override {
        endpoint: "AddComment".into(),
        status: 502,
        body: String::new(),
        times: None,
    });
    errors.push(c.add_comment(1, None, "t").await.unwrap_err());
    h.state().add_override(Override {
        endpoint: "FetchCaseComments".into(),
        status: 400,
        body: "bad".into(),
        times: None,
    });
    errors.push(c.fetch_case_comments(1, None).await.unwrap_err());
    let url = h.url();
    h.shutdown().await.unwrap();
    // Nothing listens any more: a transport error.
    errors.push(
        SoarClient::with_retry(&SoarConfig::legacy(url, KEY), RetryPolicy::none())
            .unwrap()
            .get_alerts_ticket_ids_by_case_id(1)
            .await
            .unwrap_err(),
    );
    // Config errors.
    let mut cfg = SoarConfig::legacy("not a url", KEY);
    errors.push(SoarClient::new(&cfg).unwrap_err());
    cfg.url = "http://127.0.0.1:1".into();
    cfg.app_key_file = Some("/nonexistent/key".into());
    errors.push(SoarClient::new(&cfg).unwrap_err());

    assert_eq!(errors.len(), 8);
    for e in &errors {
        assert_no_key(e);
    }
    assert!(
        matches!(errors[5].http(), Some(HttpError::Transport { .. })),
        "{:?}",
        errors[5]
    );
    let c = SoarClient::new(&SoarConfig::legacy("http://h", KEY)).unwrap();
    assert!(!format!("{c:?}").contains(KEY));
}

#[tokio::test]
async fn added_case_without_alerts_has_no_ticket_ids() {
    let h = start(sim_cfg(2)).await;
    h.state()
        .upsert_case(CasePatch {
            id: Some(50),
            status: Some("OPEN".into()),
            tags: Some(vec!["Currency".into()]),
            alerts: Some(0),
            ..CasePatch::default()
        })
        .unwrap();
    let c = client(&h);
    assert!(
        c.get_alerts_ticket_ids_by_case_id(50)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.get_case_full_details(50, false)
            .await
            .unwrap()
            .cyber_alerts
            .is_empty()
    );
}

/// `forward` (the SecOps SDK gateway's path to SOAR): a script's legacy request reaches the
/// platform with this client's credentials, in the legacy and the one-platform form, and the
/// platform's answer comes back whatever its status.
#[tokio::test]
async fn forward_sends_sdk_requests_in_both_api_forms() {
    use bytes::Bytes;
    use reqwest::Method;
    let h = start(sim_cfg(3)).await;
    let ids: Vec<u64> = h.state().cases().iter().map(|c| c.id).collect();
    let filter = serde_json::json!({
        "start_time_from_unix_time_in_ms": BASE - 49 * 3600 * 1000,
        "start_time_to_unix_time_in_ms": BASE, "close_time_from_unix_time_in_ms": null,
        "close_time_to_unix_time_in_ms": null, "update_time_from_unix_time_in_ms": null,
        "update_time_to_unix_time_in_ms": null, "status": "BOTH", "operator": null,
        "sort_by": "START_TIME", "sort_order": "DESC", "max_results": 100,
        "environments": null, "tags": null,
    });
    let filter = Bytes::from(serde_json::to_vec(&filter).unwrap());
    let legacy = client_with(&h, KEY, |_| {});
    let one_p = client_with(&h, KEY, |c| {
        c.api = ApiFlavor::OnePlatform;
        c.bearer_token = Some(SecretString::from("tok".to_string()));
        c.project = Some("p".into());
        c.location = Some("us".into());
        c.instance = Some("i".into());
    });
    for c in [&legacy, &one_p] {
        let a = c
            .forward(
                Method::POST,
                "external/v1/sdk/GetCasesIdByFilter?format=snake",
                filter.clone(),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        let mut got: Vec<u64> = serde_json::from_slice(&a.body).unwrap();
        got.sort();
        assert_eq!(got, ids);
        let path = format!(
            "external/v1/sdk/CaseFullDetails/{}/False?format=snake",
            ids[0]
        );
        let a = c.forward(Method::GET, &path, Bytes::new()).await;
        assert_eq!(a.status, 200, "{a:?}");
        let tag = serde_json::json!({"case_id": ids[0], "alert_identifier": null, "tag": "T"});
        let a = c
            .forward(
                Method::POST,
                "external/v1/sdk/AddTag?format=snake",
                Bytes::from(serde_json::to_vec(&tag).unwrap()),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        // The platform's refusal is the script's answer.
        let a = c
            .forward(
                Method::GET,
                "external/v1/sdk/CaseFullDetails/999999/False?format=snake",
                Bytes::new(),
            )
            .await;
        assert_eq!(a.status, 404, "{a:?}");
        // Only external/v1 paths, no escapes.
        for bad in ["internal/x", "external/v1/../../_sim/cases"] {
            assert_eq!(c.forward(Method::GET, bad, Bytes::new()).await.status, 404);
        }
    }
    let s = h.state().stats();
    assert_eq!(s.unauthorized, 0);
    assert_eq!(s.bad_requests, 0);
}
