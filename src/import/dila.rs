//! The Annuaire de l'administration, « Base de données locales » (DILA, published daily on
//! data.gouv.fr): the bulk file as downloaded (a `.tar.bz2` holding `…-data.gouv_local.json`,
//! `{"service": [record, …]}`), that JSON extracted, or the JSON export of its explore API (a
//! list of records whose nested fields are JSON strings). Each record is read as a stream into a
//! [`Draft`] of the typology its « pivot » type maps to (`pivot` codes of `taxonomy/`); records
//! of unmapped types are counted by type, never an error.

use std::borrow::Cow;
use std::io::Read;

use serde_json::{Map, Value};

use super::formats::{FileError, Record};
use crate::error::FieldError;
use crate::services::Draft;
use crate::taxonomy::Taxonomy;

/// The name harvested DILA entries are signed with (convention art. 2: the source is named).
pub const SOURCE: &str = "Annuaire de l'administration (DILA)";

/// Pivot type → typology code, from the taxonomy's `pivot` lists.
pub fn pivot_map(taxonomy: &Taxonomy) -> std::collections::HashMap<String, String> {
    taxonomy
        .typologies
        .iter()
        .filter(|t| !t.retired)
        .flat_map(|t| t.pivot.iter().map(move |p| (p.clone(), t.code.clone())))
        .collect()
}

pub use super::records::Unmapped;

/// A nested field as a value: the explore API gives nested lists and objects as JSON text.
fn nested<'v>(record: &'v Map<String, Value>, key: &str) -> Option<Cow<'v, Value>> {
    match record.get(key)? {
        Value::String(text) if text.trim_start().starts_with(['[', '{']) => {
            serde_json::from_str(text).ok().map(Cow::Owned)
        }
        Value::Null => None,
        other => Some(Cow::Borrowed(other)),
    }
}

/// The items of a nested list (a lone object or text counts as one).
fn items(value: Option<Cow<'_, Value>>) -> Vec<Value> {
    match value.map(Cow::into_owned) {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(one) => vec![one],
    }
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The record's « pivot » types, in its order.
fn pivot_types(record: &Map<String, Value>) -> Vec<String> {
    items(nested(record, "pivot"))
        .iter()
        .map(|p| text(p, "type_service_local"))
        .filter(|t| !t.is_empty())
        .collect()
}

/// The service-public.fr JSON hours (`[[from_day, to_day, [[open, close], …]], …]`) of the
/// record's `plage_ouverture`, which the validator turns into OpenStreetMap syntax.
fn hours(record: &Map<String, Value>) -> String {
    let rules: Vec<Value> = items(nested(record, "plage_ouverture"))
        .iter()
        .filter_map(|range| {
            let from = text(range, "nom_jour_debut");
            let to = text(range, "nom_jour_fin");
            if from.is_empty() {
                return None;
            }
            let slots: Vec<Value> = [
                ("valeur_heure_debut_1", "valeur_heure_fin_1"),
                ("valeur_heure_debut_2", "valeur_heure_fin_2"),
            ]
            .iter()
            .map(|(open, close)| (text(range, open), text(range, close)))
            .filter(|(open, close)| !open.is_empty() && !close.is_empty())
            .map(|(open, close)| serde_json::json!([open, close]))
            .collect();
            (!slots.is_empty()).then(|| {
                let to = if to.is_empty() { from.clone() } else { to };
                serde_json::json!([from, to, slots])
            })
        })
        .collect();
    if rules.is_empty() {
        String::new()
    } else {
        Value::Array(rules).to_string()
    }
}

/// A DILA record as a draft of `typology`.
fn draft(record: &Map<String, Value>, typology: &str) -> Draft {
    let mut draft = Draft {
        source_ref: match record.get("id") {
            Some(Value::String(id)) => id.trim().to_owned(),
            Some(Value::Number(id)) => id.to_string(),
            _ => String::new(),
        },
        typology: typology.to_owned(),
        name: record
            .get("nom")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned(),
        ..Draft::default()
    };
    let addresses = items(nested(record, "adresse"));
    // The place people go to, before a postal address.
    let address = addresses
        .iter()
        .find(|a| text(a, "type_adresse").eq_ignore_ascii_case("Adresse"))
        .or_else(|| addresses.first());
    if let Some(address) = address {
        draft.address = ["numero_voie", "complement1", "complement2"]
            .iter()
            .map(|key| text(address, key))
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        draft.postcode = text(address, "code_postal");
        draft.city = text(address, "nom_commune");
        draft.lon = text(address, "longitude");
        draft.lat = text(address, "latitude");
        draft.wheelchair = match text(address, "accessibilite").as_str() {
            "ACC" => "yes",
            "DEM" => "limited",
            "NAC" => "no",
            _ => "",
        }
        .to_owned();
        draft.wheelchair_note = text(address, "note_accessibilite");
    }
    draft.insee_code = match record.get("code_insee_commune") {
        Some(Value::String(code)) if !code.trim().is_empty() => code.trim().to_owned(),
        _ => items(nested(record, "pivot"))
            .iter()
            .find_map(|p| {
                items(p.get("code_insee_commune").map(Cow::Borrowed))
                    .first()
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default(),
    };
    draft.phone = items(nested(record, "telephone"))
        .first()
        .map(|p| match p {
            Value::String(s) => s.trim().to_owned(),
            other => text(other, "valeur"),
        })
        .unwrap_or_default();
    draft.email = items(nested(record, "adresse_courriel"))
        .first()
        .and_then(|e| e.as_str().map(|s| s.trim().to_owned()))
        .or_else(|| {
            record
                .get("adresse_courriel")
                .and_then(Value::as_str)
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    draft.website = items(nested(record, "site_internet"))
        .first()
        .map(|s| match s {
            Value::String(s) => s.trim().to_owned(),
            other => text(other, "valeur"),
        })
        .unwrap_or_default();
    draft.opening_hours_json = hours(record);
    draft
}

/// Reads every record of `reader` (bulk object, explore list, or the `.tar.bz2` holding the
/// bulk JSON), pushing the mapped ones to `each`; returns what no typology takes.
pub fn read(
    reader: impl Read,
    head: &[u8],
    pivots: &std::collections::HashMap<String, String>,
    each: impl FnMut(Record) -> bool,
) -> Result<Unmapped, FileError> {
    if head.starts_with(b"BZh") {
        return read_archive(reader, pivots, each);
    }
    read_json(reader, pivots, each)
}

/// The JSON inside the bulk archive: the first member whose name ends in `.json`.
fn read_archive(
    reader: impl Read,
    pivots: &std::collections::HashMap<String, String>,
    each: impl FnMut(Record) -> bool,
) -> Result<Unmapped, FileError> {
    let broken = |e: std::io::Error| {
        FileError(FieldError::new(
            "file",
            format!("archive .tar.bz2 illisible (tronquée ?) : {e}"),
        ))
    };
    let mut archive = tar::Archive::new(bzip2::read::MultiBzDecoder::new(reader));
    for entry in archive.entries().map_err(broken)? {
        let entry = entry.map_err(broken)?;
        let is_json = entry
            .path()
            .map(|p| p.to_string_lossy().ends_with(".json"))
            .unwrap_or(false);
        if is_json {
            return read_json(entry, pivots, each);
        }
    }
    Err(FileError(FieldError::new(
        "file",
        "l'archive ne contient aucun fichier .json (…-data.gouv_local.json attendu)",
    )))
}

fn read_json(
    reader: impl Read,
    pivots: &std::collections::HashMap<String, String>,
    mut each: impl FnMut(Record) -> bool,
) -> Result<Unmapped, FileError> {
    let mut unmapped = Unmapped::default();
    let layout = super::records::Layout {
        key: "service",
        kind: None,
        bare_list: true,
        key_required: true,
        unreadable:
            "JSON de l'Annuaire illisible ({\"service\": […]} ou liste d'enregistrements attendue)",
    };
    super::records::each_record(reader, layout, |n, value| {
        let Value::Object(record) = value else {
            return each((
                n,
                Err(FieldError::new("service", "enregistrement qui n'est pas un objet").at_row(n)),
            ));
        };
        let types = pivot_types(&record);
        let Some(typology) = types.iter().find_map(|t| pivots.get(t)) else {
            unmapped.count(types.first().map(String::as_str).unwrap_or("(sans type)"));
            return true;
        };
        each((n, Ok(draft(&record, typology))))
    })?;
    Ok(unmapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk_record() -> Value {
        serde_json::json!({
            "id": "0a1b2c3d-0000-4000-8000-000000000001",
            "nom": "Mairie - Gex",
            "pivot": [{"type_service_local": "mairie", "code_insee_commune": ["01173"]}],
            "code_insee_commune": "01173",
            "adresse": [
                {"type_adresse": "Adresse postale", "numero_voie": "BP 1", "code_postal": "01170", "nom_commune": "Gex"},
                {"type_adresse": "Adresse", "numero_voie": "77 rue de Genève", "complement1": "",
                 "code_postal": "01170", "nom_commune": "Gex", "pays": "France",
                 "longitude": "6.0578", "latitude": "46.3333", "accessibilite": "ACC"}
            ],
            "telephone": [{"valeur": "04 50 42 63 00", "description": ""}],
            "adresse_courriel": ["accueil@gex.fr"],
            "site_internet": [{"libelle": "", "valeur": "https://www.gex.fr"}],
            "plage_ouverture": [{"nom_jour_debut": "Lundi", "nom_jour_fin": "Vendredi",
                "valeur_heure_debut_1": "08:30:00", "valeur_heure_fin_1": "12:00:00",
                "valeur_heure_debut_2": "13:30:00", "valeur_heure_fin_2": "17:00:00", "commentaire": ""}],
            "date_modification": "2026-11-30 10:00:00",
            "siret": "21010173700018"
        })
    }

    fn read_all(text: &[u8]) -> (Vec<Record>, Unmapped) {
        let taxonomy = Taxonomy::embedded().unwrap();
        let pivots = pivot_map(&taxonomy);
        let mut found = Vec::new();
        let unmapped = read(text, text, &pivots, |r| {
            found.push(r);
            true
        })
        .unwrap();
        (found, unmapped)
    }

    #[test]
    fn bulk_and_explore_shapes_read_alike() {
        let record = bulk_record();
        let bulk = serde_json::json!({"service": [record.clone(),
            {"id": "x", "nom": "Bureau", "pivot": [{"type_service_local": "inconnu_du_tout"}]}]});
        let (found, unmapped) = read_all(bulk.to_string().as_bytes());
        assert_eq!(found.len(), 1);
        assert_eq!(unmapped.by_type.get("inconnu_du_tout"), Some(&1));
        let draft = found[0].1.as_ref().unwrap().clone();
        assert_eq!(draft.typology, "mairie");
        assert_eq!(draft.address, "77 rue de Genève");
        assert_eq!(
            (draft.lon.as_str(), draft.lat.as_str()),
            ("6.0578", "46.3333")
        );
        assert_eq!(draft.wheelchair, "yes");
        assert_eq!(draft.phone, "04 50 42 63 00");
        assert_eq!(draft.website, "https://www.gex.fr");
        assert_eq!(
            draft.opening_hours_json,
            r#"[["Lundi","Vendredi",[["08:30:00","12:00:00"],["13:30:00","17:00:00"]]]]"#
        );
        // The explore API: nested fields as JSON text, in a plain list.
        let mut explore = record.as_object().unwrap().clone();
        for key in [
            "pivot",
            "adresse",
            "telephone",
            "adresse_courriel",
            "site_internet",
            "plage_ouverture",
        ] {
            let text = explore[key].to_string();
            explore.insert(key.into(), Value::String(text));
        }
        let (again, _) = read_all(
            Value::Array(vec![Value::Object(explore)])
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            format!("{:?}", again[0].1.as_ref().unwrap()),
            format!("{draft:?}")
        );
    }

    #[test]
    fn broken_files_are_named() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let pivots = pivot_map(&taxonomy);
        for text in [&b"{\"services\": []}"[..], b"{\"service\": [", b"42"] {
            let error = read(text, text, &pivots, |_| true).unwrap_err();
            assert_eq!(error.0.field, "file", "{:?}", error.0);
        }
    }
}
