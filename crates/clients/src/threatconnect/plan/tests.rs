use serde_json::Value;

use super::*;
use crate::threatconnect::client::{BatchErrorEntry, GroupRef};
use crate::threatconnect::items::{FileOccurrence, Group, GroupAssociation, Indicator};

const OWNER: &str = "Test Org";

fn stage(
    groups: Vec<Group>,
    indicators: Vec<Indicator>,
    associations: Vec<GroupAssociation>,
    occurrences: Vec<FileOccurrence>,
) -> Plan {
    Plan::stage(OWNER, groups, indicators, associations, occurrences)
}

fn entry(source: Option<&str>, reason: Option<&str>) -> BatchErrorEntry {
    BatchErrorEntry {
        error_source: source.map(str::to_string),
        error_reason: reason.map(str::to_string),
        ..BatchErrorEntry::default()
    }
}

fn file_json(plan: &mut Plan, job: &JobPlan) -> Value {
    serde_json::from_slice(&plan.build_file(job)).unwrap()
}

#[test]
fn hashes_and_xids() {
    // The spec's tcex vectors check the hex encoding of the digest.
    assert_eq!(
        sha256_hex("Adversary-APT 28"),
        "873c8660953287a1eb2c9a100a5e3da82bd91ad6684035d396f3afe5682835e7"
    );
    assert_eq!(
        sha256_hex("myapp-adversary-5"),
        "ef6a74c2a9f5a6d080c80224317948f1ee8df995292dcf97a39ea4fd757c3c19"
    );
    let x = group_xid("Org", GroupType::Incident, "Case 1");
    assert_eq!(x, group_xid("Org", GroupType::Incident, "Case 1"));
    assert_eq!(x, sha256_hex("Org\0Incident\0Case 1"));
    assert_ne!(x, group_xid("Other", GroupType::Incident, "Case 1"));
    assert_ne!(x, group_xid("Org", GroupType::Event, "Case 1"));
}

#[test]
fn validation_fails_items_with_reasons_and_merges_duplicates() {
    let mut plan = stage(
        vec![
            Group::new("Incident", "Case 1").tag("a"),
            Group::new("Incident", "Case 1").tag("A").tag("b"),
            // Same name, other type: a different group (the original lost it).
            Group::new("Event", "Case 1"),
            Group::new("Task", "t"),
            Group::new("Incident", "x".repeat(101)),
            Group::new("Signature", "sig"),
        ],
        vec![
            Indicator::new("Address", "10.0.0.1")
                .rating(2.0)
                .confidence(90)
                .tag("x"),
            Indicator::new("address", " 10.0.0.1")
                .rating(4.0)
                .confidence(10)
                .tag("y"),
            Indicator::new("Host", "Evil.Example"),
            Indicator::new("Address", "10.0.0.300"),
            Indicator::new("Gizmo", "g"),
            Indicator::new("Host", "ok.example").rating(6.0),
            Indicator::new("Host", "ok2.example").confidence(101),
            Indicator::new("Host", "ok3.example").field("summary", "other"),
        ],
        vec![],
        vec![],
    );
    let r = plan.report();
    assert_eq!(
        r.groups.submitted,
        vec![
            "Incident:Case 1",
            "Event:Case 1",
            "Task:t",
            &format!("Incident:{}", "x".repeat(101)),
            "Signature:sig"
        ]
    );
    assert_eq!(r.groups.duplicates_merged, 1);
    assert!(
        r.groups
            .failure("Task:t")
            .unwrap()
            .contains("unknown group type")
    );
    assert!(
        r.groups
            .failure("Signature:sig")
            .unwrap()
            .contains("needs the field `fileName`")
    );
    assert_eq!(r.groups.failed.len(), 3);

    assert_eq!(r.indicators.duplicates_merged, 1);
    assert_eq!(
        r.indicators.failed_items(),
        vec![
            "Address:10.0.0.300",
            "Gizmo:g",
            "Host:ok.example",
            "Host:ok2.example",
            "Host:ok3.example"
        ]
    );
    assert!(
        r.indicators
            .failure("Host:ok.example")
            .unwrap()
            .contains("rating 6")
    );
    assert!(
        r.indicators
            .failure("Host:ok3.example")
            .unwrap()
            .contains("`summary` is set by the writer")
    );
    assert_eq!(
        r.indicators.not_saved,
        vec!["Address:10.0.0.1", "Host:evil.example"]
    );

    let jobs = plan.split(100, 1_000_000);
    let file = file_json(&mut plan, &jobs[0]);
    let ind = &file["indicator"][0];
    // Merged: max rating and confidence, tags united.
    assert_eq!(ind["rating"], 4.0);
    assert_eq!(ind["confidence"], 90);
    assert_eq!(
        ind["tag"],
        serde_json::json!([{"name": "x"}, {"name": "y"}])
    );
    let incident = file["group"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["type"] == "Incident")
        .unwrap();
    assert_eq!(
        incident["tag"],
        serde_json::json!([{"name": "a"}, {"name": "b"}])
    );
    assert_eq!(
        incident["xid"],
        group_xid(OWNER, GroupType::Incident, "Case 1")
    );
}

#[test]
fn associations_resolve_in_batch_by_lookup_or_fail() {
    let mut plan = stage(
        vec![
            Group::new("Incident", "Case 1"),
            Group::new("Incident", "x".repeat(101)),
        ],
        vec![
            Indicator::new("Address", "10.0.0.1"),
            Indicator::new("Address", "10.0.0.2").rating(9.0),
        ],
        vec![
            GroupAssociation::new("Incident", "Case 1", "Address", "10.0.0.1"),
            GroupAssociation::new("Incident", "Case 1", "Address", "10.0.0.1"),
            GroupAssociation::new("Incident", "Case 1", "Host", "not-queued.example"),
            GroupAssociation::new("Adversary", "APT 1", "Address", "10.0.0.1"),
            GroupAssociation::new("Adversary", "Twins", "Address", "10.0.0.1"),
            GroupAssociation::new("Adversary", "Nobody", "Address", "10.0.0.1"),
            GroupAssociation::new("Incident", "Case 1", "Address", "10.0.0.2"),
            GroupAssociation::new("Incident", "x".repeat(101), "Address", "10.0.0.1"),
            GroupAssociation::new("Incident", "Case 1", "Host", "bad host"),
        ],
        vec![],
    );
    assert_eq!(
        plan.lookups_needed(),
        vec![
            (GroupType::Adversary, "APT 1".to_string()),
            (GroupType::Adversary, "Twins".to_string()),
            (GroupType::Adversary, "Nobody".to_string()),
        ]
    );
    let one = |id| GroupRef {
        id,
        name: String::new(),
    };
    plan.resolve_lookup(GroupType::Adversary, "APT 1", &Ok(vec![one(7)]));
    plan.resolve_lookup(GroupType::Adversary, "Twins", &Ok(vec![one(8), one(9)]));
    plan.resolve_lookup(GroupType::Adversary, "Nobody", &Ok(vec![]));
    let r = plan.report();
    assert_eq!(r.group_associations.duplicates_merged, 1);
    let a = &r.group_associations;
    assert!(
        a.failure("Adversary:Twins -> Address:10.0.0.1")
            .unwrap()
            .contains("ambiguous")
    );
    assert!(
        a.failure("Adversary:Nobody -> Address:10.0.0.1")
            .unwrap()
            .contains("no Adversary named")
    );
    assert!(
        a.failure("Incident:Case 1 -> Address:10.0.0.2")
            .unwrap()
            .contains("is invalid: rating 9")
    );
    assert!(
        a.failure(&format!("Incident:{} -> Address:10.0.0.1", "x".repeat(101)))
            .is_some()
    );
    assert!(
        a.failure("Incident:Case 1 -> Host:bad host")
            .unwrap()
            .contains("invalid Host")
    );

    let jobs = plan.split(100, 1_000_000);
    assert_eq!(jobs.len(), 1);
    let file = file_json(&mut plan, &jobs[0]);
    let xid = group_xid(OWNER, GroupType::Incident, "Case 1");
    assert_eq!(
        file["indicator"][0]["associatedGroups"],
        serde_json::json!([{"groupXid": xid}])
    );
    assert_eq!(
        file["association"],
        serde_json::json!([
            {"ref_1": "not-queued.example", "type_1": "Host", "ref_2": xid},
            {"ref_1": "10.0.0.1", "type_1": "Address", "id_2": 7},
        ])
    );
    // The association array comes last in the file.
    let text = String::from_utf8(plan.build_file(&jobs[0])).unwrap();
    assert!(text.find("\"association\"").unwrap() > text.find("\"group\"").unwrap());
}

#[test]
fn file_occurrences_ride_on_their_file() {
    let md5 = "be7de2f0cf48294400c714c9e28ecd01";
    let sha256 = "b".repeat(64);
    let date = chrono::DateTime::parse_from_rfc3339("2014-11-03T00:00:00-05:00")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut plan = stage(
        vec![],
        vec![Indicator::new("File", format!("{md5} : {sha256}"))],
        vec![],
        vec![
            FileOccurrence::new(md5)
                .file_name("win999301.dll")
                .path("C:\\Windows")
                .date(date),
            FileOccurrence::new(md5.to_uppercase())
                .file_name("win999301.dll")
                .path("C:\\Windows")
                .date(date),
            FileOccurrence::new("a".repeat(40)).file_name("other.exe"),
            FileOccurrence::new("xyz").file_name("n"),
            FileOccurrence::new(md5),
        ],
    );
    let r = plan.report();
    // The implicit File for the sha1 is not an indicator the caller queued.
    assert_eq!(r.indicators.submitted.len(), 1);
    assert_eq!(r.file_occurrences.duplicates_merged, 1);
    assert_eq!(
        r.file_occurrences.failed_items(),
        vec!["xyz|n||", &format!("{md5}|||")]
    );
    let jobs = plan.split(100, 1_000_000);
    let file = file_json(&mut plan, &jobs[0]);
    assert_eq!(
        file["indicator"][0]["fileOccurrence"],
        serde_json::json!([{"fileName": "win999301.dll", "path": "C:\\Windows", "date": "2014-11-03T05:00:00Z"}])
    );
    assert_eq!(
        file["indicator"][1]["summary"],
        "a".repeat(40).to_uppercase()
    );
    assert_eq!(
        file["indicator"][1]["fileOccurrence"][0]["fileName"],
        "other.exe"
    );

    plan.finish_job(&jobs[0], 0);
    let r = plan.report();
    assert_eq!(r.file_occurrences.saved.len(), 2);
    assert_eq!(r.indicators.saved.len(), 1);
}

#[test]
fn split_respects_count_and_bytes_and_places_groups_once() {
    let indicators: Vec<Indicator> = (0..250)
        .map(|n| Indicator::new("Address", format!("10.0.{}.{}", n / 256, n % 256)))
        .collect();
    let associations = (0..250)
        .map(|n| {
            GroupAssociation::new(
                "Incident",
                "Case",
                "Address",
                format!("10.0.{}.{}", n / 256, n % 256),
            )
        })
        .collect();
    let mut plan = stage(
        vec![
            Group::new("Incident", "Case"),
            Group::new("Adversary", "Lonely"),
        ],
        indicators,
        associations,
        vec![],
    );
    let jobs = plan.split(100, 1_000_000);
    assert_eq!(
        jobs.iter().map(|j| j.indicators.len()).collect::<Vec<_>>(),
        vec![100, 100, 50]
    );
    // The group goes with its first reference; the unreferenced one fills the last job.
    assert_eq!(jobs[0].groups.len(), 1);
    assert!(jobs[1].groups.is_empty());
    assert_eq!(jobs[2].groups.len(), 1);

    let mut plan = stage(
        vec![Group::new("Incident", "Case")],
        (0..250)
            .map(|n| Indicator::new("Address", format!("10.1.{}.{}", n / 256, n % 256)))
            .collect(),
        vec![],
        vec![],
    );
    let jobs = plan.split(25_000, 2_000);
    assert!(jobs.len() > 3, "{}", jobs.len());
    for job in &jobs {
        let bytes = plan.build_file(job);
        assert!(bytes.len() <= 2_000, "{}", bytes.len());
        assert!(bytes.len() <= job.bytes);
        serde_json::from_slice::<Value>(&bytes).unwrap();
    }
    let sent: usize = jobs.iter().map(|j| j.indicators.len()).sum();
    assert_eq!(sent, 250);
}

#[test]
fn an_item_larger_than_an_upload_fails_with_its_dependents() {
    let big = "x".repeat(3_000);
    let mut plan = stage(
        vec![Group::new("Incident", "Case")],
        vec![
            Indicator::new("Host", "big.example").attribute("Description", big),
            Indicator::new("Host", "small.example"),
        ],
        vec![GroupAssociation::new(
            "Incident",
            "Case",
            "Host",
            "big.example",
        )],
        vec![],
    );
    let jobs = plan.split(100, 2_000);
    let r = plan.report();
    assert!(
        r.indicators
            .failure("Host:big.example")
            .unwrap()
            .contains("too large")
    );
    assert!(
        r.group_associations
            .failure("Incident:Case -> Host:big.example")
            .unwrap()
            .contains("was not saved")
    );
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].indicators.len(), 1);
    assert_eq!(jobs[0].groups.len(), 1);
}

#[test]
fn references_to_a_group_failed_in_an_earlier_job_are_dropped() {
    let mut plan = stage(
        vec![Group::new("Incident", "Case")],
        vec![
            Indicator::new("Host", "a.example"),
            Indicator::new("Host", "b.example"),
        ],
        vec![
            GroupAssociation::new("Incident", "Case", "Host", "a.example"),
            GroupAssociation::new("Incident", "Case", "Host", "b.example"),
        ],
        vec![],
    );
    let jobs = plan.split(1, 1_000_000);
    assert_eq!(jobs.len(), 2);
    let _ = plan.build_file(&jobs[0]);
    let critical = plan.apply_errors(
        &jobs[0],
        &[entry(
            Some("Case is not valid."),
            Some("Incident Case has an invalid status."),
        )],
    );
    assert_eq!(critical, None);
    plan.finish_job(&jobs[0], 0);
    let second = file_json(&mut plan, &jobs[1]);
    assert!(second["indicator"][0].get("associatedGroups").is_none());
    plan.finish_job(&jobs[1], 0);
    let r = plan.report();
    assert_eq!(
        r.groups.failure("Incident:Case"),
        Some("Incident Case has an invalid status.")
    );
    assert_eq!(r.indicators.saved, vec!["Host:a.example", "Host:b.example"]);
    assert!(r.group_associations.saved.is_empty());
    assert_eq!(r.group_associations.failed.len(), 2);
    assert!(
        r.group_associations.failed[1]
            .reason
            .starts_with("group Incident:Case was not saved")
    );
}

#[test]
fn error_entries_map_back_to_items() {
    let md5 = "be7de2f0cf48294400c714c9e28ecd01".to_uppercase();
    let sha1 = "a".repeat(40).to_uppercase();
    let mut plan = stage(
        vec![
            Group::new("Incident", "Case"),
            Group::new("Adversary", "APT"),
        ],
        vec![
            Indicator::new("File", format!("{md5} : {sha1}")),
            Indicator::new("Host", "evil.example"),
            Indicator::new("Host", "fine.example"),
            Indicator::new("Host", "assoc.example"),
        ],
        vec![
            GroupAssociation::new("Incident", "Case", "Host", "assoc.example"),
            GroupAssociation::new("Adversary", "APT", "Host", "assoc.example"),
            GroupAssociation::new("Incident", "Case", "Host", "fine.example"),
            GroupAssociation::new("Incident", "Case", "Host", "evil.example"),
        ],
        vec![FileOccurrence::new(&md5).file_name("f.exe")],
    );
    let jobs = plan.split(100, 1_000_000);
    let apt_xid = group_xid(OWNER, GroupType::Adversary, "APT");
    let critical = plan.apply_errors(
        &jobs[0],
        &[
            // Double spaces collapse, as the reference client does.
            entry(Some(&format!("{md5}  :  {sha1}")), Some("Invalid hash")),
            entry(Some("EVIL.example"), Some("Host rejected")),
            entry(
                Some("assoc.example"),
                Some(&format!("Association to group {apt_xid} failed")),
            ),
            entry(Some("who knows"), Some("Something odd")),
            entry(None, None),
        ],
    );
    assert_eq!(critical, None);
    plan.finish_job(&jobs[0], 0);
    let r = plan.report();
    assert_eq!(
        r.indicators.failed_items(),
        vec![format!("File:{md5} : {sha1}").as_str(), "Host:evil.example"]
    );
    assert_eq!(
        r.indicators.saved,
        vec!["Host:fine.example", "Host:assoc.example"]
    );
    assert_eq!(
        r.group_associations.saved,
        vec![
            "Incident:Case -> Host:assoc.example",
            "Incident:Case -> Host:fine.example"
        ]
    );
    assert_eq!(
        r.group_associations.failed_items(),
        vec![
            "Adversary:APT -> Host:assoc.example",
            "Incident:Case -> Host:evil.example"
        ]
    );
    assert_eq!(
        r.file_occurrences.failure(&format!("{md5}|f.exe||")),
        Some(format!("indicator File:{md5} : {sha1} was not saved: Invalid hash").as_str())
    );
    assert_eq!(
        r.unattributed_errors,
        vec![
            "who knows: Something odd",
            "unknown error (no reason given)"
        ]
    );
    assert_eq!(r.groups.saved.len(), 2);
}

#[test]
fn critical_patterns_are_found_in_reason_or_message() {
    let mut plan = stage(
        vec![],
        vec![Indicator::new("Host", "a.example")],
        vec![],
        vec![],
    );
    let jobs = plan.split(100, 1_000_000);
    let msg = BatchErrorEntry {
        error_message: Some(
            "Encountered an unexpected Exception while processing batch job. Last known JSON path: '$.indicator[0]'"
                .into(),
        ),
        ..BatchErrorEntry::default()
    };
    assert!(plan.apply_errors(&jobs[0], &[msg]).is_some());
    let limit = entry(
        None,
        Some("Batch job would exceed the number of allowed indicators (25000)"),
    );
    assert!(plan.apply_errors(&jobs[0], &[limit]).is_some());
    // Nothing is marked saved by a critical job: its items stay not saved.
    assert_eq!(plan.report().indicators.not_saved, vec!["Host:a.example"]);
}

#[test]
fn unprocessed_items_stay_not_saved_and_buckets_partition_submitted() {
    let mut plan = stage(
        vec![Group::new("Incident", "Case")],
        vec![
            Indicator::new("Host", "a.example"),
            Indicator::new("Host", "-bad"),
        ],
        vec![],
        vec![],
    );
    let jobs = plan.split(100, 1_000_000);
    plan.finish_job(&jobs[0], 1);
    let r = plan.report();
    for k in [&r.groups, &r.indicators] {
        let mut all: Vec<String> = k.saved.clone();
        all.extend(k.not_saved.iter().cloned());
        all.extend(k.failed.iter().map(|f| f.item.clone()));
        all.sort();
        let mut submitted = k.submitted.clone();
        submitted.sort();
        assert_eq!(all, submitted);
    }
    assert_eq!(r.indicators.not_saved, vec!["Host:a.example"]);
}
