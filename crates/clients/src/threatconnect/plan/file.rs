//! The job's input file: the V2 JSON of its groups, indicators (with the associations and
//! occurrences they carry) and `association` entries, leaving out references to items that
//! failed in an earlier job.

use super::wire::{
    AssociationWire, Attributes, GroupWire, GroupXids, IndicatorWire, Occurrences, Tags, to_json,
    write_joined,
};
use super::{GroupTarget, IndicatorTarget, JobPlan, POccurrence, Plan, State};

impl Plan {
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

    pub(super) fn group_json(&self, g: usize) -> Vec<u8> {
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

    pub(super) fn indicator_json(&self, i: usize) -> Vec<u8> {
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

    pub(super) fn association_json(&self, a: usize) -> Vec<u8> {
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
}
