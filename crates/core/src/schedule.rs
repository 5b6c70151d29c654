//! Schedule math: given a schedule and an instant, when does the job tick next?
//!
//! Everything here is pure (no I/O, no clock reads) so the scheduler, the `check` and `next`
//! commands and the tests all agree on the exact same instants.
//!
//! Two kinds of schedule exist:
//!
//! - **Intervals** (`every: 15m`) tick on exact multiples of the period since the Unix epoch.
//!   Anchoring to the epoch rather than to the daemon's start time is what lets restarts and
//!   replicas agree on tick instants, and so lets the store claim each tick exactly once.
//! - **Cron** expressions are parsed by croner (crontab weekday numbering, day-of-month OR
//!   day-of-week as in Vixie cron, `L`/`W`/`#`) and evaluated on the wall clock of an IANA
//!   time zone. Croner only enumerates wall-clock matches here; this module maps each match to
//!   real instants itself, so the daylight-saving rules are ours and are written down in one
//!   place (`DstRule`).
//!
//! Jitter is a deterministic offset per (job id, tick), so a restart never moves a tick.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The longest `every` period accepted. Anything rarer is better written as a cron expression,
/// and the bound keeps the epoch arithmetic far away from overflow.
const MAX_INTERVAL_SECS: u64 = 3650 * 86_400;

/// Upper bound on wall-clock matches examined in one search. A search normally looks at one
/// or two matches; only a per-second pattern next to a large clock change looks at more. The
/// bound turns a logic error into `None` instead of a hang.
const MAX_WALL_MATCHES_PER_SEARCH: u32 = 200_000;

/// Why a schedule could not be built. Every message says what was expected, because these end
/// up verbatim in `check` output next to a file and line.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error(
        "invalid cron expression `{expr}`: {reason}; expected 5 fields (min hour dom month dow), \
         6 with seconds first, or @yearly/@annually/@monthly/@weekly/@daily/@midnight/@hourly"
    )]
    InvalidCron { expr: String, reason: String },
    /// The cron expression parses but names no date that exists (e.g. `0 0 30 2 *`).
    #[error("cron expression `{expr}` never fires: no date matches it")]
    CronNeverFires { expr: String },
    /// The time zone is not in the IANA database.
    #[error("unknown time zone `{name}` ({})", timezone_hint(.suggestion.as_deref()))]
    UnknownTimeZone {
        name: String,
        /// A correctly spelled zone when the name only differs in case.
        suggestion: Option<String>,
    },
    /// A duration string (`15m`, `1h30m`) does not parse.
    #[error("invalid duration `{input}`: {reason}; {hint}", hint = crate::config::grammar::DURATION_HINT)]
    InvalidDuration { input: String, reason: String },
    /// An `every` period is out of range or not whole seconds.
    #[error("invalid interval `{period}`: {reason}")]
    InvalidInterval { period: String, reason: String },
}

fn timezone_hint(suggestion: Option<&str>) -> String {
    match suggestion {
        Some(zone) => format!("did you mean `{zone}`? time zone names are case-sensitive"),
        None => "expected an IANA name such as Europe/Berlin".to_string(),
    }
}

/// What a schedule fires on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one schedule per job, built at load time; a box would only add indirection"
)]
pub enum ScheduleKind {
    /// Epoch-aligned interval; the period is whole seconds and at least one second.
    Every(Duration),
    /// A cron expression evaluated on the wall clock of `tz`. `expr` is the text as written
    /// (trimmed), kept for display.
    Cron { expr: String, cron: Cron, tz: Tz },
}

/// How a cron pattern treats wall-clock times that a daylight-saving change skips or repeats.
///
/// This follows Vixie cron: a pattern whose seconds, minute or hour field starts with `*`
/// describes a rhythm ("every 15 minutes"), anything else names specific times of day. Croner
/// has a similar notion but counts `30 2,14 * * *` as a rhythm and would silently drop its
/// 02:30 run on the spring-forward day, which is exactly what users of fixed times do not want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DstRule {
    /// A skipped time fires once at the first instant after the gap; a repeated time fires
    /// once, at its first occurrence.
    FixedTime,
    /// Only instants that exist fire: a skipped time is dropped and a repeated time fires on
    /// both occurrences, since each is a distinct absolute instant of the rhythm.
    Interval,
}

/// A validated schedule plus its jitter. Cheap to clone; all methods are pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: ScheduleKind,
    jitter: Duration,
    dst_rule: DstRule,
}

impl Schedule {
    /// An epoch-aligned interval. The period must be whole seconds, at least 1s and at most
    /// 3650d.
    pub fn every(period: Duration) -> Result<Schedule, ScheduleError> {
        let invalid = |reason: String| ScheduleError::InvalidInterval {
            period: format_duration(period),
            reason,
        };
        if period.subsec_nanos() != 0 {
            return Err(invalid("it must be whole seconds".to_string()));
        }
        if period.as_secs() == 0 {
            return Err(invalid("it must be at least 1s".to_string()));
        }
        if period.as_secs() > MAX_INTERVAL_SECS {
            return Err(invalid(format!(
                "it must be at most {} (use a cron expression for rarer schedules)",
                format_duration(Duration::from_secs(MAX_INTERVAL_SECS))
            )));
        }
        Ok(Schedule {
            kind: ScheduleKind::Every(period),
            jitter: Duration::ZERO,
            dst_rule: DstRule::Interval,
        })
    }

    /// A cron schedule: 5 fields, or 6 with seconds first, or one of the nicknames @yearly,
    /// @annually, @monthly, @weekly, @daily, @midnight and @hourly. A 7th (year) field is
    /// rejected, as is an expression that can never fire.
    pub fn cron(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let trimmed = expr.trim();
        let invalid = |reason: String| ScheduleError::InvalidCron {
            expr: trimmed.to_string(),
            reason,
        };
        if trimmed.is_empty() {
            return Err(invalid("it is empty".to_string()));
        }
        let pattern = expand_nickname(trimmed).map_err(invalid)?;
        let fields: Vec<&str> = pattern.split_whitespace().collect();
        match fields.len() {
            5 | 6 => {}
            7 => {
                return Err(invalid(
                    "7 fields given, but a year field is not supported".to_string(),
                ));
            }
            1 => return Err(invalid("1 field given".to_string())),
            n => return Err(invalid(format!("{n} fields given"))),
        }
        let cron = cron_parser()
            .parse(pattern)
            .map_err(|err| invalid(explain_parse_error(&fields, &err)))?;

        // Without a year field a pattern repeats at least every 400 years, so if croner's
        // search (which runs to the year 5000) finds nothing from 1970 on, nothing ever
        // matches. Catching this here turns a silent never-running job into a load error.
        if cron.find_next_occurrence(&unix_epoch_wall(), true).is_err() {
            return Err(ScheduleError::CronNeverFires {
                expr: trimmed.to_string(),
            });
        }

        // The time-of-day fields are all fields but the last three (dom, month, dow).
        let time_fields = &fields[..fields.len() - 3];
        let dst_rule = if time_fields.iter().any(|field| field.starts_with('*')) {
            DstRule::Interval
        } else {
            DstRule::FixedTime
        };
        Ok(Schedule {
            kind: ScheduleKind::Cron {
                expr: trimmed.to_string(),
                cron,
                tz,
            },
            jitter: Duration::ZERO,
            dst_rule,
        })
    }

    /// Parses the `next` command's EXPR: `@every <duration>` (an interval, `tz` ignored) or a
    /// cron expression evaluated in `tz`.
    pub fn parse_expr(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let trimmed = expr.trim();
        match every_argument(trimmed) {
            Some(rest) => Schedule::every(parse_duration(rest.trim())?),
            None => Schedule::cron(trimmed, tz),
        }
    }

    /// Returns the schedule with a jitter: each tick fires up to `jitter` later, by an amount
    /// fixed per (job id, tick). See [`Schedule::jitter_offset`].
    pub fn with_jitter(self, jitter: Duration) -> Schedule {
        Schedule { jitter, ..self }
    }

    /// The configured maximum jitter (zero when none).
    pub fn jitter(&self) -> Duration {
        self.jitter
    }

    /// What the schedule fires on.
    pub fn kind(&self) -> &ScheduleKind {
        &self.kind
    }

    /// The time zone cron expressions are evaluated in; UTC for intervals, which do not
    /// depend on one.
    pub fn timezone(&self) -> Tz {
        match &self.kind {
            ScheduleKind::Every(_) => Tz::UTC,
            ScheduleKind::Cron { tz, .. } => *tz,
        }
    }

    /// The first nominal tick strictly after `t` (no jitter). `None` only if the schedule
    /// never fires again (a cron search past the year 5000, or the end of chrono's range).
    pub fn next_tick_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = match &self.kind {
            ScheduleKind::Every(period) => {
                let period = period_secs(*period);
                // `timestamp()` floors, so this is the first multiple strictly after `t` even
                // when `t` carries sub-second digits.
                let k = t.timestamp().div_euclid(period).checked_add(1)?;
                DateTime::from_timestamp(k.checked_mul(period)?, 0)
            }
            ScheduleKind::Cron { cron, tz, .. } => self.cron_next_after(cron, *tz, t),
        };
        // The searches are built to be strictly after `t`; this guard keeps the promise even
        // if a library quirk slips through, because a repeated tick would run a job twice.
        next.filter(|tick| *tick > t)
    }

    /// The next `n` nominal ticks strictly after `t`, strictly increasing. Shorter than `n`
    /// only if the schedule runs out.
    pub fn ticks_after(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::with_capacity(n.min(1024));
        let mut cursor = t;
        while ticks.len() < n {
            let Some(tick) = self.next_tick_after(cursor) else {
                break;
            };
            ticks.push(tick);
            cursor = tick;
        }
        ticks
    }

    /// The newest nominal tick at or before `t`, if any. The catch-up run after downtime uses
    /// it as its `scheduled_at`.
    pub fn last_tick_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let last = match &self.kind {
            ScheduleKind::Every(period) => {
                let period = period_secs(*period);
                let k = t.timestamp().div_euclid(period);
                DateTime::from_timestamp(k.checked_mul(period)?, 0)
            }
            ScheduleKind::Cron { cron, tz, .. } => self.cron_last_at_or_before(cron, *tz, t),
        };
        last.filter(|tick| *tick <= t)
    }

    /// The number of nominal ticks in `(after, up_to]`, counting at most `cap`. Used to report
    /// missed ticks after a restart: O(1) for intervals, at most `cap` searches for cron.
    pub fn count_ticks_between(&self, after: DateTime<Utc>, up_to: DateTime<Utc>, cap: u64) -> u64 {
        if up_to <= after || cap == 0 {
            return 0;
        }
        match &self.kind {
            ScheduleKind::Every(period) => {
                let period = period_secs(*period);
                // Ticks are k * period; those in the range are the k with
                // floor(after / period) < k <= floor(up_to / period).
                let first = after.timestamp().div_euclid(period);
                let last = up_to.timestamp().div_euclid(period);
                u64::try_from(last - first).unwrap_or(0).min(cap)
            }
            ScheduleKind::Cron { .. } => {
                let mut count = 0;
                let mut cursor = after;
                while count < cap {
                    match self.next_tick_after(cursor) {
                        Some(tick) if tick <= up_to => {
                            count += 1;
                            cursor = tick;
                        }
                        _ => break,
                    }
                }
                count
            }
        }
    }

    /// A deterministic delay in `[0, jitter)` for this job's `tick`, at millisecond
    /// resolution. It hashes the job id and the tick with a fixed function (FNV-1a, then a
    /// SplitMix64 finaliser), never std's randomly seeded hasher, so the same job and tick get
    /// the same delay in every process and across restarts, while different jobs sharing a
    /// tick spread out. Zero when the jitter is below one millisecond.
    pub fn jitter_offset(&self, job_id: &str, tick: DateTime<Utc>) -> Duration {
        let jitter_ms = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        if jitter_ms == 0 {
            return Duration::ZERO;
        }
        let hash = jitter_hash(job_id, tick.timestamp_millis());
        // Multiply-shift maps the 64-bit hash onto [0, jitter_ms) with negligible bias and
        // uses its well-mixed high bits.
        let offset_ms = (u128::from(hash) * u128::from(jitter_ms)) >> 64;
        Duration::from_millis(u64::try_from(offset_ms).unwrap_or(0))
    }

    /// When the scheduler should actually fire `tick` for `job_id`: the tick plus its jitter.
    pub fn fire_at(&self, job_id: &str, tick: DateTime<Utc>) -> DateTime<Utc> {
        TimeDelta::from_std(self.jitter_offset(job_id, tick))
            .ok()
            .and_then(|offset| tick.checked_add_signed(offset))
            .unwrap_or(tick)
    }

    /// The schedule in words, e.g. `every 15m` or
    /// ``cron `0 */5 * * 1-5` in Europe/Berlin (<croner's description>)``, followed by
    /// `, jitter 30s` when a jitter is set.
    pub fn describe(&self) -> String {
        let mut text = match &self.kind {
            ScheduleKind::Every(period) => format!("every {}", format_duration(*period)),
            ScheduleKind::Cron { expr, cron, tz } => format!(
                "cron `{expr}` in {} ({})",
                tz.name(),
                cron.describe().trim().trim_end_matches('.')
            ),
        };
        if !self.jitter.is_zero() {
            text.push_str(&format!(", jitter {}", format_duration(self.jitter)));
        }
        text
    }

    /// Forward cron search; see [`Schedule::wall_ticks`] for how wall-clock matches become
    /// instants.
    ///
    /// The search walks wall-clock matches in order. The earliest instant of each match
    /// (`first`) never decreases along that walk, so the first match whose `first` is after
    /// `t` bounds the answer. The only thing that can beat it is the second occurrence
    /// (`repeat`) of an earlier match in a repeated hour, so those are collected on the way.
    ///
    /// Away from a fall-back this looks at one or two matches. Around one, an interval
    /// pattern walks the repeated range: up to 3,600 matches for a per-second pattern, for an
    /// hour or two a year, in exchange for a walk that is easy to trust.
    fn cron_next_after(&self, cron: &Cron, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // When the clock is about to go back, instants after `t` can show a wall time before
        // `t`'s own, so an interval pattern must start its walk that much earlier. Fixed-time
        // patterns never fire on a repeat, so they need no look-back.
        let look_back = match self.dst_rule {
            DstRule::Interval => clock_setback_after(tz, t),
            DstRule::FixedTime => TimeDelta::zero(),
        };
        let mut wall = whole_second(local_wall(tz, t).checked_sub_signed(look_back)?);
        let mut inclusive = true;
        let mut best_repeat: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_WALL_MATCHES_PER_SEARCH {
            let matched = cron.find_next_occurrence(&wall, inclusive).ok()?;
            let ticks = self.wall_ticks(tz, matched);
            if let Some(repeat) = ticks.repeat.filter(|repeat| *repeat > t) {
                best_repeat = Some(best_repeat.map_or(repeat, |best| best.min(repeat)));
            }
            if let Some(first) = ticks.first.filter(|first| *first > t) {
                return Some(best_repeat.map_or(first, |repeat| repeat.min(first)));
            }
            wall = matched;
            inclusive = false;
        }
        None
    }

    /// Backward cron search, the mirror image of [`Schedule::cron_next_after`]: the latest
    /// instant of each wall-clock match never decreases with the wall time, so walking back,
    /// the first match whose latest instant is at or before `t` bounds the answer, and only
    /// first occurrences of later matches in a repeated hour can beat it.
    fn cron_last_at_or_before(
        &self,
        cron: &Cron,
        tz: Tz,
        t: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        // Just after the clock went back, `t` reads a repeated wall time, and the first
        // occurrences of later wall times in the repeated range lie before `t`. Both rules
        // fire on those, so the walk starts that far ahead of `t`'s own wall time.
        let look_ahead = clock_setback_before(tz, t);
        let mut wall = whole_second(local_wall(tz, t).checked_add_signed(look_ahead)?);
        let mut inclusive = true;
        let mut best_first: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_WALL_MATCHES_PER_SEARCH {
            let matched = cron.find_previous_occurrence(&wall, inclusive).ok()?;
            let ticks = self.wall_ticks(tz, matched);
            let latest = ticks.repeat.or(ticks.first);
            if let Some(latest) = latest.filter(|latest| *latest <= t) {
                return Some(best_first.map_or(latest, |first| first.max(latest)));
            }
            if let Some(first) = ticks.first.filter(|first| *first <= t) {
                best_first = Some(best_first.map_or(first, |best| best.max(first)));
            }
            wall = matched;
            inclusive = false;
        }
        None
    }

    /// The instants a wall-clock match of the pattern stands for in `tz`, applying the
    /// schedule's [`DstRule`].
    fn wall_ticks(&self, tz: Tz, wall: NaiveDateTime) -> WallTicks {
        let utc = |local: DateTime<Tz>| local.with_timezone(&Utc);
        match (tz.from_local_datetime(&wall), self.dst_rule) {
            (LocalResult::Single(instant), _) => WallTicks {
                first: Some(utc(instant)),
                repeat: None,
            },
            (LocalResult::Ambiguous(earlier, _), DstRule::FixedTime) => WallTicks {
                first: Some(utc(earlier)),
                repeat: None,
            },
            (LocalResult::Ambiguous(earlier, later), DstRule::Interval) => WallTicks {
                first: Some(utc(earlier)),
                repeat: Some(utc(later)),
            },
            // Every skipped wall time of a fixed-time pattern maps to the same instant, the
            // end of the gap, so several of them still fire only once.
            (LocalResult::None, DstRule::FixedTime) => WallTicks {
                first: first_instant_at_or_after_wall(tz, wall),
                repeat: None,
            },
            (LocalResult::None, DstRule::Interval) => WallTicks {
                first: None,
                repeat: None,
            },
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The instants one wall-clock match maps to: `first` is the earliest (absent only for a
/// skipped time of an interval pattern), `repeat` the second occurrence of a repeated time
/// when the pattern fires on both.
struct WallTicks {
    first: Option<DateTime<Utc>>,
    repeat: Option<DateTime<Utc>>,
}

/// The croner configuration every cron schedule uses. Spelled out rather than relying on
/// defaults because these choices are part of the file format: optional leading seconds, no
/// year field, crontab weekday numbering (0 and 7 are Sunday) and Vixie cron's OR between
/// day-of-month and day-of-week.
fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .alternative_weekdays(false)
        .build()
}

/// Croner's messages do not say which field is wrong ("Number out of bounds"), so this finds
/// the first field that fails on its own and names it.
fn explain_parse_error(fields: &[&str], err: &croner::errors::CronError) -> String {
    const FIVE: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
    const SIX: [&str; 6] = [
        "second",
        "minute",
        "hour",
        "day-of-month",
        "month",
        "day-of-week",
    ];
    let names: &[&str] = if fields.len() == 6 { &SIX } else { &FIVE };
    let reason = err.to_string();
    let reason = reason.trim_end_matches('.');
    let parser = cron_parser();
    let bad_field = (0..fields.len()).find(|&index| {
        let probe: Vec<&str> = fields
            .iter()
            .enumerate()
            .map(|(other, field)| if other == index { *field } else { "*" })
            .collect();
        parser.parse(&probe.join(" ")).is_err()
    });
    match bad_field.and_then(|index| Some((names.get(index)?, fields.get(index)?))) {
        Some((name, field)) => format!("{name} field `{field}`: {reason}"),
        None => reason.to_string(),
    }
}

/// Replaces an `@nickname` with its 5-field pattern. Croner knows most of them but not
/// `@midnight`, and handling them here gives one clear error for the unknown ones.
fn expand_nickname(expr: &str) -> Result<&str, String> {
    if !expr.starts_with('@') {
        return Ok(expr);
    }
    let pattern = match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ if every_argument(expr).is_some() => {
            return Err(format!(
                "`{expr}` is an interval, not a cron expression (use `every: 15m` in a job file)"
            ));
        }
        _ => return Err(format!("unknown nickname `{expr}`")),
    };
    Ok(pattern)
}

/// The duration text after `@every` (case-insensitive), or `None` if `expr` is not an
/// `@every` expression. `@everyday` is not `@every` with an argument.
fn every_argument(expr: &str) -> Option<&str> {
    let rest = expr
        .get(..6)
        .filter(|prefix| prefix.eq_ignore_ascii_case("@every"))
        .and_then(|_| expr.get(6..))?;
    (rest.is_empty() || rest.starts_with(char::is_whitespace)).then_some(rest)
}

/// 1970-01-01T00:00:00 as a wall-clock time.
fn unix_epoch_wall() -> NaiveDateTime {
    DateTime::<Utc>::UNIX_EPOCH.naive_utc()
}

fn period_secs(period: Duration) -> i64 {
    // `Schedule::every` bounds the period, so the conversion cannot fail; 1 keeps the
    // arithmetic well defined regardless.
    i64::try_from(period.as_secs()).unwrap_or(1).max(1)
}

/// The wall-clock reading of `t` in `tz`.
fn local_wall(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// Drops sub-second digits. Croner works in whole seconds, and the callers filter by instant
/// anyway, so starting an inclusive search at the whole second loses nothing.
fn whole_second(wall: NaiveDateTime) -> NaiveDateTime {
    wall.with_nanosecond(0).unwrap_or(wall)
}

fn utc_offset_secs(tz: Tz, t: DateTime<Utc>) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

/// How far the clock is set back during the day after `t`, or zero. No zone moves its clock
/// twice within a day, so comparing the offsets a day apart finds any fall-back in between.
fn clock_setback_after(tz: Tz, t: DateTime<Utc>) -> TimeDelta {
    t.checked_add_signed(TimeDelta::days(1))
        .map(|later| {
            TimeDelta::seconds((utc_offset_secs(tz, t) - utc_offset_secs(tz, later)).max(0))
        })
        .unwrap_or_else(TimeDelta::zero)
}

/// How far the clock was set back during the day before `t`, or zero.
fn clock_setback_before(tz: Tz, t: DateTime<Utc>) -> TimeDelta {
    t.checked_sub_signed(TimeDelta::days(1))
        .map(|earlier| {
            TimeDelta::seconds((utc_offset_secs(tz, earlier) - utc_offset_secs(tz, t)).max(0))
        })
        .unwrap_or_else(TimeDelta::zero)
}

/// The first instant whose wall-clock reading in `tz` is at or after `wall`. For a wall time
/// inside a spring-forward gap this is the moment the clock jumps: the first instant after
/// the gap.
///
/// Bisects on seconds: a day either side of `wall` read as UTC brackets the answer because
/// no UTC offset reaches a day, and the wall clock only moves forward around a gap.
fn first_instant_at_or_after_wall(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let reaches_wall = |secs: i64| {
        DateTime::from_timestamp(secs, 0).is_some_and(|instant| local_wall(tz, instant) >= wall)
    };
    let centre = wall.and_utc().timestamp();
    let mut before = centre.checked_sub(86_400)?;
    let mut after = centre.checked_add(86_400)?;
    if reaches_wall(before) || !reaches_wall(after) {
        return None;
    }
    while after - before > 1 {
        let middle = before + (after - before) / 2;
        if reaches_wall(middle) {
            after = middle;
        } else {
            before = middle;
        }
    }
    DateTime::from_timestamp(after, 0)
}

/// FNV-1a over the job id, a separator and the tick's epoch milliseconds, then the SplitMix64
/// finaliser, because FNV alone mixes the last bytes (the tick) poorly into the high bits
/// that the range mapping uses.
fn jitter_hash(job_id: &str, tick_millis: i64) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    // 0xff never occurs in UTF-8, so ("ab", tick) and ("a", tick') cannot collide by
    // shifting bytes between the two parts.
    let bytes = job_id
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(tick_millis.to_le_bytes());
    let mut hash = FNV_OFFSET;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    splitmix64_finalise(hash)
}

fn splitmix64_finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Parses a duration such as `15m`, `90s`, `1h30m`, `2d` or `500ms`, by the one grammar of
/// [`crate::config::grammar::parse_duration`] (a bare whole number is seconds). An `every`
/// period must still be whole seconds ([`Schedule::every`] says so).
pub fn parse_duration(s: &str) -> Result<Duration, ScheduleError> {
    crate::config::grammar::parse_duration(s).map_err(|e| ScheduleError::InvalidDuration {
        input: e.input,
        reason: e.reason,
    })
}

/// Formats a duration compactly, the inverse of [`parse_duration`] for whole seconds:
/// 900s -> `15m`, 5400s -> `1h30m`, 0 -> `0s`. A sub-second part, which `parse_duration`
/// never produces, is shown as milliseconds rather than hidden.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3_600, "h"),
        (secs % 3_600 / 60, "m"),
        (secs % 60, "s"),
        (u64::from(d.subsec_millis()), "ms"),
    ];
    let text: String = parts
        .iter()
        .filter(|(value, _)| *value != 0)
        .map(|(value, unit)| format!("{value}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_string()
    } else {
        text
    }
}

/// Looks up an IANA time zone such as `Europe/Berlin`. Names are case-sensitive, as in the
/// IANA database; a name that only differs in case gets a suggestion in the error.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    let trimmed = name.trim();
    trimmed
        .parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimeZone {
            name: name.to_string(),
            suggestion: chrono_tz::TZ_VARIANTS
                .iter()
                .find(|zone| zone.name().eq_ignore_ascii_case(trimmed))
                .map(|zone| zone.name().to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SecondsFormat;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|err| panic!("bad test instant {text}: {err}"))
            .with_timezone(&Utc)
    }

    fn zone(name: &str) -> Tz {
        parse_timezone(name).unwrap_or_else(|err| panic!("{err}"))
    }

    fn rfc3339(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// One table row: the ticks `expr` in `tz` yields strictly after `from`.
    struct Row {
        expr: &'static str,
        tz: &'static str,
        from: &'static str,
        expected: &'static [&'static str],
    }

    /// Checks every row and reports all mismatches at once, so one run shows the whole table.
    fn check_rows(rows: &[Row]) {
        let mut failures = Vec::new();
        for row in rows {
            let schedule = match Schedule::parse_expr(row.expr, zone(row.tz)) {
                Ok(schedule) => schedule,
                Err(err) => {
                    failures.push(format!("`{}` in {}: {err}", row.expr, row.tz));
                    continue;
                }
            };
            let got: Vec<String> = schedule
                .ticks_after(utc(row.from), row.expected.len())
                .into_iter()
                .map(rfc3339)
                .collect();
            if got != row.expected {
                failures.push(format!(
                    "`{}` in {} after {}:\n   got {got:?}\n  want {:?}",
                    row.expr, row.tz, row.from, row.expected
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn new_york_spring_forward() {
        // 2027-03-14: 02:00 EST (07:00Z) jumps to 03:00 EDT; 02:00-02:59 do not exist.
        check_rows(&[
            // The example: the skipped 02:30 fires once, at 03:00 EDT.
            Row {
                expr: "30 2 * * *",
                tz: "America/New_York",
                from: "2027-03-13T00:00:00Z",
                expected: &[
                    "2027-03-13T07:30:00Z",
                    "2027-03-14T07:00:00Z",
                    "2027-03-15T06:30:00Z",
                ],
            },
            // Several skipped fixed times still fire only once.
            Row {
                expr: "0,30 2 * * *",
                tz: "America/New_York",
                from: "2027-03-14T00:00:00Z",
                expected: &[
                    "2027-03-14T07:00:00Z",
                    "2027-03-15T06:00:00Z",
                    "2027-03-15T06:30:00Z",
                ],
            },
            // A list of hours is still a fixed time (croner alone would drop this 02:30).
            Row {
                expr: "30 2,14 * * *",
                tz: "America/New_York",
                from: "2027-03-14T00:00:00Z",
                expected: &["2027-03-14T07:00:00Z", "2027-03-14T18:30:00Z"],
            },
            // A fixed time right after the gap and a skipped one landing on it fire once.
            Row {
                expr: "0 2,3 * * *",
                tz: "America/New_York",
                from: "2027-03-14T00:00:00Z",
                expected: &["2027-03-14T07:00:00Z", "2027-03-15T06:00:00Z"],
            },
            // Interval patterns simply have no ticks in the gap.
            Row {
                expr: "*/30 * * * *",
                tz: "America/New_York",
                from: "2027-03-14T06:00:00Z",
                expected: &[
                    "2027-03-14T06:30:00Z",
                    "2027-03-14T07:00:00Z",
                    "2027-03-14T07:30:00Z",
                ],
            },
            Row {
                expr: "0 * * * *",
                tz: "America/New_York",
                from: "2027-03-14T05:30:00Z",
                expected: &[
                    "2027-03-14T06:00:00Z",
                    "2027-03-14T07:00:00Z",
                    "2027-03-14T08:00:00Z",
                ],
            },
        ]);
    }

    #[test]
    fn new_york_fall_back() {
        // 2027-11-07: 02:00 EDT (06:00Z) goes back to 01:00 EST; 01:00-01:59 happen twice,
        // first at 05:00-05:59Z (EDT), then at 06:00-06:59Z (EST).
        check_rows(&[
            Row {
                expr: "30 1 * * *",
                tz: "America/New_York",
                from: "2027-11-06T00:00:00Z",
                expected: &[
                    "2027-11-06T05:30:00Z",
                    "2027-11-07T05:30:00Z",
                    "2027-11-08T06:30:00Z",
                ],
            },
            // Starting inside the second 01:xx must not fire the repeat of 01:30.
            Row {
                expr: "30 1 * * *",
                tz: "America/New_York",
                from: "2027-11-07T06:10:00Z",
                expected: &["2027-11-08T06:30:00Z"],
            },
            Row {
                expr: "0,30 1 * * *",
                tz: "America/New_York",
                from: "2027-11-07T04:00:00Z",
                expected: &[
                    "2027-11-07T05:00:00Z",
                    "2027-11-07T05:30:00Z",
                    "2027-11-08T06:00:00Z",
                ],
            },
            // Interval patterns fire on every absolute instant that matches, once each.
            Row {
                expr: "*/30 * * * *",
                tz: "America/New_York",
                from: "2027-11-07T04:45:00Z",
                expected: &[
                    "2027-11-07T05:00:00Z",
                    "2027-11-07T05:30:00Z",
                    "2027-11-07T06:00:00Z",
                    "2027-11-07T06:30:00Z",
                    "2027-11-07T07:00:00Z",
                ],
            },
            // From inside the first 01:xx, the next tick is the second 01:00.
            Row {
                expr: "*/30 * * * *",
                tz: "America/New_York",
                from: "2027-11-07T05:45:00Z",
                expected: &[
                    "2027-11-07T06:00:00Z",
                    "2027-11-07T06:30:00Z",
                    "2027-11-07T07:00:00Z",
                ],
            },
            Row {
                expr: "*/30 * * * *",
                tz: "America/New_York",
                from: "2027-11-07T06:10:00Z",
                expected: &["2027-11-07T06:30:00Z", "2027-11-07T07:00:00Z"],
            },
            Row {
                expr: "0 * * * *",
                tz: "America/New_York",
                from: "2027-11-07T04:30:00Z",
                expected: &[
                    "2027-11-07T05:00:00Z",
                    "2027-11-07T06:00:00Z",
                    "2027-11-07T07:00:00Z",
                ],
            },
        ]);
    }

    #[test]
    fn london_transitions() {
        check_rows(&[
            // 2027-03-28: 01:00 GMT (01:00Z) jumps to 02:00 BST.
            Row {
                expr: "30 1 * * *",
                tz: "Europe/London",
                from: "2027-03-27T00:00:00Z",
                expected: &[
                    "2027-03-27T01:30:00Z",
                    "2027-03-28T01:00:00Z",
                    "2027-03-29T00:30:00Z",
                ],
            },
            Row {
                expr: "15 * * * *",
                tz: "Europe/London",
                from: "2027-03-28T00:00:00Z",
                expected: &[
                    "2027-03-28T00:15:00Z",
                    "2027-03-28T01:15:00Z",
                    "2027-03-28T02:15:00Z",
                ],
            },
            // 2027-10-31: 02:00 BST (01:00Z) goes back to 01:00 GMT.
            Row {
                expr: "30 1 * * *",
                tz: "Europe/London",
                from: "2027-10-30T12:00:00Z",
                expected: &["2027-10-31T00:30:00Z", "2027-11-01T01:30:00Z"],
            },
            // A minute step within one hour is an interval pattern: both 01:xx run.
            Row {
                expr: "*/20 1 * * *",
                tz: "Europe/London",
                from: "2027-10-30T23:59:00Z",
                expected: &[
                    "2027-10-31T00:00:00Z",
                    "2027-10-31T00:20:00Z",
                    "2027-10-31T00:40:00Z",
                    "2027-10-31T01:00:00Z",
                    "2027-10-31T01:20:00Z",
                    "2027-10-31T01:40:00Z",
                    "2027-11-01T01:00:00Z",
                ],
            },
        ]);
    }

    #[test]
    fn lord_howe_half_hour_shifts() {
        // Lord Howe moves its clock by 30 minutes. 2027-10-03: 02:00 +10:30 (15:30Z the day
        // before) jumps to 02:30 +11. 2027-04-04: 02:00 +11 (15:00Z the day before) goes back
        // to 01:30 +10:30, so 01:30-01:59 happen twice.
        check_rows(&[
            Row {
                expr: "0 2 * * *",
                tz: "Australia/Lord_Howe",
                from: "2027-10-01T00:00:00Z",
                expected: &[
                    "2027-10-01T15:30:00Z",
                    "2027-10-02T15:30:00Z",
                    "2027-10-03T15:00:00Z",
                ],
            },
            Row {
                expr: "15 2 * * *",
                tz: "Australia/Lord_Howe",
                from: "2027-10-01T00:00:00Z",
                expected: &[
                    "2027-10-01T15:45:00Z",
                    "2027-10-02T15:30:00Z",
                    "2027-10-03T15:15:00Z",
                ],
            },
            // 02:45 exists on the spring-forward day and is not moved.
            Row {
                expr: "45 2 * * *",
                tz: "Australia/Lord_Howe",
                from: "2027-10-02T00:00:00Z",
                expected: &["2027-10-02T15:45:00Z"],
            },
            Row {
                expr: "*/15 * * * *",
                tz: "Australia/Lord_Howe",
                from: "2027-10-02T15:00:00Z",
                expected: &[
                    "2027-10-02T15:15:00Z",
                    "2027-10-02T15:30:00Z",
                    "2027-10-02T15:45:00Z",
                ],
            },
            // 02:00 comes once on the fall-back day (after the repeat), at +10:30.
            Row {
                expr: "0 2 * * *",
                tz: "Australia/Lord_Howe",
                from: "2027-04-02T00:00:00Z",
                expected: &[
                    "2027-04-02T15:00:00Z",
                    "2027-04-03T15:30:00Z",
                    "2027-04-04T15:30:00Z",
                ],
            },
            Row {
                expr: "15 2 * * *",
                tz: "Australia/Lord_Howe",
                from: "2027-04-02T00:00:00Z",
                expected: &["2027-04-02T15:15:00Z", "2027-04-03T15:45:00Z"],
            },
            // 01:45 happens twice and fires at the first (+11).
            Row {
                expr: "45 1 * * *",
                tz: "Australia/Lord_Howe",
                from: "2027-04-03T00:00:00Z",
                expected: &["2027-04-03T14:45:00Z", "2027-04-04T15:15:00Z"],
            },
            Row {
                expr: "*/15 * * * *",
                tz: "Australia/Lord_Howe",
                from: "2027-04-03T14:20:00Z",
                expected: &[
                    "2027-04-03T14:30:00Z",
                    "2027-04-03T14:45:00Z",
                    "2027-04-03T15:00:00Z",
                    "2027-04-03T15:15:00Z",
                    "2027-04-03T15:30:00Z",
                ],
            },
        ]);
    }

    #[test]
    fn calendar_forms() {
        check_rows(&[
            // Day 31 skips the months that lack it.
            Row {
                expr: "0 0 31 * *",
                tz: "UTC",
                from: "2027-01-31T00:00:00Z",
                expected: &[
                    "2027-03-31T00:00:00Z",
                    "2027-05-31T00:00:00Z",
                    "2027-07-31T00:00:00Z",
                    "2027-08-31T00:00:00Z",
                ],
            },
            // Leap day.
            Row {
                expr: "0 0 29 2 *",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
            },
            // L: last day of the month.
            Row {
                expr: "0 0 L * *",
                tz: "UTC",
                from: "2027-01-15T00:00:00Z",
                expected: &[
                    "2027-01-31T00:00:00Z",
                    "2027-02-28T00:00:00Z",
                    "2027-03-31T00:00:00Z",
                    "2027-04-30T00:00:00Z",
                ],
            },
            Row {
                expr: "0 0 L 2 *",
                tz: "UTC",
                from: "2027-03-01T00:00:00Z",
                expected: &["2028-02-29T00:00:00Z", "2029-02-28T00:00:00Z"],
            },
            // W: nearest weekday. 2027-05-15 is a Saturday, 2027-08-15 a Sunday.
            Row {
                expr: "0 0 15W * *",
                tz: "UTC",
                from: "2027-05-01T00:00:00Z",
                expected: &[
                    "2027-05-14T00:00:00Z",
                    "2027-06-15T00:00:00Z",
                    "2027-07-15T00:00:00Z",
                    "2027-08-16T00:00:00Z",
                ],
            },
            // 1W never leaves the month: Saturday 2027-05-01 moves forward to Monday the 3rd.
            Row {
                expr: "0 0 1W 5 *",
                tz: "UTC",
                from: "2027-04-01T00:00:00Z",
                expected: &["2027-05-03T00:00:00Z"],
            },
            // LW: last weekday; 2027-10-31 is a Sunday.
            Row {
                expr: "0 0 LW 10 *",
                tz: "UTC",
                from: "2027-10-01T00:00:00Z",
                expected: &["2027-10-29T00:00:00Z"],
            },
            // #: the second Monday.
            Row {
                expr: "0 9 * * 1#2",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &[
                    "2027-01-11T09:00:00Z",
                    "2027-02-08T09:00:00Z",
                    "2027-03-08T09:00:00Z",
                ],
            },
            // 5L: the last Friday.
            Row {
                expr: "0 9 * * 5L",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &["2027-01-29T09:00:00Z", "2027-02-26T09:00:00Z"],
            },
            // Vixie OR: the 13th and every Friday (2027-01-01 is a Friday).
            Row {
                expr: "0 0 13 * 5",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &[
                    "2027-01-08T00:00:00Z",
                    "2027-01-13T00:00:00Z",
                    "2027-01-15T00:00:00Z",
                    "2027-01-22T00:00:00Z",
                    "2027-01-29T00:00:00Z",
                    "2027-02-05T00:00:00Z",
                    "2027-02-12T00:00:00Z",
                    "2027-02-13T00:00:00Z",
                ],
            },
            // Crontab weekday numbering: 0 and 7 are Sunday; names work too.
            Row {
                expr: "0 0 * * 0",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &["2027-01-03T00:00:00Z"],
            },
            Row {
                expr: "0 0 * * 7",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &["2027-01-03T00:00:00Z"],
            },
            Row {
                expr: "0 12 * * mon-fri",
                tz: "UTC",
                from: "2027-01-01T13:00:00Z",
                expected: &["2027-01-04T12:00:00Z", "2027-01-05T12:00:00Z"],
            },
            // Six fields: seconds first.
            Row {
                expr: "*/20 * * * * *",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &[
                    "2027-01-01T00:00:20Z",
                    "2027-01-01T00:00:40Z",
                    "2027-01-01T00:01:00Z",
                ],
            },
            Row {
                expr: "30 0 12 * * *",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &["2027-01-01T12:00:30Z", "2027-01-02T12:00:30Z"],
            },
        ]);
    }

    #[test]
    fn nicknames() {
        check_rows(&[
            Row {
                expr: "@hourly",
                tz: "UTC",
                from: "2027-01-01T00:30:00Z",
                expected: &["2027-01-01T01:00:00Z", "2027-01-01T02:00:00Z"],
            },
            Row {
                expr: "@daily",
                tz: "UTC",
                from: "2027-01-01T00:30:00Z",
                expected: &["2027-01-02T00:00:00Z"],
            },
            Row {
                expr: "@midnight",
                tz: "Europe/Berlin",
                from: "2027-01-01T00:00:00Z",
                expected: &["2027-01-01T23:00:00Z"],
            },
            Row {
                expr: "@weekly",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &["2027-01-03T00:00:00Z", "2027-01-10T00:00:00Z"],
            },
            Row {
                expr: "@monthly",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &["2027-02-01T00:00:00Z"],
            },
            Row {
                expr: "@yearly",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &["2028-01-01T00:00:00Z"],
            },
            Row {
                expr: "@ANNUALLY",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &["2028-01-01T00:00:00Z"],
            },
        ]);
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        check_rows(&[
            // 2027-01-01T00:00Z is 1798761600 s, which is 300 s past a multiple of 420.
            Row {
                expr: "@every 7m",
                tz: "UTC",
                from: "2027-01-01T00:00:00Z",
                expected: &[
                    "2027-01-01T00:02:00Z",
                    "2027-01-01T00:09:00Z",
                    "2027-01-01T00:16:00Z",
                ],
            },
            Row {
                expr: "@every 1d",
                tz: "Europe/Berlin",
                from: "2027-03-28T05:00:00Z",
                expected: &["2027-03-29T00:00:00Z", "2027-03-30T00:00:00Z"],
            },
            Row {
                expr: "@every 15m",
                tz: "UTC",
                from: "2027-01-01T10:07:59.999Z",
                expected: &["2027-01-01T10:15:00Z", "2027-01-01T10:30:00Z"],
            },
            // A tick instant itself is not "after" it.
            Row {
                expr: "@every 15m",
                tz: "UTC",
                from: "2027-01-01T10:15:00Z",
                expected: &["2027-01-01T10:30:00Z"],
            },
        ]);
        // Before the epoch the same grid continues (floor, not truncation toward zero).
        let every = Schedule::every(Duration::from_secs(420)).expect("valid");
        for tick in every.ticks_after(utc("1969-12-31T23:50:00.5Z"), 5) {
            assert_eq!(tick.timestamp().rem_euclid(420), 0, "{tick}");
        }
        assert_eq!(
            every
                .next_tick_after(utc("1969-12-31T23:52:59Z"))
                .map(rfc3339),
            Some("1969-12-31T23:53:00Z".to_string())
        );
    }

    #[test]
    fn next_and_last_agree_with_the_tick_sequence_around_transitions() {
        // Start a search from many instants around each transition, including every tick and
        // the seconds either side of it, and compare with the enumerated sequence. This
        // exercises the look-back/look-ahead logic that the tables only touch at a few points.
        let cases = [
            ("*/15 * * * *", "America/New_York", "2027-11-07T03:00:00Z"),
            ("*/15 * * * *", "America/New_York", "2027-03-14T05:00:00Z"),
            ("0,30 1,2 * * *", "America/New_York", "2027-11-07T03:00:00Z"),
            ("0,30 1,2 * * *", "America/New_York", "2027-03-14T05:00:00Z"),
            (
                "*/10 * * * *",
                "Australia/Lord_Howe",
                "2027-04-03T13:00:00Z",
            ),
            (
                "*/10 * * * *",
                "Australia/Lord_Howe",
                "2027-10-02T14:00:00Z",
            ),
            (
                "5,35 1,2 * * *",
                "Australia/Lord_Howe",
                "2027-04-03T13:00:00Z",
            ),
            ("*/20 1 * * *", "Europe/London", "2027-10-30T22:00:00Z"),
            ("@every 25m", "UTC", "2027-11-07T03:00:00Z"),
        ];
        for (expr, tz, start) in cases {
            let schedule = Schedule::parse_expr(expr, zone(tz)).expect("valid");
            let start = utc(start);
            let end = start + TimeDelta::hours(6);
            // Begin the sequence well before the first probe (a tick minus one second).
            let first = schedule
                .last_tick_at_or_before(start - TimeDelta::hours(1))
                .expect("a tick before the window");
            // ...and end with the first tick past the last probe (the window end plus 7s).
            let mut ticks = vec![first];
            while let Some(&last) = ticks
                .last()
                .filter(|last| **last <= end + TimeDelta::minutes(1))
            {
                ticks.push(schedule.next_tick_after(last).expect("fires again"));
            }
            assert!(ticks.windows(2).all(|pair| pair[0] < pair[1]), "{expr}");

            let mut probes: Vec<DateTime<Utc>> = (0..=72)
                .map(|step| start + TimeDelta::minutes(5 * step) + TimeDelta::seconds(7))
                .collect();
            for tick in ticks.iter().filter(|tick| **tick >= start && **tick <= end) {
                probes.extend([
                    *tick - TimeDelta::seconds(1),
                    *tick,
                    *tick + TimeDelta::seconds(1),
                ]);
            }
            for probe in probes {
                let want_next = ticks.iter().copied().find(|tick| *tick > probe);
                let want_last = ticks.iter().copied().rev().find(|tick| *tick <= probe);
                assert_eq!(
                    schedule.next_tick_after(probe),
                    want_next,
                    "next after {probe} for `{expr}` in {tz}"
                );
                assert_eq!(
                    schedule.last_tick_at_or_before(probe),
                    want_last,
                    "last at or before {probe} for `{expr}` in {tz}"
                );
            }
        }
    }

    #[test]
    fn last_tick_at_or_before() {
        let ny = zone("America/New_York");
        let every = Schedule::every(Duration::from_secs(900)).expect("valid");
        let cases = [
            (&every, "2027-01-01T00:20:00Z", "2027-01-01T00:15:00Z"),
            // At or before: a tick instant is its own last tick.
            (&every, "2027-01-01T00:15:00Z", "2027-01-01T00:15:00Z"),
            (&every, "2027-01-01T00:14:59.999Z", "2027-01-01T00:00:00Z"),
        ];
        for (schedule, at, want) in cases {
            assert_eq!(
                schedule.last_tick_at_or_before(utc(at)).map(rfc3339),
                Some(want.to_string()),
                "{at}"
            );
        }

        let fixed = Schedule::cron("30 2 * * *", ny).expect("valid");
        let interval = Schedule::cron("*/30 * * * *", ny).expect("valid");
        let fixed_fold = Schedule::cron("30 1 * * *", ny).expect("valid");
        let cases = [
            // The skipped 02:30 ran at the end of the gap.
            (&fixed, "2027-03-14T08:00:00Z", "2027-03-14T07:00:00Z"),
            (&fixed, "2027-03-14T06:59:00Z", "2027-03-13T07:30:00Z"),
            // In the second 01:xx the latest tick is its own 01:00, not the first 01:30.
            (&interval, "2027-11-07T06:10:00Z", "2027-11-07T06:00:00Z"),
            (&interval, "2027-11-07T05:50:00Z", "2027-11-07T05:30:00Z"),
            // A fixed time never fires on the repeat.
            (&fixed_fold, "2027-11-07T06:40:00Z", "2027-11-07T05:30:00Z"),
        ];
        for (schedule, at, want) in cases {
            assert_eq!(
                schedule.last_tick_at_or_before(utc(at)).map(rfc3339),
                Some(want.to_string()),
                "{} at {at}",
                schedule.describe()
            );
        }
    }

    #[test]
    fn count_ticks_between() {
        let every = Schedule::every(Duration::from_secs(900)).expect("valid");
        let at = |text| utc(text);
        assert_eq!(
            every.count_ticks_between(at("2027-01-01T00:00:00Z"), at("2027-01-01T01:00:00Z"), 100),
            4
        );
        // Half-open: the start is excluded, the end included.
        assert_eq!(
            every.count_ticks_between(at("2027-01-01T00:00:01Z"), at("2027-01-01T00:59:59Z"), 100),
            3
        );
        assert_eq!(
            every.count_ticks_between(at("2027-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"), 100),
            0
        );
        assert_eq!(
            every.count_ticks_between(at("2027-01-01T01:00:00Z"), at("2027-01-01T00:00:00Z"), 100),
            0
        );
        assert_eq!(
            every.count_ticks_between(at("2027-01-01T00:00:00Z"), at("2027-01-01T01:00:00Z"), 2),
            2
        );
        // Arithmetic, not enumeration: a century of seconds.
        let per_second = Schedule::every(Duration::from_secs(1)).expect("valid");
        let start = at("2000-01-01T00:00:00Z");
        let end = at("2100-01-01T00:00:00Z");
        let seconds = u64::try_from((end - start).num_seconds()).expect("positive");
        assert_eq!(
            per_second.count_ticks_between(start, end, u64::MAX),
            seconds
        );

        let ny = zone("America/New_York");
        let hourly = Schedule::cron("0 * * * *", ny).expect("valid");
        // The New York local days of the transitions: 25 hours in fall, 23 in spring.
        assert_eq!(
            hourly.count_ticks_between(at("2027-11-07T03:59:59Z"), at("2027-11-08T04:59:59Z"), 100),
            25
        );
        assert_eq!(
            hourly.count_ticks_between(at("2027-03-14T04:59:59Z"), at("2027-03-15T03:59:59Z"), 100),
            23
        );
        assert_eq!(
            hourly.count_ticks_between(at("2027-01-01T00:00:00Z"), at("2028-01-01T00:00:00Z"), 5),
            5
        );
    }

    #[test]
    fn jitter_is_deterministic_and_in_range() {
        let jitter = Duration::from_secs(30);
        let schedule = Schedule::every(Duration::from_secs(60))
            .expect("valid")
            .with_jitter(jitter);
        let tick = utc("2027-01-01T00:00:00Z");
        assert_eq!(schedule.jitter(), jitter);

        // A fresh schedule (as after a restart) gives the same offset.
        let restarted = Schedule::parse_expr("@every 1m", Tz::UTC)
            .expect("valid")
            .with_jitter(jitter);
        assert_eq!(
            schedule.jitter_offset("sync-cases", tick),
            restarted.jitter_offset("sync-cases", tick)
        );
        // Pinned so that a change to the hash, which would move every jittered tick of every
        // deployed job, is a deliberate decision.
        assert_eq!(
            schedule.jitter_offset("sync-cases", tick),
            Duration::from_millis(PINNED_JITTER_MS)
        );

        let offsets: Vec<Duration> = schedule
            .ticks_after(tick, 2000)
            .into_iter()
            .map(|tick| schedule.jitter_offset("sync-cases", tick))
            .collect();
        assert!(offsets.iter().all(|offset| *offset < jitter));
        // Spread over the range, not stuck in one corner.
        let low = offsets.iter().filter(|o| **o < jitter / 4).count();
        let high = offsets.iter().filter(|o| **o >= jitter * 3 / 4).count();
        assert!(low > 300 && high > 300, "low {low}, high {high}");

        // Different jobs sharing a tick spread out.
        let distinct: std::collections::BTreeSet<Duration> = (0..50)
            .map(|n| schedule.jitter_offset(&format!("job-{n}"), tick))
            .collect();
        assert!(distinct.len() > 40, "{distinct:?}");

        let fire = schedule.fire_at("sync-cases", tick);
        assert_eq!(
            fire - tick,
            TimeDelta::from_std(schedule.jitter_offset("sync-cases", tick)).expect("small")
        );
    }

    const PINNED_JITTER_MS: u64 = 27_148;

    #[test]
    fn no_jitter_means_no_offset() {
        let schedule = Schedule::every(Duration::from_secs(60)).expect("valid");
        let tick = utc("2027-01-01T00:00:00Z");
        assert_eq!(schedule.jitter(), Duration::ZERO);
        assert_eq!(schedule.jitter_offset("a", tick), Duration::ZERO);
        assert_eq!(schedule.fire_at("a", tick), tick);
        let sub_milli = schedule.with_jitter(Duration::from_micros(900));
        assert_eq!(sub_milli.jitter_offset("a", tick), Duration::ZERO);
    }

    #[test]
    fn parse_duration_accepts_units() {
        let cases: &[(&str, u64)] = &[
            ("15m", 900),
            ("90s", 90),
            ("1h30m", 5_400),
            ("2d", 172_800),
            ("1d12h", 129_600),
            ("1d1h1m1s", 90_061),
            ("0s", 0),
            (" 5m ", 300),
            ("100000s", 100_000),
            // The config grammar's: a bare whole number is seconds.
            ("90", 90),
        ];
        for (text, secs) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(*secs)),
                "{text}"
            );
        }
        // Milliseconds parse (a timeout or jitter may use them); `every` still wants whole
        // seconds, which `Schedule::every` says.
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(Schedule::parse_expr("@every 1500ms", Tz::UTC).is_err());
    }

    #[test]
    fn parse_duration_rejects_with_reasons() {
        let cases: &[(&str, &str)] = &[
            ("", "it is empty"),
            ("1h30", "`30` needs a unit"),
            ("1.5h", "fractions are not supported"),
            ("-5m", "unexpected `-`"),
            ("m", "unexpected `m`"),
            ("15M", "unknown unit `M`"),
            ("15min", "unknown unit `min`"),
            ("1h1h", "largest to smallest"),
            ("30m1h", "largest to smallest"),
            ("15 m", "unexpected ` `"),
            ("99999999999999999999s", "too large"),
        ];
        for (text, reason) in cases {
            let err = parse_duration(text).expect_err(text);
            let message = err.to_string();
            assert!(
                message.contains(reason)
                    && message.contains("units d, h, m, s, ms, e.g. 500ms, 30s or 1h30m"),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn format_duration_is_compact_and_round_trips() {
        let cases: &[(Duration, &str)] = &[
            (Duration::from_secs(900), "15m"),
            (Duration::from_secs(5_400), "1h30m"),
            (Duration::ZERO, "0s"),
            (Duration::from_secs(86_400), "1d"),
            (Duration::from_secs(90_061), "1d1h1m1s"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_millis(1_500), "1s500ms"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(*duration), *text);
        }
        for secs in [
            0, 1, 59, 60, 61, 3_599, 3_600, 3_661, 86_399, 86_400, 1_000_000,
        ] {
            let duration = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
    }

    #[test]
    fn every_rejects_bad_periods() {
        for (period, reason) in [
            (Duration::ZERO, "at least 1s"),
            (Duration::from_millis(1_500), "whole seconds"),
            (Duration::from_secs(MAX_INTERVAL_SECS + 1), "at most 3650d"),
        ] {
            let message = Schedule::every(period).expect_err("invalid").to_string();
            assert!(message.contains(reason), "{message}");
        }
        assert!(Schedule::every(Duration::from_secs(MAX_INTERVAL_SECS)).is_ok());
    }

    #[test]
    fn bad_cron_expressions_are_explained() {
        let cases: &[(&str, &str)] = &[
            ("x", "1 field given"),
            ("* * * *", "4 fields given"),
            ("0 0 0 1 1 * 2027", "year field is not supported"),
            ("", "it is empty"),
            ("@reboot", "unknown nickname `@reboot`"),
            ("61 * * * *", "`61 * * * *`: minute field `61`: "),
            ("0 0 * * 1#6", "day-of-week field `1#6`"),
            ("0 0 32 * *", "day-of-month field `32`"),
            ("0 0 1 13 *", "month field `13`"),
            ("0 0 1 1 * 2027", "day-of-week field `2027`"),
            ("60 0 0 1 1 *", "second field `60`"),
            ("0 25 * * *", "hour field `25`"),
            ("0 0 * * mon-xyz", "day-of-week field"),
            ("0 0 * * * * *", "year field"),
        ];
        for (expr, needle) in cases {
            let err = Schedule::cron(expr, Tz::UTC).expect_err(expr);
            let message = err.to_string();
            assert!(
                message.contains(needle) && message.contains("expected 5 fields"),
                "{expr}: {message}"
            );
        }
        // Parses, but no date has it.
        assert_eq!(
            Schedule::cron("0 0 30 2 *", Tz::UTC).expect_err("never fires"),
            ScheduleError::CronNeverFires {
                expr: "0 0 30 2 *".to_string()
            }
        );
        // `@every` needs a duration; `@everyday` is not `@every`.
        let message = Schedule::parse_expr("@every", Tz::UTC)
            .expect_err("missing duration")
            .to_string();
        assert!(message.contains("invalid duration"), "{message}");
        let message = Schedule::parse_expr("@everyday", Tz::UTC)
            .expect_err("unknown nickname")
            .to_string();
        assert!(message.contains("unknown nickname"), "{message}");
        let message = Schedule::cron("@every 15m", Tz::UTC)
            .expect_err("interval in a cron field")
            .to_string();
        assert!(message.contains("is an interval"), "{message}");
        let message = Schedule::parse_expr("@every 0s", Tz::UTC)
            .expect_err("zero period")
            .to_string();
        assert!(message.contains("at least 1s"), "{message}");
    }

    #[test]
    fn time_zones() {
        assert_eq!(parse_timezone("Europe/Berlin"), Ok(Tz::Europe__Berlin));
        assert_eq!(parse_timezone("UTC"), Ok(Tz::UTC));
        let message = parse_timezone("Mars/Olympus")
            .expect_err("unknown")
            .to_string();
        assert_eq!(
            message,
            "unknown time zone `Mars/Olympus` (expected an IANA name such as Europe/Berlin)"
        );
        let message = parse_timezone("europe/berlin")
            .expect_err("wrong case")
            .to_string();
        assert!(
            message.contains("did you mean `Europe/Berlin`?"),
            "{message}"
        );

        let cron = Schedule::cron("0 9 * * *", Tz::Europe__Berlin).expect("valid");
        assert_eq!(cron.timezone(), Tz::Europe__Berlin);
        let every = Schedule::every(Duration::from_secs(60)).expect("valid");
        assert_eq!(every.timezone(), Tz::UTC);
    }

    #[test]
    fn describe_in_words() {
        let every = Schedule::parse_expr("@every 15m", Tz::UTC).expect("valid");
        assert_eq!(every.describe(), "every 15m");
        assert_eq!(
            every
                .clone()
                .with_jitter(Duration::from_secs(30))
                .to_string(),
            "every 15m, jitter 30s"
        );
        let cron = Schedule::cron(" 0 */5 * * 1-5 ", Tz::Europe__Berlin).expect("valid");
        let text = cron.describe();
        assert!(
            text.starts_with("cron `0 */5 * * 1-5` in Europe/Berlin ("),
            "{text}"
        );
        assert!(text.ends_with(')'), "{text}");
        match cron.kind() {
            ScheduleKind::Cron { expr, tz, .. } => {
                assert_eq!(expr, "0 */5 * * 1-5");
                assert_eq!(*tz, Tz::Europe__Berlin);
            }
            ScheduleKind::Every(_) => panic!("expected a cron schedule"),
        }
        assert_eq!(every.kind(), &ScheduleKind::Every(Duration::from_secs(900)));
    }

    #[test]
    fn dst_rule_follows_vixie_classification() {
        let rule = |expr: &str| Schedule::cron(expr, Tz::UTC).expect("valid").dst_rule;
        assert_eq!(rule("30 2 * * *"), DstRule::FixedTime);
        assert_eq!(rule("0,30 1-3 * * *"), DstRule::FixedTime);
        assert_eq!(rule("@daily"), DstRule::FixedTime);
        assert_eq!(rule("*/15 * * * *"), DstRule::Interval);
        assert_eq!(rule("0 * * * *"), DstRule::Interval);
        assert_eq!(rule("@hourly"), DstRule::Interval);
        assert_eq!(rule("* 30 2 * * *"), DstRule::Interval);
        assert_eq!(rule("15 30 2 * * *"), DstRule::FixedTime);
    }
}
