//! Response types of the SOAR API (snake_case form, `?format=snake`).
//!
//! The real platform varies between versions and tenants: keys go missing, gain `null`, or turn
//! from numbers into strings. So every field is optional on the wire (missing or `null` -> the
//! type's default), unknown keys are ignored, and ids/times accept a number or a digit string.
//! A value of a truly wrong shape (an object where a string belongs) still fails, and the error
//! names its JSON path.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One case from CaseFullDetails (spec §3.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseDetails {
    #[serde(deserialize_with = "lenient_string")]
    pub identifier: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub creation_time: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub modification_time: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub alert_count: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub priority: i64,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_touched: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_merged: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_important: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_incident: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_locked: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub has_workflow: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub has_suspicious_entity: bool,
    #[serde(deserialize_with = "lenient_string")]
    pub environment: String,
    #[serde(deserialize_with = "lenient_string")]
    pub assigned_user: String,
    #[serde(deserialize_with = "lenient_string")]
    pub title: String,
    #[serde(deserialize_with = "lenient_string")]
    pub description: String,
    #[serde(deserialize_with = "lenient_string")]
    pub stage: String,
    /// `OPEN`/`CLOSE` per the SDK, `Opened` in some mocks, or a number: kept as text.
    #[serde(deserialize_with = "lenient_string")]
    pub status: String,
    #[serde(deserialize_with = "lenient_strings")]
    pub high_risk_products: Vec<String>,
    #[serde(deserialize_with = "lenient_opt_i64")]
    pub sla_expiration_unix_time: Option<i64>,
    #[serde(deserialize_with = "lenient_map")]
    pub additional_properties: BTreeMap<String, String>,
    #[serde(deserialize_with = "lenient_vec")]
    pub cyber_alerts: Vec<Alert>,
}

impl CaseDetails {
    /// True when the status reads as open (`OPEN`, `Opened`, `1`), whatever the platform's spelling.
    pub fn is_open(&self) -> bool {
        let s = self.status.to_ascii_lowercase();
        s.starts_with("open") || s == "1"
    }
}

/// An alert inside a case (`cyber_alerts[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Alert {
    /// The alert identifier used as `alert_identifier` in AddComment/AddTag.
    #[serde(deserialize_with = "lenient_string")]
    pub identifier: String,
    #[serde(deserialize_with = "lenient_string")]
    pub alert_group_identifier: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub creation_time: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub modification_time: i64,
    #[serde(deserialize_with = "lenient_string")]
    pub case_identifier: String,
    #[serde(deserialize_with = "lenient_string")]
    pub reporting_vendor: String,
    #[serde(deserialize_with = "lenient_string")]
    pub reporting_product: String,
    #[serde(deserialize_with = "lenient_string")]
    pub environment: String,
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub description: String,
    #[serde(deserialize_with = "lenient_string")]
    pub external_id: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub severity: i64,
    #[serde(deserialize_with = "lenient_string")]
    pub rule_generator: String,
    #[serde(deserialize_with = "lenient_strings")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub detected_time: i64,
    #[serde(deserialize_with = "lenient_vec")]
    pub security_events: Vec<Value>,
    #[serde(deserialize_with = "lenient_vec")]
    pub domain_relations: Vec<Value>,
    #[serde(deserialize_with = "lenient_vec")]
    pub domain_entities: Vec<Entity>,
    #[serde(deserialize_with = "lenient_map")]
    pub additional_properties: BTreeMap<String, String>,
    /// A string or an object, as the platform sends it.
    pub additional_data: Value,
}

impl Alert {
    /// The ticket id as shipped jobs read it: `additional_properties.TicketId`.
    pub fn ticket_id(&self) -> Option<&str> {
        self.additional_properties
            .get("TicketId")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// An entity of an alert (`domain_entities[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Entity {
    /// The entity value, upper-cased by the platform (`WKS-1.CORP.EXAMPLE.COM`).
    #[serde(deserialize_with = "lenient_string")]
    pub identifier: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub creation_time: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub modification_time: i64,
    #[serde(deserialize_with = "lenient_string")]
    pub case_identifier: String,
    #[serde(deserialize_with = "lenient_string")]
    pub alert_identifier: String,
    /// The wire value (`ADDRESS`, `DestinationURL`, `MacAddress`, ...): opaque text, since custom
    /// types may exist. See [`entity_types`] for the known ones.
    #[serde(deserialize_with = "lenient_string")]
    pub entity_type: String,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_internal: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_suspicious: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_artifact: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_enriched: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_vulnerable: bool,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_pivot: bool,
    #[serde(deserialize_with = "lenient_map")]
    pub additional_properties: BTreeMap<String, String>,
}

/// Entity type wire values (spec §4.2), for matching without typos.
pub mod entity_types {
    pub const ADDRESS: &str = "ADDRESS";
    pub const HOSTNAME: &str = "HOSTNAME";
    pub const USER: &str = "USERUNIQNAME";
    pub const MAC_ADDRESS: &str = "MacAddress";
    pub const FILENAME: &str = "FILENAME";
    pub const FILEHASH: &str = "FILEHASH";
    pub const PARENTHASH: &str = "PARENTHASH";
    pub const CHILDHASH: &str = "CHILDHASH";
    pub const URL: &str = "DestinationURL";
    pub const EMAIL_MESSAGE: &str = "EMAILSUBJECT";
    pub const CVE: &str = "CVE";
    pub const CVEID: &str = "CVEID";
    pub const THREAT_ACTOR: &str = "THREATACTOR";
    pub const SOURCE_DOMAIN: &str = "SOURCEDOMAIN";
    pub const DESTINATION_DOMAIN: &str = "DESTINATIONDOMAIN";
    pub const DOMAIN: &str = "DOMAIN";
    pub const PROCESS: &str = "PROCESS";
    pub const PHONE_NUMBER: &str = "PHONENUMBER";
    pub const GENERIC: &str = "GENERICENTITY";
}

/// A case comment (spec §3.5; GetCaseComments returns the same shape, §3.6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseComment {
    #[serde(deserialize_with = "lenient_string")]
    pub comment: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub comment_id: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub comment_type: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub case_id: i64,
    #[serde(deserialize_with = "lenient_opt_string")]
    pub alert_identifier: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub creator_user_id: String,
    #[serde(deserialize_with = "lenient_opt_string")]
    pub creator_full_name: Option<String>,
    #[serde(deserialize_with = "lenient_bool")]
    pub is_favorite: bool,
    #[serde(deserialize_with = "lenient_opt_bool")]
    pub is_deleted: Option<bool>,
    #[serde(deserialize_with = "lenient_i64")]
    pub creation_time_unix_time_in_ms: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub modification_time_unix_time_in_ms: i64,
    #[serde(deserialize_with = "lenient_opt_string")]
    pub last_editor: Option<String>,
    #[serde(deserialize_with = "lenient_opt_string")]
    pub last_editor_full_name: Option<String>,
    #[serde(deserialize_with = "lenient_opt_string")]
    pub comment_for_client: Option<String>,
    #[serde(deserialize_with = "lenient_opt_i64")]
    pub modification_time_unix_time_in_ms_for_client: Option<i64>,
}

impl CaseComment {
    /// Deleted comments do not count as present.
    pub fn is_live(&self) -> bool {
        self.is_deleted != Some(true)
    }
}

/// A case id or ticket id as the platform sends it: a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct IdText(pub String);

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IdText, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(IdText(s)),
            Value::Number(n) => Ok(IdText(n.to_string())),
            other => Err(de::Error::custom(format!(
                "expected a string or number id, got {}",
                kind(&other)
            ))),
        }
    }
}

/// A case id: a non-negative integer, or a string of digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CaseIdWire(pub u64);

impl<'de> Deserialize<'de> for CaseIdWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CaseIdWire, D::Error> {
        let v = Value::deserialize(d)?;
        let n = match &v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.map(CaseIdWire).ok_or_else(|| {
            de::Error::custom(format!("expected a case id (integer), got {}", kind(&v)))
        })
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

// ---- lenient field deserializers ----

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    lenient_opt_string(d).map(Option::unwrap_or_default)
}

fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(de::Error::custom(format!(
            "expected a string, got {}",
            kind(&other)
        ))),
    }
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    lenient_opt_i64(d).map(Option::unwrap_or_default)
}

fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    let n = match &v {
        Value::Null => return Ok(None),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::Number(n) => n.as_i64().or_else(|| {
            // A float such as 1.71e12 from a loosely typed producer: keep the whole part.
            n.as_f64()
                .filter(|f| f.is_finite() && f.fract() == 0.0)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.map(Some)
        .ok_or_else(|| de::Error::custom(format!("expected an integer, got {}", kind(&v))))
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    lenient_opt_bool(d).map(Option::unwrap_or_default)
}

/// Booleans also arrive as the strings `"True"`/`"False"` (Python's spelling).
fn lenient_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(Some(false)),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(Some(true)),
        _ => Err(de::Error::custom(format!(
            "expected a boolean, got {}",
            kind(&v)
        ))),
    }
}

fn lenient_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Vec<T>>::deserialize(d).map(Option::unwrap_or_default)
}

/// A list of names; non-string items (a tag object on some versions) are kept as their JSON
/// text rather than failing the whole case.
fn lenient_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items: Option<Vec<Value>> = Option::deserialize(d)?;
    Ok(items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| match v {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        })
        .collect())
}

/// A string map; non-string values are kept as their JSON text (`true`, `12`).
fn lenient_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let m: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    Ok(m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HttpError, decode_json};
    use reqwest::Method;

    /// The spec's example case (§3.3).
    const SPEC_CASE: &str = r#"{"identifier":"123","creation_time":1719500000000,"modification_time":1719500100000,"alert_count":1,
 "priority":60,"is_touched":false,"is_merged":false,"is_important":false,"environment":"Default Environment",
 "assigned_user":"Admin","title":"Suspicious phishing email","description":"","status":"OPEN",
 "is_incident":false,"stage":"Triage","has_suspicious_entity":true,"high_risk_products":[],"is_locked":false,
 "has_workflow":false,"sla_expiration_unix_time":null,"additional_properties":{},
 "cyber_alerts":[{"identifier":"PHISHING_83765943-9437-4771-96F6-BD0FB291384E","alert_group_identifier":"g-1",
   "creation_time":1719500000000,"modification_time":1719500000000,"case_identifier":"123",
   "reporting_vendor":"Email server","reporting_product":"Phishing detector","environment":"Default Environment",
   "name":"Suspicious phishing email","description":"","external_id":"8dcaf2f2-5ed6-4bcc-8a49-61e0850c3881",
   "severity":60,"rule_generator":"Phishing","tags":[],"detected_time":1719499990000,"security_events":[],
   "domain_relations":[],"additional_data":null,
   "additional_properties":{"TicketId":"8dcaf2f2-5ed6-4bcc-8a49-61e0850c3881","IsTestCase":"False"},
   "domain_entities":[{"identifier":"192.168.1.1","creation_time":1719500000000,"modification_time":1719500000000,
     "case_identifier":"123","alert_identifier":"PHISHING_83765943-9437-4771-96F6-BD0FB291384E",
     "entity_type":"ADDRESS","is_internal":false,"is_suspicious":true,"is_artifact":false,"is_enriched":false,
     "is_vulnerable":false,"is_pivot":false,"additional_properties":{"IsSuspicious":"True","Type":"ADDRESS"}}]}]}"#;

    #[test]
    fn spec_example_case_decodes() {
        let c: CaseDetails = serde_json::from_str(SPEC_CASE).unwrap();
        assert_eq!(c.identifier, "123");
        assert!(c.is_open());
        assert_eq!(c.sla_expiration_unix_time, None);
        let a = &c.cyber_alerts[0];
        assert_eq!(a.ticket_id(), Some("8dcaf2f2-5ed6-4bcc-8a49-61e0850c3881"));
        assert_eq!(a.domain_entities[0].entity_type, entity_types::ADDRESS);
        assert!(a.domain_entities[0].is_suspicious);
    }

    #[test]
    fn tolerant_of_missing_null_extra_and_stringly_values() {
        let c: CaseDetails = serde_json::from_str(
            r#"{"identifier":42,"title":null,"status":"Opened","new_key":{"x":1},
                "creation_time":"1719500000000","cyber_alerts":[{"identifier":"A",
                "additional_properties":{"TicketId":7,"Flag":true},
                "tags":["t",{"name":"obj"}],"domain_entities":null}]}"#,
        )
        .unwrap();
        assert_eq!(c.identifier, "42");
        assert_eq!(c.title, "");
        assert!(c.is_open());
        assert_eq!(c.creation_time, 1_719_500_000_000);
        assert_eq!(c.cyber_alerts[0].ticket_id(), Some("7"));
        assert_eq!(c.cyber_alerts[0].additional_properties["Flag"], "true");
        assert!(c.cyber_alerts[0].domain_entities.is_empty());
        assert_eq!(c.cyber_alerts[0].tags.len(), 2);
        let c: CaseDetails = serde_json::from_str("{}").unwrap();
        assert!(c.cyber_alerts.is_empty());
    }

    #[test]
    fn wrong_shape_names_the_json_path() {
        let body = br#"{"identifier":"1","cyber_alerts":[{"identifier":"a"},
            {"identifier":"b","domain_entities":[{"is_pivot":"maybe"}]}]}"#;
        let err = decode_json::<CaseDetails>(&Method::GET, "/api/x", body).unwrap_err();
        match err {
            HttpError::BadResponse { json_path, .. } => {
                assert_eq!(json_path, "cyber_alerts[1].domain_entities[0].is_pivot")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn comment_decodes_with_python_bools_and_nulls() {
        let c: CaseComment = serde_json::from_str(
            r#"{"comment":"[Sync] note","comment_id":1,"comment_type":5,"case_id":7,
               "alert_identifier":null,"creator_user_id":"u","creator_full_name":"System",
               "is_favorite":false,"is_deleted":"False","creation_time_unix_time_in_ms":1686040471269,
               "modification_time_unix_time_in_ms":1686040471269}"#,
        )
        .unwrap();
        assert_eq!(c.case_id, 7);
        assert!(c.is_live());
        assert_eq!(c.alert_identifier, None);
    }

    #[test]
    fn ids_accept_numbers_and_strings() {
        let v: Vec<IdText> = serde_json::from_str(r#"[1, "a-b", 9]"#).unwrap();
        assert_eq!(v[0].0, "1");
        assert_eq!(v[1].0, "a-b");
        let v: Vec<CaseIdWire> = serde_json::from_str(r#"[9, "15"]"#).unwrap();
        assert_eq!(v, vec![CaseIdWire(9), CaseIdWire(15)]);
        assert!(serde_json::from_str::<Vec<CaseIdWire>>(r#"[{"id":1}]"#).is_err());
    }
}
