//! Validating and upserting one item of a job's file: a group by xid, an indicator by type
//! and normalized summary (File indicators merged on any shared hash), an association as a
//! set member; and how tags and attributes are written.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::process::Ctx;
use super::rules::{
    EVENT_STATUSES, INCIDENT_STATUSES, group_branch, merge_hashes, validate_summary,
};
use super::state::{Attr, AttrWrite, SimGroup, SimIndicator};
use super::wire::error_entry;

impl Ctx<'_> {
    /// Validates and upserts a group by xid (or deletes it).
    pub(super) fn group(&mut self, g: &Value) -> Result<(), Value> {
        let name = g.get("name").and_then(Value::as_str).unwrap_or_default();
        let kind = g.get("type").and_then(Value::as_str).unwrap_or_default();
        let xid = g.get("xid").and_then(Value::as_str).unwrap_or_default();
        let invalid = |what: &str| {
            error_entry(
                format!("{kind} {name} has an invalid {what}."),
                Some(format!("{name} is not valid.")),
            )
        };
        if name.trim().is_empty() || name.chars().count() > 100 {
            return Err(invalid("name"));
        }
        if xid.is_empty() {
            return Err(invalid("xid"));
        }
        if group_branch(kind).is_none() {
            return Err(invalid("type"));
        }
        let required: &[&str] = match kind {
            "Signature" => &["fileName", "fileText", "fileType"],
            "Email" => &["subject", "header", "body"],
            "Document" | "Report" => &["fileName"],
            _ => &[],
        };
        if let Some(f) = required
            .iter()
            .find(|f| g.get(**f).is_none_or(Value::is_null))
        {
            return Err(invalid(f));
        }
        if let Some(status) = g.get("status").and_then(Value::as_str) {
            let allowed: &[&str] = match kind {
                "Incident" => INCIDENT_STATUSES,
                "Event" => EVENT_STATUSES,
                _ => &[],
            };
            if !allowed.is_empty() && !allowed.contains(&status) {
                return Err(invalid("status"));
            }
        }
        if self.settings.delete {
            if let Some(old) = self.owner.groups.remove(xid) {
                self.owner.associations.retain(|(gid, _, _)| *gid != old.id);
            }
            return Ok(());
        }
        let tags = tag_names(g);
        let attributes = attributes(g);
        let fields = extra_fields(
            g,
            &[
                "name",
                "type",
                "xid",
                "tag",
                "attribute",
                "associatedGroupXid",
                "associatedIndicators",
            ],
        );
        let (attr_write, replace_tags) = (self.settings.attr_write, self.settings.replace_tags);
        let id = match self.owner.groups.get(xid) {
            Some(existing) => existing.id,
            None => self.id(),
        };
        let entry = self
            .owner
            .groups
            .entry(xid.to_string())
            .or_insert_with(|| SimGroup {
                id,
                xid: xid.to_string(),
                name: name.to_string(),
                kind: kind.to_string(),
                tags: BTreeSet::new(),
                attributes: Vec::new(),
                fields: Map::new(),
            });
        // A matching xid overwrites the group (spec §3.3).
        entry.name = name.to_string();
        entry.kind = kind.to_string();
        entry.fields.extend(fields);
        write_tags(&mut entry.tags, tags, replace_tags);
        write_attributes(&mut entry.attributes, attributes, attr_write);
        Ok(())
    }

    /// Validates and upserts an indicator by type + summary, with its associated groups and
    /// file occurrences.
    pub(super) fn indicator(&mut self, i: &Value) -> Result<(), Value> {
        let kind = i.get("type").and_then(Value::as_str).unwrap_or_default();
        let raw = i.get("summary").and_then(Value::as_str).unwrap_or_default();
        let source = Some(raw.to_string());
        let summary = match validate_summary(kind, raw) {
            Ok(s) => s,
            Err(why) => {
                return Err(error_entry(
                    format!("Indicator {raw} of type {kind} is invalid: {why}"),
                    source,
                ));
            }
        };
        if self.behaviour.reject_summaries.iter().any(|r| r == raw) {
            return Err(error_entry(
                format!("Indicator {raw} was rejected by an indicator exclusion list"),
                source,
            ));
        }
        if let Some(r) = i.get("rating")
            && !r.as_f64().is_some_and(|r| (0.0..=5.0).contains(&r))
        {
            return Err(error_entry(
                format!("Indicator {raw} has an invalid rating"),
                source,
            ));
        }
        if let Some(c) = i.get("confidence")
            && c.as_u64().is_none_or(|c| c > 100)
        {
            return Err(error_entry(
                format!("Indicator {raw} has an invalid confidence"),
                source,
            ));
        }
        let occurrences = i
            .get("fileOccurrence")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !occurrences.is_empty() && kind != "File" {
            return Err(error_entry(
                format!("Indicator {raw}: file occurrences are only valid on File indicators"),
                source,
            ));
        }
        let key = self.indicator_key(kind, &summary);
        if self.settings.delete {
            self.owner.indicators.remove(&key);
            self.owner
                .associations
                .retain(|(_, t, k)| (t, k) != (&key.0, &key.1));
            return Ok(());
        }
        self.upsert_indicator(kind, &summary, key.clone(), i, occurrences);

        // Associations: the indicator is saved even if one fails, and the error names it.
        let xids: Vec<String> = i
            .get("associatedGroups")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|g| {
                        g.get("groupXid")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for xid in xids {
            match self.owner.groups.get(&xid) {
                Some(g) => {
                    self.owner
                        .associations
                        .insert((g.id, key.0.clone(), key.1.clone()));
                }
                None => {
                    self.run.errors.push(error_entry(
                        format!("Association failed: no group with xid {xid} in this owner"),
                        Some(raw.to_string()),
                    ));
                    self.run.counts.error_association_count += 1;
                }
            }
        }
        Ok(())
    }

    /// The key an indicator is stored under: an existing File sharing a hash, else type plus
    /// normalized summary.
    fn indicator_key(&self, kind: &str, summary: &str) -> (String, String) {
        if kind == "File" {
            for hash in summary.split(" : ") {
                if let Some(k) = self.owner.file_hashes.get(hash) {
                    return k.clone();
                }
            }
        }
        (kind.to_string(), summary.to_string())
    }

    fn upsert_indicator(
        &mut self,
        kind: &str,
        summary: &str,
        key: (String, String),
        i: &Value,
        occurrences: Vec<Value>,
    ) {
        let id = match self.owner.indicators.get(&key) {
            Some(existing) => existing.id,
            None => self.id(),
        };
        let (attr_write, replace_tags) = (self.settings.attr_write, self.settings.replace_tags);
        let entry = self
            .owner
            .indicators
            .entry(key.clone())
            .or_insert_with(|| SimIndicator {
                id,
                kind: kind.to_string(),
                summary: summary.to_string(),
                rating: None,
                confidence: None,
                tags: BTreeSet::new(),
                attributes: Vec::new(),
                file_occurrences: Vec::new(),
                fields: Map::new(),
            });
        if kind == "File" {
            entry.summary = merge_hashes(&entry.summary, summary);
            for hash in entry.summary.split(" : ") {
                self.owner.file_hashes.insert(hash.to_string(), key.clone());
            }
        }
        if let Some(r) = i.get("rating").and_then(Value::as_f64) {
            entry.rating = Some(r);
        }
        if let Some(c) = i.get("confidence").and_then(Value::as_u64) {
            entry.confidence = Some(c);
        }
        entry.fields.extend(extra_fields(
            i,
            &[
                "summary",
                "type",
                "rating",
                "confidence",
                "tag",
                "attribute",
                "associatedGroups",
                "associatedIndicators",
                "fileOccurrence",
                "xid",
            ],
        ));
        write_tags(&mut entry.tags, tag_names(i), replace_tags);
        write_attributes(&mut entry.attributes, attributes(i), attr_write);
        for o in occurrences {
            if !entry.file_occurrences.contains(&o) {
                entry.file_occurrences.push(o);
            }
        }
    }

    /// An `association` entry between a group and an indicator, by ref (xid / summary) or id.
    pub(super) fn association(&mut self, a: &Value) -> Result<(), Value> {
        let side = |n: u8| -> Result<Side, String> {
            let ty = a.get(format!("type_{n}")).and_then(Value::as_str);
            if let Some(id) = a.get(format!("id_{n}")).and_then(Value::as_u64) {
                return Ok(Side::Id(id));
            }
            match a.get(format!("ref_{n}")).and_then(Value::as_str) {
                Some(r) => Ok(Side::Ref(r.to_string(), ty.map(str::to_string))),
                None => Err(format!("association needs ref_{n} or id_{n}")),
            }
        };
        let source = a
            .get("ref_1")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| a.get("id_1").map(Value::to_string));
        let fail = |why: String| error_entry(format!("Association failed: {why}"), source.clone());
        let (s1, s2) = (side(1).map_err(&fail)?, side(2).map_err(&fail)?);
        let group = self.find_group(&s1).or_else(|| self.find_group(&s2));
        let indicator = self
            .find_indicator(&s1)
            .or_else(|| self.find_indicator(&s2));
        match (group, indicator) {
            (Some(gid), Some((t, k))) => {
                self.owner.associations.insert((gid, t, k));
                Ok(())
            }
            (None, _) => Err(fail("the group side was not found in this owner".into())),
            (_, None) => Err(fail(
                "the indicator side was not found in this owner".into(),
            )),
        }
    }

    fn find_group(&self, s: &Side) -> Option<u64> {
        match s {
            Side::Ref(xid, None) => self.owner.groups.get(xid).map(|g| g.id),
            Side::Id(id) => self
                .owner
                .groups
                .values()
                .find(|g| g.id == *id)
                .map(|g| g.id),
            Side::Ref(_, Some(_)) => None,
        }
    }

    fn find_indicator(&self, s: &Side) -> Option<(String, String)> {
        match s {
            Side::Ref(summary, Some(kind)) => {
                let normalized = validate_summary(kind, summary).ok()?;
                let key = self.indicator_key(kind, &normalized);
                self.owner.indicators.contains_key(&key).then_some(key)
            }
            Side::Id(id) => self
                .owner
                .indicators
                .iter()
                .find(|(_, i)| i.id == *id)
                .map(|(k, _)| k.clone()),
            Side::Ref(_, None) => None,
        }
    }
}

/// One side of an `association` entry: a ref (with `type_*` for an indicator) or an id.
enum Side {
    Ref(String, Option<String>),
    Id(u64),
}

fn tag_names(v: &Value) -> Vec<String> {
    v.get("tag")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn attributes(v: &Value) -> Vec<Attr> {
    v.get("attribute")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    Some(Attr {
                        kind: x.get("type")?.as_str()?.to_string(),
                        value: x.get("value")?.as_str()?.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn extra_fields(v: &Value, known: &[&str]) -> Map<String, Value> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Tags are case-insensitive: an incoming tag matching an existing one in another case is the
/// same tag.
fn write_tags(existing: &mut BTreeSet<String>, incoming: Vec<String>, replace: bool) {
    if replace {
        existing.clear();
    }
    for t in incoming {
        if !existing.iter().any(|e| e.eq_ignore_ascii_case(&t)) {
            existing.insert(t);
        }
    }
}

fn write_attributes(existing: &mut Vec<Attr>, incoming: Vec<Attr>, mode: AttrWrite) {
    match mode {
        AttrWrite::Append => existing.extend(incoming),
        AttrWrite::Replace => *existing = incoming,
        AttrWrite::Singleton => {
            existing.retain(|e| !incoming.iter().any(|i| i.kind == e.kind));
            existing.extend(incoming);
        }
        AttrWrite::Static => {
            if existing.is_empty() {
                *existing = incoming;
            }
        }
    }
}
