//! Associate: resolve both sides of each group association (a group of the batch, or one to
//! look up by name in the owner; an indicator of the batch, or one that must exist), attach
//! file occurrences to their File indicator (created implicitly when not queued), and apply
//! the results of the group lookups.

use std::collections::HashSet;

use serde_json::Map;

use super::stage::Staging;
use super::validate::canonical;
use super::{GroupTarget, IndicatorTarget, PAssociation, PIndicator, POccurrence, Plan, Row};
use crate::threatconnect::client::GroupRef;
use crate::threatconnect::items::{FileOccurrence, GroupAssociation, format_date};
use crate::threatconnect::types::{GroupType, HashKind, IndicatorType, check_group_name};

impl Plan {
    pub(super) fn stage_association(&mut self, st: &mut Staging, a: GroupAssociation) {
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

    pub(super) fn stage_occurrence(&mut self, st: &mut Staging, o: FileOccurrence) {
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
}
