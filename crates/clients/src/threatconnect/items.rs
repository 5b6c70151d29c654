//! What a caller queues on a [`crate::threatconnect::BatchWriter`]: groups, indicators, group
//! associations and file occurrences, the typed form of the TcEx Jobs dictionaries.
//!
//! Types are given as text (`"Incident"`, `"Address"`), not as enums, on purpose: data from a
//! case or a feed may name a type the platform does not know, and that must become a failed
//! item with a reason in the report, not a panic or a silently dropped value.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// An attribute (`{type, value, displayed}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    pub attribute_type: String,
    pub value: String,
    /// Show the attribute on the item's page.
    pub displayed: bool,
}

impl Attribute {
    pub fn new(attribute_type: impl Into<String>, value: impl Into<String>) -> Attribute {
        Attribute {
            attribute_type: attribute_type.into(),
            value: value.into(),
            displayed: true,
        }
    }
}

/// A group (Incident, Adversary, ...). Its xid is derived from owner, type and name, so the
/// same group queued again on a later run updates the one already there.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub group_type: String,
    pub name: String,
    pub tags: Vec<String>,
    pub attributes: Vec<Attribute>,
    /// Type-specific fields sent as given (`eventDate`, `status`, `fileName`, ...). The keys the
    /// writer sets itself (`name`, `type`, `xid`, `tag`, `attribute`, associations) are refused.
    pub fields: Map<String, Value>,
}

impl Group {
    pub fn new(group_type: impl Into<String>, name: impl Into<String>) -> Group {
        Group {
            group_type: group_type.into(),
            name: name.into(),
            tags: Vec::new(),
            attributes: Vec::new(),
            fields: Map::new(),
        }
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Group {
        self.tags.push(tag.into());
        self
    }

    pub fn attribute(
        mut self,
        attribute_type: impl Into<String>,
        value: impl Into<String>,
    ) -> Group {
        self.attributes.push(Attribute::new(attribute_type, value));
        self
    }

    /// Sets a type-specific field (`status`, `eventDate`, ...).
    pub fn field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Group {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// How the group is named in a report: `Type:name`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.group_type.trim(), self.name)
    }
}

/// An indicator. Queuing the same indicator twice (same type and canonical summary) merges
/// the two: tags and attributes are united, the higher rating and confidence win, and for the
/// other fields the later value wins (see [`crate::threatconnect::BatchWriter`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    pub indicator_type: String,
    /// The value (`1.2.3.4`, `evil.example`, `md5 : sha1 : sha256`, ...).
    pub summary: String,
    /// 0 to 5.
    pub rating: Option<f64>,
    /// 0 to 100.
    pub confidence: Option<u32>,
    pub tags: Vec<String>,
    pub attributes: Vec<Attribute>,
    /// Other indicator fields sent as given (`description`, `active`, `firstSeen`, `size`, ...).
    /// Keys the writer sets itself (`summary`, `type`, `rating`, hashes, associations, ...) are
    /// refused.
    pub fields: Map<String, Value>,
}

impl Indicator {
    pub fn new(indicator_type: impl Into<String>, summary: impl Into<String>) -> Indicator {
        Indicator {
            indicator_type: indicator_type.into(),
            summary: summary.into(),
            rating: None,
            confidence: None,
            tags: Vec::new(),
            attributes: Vec::new(),
            fields: Map::new(),
        }
    }

    pub fn rating(mut self, rating: f64) -> Indicator {
        self.rating = Some(rating);
        self
    }

    pub fn confidence(mut self, confidence: u32) -> Indicator {
        self.confidence = Some(confidence);
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Indicator {
        self.tags.push(tag.into());
        self
    }

    pub fn attribute(
        mut self,
        attribute_type: impl Into<String>,
        value: impl Into<String>,
    ) -> Indicator {
        self.attributes.push(Attribute::new(attribute_type, value));
        self
    }

    pub fn field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Indicator {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// How the indicator is named in a report when it is invalid: `Type:summary` as given.
    pub fn label(&self) -> String {
        format!("{}:{}", self.indicator_type.trim(), self.summary.trim())
    }
}

/// "Associate this indicator with the group of this type and name". The group may be queued in
/// the same batch (resolved by its xid, no lookup) or already exist in the owner (looked up
/// once by name; two groups with that name make the association fail as ambiguous). The
/// indicator may be queued too or already exist in the owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupAssociation {
    pub group_name: String,
    pub group_type: String,
    pub indicator: String,
    pub indicator_type: String,
}

impl GroupAssociation {
    pub fn new(
        group_type: impl Into<String>,
        group_name: impl Into<String>,
        indicator_type: impl Into<String>,
        indicator: impl Into<String>,
    ) -> GroupAssociation {
        GroupAssociation {
            group_name: group_name.into(),
            group_type: group_type.into(),
            indicator: indicator.into(),
            indicator_type: indicator_type.into(),
        }
    }

    /// `GroupType:name -> IndicatorType:value`, as given.
    pub fn label(&self) -> String {
        format!(
            "{}:{} -> {}:{}",
            self.group_type.trim(),
            self.group_name,
            self.indicator_type.trim(),
            self.indicator.trim()
        )
    }
}

/// Where and when a file was seen. Rides on the File indicator holding `hash` (queued in the
/// same batch, or else sent as a File indicator of just that hash, which updates the existing
/// one). At least one of `file_name`, `path`, `date` is required.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileOccurrence {
    /// An md5, sha1 or sha256 hex hash.
    pub hash: String,
    pub file_name: Option<String>,
    pub path: Option<String>,
    pub date: Option<DateTime<Utc>>,
}

impl FileOccurrence {
    pub fn new(hash: impl Into<String>) -> FileOccurrence {
        FileOccurrence {
            hash: hash.into(),
            file_name: None,
            path: None,
            date: None,
        }
    }

    pub fn file_name(mut self, file_name: impl Into<String>) -> FileOccurrence {
        self.file_name = Some(file_name.into());
        self
    }

    pub fn path(mut self, path: impl Into<String>) -> FileOccurrence {
        self.path = Some(path.into());
        self
    }

    pub fn date(mut self, date: DateTime<Utc>) -> FileOccurrence {
        self.date = Some(date);
        self
    }

    /// `hash|file name|path|date` (empty parts for missing values).
    pub fn label(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.hash.trim(),
            self.file_name.as_deref().unwrap_or(""),
            self.path.as_deref().unwrap_or(""),
            self.date.map(format_date).unwrap_or_default()
        )
    }
}

/// Dates as the reference client writes them: `%Y-%m-%dT%H:%M:%SZ`.
pub fn format_date(d: DateTime<Utc>) -> String {
    d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
