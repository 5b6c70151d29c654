//! The status page's pictures, drawn on the server as inline SVG (no script, no image request,
//! nothing for the CSP to allow): a job's run-history strip and its duration sparkline.
//!
//! Both take a job's runs newest first (as the store returns them) and draw them oldest on the
//! left. The marks' colours are classes (`m-<status>`) of the page's style sheet
//! ([`crate::html::STATUS_COLOURS`]), and their size is CSS too: a mark is a few dozen bytes,
//! so a page of jobs with 30 marks each stays small.

use std::fmt::Write as _;

use soarjobd_core::store::{RunMark, RunStatus};

use crate::html::{STATUS_COLOURS, esc, millis};

/// The width of one mark of a strip and the gap after it, in pixels.
const MARK: usize = 5;
const GAP: usize = 2;
/// The sparkline's size in pixels.
const SPARK_W: f64 = 90.0;
const SPARK_H: f64 = 18.0;

/// `n` statuses as `3 succeeded, 1 failed` (in the legend's order).
fn tally(runs: &[RunMark]) -> String {
    let mut parts = Vec::new();
    for (status, _) in STATUS_COLOURS {
        let n = runs.iter().filter(|r| r.status == status).count();
        if n > 0 {
            parts.push(format!("{n} {}", status.as_str().replace('_', " ")));
        }
    }
    parts.join(", ")
}

/// The run-history strip of `runs` (newest first; at most `slots` drawn): one coloured mark per
/// run, oldest left, each a link to its run. Its accessible name counts the statuses.
pub fn strip(runs: &[RunMark], slots: usize) -> String {
    let runs = &runs[..runs.len().min(slots)];
    let width = slots * (MARK + GAP);
    let label = if runs.is_empty() {
        "no runs yet".to_string()
    } else {
        format!("last {} runs: {}", runs.len(), tally(runs))
    };
    let mut out = String::with_capacity(80 + runs.len() * 56);
    let _ = write!(
        out,
        "<svg class=\"strip\" width=\"{width}\" height=\"14\" role=\"img\" aria-label=\"{label}\"><title>{label}</title>",
        label = esc(&label)
    );
    for (i, r) in runs.iter().rev().enumerate() {
        // Right-aligned: every job's newest run is at the same place, whatever its count.
        let x = (slots - runs.len() + i) * (MARK + GAP);
        let _ = write!(
            out,
            "<a href=\"/runs/{}\"><rect x=\"{x}\" class=\"m-{}\"/></a>",
            r.id,
            r.status.as_str()
        );
    }
    out.push_str("</svg>");
    out
}

/// The duration sparkline of `runs`' finished runs (newest first in; oldest left out), scaled
/// to the longest; empty when fewer than two runs have a duration.
pub fn sparkline(runs: &[RunMark]) -> String {
    let durations: Vec<i64> = runs
        .iter()
        .rev()
        .filter(|r| r.status != RunStatus::Running && r.status != RunStatus::Skipped)
        .filter_map(|r| r.duration_ms)
        .collect();
    if durations.len() < 2 {
        return String::new();
    }
    let max = durations.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = SPARK_W / (durations.len() - 1) as f64;
    let mut points = String::with_capacity(durations.len() * 10);
    for (i, d) in durations.iter().enumerate() {
        let x = i as f64 * step;
        // 1 px of margin so that the line's stroke is not cut at the top or bottom.
        let y = 1.0 + (SPARK_H - 2.0) * (1.0 - *d as f64 / max);
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    let label = format!(
        "durations of the last {} runs: newest {}, longest {}",
        durations.len(),
        millis(*durations.last().unwrap_or(&0)),
        millis(max as i64)
    );
    format!(
        "<svg class=\"spark\" width=\"{SPARK_W}\" height=\"{SPARK_H}\" role=\"img\" aria-label=\"{label}\">\
         <title>{label}</title><polyline points=\"{}\"/></svg>",
        points.trim_end(),
        label = esc(&label)
    )
}

/// The chart's size in pixels.
const CHART_W: usize = 800;
const CHART_H: usize = 120;

/// A bar chart of `runs`' durations (newest first in; oldest left), one bar per run in its
/// status's colour, each a link to its run, scaled to the longest; runs without a duration
/// (running, skipped) are a stub. The longest and the newest are written beside it.
pub fn duration_chart(runs: &[RunMark]) -> String {
    if runs.is_empty() {
        return "<p class=\"muted\" id=\"chart\">No runs yet.</p>".into();
    }
    let max = runs
        .iter()
        .filter_map(|r| r.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (CHART_W / runs.len()).clamp(2, 40);
    let bar = (slot - 1).max(1);
    let label = format!(
        "durations of the last {} runs, oldest left; the longest {}",
        runs.len(),
        millis(max)
    );
    let mut out = format!(
        "<p class=\"muted\">longest: {}</p><svg id=\"chart\" class=\"chart\" width=\"{}\" height=\"{CHART_H}\" \
         role=\"img\" aria-label=\"{label}\"><title>{label}</title>",
        millis(max),
        slot * runs.len(),
        label = esc(&label)
    );
    for (i, r) in runs.iter().rev().enumerate() {
        let h = r.duration_ms.map_or(2, |d| {
            ((d as f64 / max as f64) * (CHART_H - 2) as f64)
                .round()
                .max(2.0) as usize
        });
        let _ = write!(
            out,
            "<a href=\"/runs/{}\"><rect x=\"{}\" y=\"{}\" width=\"{bar}\" height=\"{h}\" class=\"m-{}\"/></a>",
            r.id,
            i * slot,
            CHART_H - h,
            r.status.as_str()
        );
    }
    out.push_str("</svg>");
    out
}

/// A small square of a status's colour, for the legend.
pub fn key(status: RunStatus) -> String {
    format!(
        "<svg class=\"key\" width=\"10\" height=\"10\" aria-hidden=\"true\"><rect class=\"m-{}\"/></svg>",
        status.as_str()
    )
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use soarjobd_core::store::Trigger;

    use super::*;

    fn mark(id: i64, status: RunStatus, ms: Option<i64>) -> RunMark {
        let t = DateTime::from_timestamp_millis(id * 1000).unwrap();
        RunMark {
            id,
            job_id: "j".into(),
            scheduled_at: t,
            trigger: Trigger::Schedule,
            status,
            started_at: t,
            duration_ms: ms,
        }
    }

    #[test]
    fn a_strip_draws_the_newest_run_rightmost_and_counts_the_statuses() {
        let runs = [
            mark(3, RunStatus::Running, None),
            mark(2, RunStatus::Failed, Some(20)),
            mark(1, RunStatus::Succeeded, Some(10)),
        ];
        let svg = strip(&runs, 30);
        let order: Vec<&str> = svg
            .match_indices("/runs/")
            .map(|(i, _)| &svg[i + 6..i + 7])
            .collect();
        assert_eq!(order, ["1", "2", "3"], "{svg}");
        assert!(
            svg.contains("<rect x=\"203\" class=\"m-running\"/>"),
            "{svg}"
        );
        assert!(
            svg.contains("<rect x=\"189\" class=\"m-succeeded\"/>"),
            "{svg}"
        );
        assert!(svg.contains("aria-label=\"last 3 runs: 1 succeeded, 1 failed, 1 running\""));
        // Only `slots` marks are drawn.
        assert_eq!(strip(&runs, 2).matches("<rect").count(), 2);
        assert!(strip(&[], 30).contains("no runs yet"));
    }

    #[test]
    fn a_sparkline_scales_finished_durations_to_the_longest() {
        let runs = [
            mark(3, RunStatus::Running, None),
            mark(2, RunStatus::Failed, Some(100)),
            mark(1, RunStatus::Succeeded, Some(50)),
        ];
        let svg = sparkline(&runs);
        assert!(svg.contains("points=\"0.0,9.0 90.0,1.0\""), "{svg}");
        assert!(svg.contains("newest 100 ms, longest 100 ms"), "{svg}");
        assert_eq!(sparkline(&runs[..2]), "");
    }
}
