//! data·inclusion (schema 1.x, the national inclusion platform) structures and services as
//! published: JSON (a list, or `{"items": […]}` as its API pages them) or CSV (lists
//! comma-separated). A structure whose network (`reseaux_porteurs`) the crosswalk of
//! `taxonomy/data-inclusion.toml` maps to a typology becomes a draft of it; the others are
//! counted by network. The services file, when given, says what each structure offers: their
//! names go into its description, and their contact stands in for one it lacks.

use std::collections::HashMap;
use std::io::Read;

use serde_json::{Map, Value};

use super::formats::{FileError, Record};
use super::records::Unmapped;
use crate::error::FieldError;
use crate::services::Draft;
use crate::taxonomy::data_inclusion::DataInclusion;
use crate::taxonomy::Taxonomy;

/// The name harvested data·inclusion entries are signed with.
pub const SOURCE: &str = "data·inclusion";

/// Network → typology: the first typology, in the annex's order, whose crosswalk names it.
pub fn network_map(taxonomy: &Taxonomy) -> HashMap<String, String> {
    let crosswalk = DataInclusion::embedded();
    let mut map = HashMap::new();
    for typology in taxonomy.typologies.iter().filter(|t| !t.retired) {
        if let Some(network) = crosswalk.of(&typology.code).and_then(|c| c.reseau.clone()) {
            map.entry(network).or_insert_with(|| typology.code.clone());
        }
    }
    map
}

fn text(record: &Map<String, Value>, key: &str) -> String {
    match record.get(key) {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The structure's networks, from a JSON list or comma-separated text.
fn networks(record: &Map<String, Value>) -> Vec<String> {
    match record.get("reseaux_porteurs") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.trim().to_owned())
            .collect(),
        Some(Value::String(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// One service of a structure, as its entry tells it.
#[derive(Debug, Clone)]
struct Offered {
    name: String,
    phone: String,
    email: String,
}

/// The services of a services file, by structure (`source` and `structure_id`).
#[derive(Debug, Default)]
pub struct Services {
    by_structure: HashMap<String, Vec<Offered>>,
    /// Services read from the file.
    pub read: u64,
}

/// A structure's key within data·inclusion: ids are unique within their source.
fn structure_key(source: &str, id: &str) -> String {
    format!("{source}\u{1f}{id}")
}

/// Services named in an entry's description at most; the others are counted.
const SERVICES_NAMED: usize = 12;

impl Services {
    fn of(&self, structure: &Map<String, Value>) -> Option<&[Offered]> {
        self.by_structure
            .get(&structure_key(
                &text(structure, "source"),
                &text(structure, "id"),
            ))
            .map(Vec::as_slice)
    }
}

/// Reads a services file (JSON or CSV, as structures are read): each service's name and
/// contact, by the structure it belongs to. A service of no structure is read and left.
pub fn read_services(reader: impl Read, head: &[u8]) -> Result<Services, FileError> {
    let mut services = Services::default();
    each_object(
        reader,
        head,
        "structure_id",
        "JSON de services data·inclusion illisible (liste de services ou {\"items\": […]} attendue)",
        |_, record| {
            services.read += 1;
            let structure = text(&record, "structure_id");
            let name = text(&record, "nom");
            if !structure.is_empty() && !name.is_empty() {
                services
                    .by_structure
                    .entry(structure_key(&text(&record, "source"), &structure))
                    .or_default()
                    .push(Offered {
                        name,
                        phone: text(&record, "telephone"),
                        email: text(&record, "courriel"),
                    });
            }
            true
        },
    )?;
    for offered in services.by_structure.values_mut() {
        offered.sort_by(|a, b| a.name.cmp(&b.name));
        offered.dedup_by(|a, b| a.name == b.name);
    }
    Ok(services)
}

/// The description of a structure with the services it offers.
fn with_services(description: String, offered: &[Offered]) -> String {
    let mut names: Vec<&str> = offered
        .iter()
        .take(SERVICES_NAMED)
        .map(|o| o.name.as_str())
        .collect();
    let more = offered.len().saturating_sub(SERVICES_NAMED);
    let others = format!("et {more} autre{}", if more > 1 { "s" } else { "" });
    if more > 0 {
        names.push(&others);
    }
    let list = format!("Services proposés : {}.", names.join(" ; "));
    if description.is_empty() {
        list
    } else {
        format!("{description}\n\n{list}")
    }
}

fn draft(record: &Map<String, Value>, typology: &str, offered: Option<&[Offered]>) -> Draft {
    let street = [text(record, "adresse"), text(record, "complement_adresse")]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let mut draft = Draft {
        source_ref: text(record, "id"),
        typology: typology.to_owned(),
        name: text(record, "nom"),
        address: street,
        postcode: text(record, "code_postal"),
        city: text(record, "commune"),
        insee_code: text(record, "code_insee"),
        lon: text(record, "longitude"),
        lat: text(record, "latitude"),
        phone: text(record, "telephone"),
        email: text(record, "courriel"),
        website: text(record, "site_web"),
        opening_hours: text(record, "horaires_accueil"),
        description: text(record, "description"),
        siret: text(record, "siret"),
        ..Draft::default()
    };
    if let Some(offered) = offered.filter(|o| !o.is_empty()) {
        draft.description = with_services(std::mem::take(&mut draft.description), offered);
        // A structure without its own contact is reached through its services'.
        if draft.phone.is_empty() {
            if let Some(o) = offered.iter().find(|o| !o.phone.is_empty()) {
                draft.phone = o.phone.clone();
            }
        }
        if draft.email.is_empty() {
            if let Some(o) = offered.iter().find(|o| !o.email.is_empty()) {
                draft.email = o.email.clone();
            }
        }
    }
    draft
}

/// What a harvest of structures found beside them: the services file's part.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServicesSummary {
    /// Services read from the services file.
    pub services: u64,
    /// Structures taken whose services were found, their names in the description.
    pub structures_with_services: u64,
}

/// Reads every structure of `reader` (JSON or CSV, told apart by the first byte), pushing the
/// mapped ones to `each`, with what `services` says they offer; returns what no typology takes,
/// by network, and how many structures got services.
pub fn read(
    reader: impl Read,
    head: &[u8],
    taxonomy: &Taxonomy,
    services: Option<&Services>,
    mut each: impl FnMut(Record) -> bool,
) -> Result<(Unmapped, Option<ServicesSummary>), FileError> {
    let networks_to = network_map(taxonomy);
    let mut unmapped = Unmapped::default();
    let mut summary = services.map(|s| ServicesSummary {
        services: s.read,
        structures_with_services: 0,
    });
    each_object(
        reader,
        head,
        "nom",
        "JSON data·inclusion illisible (liste de structures ou {\"items\": […]} attendue)",
        |n, record| {
            let found = networks(&record);
            match found.iter().find_map(|r| networks_to.get(r)) {
                Some(typology) => {
                    let offered = services.and_then(|s| s.of(&record));
                    if let (Some(summary), Some(_)) = (summary.as_mut(), offered) {
                        summary.structures_with_services += 1;
                    }
                    each((n, Ok(draft(&record, typology, offered))))
                }
                None => {
                    unmapped.count(found.first().map_or("(sans réseau)", String::as_str));
                    true
                }
            }
        },
    )?;
    Ok((unmapped, summary))
}

/// Hands each object of a data·inclusion file (JSON or CSV, told apart by the first byte) to
/// `each` with its index or line; a CSV must have the column `required`.
fn each_object(
    reader: impl Read,
    head: &[u8],
    required: &str,
    unreadable: &str,
    mut each: impl FnMut(u64, Map<String, Value>) -> bool,
) -> Result<(), FileError> {
    let json = head
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'[' | b'{'));
    if json {
        let layout = super::records::Layout {
            key: "items",
            kind: None,
            bare_list: true,
            key_required: true,
            unreadable,
        };
        return super::records::each_record(reader, layout, |n, value| match value {
            Value::Object(record) => each(n, record),
            _ => true,
        });
    }
    let mut csv = csv::Reader::from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| {
            FileError(FieldError::new("header", format!("en-tête illisible : {e}")).at_row(1))
        })?
        .clone();
    if !headers.iter().any(|h| h == required) {
        return Err(FileError(
            FieldError::new(
                "header",
                format!("colonne « {required} » absente : fichier data·inclusion attendu"),
            )
            .at_row(1),
        ));
    }
    for (i, row) in csv.records().enumerate() {
        let line = i as u64 + 2;
        let row = row.map_err(|e| {
            FileError(FieldError::new("row", format!("ligne CSV illisible : {e}")).at_row(line))
        })?;
        let record: Map<String, Value> = headers
            .iter()
            .zip(row.iter())
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        if !each(line, record) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_lead_to_typologies_in_the_annex_order() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let map = network_map(&taxonomy);
        assert_eq!(map["communes"], "mairie");
        assert_eq!(map["caf"], "caf");
        assert_eq!(map["france-travail"], "anpe");
        assert_eq!(map["mission-locale"], "mission-locale-paio");
    }

    #[test]
    fn json_and_csv_read_alike() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let json = r#"{"items": [
            {"source": "dora", "id": "dora--1", "nom": "CAF de Riom", "adresse": "1 rue X",
             "code_postal": "63200", "commune": "Riom", "code_insee": "63300",
             "longitude": 3.1133, "latitude": 45.8937, "reseaux_porteurs": ["caf"]},
            {"source": "dora", "id": "dora--2", "nom": "Association", "reseaux_porteurs": ["emmaus"]},
            {"source": "dora", "id": "dora--3", "nom": "Sans réseau"}
        ]}"#;
        let mut found = Vec::new();
        let (unmapped, _) = read(json.as_bytes(), json.as_bytes(), &taxonomy, None, |r| {
            found.push(r);
            true
        })
        .unwrap();
        assert_eq!(found.len(), 1);
        let draft = found[0].1.as_ref().unwrap();
        assert_eq!(
            (draft.typology.as_str(), draft.lon.as_str()),
            ("caf", "3.1133")
        );
        assert_eq!(unmapped.by_type.get("emmaus"), Some(&1));
        assert_eq!(unmapped.by_type.get("(sans réseau)"), Some(&1));
        let csv = "source,id,nom,code_insee,longitude,latitude,reseaux_porteurs\ndora,dora--1,CAF de Riom,63300,3.1133,45.8937,\"caf,msap\"\n";
        let mut rows = Vec::new();
        read(csv.as_bytes(), csv.as_bytes(), &taxonomy, None, |r| {
            rows.push(r);
            true
        })
        .unwrap();
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[0].1.as_ref().unwrap().typology, "caf");
    }
}
