//! Merge: how a duplicate item is folded into the one queued first.

use super::PIndicator;
use crate::threatconnect::items::{Attribute, Indicator};

/// Merges a duplicate into the indicator queued first: tags and attributes are united; the
/// higher rating and confidence win (a later, weaker sighting must not downgrade an earlier,
/// stronger one); any other field takes the later value.
pub(super) fn merge_indicator(into: &mut PIndicator, dup: Indicator) {
    into.rating = max_opt(into.rating, dup.rating);
    into.confidence = into.confidence.max(dup.confidence);
    union_tags(&mut into.tags, dup.tags);
    union_attributes(&mut into.attributes, dup.attributes);
    into.fields.extend(dup.fields);
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// Tags are case-insensitive on the platform: the first spelling is kept.
pub(super) fn union_tags(into: &mut Vec<String>, more: Vec<String>) {
    for t in more {
        if !into.iter().any(|x| x.eq_ignore_ascii_case(&t)) {
            into.push(t);
        }
    }
}

pub(super) fn dedup_tags(tags: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(tags.len());
    union_tags(&mut out, tags);
    out
}

/// Same type and value = same attribute; shown if any copy was.
pub(super) fn union_attributes(into: &mut Vec<Attribute>, more: Vec<Attribute>) {
    for a in more {
        match into
            .iter_mut()
            .find(|x| x.attribute_type == a.attribute_type && x.value == a.value)
        {
            Some(x) => x.displayed |= a.displayed,
            None => into.push(a),
        }
    }
}

pub(super) fn dedup_attributes(attributes: Vec<Attribute>) -> Vec<Attribute> {
    let mut out = Vec::with_capacity(attributes.len());
    union_attributes(&mut out, attributes);
    out
}
