//! Which replica schedules which job: rendezvous (highest random weight) hashing of job ids
//! over the live replicas.
//!
//! Every replica reads the same `nodes` table (the live `daemon` nodes, at every sweep) and
//! computes the same owner for a job without talking to the others: the node with the highest
//! `weight(job, node)`. Only the owner claims a job's ticks, so the claim work per tick does not
//! grow with the number of replicas. When a node joins, leaves or is declared dead, only the
//! jobs it gains or loses move (about `1/n` of them), and every replica agrees once it has read
//! the new membership (within one sweep, a tenth of a heartbeat). While views differ, a job
//! may have two owners for a moment (the unique `(job_id, scheduled_at)` key lets one claim
//! win) or none (the new owner finds the ticks missed meanwhile and `misfire` decides, as
//! after a restart).

use std::sync::Arc;

/// The live replicas as last read, and a counter that changes whenever they change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Members {
    /// Node ids of the live daemons, sorted.
    pub nodes: Vec<i64>,
    pub epoch: u64,
}

impl Members {
    /// The owner of `job_id` among `nodes` plus `me` (a replica always counts itself: its
    /// own row may look stale right after an outage or a re-registration).
    pub fn owner(&self, job_id: &str, me: i64) -> i64 {
        let key = fnv1a(job_id.as_bytes());
        let mut best = (weight(key, me), me);
        for &n in &self.nodes {
            let w = (weight(key, n), n);
            if w > best {
                best = w;
            }
        }
        best.1
    }
}

/// The shared membership of one store handle.
#[derive(Debug, Default)]
pub struct Membership {
    current: std::sync::RwLock<Arc<Members>>,
}

impl Membership {
    pub fn get(&self) -> Arc<Members> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the live nodes; the epoch moves only if they changed.
    pub fn set(&self, mut nodes: Vec<i64>) {
        nodes.sort_unstable();
        nodes.dedup();
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.nodes != nodes {
            let epoch = cur.epoch + 1;
            tracing::info!(replicas = ?nodes, epoch, "replicas changed: jobs are spread over them again");
            *cur = Arc::new(Members { nodes, epoch });
        }
    }
}

/// FNV-1a: stable across processes, builds and platforms (std's hasher is not promised to be).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finalizer: spreads the combined key over all 64 bits.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn weight(job_key: u64, node: i64) -> u64 {
    mix(job_key ^ mix(node as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(nodes: &[i64], jobs: usize) -> Vec<usize> {
        let m = Members {
            nodes: nodes.to_vec(),
            epoch: 1,
        };
        let mut counts = vec![0; nodes.len()];
        for j in 0..jobs {
            let owner = m.owner(&format!("j{j:05}"), nodes[0]);
            counts[nodes.iter().position(|n| *n == owner).unwrap()] += 1;
        }
        counts
    }

    /// 1,000 jobs over 2, 3 and 5 replicas: each gets its share within 25 %.
    #[test]
    fn jobs_spread_evenly_over_the_replicas() {
        for nodes in [&[7, 8][..], &[3, 9, 41], &[1, 2, 3, 4, 5]] {
            let counts = spread(nodes, 1000);
            let share = 1000.0 / nodes.len() as f64;
            for c in &counts {
                assert!(
                    (*c as f64 - share).abs() <= share * 0.25,
                    "{nodes:?}: {counts:?}"
                );
            }
        }
    }

    /// When a replica leaves, only its jobs move; the others keep their owner.
    #[test]
    fn a_leaving_replica_moves_only_its_own_jobs() {
        let before = Members {
            nodes: vec![1, 2, 3],
            epoch: 1,
        };
        let after = Members {
            nodes: vec![1, 3],
            epoch: 2,
        };
        for j in 0..1000 {
            let id = format!("job-{j}");
            let (b, a) = (before.owner(&id, 1), after.owner(&id, 1));
            if b != 2 {
                assert_eq!(a, b, "{id} moved although its owner stayed");
            } else {
                assert_ne!(a, 2);
            }
        }
    }
}
