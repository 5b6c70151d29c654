//! The platform's rules from the spec: group types and their v2 branches, Incident and Event
//! statuses, and the summary rules of each indicator type (with the stored, normalized form).

use std::net::IpAddr;

pub(super) const INCIDENT_STATUSES: &[&str] = &[
    "New",
    "Open",
    "Stalled",
    "Containment Achieved",
    "Restoration Achieved",
    "Incident Reported",
    "Closed",
    "Rejected",
    "Deleted",
];

pub(super) const EVENT_STATUSES: &[&str] = &[
    "Needs Review",
    "False Positive",
    "No Further Action",
    "Escalated",
];

/// Group type -> (v2 branch, entity name in list answers).
pub(super) fn group_branch(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "Adversary" => ("adversaries", "adversary"),
        "Attack Pattern" => ("attackPatterns", "attackPattern"),
        "Campaign" => ("campaigns", "campaign"),
        "Course of Action" => ("coursesOfAction", "courseOfAction"),
        "Document" => ("documents", "document"),
        "Email" => ("emails", "email"),
        "Event" => ("events", "event"),
        "Incident" => ("incidents", "incident"),
        "Intrusion Set" => ("intrusionSets", "intrusionSet"),
        "Malware" => ("malware", "malware"),
        "Report" => ("reports", "report"),
        "Signature" => ("signatures", "signature"),
        "Tactic" => ("tactics", "tactic"),
        "Threat" => ("threats", "threat"),
        "Tool" => ("tools", "tool"),
        "Vulnerability" => ("vulnerabilities", "vulnerability"),
        _ => return None,
    })
}

pub(super) fn group_type_of_branch(branch: &str) -> Option<(&'static str, &'static str)> {
    const TYPES: &[&str] = &[
        "Adversary",
        "Attack Pattern",
        "Campaign",
        "Course of Action",
        "Document",
        "Email",
        "Event",
        "Incident",
        "Intrusion Set",
        "Malware",
        "Report",
        "Signature",
        "Tactic",
        "Threat",
        "Tool",
        "Vulnerability",
    ];
    TYPES.iter().find_map(|t| {
        let (b, entity) = group_branch(t)?;
        (b == branch).then_some((*t, entity))
    })
}

/// The server's summary rules (spec §5.1), returning the stored form: the platform is strict
/// where the spec says so (a URL's domain must be lower case) and normalizes case otherwise.
pub(super) fn validate_summary(kind: &str, s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("empty summary".into());
    }
    if s != s.trim() {
        return Err("leading or trailing white space".into());
    }
    match kind {
        "Address" => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => Ok(v4.to_string()),
            Ok(IpAddr::V6(v6)) => Ok(v6
                .segments()
                .iter()
                .map(|g| format!("{g:x}"))
                .collect::<Vec<_>>()
                .join(":")),
            Err(_) => Err("not an IP address".into()),
        },
        "Host" => {
            let ok = s.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
            if ok {
                Ok(s.to_ascii_lowercase())
            } else {
                Err("not a host name".into())
            }
        }
        "EmailAddress" => match s.split_once('@') {
            Some((l, d)) if !l.is_empty() && d.contains('.') && !d.contains('@') => {
                Ok(s.to_ascii_lowercase())
            }
            _ => Err("not an email address".into()),
        },
        "URL" => {
            let (_, rest) = s.split_once("://").ok_or("no scheme")?;
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = host.rsplit('@').next().unwrap_or_default();
            if host.is_empty() {
                Err("no host".into())
            } else if host.chars().any(|c| c.is_ascii_uppercase()) {
                Err("the domain part of a URL must be lower case".into())
            } else {
                Ok(s.to_string())
            }
        }
        "File" => {
            let hashes: Vec<String> = s
                .split(':')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_ascii_uppercase)
                .collect();
            let ok = !hashes.is_empty()
                && hashes.len() <= 3
                && hashes.iter().all(|h| {
                    matches!(h.len(), 32 | 40 | 64) && h.chars().all(|c| c.is_ascii_hexdigit())
                });
            if ok {
                Ok(merge_hashes("", &hashes.join(" : ")))
            } else {
                Err("not md5 / sha1 / sha256 hashes".into())
            }
        }
        "ASN" => {
            let upper = s.to_ascii_uppercase();
            match upper.strip_prefix("ASN").map(str::parse::<u32>) {
                Some(Ok(_)) => Ok(upper),
                _ => Err("not an ASN".into()),
            }
        }
        "CIDR" => {
            let (ip, len) = s.split_once('/').ok_or("no prefix length")?;
            let len: u8 = len.parse().map_err(|_| "bad prefix length")?;
            let max = match ip.parse::<IpAddr>().map_err(|_| "bad address")? {
                IpAddr::V4(_) => 32,
                IpAddr::V6(_) => 128,
            };
            if len <= max {
                Ok(s.to_ascii_lowercase())
            } else {
                Err("prefix too long".into())
            }
        }
        "Registry Key" => {
            let parts: Vec<&str> = s.split(" : ").collect();
            match parts.as_slice() {
                [key, _, kind] if !key.is_empty() && kind.starts_with("REG_") => Ok(s.to_string()),
                _ => Err("expected `key : value name : value type`".into()),
            }
        }
        "Mutex" | "User Agent" | "Email Subject" | "Hashtag" => Ok(s.to_string()),
        _ => Err(format!("unknown indicator type {kind}")),
    }
}

/// Unites two File summaries: hashes by kind (length), md5 : sha1 : sha256 order.
pub(super) fn merge_hashes(a: &str, b: &str) -> String {
    let mut slots: [Option<String>; 3] = [None, None, None];
    for h in a.split(" : ").chain(b.split(" : ")).map(str::trim) {
        let slot = match h.len() {
            32 => 0,
            40 => 1,
            64 => 2,
            _ => continue,
        };
        slots[slot].get_or_insert_with(|| h.to_ascii_uppercase());
    }
    slots.into_iter().flatten().collect::<Vec<_>>().join(" : ")
}

/// The indicator types of spec §5.1 as the type catalogue lists them: (name, v2 branch,
/// entity, value labels).
pub(super) fn indicator_types() -> &'static [(
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
)] {
    &[
        ("Address", "addresses", "address", &["IP"]),
        (
            "EmailAddress",
            "emailAddresses",
            "emailAddress",
            &["Address"],
        ),
        ("File", "files", "file", &["MD5", "SHA1", "SHA256"]),
        ("Host", "hosts", "host", &["Host Name"]),
        ("URL", "urls", "url", &["URL"]),
        ("ASN", "asns", "asn", &["AS Number"]),
        ("CIDR", "cidrBlocks", "cidrBlock", &["Block"]),
        ("Mutex", "mutexes", "mutex", &["Mutex"]),
        (
            "Registry Key",
            "registryKeys",
            "registryKey",
            &["Key Name", "Value Name", "Value Type"],
        ),
        (
            "User Agent",
            "userAgents",
            "userAgent",
            &["User Agent String"],
        ),
    ]
}
