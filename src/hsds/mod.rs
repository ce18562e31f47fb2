//! The directory in Open Referral's Human Services Data Specification 3.0 (the international
//! standard of service-directory software), read-only under `/hsds`: entries as services with
//! their location, address, phones and schedules, contributing organisations as organizations,
//! the themes and 175 typologies as one taxonomy.

pub mod ids;
pub mod routes;
pub mod store;

use chrono::NaiveDate;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::export::Row;
use crate::search::hours::{HoursEvaluator, TypicalDay};
use crate::taxonomy::Taxonomy;
use ids::Kind;

/// The HSDS version served.
pub const VERSION: &str = "3.0";

/// The taxonomy's name in every term.
const TAXONOMY_NAME: &str = "Proximités — typologies de l'annexe 1";

pub fn taxonomy_id() -> Uuid {
    ids::named("taxonomy:proximites")
}

pub fn theme_term_id(code: &str) -> Uuid {
    ids::named(&format!("theme:{code}"))
}

pub fn typology_term_id(code: &str) -> Uuid {
    ids::named(&format!("typology:{code}"))
}

/// The one taxonomy: the convention's themes and typologies.
pub fn taxonomy(base: &str) -> Value {
    json!({
        "id": taxonomy_id(),
        "name": TAXONOMY_NAME,
        "description": "Les 5 thèmes et 175 typologies de services de l'annexe 1 de la convention Proximités (2008), tenus à jour dans taxonomy/ : chaque fiche de l'annuaire relève d'une typologie.",
        "uri": format!("{base}/api/v1/typologies"),
        "version": "2008",
    })
}

/// What a term of the taxonomy is.
#[derive(Debug, Clone, Copy)]
pub enum Term<'t> {
    Theme(&'t crate::taxonomy::Theme),
    Typology(&'t crate::taxonomy::Typology),
}

impl<'t> Term<'t> {
    pub fn id(&self) -> Uuid {
        match self {
            Term::Theme(t) => theme_term_id(&t.code),
            Term::Typology(t) => typology_term_id(&t.code),
        }
    }

    pub fn name(&self) -> &'t str {
        match self {
            Term::Theme(t) => &t.label_fr,
            Term::Typology(t) => &t.label_fr,
        }
    }

    pub fn code(&self) -> &'t str {
        match self {
            Term::Theme(t) => &t.code,
            Term::Typology(t) => &t.code,
        }
    }

    /// The theme term a typology sits under; `None` for a theme.
    pub fn parent_id(&self) -> Option<Uuid> {
        match self {
            Term::Theme(_) => None,
            Term::Typology(t) => Some(theme_term_id(&t.theme)),
        }
    }

    /// The typology codes the term stands for (a theme: all of its typologies).
    pub fn typologies(&self, taxonomy: &Taxonomy) -> Vec<String> {
        match self {
            Term::Theme(theme) => taxonomy
                .typologies
                .iter()
                .filter(|t| t.theme == theme.code)
                .map(|t| t.code.clone())
                .collect(),
            Term::Typology(t) => vec![t.code.clone()],
        }
    }

    pub fn json(&self, taxonomy: &Taxonomy) -> Value {
        let description = match self {
            Term::Theme(t) => format!(
                "Thème « {} » ({}) de l'annexe 1 de la convention Proximités.",
                t.label_fr, t.label_en
            ),
            Term::Typology(t) => format!(
                "Typologie « {} » ({}) du thème « {} ».",
                t.label_fr,
                t.label_en,
                taxonomy
                    .theme(&t.theme)
                    .map_or(t.theme.as_str(), |theme| &theme.label_fr)
            ),
        };
        let mut term = json!({
            "id": self.id(),
            "code": self.code(),
            "name": self.name(),
            "description": description,
            "taxonomy": TAXONOMY_NAME,
            "taxonomy_id": taxonomy_id(),
            "language": "fr",
        });
        if let Some(parent) = self.parent_id() {
            term["parent_id"] = json!(parent);
        }
        term
    }
}

/// Every term: the themes, then the typologies, in the annex's order.
pub fn terms(taxonomy: &Taxonomy) -> Vec<Term<'_>> {
    taxonomy
        .themes
        .iter()
        .map(Term::Theme)
        .chain(taxonomy.typologies.iter().map(Term::Typology))
        .collect()
}

pub fn term_by_id<'t>(taxonomy: &'t Taxonomy, id: &Uuid) -> Option<Term<'t>> {
    terms(taxonomy).into_iter().find(|t| t.id() == *id)
}

/// A contributing organisation as the API knows it.
#[derive(Debug, Clone)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    pub siren: Option<String>,
}

impl Organisation {
    /// The organization's one-to-one fields (HSDS `organization_list`).
    pub fn json(&self) -> Value {
        let uuid = ids::of_organisation(&self.id);
        let mut organization = json!({
            "id": uuid,
            "name": self.name,
            "description": format!("{} : organisme contributeur de l'annuaire Proximités, qui tient ses fiches à jour.", self.name),
        });
        if let Some(siren) = self.siren.as_deref().filter(|s| !s.is_empty()) {
            organization["tax_id"] = json!(siren);
            organization["organization_identifiers"] = json!([{
                "id": ids::named(&format!("siren:{}", self.id)),
                "organization_id": uuid,
                "identifier_scheme": "FR-SIREN",
                "identifier_type": "SIREN",
                "identifier": siren,
            }]);
        }
        organization
    }
}

/// A service's one-to-one fields (HSDS `service_list`).
pub fn service_summary(row: &Row<'_>, base: &str) -> Value {
    let mut service = Map::new();
    service.insert("id".into(), json!(ids::of_entry(Kind::Service, row.id)));
    service.insert(
        "organization_id".into(),
        json!(ids::of_organisation(row.source_id)),
    );
    service.insert("name".into(), json!(row.name));
    if let Some(description) = row.description.filter(|d| !d.trim().is_empty()) {
        service.insert("description".into(), json!(description));
    }
    service.insert("url".into(), json!(format!("{base}/services/{}", row.id)));
    if let Some(email) = row.email.filter(|e| !e.is_empty()) {
        service.insert("email".into(), json!(email));
    }
    service.insert("status".into(), json!("active"));
    service.insert("last_modified".into(), json!(row.updated_text()));
    Value::Object(service)
}

/// The HSDS days of the week, Monday first.
const DAYS: [&str; 7] = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];

/// Weekly schedules from a typical week: one per opening interval, for the days that share it.
fn schedules(week: &[TypicalDay; 7], service: Uuid, entry_id: &str, hours: &str) -> Vec<Value> {
    let mut intervals: Vec<((chrono::NaiveTime, chrono::NaiveTime), Vec<&str>)> = Vec::new();
    for (day, slots) in DAYS.iter().zip(week) {
        for &slot in slots.iter().flatten() {
            match intervals.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, days)) => days.push(day),
                None => intervals.push((slot, vec![day])),
            }
        }
    }
    intervals
        .into_iter()
        .enumerate()
        .map(|(i, ((opens, closes), days))| {
            // An interval running to midnight ends at 00:00 the next day: 24:00 here.
            let closes_at = if closes == chrono::NaiveTime::MIN {
                "24:00".to_owned()
            } else {
                closes.format("%H:%M").to_string()
            };
            json!({
                "id": ids::named(&format!("schedule:{entry_id}:{i}")),
                "service_id": service,
                "freq": "WEEKLY",
                "wkst": "MO",
                "byday": days.join(","),
                "opens_at": opens.format("%H:%M").to_string(),
                "closes_at": closes_at,
                "description": format!("Horaires d'ouverture (OpenStreetMap) : {hours}"),
                "attending_type": "en personne",
            })
        })
        .collect()
}

/// What a fully nested service needs besides its row.
pub struct Context<'a> {
    pub base: &'a str,
    pub taxonomy: &'a Taxonomy,
    pub hours: &'a HoursEvaluator,
    /// The week the schedules describe starts on or after this day.
    pub today: NaiveDate,
}

/// A service fully nested (HSDS `service`): its organization, location with address and
/// accessibility, phones, weekly schedules and taxonomy term.
pub fn service_full(row: &Row<'_>, organisation: Option<&Organisation>, cx: &Context<'_>) -> Value {
    let mut service = service_summary(row, cx.base);
    let uuid = ids::of_entry(Kind::Service, row.id);
    let location_id = ids::of_entry(Kind::Location, row.id);
    let phones: Vec<String> = serde_json::from_str(row.phones_json).unwrap_or_default();
    service["phones"] = phones
        .iter()
        .enumerate()
        .map(|(i, number)| {
            json!({
                "id": ids::named(&format!("phone:{}:{i}", row.id)),
                "service_id": uuid,
                "number": number,
                "type": "voice",
            })
        })
        .collect();
    service["schedules"] = match row
        .opening_hours
        .filter(|h| !h.trim().is_empty())
        .and_then(|h| Some((h, cx.hours.typical_week(Some(h), cx.today)?)))
    {
        Some((hours, week)) => Value::Array(schedules(&week, uuid, row.id, hours)),
        None => json!([]),
    };
    let mut location = json!({
        "id": location_id,
        "location_type": "physical",
        "name": row.name,
        "latitude": row.lat,
        "longitude": row.lon,
        "external_identifier": row.insee_code,
        "external_identifier_type": "code INSEE de la commune",
    });
    if let (Some(street), Some(postcode), Some(city)) = (
        row.street.filter(|s| !s.trim().is_empty()),
        row.postcode.filter(|s| !s.trim().is_empty()),
        row.city.filter(|s| !s.trim().is_empty()),
    ) {
        location["addresses"] = json!([{
            "id": ids::of_entry(Kind::Address, row.id),
            "location_id": location_id,
            "address_1": street,
            "city": city,
            "state_province": row.departement().unwrap_or(row.insee_code.get(..2).unwrap_or_default()),
            "postal_code": postcode,
            "country": "FR",
            "address_type": "physical",
        }]);
    }
    let access = match row.wheelchair {
        "yes" => Some("Accessible en fauteuil roulant / wheelchair accessible"),
        "limited" => {
            Some("Accessible en partie en fauteuil roulant / partly wheelchair accessible")
        }
        "no" => Some("Non accessible en fauteuil roulant / not wheelchair accessible"),
        _ => None,
    };
    if let Some(access) = access {
        location["accessibility"] = json!([{
            "id": ids::named(&format!("accessibility:{}", row.id)),
            "location_id": location_id,
            "description": access,
        }]);
    }
    service["service_at_locations"] = json!([{
        "id": ids::of_entry(Kind::ServiceAtLocation, row.id),
        "service_id": uuid,
        "location_id": location_id,
        "location": location,
    }]);
    if let Some(organisation) = organisation {
        service["organization"] = organisation.json();
    }
    if let Some(typology) = cx.taxonomy.typology(row.typology) {
        let term = Term::Typology(typology);
        service["attributes"] = json!([{
            "id": ids::named(&format!("attribute:{}:{}", row.id, typology.code)),
            "link_id": uuid,
            "link_type": "service",
            "link_entity": "service",
            "taxonomy_term_id": term.id(),
            "taxonomy_term": term.json(cx.taxonomy),
        }]);
    }
    service
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;

    #[test]
    fn days_sharing_an_interval_share_a_schedule() {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        let morning = (t(8, 30), t(12, 0));
        let afternoon = (t(14, 0), t(17, 0));
        let mut week: [TypicalDay; 7] = Default::default();
        for day in week.iter_mut().take(5) {
            *day = Some(vec![morning, afternoon]);
        }
        week[5] = Some(vec![morning]);
        let found = schedules(
            &week,
            Uuid::nil(),
            "x",
            "Mo-Fr 08:30-12:00,14:00-17:00; Sa 08:30-12:00",
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[0]["byday"], "MO,TU,WE,TH,FR,SA");
        assert_eq!(found[0]["opens_at"], "08:30");
        assert_eq!(found[1]["byday"], "MO,TU,WE,TH,FR");
        assert_eq!(found[1]["closes_at"], "17:00");
    }

    #[test]
    fn terms_are_themes_then_typologies() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let all = terms(&taxonomy);
        assert_eq!(all.len(), 5 + 175);
        let mairie = term_by_id(&taxonomy, &typology_term_id("mairie")).unwrap();
        assert_eq!(mairie.parent_id(), Some(theme_term_id("services-publics")));
        assert_eq!(mairie.typologies(&taxonomy), vec!["mairie".to_owned()]);
        let theme = term_by_id(&taxonomy, &theme_term_id("services-publics")).unwrap();
        assert_eq!(theme.typologies(&taxonomy).len(), 88);
    }
}
