//! The import formats: the project's CSV, SCDL « Équipements » CSV and GeoJSON, each read as a
//! stream of numbered [`Draft`]s pushed to a callback, so that no file is ever held whole in memory.

use std::io::Read;

use crate::error::FieldError;
use crate::services::Draft;

/// The contract header of the project's CSV, in this order; optional columns may follow.
pub const PROJECT_COLUMNS: [&str; 15] = [
    "source_ref",
    "typology",
    "name",
    "address",
    "postcode",
    "city",
    "insee_code",
    "lon",
    "lat",
    "phone",
    "email",
    "website",
    "opening_hours",
    "wheelchair",
    "description",
];

/// Optional columns of the project's CSV understood after the contract ones.
pub const PROJECT_OPTIONAL_COLUMNS: [&str; 3] =
    ["wheelchair_note", "opening_hours_json", "verified_at"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    ProjectCsv,
    ScdlCsv,
    GeoJson,
    /// The Annuaire de l'administration (DILA): chosen by `proximites harvest dila`, never
    /// guessed.
    Dila,
    /// data·inclusion structures: chosen by `proximites harvest data-inclusion`.
    DataInclusion,
    /// The INSEE Base permanente des équipements: chosen by `proximites harvest bpe`.
    Bpe,
}

impl Format {
    pub fn label(self) -> &'static str {
        match self {
            Format::ProjectCsv => "CSV Proximités",
            Format::ScdlCsv => "CSV SCDL « Équipements »",
            Format::GeoJson => "GeoJSON",
            Format::Dila => "Annuaire de l'administration (DILA)",
            Format::DataInclusion => "structures data·inclusion",
            Format::Bpe => "Base permanente des équipements (INSEE)",
        }
    }
}

/// One record read from a file: its line (CSV) or feature number (GeoJSON, from 1) and the draft,
/// or what made it unreadable.
pub type Record = (u64, Result<Draft, FieldError>);

/// A problem with the file as a whole (header, encoding, structure): nothing of it is imported.
#[derive(Debug)]
pub struct FileError(pub FieldError);

fn header_error(message: impl Into<String>) -> FileError {
    FileError(FieldError::new("header", message).at_row(1))
}

/// Guesses the format from the file name and, for CSV, from its header line.
pub fn detect(file_name: &str, head: &[u8]) -> Format {
    let lower = file_name.to_lowercase();
    if lower.ends_with(".geojson") || lower.ends_with(".json") {
        return Format::GeoJson;
    }
    let first_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let upper = String::from_utf8_lossy(first_line).to_uppercase();
    if upper.contains("EQUIP_TYPE") {
        Format::ScdlCsv
    } else {
        Format::ProjectCsv
    }
}

fn delimiter(head: &[u8]) -> u8 {
    let first_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let commas = first_line.iter().filter(|&&b| b == b',').count();
    let semicolons = first_line.iter().filter(|&&b| b == b';').count();
    if semicolons > commas {
        b';'
    } else {
        b','
    }
}

fn strip_bom(s: &str) -> &str {
    s.strip_prefix('\u{feff}').unwrap_or(s)
}

fn utf8_error(line: u64) -> FieldError {
    FieldError::new(
        "row",
        "ligne illisible : le fichier doit être encodé en UTF-8",
    )
    .at_row(line)
}

/// The line a record of a file starts on, as an editor numbers it (header = line 1, whatever
/// the line endings): the csv crate's own count is one short per line with CRLF endings, which
/// files from spreadsheets and data.gouv.fr often have. The reader records where each line
/// ending byte (`\r`, `\n`) is; a record asks for the line of its first byte that is not one.
struct Lines {
    endings: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<(u64, bool)>>>,
    passed: u64,
}

impl Lines {
    /// The line of the record the parser starts reading at `byte`: blank lines and the rest of
    /// the last record's line ending are skipped.
    fn line_at(&mut self, byte: u64) -> u64 {
        let mut endings = self
            .endings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut at = byte;
        while let Some(&(offset, newline)) = endings.front() {
            if offset <= at {
                if offset == at {
                    at += 1;
                }
                if newline {
                    self.passed += 1;
                }
                endings.pop_front();
            } else {
                break;
            }
        }
        self.passed + 1
    }
}

struct CountingReader<R> {
    inner: R,
    offset: u64,
    endings: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<(u64, bool)>>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut endings = self
            .endings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                endings.push_back((self.offset + i as u64, b == b'\n'));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// `reader`, counting its lines.
fn counted<R: Read>(reader: R) -> (CountingReader<R>, Lines) {
    let endings = std::sync::Arc::default();
    (
        CountingReader {
            inner: reader,
            offset: 0,
            endings: std::sync::Arc::clone(&endings),
        },
        Lines { endings, passed: 0 },
    )
}

/// Reads the project's CSV. The first 15 columns must be exactly [`PROJECT_COLUMNS`].
pub fn read_project_csv(
    reader: impl Read,
    head: &[u8],
    mut each: impl FnMut(Record) -> bool,
) -> Result<(), FileError> {
    let (reader, mut lines) = counted(reader);
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter(head))
        .flexible(true)
        .from_reader(reader);
    let headers = csv.headers().map_err(|_| {
        header_error("en-tête illisible : le fichier doit être un CSV encodé en UTF-8")
    })?;
    let names: Vec<String> = headers
        .iter()
        .map(|h| strip_bom(h).trim().to_owned())
        .collect();
    for (i, expected) in PROJECT_COLUMNS.iter().enumerate() {
        match names.get(i) {
            Some(found) if found == expected => {}
            Some(found) => {
                return Err(header_error(format!(
                    "colonne {} : « {found} » au lieu de « {expected} » (en-tête attendu : {})",
                    i + 1,
                    PROJECT_COLUMNS.join(",")
                )))
            }
            None => {
                return Err(header_error(format!(
                    "colonne {} « {expected} » manquante (en-tête attendu : {})",
                    i + 1,
                    PROJECT_COLUMNS.join(",")
                )))
            }
        }
    }
    let optional: Vec<(usize, &str)> = names
        .iter()
        .enumerate()
        .skip(PROJECT_COLUMNS.len())
        .filter_map(|(i, n)| {
            PROJECT_OPTIONAL_COLUMNS
                .iter()
                .find(|o| *o == n)
                .map(|o| (i, *o))
        })
        .collect();
    let mut record = csv::ByteRecord::new();
    loop {
        let line = lines.line_at(csv.position().byte());
        match csv.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Err(e) => {
                let line = e.position().map_or(line, |p| lines.line_at(p.byte()));
                if !each((
                    line,
                    Err(FieldError::new("row", format!("ligne CSV illisible : {e}")).at_row(line)),
                )) {
                    return Ok(());
                }
            }
            Ok(true) => {
                let line = record.position().map_or(line, |p| lines.line_at(p.byte()));
                let field = |i: usize| -> Result<String, ()> {
                    std::str::from_utf8(record.get(i).unwrap_or_default())
                        .map(str::to_owned)
                        .map_err(|_| ())
                };
                let draft = (|| {
                    let mut draft = Draft {
                        source_ref: field(0)?,
                        typology: field(1)?,
                        name: field(2)?,
                        address: field(3)?,
                        postcode: field(4)?,
                        city: field(5)?,
                        insee_code: field(6)?,
                        lon: field(7)?,
                        lat: field(8)?,
                        phone: field(9)?,
                        email: field(10)?,
                        website: field(11)?,
                        opening_hours: field(12)?,
                        wheelchair: field(13)?,
                        description: field(14)?,
                        ..Draft::default()
                    };
                    for &(i, name) in &optional {
                        let value = field(i)?;
                        match name {
                            "wheelchair_note" => draft.wheelchair_note = value,
                            "opening_hours_json" => draft.opening_hours_json = value,
                            _ => draft.verified_at = value,
                        }
                    }
                    Ok(draft)
                })()
                .map_err(|()| utf8_error(line));
                let draft = draft.and_then(|d| {
                    if record.len() == names.len() {
                        Ok(d)
                    } else {
                        // Usually an unquoted comma inside a value: say so rather than report the
                        // shifted fields one by one.
                        Err(FieldError::new(
                            "row",
                            format!(
                                "{} colonnes au lieu de {} : une valeur contenant une virgule doit être entre guillemets",
                                record.len(),
                                names.len()
                            ),
                        )
                        .at_row(line))
                    }
                });
                if !each((line, draft)) {
                    return Ok(());
                }
            }
        }
    }
}

/// SCDL « Équipements » columns and the draft fields they fill; the first name found wins.
const SCDL_COLUMNS: &[(&str, &[&str])] = &[
    ("source_ref", &["EQUIP_UID", "EQUIP_ID", "ID"]),
    ("typology", &["EQUIP_TYPE"]),
    ("name", &["EQUIP_NOM", "NOM"]),
    ("address", &["EQUIP_ADRESSE", "ADRESSE", "ADR"]),
    ("postcode", &["EQUIP_CP", "CP", "CODE_POSTAL"]),
    ("city", &["EQUIP_COMMUNE", "COMMUNE", "VILLE"]),
    (
        "insee_code",
        &["EQUIP_INSEE", "INSEE", "CODE_INSEE", "COM_INSEE"],
    ),
    ("lat", &["EQUIP_LAT", "LAT", "LATITUDE"]),
    (
        "lon",
        &["EQUIP_LONG", "EQUIP_LON", "LONG", "LON", "LONGITUDE"],
    ),
    ("phone", &["EQUIP_TEL", "TEL", "TELEPHONE"]),
    ("email", &["EQUIP_EMAIL", "EQUIP_MEL", "EMAIL", "COURRIEL"]),
    (
        "website",
        &["EQUIP_URL", "EQUIP_WEB", "EQUIP_SITE", "URL", "SITE_WEB"],
    ),
    (
        "opening_hours",
        &[
            "EQUIP_OUVERTURE",
            "EQUIP_HORAIRES",
            "HORAIRES",
            "OPENING_HOURS",
        ],
    ),
    (
        "wheelchair",
        &["EQUIP_ACCES_HANDI", "ACCES_HANDI", "ACCESSIBILITE"],
    ),
    ("description", &["EQUIP_DESCRIPTION", "DESCRIPTION"]),
];

fn set_field(draft: &mut Draft, field: &str, value: String) {
    match field {
        "source_ref" => draft.source_ref = value,
        "typology" => draft.typology = value,
        "name" => draft.name = value,
        "address" => draft.address = value,
        "postcode" => draft.postcode = value,
        "city" => draft.city = value,
        "insee_code" => draft.insee_code = value,
        "lat" => draft.lat = value,
        "lon" => draft.lon = value,
        "phone" => draft.phone = value,
        "email" => draft.email = value,
        "website" => draft.website = value,
        "opening_hours" => draft.opening_hours = value,
        "wheelchair" => draft.wheelchair = value,
        "wheelchair_note" => draft.wheelchair_note = value,
        "opening_hours_json" => draft.opening_hours_json = value,
        "verified_at" => draft.verified_at = value,
        "description" => draft.description = value,
        _ => {}
    }
}

/// Reads a SCDL « Équipements » CSV. Returns the publishing collectivité (`COLL_NOM` of the first
/// row), used as the source when none is given.
pub fn read_scdl_csv(
    reader: impl Read,
    head: &[u8],
    mut each: impl FnMut(Record) -> bool,
) -> Result<Option<String>, FileError> {
    let (reader, mut lines) = counted(reader);
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter(head))
        .flexible(true)
        .from_reader(reader);
    let headers = csv.headers().map_err(|_| {
        header_error("en-tête illisible : le fichier doit être un CSV encodé en UTF-8")
    })?;
    let names: Vec<String> = headers
        .iter()
        .map(|h| strip_bom(h).trim().to_uppercase())
        .collect();
    let mut columns = Vec::new();
    for (field, aliases) in SCDL_COLUMNS {
        if let Some(i) = aliases
            .iter()
            .find_map(|a| names.iter().position(|n| n == a))
        {
            columns.push((i, *field));
        } else if matches!(*field, "source_ref" | "typology" | "name" | "lat" | "lon") {
            return Err(header_error(format!(
                "colonne SCDL obligatoire manquante : {}",
                aliases[0]
            )));
        }
    }
    let collectivite = names.iter().position(|n| n == "COLL_NOM");
    let mut source = None;
    let mut record = csv::ByteRecord::new();
    loop {
        let line = lines.line_at(csv.position().byte());
        match csv.read_byte_record(&mut record) {
            Ok(false) => return Ok(source),
            Err(e) => {
                if !each((
                    line,
                    Err(FieldError::new("row", format!("ligne CSV illisible : {e}")).at_row(line)),
                )) {
                    return Ok(source);
                }
            }
            Ok(true) => {
                let line = record.position().map_or(line, |p| lines.line_at(p.byte()));
                let mut draft = Draft::default();
                let mut readable = true;
                for &(i, field) in &columns {
                    match std::str::from_utf8(record.get(i).unwrap_or_default()) {
                        Ok(value) => set_field(&mut draft, field, value.to_owned()),
                        Err(_) => readable = false,
                    }
                }
                if source.is_none() {
                    source = collectivite
                        .and_then(|i| std::str::from_utf8(record.get(i).unwrap_or_default()).ok())
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned);
                }
                let item = if readable {
                    Ok(draft)
                } else {
                    Err(utf8_error(line))
                };
                if !each((line, item)) {
                    return Ok(source);
                }
            }
        }
    }
}

/// Reads a GeoJSON FeatureCollection feature by feature (no whole-file buffering). Properties use
/// the project's column names; the Point geometry gives lon and lat.
pub fn read_geojson(
    reader: impl Read,
    mut each: impl FnMut(Record) -> bool,
) -> Result<(), FileError> {
    let layout = super::records::Layout {
        key: "features",
        kind: Some(("type", "FeatureCollection")),
        bare_list: false,
        key_required: false,
        unreadable: "GeoJSON illisible (FeatureCollection attendue)",
    };
    super::records::each_record(reader, layout, |n, feature| {
        let draft = feature_to_draft(feature).map_err(|m| FieldError::new("geometry", m).at_row(n));
        each((n, draft))
    })
}

fn feature_to_draft(feature: serde_json::Value) -> Result<Draft, String> {
    let serde_json::Value::Object(mut object) = feature else {
        return Err("élément de « features » qui n'est pas un objet Feature".into());
    };
    let mut draft = Draft::default();
    if let Some(serde_json::Value::Object(properties)) = object.remove("properties") {
        for (key, value) in properties {
            let text = match value {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            set_field(&mut draft, &key, text);
        }
    }
    match object.remove("geometry") {
        Some(serde_json::Value::Object(geometry)) => {
            if geometry.get("type").and_then(|t| t.as_str()) != Some("Point") {
                return Err("géométrie de type Point attendue".into());
            }
            let coordinates = geometry
                .get("coordinates")
                .and_then(|c| c.as_array())
                .filter(|c| c.len() >= 2)
                .ok_or("coordonnées de Point manquantes")?;
            draft.lon = coordinates[0].to_string();
            draft.lat = coordinates[1].to_string();
        }
        Some(serde_json::Value::Null) | None => {}
        Some(_) => return Err("géométrie illisible".into()),
    }
    Ok(draft)
}

/// A CSV file read row by row (delimiter guessed from its head), each with the line it starts
/// on as an editor numbers it: for readers that find their columns by header.
pub struct CsvRows<R: Read> {
    csv: csv::Reader<CountingReader<R>>,
    lines: Lines,
}

impl<R: Read> CsvRows<R> {
    pub fn new(reader: R, head: &[u8]) -> Self {
        let (reader, lines) = counted(reader);
        let csv = csv::ReaderBuilder::new()
            .delimiter(delimiter(head))
            .flexible(true)
            .from_reader(reader);
        Self { csv, lines }
    }

    /// The header's names, trimmed, without a byte-order mark.
    pub fn headers(&mut self) -> Result<Vec<String>, FieldError> {
        let headers = self.csv.headers().map_err(|_| {
            FieldError::new(
                "header",
                "en-tête illisible : le fichier doit être un CSV encodé en UTF-8",
            )
            .at_row(1)
        })?;
        Ok(headers
            .iter()
            .map(|h| strip_bom(h).trim().to_owned())
            .collect())
    }

    /// Hands each row to `each` with its line until it returns false; a row that cannot be
    /// read is handed as the error that says why.
    pub fn each(
        &mut self,
        mut each: impl FnMut(u64, Result<&csv::StringRecord, FieldError>) -> bool,
    ) {
        let mut record = csv::StringRecord::new();
        loop {
            let line = self.lines.line_at(self.csv.position().byte());
            let go_on = match self.csv.read_record(&mut record) {
                Ok(false) => return,
                Ok(true) => {
                    let line = record
                        .position()
                        .map_or(line, |p| self.lines.line_at(p.byte()));
                    each(line, Ok(&record))
                }
                Err(e) => {
                    let line = e.position().map_or(line, |p| self.lines.line_at(p.byte()));
                    let error = match e.kind() {
                        csv::ErrorKind::Utf8 { .. } => utf8_error(line),
                        _ => FieldError::new("row", format!("ligne CSV illisible : {e}"))
                            .at_row(line),
                    };
                    each(line, Err(error))
                }
            };
            if !go_on {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description";

    fn collect_csv(text: &[u8]) -> Result<Vec<Record>, FileError> {
        let mut out = Vec::new();
        read_project_csv(text, text, |r| {
            out.push(r);
            true
        })?;
        Ok(out)
    }

    #[test]
    fn reads_project_csv_with_line_numbers_and_optional_columns() {
        let text = format!("{HEADER},verified_at\na,mairie,Mairie,,,,63113,3.08,45.77,,,,,,,2026-01-02\n\"b\",mairie,\"Nom, avec virgule\",,,,63113,3.08,45.77,,,,,,,\n");
        let records = collect_csv(text.as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].0, 2);
        assert_eq!(records[0].1.as_ref().unwrap().verified_at, "2026-01-02");
        assert_eq!(records[1].0, 3);
        assert_eq!(records[1].1.as_ref().unwrap().name, "Nom, avec virgule");
    }

    #[test]
    fn lines_are_the_editor_s_whatever_the_line_endings() {
        // CRLF endings, a field over two lines, a blank line: each row's line as an editor
        // shows it (the header is line 1).
        let text = format!(
            "{HEADER}\r\na,mairie,Mairie,,,,63113,3.08,45.77,,,,,,\"deux\r\nlignes\"\r\n\r\nb,mairie,,,,,63113,3.08,45.77,,,,,,\r\nc,mairie,C,,,,63113,3.08,45.77,,,,,,\r\n"
        );
        let records = collect_csv(text.as_bytes()).unwrap();
        let lines: Vec<u64> = records.iter().map(|r| r.0).collect();
        assert_eq!(lines, [2, 5, 6]);
        let scdl = "EQUIP_UID;EQUIP_TYPE;EQUIP_NOM;EQUIP_LAT;EQUIP_LONG\r\nx1;Mairie;Mairie;45.77;3.08\r\nx2;Mairie;;45.77;3.08\r\n";
        let mut found = Vec::new();
        read_scdl_csv(scdl.as_bytes(), scdl.as_bytes(), |r| {
            found.push(r.0);
            true
        })
        .unwrap();
        assert_eq!(found, [2, 3]);
    }

    #[test]
    fn misspelt_and_missing_columns_are_named() {
        let bad = HEADER.replace("typology", "typologie");
        let error = collect_csv(bad.as_bytes()).unwrap_err().0;
        assert_eq!(error.row, Some(1));
        assert!(
            error
                .message
                .contains("colonne 2 : « typologie » au lieu de « typology »"),
            "{}",
            error.message
        );
        let short = HEADER.replace(",description", "");
        assert!(collect_csv(short.as_bytes())
            .unwrap_err()
            .0
            .message
            .contains("« description » manquante"));
    }

    #[test]
    fn non_utf8_rows_are_reported_with_their_line() {
        let mut text = format!("{HEADER}\n").into_bytes();
        text.extend_from_slice(b"a,mairie,Mairie de Ch\xe2tel,,,,63113,3.08,45.77,,,,,,\n");
        let records = collect_csv(&text).unwrap();
        let error = records[0].1.as_ref().unwrap_err();
        assert_eq!(error.row, Some(2));
        assert!(error.message.contains("UTF-8"));
    }

    #[test]
    fn rows_of_the_wrong_width_are_named() {
        let text = format!(
            "{HEADER}\na,mairie,Mairie,,,,63113,3.08,45.77,,,,Mo 08:00-12:00,14:00-17:00,,\n"
        );
        let records = collect_csv(text.as_bytes()).unwrap();
        let error = records[0].1.as_ref().unwrap_err();
        assert!(
            error.message.contains("16 colonnes au lieu de 15"),
            "{}",
            error.message
        );
    }

    #[test]
    fn reads_geojson_features_in_order() {
        let text = br#"{"type":"FeatureCollection","name":"x","features":[
            {"type":"Feature","properties":{"source_ref":"a","typology":"mairie","name":"M","insee_code":"63113"},"geometry":{"type":"Point","coordinates":[3.08,45.77]}},
            {"type":"Feature","properties":{"source_ref":"b"},"geometry":{"type":"LineString","coordinates":[[0,0],[1,1]]}}
        ]}"#;
        let mut out = Vec::new();
        read_geojson(&text[..], |r| {
            out.push(r);
            true
        })
        .unwrap();
        assert_eq!(out.len(), 2);
        let first = out[0].1.as_ref().unwrap();
        assert_eq!((first.lon.as_str(), first.lat.as_str()), ("3.08", "45.77"));
        assert_eq!(out[1].0, 2);
        assert!(out[1].1.is_err());
        assert!(read_geojson(&b"{\"type\":\"Feature\"}"[..], |_| true).is_err());
        assert!(read_geojson(&b"[1,2"[..], |_| true).is_err());
    }

    #[test]
    fn reads_scdl_with_semicolons() {
        let text = "COLL_NOM;COLL_SIRET;EQUIP_UID;EQUIP_THEME;EQUIP_TYPE;EQUIP_NOM;ADRESSE;CP;COMMUNE;EQUIP_LAT;EQUIP_LONG;EQUIP_OUVERTURE\nVille de Riom;21630300300011;P1;Sport;Piscine;Piscine Béatrice Hess;Rue;63200;Riom;45.89;3.11;Mo-Fr 10:00-20:00\n";
        assert_eq!(detect("x.csv", text.as_bytes()), Format::ScdlCsv);
        let mut out = Vec::new();
        let source = read_scdl_csv(text.as_bytes(), text.as_bytes(), |r| {
            out.push(r);
            true
        })
        .unwrap();
        assert_eq!(source.as_deref(), Some("Ville de Riom"));
        let draft = out[0].1.as_ref().unwrap();
        assert_eq!(
            (
                draft.typology.as_str(),
                draft.lon.as_str(),
                draft.lat.as_str()
            ),
            ("Piscine", "3.11", "45.89")
        );
    }
}
