//! Opening hours at a moment: normalised OSM `opening_hours` evaluated in Europe/Paris time with
//! the French public holidays (`PH`) known, the next change of state, and the citizen texts
//! (« ouvert maintenant · ferme à 17 h 30 », "closed · opens Monday at 8:30 am").
//!
//! Expressions are evaluated on the naive local time of Paris, as OSM intends (`08:30` is the
//! time on the clocks of the place). Changes that fall in the spring-forward gap are moved to the
//! first instant that exists (02:30 → 03:00 CEST); in the autumn fold the first occurrence that
//! comes after the reference moment is taken.
//!
//! The holiday calendar is the one `opening-hours` embeds (nager.date data, `Country::FR`, 2000 to
//! 2076, national holidays only): no Alsace-Moselle days (Good Friday, 26 December) and no school
//! holidays, so `SH` rules never apply.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone,
    Timelike,
};
use chrono_tz::Europe::Paris;
use chrono_tz::Tz;
use opening_hours::localization::Country;
use opening_hours::{Context, OpeningHours, RuleKind};
use serde::Serialize;
use utoipa::ToSchema;

/// How far ahead the next change is looked for: a timetable that keeps its state longer (`24/7`,
/// `off`, a long closure) has no next change.
pub const NEXT_CHANGE_HORIZON_DAYS: i64 = 14;

/// Beyond this many distinct timetables the cache stops growing (new ones are parsed each time).
const MAX_CACHED: usize = 65_536;

/// A parsed timetable, or `None` when the string does not parse (remembered too).
type Parsed = Option<Arc<OpeningHours>>;

/// Evaluates opening hours; shared by every request (`Send + Sync`), it keeps the French holiday
/// calendar and one parsed expression per distinct timetable string.
#[derive(Debug)]
pub struct HoursEvaluator {
    /// The evaluation context: the French public holidays, behind the crate's own `Arc`s, so that
    /// attaching it to each parsed expression costs two reference counts.
    context: Context,
    cache: RwLock<HashMap<Box<str>, Parsed>>,
}

/// Whether a place is open at a moment and when that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OpenState {
    /// `true` open, `false` closed, `null` when unknown (no hours, unreadable hours, or an
    /// `unknown` rule).
    pub open: Option<bool>,
    /// The next moment the state changes, Europe/Paris time (RFC 3339 with offset); `null` when
    /// unknown or not within the next days.
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-07-15T08:30:00+02:00")]
    pub next_change: Option<DateTime<Tz>>,
}

impl OpenState {
    /// Nothing known: no hours, or hours that do not parse.
    pub const UNKNOWN: OpenState = OpenState {
        open: None,
        next_change: None,
    };
}

impl Default for HoursEvaluator {
    fn default() -> Self {
        Self::new()
    }
}

impl HoursEvaluator {
    /// An evaluator with the French public holidays and an empty cache.
    pub fn new() -> Self {
        Self {
            context: Context::default().with_holidays(Country::FR.holidays()),
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Whether `date` is a French public holiday (what `PH` matches).
    pub fn is_public_holiday(&self, date: NaiveDate) -> bool {
        self.context.holidays.get_public().contains(date)
    }

    /// How many distinct timetables (readable or not) are cached.
    pub fn cached(&self) -> usize {
        self.cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The state at `at` (any time zone; the answer is in Europe/Paris) of the timetable `hours`.
    /// Absent or unreadable hours give [`OpenState::UNKNOWN`].
    pub fn state_at(&self, hours: Option<&str>, at: DateTime<Tz>) -> OpenState {
        let Some(oh) = hours.and_then(|h| self.parsed(h)) else {
            return OpenState::UNKNOWN;
        };
        let at = at.with_timezone(&Paris);
        let from = at.naive_local();
        let to = from + TimeDelta::days(NEXT_CHANGE_HORIZON_DAYS);

        let mut ranges = oh.iter_range(from, to);
        let Some(first) = ranges.next() else {
            return OpenState::UNKNOWN; // beyond the year 9999
        };
        // Ranges also split where only the comment changes: run to the end of the same kind.
        let kind = first.kind;
        let mut end = first.range.end;
        for range in ranges {
            if range.kind != kind {
                break;
            }
            end = range.range.end;
        }

        OpenState {
            open: match kind {
                RuleKind::Open => Some(true),
                RuleKind::Closed => Some(false),
                RuleKind::Unknown => None,
            },
            next_change: if end < to {
                paris_after(end, &at)
            } else {
                None
            },
        }
    }

    /// The parsed expression with the French context, from the cache or parsed now.
    /// The opening slots of each of the 7 days from `monday`, for a weekly table; `None` when
    /// the hours are unknown or unreadable.
    pub fn week(&self, hours: Option<&str>, monday: NaiveDate) -> Option<Vec<DayHours>> {
        let oh = hours.and_then(|h| self.parsed(h))?;
        let days = (0..7)
            .map(|offset| {
                let date = monday + TimeDelta::days(offset);
                let start = date.and_hms_opt(0, 0, 0).unwrap_or_default();
                let end = start + TimeDelta::days(1);
                let slots = oh
                    .iter_range(start, end)
                    .filter(|r| r.kind == RuleKind::Open)
                    .map(|r| {
                        let minutes =
                            |t: NaiveDateTime| ((t - start).num_minutes()).clamp(0, 1_440) as u32;
                        (minutes(r.range.start), minutes(r.range.end.min(end)))
                    })
                    .filter(|(from, to)| from < to)
                    .collect();
                DayHours {
                    date,
                    slots,
                    holiday: self.is_public_holiday(date),
                }
            })
            .collect();
        Some(days)
    }

    fn parsed(&self, hours: &str) -> Parsed {
        let hours = hours.trim();
        if hours.is_empty() {
            return None;
        }
        if let Some(parsed) = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hours)
        {
            return parsed.clone();
        }

        let parsed = hours
            .parse::<OpeningHours>()
            .ok()
            .map(|oh| Arc::new(oh.with_context(self.context.clone())));
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if cache.len() < MAX_CACHED {
            cache.insert(hours.into(), parsed.clone());
        }
        parsed
    }
}

/// One day of a typical week: its open intervals as local times (an interval running past
/// midnight ends at 24:00 and goes on the next day), or unknown.
pub type TypicalDay = Option<Vec<(chrono::NaiveTime, chrono::NaiveTime)>>;

impl HoursEvaluator {
    /// The open intervals of each day, Monday first, of the first week starting on or after
    /// `from` without a public holiday: what a printed timetable shows as "the" week. `None`
    /// when the hours are absent or unreadable; a day is `None` where a rule says `unknown`.
    pub fn typical_week(&self, hours: Option<&str>, from: NaiveDate) -> Option<[TypicalDay; 7]> {
        let oh = self.parsed(hours?)?;
        let mut monday =
            from + TimeDelta::days((7 - i64::from(from.weekday().num_days_from_monday())) % 7);
        for _ in 0..8 {
            if (0..7).all(|d| !self.is_public_holiday(monday + TimeDelta::days(d))) {
                break;
            }
            monday += TimeDelta::days(7);
        }
        let mut week: [TypicalDay; 7] = Default::default();
        for (day, slot) in week.iter_mut().enumerate() {
            let date = monday + TimeDelta::days(day as i64);
            let start = date.and_hms_opt(0, 0, 0)?;
            let end = start + TimeDelta::days(1);
            let mut intervals = Vec::new();
            let mut unknown = false;
            for range in oh.iter_range(start, end) {
                match range.kind {
                    RuleKind::Open => {
                        let to = if range.range.end >= end {
                            chrono::NaiveTime::MIN
                        } else {
                            range.range.end.time()
                        };
                        intervals.push((range.range.start.time(), to));
                    }
                    RuleKind::Unknown => unknown = true,
                    RuleKind::Closed => {}
                }
            }
            *slot = (!unknown || !intervals.is_empty()).then_some(intervals);
        }
        Some(week)
    }

    /// Whether the hours say the place is closed on public holidays (`PH off`).
    pub fn closed_on_public_holidays(&self, hours: Option<&str>) -> bool {
        hours.is_some_and(|h| {
            h.split(';').any(|rule| {
                let rule = rule.trim();
                rule.starts_with("PH") && (rule.ends_with("off") || rule.ends_with("closed"))
            })
        })
    }
}

/// The Paris instant of the local time `naive`, the first one after `after` when the clocks show
/// it twice; a time in the spring-forward gap becomes the first minute that exists.
fn paris_after(naive: NaiveDateTime, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
    let mut naive = naive;
    // A gap lasts one hour in Paris; a few hours bound the walk whatever the rules become.
    for _ in 0..(4 * 60) {
        match Paris.from_local_datetime(&naive) {
            LocalResult::Single(dt) => return Some(dt),
            LocalResult::Ambiguous(early, late) => {
                return Some(if early > *after { early } else { late });
            }
            LocalResult::None => naive += TimeDelta::minutes(1),
        }
    }
    None
}

/// The current time in Europe/Paris.
pub fn paris_now() -> DateTime<Tz> {
    chrono::Utc::now().with_timezone(&Paris)
}

/// The years `open_at` may name: those of every date of the directory.
pub const OPEN_AT_YEARS: std::ops::RangeInclusive<i32> = crate::dates::YEARS;

/// Reads the `open_at` parameter: an RFC 3339 date-time with offset (converted to Paris time) or
/// a local Paris time `YYYY-MM-DDTHH:MM[:SS]`. In the autumn fold the first occurrence is taken;
/// a time in the spring-forward gap is read with the winter offset (02:30 → 03:30 CEST).
pub fn parse_open_at(value: &str) -> Result<DateTime<Tz>, String> {
    let value = value.trim();
    // Checked before any arithmetic: a year far away overflows the date types on the way.
    let in_range = |year: i32| {
        if OPEN_AT_YEARS.contains(&year) {
            Ok(())
        } else {
            Err(format!(
                "paramètre open_at invalide « {value} » : année entre {} et {} attendue / year between {} and {} expected",
                OPEN_AT_YEARS.start(),
                OPEN_AT_YEARS.end(),
                OPEN_AT_YEARS.start(),
                OPEN_AT_YEARS.end()
            ))
        }
    };
    if let Ok(dt) = DateTime::parse_from_rfc3339(value) {
        in_range(dt.year())?;
        return Ok(dt.with_timezone(&Paris));
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
    .ok_or_else(|| {
        format!(
            "paramètre open_at invalide « {value} » : date et heure attendues, avec décalage \
                 (2026-07-14T10:00:00+02:00) ou à l'heure de Paris (2026-07-14T10:00)"
        )
    })?;
    in_range(naive.year())?;
    match Paris.from_local_datetime(&naive) {
        LocalResult::Single(dt) | LocalResult::Ambiguous(dt, _) => Ok(dt),
        LocalResult::None => {
            // In the gap: read with the offset in force just before it.
            let before = Paris
                .from_local_datetime(&(naive - TimeDelta::hours(3)))
                .earliest()
                .ok_or_else(|| {
                    format!("paramètre open_at invalide « {value} » : heure inexistante à Paris")
                })?;
            let offset = TimeDelta::seconds(i64::from(before.offset().fix().local_minus_utc()));
            Ok(Paris.from_utc_datetime(&(naive - offset)))
        }
    }
}

/// One day of a weekly table: its opening slots in minutes after midnight (1,440 = midnight
/// at its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayHours {
    pub date: NaiveDate,
    pub slots: Vec<(u32, u32)>,
    pub holiday: bool,
}

/// A time of day in minutes as citizens read it: « 8 h 30 », « 17 h », « minuit »; "8:30 am".
pub fn clock(minutes: u32, lang: Lang) -> String {
    let (hour, minute) = (minutes / 60, minutes % 60);
    match lang {
        Lang::Fr if hour % 24 == 0 && minute == 0 => "minuit".into(),
        Lang::Fr if minute == 0 => format!("{hour} h"),
        Lang::Fr => format!("{hour} h {minute:02}"),
        Lang::En => {
            let hour = hour % 24;
            let (h12, suffix) = match hour {
                0 => (12, "am"),
                1..=11 => (hour, "am"),
                12 => (12, "pm"),
                _ => (hour - 12, "pm"),
            };
            if minute == 0 {
                format!("{h12} {suffix}")
            } else {
                format!("{h12}:{minute:02} {suffix}")
            }
        }
    }
}

/// The name of a weekday (0 = Monday) in `lang`.
pub fn weekday_name(index: usize, lang: Lang) -> &'static str {
    match lang {
        Lang::Fr => JOURS[index % 7],
        Lang::En => DAYS[index % 7],
    }
}

/// A date as citizens read it: « 3 août 2026 », "3 August 2026".
pub fn long_date(date: NaiveDate, lang: Lang) -> String {
    match lang {
        Lang::Fr if date.day() == 1 => {
            format!("1er {} {}", MOIS[date.month0() as usize], date.year())
        }
        Lang::Fr => format!(
            "{} {} {}",
            date.day(),
            MOIS[date.month0() as usize],
            date.year()
        ),
        Lang::En => format!(
            "{} {} {}",
            date.day(),
            MONTHS[date.month0() as usize],
            date.year()
        ),
    }
}

/// The language of the citizen texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Fr,
    En,
}

impl Lang {
    /// `fr`, `en`, also with a region (`fr-FR`, `en_GB`), any case; `None` otherwise.
    pub fn from_code(code: &str) -> Option<Lang> {
        let primary = code.trim().split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("fr") {
            Some(Lang::Fr)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Lang::En)
        } else {
            None
        }
    }
}

const JOURS: [&str; 7] = [
    "lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche",
];
/// English weekday names, Monday first (also schema.org's day names).
pub const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MOIS: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The citizen text of a state computed at `at`: « ouvert maintenant · ferme à 17 h 30 »,
/// « fermé · ouvre demain à 8 h 30 », « fermé · ouvre lundi à 8 h 30 », « fermé · ouvre le 3 août
/// à 9 h », « ouvert maintenant » (no change ahead); "open now · closes at 5:30 pm", "closed ·
/// opens Monday at 8:30 am". A change at 00:00 is said « à minuit » of the day before. `None`
/// when the state is unknown.
pub fn describe(state: &OpenState, at: DateTime<Tz>, lang: Lang) -> Option<String> {
    let open = state.open?;
    let head = match (lang, open) {
        (Lang::Fr, true) => "ouvert maintenant",
        (Lang::Fr, false) => "fermé",
        (Lang::En, true) => "open now",
        (Lang::En, false) => "closed",
    };
    let Some(change) = state.next_change else {
        return Some(head.to_owned());
    };
    let change = change.with_timezone(&Paris).naive_local();
    let today = at.with_timezone(&Paris).date_naive();
    let midnight = change.hour() == 0 && change.minute() == 0;
    let date = if midnight {
        change.date().pred_opt().unwrap_or(change.date())
    } else {
        change.date()
    };
    let days = (date - today).num_days();
    let (hour, minute) = (change.hour(), change.minute());

    Some(match lang {
        Lang::Fr => {
            let verb = if open { "ferme" } else { "ouvre" };
            let day = match days {
                ..=0 => String::new(),
                1 => "demain ".to_owned(),
                2..=6 => format!("{} ", JOURS[date.weekday().num_days_from_monday() as usize]),
                _ if date.day() == 1 => format!("le 1er {} ", MOIS[date.month0() as usize]),
                _ => format!("le {} {} ", date.day(), MOIS[date.month0() as usize]),
            };
            let time = match (midnight, minute) {
                (true, _) => "minuit".to_owned(),
                (false, 0) => format!("{hour} h"),
                (false, _) => format!("{hour} h {minute:02}"),
            };
            format!("{head} · {verb} {day}à {time}")
        }
        Lang::En => {
            let verb = if open { "closes" } else { "opens" };
            let day = match days {
                ..=0 => String::new(),
                1 => "tomorrow ".to_owned(),
                2..=6 => format!("{} ", DAYS[date.weekday().num_days_from_monday() as usize]),
                _ => format!("on {} {} ", MONTHS[date.month0() as usize], date.day()),
            };
            let time = if midnight {
                "midnight".to_owned()
            } else {
                let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
                let meridiem = if hour < 12 { "am" } else { "pm" };
                format!("{h12}:{minute:02} {meridiem}")
            };
            format!("{head} · {verb} {day}at {time}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever a visitor puts in `open_at`, a time or a message, never a panic; and any
        /// date-time in range is read.
        #[test]
        fn open_at_never_panics(text in "\\PC{0,40}") {
            let _ = parse_open_at(&text);
        }

        #[test]
        fn open_at_reads_times_in_range(
            year in -300_000i32..300_000, month in 1u32..=12, day in 1u32..=28,
            hour in 0u32..24, minute in 0u32..60,
        ) {
            let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}");
            let read = parse_open_at(&text);
            if (1900..=2200).contains(&year) {
                proptest::prop_assert!(read.is_ok(), "{}: {:?}", text, read);
            } else {
                proptest::prop_assert!(read.is_err());
            }
        }
    }

    const OFFICE: &str = "Mo-Fr 08:30-12:00,13:30-17:30; PH off";

    /// Paris local time; panics in a gap, takes the first of a fold.
    fn paris(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Tz> {
        Paris
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
    }

    fn state(hours: &str, at: DateTime<Tz>) -> OpenState {
        HoursEvaluator::new().state_at(Some(hours), at)
    }

    #[test]
    fn public_holiday_closes_an_office() {
        let ev = HoursEvaluator::new();
        // Tuesday 14 July 2026, Fête nationale.
        let s = ev.state_at(Some(OFFICE), paris(2026, 7, 14, 10, 0));
        assert_eq!(s.open, Some(false));
        assert_eq!(s.next_change, Some(paris(2026, 7, 15, 8, 30)));
        assert_eq!(
            s.next_change.unwrap().to_rfc3339(),
            "2026-07-15T08:30:00+02:00"
        );
        // The Monday before is an ordinary day.
        let s = ev.state_at(Some(OFFICE), paris(2026, 7, 13, 10, 0));
        assert_eq!(s.open, Some(true));
        assert_eq!(s.next_change, Some(paris(2026, 7, 13, 12, 0)));
    }

    #[test]
    fn typical_week_skips_holiday_weeks() {
        let ev = HoursEvaluator::new();
        let t = |h, m| chrono::NaiveTime::from_hms_opt(h, m, 0).unwrap();
        // From Monday 13 July 2026: the week holds the 14th, so the next one is shown.
        let week = ev
            .typical_week(Some(OFFICE), NaiveDate::from_ymd_opt(2026, 7, 13).unwrap())
            .unwrap();
        for day in &week[..5] {
            assert_eq!(
                day.as_deref(),
                Some(&[(t(8, 30), t(12, 0)), (t(13, 30), t(17, 30))][..])
            );
        }
        assert_eq!(week[5].as_deref(), Some(&[][..]));
        assert!(ev.closed_on_public_holidays(Some(OFFICE)));
        assert!(!ev.closed_on_public_holidays(Some("Mo-Fr 08:00-12:00")));
        let late = ev
            .typical_week(
                Some("Fr 20:00-02:00"),
                NaiveDate::from_ymd_opt(2026, 9, 1).unwrap(),
            )
            .unwrap();
        assert_eq!(late[4].as_deref(), Some(&[(t(20, 0), t(0, 0))][..]));
        assert_eq!(late[5].as_deref(), Some(&[(t(0, 0), t(2, 0))][..]));
        assert!(ev.typical_week(Some("nonsense"), NaiveDate::MIN).is_none());
        assert!(ev.typical_week(None, NaiveDate::MIN).is_none());
    }

    #[test]
    fn christmas_and_may_day_are_holidays() {
        let ev = HoursEvaluator::new();
        for (m, d) in [(12, 25), (5, 1), (1, 1), (11, 11)] {
            let date = NaiveDate::from_ymd_opt(2026, m, d).unwrap();
            assert!(ev.is_public_holiday(date), "{date}");
        }
        assert!(!ev.is_public_holiday(NaiveDate::from_ymd_opt(2026, 12, 24).unwrap()));
        // Friday 25 December and Friday 1 May 2026: closed; Thursday 24 December: open.
        let s = ev.state_at(Some(OFFICE), paris(2026, 12, 25, 10, 0));
        assert_eq!(s.open, Some(false));
        assert_eq!(s.next_change, Some(paris(2026, 12, 28, 8, 30)));
        assert_eq!(
            ev.state_at(Some(OFFICE), paris(2026, 5, 1, 10, 0)).open,
            Some(false)
        );
        assert_eq!(
            ev.state_at(Some(OFFICE), paris(2026, 12, 24, 10, 0)).open,
            Some(true)
        );
    }

    #[test]
    fn closing_minute_is_closed() {
        let ev = HoursEvaluator::new();
        let s = ev.state_at(Some(OFFICE), paris(2026, 7, 13, 17, 30));
        assert_eq!(s.open, Some(false));
        assert_eq!(s.next_change, Some(paris(2026, 7, 15, 8, 30)));
        let s = ev.state_at(Some(OFFICE), paris(2026, 7, 13, 17, 29));
        assert_eq!(s.open, Some(true));
        assert_eq!(s.next_change, Some(paris(2026, 7, 13, 17, 30)));
        // The opening minute is open.
        let s = ev.state_at(Some(OFFICE), paris(2026, 7, 13, 8, 30));
        assert_eq!(s.open, Some(true));
    }

    #[test]
    fn hours_across_midnight() {
        let ev = HoursEvaluator::new();
        let hours = Some("Fr-Sa 22:00-02:00");
        // Saturday 18 July 2026.
        let s = ev.state_at(hours, paris(2026, 7, 18, 0, 30));
        assert_eq!(s.open, Some(true));
        assert_eq!(s.next_change, Some(paris(2026, 7, 18, 2, 0)));
        let s = ev.state_at(hours, paris(2026, 7, 18, 3, 0));
        assert_eq!(s.open, Some(false));
        assert_eq!(s.next_change, Some(paris(2026, 7, 18, 22, 0)));
        // Friday 23:00 is open until Saturday 02:00.
        let s = ev.state_at(hours, paris(2026, 7, 17, 23, 0));
        assert_eq!(s.next_change, Some(paris(2026, 7, 18, 2, 0)));
    }

    #[test]
    fn constant_timetables_have_no_next_change() {
        let s = state("24/7", paris(2026, 7, 14, 10, 0));
        assert_eq!(
            s,
            OpenState {
                open: Some(true),
                next_change: None
            }
        );
        let s = state("off", paris(2026, 7, 14, 10, 0));
        assert_eq!(
            s,
            OpenState {
                open: Some(false),
                next_change: None
            }
        );
    }

    #[test]
    fn next_change_is_bounded_by_the_horizon() {
        // Closed until 1 September: too far ahead to be told.
        let s = state("Sep-Jun Mo-Fr 09:00-17:00", paris(2026, 7, 14, 10, 0));
        assert_eq!(s.open, Some(false));
        assert_eq!(s.next_change, None);
        // Ten days ahead is told.
        let s = state(
            "Mo-Fr 09:00-12:00; Jul 20-Jul 26 off",
            paris(2026, 7, 17, 14, 0),
        );
        assert_eq!(s.next_change, Some(paris(2026, 7, 27, 9, 0)));
    }

    #[test]
    fn absent_or_unreadable_hours_are_unknown() {
        let ev = HoursEvaluator::new();
        let at = paris(2026, 7, 13, 10, 0);
        assert_eq!(ev.state_at(None, at), OpenState::UNKNOWN);
        assert_eq!(ev.state_at(Some(""), at), OpenState::UNKNOWN);
        assert_eq!(ev.state_at(Some("Lundi 8h-12h"), at), OpenState::UNKNOWN);
        assert_eq!(ev.state_at(Some("Lundi 8h-12h"), at), OpenState::UNKNOWN);
        assert_eq!(ev.cached(), 1, "unreadable hours are remembered once");
    }

    #[test]
    fn unknown_rules_and_comment_changes() {
        let ev = HoursEvaluator::new();
        let hours = Some(r#"Mo-Fr 08:00-12:00 "matin", 12:00-18:00 "après-midi"; Sa unknown"#);
        // The comment changes at noon, the state only at 18:00.
        let s = ev.state_at(hours, paris(2026, 7, 13, 10, 0));
        assert_eq!(s.open, Some(true));
        assert_eq!(s.next_change, Some(paris(2026, 7, 13, 18, 0)));
        // Saturday is unknown, until Sunday.
        let s = ev.state_at(hours, paris(2026, 7, 18, 10, 0));
        assert_eq!(s.open, None);
        assert_eq!(s.next_change, Some(paris(2026, 7, 19, 0, 0)));
    }

    #[test]
    fn cache_is_shared_between_threads() {
        let ev = Arc::new(HoursEvaluator::new());
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let ev = Arc::clone(&ev);
                std::thread::spawn(move || {
                    let at = paris(2026, 7, 13 + i, 10, 0);
                    ev.state_at(Some(OFFICE), at).open
                })
            })
            .collect();
        let opens: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // Monday 13 open, Tuesday 14 (PH) closed, Wednesday 15 and Thursday 16 open.
        assert_eq!(opens, [Some(true), Some(false), Some(true), Some(true)]);
        assert_eq!(ev.cached(), 1);
        ev.state_at(Some("24/7"), paris(2026, 7, 13, 10, 0));
        assert_eq!(ev.cached(), 2);
    }

    #[test]
    fn other_time_zones_are_converted() {
        let at = chrono_tz::UTC
            .with_ymd_and_hms(2026, 7, 13, 15, 0, 0)
            .unwrap(); // 17:00 Paris
        let s = state(OFFICE, at);
        assert_eq!(s.open, Some(true));
        let next = s.next_change.unwrap();
        assert_eq!(next.timezone(), Paris);
        assert_eq!(next.to_rfc3339(), "2026-07-13T17:30:00+02:00");
    }

    #[test]
    fn daylight_saving_days_do_not_panic() {
        let ev = HoursEvaluator::new();
        // Sunday 29 March 2026: 02:00 CET jumps to 03:00 CEST.
        let hours = Some("Su 02:30-04:00");
        let before = paris(2026, 3, 29, 1, 30);
        let s = ev.state_at(hours, before);
        assert_eq!(s.open, Some(false));
        let next = s.next_change.unwrap();
        assert_eq!(next.to_rfc3339(), "2026-03-29T03:00:00+02:00");
        assert_eq!(
            ev.state_at(hours, paris(2026, 3, 29, 3, 10)).open,
            Some(true)
        );
        for minutes in (0..24 * 60).step_by(7) {
            let at = before + TimeDelta::minutes(minutes);
            ev.state_at(Some(OFFICE), at);
            ev.state_at(Some("24/7; Su 02:00-03:00 off"), at);
        }

        // Sunday 25 October 2026: 03:00 CEST falls back to 02:00 CET, 02:xx happens twice.
        let hours = Some("Su 02:30-05:00");
        let first = paris(2026, 10, 25, 2, 10);
        assert_eq!(first.to_rfc3339(), "2026-10-25T02:10:00+02:00");
        let s = ev.state_at(hours, first);
        assert_eq!(s.open, Some(false));
        assert_eq!(
            s.next_change.unwrap().to_rfc3339(),
            "2026-10-25T02:30:00+02:00"
        );
        let second = first + TimeDelta::hours(1);
        assert_eq!(second.to_rfc3339(), "2026-10-25T02:10:00+01:00");
        let s = ev.state_at(hours, second);
        assert_eq!(
            s.next_change.unwrap().to_rfc3339(),
            "2026-10-25T02:30:00+01:00",
            "the change comes after the reference moment"
        );
    }

    #[test]
    fn serializes_for_the_api() {
        let s = state(OFFICE, paris(2026, 7, 13, 17, 0));
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"open": true, "next_change": "2026-07-13T17:30:00+02:00"})
        );
        assert_eq!(
            serde_json::to_value(OpenState::UNKNOWN).unwrap(),
            serde_json::json!({"open": null, "next_change": null})
        );
    }

    #[test]
    fn parses_open_at() {
        let expected = paris(2026, 7, 14, 10, 0);
        let dt = parse_open_at("2026-07-14T10:00:00+02:00").unwrap();
        assert_eq!(dt, expected);
        assert_eq!(dt.timezone(), Paris);
        assert_eq!(parse_open_at("2026-07-14T08:00:00Z").unwrap(), expected);
        assert_eq!(
            parse_open_at("2026-07-14T08:00:00Z").unwrap().to_rfc3339(),
            "2026-07-14T10:00:00+02:00"
        );
        assert_eq!(parse_open_at("2026-07-14T10:00").unwrap(), expected);
        assert_eq!(parse_open_at(" 2026-07-14T10:00:00 ").unwrap(), expected);
        for far in [
            "+200000-01-01T10:00",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00",
            "-5-01-01T10:00",
        ] {
            let error = parse_open_at(far).unwrap_err();
            assert!(error.contains("année entre 1900 et 2200"), "{far}: {error}");
        }
        // Winter time.
        assert_eq!(
            parse_open_at("2026-01-05T10:00").unwrap().to_rfc3339(),
            "2026-01-05T10:00:00+01:00"
        );
        // In the spring-forward gap, read with the winter offset.
        assert_eq!(
            parse_open_at("2026-03-29T02:30").unwrap().to_rfc3339(),
            "2026-03-29T03:30:00+02:00"
        );
        for bad in [
            "demain",
            "",
            "2026-07-14",
            "2026-13-14T10:00",
            "14/07/2026 10:00",
        ] {
            let e = parse_open_at(bad).unwrap_err();
            assert!(e.contains("open_at"), "{bad}: {e}");
        }
    }

    #[test]
    fn lang_codes() {
        assert_eq!(Lang::from_code("fr"), Some(Lang::Fr));
        assert_eq!(Lang::from_code("EN"), Some(Lang::En));
        assert_eq!(Lang::from_code("fr-FR"), Some(Lang::Fr));
        assert_eq!(Lang::from_code("en_GB"), Some(Lang::En));
        assert_eq!(Lang::from_code("de"), None);
        assert_eq!(Lang::from_code(""), None);
    }

    fn text(hours: &str, at: DateTime<Tz>, lang: Lang) -> Option<String> {
        describe(&state(hours, at), at, lang)
    }

    #[test]
    fn describes_in_french() {
        let fr = Lang::Fr;
        assert_eq!(
            text(OFFICE, paris(2026, 7, 13, 15, 0), fr).unwrap(),
            "ouvert maintenant · ferme à 17 h 30"
        );
        assert_eq!(
            text(OFFICE, paris(2026, 7, 14, 10, 0), fr).unwrap(),
            "fermé · ouvre demain à 8 h 30"
        );
        // Friday evening: Monday.
        assert_eq!(
            text(OFFICE, paris(2026, 7, 17, 18, 0), fr).unwrap(),
            "fermé · ouvre lundi à 8 h 30"
        );
        // Lunch break: today, whole hour.
        assert_eq!(
            text(
                "Mo-Fr 08:00-12:00,14:00-17:00",
                paris(2026, 7, 13, 12, 30),
                fr
            )
            .unwrap(),
            "fermé · ouvre à 14 h"
        );
        assert_eq!(
            text("Mo-Fr 08:00-17:00", paris(2026, 7, 13, 9, 0), fr).unwrap(),
            "ouvert maintenant · ferme à 17 h"
        );
        assert_eq!(
            text("Mo-Su 18:00-24:00", paris(2026, 7, 13, 20, 0), fr).unwrap(),
            "ouvert maintenant · ferme à minuit"
        );
        assert_eq!(
            text("Fr-Sa 22:00-02:00", paris(2026, 7, 17, 23, 0), fr).unwrap(),
            "ouvert maintenant · ferme demain à 2 h"
        );
        assert_eq!(
            text("Mo-Fr 09:05-12:00", paris(2026, 7, 13, 8, 0), fr).unwrap(),
            "fermé · ouvre à 9 h 05"
        );
        // More than six days ahead: the date.
        assert_eq!(
            text(
                "Mo-Fr 09:00-12:00; Jul 20-Jul 26 off",
                paris(2026, 7, 17, 14, 0),
                fr
            )
            .unwrap(),
            "fermé · ouvre le 27 juillet à 9 h"
        );
        assert_eq!(
            text(
                "Sa 09:00-12:00; Jul 20-Jul 31 off",
                paris(2026, 7, 18, 14, 0),
                fr
            )
            .unwrap(),
            "fermé · ouvre le 1er août à 9 h"
        );
        assert_eq!(
            text("24/7", paris(2026, 7, 13, 9, 0), fr).unwrap(),
            "ouvert maintenant"
        );
        assert_eq!(text("off", paris(2026, 7, 13, 9, 0), fr).unwrap(), "fermé");
        assert_eq!(text("n'importe quoi", paris(2026, 7, 13, 9, 0), fr), None);
        assert_eq!(
            describe(&OpenState::UNKNOWN, paris(2026, 7, 13, 9, 0), fr),
            None
        );
    }

    #[test]
    fn describes_in_english() {
        let en = Lang::En;
        assert_eq!(
            text("Mo-Fr 08:00-17:00", paris(2026, 7, 13, 9, 0), en).unwrap(),
            "open now · closes at 5:00 pm"
        );
        assert_eq!(
            text(OFFICE, paris(2026, 7, 13, 15, 0), en).unwrap(),
            "open now · closes at 5:30 pm"
        );
        assert_eq!(
            text(OFFICE, paris(2026, 7, 17, 18, 0), en).unwrap(),
            "closed · opens Monday at 8:30 am"
        );
        assert_eq!(
            text(OFFICE, paris(2026, 7, 14, 10, 0), en).unwrap(),
            "closed · opens tomorrow at 8:30 am"
        );
        assert_eq!(
            text("Mo-Fr 12:00-00:30", paris(2026, 7, 13, 9, 0), en).unwrap(),
            "closed · opens at 12:00 pm"
        );
        assert_eq!(
            text("Mo-Fr 12:00-00:30", paris(2026, 7, 13, 13, 0), en).unwrap(),
            "open now · closes tomorrow at 12:30 am"
        );
        assert_eq!(
            text("Mo-Su 18:00-24:00", paris(2026, 7, 13, 20, 0), en).unwrap(),
            "open now · closes at midnight"
        );
        assert_eq!(
            text(
                "Mo-Fr 09:00-12:00; Jul 20-Jul 26 off",
                paris(2026, 7, 17, 14, 0),
                en
            )
            .unwrap(),
            "closed · opens on July 27 at 9:00 am"
        );
        assert_eq!(
            text("24/7", paris(2026, 7, 13, 9, 0), en).unwrap(),
            "open now"
        );
    }
}
