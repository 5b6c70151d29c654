//! Seeding: deterministic cases from `(cases, seed)`, with alerts, ticket ids, tags,
//! environments and entities of common types, in the 48 h before the base time.

use super::state::{SimAlert, SimCase, SimEntity};
use crate::rng::Rng;

/// How far back generated cases start.
pub(super) const WINDOW_MS: i64 = 48 * 3600 * 1000;

/// Tags cases are drawn from.
pub const TAGS: &[&str] = &[
    "Phishing",
    "Malware",
    "Currency",
    "Ransomware",
    "Exfiltration",
    "Brute Force",
    "Insider Threat",
    "Lateral Movement",
];
/// Environments cases are drawn from.
pub const ENVIRONMENTS: &[&str] = &["Default Environment", "Prod", "Lab"];

/// (alert name, product, vendor, rule generator)
const ALERT_KINDS: &[(&str, &str, &str, &str)] = &[
    (
        "SUSPICIOUS PHISHING EMAIL",
        "Phishing detector",
        "Email server",
        "Phishing",
    ),
    ("MALWARE DETECTED", "Endpoint Protection", "EDR", "Malware"),
    ("DATA EXFILTRATION", "DLP", "Network DLP", "Exfiltration"),
    (
        "BRUTE FORCE LOGIN",
        "Identity Provider",
        "IdP",
        "Brute Force",
    ),
    (
        "RANSOMWARE BEHAVIOUR",
        "Endpoint Protection",
        "EDR",
        "Ransomware",
    ),
    ("CRYPTO MINING ACTIVITY", "Firewall", "NGFW", "Currency"),
];

/// Case `id` of seed `seed`: its own random stream, so adding cases never changes others.
pub(super) fn generate_case(seed: u64, id: u64, base: i64) -> SimCase {
    let mut rng = Rng::new(seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407));
    let creation_time = base - rng.below(WINDOW_MS as u64) as i64;
    let modification_time = creation_time + rng.below((base - creation_time) as u64 + 1) as i64;
    let open = rng.chance(0.7);
    let environment = if rng.chance(0.5) {
        ENVIRONMENTS[0]
    } else {
        rng.pick(&ENVIRONMENTS[1..])
    };
    let mut tags: Vec<String> = Vec::new();
    for _ in 0..rng.below(3) {
        let t = rng.pick(TAGS).to_string();
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    // About one case in 20 has no alerts (a manually created case).
    let alert_count = if rng.chance(0.05) {
        0
    } else {
        1 + rng.below(3) as usize
    };
    let alerts: Vec<SimAlert> = (0..alert_count)
        .map(|_| generate_alert(&mut rng, id, creation_time))
        .collect();
    let title = alerts.first().map_or_else(
        || "Manually created case".to_string(),
        |a| title_case(&a.name),
    );
    SimCase {
        id,
        title,
        open,
        environment: environment.to_string(),
        tags,
        priority: *rng.pick(&[-1, 0, 40, 60, 80, 100]),
        stage: rng
            .pick(&["Triage", "Investigation", "Incident", "Research"])
            .to_string(),
        assigned_user: rng.pick(&["Admin", "@Tier1", "@Tier2"]).to_string(),
        creation_time,
        modification_time,
        close_time: (!open).then_some(modification_time),
        alerts,
    }
}

pub(super) fn generate_alert(rng: &mut Rng, case_id: u64, case_time: i64) -> SimAlert {
    let (name, product, vendor, rule) = *rng.pick(ALERT_KINDS);
    let identifier = format!("{name}_{}", rng.uuid().to_uppercase());
    let entities = (0..1 + rng.below(4))
        .map(|_| generate_entity(rng, case_id))
        .collect();
    SimAlert {
        identifier,
        ticket_id: rng.uuid(),
        name: name.to_string(),
        product: product.to_string(),
        vendor: vendor.to_string(),
        rule_generator: rule.to_string(),
        severity: *rng.pick(&[20, 40, 60, 80, 100]),
        creation_time: case_time,
        entities,
    }
}

/// An entity of a common type; identifiers upper-cased, as the platform normalises them.
fn generate_entity(rng: &mut Rng, case_id: u64) -> SimEntity {
    let n = rng.below(250) + 1;
    let (entity_type, identifier, internal) = match rng.below(12) {
        0 => ("ADDRESS", format!("10.1.{}.{n}", case_id % 250), true),
        1 => ("ADDRESS", format!("203.0.113.{n}"), false),
        2 => (
            "HOSTNAME",
            format!("WKS-{:04}.CORP.EXAMPLE.COM", rng.below(10_000)),
            true,
        ),
        3 => (
            "DestinationURL",
            format!("HTTPS://MALICIOUS-{n}.EXAMPLE.NET/LOGIN/{}", rng.hex(6)),
            false,
        ),
        4 => ("FILEHASH", rng.hex(32), false),
        5 => ("FILEHASH", rng.hex(40), false),
        6 => ("FILEHASH", rng.hex(64), false),
        7 => (
            "EMAILSUBJECT",
            format!("URGENT: INVOICE {} OVERDUE", rng.below(100_000)),
            false,
        ),
        8 => (
            "USERUNIQNAME",
            format!(
                "{}@EXAMPLE.COM",
                rng.pick(&["JDOE", "ASMITH", "BLEE", "MKHAN"])
            ),
            true,
        ),
        9 => (
            "USERUNIQNAME",
            format!("CORP\\{}", rng.pick(&["SVC-BACKUP", "ADMIN2"])),
            true,
        ),
        10 => ("DOMAIN", format!("BAD-DOMAIN-{n}.EXAMPLE.ORG"), false),
        _ => (
            *rng.pick(&["FILENAME", "PROCESS", "CVE", "MacAddress"]),
            String::new(),
            true,
        ),
    };
    let identifier = match (entity_type, identifier.is_empty()) {
        ("FILENAME", true) => "INVOICE.PDF.EXE".to_string(),
        ("PROCESS", true) => "POWERSHELL.EXE".to_string(),
        ("CVE", true) => format!("CVE-2024-{:04}", rng.below(10_000)),
        ("MacAddress", true) => format!("00:1A:2B:3C:4D:{:02X}", rng.below(256)),
        _ => identifier.to_uppercase(),
    };
    SimEntity {
        identifier,
        entity_type,
        is_internal: internal,
        is_suspicious: !internal || rng.chance(0.2),
    }
}

fn title_case(s: &str) -> String {
    let lower = s.to_lowercase();
    let mut c = lower.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
