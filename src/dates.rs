//! Dates and date-times from outside (query strings, forms, files, filters, closures): one
//! reader for each, years 1900 to 2200 only, so that no later arithmetic on them ever leaves
//! what chrono represents (it panics there).

use std::ops::RangeInclusive;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// The years a date of the directory may have: far enough either way for any real use.
pub const YEARS: RangeInclusive<i32> = 1900..=2200;

/// `AAAA-MM-JJ`, spaces around ignored; the message says what is expected.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let text = text.trim();
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|d| YEARS.contains(&d.year()))
        .ok_or_else(|| {
            format!(
                "« {text} » : date AAAA-MM-JJ attendue, années {} à {} / expected YYYY-MM-DD",
                YEARS.start(),
                YEARS.end()
            )
        })
}

/// An RFC 3339 date-time with its offset, in UTC.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        .filter(|d| YEARS.contains(&d.year()))
        .ok_or_else(|| {
            format!(
                "« {text} » : date-heure RFC 3339 attendue (2026-01-31T08:00:00Z), années {} à \
                 {} / expected an RFC 3339 date-time",
                YEARS.start(),
                YEARS.end()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text is a date in range or a message, never a panic; a date read is written
        /// back the same.
        #[test]
        fn dates_parse_any_text(text in "[+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}|\\PC{0,12}") {
            if let Ok(date) = parse_date(&text) {
                proptest::prop_assert!(YEARS.contains(&date.year()));
                proptest::prop_assert_eq!(parse_date(&date.to_string()), Ok(date));
            }
            if let Ok(instant) = parse_instant(&text) {
                proptest::prop_assert!(YEARS.contains(&instant.year()));
            }
        }
    }

    #[test]
    fn far_years_are_refused() {
        assert!(parse_date("2026-02-28").is_ok());
        assert!(parse_date("+262142-12-31").is_err());
        assert!(parse_date("1899-12-31").unwrap_err().contains("1900"));
        assert!(parse_instant("2026-01-31T08:00:00+01:00").is_ok());
        assert!(parse_instant("9999-01-31T08:00:00Z").is_err());
    }
}
