//! Quality flags: what is doubtful in an entry that is still usable (a position outside the
//! commune the source names, a phone, an e-mail or hours that do not read), kept on the entry
//! until a person fixes that field, instead of leaving a hole in the directory.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What is doubtful. Stable codes: API clients and the filters of the lists use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QualityCode {
    /// The source's point lies outside the commune it names: the entry is placed at the
    /// commune's centre.
    PositionOutsideCommune,
    /// The source's point is outside France: placed at the commune's centre.
    PositionOutsideFrance,
    /// No readable point: placed at the commune's centre.
    PositionMissing,
    PhoneUnreadable,
    EmailInvalid,
    WebsiteInvalid,
    HoursUnreadable,
    PostcodeInvalid,
    WheelchairUnknown,
    /// The national source no longer lists an entry an organisation claimed: it stays
    /// published, for its organisation to confirm or withdraw.
    DroppedBySource,
}

impl QualityCode {
    pub const ALL: [QualityCode; 10] = [
        QualityCode::PositionOutsideCommune,
        QualityCode::PositionOutsideFrance,
        QualityCode::PositionMissing,
        QualityCode::PhoneUnreadable,
        QualityCode::EmailInvalid,
        QualityCode::WebsiteInvalid,
        QualityCode::HoursUnreadable,
        QualityCode::PostcodeInvalid,
        QualityCode::WheelchairUnknown,
        QualityCode::DroppedBySource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QualityCode::PositionOutsideCommune => "position_outside_commune",
            QualityCode::PositionOutsideFrance => "position_outside_france",
            QualityCode::PositionMissing => "position_missing",
            QualityCode::PhoneUnreadable => "phone_unreadable",
            QualityCode::EmailInvalid => "email_invalid",
            QualityCode::WebsiteInvalid => "website_invalid",
            QualityCode::HoursUnreadable => "hours_unreadable",
            QualityCode::PostcodeInvalid => "postcode_invalid",
            QualityCode::WheelchairUnknown => "wheelchair_unknown",
            QualityCode::DroppedBySource => "dropped_by_source",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// A short French label, for the lists' filter.
    pub fn label(self) -> &'static str {
        match self {
            QualityCode::PositionOutsideCommune => "Position hors de la commune",
            QualityCode::PositionOutsideFrance => "Position hors de France",
            QualityCode::PositionMissing => "Position manquante",
            QualityCode::PhoneUnreadable => "Téléphone illisible",
            QualityCode::EmailInvalid => "Courriel invalide",
            QualityCode::WebsiteInvalid => "Site web invalide",
            QualityCode::HoursUnreadable => "Horaires illisibles",
            QualityCode::PostcodeInvalid => "Code postal invalide",
            QualityCode::WheelchairUnknown => "Accessibilité illisible",
            QualityCode::DroppedBySource => "Plus publiée par la source",
        }
    }

    /// The fields of an entry whose change settles the flag: a person who writes them has
    /// looked at what was doubtful.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            QualityCode::PositionOutsideCommune
            | QualityCode::PositionOutsideFrance
            | QualityCode::PositionMissing => &["lon", "lat", "insee_code"],
            QualityCode::PhoneUnreadable => &["phone"],
            QualityCode::EmailInvalid => &["email"],
            QualityCode::WebsiteInvalid => &["website"],
            QualityCode::HoursUnreadable => &["opening_hours"],
            QualityCode::PostcodeInvalid => &["postcode"],
            QualityCode::WheelchairUnknown => &["wheelchair"],
            // No field settles it: a confirmation or a withdrawal does.
            QualityCode::DroppedBySource => &[],
        }
    }
}

/// One doubt about an entry: what, about which field, said for a person, and the source's own
/// text when it could not be kept in the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QualityFlag {
    pub code: QualityCode,
    /// The field concerned, as the project's CSV names it.
    pub field: String,
    /// What is wrong and by how much, in French.
    pub message: String,
    /// The source's text as it came, when it was left out of the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl QualityFlag {
    pub fn new(code: QualityCode, field: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            field: field.to_owned(),
            message: message.into(),
            value: None,
        }
    }

    pub fn with_value(mut self, value: &str) -> Self {
        self.value = Some(value.to_owned());
        self
    }
}

/// The flags as stored (a JSON list), `None` for none: the column stays NULL for clean entries
/// so that « à vérifier » is `quality IS NOT NULL`.
pub fn to_stored(flags: &[QualityFlag]) -> Option<String> {
    (!flags.is_empty()).then(|| serde_json::to_string(flags).unwrap_or_default())
}

/// The stored flags read back; a column that does not read is no flag rather than no entry.
pub fn from_stored(stored: Option<&str>) -> Vec<QualityFlag> {
    stored
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// The flags of `previous` still true after a person's write: those whose fields the write
/// left as they were (`unchanged(field)`).
pub fn kept_after_edit(
    previous: &[QualityFlag],
    unchanged: impl Fn(&str) -> bool,
) -> Vec<QualityFlag> {
    previous
        .iter()
        .filter(|flag| flag.code.fields().iter().all(|f| unchanged(f)))
        .cloned()
        .collect()
}

/// A distance said as a person reads it: « 850 m », « 3,4 km ».
pub fn distance_label(metres: f64) -> String {
    if metres < 1_000.0 {
        format!("{:.0} m", metres)
    } else if metres < 100_000.0 {
        format!("{:.1} km", metres / 1_000.0).replace('.', ",")
    } else {
        format!("{:.0} km", metres / 1_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_and_distances_read_in_french() {
        for code in QualityCode::ALL {
            assert_eq!(QualityCode::parse(code.as_str()), Some(code));
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
        assert_eq!(distance_label(850.4), "850 m");
        assert_eq!(distance_label(3_412.0), "3,4 km");
        assert_eq!(distance_label(412_000.0), "412 km");
    }

    #[test]
    fn a_write_settles_the_flags_of_the_fields_it_changes() {
        let flags = vec![
            QualityFlag::new(QualityCode::PhoneUnreadable, "phone", "x").with_value("04"),
            QualityFlag::new(QualityCode::PositionOutsideCommune, "lon", "y"),
        ];
        let kept = kept_after_edit(&flags, |field| field != "phone");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].code, QualityCode::PositionOutsideCommune);
        assert!(to_stored(&[]).is_none());
        assert_eq!(from_stored(to_stored(&flags).as_deref()), flags);
    }
}
