//! Validate and merge: the queue becomes one row per distinct item. Invalid items become
//! failed rows with the reason and are never sent; duplicates are merged into the first.
//! Associations and occurrences are staged in `associate`, against the tables built here.

use std::collections::{HashMap, HashSet};

use super::merge::{dedup_attributes, dedup_tags, merge_indicator, union_attributes, union_tags};
use super::validate::{canonical, check_group, check_indicator};
use super::{PGroup, PIndicator, Plan, Row, group_xid};
use crate::threatconnect::items::{FileOccurrence, Group, GroupAssociation, Indicator};
use crate::threatconnect::types::{GroupType, IndicatorType};

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
}

/// Lookup tables used while validating.
#[derive(Default)]
pub(super) struct Staging {
    pub(super) group_index: HashMap<(GroupType, String), usize>,
    pub(super) indicator_index: HashMap<(IndicatorType, String), usize>,
    /// Why a group / indicator with a usable key was refused, for references to it.
    pub(super) invalid_groups: HashMap<(GroupType, String), String>,
    pub(super) invalid_indicators: HashMap<(IndicatorType, String), String>,
    /// File indicators by each of their (upper-case) hashes.
    pub(super) file_by_hash: HashMap<String, usize>,
    pub(super) invalid_hashes: HashMap<String, String>,
    pub(super) association_keys: HashSet<String>,
    pub(super) occurrence_keys: HashSet<String>,
    /// Labels of refused items per kind, so a refused duplicate is counted once.
    pub(super) invalid_labels: [HashSet<String>; 4],
}
