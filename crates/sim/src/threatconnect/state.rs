//! The simulator's state: batch jobs and their settings, each owner's groups, indicators and
//! associations, request statistics, and the behaviour in effect.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Behaviour, TcSimConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) enum JobStatus {
    Created,
    Queued,
    Running,
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttrWrite {
    Append,
    Replace,
    Singleton,
    Static,
}

#[derive(Debug, Clone)]
pub(super) struct JobSettings {
    pub(super) owner: String,
    pub(super) halt_on_error: bool,
    pub(super) delete: bool,
    pub(super) attr_write: AttrWrite,
    pub(super) replace_tags: bool,
}

/// Per-kind success / error counts of a job.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KindCounts {
    pub(super) success_group_count: u64,
    pub(super) error_group_count: u64,
    pub(super) success_indicator_count: u64,
    pub(super) error_indicator_count: u64,
    pub(super) success_association_count: u64,
    pub(super) error_association_count: u64,
}

#[derive(Debug)]
pub(super) struct Job {
    pub(super) settings: JobSettings,
    pub(super) status: JobStatus,
    pub(super) errors: Vec<Value>,
    pub(super) success: u64,
    pub(super) unprocessed: u64,
    pub(super) counts: KindCounts,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Attr {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) value: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SimGroup {
    pub(super) id: u64,
    pub(super) xid: String,
    pub(super) name: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) tags: BTreeSet<String>,
    pub(super) attributes: Vec<Attr>,
    pub(super) fields: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SimIndicator {
    pub(super) id: u64,
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) summary: String,
    pub(super) rating: Option<f64>,
    pub(super) confidence: Option<u64>,
    pub(super) tags: BTreeSet<String>,
    pub(super) attributes: Vec<Attr>,
    pub(super) file_occurrences: Vec<Value>,
    pub(super) fields: Map<String, Value>,
}

/// One owner's data. Indicators are keyed by `type` + normalized summary; File indicators
/// also by each hash, because the platform merges files sharing a hash.
#[derive(Debug, Default)]
pub(super) struct Owner {
    pub(super) groups: BTreeMap<String, SimGroup>,
    pub(super) indicators: BTreeMap<(String, String), SimIndicator>,
    pub(super) file_hashes: HashMap<String, (String, String)>,
    /// (group id, indicator type, indicator key).
    pub(super) associations: BTreeSet<(u64, String, String)>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Stats {
    /// API requests received (inspection routes not counted).
    pub(super) requests: u64,
    /// Per `METHOD /route`.
    pub(super) routes: BTreeMap<String, u64>,
    pub(super) auth_failures: u64,
    pub(super) faults_injected: u64,
    pub(super) jobs_created: u64,
    pub(super) uploads: u64,
    pub(super) upload_bytes: u64,
    pub(super) groups_received: u64,
    pub(super) indicators_received: u64,
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) behaviour: Behaviour,
    pub(super) next_id: u64,
    pub(super) jobs: HashMap<u64, Job>,
    pub(super) owners: BTreeMap<String, Owner>,
    pub(super) stats: Stats,
}

impl Inner {
    pub(super) fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// The simulator's state, shared by its handlers (opaque outside the simulator: tests read
/// it through the `/_sim/` routes and change it through the handle's behaviour).
pub struct SimState {
    pub(super) api_prefix: String,
    pub(super) access_id: String,
    pub(super) secret_key: String,
    pub(super) tokens: Vec<String>,
    pub(super) max_indicators: usize,
    pub(super) max_upload: usize,
    pub(super) inner: Mutex<Inner>,
}

/// By hand, so the secret key and tokens stay out of logs even in a simulator.
impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("api_prefix", &self.api_prefix)
            .field("access_id", &self.access_id)
            .field("max_indicators", &self.max_indicators)
            .field("max_upload", &self.max_upload)
            .finish_non_exhaustive()
    }
}

impl SimState {
    pub(super) fn new(cfg: &TcSimConfig) -> SimState {
        SimState {
            api_prefix: cfg.api_prefix.trim_end_matches('/').to_string(),
            access_id: cfg.access_id.clone(),
            secret_key: cfg.secret_key.clone(),
            tokens: cfg.tokens.clone(),
            max_indicators: cfg.max_indicators_per_job,
            max_upload: cfg.max_upload_bytes,
            inner: Mutex::new(Inner {
                behaviour: cfg.behaviour.clone(),
                next_id: 1000,
                ..Inner::default()
            }),
        }
    }

    /// A poisoned lock only means a handler panicked; the data is still usable for a sim.
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
