//! Map errors back: a job's error-file entries to the items they name (see [`ErrorIndex`]
//! for the rules), critical errors to the job as a whole, the rest to `unattributed`.

use std::collections::HashMap;

use super::{CRITICAL_ERROR_PATTERNS, GroupTarget, IndicatorTarget, JobPlan, Plan};
use crate::threatconnect::client::BatchErrorEntry;

impl Plan {
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
}

fn mentions_association(reason: &str) -> bool {
    reason.to_ascii_lowercase().contains("associat")
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
