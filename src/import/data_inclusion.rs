//! data·inclusion (schema 1.x, the national inclusion platform) structures as published: JSON (a
//! list, or `{"items": […]}` as its API pages them) or CSV (lists comma-separated). A structure
//! whose network (`reseaux_porteurs`) the crosswalk of `taxonomy/data-inclusion.toml` maps to a
//! typology becomes a draft of it; the others are counted by network.

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

fn draft(record: &Map<String, Value>, typology: &str) -> Draft {
    let street = [text(record, "adresse"), text(record, "complement_adresse")]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    Draft {
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
        ..Draft::default()
    }
}

/// Reads every structure of `reader` (JSON or CSV, told apart by the first byte), pushing the
/// mapped ones to `each`; returns what no typology takes, by network.
pub fn read(
    reader: impl Read,
    head: &[u8],
    taxonomy: &Taxonomy,
    mut each: impl FnMut(Record) -> bool,
) -> Result<Unmapped, FileError> {
    let networks_to = network_map(taxonomy);
    let mut unmapped = Unmapped::default();
    let mut structure = |n: u64, record: Map<String, Value>| -> bool {
        let found = networks(&record);
        match found.iter().find_map(|r| networks_to.get(r)) {
            Some(typology) => each((n, Ok(draft(&record, typology)))),
            None => {
                unmapped.count(found.first().map_or("(sans réseau)", String::as_str));
                true
            }
        }
    };
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
            unreadable:
                "JSON data·inclusion illisible (liste de structures ou {\"items\": […]} attendue)",
        };
        super::records::each_record(reader, layout, |n, value| match value {
            Value::Object(record) => structure(n, record),
            _ => true,
        })?;
    } else {
        let mut csv = csv::Reader::from_reader(reader);
        let headers = csv
            .headers()
            .map_err(|e| {
                FileError(FieldError::new("header", format!("en-tête illisible : {e}")).at_row(1))
            })?
            .clone();
        if !headers.iter().any(|h| h == "nom") {
            return Err(FileError(
                FieldError::new(
                    "header",
                    "colonne « nom » absente : structures data·inclusion attendues",
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
            if !structure(line, record) {
                break;
            }
        }
    }
    Ok(unmapped)
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
        let unmapped = read(json.as_bytes(), json.as_bytes(), &taxonomy, |r| {
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
        read(csv.as_bytes(), csv.as_bytes(), &taxonomy, |r| {
            rows.push(r);
            true
        })
        .unwrap();
        assert_eq!(rows[0].0, 2);
        assert_eq!(rows[0].1.as_ref().unwrap().typology, "caf");
    }
}
