//! `job: push-case-iocs-to-threatconnect`: the suspicious entities of tagged SecOps cases,
//! pushed to a ThreatConnect owner as indicators associated with one group per case, through
//! the TcEx-style batch writer (one batch per run).
//!
//! Re-running is safe by construction: each case's group has a deterministic xid (from the
//! owner, the group type and a name that depends only on the case id), indicators are keyed
//! by type and summary, and the Batch API upserts both. So a run that failed half-way is simply
//! run again, and nothing is duplicated in the owner. The last-success timestamp moves only
//! when the whole batch was saved.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::cases::find_cases;
use soarjobd_clients::soar::{CaseDetails, Entity, SoarClient, entity_types};
use soarjobd_clients::threatconnect::{
    BatchOutcome, BatchWriter, Group, GroupAssociation, GroupType, Indicator, ThreatConnectClient,
};
use soarjobd_core::Configured;
use soarjobd_core::definition::{FieldError, JobSpec, ParamSpec, ParamType, Parameters};
use soarjobd_core::{Job, JobContext, JobError, Outcome};

/// How many case details are read at once.
const DETAIL_CONCURRENCY: usize = 8;

/// `push-case-iocs-to-threatconnect`, holding the SOAR and ThreatConnect clients it was
/// built with.
pub struct PushCaseIocs {
    soar: Configured<SoarClient>,
    threatconnect: Configured<ThreatConnectClient>,
}

impl PushCaseIocs {
    /// The job with its clients (or the reasons there are none, its error if it runs).
    pub fn new(
        soar: Configured<SoarClient>,
        threatconnect: Configured<ThreatConnectClient>,
    ) -> PushCaseIocs {
        PushCaseIocs {
            soar,
            threatconnect,
        }
    }
}

impl JobSpec for PushCaseIocs {
    fn summary(&self) -> &'static str {
        "pushes suspicious entities of tagged cases to ThreatConnect as indicators of a case group"
    }

    fn parameters(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("Tags", ParamType::Csv)
                .mandatory()
                .describe("Case tags to export (any of them)"),
            ParamSpec::new("Owner", ParamType::String)
                .mandatory()
                .describe("The ThreatConnect owner (organization or community) to write to"),
            ParamSpec::new("Group Type", ParamType::String)
                .default_value("Incident")
                .describe("The type of the group created for each case"),
            ParamSpec::new("Max Hours Backwards", ParamType::Integer)
                .default_value("24")
                .describe("How far back the first run looks, in hours"),
            ParamSpec::new("Rating", ParamType::Integer)
                .describe("Threat rating 0-5 of the indicators"),
            ParamSpec::new("Confidence", ParamType::Integer)
                .describe("Confidence 0-100 of the indicators"),
            ParamSpec::new("Indicator Tags", ParamType::Csv)
                .describe("Tags added to every indicator"),
        ]
    }

    fn validate(&self, params: &Parameters, _extra: &Map<String, Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let range = |name: &str, lo: i64, hi: i64, errs: &mut Vec<FieldError>| {
            if let Ok(Some(v)) = params.int(name)
                && !(lo..=hi).contains(&v)
            {
                errs.push(FieldError::new(
                    format!("parameters.{name}"),
                    format!("Invalid parameter \"{name}\". The value must be between {lo} and {hi}. Wrong value provided: {v}"),
                ));
            }
        };
        range("Max Hours Backwards", 1, i64::MAX, &mut errs);
        range("Rating", 0, 5, &mut errs);
        range("Confidence", 0, 100, &mut errs);
        if let Ok(Some(t)) = params.str("Group Type")
            && GroupType::parse(t).is_none()
        {
            errs.push(FieldError::new(
                "parameters.Group Type",
                format!("Invalid parameter \"Group Type\". Unknown ThreatConnect group type `{t}` (e.g. Incident, Adversary, Campaign, Intrusion Set)"),
            ));
        }
        errs
    }
}

/// The group name of a case: depends only on the case id, so renaming the case in SecOps
/// updates the same group instead of creating another.
pub fn group_name(case_id: u64) -> String {
    format!("SecOps case {case_id}")
}

/// A SecOps entity as a ThreatConnect indicator `(type, summary)`, or `None` when its type has
/// no indicator equivalent. SecOps upper-cases identifiers; only what is case-insensitive is
/// lower-cased back (a URL's path may be case-sensitive).
pub fn map_entity(e: &Entity) -> Option<(&'static str, String)> {
    let id = e.identifier.trim();
    if id.is_empty() {
        return None;
    }
    match e.entity_type.as_str() {
        entity_types::ADDRESS => Some(("Address", id.to_lowercase())),
        // A host reported by its address is an Address in ThreatConnect, which refuses it
        // as a Host.
        entity_types::HOSTNAME if id.parse::<std::net::IpAddr>().is_ok() => {
            Some(("Address", id.to_lowercase()))
        }
        entity_types::HOSTNAME => Some(("Host", id.to_lowercase())),
        "DestinationURL" | "URL" => Some(("URL", normalize_url(id))),
        "FILEHASH" => {
            let hex = id.chars().all(|c| c.is_ascii_hexdigit());
            match id.len() {
                32 | 40 | 64 if hex => Some(("File", id.to_lowercase())),
                _ => None,
            }
        }
        "EMAILSUBJECT" => Some(("Email Subject", id.to_string())),
        entity_types::USER if soarjobd_core::definition::params::is_email(id) => {
            Some(("EmailAddress", id.to_lowercase()))
        }
        _ => None,
    }
}

/// `HTTPS://EVIL.EXAMPLE/Path` -> `https://evil.example/Path`. SecOps often stores URLs
/// without a scheme (`EVIL.EXAMPLE/LOGIN`), which ThreatConnect refuses as relative: those get
/// `http://`.
fn normalize_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (host, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    format!(
        "{}://{}{}",
        scheme.to_lowercase(),
        host.to_lowercase(),
        path
    )
}

#[async_trait]
impl Job for PushCaseIocs {
    fn id(&self) -> &'static str {
        "push-case-iocs-to-threatconnect"
    }

    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        let ctx: &JobContext = ctx;
        let soar = self.soar.get()?.clone();
        let tc = self.threatconnect.get()?.clone();
        let p = ctx.params();
        let tags = p.list("Tags")?;
        let owner = p.required_str("Owner")?.to_string();
        let group_type = p.str("Group Type")?.unwrap_or("Incident").to_string();
        let hours = p.int("Max Hours Backwards")?.unwrap_or(24).max(1) as u64;
        let rating = p.int("Rating")?;
        let confidence = p.int("Confidence")?;
        let indicator_tags = p.list("Indicator Tags")?;

        let since = ctx
            .last_success_time(Duration::from_secs(hours * 3600))
            .await?;
        let ids = find_cases(&soar, &tags, &[], since).await?;
        tracing::info!(since = %since.to_rfc3339(), cases = ids.len(), "cases matched");
        ctx.stats().set("cases_matched", ids.len() as i64);

        let details: Vec<CaseDetails> = futures::stream::iter(ids)
            .map(|id| {
                let soar = &soar;
                async move {
                    ctx.check_cancelled()?;
                    soar.get_case_full_details(id, false)
                        .await
                        .map_err(|e| JobError::context(format!("cannot read case {id}"), e))
                }
            })
            .buffer_unordered(DETAIL_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;

        let mut writer = BatchWriter::new(tc).with_cancellation(ctx.cancellation().clone());
        let (mut mapped, mut skipped) = (0i64, 0i64);
        for case in &details {
            let Ok(case_id) = case.identifier.parse::<u64>() else {
                tracing::warn!(identifier = %case.identifier, "case with a non-numeric id skipped");
                ctx.stats().incr("cases_skipped");
                continue;
            };
            // Only open cases: the filter asked for them, but a case can close in between.
            if !case.is_open() {
                continue;
            }
            let name = group_name(case_id);
            let mut group = Group::new(group_type.as_str(), name.as_str());
            if !case.title.is_empty() {
                group = group.attribute("Description", case.title.as_str());
            }
            writer.group(group);
            for e in case
                .cyber_alerts
                .iter()
                .flat_map(|a| a.domain_entities.iter())
                .filter(|e| e.is_suspicious)
            {
                let Some((itype, summary)) = map_entity(e) else {
                    skipped += 1;
                    continue;
                };
                mapped += 1;
                let mut ind = Indicator::new(itype, summary.as_str());
                if let Some(r) = rating {
                    ind = ind.rating(r as f64);
                }
                if let Some(c) = confidence {
                    ind = ind.confidence(c as u32);
                }
                for t in &indicator_tags {
                    ind = ind.tag(t.as_str());
                }
                writer.indicator(ind);
                writer.group_association(GroupAssociation::new(
                    group_type.as_str(),
                    name.as_str(),
                    itype,
                    summary.as_str(),
                ));
            }
        }
        ctx.stats().set("entities_mapped", mapped);
        ctx.stats().set("entities_skipped", skipped);
        let report = writer.process(&owner).await;
        let stats = ctx.stats();
        stats.set("groups_saved", report.group_len() as i64);
        stats.set("indicators_saved", report.indicator_len() as i64);
        stats.set("associations_saved", report.group_association_len() as i64);
        stats.set(
            "items_failed",
            (report.groups.failed.len()
                + report.indicators.failed.len()
                + report.group_associations.failed.len()) as i64,
        );
        stats.set("batch_jobs", report.jobs.len() as i64);
        tracing::info!(
            groups = report.group_len(),
            indicators = report.indicator_len(),
            associations = report.group_association_len(),
            outcome = ?report.outcome(),
            "batch processed"
        );
        match report.outcome() {
            BatchOutcome::Success => {
                ctx.save_timestamp(ctx.job_start_time()).await?;
                Ok(Outcome::succeeded(report.message()))
            }
            BatchOutcome::Partial => Ok(Outcome::partial(report.message())),
            BatchOutcome::Failed => {
                if ctx.is_cancelled() {
                    return Err(JobError::Cancelled);
                }
                Ok(Outcome::failed(report.message()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(t: &str, id: &str) -> Entity {
        serde_json::from_value(serde_json::json!({
            "identifier": id, "entity_type": t, "is_suspicious": true
        }))
        .unwrap()
    }

    #[test]
    fn entity_mapping_table() {
        let md5 = "D41D8CD98F00B204E9800998ECF8427E";
        let sha1 = "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709";
        let sha256 = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        type Row<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);
        let rows: &[Row] = &[
            ("ADDRESS", "10.1.2.3", Some(("Address", "10.1.2.3"))),
            ("ADDRESS", "FE80::1", Some(("Address", "fe80::1"))),
            (
                "HOSTNAME",
                "WKS-0142.CORP.EXAMPLE.COM",
                Some(("Host", "wks-0142.corp.example.com")),
            ),
            (
                "DestinationURL",
                "HTTPS://EVIL.EXAMPLE/Path?Q=1",
                Some(("URL", "https://evil.example/Path?Q=1")),
            ),
            (
                "FILEHASH",
                md5,
                Some(("File", "d41d8cd98f00b204e9800998ecf8427e")),
            ),
            (
                "FILEHASH",
                sha1,
                Some(("File", "da39a3ee5e6b4b0d3255bfef95601890afd80709")),
            ),
            (
                "FILEHASH",
                sha256,
                Some((
                    "File",
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                )),
            ),
            ("FILEHASH", "ABC123", None),
            (
                "EMAILSUBJECT",
                "Your invoice",
                Some(("Email Subject", "Your invoice")),
            ),
            (
                "USERUNIQNAME",
                "JOHN.DOE@EXAMPLE.COM",
                Some(("EmailAddress", "john.doe@example.com")),
            ),
            ("USERUNIQNAME", "CORP\\JDOE", None),
            ("PROCESS", "cmd.exe", None),
        ];
        for (t, id, want) in rows {
            let got = map_entity(&entity(t, id));
            let got = got.as_ref().map(|(a, b)| (*a, b.as_str()));
            assert_eq!(got, *want, "{t} {id}");
        }
    }

    #[test]
    fn group_names_depend_only_on_the_case() {
        assert_eq!(group_name(42), "SecOps case 42");
    }
}
