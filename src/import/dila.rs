//! The Annuaire de l'administration, « Base de données locales » (DILA, published daily on
//! data.gouv.fr): the bulk file as downloaded (a `.tar.bz2` holding `…-data.gouv_local.json`,
//! `{"service": [record, …]}`), that JSON extracted, or the JSON export of its explore API (a
//! list of records whose nested fields are JSON strings). Each record is read as a stream into a
//! [`Draft`] of the typology its « pivot » type maps to (`pivot` codes of `taxonomy/`); records
//! of unmapped types are counted by type, never an error.

use std::borrow::Cow;
use std::io::Read;

use serde_json::value::RawValue;
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
    draft.siret = match record.get("siret") {
        Some(Value::String(siret)) => siret.trim().to_owned(),
        Some(Value::Number(siret)) => siret.to_string(),
        _ => String::new(),
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

/// What earlier harvests stored, by the digest of each record as the source wrote it: the
/// source reference of the entry a record of that digest left unchanged, if any.
pub type Recognise<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads every record of `reader` (bulk object, explore list, or the `.tar.bz2` holding the
/// bulk JSON), pushing the mapped ones to `each`; returns what no typology takes. A record
/// `recognise` knows by its digest is pushed as [`Draft::known_by_digest`], unread.
pub fn read(
    reader: impl Read,
    head: &[u8],
    pivots: &std::collections::HashMap<String, String>,
    recognise: Recognise<'_>,
    each: impl FnMut(Record) -> bool,
) -> Result<Unmapped, FileError> {
    if head.starts_with(b"BZh") {
        return read_archive(reader, pivots, recognise, each);
    }
    read_json(reader, pivots, recognise, each)
}

/// The JSON inside the bulk archive: the first member whose name ends in `.json`.
fn read_archive(
    reader: impl Read,
    pivots: &std::collections::HashMap<String, String>,
    recognise: Recognise<'_>,
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
            return read_json(entry, pivots, recognise, each);
        }
    }
    Err(FileError(FieldError::new(
        "file",
        "l'archive ne contient aucun fichier .json (…-data.gouv_local.json attendu)",
    )))
}

/// The digest of a record as the source wrote it, with the crosswalk it is mapped through
/// (`crosswalk`, already hashed): the same digest means the same draft.
fn record_digest(crosswalk: u64, raw: &str) -> String {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write_u64(crosswalk);
    h.write(raw.as_bytes());
    format!("{:016x}", h.finish())
}

/// A digest of the crosswalk from pivot types to typologies, in a stable order.
fn crosswalk_digest(pivots: &std::collections::HashMap<String, String>) -> u64 {
    use std::hash::Hasher;
    let mut pairs: Vec<_> = pivots.iter().collect();
    pairs.sort_unstable();
    let mut h = rustc_hash::FxHasher::default();
    for (pivot, typology) in pairs {
        h.write(pivot.as_bytes());
        h.write_u8(0x1f);
        h.write(typology.as_bytes());
        h.write_u8(0x1e);
    }
    h.finish()
}

fn read_json(
    reader: impl Read,
    pivots: &std::collections::HashMap<String, String>,
    recognise: Recognise<'_>,
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
    let crosswalk = crosswalk_digest(pivots);
    // Each record is kept as the source wrote it, then read into a value unless an earlier
    // harvest stored its digest: a daily re-harvest of an unchanged file then reads no record.
    super::records::each_record(reader, layout, |n, raw: Box<RawValue>| {
        let digest = record_digest(crosswalk, raw.get());
        if let Some(source_ref) = recognise(&digest) {
            return each((n, Ok(Draft::known_by_digest(source_ref, digest))));
        }
        let record = match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Object(record)) => record,
            _ => {
                return each((
                    n,
                    Err(
                        FieldError::new("service", "enregistrement qui n'est pas un objet")
                            .at_row(n),
                    ),
                ))
            }
        };
        let types = pivot_types(&record);
        let Some(typology) = types.iter().find_map(|t| pivots.get(t)) else {
            unmapped.count(types.first().map(String::as_str).unwrap_or("(sans type)"));
            return true;
        };
        let mut draft = draft(&record, typology);
        draft.source_digest = Some(digest);
        each((n, Ok(draft)))
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
        let unmapped = read(text, text, &pivots, &|_| None, |r| {
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
        // The same draft, but for the digest of the record as written.
        let unwritten = |draft: &Draft| Draft {
            source_digest: None,
            ..draft.clone()
        };
        let explored = again[0].1.as_ref().unwrap();
        assert_eq!(
            format!("{:?}", unwritten(explored)),
            format!("{:?}", unwritten(&draft))
        );
        assert_ne!(explored.source_digest, draft.source_digest);
    }

    #[test]
    fn records_known_by_their_digest_are_not_read() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let pivots = pivot_map(&taxonomy);
        let text = serde_json::json!({"service": [bulk_record()]}).to_string();
        let (first, _) = read_all(text.as_bytes());
        let digest = first[0].1.as_ref().unwrap().source_digest.clone().unwrap();
        let mut found = Vec::new();
        let recognise = |seen: &str| (seen == digest).then(|| "gex-ref".to_owned());
        read(text.as_bytes(), text.as_bytes(), &pivots, &recognise, |r| {
            found.push(r);
            true
        })
        .unwrap();
        let draft = found[0].1.as_ref().unwrap();
        assert_eq!(
            (draft.source_ref.as_str(), draft.name.as_str()),
            ("gex-ref", "")
        );
        assert_eq!(draft.source_digest.as_deref(), Some(digest.as_str()));
        // Another crosswalk, another digest: the record is read again.
        let mut moved = pivots.clone();
        moved.insert("mairie".into(), "mairie-annexe".into());
        found.clear();
        read(text.as_bytes(), text.as_bytes(), &moved, &recognise, |r| {
            found.push(r);
            true
        })
        .unwrap();
        assert_eq!(found[0].1.as_ref().unwrap().name, "Mairie - Gex");
    }

    #[test]
    fn broken_files_are_named() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let pivots = pivot_map(&taxonomy);
        for text in [&b"{\"services\": []}"[..], b"{\"service\": [", b"42"] {
            let error = read(text, text, &pivots, &|_| None, |_| true).unwrap_err();
            assert_eq!(error.0.field, "file", "{:?}", error.0);
        }
    }
}
