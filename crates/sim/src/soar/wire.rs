//! Wire shapes (spec §3), written from the spec and built as JSON directly: a case with its
//! alerts and entities (`CaseFullDetails`), and a comment.

use serde_json::{Value, json};

use super::state::{SimAlert, SimCase, SimComment};

pub(super) fn case_json(c: &SimCase) -> Value {
    let id = c.id.to_string();
    json!({
        "identifier": id,
        "creation_time": c.creation_time,
        "modification_time": c.modification_time,
        "alert_count": c.alerts.len(),
        "priority": c.priority,
        "is_touched": false,
        "is_merged": false,
        "is_important": c.priority >= 80,
        "environment": c.environment,
        "assigned_user": c.assigned_user,
        "title": c.title,
        "description": "",
        "status": if c.open { "OPEN" } else { "CLOSE" },
        "is_incident": false,
        "stage": c.stage,
        "has_suspicious_entity": c.alerts.iter().any(|a| a.entities.iter().any(|e| e.is_suspicious)),
        "high_risk_products": [],
        "is_locked": false,
        "has_workflow": false,
        "sla_expiration_unix_time": null,
        "additional_properties": {},
        "cyber_alerts": c.alerts.iter().map(|a| alert_json(c, a)).collect::<Vec<_>>(),
    })
}

fn alert_json(c: &SimCase, a: &SimAlert) -> Value {
    let case_id = c.id.to_string();
    json!({
        "identifier": a.identifier,
        "alert_group_identifier": format!("{}_{}", a.rule_generator, c.id),
        "creation_time": a.creation_time,
        "modification_time": a.creation_time,
        "case_identifier": case_id,
        "reporting_vendor": a.vendor,
        "reporting_product": a.product,
        "environment": c.environment,
        "name": a.name,
        "description": "",
        "external_id": a.ticket_id,
        "severity": a.severity,
        "rule_generator": a.rule_generator,
        "tags": [],
        "detected_time": a.creation_time - 10_000,
        "security_events": [],
        "domain_relations": [],
        "additional_data": null,
        "additional_properties": {
            "TicketId": a.ticket_id,
            "DeviceProduct": a.product,
            "IsTestCase": "False",
            "AlertGroupIdentifier": format!("{}_{}", a.rule_generator, c.id),
        },
        "domain_entities": a.entities.iter().map(|e| json!({
            "identifier": e.identifier,
            "creation_time": a.creation_time,
            "modification_time": a.creation_time,
            "case_identifier": case_id,
            "alert_identifier": a.identifier,
            "entity_type": e.entity_type,
            "is_internal": e.is_internal,
            "is_suspicious": e.is_suspicious,
            "is_artifact": false,
            "is_enriched": false,
            "is_vulnerable": false,
            "is_pivot": false,
            "additional_properties": {
                "IsSuspicious": if e.is_suspicious { "True" } else { "False" },
                "IsInternalAsset": if e.is_internal { "True" } else { "False" },
                "Type": e.entity_type,
                "Environment": c.environment,
            },
        })).collect::<Vec<_>>(),
    })
}

pub(super) fn comment_json(c: &SimComment) -> Value {
    json!({
        "comment": c.comment,
        "comment_id": c.comment_id,
        "comment_type": 5,
        "case_id": c.case_id,
        "alert_identifier": c.alert_identifier,
        "creator_user_id": "77bdb7a4-8484-481d-9482-2449e33f9518",
        "creator_full_name": "API",
        "is_favorite": false,
        "is_deleted": false,
        "creation_time_unix_time_in_ms": c.creation_time_unix_time_in_ms,
        "modification_time_unix_time_in_ms": c.modification_time_unix_time_in_ms,
        "last_editor": null,
        "last_editor_full_name": null,
        "comment_for_client": null,
        "modification_time_unix_time_in_ms_for_client": null,
    })
}
