//! The GetCasesIdByFilter request (spec §3.1): a typed filter, the SDK's client-side validation
//! in the SDK's order, and the wire body with all 13 keys always present.

use serde::Serialize;

use super::SoarError;

/// `CASE_FILTER_MAX_RESULTS`: the platform never returns more ids than this per call.
pub const CASE_FILTER_MAX_RESULTS: u32 = 10_000;
/// The SDK's default `max_results`.
pub const DEFAULT_MAX_RESULTS: u32 = 1_000;
/// How far back `start_time_from` reaches when not given (SDK: now − 30 days).
pub const DEFAULT_START_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;
/// Exclusive upper bound of a "valid" timestamp: year 10000, where Python's
/// `datetime.fromtimestamp` stops working.
const MAX_VALID_MS: i64 = 253_402_300_800_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CaseStatusFilter {
    Open,
    Close,
    Both,
}

/// How the time filters combine. `None` on the filter is sent as `null` (server semantics
/// unverified; the simulator treats it as OR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FilterOperator {
    Or,
    And,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortBy {
    #[default]
    StartTime,
    CloseTime,
    UpdateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

/// A case search, as the caller states it. Unset times stay `None` here; [`CaseFilter::to_body`]
/// fills the SDK defaults and validates.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFilter {
    pub status: CaseStatusFilter,
    pub start_time_from_unix_time_in_ms: Option<i64>,
    pub start_time_to_unix_time_in_ms: Option<i64>,
    pub close_time_from_unix_time_in_ms: Option<i64>,
    pub close_time_to_unix_time_in_ms: Option<i64>,
    pub update_time_from_unix_time_in_ms: Option<i64>,
    pub update_time_to_unix_time_in_ms: Option<i64>,
    pub operator: Option<FilterOperator>,
    pub sort_by: SortBy,
    pub sort_order: SortOrder,
    /// Values above [`CASE_FILTER_MAX_RESULTS`] are capped silently (as the SDK does); 0 is an error.
    pub max_results: u32,
    /// Environment names; `None` = all.
    pub environments: Option<Vec<String>>,
    /// Tag names, any of; `None` = no tag filter.
    pub tags: Option<Vec<String>>,
}

impl CaseFilter {
    /// The SDK's defaults: the given status, last 30 days by start time, newest first, 1,000 ids.
    pub fn new(status: CaseStatusFilter) -> CaseFilter {
        CaseFilter {
            status,
            start_time_from_unix_time_in_ms: None,
            start_time_to_unix_time_in_ms: None,
            close_time_from_unix_time_in_ms: None,
            close_time_to_unix_time_in_ms: None,
            update_time_from_unix_time_in_ms: None,
            update_time_to_unix_time_in_ms: None,
            operator: None,
            sort_by: SortBy::StartTime,
            sort_order: SortOrder::Desc,
            max_results: DEFAULT_MAX_RESULTS,
            environments: None,
            tags: None,
        }
    }

    /// Validates the filter as the SDK does, in the SDK's order, and builds the wire body.
    /// `now_ms` supplies the defaults for the start-time range.
    pub fn to_body(&self, now_ms: i64) -> Result<CaseFilterBody, SoarError> {
        let invalid = |m: String| Err(SoarError::InvalidFilter(m));

        // 1. max_results: positive, capped.
        if self.max_results == 0 {
            return invalid("max_results must be a positive number".into());
        }
        let max_results = self.max_results.min(CASE_FILTER_MAX_RESULTS);

        // 2. Every provided timestamp must be a valid instant.
        let times = [
            ("start_time_from", self.start_time_from_unix_time_in_ms),
            ("start_time_to", self.start_time_to_unix_time_in_ms),
            ("close_time_from", self.close_time_from_unix_time_in_ms),
            ("close_time_to", self.close_time_to_unix_time_in_ms),
            ("update_time_from", self.update_time_from_unix_time_in_ms),
            ("update_time_to", self.update_time_to_unix_time_in_ms),
        ];
        for (name, t) in times {
            if let Some(ms) = t
                && !(0..MAX_VALID_MS).contains(&ms)
            {
                return invalid(format!("{name} ({ms}) is not a valid unix time in ms"));
            }
        }

        // 3. The start range, with the SDK's defaults.
        let start_from = self
            .start_time_from_unix_time_in_ms
            .unwrap_or(now_ms - DEFAULT_START_WINDOW_MS);
        let start_to = self.start_time_to_unix_time_in_ms.unwrap_or(now_ms);
        if start_to < start_from {
            return invalid(format!(
                "start_time_to ({start_to}) must not be before start_time_from ({start_from})"
            ));
        }

        // 4. Close-time rules.
        if self.close_time_from_unix_time_in_ms.is_some() && self.status == CaseStatusFilter::Open {
            return invalid("a close time filter cannot be used with status OPEN".into());
        }
        match (
            self.close_time_from_unix_time_in_ms,
            self.close_time_to_unix_time_in_ms,
        ) {
            (None, Some(_)) => {
                return invalid("close_time_to requires close_time_from".into());
            }
            (Some(from), Some(to)) if to < from => {
                return invalid(format!(
                    "close_time_to ({to}) must not be before close_time_from ({from})"
                ));
            }
            _ => {}
        }

        // 5. Enum membership holds by construction (typed enums).

        // 6. Open cases have no close time to sort by.
        if self.status == CaseStatusFilter::Open && self.sort_by == SortBy::CloseTime {
            return invalid("status OPEN cannot be sorted by CLOSE_TIME".into());
        }

        Ok(CaseFilterBody {
            start_time_from_unix_time_in_ms: start_from,
            start_time_to_unix_time_in_ms: start_to,
            close_time_from_unix_time_in_ms: self.close_time_from_unix_time_in_ms,
            close_time_to_unix_time_in_ms: self.close_time_to_unix_time_in_ms,
            update_time_from_unix_time_in_ms: self.update_time_from_unix_time_in_ms,
            update_time_to_unix_time_in_ms: self.update_time_to_unix_time_in_ms,
            status: self.status,
            operator: self.operator,
            sort_by: self.sort_by,
            sort_order: self.sort_order,
            max_results,
            environments: self.environments.clone(),
            tags: self.tags.clone(),
        })
    }
}

/// The exact request body. No `skip_serializing_if`: the SDK always sends all 13 keys, `null`
/// when unset, and the platform is only known to accept that shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseFilterBody {
    pub start_time_from_unix_time_in_ms: i64,
    pub start_time_to_unix_time_in_ms: i64,
    pub close_time_from_unix_time_in_ms: Option<i64>,
    pub close_time_to_unix_time_in_ms: Option<i64>,
    pub update_time_from_unix_time_in_ms: Option<i64>,
    pub update_time_to_unix_time_in_ms: Option<i64>,
    pub status: CaseStatusFilter,
    pub operator: Option<FilterOperator>,
    pub sort_by: SortBy,
    pub sort_order: SortOrder,
    pub max_results: u32,
    pub environments: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_719_592_000_000;

    fn err(f: &CaseFilter) -> String {
        match f.to_body(NOW) {
            Err(SoarError::InvalidFilter(m)) => m,
            other => panic!("expected InvalidFilter, got {other:?}"),
        }
    }

    #[test]
    fn body_has_all_thirteen_keys_with_nulls() {
        let mut f = CaseFilter::new(CaseStatusFilter::Open);
        f.start_time_from_unix_time_in_ms = Some(1_717_000_000_000);
        f.update_time_from_unix_time_in_ms = Some(1_719_500_000_000);
        f.operator = Some(FilterOperator::Or);
        f.sort_by = SortBy::UpdateTime;
        f.sort_order = SortOrder::Asc;
        f.max_results = 100;
        f.tags = Some(vec!["Currency".into()]);
        let v = serde_json::to_value(f.to_body(NOW).unwrap()).unwrap();
        // The spec's example body, key for key.
        assert_eq!(
            v,
            json!({"start_time_from_unix_time_in_ms":1717000000000i64,
                   "start_time_to_unix_time_in_ms":1719592000000i64,
                   "close_time_from_unix_time_in_ms":null,"close_time_to_unix_time_in_ms":null,
                   "update_time_from_unix_time_in_ms":1719500000000i64,
                   "update_time_to_unix_time_in_ms":null,
                   "status":"OPEN","operator":"OR","sort_by":"UPDATE_TIME","sort_order":"ASC",
                   "max_results":100,"environments":null,"tags":["Currency"]})
        );
        assert_eq!(v.as_object().unwrap().len(), 13);
    }

    #[test]
    fn defaults_fill_the_start_range_and_null_operator_is_sent() {
        let v = serde_json::to_value(
            CaseFilter::new(CaseStatusFilter::Both)
                .to_body(NOW)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            v["start_time_from_unix_time_in_ms"],
            NOW - DEFAULT_START_WINDOW_MS
        );
        assert_eq!(v["start_time_to_unix_time_in_ms"], NOW);
        assert_eq!(v["operator"], serde_json::Value::Null);
        assert_eq!(v["sort_by"], "START_TIME");
        assert_eq!(v["sort_order"], "DESC");
        assert_eq!(v["max_results"], 1000);
        assert_eq!(v["status"], "BOTH");
    }

    #[test]
    fn max_results_is_capped_and_must_be_positive() {
        let mut f = CaseFilter::new(CaseStatusFilter::Open);
        f.max_results = 50_000;
        assert_eq!(f.to_body(NOW).unwrap().max_results, CASE_FILTER_MAX_RESULTS);
        f.max_results = 0;
        assert!(err(&f).contains("max_results"));
    }

    #[test]
    fn validation_rules_in_sdk_order() {
        // Invalid timestamp.
        let mut f = CaseFilter::new(CaseStatusFilter::Open);
        f.update_time_to_unix_time_in_ms = Some(-1);
        assert!(err(&f).contains("update_time_to"));
        f.update_time_to_unix_time_in_ms = Some(MAX_VALID_MS);
        assert!(err(&f).contains("update_time_to"));

        // start_to before start_from (also when start_to defaults to now).
        let mut f = CaseFilter::new(CaseStatusFilter::Open);
        f.start_time_from_unix_time_in_ms = Some(NOW + 1);
        assert!(err(&f).contains("start_time_to"));

        // Close time with OPEN.
        let mut f = CaseFilter::new(CaseStatusFilter::Open);
        f.close_time_from_unix_time_in_ms = Some(1);
        assert!(err(&f).contains("status OPEN"));

        // close_to without close_from, and reversed.
        let mut f = CaseFilter::new(CaseStatusFilter::Close);
        f.close_time_to_unix_time_in_ms = Some(5);
        assert!(err(&f).contains("requires close_time_from"));
        f.close_time_from_unix_time_in_ms = Some(6);
        assert!(err(&f).contains("must not be before close_time_from"));
        f.close_time_to_unix_time_in_ms = Some(6);
        assert!(f.to_body(NOW).is_ok());

        // OPEN sorted by CLOSE_TIME.
        let mut f = CaseFilter::new(CaseStatusFilter::Open);
        f.sort_by = SortBy::CloseTime;
        assert!(err(&f).contains("CLOSE_TIME"));

        // Order: an invalid max_results is reported before an invalid timestamp.
        let mut f = CaseFilter::new(CaseStatusFilter::Open);
        f.max_results = 0;
        f.start_time_from_unix_time_in_ms = Some(-5);
        assert!(err(&f).contains("max_results"));
    }
}
