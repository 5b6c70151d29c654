//! Finding the cases a job works on, shared by the SOAR-driven jobs.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use soarjobd_clients::soar::{
    CASE_FILTER_MAX_RESULTS, CaseFilter, CaseStatusFilter, FilterOperator, SoarClient, SortBy,
    SortOrder,
};
use soarjobd_core::JobError;

/// Open cases with any of the tags, in the environments, started or updated since `since`.
///
/// The API returns at most 10,000 ids per call, so a full page is followed by another with the
/// time window moved to the last case's update time (ascending order), until a page comes back
/// short. Nothing is silently truncated.
pub async fn find_cases(
    soar: &SoarClient,
    tags: &[String],
    environments: &[String],
    since: DateTime<Utc>,
) -> Result<Vec<u64>, JobError> {
    let mut from = since.timestamp_millis();
    let mut out: Vec<u64> = Vec::new();
    let mut seen: HashSet<u64> = HashSet::new();
    loop {
        // "Started since OR updated since", as the seed passes both. A case is never updated
        // before it starts, so moving both bounds together pages by update time exactly.
        let mut filter = CaseFilter::new(CaseStatusFilter::Open);
        filter.start_time_from_unix_time_in_ms = Some(from);
        filter.update_time_from_unix_time_in_ms = Some(from);
        filter.operator = Some(FilterOperator::Or);
        filter.sort_by = SortBy::UpdateTime;
        filter.sort_order = SortOrder::Asc;
        filter.max_results = CASE_FILTER_MAX_RESULTS;
        filter.tags = Some(tags.to_vec());
        filter.environments = (!environments.is_empty()).then(|| environments.to_vec());
        let page = soar
            .get_cases_ids_by_filter(&filter)
            .await
            .map_err(|e| JobError::context("cannot list the matching cases", e))?;
        let full = page.len() >= CASE_FILTER_MAX_RESULTS as usize;
        let last = page.last().copied();
        for id in page {
            if seen.insert(id) {
                out.push(id);
            }
        }
        let Some(last) = last.filter(|_| full) else {
            return Ok(out);
        };
        let details = soar
            .get_case_full_details(last, false)
            .await
            .map_err(|e| JobError::context(format!("cannot read case {last} to page on"), e))?;
        let next_from = details.modification_time;
        if next_from <= from {
            return Err(JobError::msg(format!(
                "more than {CASE_FILTER_MAX_RESULTS} matching cases share the update time \
                 {next_from}; the window cannot move forward without skipping cases"
            )));
        }
        tracing::info!(
            page_cases = CASE_FILTER_MAX_RESULTS,
            next_from,
            "paging the case filter"
        );
        from = next_from;
    }
}
