//! Turning an entry as it arrives (strings from a file or a form) into validated [`Content`],
//! with one precise message per wrong field.

use rustc_hash::FxHashMap as HashMap;

use serde::Deserialize;

use super::quality::{QualityCode, QualityFlag};
use super::{hours, phone, Content, Wheelchair};
use crate::error::FieldError;
use crate::spatial::{in_france, LonLat};
use crate::taxonomy::Taxonomy;
use crate::territory::locator::Located;
use crate::territory::{InseeCode, Locator};

/// How far outside its declared commune's (simplified) boundary a point may lie: the reference
/// boundaries are simplified to ~30 m in Auvergne and ~200 m nationally.
pub const COMMUNE_TOLERANCE_M: f64 = 1_000.0;

/// An entry as it arrives, every field a string, named as in the project's CSV.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Draft {
    pub source_ref: String,
    pub typology: String,
    pub name: String,
    pub address: String,
    pub postcode: String,
    pub city: String,
    pub insee_code: String,
    pub lon: String,
    pub lat: String,
    pub phone: String,
    pub email: String,
    pub website: String,
    pub opening_hours: String,
    /// Hours in the service-public.fr JSON form, converted when `opening_hours` is empty.
    pub opening_hours_json: String,
    pub wheelchair: String,
    pub wheelchair_note: String,
    pub description: String,
    /// When a person last confirmed the entry (ISO date or date-time).
    pub verified_at: String,
    /// A digest the reader made of the record as the source wrote it, when it has one (see
    /// [`Draft::raw_digest`]).
    #[serde(skip)]
    pub source_digest: Option<String>,
    /// The establishment's SIRET as the source gives it (national sources).
    #[serde(skip)]
    pub siret: String,
}

/// Field `$name` of `$draft` as the project's CSV names it, borrowed with `$($borrow)*` (`&` or
/// `&mut`); `None` for no such field. One list for every reader and writer of fields by name.
macro_rules! draft_field {
    ($draft:expr, $name:expr, $($borrow:tt)*) => {
        match $name {
            "source_ref" => Some($($borrow)* $draft.source_ref),
            "typology" => Some($($borrow)* $draft.typology),
            "name" => Some($($borrow)* $draft.name),
            "address" => Some($($borrow)* $draft.address),
            "postcode" => Some($($borrow)* $draft.postcode),
            "city" => Some($($borrow)* $draft.city),
            "insee_code" => Some($($borrow)* $draft.insee_code),
            "lon" => Some($($borrow)* $draft.lon),
            "lat" => Some($($borrow)* $draft.lat),
            "phone" => Some($($borrow)* $draft.phone),
            "email" => Some($($borrow)* $draft.email),
            "website" => Some($($borrow)* $draft.website),
            "opening_hours" => Some($($borrow)* $draft.opening_hours),
            "opening_hours_json" => Some($($borrow)* $draft.opening_hours_json),
            "wheelchair" => Some($($borrow)* $draft.wheelchair),
            "wheelchair_note" => Some($($borrow)* $draft.wheelchair_note),
            "description" => Some($($borrow)* $draft.description),
            "verified_at" => Some($($borrow)* $draft.verified_at),
            _ => None,
        }
    };
}

impl Draft {
    /// A digest of the record as it came (every field's text) and of how it is validated
    /// (`rules`): the same digest means the same validated content, so a re-harvest can leave
    /// a record unchanged without validating it again. Only ever compared with the same entry's
    /// previous one: a collision costs nothing worse than a missed update of one entry among
    /// 2^64, and a change of hasher only validates everything once more.
    ///
    /// A reader that digests its records as the source wrote them (the Annuaire's JSON) gives
    /// that digest instead of the fields': a record known by it need not even be read into a
    /// draft (see [`Draft::known_by_digest`]).
    pub fn raw_digest(&self, rules: &str) -> String {
        use std::hash::Hasher;
        let mut h = rustc_hash::FxHasher::default();
        h.write(rules.as_bytes());
        if let Some(source) = &self.source_digest {
            h.write_u8(0x1e);
            h.write(source.as_bytes());
            return format!("{:016x}", h.finish());
        }
        // Every field: those with a text limit, and the confirmation date.
        let names = TEXT_LIMITS.iter().map(|(name, _, _)| *name);
        for name in names.chain(["verified_at"]) {
            h.write_u8(0x1f);
            h.write(self.field(name).map_or("", String::as_str).as_bytes());
        }
        h.write_u8(0x1f);
        h.write(self.siret.as_bytes());
        format!("{:016x}", h.finish())
    }

    /// The draft of a record a reader recognised by `source_digest` as one an earlier read
    /// stored (under `source_ref`): nothing else of it is needed, since the same digest means
    /// the same entry.
    pub fn known_by_digest(source_ref: String, source_digest: String) -> Self {
        Self {
            source_ref,
            source_digest: Some(source_digest),
            ..Self::default()
        }
    }

    /// The SIRET the record gives, when it is one: 14 digits once spaces are taken out
    /// (anything else is left out, the source's own business).
    pub fn valid_siret(&self) -> Option<String> {
        siret_digits(&self.siret)
    }

    /// The text of field `name` (as the project's CSV names it), `None` for no such field.
    pub fn field(&self, name: &str) -> Option<&String> {
        draft_field!(self, name, &)
    }

    /// The same, to change it.
    pub fn field_mut(&mut self, name: &str) -> Option<&mut String> {
        draft_field!(self, name, &mut)
    }
}

/// A SIRET as written by a source (`216 303 003 00011`), as its 14 digits; `None` for anything
/// else.
pub fn siret_digits(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == 14 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// Validates drafts against the taxonomy and the territory; remembers the hours it has already
/// parsed, since a directory repeats the same few hundred timetables.
pub struct Validator<'a> {
    taxonomy: &'a Taxonomy,
    locator: &'a Locator,
    hours_seen: HashMap<String, Result<String, String>>,
    /// Also accept synonyms and English labels as typologies (foreign vocabularies such as SCDL).
    loose_typologies: bool,
    /// Keep an entry whose position, phone, e-mail, web site, hours, postcode or accessibility
    /// is doubtful, with a quality flag, instead of refusing it (imports and harvests).
    flagging: bool,
}

/// The longest text each field of an entry may hold, in characters, and whether it may hold
/// line breaks (the only control characters any field keeps): documented in SECURITY.md.
pub const TEXT_LIMITS: [(&str, usize, bool); 17] = [
    ("source_ref", 200, false),
    ("typology", 200, false),
    ("name", 200, false),
    ("address", 500, false),
    ("postcode", 20, false),
    ("city", 200, false),
    ("insee_code", 20, false),
    ("lon", 50, false),
    ("lat", 50, false),
    ("phone", 500, false),
    ("email", 320, false),
    ("website", 2_048, false),
    ("opening_hours", 2_000, false),
    ("opening_hours_json", 20_000, true),
    ("wheelchair", 50, false),
    ("wheelchair_note", 2_000, true),
    ("description", 5_000, true),
];

/// Every field of `draft` too long or holding a control character (line breaks aside where
/// [`TEXT_LIMITS`] allows them), checked before anything else reads the fields.
fn text_limits(draft: &Draft) -> Vec<FieldError> {
    TEXT_LIMITS
        .iter()
        .filter_map(|(field, max, lines)| {
            let text = draft.field(field).map_or("", |t| t.trim());
            check_text(text, *max, *lines)
                .err()
                .map(|message| FieldError::new(*field, message))
        })
        .collect()
}

/// The one rule for free text from outside (entries, organisations, campaigns, tokens,
/// closures, guides): at most `max` characters, no control character but line breaks where
/// `lines` allows them.
pub fn check_text(text: &str, max: usize, lines: bool) -> Result<(), String> {
    if text.chars().count() > max {
        return Err(format!(
            "texte trop long ({max} caractères au plus) / text too long (at most {max} characters)"
        ));
    }
    match text
        .chars()
        .find(|c| c.is_control() && !(lines && matches!(c, '\n' | '\r')))
    {
        Some(bad) => Err(format!(
            "caractère de contrôle U+{:04X} refusé / control character refused",
            u32::from(bad)
        )),
        None => Ok(()),
    }
}

/// The longest name of an organisation, a campaign, an API token, a person.
pub const MAX_NAME_CHARS: usize = 200;

fn optional(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

fn coordinate(value: &str, field: &str, errors: &mut Vec<FieldError>) -> Option<f64> {
    let v = value.trim();
    if v.is_empty() {
        errors.push(FieldError::new(
            field,
            "coordonnée manquante (degrés décimaux WGS84)",
        ));
        return None;
    }
    match v.replace(',', ".").parse::<f64>() {
        Ok(x) if x.is_finite() => Some(x),
        _ => {
            errors.push(FieldError::new(
                field,
                format!("« {v} » n'est pas un nombre décimal"),
            ));
            None
        }
    }
}

/// Closures of an entry: the most, the longest reason, the longest closure in days.
pub const MAX_CLOSURES: usize = 100;
pub const MAX_CLOSURE_REASON_CHARS: usize = 200;
pub const MAX_CLOSURE_DAYS: i64 = 3_660;

/// Checks the closures of an entry, whichever way they came (API, pages, imports): dates in
/// the years any date of the directory may have, in order, a closure of ten years at most, a
/// short one-line reason; the first wrong one is named.
pub fn check_closures(closures: &[crate::services::Closure]) -> Result<(), String> {
    use chrono::Datelike;
    if closures.len() > MAX_CLOSURES {
        return Err(format!(
            "{} fermetures : {MAX_CLOSURES} au plus",
            closures.len()
        ));
    }
    let years = crate::dates::YEARS;
    for closure in closures {
        let (from, to) = (closure.from, closure.to);
        if !years.contains(&from.year()) || !years.contains(&to.year()) {
            return Err(format!(
                "fermeture du {from} au {to} : années de {} à {} seulement",
                years.start(),
                years.end()
            ));
        }
        if to < from || (to - from).num_days() > MAX_CLOSURE_DAYS {
            return Err(format!(
                "fermeture du {from} au {to} : dates dans le désordre ou trop éloignées"
            ));
        }
        if let Some(reason) = &closure.reason {
            check_text(reason, MAX_CLOSURE_REASON_CHARS, false)
                .map_err(|message| format!("fermeture du {from}, motif : {message}"))?;
        }
    }
    Ok(())
}

pub fn check_email(value: &str) -> Result<String, String> {
    let v = value.trim();
    let error = || format!("« {v} » n'est pas une adresse e-mail valide");
    let (local, domain) = v.split_once('@').ok_or_else(error)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.');
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(v.to_lowercase())
    } else {
        Err(error())
    }
}

pub fn check_website(value: &str) -> Result<String, String> {
    let v = value.trim();
    // People often write « www.commune.fr »: that means the web site over HTTPS.
    let with_scheme = if v.contains("://") {
        v.to_owned()
    } else {
        format!("https://{v}")
    };
    match url::Url::parse(&with_scheme) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| h.contains('.')) =>
        {
            Ok(u.to_string())
        }
        _ => Err(format!(
            "« {v} » n'est pas une adresse web valide (https://…)"
        )),
    }
}

impl<'a> Validator<'a> {
    pub fn new(taxonomy: &'a Taxonomy, locator: &'a Locator) -> Self {
        Self {
            taxonomy,
            locator,
            hours_seen: HashMap::default(),
            loose_typologies: false,
            flagging: false,
        }
    }

    /// Flags what is doubtful but usable instead of refusing it: only what makes an entry
    /// unusable (no name, no typology, unknown commune, no position anywhere, coordinates
    /// swapped, text past its limits) still refuses it.
    pub fn with_quality_flags(mut self) -> Self {
        self.flagging = true;
        self
    }

    /// The communes it validates against.
    pub fn locator(&self) -> &'a Locator {
        self.locator
    }

    pub fn with_loose_typologies(mut self) -> Self {
        self.loose_typologies = true;
        self
    }

    fn hours(&mut self, raw: &str) -> Result<String, String> {
        if let Some(known) = self.hours_seen.get(raw) {
            return known.clone();
        }
        let result = hours::normalize(raw);
        if self.hours_seen.len() < 100_000 {
            self.hours_seen.insert(raw.to_owned(), result.clone());
        }
        result
    }

    /// Validates every field and reports all that are wrong, not just the first.
    /// Retired typologies are accepted only when `allow_retired` (updates of existing entries).
    pub fn content(
        &mut self,
        draft: &Draft,
        allow_retired: bool,
    ) -> Result<Content, Vec<FieldError>> {
        let mut errors = text_limits(draft);

        let resolved = if self.loose_typologies {
            self.taxonomy.resolve_loosely(&draft.typology)
        } else {
            self.taxonomy.resolve(&draft.typology)
        };
        let typology = match resolved {
            None if draft.typology.trim().is_empty() => {
                errors.push(FieldError::new("typology", "typologie manquante"));
                None
            }
            None => {
                errors.push(FieldError::new(
                    "typology",
                    format!("typologie inconnue « {} » (code ou libellé exact, voir GET /api/v1/typologies)", draft.typology.trim()),
                ));
                None
            }
            Some(t) if t.retired && !allow_retired => {
                errors.push(FieldError::new(
                    "typology",
                    format!(
                        "la typologie « {} » est retirée : elle n'accepte plus de nouvelle fiche",
                        t.code
                    ),
                ));
                None
            }
            Some(t) => Some(t.code.clone()),
        };

        let name = draft.name.trim();
        if name.is_empty() {
            errors.push(FieldError::new("name", "nom manquant"));
        }
        let description = optional(&draft.description);

        let mut quality: Vec<QualityFlag> = Vec::new();
        // Coordinate errors wait until the declared commune is known: with it, a flagging
        // validator places the entry at the commune's centre instead.
        let mut position_errors = Vec::new();
        let lon = coordinate(&draft.lon, "lon", &mut position_errors);
        let lat = coordinate(&draft.lat, "lat", &mut position_errors);
        let (location, position_doubt) = match (lon, lat) {
            (Some(lon), Some(lat)) => {
                let p = LonLat::new(lon, lat);
                if in_france(p) {
                    (Some(p), None)
                } else if in_france(LonLat::new(lat, lon)) {
                    errors.push(FieldError::new(
                        "lat",
                        format!("lon et lat semblent inversées (lon={lon}, lat={lat}) : la longitude vient d'abord en colonne lon"),
                    ));
                    (None, None)
                } else {
                    let message = format!(
                        "le point (lon={lon}, lat={lat}) est hors de France (métropole et outre-mer)"
                    );
                    (
                        None,
                        Some(QualityFlag::new(
                            QualityCode::PositionOutsideFrance,
                            "lon",
                            message,
                        )),
                    )
                }
            }
            _ => {
                let raw = format!("lon={}, lat={}", draft.lon.trim(), draft.lat.trim());
                let message = if draft.lon.trim().is_empty() && draft.lat.trim().is_empty() {
                    "la source ne donne pas de position".to_owned()
                } else {
                    position_errors
                        .iter()
                        .map(|e| format!("{} : {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join(" ; ")
                };
                (
                    None,
                    Some(
                        QualityFlag::new(QualityCode::PositionMissing, "lon", message)
                            .with_value(&raw),
                    ),
                )
            }
        };

        let declared = match optional(&draft.insee_code) {
            None => None,
            Some(code) => match InseeCode::parse(&code) {
                Err(message) => {
                    errors.push(FieldError::new("insee_code", message));
                    None
                }
                Ok(code) => match self.locator.commune(&code) {
                    None => {
                        errors.push(FieldError::new(
                            "insee_code",
                            format!("commune inconnue : {code}"),
                        ));
                        None
                    }
                    Some(commune) => Some(commune),
                },
            },
        };
        let mut location = location;
        match (position_doubt, declared) {
            (None, _) => {}
            (Some(doubt), Some(commune)) if self.flagging => {
                location = Some(commune.centroid);
                quality.push(QualityFlag {
                    message: format!(
                        "{} : placé au centre de {} en attendant une correction",
                        doubt.message, commune.name
                    ),
                    ..doubt
                });
            }
            (Some(doubt), _) => match doubt.code {
                QualityCode::PositionMissing => errors.extend(position_errors),
                _ => errors.push(FieldError::new(doubt.field, doubt.message)),
            },
        }
        let commune = match (declared, location) {
            (Some(commune), Some(p)) => {
                let distance_m = self.locator.distance_to_commune_m(commune, p);
                if distance_m > COMMUNE_TOLERANCE_M {
                    let found = match self.locator.locate(p) {
                        Located::Inside(c) | Located::Approximately(c) => {
                            format!(", dans la commune de {} ({})", c.name, c.insee_code)
                        }
                        Located::Nowhere => String::new(),
                    };
                    let message = format!(
                        "le point (lon={}, lat={}) est à {} de {} ({}){found}",
                        p.lon,
                        p.lat,
                        super::quality::distance_label(distance_m),
                        commune.name,
                        commune.insee_code
                    );
                    if self.flagging {
                        location = Some(commune.centroid);
                        quality.push(
                            QualityFlag::new(
                                QualityCode::PositionOutsideCommune,
                                "insee_code",
                                format!(
                                    "{message} : placé au centre de {} en attendant une correction",
                                    commune.name
                                ),
                            )
                            .with_value(&format!("lon={}, lat={}", p.lon, p.lat)),
                        );
                    } else {
                        errors.push(FieldError::new("insee_code", message));
                    }
                }
                Some(commune)
            }
            (Some(commune), None) => Some(commune),
            (None, Some(p)) => {
                match self.locator.locate(p) {
                    Located::Inside(c) | Located::Approximately(c) => Some(c),
                    Located::Nowhere => {
                        errors.push(FieldError::new(
                        "insee_code",
                        format!("aucune commune connue au point (lon={}, lat={}) : indiquez insee_code", p.lon, p.lat),
                    ));
                        None
                    }
                }
            }
            (None, None) => None,
        };
        let flagging = self.flagging;
        // A doubtful field: flagged with the source's text when flagging, refused otherwise.
        let mut doubt = |code: QualityCode, field: &str, message: String, raw: &str| {
            if flagging {
                quality.push(QualityFlag::new(code, field, message).with_value(raw));
            } else {
                errors.push(FieldError::new(field, message));
            }
        };

        let postcode = optional(&draft.postcode).filter(|pc| {
            let valid = pc.len() == 5 && pc.bytes().all(|b| b.is_ascii_digit());
            if !valid {
                doubt(
                    QualityCode::PostcodeInvalid,
                    "postcode",
                    format!("« {pc} » n'est pas un code postal (5 chiffres)"),
                    pc,
                );
            }
            valid
        });

        let phones = phone::parse_list(&draft.phone).unwrap_or_else(|message| {
            doubt(
                QualityCode::PhoneUnreadable,
                "phone",
                message,
                draft.phone.trim(),
            );
            Vec::new()
        });
        let email = optional(&draft.email).and_then(|e| {
            check_email(&e)
                .map_err(|message| doubt(QualityCode::EmailInvalid, "email", message, &e))
                .ok()
        });
        let website = optional(&draft.website).and_then(|w| {
            check_website(&w)
                .map_err(|message| doubt(QualityCode::WebsiteInvalid, "website", message, &w))
                .ok()
        });

        let raw_hours = match (
            optional(&draft.opening_hours),
            optional(&draft.opening_hours_json),
        ) {
            (Some(osm), _) => Some((Ok(osm.clone()), osm)),
            (None, Some(json)) => hours::from_service_public_json(&json)
                .transpose()
                .map(|parsed| (parsed, json)),
            (None, None) => None,
        };
        let opening_hours = match raw_hours {
            None => None,
            Some((Err(message), raw)) => {
                doubt(QualityCode::HoursUnreadable, "opening_hours", message, &raw);
                None
            }
            Some((Ok(osm), raw)) => match self.hours(&osm) {
                Ok(normalised) => Some(normalised),
                Err(message) => {
                    doubt(QualityCode::HoursUnreadable, "opening_hours", message, &raw);
                    None
                }
            },
        };

        let wheelchair = Wheelchair::parse(&draft.wheelchair).unwrap_or_else(|message| {
            doubt(
                QualityCode::WheelchairUnknown,
                "wheelchair",
                message,
                draft.wheelchair.trim(),
            );
            Wheelchair::Unknown
        });

        match (typology, location, commune) {
            (Some(typology), Some(location), Some(commune)) if errors.is_empty() => Ok(Content {
                typology,
                name: name.to_owned(),
                description,
                street: optional(&draft.address),
                postcode,
                city: optional(&draft.city).or_else(|| Some(commune.name.clone())),
                insee_code: commune.insee_code.clone(),
                location,
                phones,
                email,
                website,
                opening_hours,
                closures: Vec::new(),
                wheelchair,
                wheelchair_note: optional(&draft.wheelchair_note),
                quality,
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::territory::ReferenceFiles;

    fn reference() -> &'static (Taxonomy, Locator) {
        static REFERENCE: OnceLock<(Taxonomy, Locator)> = OnceLock::new();
        REFERENCE.get_or_init(|| {
            (
                Taxonomy::embedded().unwrap(),
                Locator::new(ReferenceFiles::embedded().unwrap().communes),
            )
        })
    }

    fn town_hall() -> Draft {
        Draft {
            source_ref: "m-63113".into(),
            typology: "mairie".into(),
            name: "Mairie de Clermont-Ferrand".into(),
            address: "10 rue Philippe-Marcombes".into(),
            postcode: "63000".into(),
            insee_code: "63113".into(),
            lon: "3.0863".into(),
            lat: "45.7797".into(),
            phone: "04 73 42 63 63".into(),
            email: "Contact@Clermont-Ferrand.fr".into(),
            website: "www.clermont-ferrand.fr".into(),
            opening_hours: "Mo-Fr 08:30-17:00".into(),
            ..Draft::default()
        }
    }

    fn errors_of(draft: Draft) -> Vec<FieldError> {
        let (taxonomy, locator) = reference();
        Validator::new(taxonomy, locator)
            .content(&draft, false)
            .unwrap_err()
    }

    #[test]
    fn a_good_entry_is_normalised() {
        let (taxonomy, locator) = reference();
        let content = Validator::new(taxonomy, locator)
            .content(&town_hall(), false)
            .unwrap();
        assert_eq!(content.phones[0].e164(), "+33473426363");
        assert_eq!(
            content.email.as_deref(),
            Some("contact@clermont-ferrand.fr")
        );
        assert_eq!(
            content.website.as_deref(),
            Some("https://www.clermont-ferrand.fr/")
        );
        assert_eq!(content.city.as_deref(), Some("Clermont-Ferrand"));
    }

    #[test]
    fn long_texts_and_control_characters_are_refused_by_field() {
        let errors = errors_of(Draft {
            address: "1 rue ".repeat(300),
            city: "Clermont\u{7}Ferrand".into(),
            description: "Une ligne.\nUne autre.".into(),
            wheelchair_note: "Rampe\tà droite".into(),
            ..town_hall()
        });
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["address", "city", "wheelchair_note"], "{errors:?}");
        assert!(errors[0].message.contains("500 caractères au plus"));
        assert!(errors[1].message.contains("U+0007"));
    }

    proptest::proptest! {
        /// Whatever text comes in any field, the validator answers with a content or the
        /// fields it refuses, never a panic; a content never holds a control character in a
        /// one-line field.
        #[test]
        fn any_text_in_any_field_is_validated_without_panicking(
            field in 0usize..TEXT_LIMITS.len(),
            text in "\\PC{0,60}|[\\x00-\\x7f]{0,60}|\\PC{490,520}",
        ) {
            let mut draft = town_hall();
            let slot = draft.field_mut(TEXT_LIMITS[field].0).expect("a field of the table");
            *slot = text;
            let (taxonomy, locator) = reference();
            if let Ok(content) = Validator::new(taxonomy, locator).content(&draft, false) {
                for one_line in [Some(&content.name), content.street.as_ref(), content.city.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    proptest::prop_assert!(!one_line.chars().any(char::is_control));
                }
            }
        }
    }

    #[test]
    fn the_commune_is_found_from_the_point() {
        let (taxonomy, locator) = reference();
        let draft = Draft {
            insee_code: String::new(),
            ..town_hall()
        };
        let content = Validator::new(taxonomy, locator)
            .content(&draft, false)
            .unwrap();
        assert_eq!(content.insee_code.as_str(), "63113");
    }

    #[test]
    fn swapped_coordinates_are_named() {
        let errors = errors_of(Draft {
            lon: "45.7797".into(),
            lat: "3.0863".into(),
            ..town_hall()
        });
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "lat");
        assert!(errors[0].message.contains("inversées"));
    }

    #[test]
    fn outside_france_and_wrong_commune() {
        let errors = errors_of(Draft {
            lon: "13.40".into(),
            lat: "52.52".into(),
            ..town_hall()
        });
        assert!(errors[0].message.contains("hors de France"), "{errors:?}");
        // Riom's town hall declared in Clermont-Ferrand.
        let errors = errors_of(Draft {
            lon: "3.1130".into(),
            lat: "45.8937".into(),
            ..town_hall()
        });
        assert_eq!(errors[0].field, "insee_code");
        assert!(errors[0].message.contains("Riom"), "{errors:?}");
    }

    #[test]
    fn every_wrong_field_is_reported() {
        let errors = errors_of(Draft {
            typology: "boulangerie".into(),
            phone: "12".into(),
            email: "pas-un-mail".into(),
            website: "ftp://x".into(),
            opening_hours: "lundi matin".into(),
            wheelchair: "peut-être".into(),
            postcode: "6300".into(),
            ..town_hall()
        });
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "typology",
                "postcode",
                "phone",
                "email",
                "website",
                "opening_hours",
                "wheelchair"
            ]
        );
    }

    #[test]
    fn retired_typologies_are_refused_for_new_entries_only() {
        let (taxonomy, locator) = reference();
        let mut retired = taxonomy.clone();
        retired
            .typologies
            .iter_mut()
            .find(|t| t.code == "mairie")
            .unwrap()
            .retired = true;
        let mut validator = Validator::new(&retired, locator);
        assert!(validator.content(&town_hall(), false).is_err());
        assert!(validator.content(&town_hall(), true).is_ok());
    }

    #[test]
    fn email_and_web_syntax() {
        assert!(check_email("a.b@mairie-riom.fr").is_ok());
        assert!(check_email("a@b").is_err());
        assert!(check_email("a b@c.fr").is_err());
        assert!(check_website("https://www.riom.fr/mairie").is_ok());
        assert!(check_website("javascript:alert(1)").is_err());
    }
}
