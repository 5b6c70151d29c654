//! The case filter of `GetCasesIdByFilter`: the strict parse of its 13 keys, and matching and
//! sorting. Semantics the spec leaves open are decided here, where they are used.

use serde_json::Value;

use super::state::SimCase;

/// The platform's cap on GetCasesIdByFilter results.
const MAX_RESULTS_CAP: i64 = 10_000;

/// The 13 keys of a GetCasesIdByFilter body, all required (the SDK always sends them).
const FILTER_KEYS: [&str; 13] = [
    "start_time_from_unix_time_in_ms",
    "start_time_to_unix_time_in_ms",
    "close_time_from_unix_time_in_ms",
    "close_time_to_unix_time_in_ms",
    "update_time_from_unix_time_in_ms",
    "update_time_to_unix_time_in_ms",
    "status",
    "operator",
    "sort_by",
    "sort_order",
    "max_results",
    "environments",
    "tags",
];

/// A parsed case filter.
pub(super) struct Filter {
    start: (Option<i64>, Option<i64>),
    close: (Option<i64>, Option<i64>),
    update: (Option<i64>, Option<i64>),
    status: String,
    and: bool,
    sort_by: String,
    pub(super) ascending: bool,
    pub(super) max_results: usize,
    environments: Option<Vec<String>>,
    tags: Option<Vec<String>>,
}

pub(super) fn parse_filter(v: &Value) -> Result<Filter, String> {
    let obj = v.as_object().ok_or("the body must be a JSON object")?;
    for k in FILTER_KEYS {
        if !obj.contains_key(k) {
            return Err(format!("missing key {k}"));
        }
    }
    if let Some(extra) = obj.keys().find(|k| !FILTER_KEYS.contains(&k.as_str())) {
        return Err(format!("unknown key {extra}"));
    }
    let time = |k: &str| -> Result<Option<i64>, String> {
        match &obj[k] {
            Value::Null => Ok(None),
            Value::Number(n) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("{k} must be an integer")),
            _ => Err(format!("{k} must be an integer or null")),
        }
    };
    let enum_str = |k: &str, allowed: &[&str], null_as: Option<&str>| -> Result<String, String> {
        match (&obj[k], null_as) {
            (Value::Null, Some(d)) => Ok(d.to_string()),
            (Value::String(s), _) if allowed.contains(&s.as_str()) => Ok(s.clone()),
            (other, _) => Err(format!("{k} must be one of {allowed:?}, got {other}")),
        }
    };
    let names = |k: &str| -> Result<Option<Vec<String>>, String> {
        match &obj[k] {
            Value::Null => Ok(None),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{k} must hold strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(format!("{k} must be a list of strings or null")),
        }
    };
    let max_results = obj["max_results"]
        .as_i64()
        .ok_or("max_results must be an integer")?;
    if max_results <= 0 {
        return Err("max_results must be positive".into());
    }
    Ok(Filter {
        start: (
            time("start_time_from_unix_time_in_ms")?,
            time("start_time_to_unix_time_in_ms")?,
        ),
        close: (
            time("close_time_from_unix_time_in_ms")?,
            time("close_time_to_unix_time_in_ms")?,
        ),
        update: (
            time("update_time_from_unix_time_in_ms")?,
            time("update_time_to_unix_time_in_ms")?,
        ),
        status: enum_str("status", &["OPEN", "CLOSE", "BOTH"], None)?,
        // `operator: null` is unverified on the real server; treated as OR.
        and: enum_str("operator", &["OR", "AND"], Some("OR"))? == "AND",
        sort_by: enum_str(
            "sort_by",
            &["START_TIME", "CLOSE_TIME", "UPDATE_TIME"],
            Some("START_TIME"),
        )?,
        ascending: enum_str("sort_order", &["ASC", "DESC"], Some("DESC"))? == "ASC",
        max_results: max_results.min(MAX_RESULTS_CAP) as usize,
        environments: names("environments")?,
        tags: names("tags")?,
    })
}

fn in_range(t: i64, (from, to): (Option<i64>, Option<i64>)) -> bool {
    from.is_none_or(|f| t >= f) && to.is_none_or(|x| t <= x)
}

impl Filter {
    pub(super) fn matches(&self, c: &SimCase) -> bool {
        let status_ok = match self.status.as_str() {
            "OPEN" => c.open,
            "CLOSE" => !c.open,
            _ => true,
        };
        let nonempty = |v: &Option<Vec<String>>| v.as_ref().filter(|v| !v.is_empty()).cloned();
        let env_ok = nonempty(&self.environments).is_none_or(|e| e.contains(&c.environment));
        let tags_ok = nonempty(&self.tags).is_none_or(|t| c.tags.iter().any(|x| t.contains(x)));
        status_ok && env_ok && tags_ok && self.times_match(c)
    }

    /// The time ranges that apply, combined with the operator. The start range always applies
    /// (the SDK always fills it); the update range only when one of its bounds is given; the
    /// close range only with status CLOSE (the SDK says the server ignores it otherwise).
    fn times_match(&self, c: &SimCase) -> bool {
        let mut checks = vec![in_range(c.creation_time, self.start)];
        if self.update.0.is_some() || self.update.1.is_some() {
            checks.push(in_range(c.modification_time, self.update));
        }
        if self.status == "CLOSE" && self.close.0.is_some() {
            checks.push(c.close_time.is_some_and(|t| in_range(t, self.close)));
        }
        if self.and {
            checks.iter().all(|b| *b)
        } else {
            checks.iter().any(|b| *b)
        }
    }

    pub(super) fn sort_key(&self, c: &SimCase) -> i64 {
        match self.sort_by.as_str() {
            "UPDATE_TIME" => c.modification_time,
            // Open cases have no close time; they sort as the earliest.
            "CLOSE_TIME" => c.close_time.unwrap_or(i64::MIN),
            _ => c.creation_time,
        }
    }
}
