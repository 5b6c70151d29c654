//! The TcEx Jobs API on Batch V2: queue groups, indicators, group associations and file
//! occurrences, then [`BatchWriter::process`] writes them all and says how it went.
//!
//! Differences from the original module, on purpose (spec §7):
//! * Everything is checked before sending; invalid items are failed with the reason and never
//!   sent, and references to them fail too.
//! * Duplicates merge: indicators on (type, canonical summary), groups on (type, name), and a
//!   same-name group of another type is a different group. Indicator merge rule: tags and
//!   attributes united, the higher rating and confidence kept, other fields last-wins.
//! * Groups get deterministic xids ([`group_xid`]), so associations to groups of the batch
//!   need no lookup and a re-run updates instead of duplicating. A group named by an
//!   association but not queued is looked up once per `process` (and cached by the writer); two
//!   groups with that name fail the association as ambiguous.
//! * Work is split into jobs of at most `max_indicators_per_job` indicators and
//!   `max_upload_bytes`; jobs run one after another, each group in the first job that
//!   references it.
//! * Every item ends in exactly one bucket, counters count saved items, and the outcome is
//!   decided once at the end: a fatal error (job creation or upload failure, critical server
//!   error, poll timeout, cancellation) stops the remaining jobs and is never overwritten by a
//!   later partial result.
//!
//! [`group_xid`]: crate::threatconnect::group_xid

use std::collections::HashMap;
use std::time::Instant as StdInstant;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{
    AttributeWriteType, BatchSettings, BatchStatus, GroupRef, TagWriteType, TcError,
    ThreatConnectClient,
};
use super::items::{FileOccurrence, Group, GroupAssociation, Indicator};
use super::plan::{JobPlan, Plan};
use super::report::{BatchReport, JobReport};
use super::types::GroupType;

/// Queues items and writes them to ThreatConnect with [`BatchWriter::process`].
#[derive(Debug)]
pub struct BatchWriter {
    client: ThreatConnectClient,
    groups: Vec<Group>,
    indicators: Vec<Indicator>,
    associations: Vec<GroupAssociation>,
    occurrences: Vec<FileOccurrence>,
    attribute_write_type: AttributeWriteType,
    tag_write_type: TagWriteType,
    cancel: CancellationToken,
    /// Group ids found by name, per (owner, type, name). Only unique matches are kept, so a
    /// missing or ambiguous name is asked again next time.
    lookup_cache: HashMap<(String, GroupType, String), u64>,
}

impl BatchWriter {
    pub fn new(client: ThreatConnectClient) -> BatchWriter {
        BatchWriter {
            client,
            groups: Vec::new(),
            indicators: Vec::new(),
            associations: Vec::new(),
            occurrences: Vec::new(),
            attribute_write_type: AttributeWriteType::default(),
            tag_write_type: TagWriteType::default(),
            cancel: CancellationToken::new(),
            lookup_cache: HashMap::new(),
        }
    }

    /// Stops waiting on the server when `token` is cancelled (the batch then fails with
    /// "cancelled"; a job already uploaded may still complete on the server).
    pub fn with_cancellation(mut self, token: CancellationToken) -> BatchWriter {
        self.cancel = token;
        self
    }

    /// How incoming attributes combine with existing ones (default: `Singleton`).
    pub fn attribute_write_type(&mut self, t: AttributeWriteType) -> &mut BatchWriter {
        self.attribute_write_type = t;
        self
    }

    /// How incoming tags combine with existing ones (default: `Append`).
    pub fn tag_write_type(&mut self, t: TagWriteType) -> &mut BatchWriter {
        self.tag_write_type = t;
        self
    }

    pub fn group(&mut self, group: Group) -> &mut BatchWriter {
        self.groups.push(group);
        self
    }

    pub fn indicator(&mut self, indicator: Indicator) -> &mut BatchWriter {
        self.indicators.push(indicator);
        self
    }

    pub fn group_association(&mut self, association: GroupAssociation) -> &mut BatchWriter {
        self.associations.push(association);
        self
    }

    pub fn file_occurrence(&mut self, occurrence: FileOccurrence) -> &mut BatchWriter {
        self.occurrences.push(occurrence);
        self
    }

    /// Items queued and not yet processed: groups, indicators, associations, occurrences.
    pub fn queued(&self) -> (usize, usize, usize, usize) {
        (
            self.groups.len(),
            self.indicators.len(),
            self.associations.len(),
            self.occurrences.len(),
        )
    }

    /// Writes everything queued to `owner` and empties the queue. Never returns an error:
    /// every failure is in the report (per item, or [`BatchReport::fatal`]).
    pub async fn process(&mut self, owner: &str) -> BatchReport {
        let started = StdInstant::now();
        let requests_before = self.client.requests_sent();
        let mut plan = Plan::stage(
            owner,
            std::mem::take(&mut self.groups),
            std::mem::take(&mut self.indicators),
            std::mem::take(&mut self.associations),
            std::mem::take(&mut self.occurrences),
        );
        let mut prepare_time = started.elapsed();

        self.resolve_named_groups(&mut plan).await;

        let t = StdInstant::now();
        let jobs = plan.split(
            self.client.max_indicators_per_job(),
            self.client.max_upload_bytes(),
        );
        prepare_time += t.elapsed();

        let mut settings = BatchSettings::new(owner);
        settings.attribute_write_type = self.attribute_write_type;
        settings.tag_write_type = self.tag_write_type;
        let mut job_reports = Vec::with_capacity(jobs.len());
        let mut fatal = None;
        for (n, job) in jobs.iter().enumerate() {
            let t = StdInstant::now();
            let file = Bytes::from(plan.build_file(job));
            prepare_time += t.elapsed();
            let mut jr = JobReport {
                groups: job.groups.len(),
                indicators: job.indicators.len(),
                associations: job.associations.len(),
                bytes: file.len(),
                ..JobReport::default()
            };
            tracing::info!(
                owner,
                job = n + 1,
                of = jobs.len(),
                indicators = jr.indicators,
                groups = jr.groups,
                bytes = jr.bytes,
                "sending ThreatConnect batch job"
            );
            let result = self.run_job(&mut plan, job, &settings, file, &mut jr).await;
            job_reports.push(jr);
            if let Err(reason) = result {
                tracing::error!(owner, %reason, "ThreatConnect batch failed");
                fatal = Some(reason);
                break;
            }
        }

        let mut report = plan.report();
        report.jobs = job_reports;
        report.fatal = fatal;
        report.prepare_time = prepare_time;
        report.total_time = started.elapsed();
        report.requests = self.client.requests_sent() - requests_before;
        report
    }

    /// Resolves groups named by associations but not queued: one lookup per distinct name,
    /// concurrently (the transport caps how many run at once), unique answers cached.
    async fn resolve_named_groups(&mut self, plan: &mut Plan) {
        let owner = plan.owner.clone();
        let mut pending = Vec::new();
        for (t, name) in plan.lookups_needed() {
            match self.lookup_cache.get(&(owner.clone(), t, name.clone())) {
                Some(&id) => {
                    let found = Ok(vec![GroupRef {
                        id,
                        name: name.clone(),
                    }]);
                    plan.resolve_lookup(t, &name, &found);
                }
                None => pending.push((t, name)),
            }
        }
        let client = &self.client;
        let answers = futures::future::join_all(pending.into_iter().map(|(t, name)| {
            let owner = owner.clone();
            async move {
                let found = client
                    .find_groups(&owner, t, &name)
                    .await
                    .map_err(|e| e.to_string());
                (t, name, found)
            }
        }))
        .await;
        for (t, name, found) in answers {
            if let Ok([one]) = found.as_deref() {
                self.lookup_cache
                    .insert((owner.clone(), t, name.clone()), one.id);
            }
            plan.resolve_lookup(t, &name, &found);
        }
    }

    /// Creates, uploads, waits for and reads back one job. `Err` is a fatal reason: the
    /// remaining jobs are not sent.
    async fn run_job(
        &mut self,
        plan: &mut Plan,
        job: &JobPlan,
        settings: &BatchSettings,
        file: Bytes,
        jr: &mut JobReport,
    ) -> Result<(), String> {
        let client = &self.client;
        let batch_id = client
            .create_batch(settings)
            .await
            .map_err(|e| format!("creating a batch job failed: {e}"))?;
        jr.batch_id = Some(batch_id);
        let uploaded_at = Instant::now();
        if let Err(e) = client.upload_batch(batch_id, file).await {
            self.check_upload_in_doubt(batch_id, e).await?;
        }
        let status = client
            .wait_for_batch(batch_id, uploaded_at, &self.cancel)
            .await
            .map_err(|e| match e {
                TcError::PollTimeout { .. } => format!("{e}; its items may still be saved later"),
                e => format!("waiting for batch job {batch_id} failed: {e}"),
            })?;
        record_status(jr, &status);
        tracing::info!(
            batch_id,
            success = status.success_count,
            errors = status.error_count,
            unprocessed = status.unprocess_count,
            "ThreatConnect batch job completed"
        );

        if status.error_count > 0 {
            let deadline = uploaded_at + client.poll_max();
            match client.batch_errors(batch_id, deadline, &self.cancel).await {
                Ok(entries) => {
                    if let Some(critical) = plan.apply_errors(job, &entries) {
                        return Err(format!(
                            "batch job {batch_id} reported a critical error: {critical}"
                        ));
                    }
                    if entries.is_empty() {
                        plan.unattributed.push(format!(
                            "batch job {batch_id} reported {} error(s) but its error file is empty",
                            status.error_count
                        ));
                    }
                }
                Err(TcError::Cancelled) => return Err("cancelled".into()),
                Err(e) => {
                    // Without the error file nothing can be marked saved for sure: the job's
                    // items stay not saved.
                    plan.unattributed.push(e.to_string());
                    return Ok(());
                }
            }
        }
        if status.unprocess_count > 0 {
            plan.unattributed.push(format!(
                "batch job {batch_id} left {} item(s) unprocessed",
                status.unprocess_count
            ));
        }
        plan.finish_job(job, status.unprocess_count);
        Ok(())
    }

    /// An upload that may or may not have arrived: the job's status says. Still `Created`
    /// means nothing arrived (fatal); any later status means the server has the file.
    async fn check_upload_in_doubt(&self, batch_id: u64, e: TcError) -> Result<(), String> {
        let in_doubt = matches!(&e, TcError::Http(h) if h.is_in_doubt());
        let fail = |e: &TcError| format!("uploading batch job {batch_id} failed: {e}");
        if !in_doubt {
            return Err(fail(&e));
        }
        match self.client.batch_status(batch_id).await {
            Ok(s) if !s.status.eq_ignore_ascii_case("Created") => {
                tracing::warn!(batch_id, status = %s.status, "upload outcome was unknown; the server has it");
                Ok(())
            }
            _ => Err(fail(&e)),
        }
    }
}

fn record_status(jr: &mut JobReport, s: &BatchStatus) {
    jr.status = Some(s.status.clone());
    jr.success_count = s.success_count;
    jr.error_count = s.error_count;
    jr.unprocess_count = s.unprocess_count;
}
