//! Batch writer benchmark: 100,000 indicators with 1,000 groups through the TcEx-style
//! [`BatchWriter`] against the ThreatConnect simulator (real HTTP on loopback), against the
//! request count the original per-item TcEx path would need. Prints a markdown table.
//!
//! `cargo bench --bench batch` runs the full benchmark: two scenarios of 100,000 indicators and
//! 1,000 Incident groups, one with 1,000 group associations (one per group) and one with
//! 100,000 (every indicator associated with its group, as `push-case-iocs-to-threatconnect`
//! does). Under `cargo test` (no `--bench` argument) it runs a small smoke version so CI proves
//! the benchmark still works.
//!
//! Every scenario gets a fresh simulator and is checked, not only timed: the batch must
//! succeed, every item must be reported saved, and the owner must then hold exactly the
//! expected number of groups, indicators and associations.
//!
//! The per-item path is the original module's `process()` without Batch (`indicator_batch=
//! False`, spec §4 and §6.2): one `POST` per group, per indicator and per group association,
//! plus one `POST` per tag and per attribute of each item, plus the group-name cache, which
//! pages through the owner's groups of the type 500 at a time. The lower bound counts the
//! creates alone: `G + I + A`.
//!
//! [`BatchWriter`]: soarjobd_clients::threatconnect::BatchWriter

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;
use soarjobd_clients::threatconnect::{
    BatchOutcome, BatchReport, BatchWriter, Group, GroupAssociation, Indicator,
    ThreatConnectClient, ThreatConnectConfig,
};
use soarjobd_sim::threatconnect as sim;
use soarjobd_sim::threatconnect::{Behaviour, TcSimConfig, TcSimHandle};

const ACCESS_ID: &str = "bench-access-id";
const SECRET: &str = "bench-secret-key";
const OWNER: &str = "Bench Org";
const OWNER_IN_PATH: &str = "Bench%20Org";
/// The group type of the benchmark's groups.
const GROUP_TYPE: &str = "Incident";
/// Tags and attributes per item (each is one more request on the per-item path).
const TAGS_PER_INDICATOR: usize = 1;
const ATTRIBUTES_PER_GROUP: usize = 1;
/// The name cache of the per-item path pages through groups this many at a time.
const CACHE_PAGE: usize = 500;

/// One row of the table.
struct Scenario {
    indicators: usize,
    groups: usize,
    associations: usize,
}

struct Size {
    scenarios: [Scenario; 2],
    /// Time the simulator takes per batch job (upload to `Completed`).
    processing_delay_ms: u64,
}

const FULL: Size = Size {
    scenarios: [
        Scenario {
            indicators: 100_000,
            groups: 1_000,
            associations: 1_000,
        },
        Scenario {
            indicators: 100_000,
            groups: 1_000,
            associations: 100_000,
        },
    ],
    processing_delay_ms: 100,
};

const SMOKE: Size = Size {
    scenarios: [
        Scenario {
            indicators: 2_000,
            groups: 20,
            associations: 20,
        },
        Scenario {
            indicators: 2_000,
            groups: 20,
            associations: 2_000,
        },
    ],
    processing_delay_ms: 20,
};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full { FULL } else { SMOKE };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let rows: Vec<Row> = size
        .scenarios
        .iter()
        .map(|s| rt.block_on(run(s, size.processing_delay_ms)))
        .collect();
    print_table(&rows, size.processing_delay_ms);
}

/// What one scenario measured.
struct Row {
    indicators: usize,
    groups: usize,
    associations: usize,
    queue_time: Duration,
    report: BatchReport,
    client_requests: usize,
    server_requests: u64,
    upload_bytes: u64,
}

impl Row {
    /// `G + I + A`: one create per item.
    fn per_item_creates(&self) -> usize {
        self.groups + self.indicators + self.associations
    }

    /// The creates, plus one request per tag and per attribute, plus the name-cache pages.
    fn per_item_full(&self) -> usize {
        self.per_item_creates()
            + self.groups * ATTRIBUTES_PER_GROUP
            + self.indicators * TAGS_PER_INDICATOR
            + self.groups.div_ceil(CACHE_PAGE)
    }
}

async fn run(s: &Scenario, processing_delay_ms: u64) -> Row {
    let tc = sim::start(
        TcSimConfig {
            access_id: ACCESS_ID.into(),
            secret_key: SECRET.into(),
            behaviour: Behaviour {
                processing_delay_ms,
                ..Behaviour::default()
            },
            ..TcSimConfig::default()
        },
        "127.0.0.1:0".parse().expect("an address"),
    )
    .await
    .expect("the simulator starts");
    let mut cfg = ThreatConnectConfig::new(tc.api_url());
    cfg.access_id = Some(ACCESS_ID.into());
    cfg.secret_key = Some(SecretString::from(SECRET));
    cfg.poll_initial = Duration::from_millis(processing_delay_ms / 2);
    cfg.poll_interval_max = Duration::from_millis(processing_delay_ms.max(50));
    cfg.poll_max = Duration::from_secs(600);
    let client = ThreatConnectClient::new(&cfg).expect("a client");
    let mut writer = BatchWriter::new(client.clone());

    let t = Instant::now();
    queue(&mut writer, s);
    let queue_time = t.elapsed();
    let report = writer.process(OWNER).await;
    check(&tc, s, &report).await;
    let stats = inspect(&tc, "/_sim/stats").await;
    let row = Row {
        indicators: s.indicators,
        groups: s.groups,
        associations: s.associations,
        queue_time,
        client_requests: client.requests_sent(),
        server_requests: stats["requests"].as_u64().unwrap_or(0),
        upload_bytes: stats["uploadBytes"].as_u64().unwrap_or(0),
        report,
    };
    tc.shutdown().await.expect("the simulator stops");
    row
}

fn group_name(g: usize) -> String {
    format!("Bench case {g}")
}

/// Indicator `i`: five types in turn, every summary distinct.
fn indicator(i: usize) -> (&'static str, String) {
    let n = i / 5;
    match i % 5 {
        0 => (
            "Address",
            format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255),
        ),
        1 => ("Host", format!("host-{n}.bench.example")),
        2 => ("URL", format!("https://u{n}.bench.example/Login/{n}")),
        3 => ("File", format!("{:032x}", 0xb5e0_0000_0000_u64 + n as u64)),
        _ => ("EmailAddress", format!("user{n}@bench.example")),
    }
}

/// Queues the scenario: groups with a Description, indicators with a rating, a confidence and
/// a tag, and associations spread evenly: association `k` links indicator `k * I / A` to group
/// `k % G`, so every group gets its share.
fn queue(w: &mut BatchWriter, s: &Scenario) {
    for g in 0..s.groups {
        w.group(
            Group::new(GROUP_TYPE, group_name(g))
                .attribute("Description", format!("Benchmark group {g}")),
        );
    }
    for i in 0..s.indicators {
        let (t, summary) = indicator(i);
        w.indicator(
            Indicator::new(t, summary)
                .rating(3.0)
                .confidence(60)
                .tag("SecOps"),
        );
    }
    let step = (s.indicators / s.associations.max(1)).max(1);
    for k in 0..s.associations.min(s.indicators) {
        let (t, summary) = indicator(k * step);
        w.group_association(GroupAssociation::new(
            GROUP_TYPE,
            group_name(k % s.groups),
            t,
            summary,
        ));
    }
}

/// The batch succeeded and the owner holds exactly what was queued.
async fn check(tc: &TcSimHandle, s: &Scenario, r: &BatchReport) {
    assert_eq!(r.outcome(), BatchOutcome::Success, "{r}");
    assert_eq!(r.group_len(), s.groups, "{r}");
    assert_eq!(r.indicator_len(), s.indicators, "{r}");
    assert_eq!(r.group_association_len(), s.associations, "{r}");
    let counts = inspect(tc, &format!("/_sim/owners/{OWNER_IN_PATH}/counts")).await;
    let n = |k: &str| counts[k].as_u64().unwrap_or(0) as usize;
    assert_eq!(
        (n("groups"), n("indicators"), n("associations")),
        (s.groups, s.indicators, s.associations),
        "the owner's content"
    );
}

async fn inspect(tc: &TcSimHandle, path: &str) -> Value {
    reqwest::get(format!("{}{path}", tc.url()))
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("JSON")
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// `102000` -> `102,000`.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_table(rows: &[Row], processing_delay_ms: u64) {
    println!(
        "\n### ThreatConnect batch writer (simulator on loopback, {processing_delay_ms} ms processing per batch job)\n"
    );
    println!(
        "| indicators / groups / associations | batch jobs | uploaded | queue | validate + serialize (client) | total | requests sent | per-item path: creates `G+I+A` | per-item path with tags, attributes, name cache | fewer requests |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let sent = r.report.requests;
        println!(
            "| {} / {} / {} | {} | {:.1} MB | {} | {} | {} | {} | {} | {} | {:.0}x |",
            thousands(r.indicators),
            thousands(r.groups),
            thousands(r.associations),
            r.report.jobs.len(),
            r.upload_bytes as f64 / 1_000_000.0,
            ms(r.queue_time),
            ms(r.report.prepare_time),
            ms(r.report.total_time),
            sent,
            thousands(r.per_item_creates()),
            thousands(r.per_item_full()),
            r.per_item_creates() as f64 / sent.max(1) as f64,
        );
    }
    println!(
        "\nRequests sent = `BatchReport::requests` (logical requests of the `process` call; the \
         client counted {} and the simulator received {} in all). Per-item formulas: creates \
         `G + I + A`; with tags and attributes `G·(1 + {ATTRIBUTES_PER_GROUP} attribute) + \
         I·(1 + {TAGS_PER_INDICATOR} tag) + A + ⌈G/{CACHE_PAGE}⌉` name-cache pages. \
         \"Fewer requests\" compares against the lower bound `G + I + A`.",
        rows.iter()
            .map(|r| r.client_requests.to_string())
            .collect::<Vec<_>>()
            .join(" / "),
        rows.iter()
            .map(|r| r.server_requests.to_string())
            .collect::<Vec<_>>()
            .join(" / "),
    );
}
