//! Split into jobs: the pending work in jobs within the platform's indicator and byte limits,
//! each group in the first job that needs it; items too large for any upload fail.

use super::{GroupTarget, JobPlan, Plan};

/// Bytes of `{"indicator":[],"group":[],"association":[]}`, counted once per job.
const FILE_ENVELOPE_BYTES: usize = 45;

impl Plan {
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
}

fn too_large(size: usize, max: usize) -> String {
    format!("too large for one batch upload ({size} bytes; the limit is {max})")
}
