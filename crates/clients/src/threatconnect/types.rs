//! ThreatConnect indicator and group types, and the client-side checks that keep invalid data
//! from ever being sent (spec §5).
//!
//! Each indicator summary is checked *and* put in the canonical form the platform stores (host
//! names lower case, IPv6 in TC's exploded form, hashes upper case, ...). The canonical form is
//! what identifies an indicator: duplicates are merged on it, and error-file entries are
//! matched back to items on it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest group name the platform accepts.
pub const MAX_GROUP_NAME_CHARS: usize = 100;
/// Longest tag the platform accepts.
pub const MAX_TAG_CHARS: usize = 128;

/// The indicator types the batch writer knows (spec §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndicatorType {
    Address,
    EmailAddress,
    File,
    Host,
    Url,
    Asn,
    Cidr,
    Mutex,
    RegistryKey,
    UserAgent,
    EmailSubject,
    Hashtag,
}

impl IndicatorType {
    pub const ALL: [IndicatorType; 12] = [
        IndicatorType::Address,
        IndicatorType::EmailAddress,
        IndicatorType::File,
        IndicatorType::Host,
        IndicatorType::Url,
        IndicatorType::Asn,
        IndicatorType::Cidr,
        IndicatorType::Mutex,
        IndicatorType::RegistryKey,
        IndicatorType::UserAgent,
        IndicatorType::EmailSubject,
        IndicatorType::Hashtag,
    ];

    /// The type name as the API spells it (`type` in batch files).
    pub fn as_str(self) -> &'static str {
        match self {
            IndicatorType::Address => "Address",
            IndicatorType::EmailAddress => "EmailAddress",
            IndicatorType::File => "File",
            IndicatorType::Host => "Host",
            IndicatorType::Url => "URL",
            IndicatorType::Asn => "ASN",
            IndicatorType::Cidr => "CIDR",
            IndicatorType::Mutex => "Mutex",
            IndicatorType::RegistryKey => "Registry Key",
            IndicatorType::UserAgent => "User Agent",
            IndicatorType::EmailSubject => "Email Subject",
            IndicatorType::Hashtag => "Hashtag",
        }
    }

    /// Reads a type name, ignoring case and spaces (`email address`, `URL`, `registrykey`), so a
    /// caller's spelling does not turn a good indicator into a failure.
    pub fn parse(name: &str) -> Option<IndicatorType> {
        let wanted = squash(name);
        IndicatorType::ALL
            .into_iter()
            .find(|t| squash(t.as_str()) == wanted)
    }

    /// Checks `summary` for this type and returns its canonical form, or why it is invalid.
    pub fn canonical_summary(self, summary: &str) -> Result<String, String> {
        let s = summary.trim();
        if s.is_empty() {
            return Err(format!("empty {} value", self.as_str()));
        }
        if s.chars().any(char::is_control) {
            return Err(format!(
                "{} value contains control characters",
                self.as_str()
            ));
        }
        match self {
            IndicatorType::Address => canonical_address(s),
            IndicatorType::EmailAddress => canonical_email(s),
            IndicatorType::File => canonical_file(s),
            IndicatorType::Host => canonical_host(s).map_err(|e| format!("invalid Host: {e}")),
            IndicatorType::Url => canonical_url(s),
            IndicatorType::Asn => canonical_asn(s),
            IndicatorType::Cidr => canonical_cidr(s),
            IndicatorType::RegistryKey => canonical_registry_key(s),
            // Free-text types: any non-empty text is a value, kept as given (Mutex names are
            // case sensitive).
            IndicatorType::Mutex
            | IndicatorType::UserAgent
            | IndicatorType::EmailSubject
            | IndicatorType::Hashtag => Ok(s.to_string()),
        }
    }
}

impl fmt::Display for IndicatorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The group types that live under `/v2/groups/` (spec §5.2; `Task` does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupType {
    Adversary,
    AttackPattern,
    Campaign,
    CourseOfAction,
    Document,
    Email,
    Event,
    Incident,
    IntrusionSet,
    Malware,
    Report,
    Signature,
    Tactic,
    Threat,
    Tool,
    Vulnerability,
}

impl GroupType {
    pub const ALL: [GroupType; 16] = [
        GroupType::Adversary,
        GroupType::AttackPattern,
        GroupType::Campaign,
        GroupType::CourseOfAction,
        GroupType::Document,
        GroupType::Email,
        GroupType::Event,
        GroupType::Incident,
        GroupType::IntrusionSet,
        GroupType::Malware,
        GroupType::Report,
        GroupType::Signature,
        GroupType::Tactic,
        GroupType::Threat,
        GroupType::Tool,
        GroupType::Vulnerability,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupType::Adversary => "Adversary",
            GroupType::AttackPattern => "Attack Pattern",
            GroupType::Campaign => "Campaign",
            GroupType::CourseOfAction => "Course of Action",
            GroupType::Document => "Document",
            GroupType::Email => "Email",
            GroupType::Event => "Event",
            GroupType::Incident => "Incident",
            GroupType::IntrusionSet => "Intrusion Set",
            GroupType::Malware => "Malware",
            GroupType::Report => "Report",
            GroupType::Signature => "Signature",
            GroupType::Tactic => "Tactic",
            GroupType::Threat => "Threat",
            GroupType::Tool => "Tool",
            GroupType::Vulnerability => "Vulnerability",
        }
    }

    /// The v2 REST branch (`/v2/groups/{branch}`).
    pub fn branch(self) -> &'static str {
        match self {
            GroupType::Adversary => "adversaries",
            GroupType::AttackPattern => "attackPatterns",
            GroupType::Campaign => "campaigns",
            GroupType::CourseOfAction => "coursesOfAction",
            GroupType::Document => "documents",
            GroupType::Email => "emails",
            GroupType::Event => "events",
            GroupType::Incident => "incidents",
            GroupType::IntrusionSet => "intrusionSets",
            GroupType::Malware => "malware",
            GroupType::Report => "reports",
            GroupType::Signature => "signatures",
            GroupType::Tactic => "tactics",
            GroupType::Threat => "threats",
            GroupType::Tool => "tools",
            GroupType::Vulnerability => "vulnerabilities",
        }
    }

    /// Reads a type name, ignoring case and spaces.
    pub fn parse(name: &str) -> Option<GroupType> {
        let wanted = squash(name);
        GroupType::ALL
            .into_iter()
            .find(|t| squash(t.as_str()) == wanted)
    }

    /// Type-specific fields the Batch API requires (spec §3.3), checked before sending.
    pub fn required_fields(self) -> &'static [&'static str] {
        match self {
            GroupType::Signature => &["fileName", "fileText", "fileType"],
            GroupType::Email => &["subject", "header", "body"],
            GroupType::Document | GroupType::Report => &["fileName"],
            _ => &[],
        }
    }
}

impl fmt::Display for GroupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a group name: not blank, at most [`MAX_GROUP_NAME_CHARS`], no control characters
/// (which also keeps the NUL separator of [`crate::threatconnect::group_xid`] unambiguous).
pub fn check_group_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("empty group name".into());
    }
    let chars = name.chars().count();
    if chars > MAX_GROUP_NAME_CHARS {
        return Err(format!(
            "group name is {chars} characters long, more than {MAX_GROUP_NAME_CHARS}"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("group name contains control characters".into());
    }
    Ok(())
}

/// Checks a tag: not blank, at most [`MAX_TAG_CHARS`]. A long tag is refused rather than cut,
/// so two different tags cannot silently become one.
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.trim().is_empty() {
        return Err("empty tag".into());
    }
    let chars = tag.chars().count();
    if chars > MAX_TAG_CHARS {
        return Err(format!(
            "tag is {chars} characters long, more than {MAX_TAG_CHARS}"
        ));
    }
    Ok(())
}

/// Checks a rating: 0 to 5 (the API takes decimals).
pub fn check_rating(rating: f64) -> Result<(), String> {
    if rating.is_finite() && (0.0..=5.0).contains(&rating) {
        Ok(())
    } else {
        Err(format!("rating {rating} is outside 0-5"))
    }
}

/// Checks a confidence: 0 to 100.
pub fn check_confidence(confidence: u32) -> Result<(), String> {
    if confidence <= 100 {
        Ok(())
    } else {
        Err(format!("confidence {confidence} is outside 0-100"))
    }
}

/// Which hash a hex string of this length is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Md5,
    Sha1,
    Sha256,
}

impl HashKind {
    /// Classifies a hash by its hex length (32/40/64), as the reference client does.
    pub fn of(hash: &str) -> Option<HashKind> {
        if !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        match hash.len() {
            32 => Some(HashKind::Md5),
            40 => Some(HashKind::Sha1),
            64 => Some(HashKind::Sha256),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            HashKind::Md5 => 0,
            HashKind::Sha1 => 1,
            HashKind::Sha256 => 2,
        }
    }
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// IPv4 as written; IPv6 in TC's form: all eight groups, leading zeros stripped
/// (`2001:db8::1` -> `2001:db8:0:0:0:0:0:1`).
fn canonical_address(s: &str) -> Result<String, String> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => Ok(v4.to_string()),
        Ok(IpAddr::V6(v6)) => Ok(tc_ipv6(&v6)),
        Err(_) => Err(format!(
            "invalid Address: `{s}` is not an IPv4 or IPv6 address"
        )),
    }
}

/// TC's IPv6 form (spec §1).
pub fn tc_ipv6(v6: &Ipv6Addr) -> String {
    v6.segments()
        .iter()
        .map(|g| format!("{g:x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A DNS name: labels of letters, digits, `-` and `_` (seen in real malware domains), 1-63
/// characters each, 253 in all, not an IP address. Returned lower case: hosts are case
/// insensitive and the platform stores them lower case.
fn canonical_host(s: &str) -> Result<String, String> {
    let host = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return Err(format!("`{s}` is not a host name"));
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Err(format!("`{s}` is an IP address; use the Address type"));
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("`{s}` is not a host name (bad label `{label}`)"));
        }
    }
    Ok(host)
}

fn canonical_email(s: &str) -> Result<String, String> {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return Err(format!("invalid EmailAddress: `{s}` has no @"));
    };
    if local.is_empty() || local.contains('@') || local.chars().any(char::is_whitespace) {
        return Err(format!("invalid EmailAddress: `{s}`"));
    }
    let domain = canonical_host(domain).map_err(|e| format!("invalid EmailAddress domain: {e}"))?;
    Ok(format!("{local}@{domain}"))
}

/// A URL with a scheme and a host. The text is kept as given except the host, which is put in
/// lower case (the platform refuses URLs whose domain part has upper case letters).
fn canonical_url(s: &str) -> Result<String, String> {
    let parsed = url::Url::parse(s).map_err(|e| format!("invalid URL `{s}`: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid URL `{s}`: no host"));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!("invalid URL `{s}`: contains white space"));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!("invalid URL `{s}`: no `scheme://`"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // Only the host part is lowered: user info (before `@`) may be case sensitive.
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut out = format!("{}://", scheme.to_ascii_lowercase());
    if let Some(u) = userinfo {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(&hostport.to_ascii_lowercase());
    out.push_str(tail);
    Ok(out)
}

/// A File summary: one to three hashes separated by ` : ` (empty parts allowed), each
/// md5/sha1/sha256 by length, at most one of each kind. Canonical: the present hashes, upper
/// case, in md5, sha1, sha256 order, joined by ` : `.
fn canonical_file(s: &str) -> Result<String, String> {
    // Hex hashes hold no `:`, so splitting on the bare colon also takes ` : sha1 : `, whose
    // outer spaces were trimmed away.
    let parts: Vec<&str> = s.split(':').map(str::trim).collect();
    if parts.len() > 3 {
        return Err(format!("invalid File `{s}`: more than three hashes"));
    }
    let mut slots: [Option<String>; 3] = [None, None, None];
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        let kind = HashKind::of(part).ok_or_else(|| {
            format!("invalid File `{s}`: `{part}` is not an md5, sha1 or sha256 hex hash")
        })?;
        let slot = &mut slots[kind.index()];
        if slot.is_some() {
            return Err(format!("invalid File `{s}`: two hashes of the same kind"));
        }
        *slot = Some(part.to_ascii_uppercase());
    }
    let present: Vec<String> = slots.into_iter().flatten().collect();
    if present.is_empty() {
        return Err(format!("invalid File `{s}`: no hash"));
    }
    Ok(present.join(" : "))
}

/// `ASN12345` (upper case), the number fitting 32 bits.
fn canonical_asn(s: &str) -> Result<String, String> {
    let upper = s.to_ascii_uppercase();
    let digits = upper.strip_prefix("ASN").unwrap_or("");
    if digits.is_empty() || digits.parse::<u32>().is_err() {
        return Err(format!(
            "invalid ASN `{s}`: expected ASN followed by a number"
        ));
    }
    Ok(upper)
}

/// `address/prefix` with a prefix that fits the address family; lower case.
fn canonical_cidr(s: &str) -> Result<String, String> {
    let bad = || format!("invalid CIDR `{s}`: expected address/prefix");
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = match ip.parse::<IpAddr>().map_err(|_| bad())? {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if prefix > max {
        return Err(format!("invalid CIDR `{s}`: prefix longer than {max}"));
    }
    Ok(s.to_ascii_lowercase())
}

const REGISTRY_VALUE_TYPES: &[&str] = &[
    "REG_NONE",
    "REG_BINARY",
    "REG_DWORD",
    "REG_DWORD_LITTLE_ENDIAN",
    "REG_DWORD_BIG_ENDIAN",
    "REG_EXPAND_SZ",
    "REG_LINK",
    "REG_MULTI_SZ",
    "REG_QWORD",
    "REG_QWORD_LITTLE_ENDIAN",
    "REG_SZ",
];

/// `key : value name : value type`, the key required and the value type from the known list.
fn canonical_registry_key(s: &str) -> Result<String, String> {
    let parts = split_multi(s);
    let [key, name, kind] = parts.as_slice() else {
        return Err(format!(
            "invalid Registry Key `{s}`: expected `key : value name : value type`"
        ));
    };
    if key.is_empty() {
        return Err(format!("invalid Registry Key `{s}`: empty key name"));
    }
    if !REGISTRY_VALUE_TYPES.contains(kind) {
        return Err(format!(
            "invalid Registry Key `{s}`: value type `{kind}` is not one of {}",
            REGISTRY_VALUE_TYPES.join(", ")
        ));
    }
    Ok(format!("{key} : {name} : {kind}"))
}

/// Splits a multi-value summary on ` : `, trimming each part (empty parts are kept).
fn split_multi(s: &str) -> Vec<&str> {
    s.split(" : ").map(str::trim).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: IndicatorType, s: &str) -> String {
        t.canonical_summary(s)
            .unwrap_or_else(|e| panic!("{t} `{s}` rejected: {e}"))
    }

    fn bad(t: IndicatorType, s: &str) -> String {
        t.canonical_summary(s)
            .expect_err(&format!("{t} `{s}` accepted"))
    }

    #[test]
    fn type_names_parse_loosely_and_print_as_the_api_spells_them() {
        assert_eq!(
            IndicatorType::parse("email address"),
            Some(IndicatorType::EmailAddress)
        );
        assert_eq!(IndicatorType::parse("url"), Some(IndicatorType::Url));
        assert_eq!(
            IndicatorType::parse("Registry Key"),
            Some(IndicatorType::RegistryKey)
        );
        assert_eq!(IndicatorType::parse("Hostname"), None);
        for t in IndicatorType::ALL {
            assert_eq!(IndicatorType::parse(t.as_str()), Some(t));
        }
        assert_eq!(
            GroupType::parse("course of action"),
            Some(GroupType::CourseOfAction)
        );
        assert_eq!(GroupType::parse("Task"), None);
        for t in GroupType::ALL {
            assert_eq!(GroupType::parse(t.as_str()), Some(t));
        }
        assert_eq!(GroupType::Vulnerability.branch(), "vulnerabilities");
    }

    #[test]
    fn addresses() {
        assert_eq!(ok(IndicatorType::Address, " 10.0.0.1 "), "10.0.0.1");
        assert_eq!(
            ok(IndicatorType::Address, "2001:DB8::1"),
            "2001:db8:0:0:0:0:0:1"
        );
        assert_eq!(
            ok(IndicatorType::Address, "2001:0db8:0000::00ff"),
            "2001:db8:0:0:0:0:0:ff"
        );
        bad(IndicatorType::Address, "10.0.0.256");
        bad(IndicatorType::Address, "example.com");
        bad(IndicatorType::Address, "");
    }

    #[test]
    fn hosts_emails_and_urls() {
        assert_eq!(ok(IndicatorType::Host, "BadGuyz.COM"), "badguyz.com");
        assert_eq!(
            ok(IndicatorType::Host, "a_b.example.com."),
            "a_b.example.com"
        );
        bad(IndicatorType::Host, "bad host.com");
        bad(IndicatorType::Host, "-x.com");
        bad(IndicatorType::Host, "a..com");
        bad(IndicatorType::Host, "1.2.3.4");
        assert_eq!(
            ok(IndicatorType::EmailAddress, "Bob@Example.COM"),
            "Bob@example.com"
        );
        bad(IndicatorType::EmailAddress, "bob");
        bad(IndicatorType::EmailAddress, "@example.com");
        bad(IndicatorType::EmailAddress, "bob@bad host");
        assert_eq!(
            ok(IndicatorType::Url, "HTTP://User@Evil.EXAMPLE:8080/Path?Q=A"),
            "http://User@evil.example:8080/Path?Q=A"
        );
        bad(IndicatorType::Url, "evil.example/path");
        bad(IndicatorType::Url, "http://evil .example/");
        bad(IndicatorType::Url, "mailto:bob@example.com");
    }

    #[test]
    fn files() {
        let md5 = "be7de2f0cf48294400c714c9e28ecd01";
        let sha1 = "a".repeat(40);
        let sha256 = "b".repeat(64);
        assert_eq!(ok(IndicatorType::File, md5), md5.to_uppercase());
        assert_eq!(
            ok(IndicatorType::File, &format!("{sha256} : {md5}")),
            format!("{} : {}", md5.to_uppercase(), sha256.to_uppercase())
        );
        assert_eq!(
            ok(IndicatorType::File, &format!(" : {sha1} : ")),
            sha1.to_uppercase()
        );
        assert_eq!(
            ok(IndicatorType::File, &format!("{md5} : {sha1} : {sha256}")),
            format!(
                "{} : {} : {}",
                md5.to_uppercase(),
                sha1.to_uppercase(),
                sha256.to_uppercase()
            )
        );
        bad(IndicatorType::File, "abc");
        bad(IndicatorType::File, &format!("{md5} : {md5}"));
        bad(IndicatorType::File, " : : ");
        bad(IndicatorType::File, &"g".repeat(32));
    }

    #[test]
    fn asn_cidr_registry_and_free_text() {
        assert_eq!(ok(IndicatorType::Asn, "asn12345"), "ASN12345");
        bad(IndicatorType::Asn, "AS12345");
        bad(IndicatorType::Asn, "ASN");
        assert_eq!(ok(IndicatorType::Cidr, "10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(ok(IndicatorType::Cidr, "2001:DB8::/32"), "2001:db8::/32");
        bad(IndicatorType::Cidr, "10.0.0.0/33");
        bad(IndicatorType::Cidr, "10.0.0.0");
        assert_eq!(
            ok(
                IndicatorType::RegistryKey,
                "HKLM\\Software\\Run :  evil : REG_SZ"
            ),
            "HKLM\\Software\\Run : evil : REG_SZ"
        );
        bad(IndicatorType::RegistryKey, "HKLM\\Run : evil : REG_TEXT");
        bad(IndicatorType::RegistryKey, "HKLM\\Run");
        assert_eq!(ok(IndicatorType::Mutex, "Global\\AbC"), "Global\\AbC");
        assert_eq!(
            ok(IndicatorType::EmailSubject, "Your invoice"),
            "Your invoice"
        );
        bad(IndicatorType::UserAgent, "   ");
        bad(IndicatorType::Mutex, "a\u{0}b");
    }

    #[test]
    fn names_tags_ratings_confidence() {
        assert!(check_group_name(&"x".repeat(100)).is_ok());
        assert!(check_group_name(&"x".repeat(101)).is_err());
        assert!(check_group_name("  ").is_err());
        assert!(check_group_name("a\u{0}b").is_err());
        assert!(check_tag(&"t".repeat(128)).is_ok());
        assert!(check_tag(&"t".repeat(129)).is_err());
        assert!(check_rating(0.0).is_ok() && check_rating(5.0).is_ok());
        assert!(check_rating(5.5).is_err() && check_rating(f64::NAN).is_err());
        assert!(check_confidence(100).is_ok() && check_confidence(101).is_err());
    }
}
