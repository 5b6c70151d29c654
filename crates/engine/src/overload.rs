//! Overload: the scheduler telling that the load is beyond what the host can run on time.
//!
//! A tick fired more than [`OverloadOptions::lateness`] after its instant, or ticks that passed
//! without running (`ticks missed`), are *late signals*. Late signals that keep coming for
//! [`OverloadOptions::sustain`] open an **episode**: one warning with the figures
//! (`overloaded: ticks fire late`), `/readyz`'s `overload` detail and the
//! `soarjobd_overloaded` gauge. The episode ends after [`OverloadOptions::calm`] without a late
//! signal: one more line with the episode's figures. One stall (a paused VM, a long GC) is a
//! single burst of late signals, not an episode; a host that cannot keep up is.
//!
//! The detector runs on the scheduler's task with the scheduler's clock (so its tests run on a
//! virtual one); what it found is published in the core's [`Status`].

use std::time::Duration;

use chrono::{DateTime, Utc};

use soarjobd_core::Status;

/// When lateness is an overload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadOptions {
    /// A tick fired later than this after its instant is late.
    pub lateness: Duration,
    /// Late signals for this long open an episode.
    pub sustain: Duration,
    /// No late signal for this long ends it.
    pub calm: Duration,
}

impl Default for OverloadOptions {
    fn default() -> OverloadOptions {
        OverloadOptions {
            lateness: Duration::from_secs(1),
            sustain: Duration::from_secs(5),
            calm: Duration::from_secs(10),
        }
    }
}

/// Late ticks, on-time ticks, worst lateness and missed ticks since the first late signal.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    late: u64,
    on_time: u64,
    max_lateness: Duration,
    missed: u64,
}

/// The detector (see the module docs).
#[derive(Debug, Default)]
pub struct OverloadDetector {
    options: OverloadOptions,
    /// The first late signal of the current run of them.
    late_since: Option<DateTime<Utc>>,
    last_late: Option<DateTime<Utc>>,
    figures: Figures,
    in_episode: bool,
}

impl OverloadDetector {
    pub fn new(options: OverloadOptions) -> OverloadDetector {
        OverloadDetector {
            options,
            ..OverloadDetector::default()
        }
    }

    /// A scheduled tick fired `lateness` after its instant.
    pub fn tick_fired(&mut self, status: &Status, now: DateTime<Utc>, lateness: Duration) {
        if lateness > self.options.lateness {
            self.late(status, now, Some(lateness), 0);
        } else {
            self.turn(status, now);
            if self.late_since.is_some() {
                self.figures.on_time += 1;
            }
            if self.in_episode {
                let on_time = self.figures.on_time;
                status.update_overload(|v| v.on_time_ticks = on_time);
            }
        }
    }

    /// `count` ticks of a job passed without running.
    pub fn ticks_missed(&mut self, status: &Status, now: DateTime<Utc>, count: u64) {
        self.late(status, now, None, count);
    }

    /// A turn of the scheduler loop: ends an episode after the calm period.
    pub fn turn(&mut self, status: &Status, now: DateTime<Utc>) {
        let Some(last) = self.last_late else {
            return;
        };
        if elapsed(last, now) < self.options.calm {
            return;
        }
        if self.in_episode {
            let f = self.figures;
            let since = self.late_since.unwrap_or(last);
            tracing::info!(
                lasted_s = elapsed(since, last).as_secs(),
                late_ticks = f.late,
                on_time_ticks = f.on_time,
                max_lateness_ms = f.max_lateness.as_millis() as u64,
                ticks_missed = f.missed,
                "overload over: ticks fire on time again"
            );
            status.update_overload(|v| v.overloaded = false);
        }
        self.in_episode = false;
        self.late_since = None;
        self.last_late = None;
        self.figures = Figures::default();
    }

    fn late(
        &mut self,
        status: &Status,
        now: DateTime<Utc>,
        lateness: Option<Duration>,
        missed: u64,
    ) {
        self.turn(status, now);
        let since = *self.late_since.get_or_insert(now);
        self.last_late = Some(now);
        if let Some(l) = lateness {
            self.figures.late += 1;
            self.figures.max_lateness = self.figures.max_lateness.max(l);
        }
        self.figures.missed += missed;
        let f = self.figures;
        if !self.in_episode && elapsed(since, now) >= self.options.sustain {
            self.in_episode = true;
            tracing::warn!(
                late_for_s = elapsed(since, now).as_secs(),
                late_ticks = f.late,
                on_time_ticks = f.on_time,
                max_lateness_ms = f.max_lateness.as_millis() as u64,
                ticks_missed = f.missed,
                lateness_threshold_ms = self.options.lateness.as_millis() as u64,
                "overloaded: ticks fire late; the load is beyond what this host runs on time \
                 (fewer or less frequent jobs, exec.max_concurrent, or more CPU)"
            );
            status.update_overload(|v| {
                v.overloaded = true;
                v.episodes += 1;
                v.since = Some(since);
            });
        }
        if self.in_episode {
            status.update_overload(|v| {
                v.late_ticks = f.late;
                v.on_time_ticks = f.on_time;
                v.max_lateness_ms = f.max_lateness.as_millis() as u64;
                v.ticks_missed = f.missed;
            });
        }
    }
}

fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    /// One burst of lateness (a stall) is no episode; lateness that lasts is one, reported
    /// once, and ends after the calm period.
    #[test]
    fn a_stall_is_not_an_episode_sustained_lateness_is_one() {
        let status = Status::default();
        let mut d = OverloadDetector::new(OverloadOptions::default());
        let late = Duration::from_secs(3);
        d.tick_fired(&status, at(0), late);
        d.ticks_missed(&status, at(0), 2);
        d.turn(&status, at(11));
        assert_eq!(
            status.overload(),
            soarjobd_core::OverloadView::default(),
            "a stall"
        );
        for s in 20..30 {
            d.tick_fired(&status, at(s), late);
            d.tick_fired(&status, at(s), Duration::from_millis(10));
        }
        let v = status.overload();
        assert!(v.overloaded && v.episodes == 1, "{v:?}");
        assert_eq!(
            (v.late_ticks, v.on_time_ticks, v.max_lateness_ms),
            (10, 10, 3000)
        );
        assert_eq!(v.since, Some(at(20)));
        d.turn(&status, at(35));
        assert!(status.overload().overloaded, "not calm for 10 s yet");
        d.turn(&status, at(40));
        let v = status.overload();
        assert!(!v.overloaded && v.episodes == 1, "{v:?}");
    }
}
