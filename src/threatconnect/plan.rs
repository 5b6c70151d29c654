//! The batch writer's client-side work, free of I/O: validate and merge the queue, give groups
//! their xids, resolve associations, split the work into batch jobs within the platform's
//! limits, serialize each job's file, and map the server's error entries back to items.
//!
//! [`Plan`] keeps one row per distinct queued item with its state; the network side
//! ([`crate::threatconnect::batch`]) only moves rows from `Pending` to `Saved` or `Failed`.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::client::{BatchErrorEntry, GroupRef};
use super::items::{Attribute, FileOccurrence, Group, GroupAssociation, Indicator, format_date};
use super::report::{BatchReport, FailedItem, KindReport};
use super::types::{
    GroupType, HashKind, IndicatorType, check_confidence, check_group_name, check_rating, check_tag,
};

/// `errorReason` texts that mean the whole job failed (spec §3.1, both tcex generations).
pub const CRITICAL_ERROR_PATTERNS: [&str; 2] = [
    "Encountered an unexpected Exception while processing batch job",
    "would exceed the number of allowed indicators",
];

/// Bytes of `{"indicator":[],"group":[],"association":[]}`, counted once per job.
const FILE_ENVELOPE_BYTES: usize = 45;

/// Group fields the writer sets itself.
const GROUP_RESERVED: &[&str] = &[
    "name",
    "type",
    "xid",
    "tag",
    "attribute",
    "associatedGroupXid",
    "associatedGroups",
    "associatedIndicators",
];

/// Indicator fields the writer sets itself, including the per-type value fields, which would
/// override `summary` (for File, any hash field makes the server ignore the summary).
const INDICATOR_RESERVED: &[&str] = &[
    "summary",
    "type",
    "xid",
    "rating",
    "confidence",
    "tag",
    "attribute",
    "associatedGroups",
    "associatedIndicators",
    "fileOccurrence",
    "md5",
    "sha1",
    "sha256",
    "ip",
    "address",
    "hostName",
    "text",
    "AS Number",
    "Block",
    "Mutex",
    "Key Name",
    "Value Name",
    "Value Type",
    "User Agent String",
    "Subject",
    "Hashtag",
];

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &str) -> String {
    Sha256::digest(data.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The deterministic xid of a group: SHA-256 hex of `owner NUL type NUL name`. The owner is
/// part of it because xids are unique across the whole instance; NUL cannot occur in a valid
/// name, so different triples never share an input.
pub fn group_xid(owner: &str, group_type: GroupType, name: &str) -> String {
    sha256_hex(&format!("{owner}\0{}\0{name}", group_type.as_str()))
}

/// Where an item stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum State {
    /// Not confirmed saved (yet): ends in `not_saved` if nothing else happens.
    Pending,
    Saved,
    Failed(String),
}

/// One distinct queued item. `item` is `None` for an item refused by validation.
#[derive(Debug)]
pub(super) struct Row<T> {
    pub label: String,
    pub state: State,
    pub item: Option<T>,
    /// Created by the writer (a File carrying occurrences of a hash not queued as an
    /// indicator): sent, but not reported as an indicator.
    pub implicit: bool,
}

impl<T> Row<T> {
    fn valid(label: String, item: T) -> Row<T> {
        Row {
            label,
            state: State::Pending,
            item: Some(item),
            implicit: false,
        }
    }

    fn invalid(label: String, reason: String) -> Row<T> {
        Row {
            label,
            state: State::Failed(reason),
            item: None,
            implicit: false,
        }
    }

    fn is_pending(&self) -> bool {
        self.state == State::Pending
    }

    /// Fails the row if it is still pending (a first failure reason is kept).
    fn fail(&mut self, reason: impl Into<String>) {
        if self.is_pending() {
            self.state = State::Failed(reason.into());
        }
    }
}

#[derive(Debug)]
pub(super) struct PGroup {
    group_type: GroupType,
    name: String,
    xid: String,
    tags: Vec<String>,
    attributes: Vec<Attribute>,
    fields: Map<String, Value>,
}

#[derive(Debug)]
pub(super) struct PIndicator {
    indicator_type: IndicatorType,
    summary: String,
    rating: Option<f64>,
    confidence: Option<u32>,
    tags: Vec<String>,
    attributes: Vec<Attribute>,
    fields: Map<String, Value>,
    /// Associations to groups of this batch, sent as this indicator's `associatedGroups`.
    carried: Vec<usize>,
    occurrences: Vec<usize>,
}

/// The group side of an association.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum GroupTarget {
    /// A group of this batch (index into `groups`).
    InBatch(usize),
    /// A group not in the batch, to be looked up by name.
    Named(GroupType, String),
    /// A group found by the lookup.
    Existing(u64),
}

/// The indicator side of an association.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum IndicatorTarget {
    InBatch(usize),
    /// Not queued: referenced by summary, so it must exist in the owner.
    External(IndicatorType, String),
}

#[derive(Debug)]
pub(super) struct PAssociation {
    group: GroupTarget,
    indicator: IndicatorTarget,
}

impl PAssociation {
    /// Carried by its indicator (`associatedGroups`) when both sides are in the batch;
    /// otherwise an entry of the file's `association` array.
    fn is_carried(&self) -> bool {
        matches!(
            (&self.group, &self.indicator),
            (GroupTarget::InBatch(_), IndicatorTarget::InBatch(_))
        )
    }
}

#[derive(Debug)]
pub(super) struct POccurrence {
    file_name: Option<String>,
    path: Option<String>,
    date: Option<String>,
}

/// The items of one batch job (indices into the plan's rows).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct JobPlan {
    pub groups: Vec<usize>,
    pub indicators: Vec<usize>,
    /// `association` array entries (associations not carried by an indicator).
    pub associations: Vec<usize>,
    /// Estimated file size (an upper bound of what [`Plan::build_file`] produces).
    pub bytes: usize,
}

impl JobPlan {
    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.indicators.is_empty() && self.associations.is_empty()
    }
}

/// Every distinct item of one `process` call and its state.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub owner: String,
    pub groups: Vec<Row<PGroup>>,
    pub indicators: Vec<Row<PIndicator>>,
    pub associations: Vec<Row<PAssociation>>,
    pub occurrences: Vec<Row<POccurrence>>,
    /// Duplicates merged, per kind: groups, indicators, associations, occurrences.
    pub merged: [usize; 4],
    /// Server errors not tied to an item, and notes on what could not be confirmed.
    pub unattributed: Vec<String>,
}

impl Plan {
    /// Validates and merges the queue. Invalid items become failed rows with the reason and
    /// are never sent; references to them fail too.
    pub fn stage(
        owner: &str,
        groups: Vec<Group>,
        indicators: Vec<Indicator>,
        associations: Vec<GroupAssociation>,
        occurrences: Vec<FileOccurrence>,
    ) -> Plan {
        let mut plan = Plan {
            owner: owner.to_string(),
            ..Plan::default()
        };
        let mut st = Staging::default();
        for g in groups {
            plan.stage_group(&mut st, g);
        }
        for i in indicators {
            plan.stage_indicator(&mut st, i);
        }
        for a in associations {
            plan.stage_association(&mut st, a);
        }
        for o in occurrences {
            plan.stage_occurrence(&mut st, o);
        }
        plan
    }

    fn stage_group(&mut self, st: &mut Staging, g: Group) {
        let label = g.label();
        let group_type = match GroupType::parse(&g.group_type) {
            Some(t) => t,
            None => {
                let reason = format!("unknown group type `{}`", g.group_type);
                return self.reject_group(st, label, reason, None);
            }
        };
        let key = (group_type, g.name.clone());
        if let Err(reason) = check_group(&g, group_type) {
            return self.reject_group(st, label, reason, Some(key));
        }
        if let Some(&idx) = st.group_index.get(&key) {
            self.merged[0] += 1;
            if let Some(existing) = self.groups[idx].item.as_mut() {
                union_tags(&mut existing.tags, g.tags);
                union_attributes(&mut existing.attributes, g.attributes);
                existing.fields.extend(g.fields);
            }
            return;
        }
        let item = PGroup {
            group_type,
            xid: group_xid(&self.owner, group_type, &g.name),
            name: g.name,
            tags: dedup_tags(g.tags),
            attributes: dedup_attributes(g.attributes),
            fields: g.fields,
        };
        st.group_index.insert(key, self.groups.len());
        self.groups
            .push(Row::valid(format!("{group_type}:{}", item.name), item));
    }

    fn reject_group(
        &mut self,
        st: &mut Staging,
        label: String,
        reason: String,
        key: Option<(GroupType, String)>,
    ) {
        if let Some(key) = key {
            st.invalid_groups
                .entry(key)
                .or_insert_with(|| reason.clone());
        }
        if !st.invalid_labels[0].insert(label.clone()) {
            self.merged[0] += 1;
            return;
        }
        self.groups.push(Row::invalid(label, reason));
    }

    fn stage_indicator(&mut self, st: &mut Staging, i: Indicator) {
        let (indicator_type, summary) = match canonical(&i.indicator_type, &i.summary) {
            Ok(v) => v,
            Err(reason) => return self.reject_indicator(st, i.label(), reason, None),
        };
        let label = format!("{indicator_type}:{summary}");
        let key = (indicator_type, summary);
        if let Err(reason) = check_indicator(&i) {
            return self.reject_indicator(st, label, reason, Some(key));
        }
        if let Some(&idx) = st.indicator_index.get(&key) {
            self.merged[1] += 1;
            if let Some(existing) = self.indicators[idx].item.as_mut() {
                merge_indicator(existing, i);
            }
            return;
        }
        let item = PIndicator {
            indicator_type,
            summary: key.1.clone(),
            rating: i.rating,
            confidence: i.confidence,
            tags: dedup_tags(i.tags),
            attributes: dedup_attributes(i.attributes),
            fields: i.fields,
            carried: Vec::new(),
            occurrences: Vec::new(),
        };
        if indicator_type == IndicatorType::File {
            for hash in item.summary.split(" : ") {
                st.file_by_hash
                    .entry(hash.to_string())
                    .or_insert(self.indicators.len());
            }
        }
        st.indicator_index.insert(key, self.indicators.len());
        self.indicators.push(Row::valid(label, item));
    }

    fn reject_indicator(
        &mut self,
        st: &mut Staging,
        label: String,
        reason: String,
        key: Option<(IndicatorType, String)>,
    ) {
        if let Some((t, s)) = key {
            if t == IndicatorType::File {
                for hash in s.split(" : ") {
                    st.invalid_hashes
                        .entry(hash.to_string())
                        .or_insert_with(|| reason.clone());
                }
            }
            st.invalid_indicators
                .entry((t, s))
                .or_insert_with(|| reason.clone());
        }
        if !st.invalid_labels[1].insert(label.clone()) {
            self.merged[1] += 1;
            return;
        }
        self.indicators.push(Row::invalid(label, reason));
    }

    fn stage_association(&mut self, st: &mut Staging, a: GroupAssociation) {
        let given = a.label();
        let resolved = self.resolve_association(st, &a);
        let (group, indicator, label) = match resolved {
            Ok(v) => v,
            Err(reason) => {
                if st.invalid_labels[2].insert(given.clone()) {
                    self.associations.push(Row::invalid(given, reason));
                } else {
                    self.merged[2] += 1;
                }
                return;
            }
        };
        if !st.association_keys.insert(label.clone()) {
            self.merged[2] += 1;
            return;
        }
        let idx = self.associations.len();
        let assoc = PAssociation { group, indicator };
        if assoc.is_carried()
            && let IndicatorTarget::InBatch(i) = assoc.indicator
            && let Some(ind) = self.indicators[i].item.as_mut()
        {
            ind.carried.push(idx);
        }
        self.associations.push(Row::valid(label, assoc));
    }

    /// Both sides of an association, and its label in canonical form.
    fn resolve_association(
        &self,
        st: &Staging,
        a: &GroupAssociation,
    ) -> Result<(GroupTarget, IndicatorTarget, String), String> {
        let group_type = GroupType::parse(&a.group_type)
            .ok_or_else(|| format!("unknown group type `{}`", a.group_type))?;
        check_group_name(&a.group_name)?;
        let (indicator_type, summary) = canonical(&a.indicator_type, &a.indicator)?;
        let label = format!(
            "{group_type}:{} -> {indicator_type}:{summary}",
            a.group_name
        );
        let gkey = (group_type, a.group_name.clone());
        let group = if let Some(&g) = st.group_index.get(&gkey) {
            GroupTarget::InBatch(g)
        } else if let Some(reason) = st.invalid_groups.get(&gkey) {
            return Err(format!(
                "group {group_type}:{} is invalid: {reason}",
                a.group_name
            ));
        } else {
            GroupTarget::Named(group_type, a.group_name.clone())
        };
        let ikey = (indicator_type, summary);
        let indicator = if let Some(&i) = st.indicator_index.get(&ikey) {
            IndicatorTarget::InBatch(i)
        } else if let Some(reason) = st.invalid_indicators.get(&ikey) {
            return Err(format!(
                "indicator {indicator_type}:{} is invalid: {reason}",
                ikey.1
            ));
        } else {
            IndicatorTarget::External(ikey.0, ikey.1)
        };
        Ok((group, indicator, label))
    }

    fn stage_occurrence(&mut self, st: &mut Staging, o: FileOccurrence) {
        let given = o.label();
        match self.resolve_occurrence(st, &o) {
            Ok((indicator, label)) => {
                let item = POccurrence {
                    file_name: o.file_name,
                    path: o.path,
                    date: o.date.map(format_date),
                };
                if !st.occurrence_keys.insert(label.clone()) {
                    self.merged[3] += 1;
                    return;
                }
                let idx = self.occurrences.len();
                if let Some(ind) = self.indicators[indicator].item.as_mut() {
                    ind.occurrences.push(idx);
                }
                self.occurrences.push(Row::valid(label, item));
            }
            Err(reason) => {
                if st.invalid_labels[3].insert(given.clone()) {
                    self.occurrences.push(Row::invalid(given, reason));
                } else {
                    self.merged[3] += 1;
                }
            }
        }
    }

    /// The File indicator an occurrence rides on (created implicitly if the hash is not
    /// queued), and the occurrence's label with the hash in canonical (upper) case.
    fn resolve_occurrence(
        &mut self,
        st: &mut Staging,
        o: &FileOccurrence,
    ) -> Result<(usize, String), String> {
        let hash = o.hash.trim().to_ascii_uppercase();
        if HashKind::of(&hash).is_none() {
            return Err(format!(
                "`{}` is not an md5, sha1 or sha256 hex hash",
                o.hash.trim()
            ));
        }
        if o.file_name.is_none() && o.path.is_none() && o.date.is_none() {
            return Err("a file occurrence needs a file name, a path or a date".into());
        }
        let label = FileOccurrence {
            hash: hash.clone(),
            ..o.clone()
        }
        .label();
        if let Some(&i) = st.file_by_hash.get(&hash) {
            return Ok((i, label));
        }
        if let Some(reason) = st.invalid_hashes.get(&hash) {
            return Err(format!("File indicator {hash} is invalid: {reason}"));
        }
        let idx = self.indicators.len();
        let item = PIndicator {
            indicator_type: IndicatorType::File,
            summary: hash.clone(),
            rating: None,
            confidence: None,
            tags: Vec::new(),
            attributes: Vec::new(),
            fields: Map::new(),
            carried: Vec::new(),
            occurrences: Vec::new(),
        };
        let mut row = Row::valid(format!("File:{hash}"), item);
        row.implicit = true;
        self.indicators.push(row);
        st.file_by_hash.insert(hash, idx);
        Ok((idx, label))
    }

    /// The distinct groups that associations name but the batch does not hold.
    pub fn lookups_needed(&self) -> Vec<(GroupType, String)> {
        let mut seen = HashSet::new();
        self.associations
            .iter()
            .filter(|r| r.is_pending())
            .filter_map(|r| match &r.item.as_ref()?.group {
                GroupTarget::Named(t, n) => Some((*t, n.clone())),
                _ => None,
            })
            .filter(|k| seen.insert(k.clone()))
            .collect()
    }

    /// Applies a lookup result to every association naming that group: one match resolves it,
    /// none or several fail it (several = ambiguous, never silently picked).
    pub fn resolve_lookup(
        &mut self,
        group_type: GroupType,
        name: &str,
        found: &Result<Vec<GroupRef>, String>,
    ) {
        let owner = self.owner.clone();
        for row in &mut self.associations {
            let Some(a) = row.item.as_mut() else { continue };
            if a.group != GroupTarget::Named(group_type, name.to_string()) {
                continue;
            }
            match found {
                Ok(list) if list.len() == 1 => a.group = GroupTarget::Existing(list[0].id),
                Ok(list) if list.is_empty() => row.fail(format!(
                    "no {group_type} named `{name}` in the batch or in owner `{owner}`"
                )),
                Ok(list) => row.fail(format!(
                    "ambiguous: {} {group_type} groups are named `{name}` in owner `{owner}` (ids {})",
                    list.len(),
                    list.iter()
                        .map(|g| g.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(e) => row.fail(format!("looking up {group_type} `{name}` failed: {e}")),
            }
        }
    }

    /// Splits the pending work into jobs of at most `max_indicators` indicators and
    /// `max_bytes` bytes. Jobs run one after another, so a group only has to be in the first
    /// job that references it; later jobs find it in the owner by its xid. Items too large for
    /// any upload fail (with what depends on them).
    pub fn split(&mut self, max_indicators: usize, max_bytes: usize) -> Vec<JobPlan> {
        let budget = max_bytes.saturating_sub(FILE_ENVELOPE_BYTES);
        let max_indicators = max_indicators.max(1);
        // Groups first: an oversized group fails before indicators measure their references.
        let group_size: Vec<usize> = (0..self.groups.len())
            .map(|g| self.group_json(g).len() + 1)
            .collect();
        for (g, &size) in group_size.iter().enumerate() {
            if size > budget && self.groups[g].is_pending() {
                self.fail_group(g, too_large(size, max_bytes));
            }
        }
        let mut placed = vec![false; self.groups.len()];
        let mut jobs = Vec::new();
        let mut cur = JobPlan::default();

        for i in 0..self.indicators.len() {
            if !self.indicators[i].is_pending() {
                continue;
            }
            let needed = self.groups_needed_by_indicator(i, &placed);
            let size = self.indicator_json(i).len()
                + 1
                + needed.iter().map(|&g| group_size[g]).sum::<usize>();
            if size > budget {
                self.fail_indicator(i, too_large(size, max_bytes));
                continue;
            }
            if cur.indicators.len() >= max_indicators || cur.bytes + size > budget {
                jobs.push(std::mem::take(&mut cur));
            }
            for g in needed {
                placed[g] = true;
                cur.groups.push(g);
            }
            cur.indicators.push(i);
            cur.bytes += size;
        }

        for a in 0..self.associations.len() {
            let Some(assoc) = self.associations[a].item.as_ref() else {
                continue;
            };
            if !self.associations[a].is_pending() || assoc.is_carried() {
                continue;
            }
            let needed: Vec<usize> = match assoc.group {
                GroupTarget::InBatch(g) if !placed[g] && self.groups[g].is_pending() => vec![g],
                _ => Vec::new(),
            };
            let size = self.association_json(a).len()
                + 1
                + needed.iter().map(|&g| group_size[g]).sum::<usize>();
            if cur.bytes + size > budget {
                jobs.push(std::mem::take(&mut cur));
            }
            for g in needed {
                placed[g] = true;
                cur.groups.push(g);
            }
            cur.associations.push(a);
            cur.bytes += size;
        }

        for (g, is_placed) in placed.iter().enumerate() {
            if *is_placed || !self.groups[g].is_pending() {
                continue;
            }
            if cur.bytes + group_size[g] > budget {
                jobs.push(std::mem::take(&mut cur));
            }
            cur.groups.push(g);
            cur.bytes += group_size[g];
        }
        if !cur.is_empty() {
            jobs.push(cur);
        }
        for job in &mut jobs {
            job.bytes += FILE_ENVELOPE_BYTES;
        }
        jobs
    }

    /// Groups of the batch an indicator's carried associations reference, not yet placed in
    /// a job (each once).
    fn groups_needed_by_indicator(&self, i: usize, placed: &[bool]) -> Vec<usize> {
        let mut needed = Vec::new();
        if let Some(ind) = self.indicators[i].item.as_ref() {
            for &a in &ind.carried {
                if let Some(GroupTarget::InBatch(g)) =
                    self.associations[a].item.as_ref().map(|x| &x.group)
                    && !placed[*g]
                    && self.groups[*g].is_pending()
                    && !needed.contains(g)
                {
                    needed.push(*g);
                }
            }
        }
        needed
    }

    /// The job's input file. References to items that failed in an earlier job are left out,
    /// and the associations that needed them fail with the reason.
    pub fn build_file(&mut self, job: &JobPlan) -> Vec<u8> {
        self.fail_references_to_failed(job);
        let mut out = Vec::with_capacity(job.bytes);
        out.extend_from_slice(br#"{"indicator":["#);
        write_joined(
            &mut out,
            job.indicators.iter().map(|&i| self.indicator_json(i)),
        );
        out.extend_from_slice(br#"],"group":["#);
        write_joined(&mut out, job.groups.iter().map(|&g| self.group_json(g)));
        // `association` must come after the other two arrays (spec §3.3).
        out.extend_from_slice(br#"],"association":["#);
        let live: Vec<usize> = job
            .associations
            .iter()
            .copied()
            .filter(|&a| self.associations[a].is_pending())
            .collect();
        write_joined(&mut out, live.iter().map(|&a| self.association_json(a)));
        out.extend_from_slice(b"]}");
        out
    }

    fn fail_references_to_failed(&mut self, job: &JobPlan) {
        let mut to_fail = Vec::new();
        let carried = job
            .indicators
            .iter()
            .filter_map(|&i| self.indicators[i].item.as_ref())
            .flat_map(|ind| ind.carried.iter().copied());
        for a in carried.chain(job.associations.iter().copied()) {
            if !self.associations[a].is_pending() {
                continue;
            }
            if let Some(reason) = self.failed_side(a) {
                to_fail.push((a, reason));
            }
        }
        for (a, reason) in to_fail {
            self.associations[a].fail(reason);
        }
    }

    /// Why an association cannot be sent because one of its in-batch sides failed, if so.
    fn failed_side(&self, a: usize) -> Option<String> {
        let assoc = self.associations[a].item.as_ref()?;
        if let GroupTarget::InBatch(g) = assoc.group
            && let State::Failed(r) = &self.groups[g].state
        {
            return Some(format!("group {} was not saved: {r}", self.groups[g].label));
        }
        if let IndicatorTarget::InBatch(i) = assoc.indicator
            && let State::Failed(r) = &self.indicators[i].state
        {
            return Some(format!(
                "indicator {} was not saved: {r}",
                self.indicators[i].label
            ));
        }
        None
    }

    fn group_json(&self, g: usize) -> Vec<u8> {
        let Some(group) = self.groups[g].item.as_ref() else {
            return Vec::new();
        };
        to_json(&GroupWire {
            name: &group.name,
            group_type: group.group_type.as_str(),
            xid: &group.xid,
            tag: Tags(&group.tags),
            attribute: Attributes(&group.attributes),
            fields: &group.fields,
        })
    }

    fn indicator_json(&self, i: usize) -> Vec<u8> {
        let Some(ind) = self.indicators[i].item.as_ref() else {
            return Vec::new();
        };
        let xids: Vec<&str> = ind
            .carried
            .iter()
            .filter(|&&a| self.associations[a].is_pending())
            .filter_map(|&a| match self.associations[a].item.as_ref()?.group {
                GroupTarget::InBatch(g) if !matches!(self.groups[g].state, State::Failed(_)) => {
                    self.groups[g].item.as_ref().map(|x| x.xid.as_str())
                }
                _ => None,
            })
            .collect();
        let occurrences: Vec<&POccurrence> = ind
            .occurrences
            .iter()
            .filter(|&&o| self.occurrences[o].is_pending())
            .filter_map(|&o| self.occurrences[o].item.as_ref())
            .collect();
        to_json(&IndicatorWire {
            summary: &ind.summary,
            indicator_type: ind.indicator_type.as_str(),
            rating: ind.rating,
            confidence: ind.confidence,
            tag: Tags(&ind.tags),
            attribute: Attributes(&ind.attributes),
            associated_groups: GroupXids(&xids),
            file_occurrence: Occurrences(&occurrences),
            fields: &ind.fields,
        })
    }

    fn association_json(&self, a: usize) -> Vec<u8> {
        let Some(assoc) = self.associations[a].item.as_ref() else {
            return Vec::new();
        };
        let (summary, indicator_type) = match &assoc.indicator {
            IndicatorTarget::InBatch(i) => match self.indicators[*i].item.as_ref() {
                Some(ind) => (ind.summary.as_str(), ind.indicator_type),
                None => return Vec::new(),
            },
            IndicatorTarget::External(t, s) => (s.as_str(), *t),
        };
        let wire = match &assoc.group {
            GroupTarget::InBatch(g) => AssociationWire {
                ref_1: summary,
                type_1: indicator_type.as_str(),
                ref_2: self.groups[*g].item.as_ref().map(|x| x.xid.as_str()),
                id_2: None,
            },
            GroupTarget::Existing(id) => AssociationWire {
                ref_1: summary,
                type_1: indicator_type.as_str(),
                ref_2: None,
                id_2: Some(*id),
            },
            // Unresolved names never reach a file: the lookup resolved or failed them.
            GroupTarget::Named(..) => return Vec::new(),
        };
        to_json(&wire)
    }

    /// Fails a group and every pending association to it.
    pub fn fail_group(&mut self, g: usize, reason: String) {
        let label = self.groups[g].label.clone();
        self.groups[g].fail(reason.clone());
        for row in &mut self.associations {
            if matches!(row.item.as_ref().map(|a| &a.group), Some(GroupTarget::InBatch(x)) if *x == g)
            {
                row.fail(format!("group {label} was not saved: {reason}"));
            }
        }
    }

    /// Fails an indicator and every pending association and occurrence that needs it.
    pub fn fail_indicator(&mut self, i: usize, reason: String) {
        let label = self.indicators[i].label.clone();
        let implicit = self.indicators[i].implicit;
        self.indicators[i].fail(reason.clone());
        let why = |r: &str| {
            if implicit {
                r.to_string()
            } else {
                format!("indicator {label} was not saved: {r}")
            }
        };
        for row in &mut self.associations {
            if matches!(row.item.as_ref().map(|a| &a.indicator), Some(IndicatorTarget::InBatch(x)) if *x == i)
            {
                row.fail(why(&reason));
            }
        }
        if let Some(ind) = self.indicators[i].item.as_ref() {
            for &o in &ind.occurrences {
                self.occurrences[o].fail(why(&reason));
            }
        }
    }

    /// Maps a job's error-file entries back to its items (see [`ErrorIndex`] for the rules),
    /// failing what they name and what depends on it; entries tied to nothing go to
    /// `unattributed`. Returns the first critical error, if any: the job failed as a whole.
    pub fn apply_errors(&mut self, job: &JobPlan, entries: &[BatchErrorEntry]) -> Option<String> {
        let index = ErrorIndex::new(self, job);
        let mut critical_error = None;
        for entry in entries {
            let reason = entry
                .error_reason
                .as_deref()
                .or(entry.error_message.as_deref())
                .unwrap_or("unknown error (no reason given)")
                .to_string();
            let critical = [
                entry.error_reason.as_deref(),
                entry.error_message.as_deref(),
            ]
            .into_iter()
            .flatten()
            .find(|t| CRITICAL_ERROR_PATTERNS.iter().any(|p| t.contains(p)));
            if let Some(text) = critical {
                critical_error.get_or_insert_with(|| text.to_string());
                continue;
            }
            let source = entry.error_source.as_deref().unwrap_or("");
            match index.find(source) {
                Some(Target::Group(g)) => self.fail_group(g, reason),
                Some(Target::Indicator(i)) if mentions_association(&reason) => {
                    self.fail_carried(i, &reason)
                }
                Some(Target::Indicator(i)) => self.fail_indicator(i, reason),
                Some(Target::Associations(list)) => {
                    for a in list {
                        self.associations[a].fail(reason.clone());
                    }
                }
                None => self.unattributed.push(if source.is_empty() {
                    reason
                } else {
                    format!("{source}: {reason}")
                }),
            }
        }
        critical_error
    }

    /// An association error reported on an indicator: fails the carried associations whose
    /// group the reason names (by xid or name), or all of them if it names none.
    fn fail_carried(&mut self, i: usize, reason: &str) {
        let carried = self.indicators[i]
            .item
            .as_ref()
            .map(|x| x.carried.clone())
            .unwrap_or_default();
        let named: Vec<usize> = carried
            .iter()
            .copied()
            .filter(
                |&a| match self.associations[a].item.as_ref().map(|x| &x.group) {
                    Some(GroupTarget::InBatch(g)) => self.groups[*g]
                        .item
                        .as_ref()
                        .is_some_and(|x| reason.contains(&x.xid) || reason.contains(&x.name)),
                    _ => false,
                },
            )
            .collect();
        let targets = if named.is_empty() { carried } else { named };
        for a in targets {
            self.associations[a].fail(reason.to_string());
        }
    }

    /// After a job completed: its items still pending are saved, unless the server left some
    /// unprocessed (it does not say which, so they stay not saved).
    pub fn finish_job(&mut self, job: &JobPlan, unprocessed: u64) {
        if unprocessed > 0 {
            return;
        }
        for &g in &job.groups {
            saved(&mut self.groups[g]);
        }
        for &i in &job.indicators {
            saved(&mut self.indicators[i]);
            let (carried, occurrences) = match self.indicators[i].item.as_ref() {
                Some(x) => (x.carried.clone(), x.occurrences.clone()),
                None => continue,
            };
            // Carried associations and occurrences went out with this indicator only if it
            // was saved; a failed indicator already failed them.
            for a in carried {
                saved(&mut self.associations[a]);
            }
            for o in occurrences {
                saved(&mut self.occurrences[o]);
            }
        }
        for &a in &job.associations {
            saved(&mut self.associations[a]);
        }
    }

    /// The buckets, in queue order. Implicit File indicators are not reported as indicators.
    pub fn report(&self) -> BatchReport {
        BatchReport {
            owner: self.owner.clone(),
            groups: kind_report(&self.groups, self.merged[0]),
            indicators: kind_report(&self.indicators, self.merged[1]),
            group_associations: kind_report(&self.associations, self.merged[2]),
            file_occurrences: kind_report(&self.occurrences, self.merged[3]),
            unattributed_errors: self.unattributed.clone(),
            ..BatchReport::default()
        }
    }
}

fn saved<T>(row: &mut Row<T>) {
    if row.is_pending() {
        row.state = State::Saved;
    }
}

fn kind_report<T>(rows: &[Row<T>], merged: usize) -> KindReport {
    let mut k = KindReport {
        duplicates_merged: merged,
        ..KindReport::default()
    };
    for row in rows.iter().filter(|r| !r.implicit) {
        k.submitted.push(row.label.clone());
        match &row.state {
            State::Pending => k.not_saved.push(row.label.clone()),
            State::Saved => k.saved.push(row.label.clone()),
            State::Failed(reason) => k.failed.push(FailedItem {
                item: row.label.clone(),
                reason: reason.clone(),
            }),
        }
    }
    k
}

fn too_large(size: usize, max: usize) -> String {
    format!("too large for one batch upload ({size} bytes; the limit is {max})")
}

fn mentions_association(reason: &str) -> bool {
    reason.to_ascii_lowercase().contains("associat")
}

/// Lookup tables used while validating.
#[derive(Default)]
struct Staging {
    group_index: HashMap<(GroupType, String), usize>,
    indicator_index: HashMap<(IndicatorType, String), usize>,
    /// Why a group / indicator with a usable key was refused, for references to it.
    invalid_groups: HashMap<(GroupType, String), String>,
    invalid_indicators: HashMap<(IndicatorType, String), String>,
    /// File indicators by each of their (upper-case) hashes.
    file_by_hash: HashMap<String, usize>,
    invalid_hashes: HashMap<String, String>,
    association_keys: HashSet<String>,
    occurrence_keys: HashSet<String>,
    /// Labels of refused items per kind, so a refused duplicate is counted once.
    invalid_labels: [HashSet<String>; 4],
}

/// Parses an indicator type and checks/canonicalizes the summary for it.
fn canonical(type_name: &str, summary: &str) -> Result<(IndicatorType, String), String> {
    let t = IndicatorType::parse(type_name)
        .ok_or_else(|| format!("unknown indicator type `{type_name}`"))?;
    Ok((t, t.canonical_summary(summary)?))
}

fn check_group(g: &Group, t: GroupType) -> Result<(), String> {
    check_group_name(&g.name)?;
    g.tags.iter().try_for_each(|tag| check_tag(tag))?;
    check_attributes(&g.attributes)?;
    if let Some(k) = g
        .fields
        .keys()
        .find(|k| GROUP_RESERVED.contains(&k.as_str()))
    {
        return Err(format!(
            "field `{k}` is set by the writer, not by the caller"
        ));
    }
    for field in t.required_fields() {
        if g.fields.get(*field).is_none_or(Value::is_null) {
            return Err(format!("a {t} group needs the field `{field}`"));
        }
    }
    Ok(())
}

fn check_indicator(i: &Indicator) -> Result<(), String> {
    if let Some(r) = i.rating {
        check_rating(r)?;
    }
    if let Some(c) = i.confidence {
        check_confidence(c)?;
    }
    i.tags.iter().try_for_each(|tag| check_tag(tag))?;
    check_attributes(&i.attributes)?;
    if let Some(k) = i
        .fields
        .keys()
        .find(|k| INDICATOR_RESERVED.contains(&k.as_str()))
    {
        return Err(format!(
            "field `{k}` is set by the writer, not by the caller"
        ));
    }
    Ok(())
}

fn check_attributes(attributes: &[Attribute]) -> Result<(), String> {
    for a in attributes {
        if a.attribute_type.trim().is_empty() {
            return Err("an attribute has no type".into());
        }
        if a.value.is_empty() {
            return Err(format!("attribute `{}` has no value", a.attribute_type));
        }
    }
    Ok(())
}

/// Merges a duplicate into the indicator queued first: tags and attributes are united; the
/// higher rating and confidence win (a later, weaker sighting must not downgrade an earlier,
/// stronger one); any other field takes the later value.
fn merge_indicator(into: &mut PIndicator, dup: Indicator) {
    into.rating = max_opt(into.rating, dup.rating);
    into.confidence = into.confidence.max(dup.confidence);
    union_tags(&mut into.tags, dup.tags);
    union_attributes(&mut into.attributes, dup.attributes);
    into.fields.extend(dup.fields);
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// Tags are case-insensitive on the platform: the first spelling is kept.
fn union_tags(into: &mut Vec<String>, more: Vec<String>) {
    for t in more {
        if !into.iter().any(|x| x.eq_ignore_ascii_case(&t)) {
            into.push(t);
        }
    }
}

fn dedup_tags(tags: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(tags.len());
    union_tags(&mut out, tags);
    out
}

/// Same type and value = same attribute; shown if any copy was.
fn union_attributes(into: &mut Vec<Attribute>, more: Vec<Attribute>) {
    for a in more {
        match into
            .iter_mut()
            .find(|x| x.attribute_type == a.attribute_type && x.value == a.value)
        {
            Some(x) => x.displayed |= a.displayed,
            None => into.push(a),
        }
    }
}

fn dedup_attributes(attributes: Vec<Attribute>) -> Vec<Attribute> {
    let mut out = Vec::with_capacity(attributes.len());
    union_attributes(&mut out, attributes);
    out
}

/// What an error entry's `errorSource` names.
enum Target {
    Group(usize),
    Indicator(usize),
    Associations(Vec<usize>),
}

/// Finds the item an error entry is about, within one job. Rules (the server's wording is not
/// specified, so they are deliberately simple and documented):
/// * `errorSource`, with white space collapsed and a trailing ` is not valid.` removed, is
///   compared to the job's group names and xids, then to its indicator summaries, then to
///   the indicator side of its `association` entries; exactly first, then ignoring case.
/// * An indicator match whose reason mentions an association fails that indicator's
///   associations, not the indicator.
/// * Anything else is unattributed: reported, and the outcome is at best partial.
struct ErrorIndex {
    groups: HashMap<String, usize>,
    indicators: HashMap<String, usize>,
    associations: HashMap<String, Vec<usize>>,
}

impl ErrorIndex {
    fn new(plan: &Plan, job: &JobPlan) -> ErrorIndex {
        let mut groups = HashMap::new();
        for &g in &job.groups {
            if let Some(x) = plan.groups[g].item.as_ref() {
                for key in [x.name.clone(), x.xid.clone()] {
                    groups.entry(key.to_lowercase()).or_insert(g);
                    groups.insert(key, g);
                }
            }
        }
        let mut indicators = HashMap::new();
        for &i in &job.indicators {
            if let Some(x) = plan.indicators[i].item.as_ref() {
                indicators.entry(x.summary.to_lowercase()).or_insert(i);
                indicators.insert(x.summary.clone(), i);
            }
        }
        let mut associations: HashMap<String, Vec<usize>> = HashMap::new();
        for &a in &job.associations {
            let summary = match plan.associations[a].item.as_ref().map(|x| &x.indicator) {
                Some(IndicatorTarget::External(_, s)) => s.clone(),
                Some(IndicatorTarget::InBatch(i)) => plan.indicators[*i]
                    .item
                    .as_ref()
                    .map(|x| x.summary.clone())
                    .unwrap_or_default(),
                None => continue,
            };
            associations.entry(summary.clone()).or_default().push(a);
            if summary.to_lowercase() != summary {
                associations
                    .entry(summary.to_lowercase())
                    .or_default()
                    .push(a);
            }
        }
        ErrorIndex {
            groups,
            indicators,
            associations,
        }
    }

    fn find(&self, source: &str) -> Option<Target> {
        let collapsed = source.split_whitespace().collect::<Vec<_>>().join(" ");
        let key = collapsed
            .strip_suffix(" is not valid.")
            .unwrap_or(&collapsed)
            .to_string();
        if key.is_empty() {
            return None;
        }
        for k in [key.clone(), key.to_lowercase()] {
            if let Some(&g) = self.groups.get(&k) {
                return Some(Target::Group(g));
            }
            if let Some(&i) = self.indicators.get(&k) {
                return Some(Target::Indicator(i));
            }
            if let Some(list) = self.associations.get(&k) {
                return Some(Target::Associations(list.clone()));
            }
        }
        None
    }
}

// ---- wire shapes of the V2 input file (borrowing the plan, so nothing is copied) ----

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these shapes cannot fail: every map key is a string and every value is
    // plain data.
    serde_json::to_vec(v).unwrap_or_default()
}

fn write_joined(out: &mut Vec<u8>, items: impl Iterator<Item = Vec<u8>>) {
    for (n, item) in items.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item);
    }
}

#[derive(Serialize)]
struct GroupWire<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    group_type: &'a str,
    xid: &'a str,
    #[serde(skip_serializing_if = "Tags::is_empty")]
    tag: Tags<'a>,
    #[serde(skip_serializing_if = "Attributes::is_empty")]
    attribute: Attributes<'a>,
    #[serde(flatten)]
    fields: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct IndicatorWire<'a> {
    summary: &'a str,
    #[serde(rename = "type")]
    indicator_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rating: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<u32>,
    #[serde(skip_serializing_if = "Tags::is_empty")]
    tag: Tags<'a>,
    #[serde(skip_serializing_if = "Attributes::is_empty")]
    attribute: Attributes<'a>,
    #[serde(
        rename = "associatedGroups",
        skip_serializing_if = "GroupXids::is_empty"
    )]
    associated_groups: GroupXids<'a>,
    #[serde(
        rename = "fileOccurrence",
        skip_serializing_if = "Occurrences::is_empty"
    )]
    file_occurrence: Occurrences<'a>,
    #[serde(flatten)]
    fields: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct AssociationWire<'a> {
    ref_1: &'a str,
    type_1: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ref_2: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_2: Option<u64>,
}

/// `[{"name": tag}, ...]`
struct Tags<'a>(&'a [String]);
/// `[{"type", "value", "displayed"}, ...]`
struct Attributes<'a>(&'a [Attribute]);
/// `[{"groupXid": xid}, ...]`
struct GroupXids<'a>(&'a [&'a str]);
/// `[{"fileName", "path", "date"}, ...]`
struct Occurrences<'a>(&'a [&'a POccurrence]);

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
