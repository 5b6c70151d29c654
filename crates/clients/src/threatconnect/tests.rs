//! The client and the batch writer against the simulator, over real HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};

use super::*;
use soarjobd_sim::threatconnect::{Behaviour, TcSimConfig, TcSimHandle, start};

const ACCESS_ID: &str = "12345678901234567890";
const SECRET: &str = "tc-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz";
const TOKEN: &str = "APIV2:430:c8mTcH:token-secret-part";
const OWNER: &str = "Test Org";

async fn sim(tweak: impl FnOnce(&mut TcSimConfig)) -> TcSimHandle {
    let mut cfg = TcSimConfig {
        access_id: ACCESS_ID.into(),
        secret_key: SECRET.into(),
        tokens: vec![TOKEN.into()],
        behaviour: Behaviour {
            processing_delay_ms: 20,
            ..Behaviour::default()
        },
        ..TcSimConfig::default()
    };
    tweak(&mut cfg);
    start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn config(sim: &TcSimHandle) -> ThreatConnectConfig {
    let mut c = ThreatConnectConfig::new(sim.api_url());
    c.access_id = Some(ACCESS_ID.into());
    c.secret_key = Some(SecretString::from(SECRET));
    c.poll_initial = Duration::from_millis(10);
    c.poll_interval_max = Duration::from_millis(50);
    c.poll_max = Duration::from_secs(30);
    c
}

fn writer(cfg: &ThreatConnectConfig) -> BatchWriter {
    BatchWriter::new(ThreatConnectClient::new(cfg).unwrap())
}

async fn inspect(sim: &TcSimHandle, path: &str) -> Value {
    reqwest::get(format!("{}{path}", sim.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn counts(sim: &TcSimHandle) -> (u64, u64, u64) {
    let c = inspect(sim, "/_sim/owners/Test%20Org/counts").await;
    (
        c["groups"].as_u64().unwrap(),
        c["indicators"].as_u64().unwrap(),
        c["associations"].as_u64().unwrap(),
    )
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn valid_and_invalid_items_give_a_partial_report_with_exact_lists() {
    let sim = sim(|c| c.behaviour.reject_summaries = vec!["blocked.example".into()]).await;
    let mut w = writer(&config(&sim));
    w.group(Group::new("Incident", "Case 1").field("status", "Open"))
        // Refused by the server: not a valid Incident status.
        .group(Group::new("Incident", "Case 2").field("status", "Sleeping"))
        // Refused here: Task is not a group type of /v2/groups.
        .group(Group::new("Task", "Chores"))
        .indicator(Indicator::new("Address", "10.0.0.1").rating(3.0))
        .indicator(Indicator::new("Host", "EVIL.example").tag("ioc"))
        .indicator(Indicator::new("Address", "999.1.1.1"))
        .indicator(Indicator::new("Host", "ok.example").rating(7.0))
        .indicator(Indicator::new("Host", "blocked.example"))
        // A duplicate that merges into the first Address.
        .indicator(Indicator::new("Address", "10.0.0.1").confidence(80))
        .group_association(GroupAssociation::new(
            "Incident", "Case 1", "Address", "10.0.0.1",
        ))
        .group_association(GroupAssociation::new(
            "Incident",
            "Case 2",
            "Host",
            "evil.example",
        ));
    let report = w.process(OWNER).await;

    assert_eq!(report.outcome(), BatchOutcome::Partial, "{report}");
    assert_eq!(report.exit_code(), 3);
    assert_eq!(report.groups.saved, strings(&["Incident:Case 1"]));
    assert_eq!(
        report.groups.failed_items(),
        vec!["Incident:Case 2", "Task:Chores"]
    );
    assert_eq!(
        report.groups.failure("Incident:Case 2"),
        Some("Incident Case 2 has an invalid status.")
    );
    assert_eq!(
        report.indicators.saved,
        strings(&["Address:10.0.0.1", "Host:evil.example"])
    );
    assert_eq!(
        report.indicators.failed_items(),
        vec![
            "Address:999.1.1.1",
            "Host:ok.example",
            "Host:blocked.example"
        ]
    );
    assert!(
        report
            .indicators
            .failure("Host:blocked.example")
            .unwrap()
            .contains("exclusion list")
    );
    assert_eq!(report.indicators.duplicates_merged, 1);
    assert_eq!(
        report.group_associations.saved,
        strings(&["Incident:Case 1 -> Address:10.0.0.1"])
    );
    assert_eq!(
        report.group_associations.failed_items(),
        vec!["Incident:Case 2 -> Host:evil.example"]
    );
    assert!(report.indicators.not_saved.is_empty() && report.groups.not_saved.is_empty());
    assert!(report.unattributed_errors.is_empty(), "{report:?}");
    assert_eq!(
        (
            report.group_len(),
            report.indicator_len(),
            report.group_association_len()
        ),
        (1, 2, 1)
    );

    // The owner holds exactly what the report says was saved, merged as documented.
    let inds = inspect(&sim, "/_sim/owners/Test%20Org/indicators").await;
    let summaries: Vec<&str> = inds
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["summary"].as_str().unwrap())
        .collect();
    assert_eq!(summaries, vec!["10.0.0.1", "evil.example"]);
    let address = &inds[0];
    assert_eq!(
        (address["rating"].as_f64(), address["confidence"].as_u64()),
        (Some(3.0), Some(80))
    );
    let assocs = inspect(&sim, "/_sim/owners/Test%20Org/associations").await;
    assert_eq!(assocs.as_array().unwrap().len(), 1);
    assert_eq!(assocs[0]["groupName"], "Case 1");
    assert_eq!(assocs[0]["indicator"], "10.0.0.1");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn association_by_name_to_a_group_outside_the_batch_is_looked_up_once() {
    let sim = sim(|_| {}).await;
    let cfg = config(&sim);
    let mut w = writer(&cfg);
    w.group(Group::new("Adversary", "APT 28"));
    assert_eq!(w.process(OWNER).await.exit_code(), 0);

    // Two Adversaries named "Twins" (made with raw batch jobs and other xids).
    let client = ThreatConnectClient::new(&cfg).unwrap();
    for xid in ["twin-a", "twin-b"] {
        let id = client
            .create_batch(&BatchSettings::new(OWNER))
            .await
            .unwrap();
        let file = json!({"group": [{"name": "Twins", "type": "Adversary", "xid": xid}]});
        client
            .upload_batch(id, file.to_string().into_bytes().into())
            .await
            .unwrap();
        let s = client
            .wait_for_batch(id, tokio::time::Instant::now(), &Default::default())
            .await
            .unwrap();
        assert_eq!(s.error_count, 0);
    }

    let mut w = writer(&cfg);
    for ip in ["10.0.0.1", "10.0.0.2"] {
        w.indicator(Indicator::new("Address", ip))
            .group_association(GroupAssociation::new("Adversary", "APT 28", "Address", ip))
            .group_association(GroupAssociation::new("Adversary", "Twins", "Address", ip));
    }
    w.group_association(GroupAssociation::new(
        "Adversary",
        "Nobody",
        "Address",
        "10.0.0.1",
    ));
    let report = w.process(OWNER).await;
    assert_eq!(report.exit_code(), 3, "{report}");
    assert_eq!(
        report.group_associations.saved,
        strings(&[
            "Adversary:APT 28 -> Address:10.0.0.1",
            "Adversary:APT 28 -> Address:10.0.0.2"
        ])
    );
    assert!(
        report
            .group_associations
            .failure("Adversary:Twins -> Address:10.0.0.2")
            .unwrap()
            .starts_with("ambiguous: 2 Adversary groups are named `Twins`")
    );
    assert!(
        report
            .group_associations
            .failure("Adversary:Nobody -> Address:10.0.0.1")
            .unwrap()
            .contains("no Adversary named `Nobody`")
    );
    let stats = inspect(&sim, "/_sim/stats").await;
    // One lookup per distinct name: APT 28, Twins, Nobody.
    assert_eq!(stats["routes"]["GET /api/v2/groups/{branch}"], 3);
    let assocs = inspect(&sim, "/_sim/owners/Test%20Org/associations").await;
    assert!(
        assocs
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["groupName"] == "APT 28")
    );
    assert_eq!(assocs.as_array().unwrap().len(), 2);

    // The writer caches the unique answer: the next batch does not look APT 28 up again.
    w.indicator(Indicator::new("Address", "10.0.0.3"))
        .group_association(GroupAssociation::new(
            "Adversary",
            "APT 28",
            "Address",
            "10.0.0.3",
        ));
    assert_eq!(w.process(OWNER).await.exit_code(), 0);
    let stats = inspect(&sim, "/_sim/stats").await;
    assert_eq!(stats["routes"]["GET /api/v2/groups/{branch}"], 3);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn file_occurrences_ride_on_their_file_indicator() {
    let sim = sim(|_| {}).await;
    let md5 = "be7de2f0cf48294400c714c9e28ecd01";
    let sha256 = "c".repeat(64);
    let date = chrono::DateTime::parse_from_rfc3339("2014-11-03T00:00:00-05:00")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut w = writer(&config(&sim));
    w.indicator(Indicator::new("File", md5).rating(4.0))
        .file_occurrence(
            FileOccurrence::new(md5.to_uppercase())
                .file_name("win999301.dll")
                .path("C:\\Windows\\System")
                .date(date),
        )
        // A hash not queued as an indicator: sent as a File of that hash.
        .file_occurrence(FileOccurrence::new(&sha256).file_name("dropper.exe"));
    let report = w.process(OWNER).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.file_occurrence_len(), 2);
    assert_eq!(
        report.indicators.saved,
        vec![format!("File:{}", md5.to_uppercase())]
    );

    let inds = inspect(&sim, "/_sim/owners/Test%20Org/indicators").await;
    let inds = inds.as_array().unwrap();
    assert_eq!(inds.len(), 2);
    let by_summary = |s: &str| inds.iter().find(|i| i["summary"] == s).unwrap();
    assert_eq!(
        by_summary(&md5.to_uppercase())["fileOccurrences"],
        json!([{"fileName": "win999301.dll", "path": "C:\\Windows\\System", "date": "2014-11-03T05:00:00Z"}])
    );
    assert_eq!(
        by_summary(&sha256.to_uppercase())["fileOccurrences"][0]["fileName"],
        "dropper.exe"
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn sixty_thousand_indicators_are_split_into_jobs_under_the_limit() {
    let sim = sim(|c| c.max_upload_bytes = 10_000_000).await;
    let mut cfg = config(&sim);
    cfg.max_upload_bytes = 10_000_000;
    let mut w = writer(&cfg);
    w.group(Group::new("Incident", "Big case"));
    for n in 0..60_000u32 {
        let ip = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
        w.indicator(Indicator::new("Address", ip.clone()));
        if n % 1_000 == 0 {
            w.group_association(GroupAssociation::new("Incident", "Big case", "Address", ip));
        }
    }
    let report = w.process(OWNER).await;
    assert_eq!(report.exit_code(), 0, "{}", report.message());
    assert_eq!(
        report.jobs.iter().map(|j| j.indicators).collect::<Vec<_>>(),
        vec![25_000, 25_000, 10_000]
    );
    assert!(report.jobs.iter().all(|j| j.error_count == 0));
    // The group travels with the first job that references it, and only there.
    assert_eq!(
        report.jobs.iter().map(|j| j.groups).collect::<Vec<_>>(),
        vec![1, 0, 0]
    );
    assert_eq!(report.indicator_len(), 60_000);
    assert_eq!(report.group_association_len(), 60);
    assert_eq!(counts(&sim).await, (1, 60_000, 60));
    let stats = inspect(&sim, "/_sim/stats").await;
    assert_eq!(stats["jobsCreated"], 3);
    assert_eq!(report.requests as u64, stats["requests"].as_u64().unwrap());
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_over_the_server_limit_is_a_critical_failure() {
    // The client believes 5 indicators fit; the server allows 3.
    let sim = sim(|c| c.max_indicators_per_job = 3).await;
    let mut cfg = config(&sim);
    cfg.max_indicators_per_job = 5;
    let mut w = writer(&cfg);
    for n in 1..=5 {
        w.indicator(Indicator::new("Address", format!("10.0.0.{n}")));
    }
    let report = w.process(OWNER).await;
    assert_eq!(report.outcome(), BatchOutcome::Failed);
    assert_eq!(report.exit_code(), 1);
    let msg = report.message();
    assert!(
        msg.contains("would exceed the number of allowed indicators"),
        "{msg}"
    );
    assert_eq!(report.indicators.not_saved.len(), 5);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_critical_error_fails_the_batch_and_stops_later_jobs() {
    let sim = sim(|c| c.behaviour.critical_trigger = Some("boom.example".into())).await;
    let mut cfg = config(&sim);
    cfg.max_indicators_per_job = 2;
    let mut w = writer(&cfg);
    for host in ["a.example", "boom.example", "c.example"] {
        w.indicator(Indicator::new("Host", host));
    }
    let report = w.process(OWNER).await;
    assert_eq!(report.exit_code(), 1);
    let fatal = report.fatal.as_deref().unwrap();
    assert!(
        fatal.contains("Encountered an unexpected Exception while processing batch job"),
        "{fatal}"
    );
    // The failing job's items and the job never sent are not saved; nothing is lost.
    assert_eq!(
        report.indicators.not_saved,
        strings(&["Host:a.example", "Host:boom.example", "Host:c.example"])
    );
    assert_eq!(report.jobs.len(), 1);
    assert_eq!(inspect(&sim, "/_sim/stats").await["jobsCreated"], 1);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_poll_timeout_fails_the_batch() {
    let sim = sim(|c| c.behaviour.stall_jobs = true).await;
    let mut cfg = config(&sim);
    cfg.poll_max = Duration::from_millis(300);
    let mut w = writer(&cfg);
    w.indicator(Indicator::new("Host", "slow.example"));
    let report = w.process(OWNER).await;
    assert_eq!(report.exit_code(), 1);
    let fatal = report.fatal.clone().unwrap();
    assert!(fatal.contains("did not complete"), "{fatal}");
    assert!(fatal.contains("Running"), "{fatal}");
    assert_eq!(report.indicators.not_saved, strings(&["Host:slow.example"]));
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn batch_creation_and_upload_failures_fail_the_batch() {
    let sim = sim(|c| c.behaviour.fail_batch_create = true).await;
    let cfg = config(&sim);
    let mut w = writer(&cfg);
    w.indicator(Indicator::new("Host", "a.example"));
    let report = w.process(OWNER).await;
    assert_eq!(report.exit_code(), 1);
    assert!(
        report
            .fatal
            .as_deref()
            .unwrap()
            .starts_with("creating a batch job failed"),
        "{report}"
    );
    assert_eq!(report.indicators.not_saved, strings(&["Host:a.example"]));

    // An upload answered 502 is in doubt; the job is still `Created`, so nothing arrived.
    sim.set_behaviour(Behaviour {
        fail_batch_create: false,
        ..sim.behaviour()
    });
    let client = ThreatConnectClient::new(&cfg).unwrap();
    let id = client
        .create_batch(&BatchSettings::new(OWNER))
        .await
        .unwrap();
    sim.set_behaviour(Behaviour {
        fail_next: vec![502],
        ..sim.behaviour()
    });
    let err = client
        .upload_batch(id, b"{}".to_vec().into())
        .await
        .unwrap_err();
    assert!(matches!(&err, TcError::Http(h) if h.is_in_doubt()), "{err}");
    assert_eq!(client.batch_status(id).await.unwrap().status, "Created");
    // The writer turns exactly that into a fatal upload failure (0 lets the create through).
    sim.set_behaviour(Behaviour {
        fail_next: vec![0, 502],
        ..sim.behaviour()
    });
    let mut w = writer(&cfg);
    w.indicator(Indicator::new("Host", "a.example"));
    let report = w.process(OWNER).await;
    let fatal = report.fatal.as_deref().unwrap_or_default();
    assert!(fatal.starts_with("uploading batch job"), "{report}");
    assert!(fatal.contains("outcome unknown"), "{fatal}");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn transient_faults_are_retried_by_the_transport() {
    // 429 on the job creation (safe to resend, even a POST) and 503 on a status poll.
    let sim = sim(|c| c.behaviour.fail_next = vec![429]).await;
    let mut w = writer(&config(&sim));
    w.indicator(Indicator::new("Host", "a.example"));
    let report = w.process(OWNER).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let stats = inspect(&sim, "/_sim/stats").await;
    assert_eq!(stats["routes"]["POST /api/v2/batch"], 2);
    assert_eq!(stats["jobsCreated"], 1);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rerun_updates_instead_of_duplicating() {
    let sim = sim(|_| {}).await;
    let cfg = config(&sim);
    let queue = |w: &mut BatchWriter| {
        w.group(
            Group::new("Incident", "Case 42")
                .attribute("Description", "seen again")
                .tag("soar"),
        );
        for host in ["a.example", "b.example"] {
            w.indicator(
                Indicator::new("Host", host)
                    .attribute("Source", "SOAR")
                    .tag("case-42"),
            )
            .group_association(GroupAssociation::new("Incident", "Case 42", "Host", host));
        }
    };
    let mut w = writer(&cfg);
    queue(&mut w);
    assert_eq!(w.process(OWNER).await.exit_code(), 0);
    let first = counts(&sim).await;
    let mut w = writer(&cfg);
    queue(&mut w);
    let report = w.process(OWNER).await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(counts(&sim).await, first);
    assert_eq!(first, (1, 2, 2));
    // Attributes are written `Singleton`: re-sending one does not duplicate it.
    let groups = inspect(&sim, "/_sim/owners/Test%20Org/groups").await;
    assert_eq!(groups[0]["attributes"].as_array().unwrap().len(), 1);
    assert_eq!(
        groups[0]["xid"],
        group_xid(OWNER, GroupType::Incident, "Case 42")
    );
    let inds = inspect(&sim, "/_sim/owners/Test%20Org/indicators").await;
    assert_eq!(inds[0]["attributes"].as_array().unwrap().len(), 1);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn token_auth_works_and_wrong_credentials_fail_without_leaking() {
    let sim = sim(|_| {}).await;
    let mut cfg = ThreatConnectConfig::new(sim.api_url());
    cfg.token = Some(SecretString::from(TOKEN));
    cfg.poll_initial = Duration::from_millis(10);
    let mut w = writer(&cfg);
    w.indicator(Indicator::new("Host", "a.example"));
    assert_eq!(w.process(OWNER).await.exit_code(), 0);

    let mut bad = config(&sim);
    bad.secret_key = Some(SecretString::from("wrong-secret-value-123"));
    let client = ThreatConnectClient::new(&bad).unwrap();
    let err = client
        .find_groups(OWNER, GroupType::Incident, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TcError::Http(crate::http::HttpError::Auth { .. })),
        "{err}"
    );
    let mut w = BatchWriter::new(client.clone());
    w.indicator(Indicator::new("Host", "a.example"));
    let report = w.process(OWNER).await;
    assert_eq!(report.exit_code(), 1);
    let texts = [
        err.to_string(),
        format!("{err:?}"),
        report.message(),
        format!("{report:?}"),
        format!("{client:?}"),
        format!("{bad:?}"),
        format!("{cfg:?}"),
        format!("{w:?}"),
    ];
    for t in &texts {
        for secret in ["wrong-secret-value-123", SECRET, "token-secret-part"] {
            assert!(!t.contains(secret), "{secret} leaked in {t}");
        }
    }
    sim.shutdown().await.unwrap();
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_the_logs() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    // Current-thread runtime: the default subscriber sees every event of this test, including
    // reqwest's and hyper's.
    // With a single live dispatcher, `tracing` decides a new call site's interest from the
    // registering thread's default only: a call site first hit by a parallel test (no
    // subscriber) would be cached as "never" and vanish from this capture. A second live
    // dispatcher makes it consult all of them.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(subscriber);
    let sim = sim(|c| c.behaviour.fail_next = vec![503]).await;
    let mut w = writer(&config(&sim));
    w.indicator(Indicator::new("Host", "a.example"))
        .group_association(GroupAssociation::new(
            "Adversary",
            "Elsewhere",
            "Host",
            "a.example",
        ));
    let report = w.process(OWNER).await;
    assert_eq!(report.exit_code(), 3, "{report}");
    sim.shutdown().await.unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("ThreatConnect batch job completed"), "{logs}");
    // A retry was logged (the 503), so request-level logging was exercised.
    assert!(logs.contains("retrying request"), "{logs}");
    assert!(!logs.contains(SECRET), "secret key in logs");
    assert!(!logs.contains("TC 1234"), "authorization header in logs");
}
