//! The Prometheus metrics (`prometheus-client`, OpenMetrics text): names after Prometheus'
//! conventions, the `soarjobd_` prefix, label `job_name`, never a run id in a label.
//!
//! Counters and histograms are fed by the core's [`Observer`] hooks as ticks and runs happen
//! (each family has its own lock inside `prometheus-client`; nothing is held across an await).
//! Per-job state (last success, last run, consecutive failures) is kept in memory, updated at
//! each run's end and seeded once from the run history at start, so a scrape never queries the
//! database. Gauges that describe the present (next fire, running runs, invalid files) are set
//! at scrape time from the daemon's views.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use soarjobd_core::store::{RunRecord, RunStatus};
use soarjobd_core::{HttpObserver, Observer};
use soarjobd_engine::Control;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job_name: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabels {
    platform: String,
    method: String,
    /// The HTTP status code, or `error` when no answer came (connect failure, timeout).
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabel {
    platform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// What is known of one job's recent runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobRuns {
    pub last_success: Option<DateTime<Utc>>,
    pub last_run: Option<DateTime<Utc>>,
    pub consecutive_failures: u64,
}

impl JobRuns {
    /// Folds one finished run in (runs arrive oldest first).
    fn record(&mut self, status: RunStatus, finished_at: DateTime<Utc>) {
        self.last_run = Some(self.last_run.map_or(finished_at, |t| t.max(finished_at)));
        match status {
            RunStatus::Succeeded => {
                self.last_success = Some(finished_at);
                self.consecutive_failures = 0;
            }
            // A partial success ends a failure streak (as the alerts count it), but is no
            // success.
            RunStatus::Partial => self.consecutive_failures = 0,
            s if is_failure(s) => self.consecutive_failures += 1,
            // Cancelled and skipped runs neither break nor extend a failure streak.
            _ => {}
        }
    }

    /// The state from a job's history, newest first (as the store returns it).
    pub fn from_history(runs: &[RunRecord]) -> JobRuns {
        let mut s = JobRuns::default();
        for r in runs.iter().rev().filter(|r| r.status.is_final()) {
            s.record(r.status, r.finished_at.unwrap_or(r.started_at));
        }
        s
    }
}

/// Failed, timed out, or interrupted by a crash: what counts towards a failure streak.
pub fn is_failure(s: RunStatus) -> bool {
    matches!(
        s,
        RunStatus::Failed | RunStatus::TimedOut | RunStatus::Interrupted
    )
}

/// The metrics registry and the state the per-job gauges come from.
pub struct Metrics {
    registry: Registry,
    runs_total: Family<RunLabels, Counter>,
    run_duration: HistogramFamily<JobLabel>,
    lateness: Histogram,
    ticks_missed: Counter,
    runs_running: Gauge,
    last_success: Family<JobLabel, FloatGauge>,
    last_run: Family<JobLabel, FloatGauge>,
    next_run: Family<JobLabel, FloatGauge>,
    consecutive_failures: Family<JobLabel, Gauge>,
    paused: Family<JobLabel, Gauge>,
    jobs_invalid: Gauge,
    overloaded: Gauge,
    overload_episodes: Counter,
    platform_requests: Family<PlatformLabels, Counter>,
    platform_duration: HistogramFamily<PlatformLabel>,
    refused: Family<ReasonLabel, Counter>,
    jobs: Mutex<HashMap<String, JobRuns>>,
    /// One scrape at a time sets the scrape-time gauges and encodes.
    scrape: Mutex<()>,
}

fn run_duration_histogram() -> Histogram {
    // 10 ms .. ~5.8 h.
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

fn request_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 4.0, 9))
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("soarjobd");
        let m = Metrics {
            runs_total: Family::default(),
            run_duration: Family::new_with_constructor(run_duration_histogram),
            // 0.5 ms .. ~33 s: the scheduler aims at sub-millisecond lateness.
            lateness: Histogram::new(exponential_buckets(0.0005, 4.0, 9)),
            ticks_missed: Counter::default(),
            runs_running: Gauge::default(),
            last_success: Family::default(),
            last_run: Family::default(),
            next_run: Family::default(),
            consecutive_failures: Family::default(),
            paused: Family::default(),
            jobs_invalid: Gauge::default(),
            overloaded: Gauge::default(),
            overload_episodes: Counter::default(),
            platform_requests: Family::default(),
            platform_duration: Family::new_with_constructor(request_histogram),
            refused: Family::default(),
            jobs: Mutex::default(),
            scrape: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "runs",
            "Finished runs by job and status",
            m.runs_total.clone(),
        );
        registry.register_with_unit(
            "run_duration",
            "How long runs took",
            Unit::Seconds,
            m.run_duration.clone(),
        );
        registry.register_with_unit(
            "schedule_lateness",
            "How late scheduled ticks fired after their planned instant",
            Unit::Seconds,
            m.lateness.clone(),
        );
        registry.register(
            "ticks_missed",
            "Ticks that passed without a run",
            m.ticks_missed.clone(),
        );
        registry.register("runs_running", "Runs in progress", m.runs_running.clone());
        registry.register(
            "job_last_success_timestamp_seconds",
            "When the job's last successful run finished (unix seconds)",
            m.last_success.clone(),
        );
        registry.register(
            "job_last_run_timestamp_seconds",
            "When the job's last run finished (unix seconds)",
            m.last_run.clone(),
        );
        registry.register(
            "job_next_run_timestamp_seconds",
            "When the job fires next (unix seconds)",
            m.next_run.clone(),
        );
        registry.register(
            "job_consecutive_failures",
            "Failed, timed out or interrupted runs since the last success",
            m.consecutive_failures.clone(),
        );
        registry.register("job_paused", "1 when the job is paused", m.paused.clone());
        registry.register(
            "jobs_invalid",
            "Job files that fail to load",
            m.jobs_invalid.clone(),
        );
        registry.register(
            "overloaded",
            "1 while ticks keep firing late (an overload episode; see /readyz)",
            m.overloaded.clone(),
        );
        registry.register(
            "overload_episodes",
            "Overload episodes since the daemon started",
            m.overload_episodes.clone(),
        );
        registry.register(
            "platform_requests",
            "Request attempts to the platforms by method and HTTP status (`error`: no answer)",
            m.platform_requests.clone(),
        );
        registry.register_with_unit(
            "platform_request_duration",
            "How long request attempts to the platforms took",
            Unit::Seconds,
            m.platform_duration.clone(),
        );
        registry.register(
            "admin_refused_requests",
            "Requests and connections the admin server refused, by reason",
            m.refused.clone(),
        );
        registry.register(
            "build",
            "The running version",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        );
        let m = Arc::new(Metrics { registry, ..m });
        let http: Arc<dyn HttpObserver> = m.clone();
        soarjobd_core::add_http_observer(&http);
        m
    }

    /// Makes a refusal reason's series exist at 0 (`guard::Refusals` seeds every reason at
    /// start, so an alert on a rate sees the first refusal).
    pub fn seed_refused(&self, reason: &str) {
        let _ = self.refused.get_or_create(&ReasonLabel {
            reason: reason.to_string(),
        });
    }

    /// Counts a refusal by the admin server (`guard::Refusal::as_str`).
    pub fn refused(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, HashMap<String, JobRuns>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known of a job's runs (the status page shows the same numbers).
    pub fn job_runs(&self, job_id: &str) -> JobRuns {
        self.jobs().get(job_id).cloned().unwrap_or_default()
    }

    /// Seeds the per-job state from the store's history, for jobs no run has reported yet
    /// (a run that finished meanwhile is newer than the history read).
    pub async fn seed(&self, control: &Control) {
        for def in control.status.jobs().jobs.iter() {
            if self.jobs().contains_key(&def.id) {
                continue;
            }
            match control.store.history(&def.id, 200).await {
                Ok(runs) => {
                    self.jobs()
                        .entry(def.id.clone())
                        .or_insert_with(|| JobRuns::from_history(&runs));
                }
                Err(e) => {
                    tracing::warn!(job_id = %def.id, error = %e, "cannot read the run history for the metrics")
                }
            }
        }
    }

    /// The OpenMetrics text of every metric, with the scrape-time gauges set from `control`.
    pub fn encode(&self, control: &Control, paused: &dyn Fn(&str) -> bool) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let view = control.status.jobs();
        let now = Utc::now();
        self.runs_running.set(control.running_count() as i64);
        self.jobs_invalid.set(view.invalid.len() as i64);
        let overload = control.status.overload();
        self.overloaded.set(i64::from(overload.overloaded));
        // A counter follows the scheduler's count (only ever up); scrapes are serialised.
        let seen = self.overload_episodes.get();
        if overload.episodes > seen {
            self.overload_episodes.inc_by(overload.episodes - seen);
        }
        for f in [&self.last_success, &self.last_run, &self.next_run] {
            f.clear();
        }
        self.consecutive_failures.clear();
        self.paused.clear();
        {
            let jobs = self.jobs();
            for def in &view.jobs {
                let l = JobLabel {
                    job_name: def.id.clone(),
                };
                let is_paused = paused(&def.id);
                self.paused.get_or_create(&l).set(i64::from(is_paused));
                if def.enabled
                    && !is_paused
                    && let Some(t) = def.schedule.next_tick_after(now)
                {
                    let at = def.schedule.fire_at(&def.id, t);
                    self.next_run.get_or_create(&l).set(secs(at));
                }
                let runs = jobs.get(&def.id).cloned().unwrap_or_default();
                if let Some(t) = runs.last_success {
                    self.last_success.get_or_create(&l).set(secs(t));
                }
                if let Some(t) = runs.last_run {
                    self.last_run.get_or_create(&l).set(secs(t));
                }
                self.consecutive_failures
                    .get_or_create(&l)
                    .set(runs.consecutive_failures as i64);
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

impl Observer for Metrics {
    fn tick_fired(&self, _job_id: &str, lateness: Duration) {
        self.lateness.observe(lateness.as_secs_f64());
    }

    fn ticks_missed(&self, _job_id: &str, count: u64) {
        self.ticks_missed.inc_by(count);
    }

    fn run_finished(
        &self,
        job_id: &str,
        status: RunStatus,
        duration: Duration,
        finished_at: DateTime<Utc>,
    ) {
        self.runs_total
            .get_or_create(&RunLabels {
                job_name: job_id.to_string(),
                status: status.as_str().to_string(),
            })
            .inc();
        self.run_duration
            .get_or_create(&JobLabel {
                job_name: job_id.to_string(),
            })
            .observe(duration.as_secs_f64());
        self.jobs()
            .entry(job_id.to_string())
            .or_default()
            .record(status, finished_at);
    }
}

impl HttpObserver for Metrics {
    fn platform_request(
        &self,
        platform: &str,
        method: &str,
        status: Option<u16>,
        duration: Duration,
    ) {
        self.platform_requests
            .get_or_create(&PlatformLabels {
                platform: platform.to_string(),
                method: method.to_string(),
                status: status.map_or_else(|| "error".to_string(), |s| s.to_string()),
            })
            .inc();
        self.platform_duration
            .get_or_create(&PlatformLabel {
                platform: platform.to_string(),
            })
            .observe(duration.as_secs_f64());
    }
}
