//! Validate: the checks an item passes before it is staged (names, tags, attributes, ratings,
//! confidences, fields the writer sets itself, the fields a group type requires).

use serde_json::Value;

use crate::threatconnect::items::{Attribute, Group, Indicator};
use crate::threatconnect::types::{
    GroupType, IndicatorType, check_confidence, check_group_name, check_rating, check_tag,
};

/// Group fields the writer sets itself.
const GROUP_RESERVED: &[&str] = &[
    "name",
    "type",
    "xid",
    "tag",
    "attribute",
    "associatedGroupXid",
    "associatedGroups",
    "associatedIndicators",
];

/// Indicator fields the writer sets itself, including the per-type value fields, which would
/// override `summary` (for File, any hash field makes the server ignore the summary).
const INDICATOR_RESERVED: &[&str] = &[
    "summary",
    "type",
    "xid",
    "rating",
    "confidence",
    "tag",
    "attribute",
    "associatedGroups",
    "associatedIndicators",
    "fileOccurrence",
    "md5",
    "sha1",
    "sha256",
    "ip",
    "address",
    "hostName",
    "text",
    "AS Number",
    "Block",
    "Mutex",
    "Key Name",
    "Value Name",
    "Value Type",
    "User Agent String",
    "Subject",
    "Hashtag",
];

/// Parses an indicator type and checks/canonicalizes the summary for it.
pub(super) fn canonical(type_name: &str, summary: &str) -> Result<(IndicatorType, String), String> {
    let t = IndicatorType::parse(type_name)
        .ok_or_else(|| format!("unknown indicator type `{type_name}`"))?;
    Ok((t, t.canonical_summary(summary)?))
}

pub(super) fn check_group(g: &Group, t: GroupType) -> Result<(), String> {
    check_group_name(&g.name)?;
    g.tags.iter().try_for_each(|tag| check_tag(tag))?;
    check_attributes(&g.attributes)?;
    if let Some(k) = g
        .fields
        .keys()
        .find(|k| GROUP_RESERVED.contains(&k.as_str()))
    {
        return Err(format!(
            "field `{k}` is set by the writer, not by the caller"
        ));
    }
    for field in t.required_fields() {
        if g.fields.get(*field).is_none_or(Value::is_null) {
            return Err(format!("a {t} group needs the field `{field}`"));
        }
    }
    Ok(())
}

pub(super) fn check_indicator(i: &Indicator) -> Result<(), String> {
    if let Some(r) = i.rating {
        check_rating(r)?;
    }
    if let Some(c) = i.confidence {
        check_confidence(c)?;
    }
    i.tags.iter().try_for_each(|tag| check_tag(tag))?;
    check_attributes(&i.attributes)?;
    if let Some(k) = i
        .fields
        .keys()
        .find(|k| INDICATOR_RESERVED.contains(&k.as_str()))
    {
        return Err(format!(
            "field `{k}` is set by the writer, not by the caller"
        ));
    }
    Ok(())
}

fn check_attributes(attributes: &[Attribute]) -> Result<(), String> {
    for a in attributes {
        if a.attribute_type.trim().is_empty() {
            return Err("an attribute has no type".into());
        }
        if a.value.is_empty() {
            return Err(format!("attribute `{}` has no value", a.attribute_type));
        }
    }
    Ok(())
}
