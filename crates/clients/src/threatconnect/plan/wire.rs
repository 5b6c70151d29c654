//! Wire shapes of the V2 input file, borrowing the plan so nothing is copied.

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};

use super::POccurrence;
use crate::threatconnect::items::Attribute;

pub(super) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these shapes cannot fail: every map key is a string and every value is
    // plain data.
    serde_json::to_vec(v).unwrap_or_default()
}

pub(super) fn write_joined(out: &mut Vec<u8>, items: impl Iterator<Item = Vec<u8>>) {
    for (n, item) in items.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item);
    }
}

#[derive(Serialize)]
pub(super) struct GroupWire<'a> {
    pub(super) name: &'a str,
    #[serde(rename = "type")]
    pub(super) group_type: &'a str,
    pub(super) xid: &'a str,
    #[serde(skip_serializing_if = "Tags::is_empty")]
    pub(super) tag: Tags<'a>,
    #[serde(skip_serializing_if = "Attributes::is_empty")]
    pub(super) attribute: Attributes<'a>,
    #[serde(flatten)]
    pub(super) fields: &'a Map<String, Value>,
}

#[derive(Serialize)]
pub(super) struct IndicatorWire<'a> {
    pub(super) summary: &'a str,
    #[serde(rename = "type")]
    pub(super) indicator_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) rating: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) confidence: Option<u32>,
    #[serde(skip_serializing_if = "Tags::is_empty")]
    pub(super) tag: Tags<'a>,
    #[serde(skip_serializing_if = "Attributes::is_empty")]
    pub(super) attribute: Attributes<'a>,
    #[serde(
        rename = "associatedGroups",
        skip_serializing_if = "GroupXids::is_empty"
    )]
    pub(super) associated_groups: GroupXids<'a>,
    #[serde(
        rename = "fileOccurrence",
        skip_serializing_if = "Occurrences::is_empty"
    )]
    pub(super) file_occurrence: Occurrences<'a>,
    #[serde(flatten)]
    pub(super) fields: &'a Map<String, Value>,
}

#[derive(Serialize)]
pub(super) struct AssociationWire<'a> {
    pub(super) ref_1: &'a str,
    pub(super) type_1: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ref_2: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) id_2: Option<u64>,
}

/// `[{"name": tag}, ...]`
pub(super) struct Tags<'a>(pub(super) &'a [String]);
/// `[{"type", "value", "displayed"}, ...]`
pub(super) struct Attributes<'a>(pub(super) &'a [Attribute]);
/// `[{"groupXid": xid}, ...]`
pub(super) struct GroupXids<'a>(pub(super) &'a [&'a str]);
/// `[{"fileName", "path", "date"}, ...]`
pub(super) struct Occurrences<'a>(pub(super) &'a [&'a POccurrence]);

impl Tags<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
impl Attributes<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
impl GroupXids<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
impl Occurrences<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Tags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for t in self.0 {
            seq.serialize_element(&OneField("name", t.as_str()))?;
        }
        seq.end()
    }
}

impl Serialize for GroupXids<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for x in self.0 {
            seq.serialize_element(&OneField("groupXid", x))?;
        }
        seq.end()
    }
}

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct A<'a> {
            #[serde(rename = "type")]
            t: &'a str,
            value: &'a str,
            displayed: bool,
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for a in self.0 {
            seq.serialize_element(&A {
                t: &a.attribute_type,
                value: &a.value,
                displayed: a.displayed,
            })?;
        }
        seq.end()
    }
}

impl Serialize for Occurrences<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct O<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            file_name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            path: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            date: Option<&'a str>,
        }
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for o in self.0 {
            seq.serialize_element(&O {
                file_name: o.file_name.as_deref(),
                path: o.path.as_deref(),
                date: o.date.as_deref(),
            })?;
        }
        seq.end()
    }
}

/// `{key: value}`
struct OneField<'a>(&'static str, &'a str);

impl Serialize for OneField<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(self.0, self.1)?;
        m.end()
    }
}
