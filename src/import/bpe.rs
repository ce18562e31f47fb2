//! The INSEE Base permanente des équipements (BPE): its CSV (`;`-separated, or the zip that
//! holds it) read by header, positions reprojected from the system its `EPSG` column names, and
//! each row matched to the entry an earlier year's harvest made of it, since the BPE has no
//! identifier that lasts from one year to the next.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::io::Read;

use serde::Serialize;

use super::formats::{FileError, Record};
use super::records::Unmapped;
use crate::error::FieldError;
use crate::export::crs::Crs;
use crate::services::Draft;
use crate::spatial::LonLat;
use crate::taxonomy::Taxonomy;
use crate::territory::{InseeCode, Locator};

/// The name BPE entries are signed with.
pub const SOURCE: &str = "INSEE Base permanente des équipements (BPE)";

/// How far a row may have moved since the year before and still be the same equipment: the
/// BPE geocodes again each year, mostly within a few metres.
pub const MATCH_TOLERANCE_M: f64 = 100.0;

/// How each row was matched to what an earlier harvest made.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Matching {
    /// Same SIRET and type as an entry harvested before.
    pub by_siret: u64,
    /// Same type and commune as an entry harvested before, within [`MATCH_TOLERANCE_M`].
    pub by_position: u64,
    /// Matched to nothing: new entries.
    pub new: u64,
    /// Published without coordinates (placed at their commune's centre, flagged).
    pub without_coordinates: u64,
}

/// What earlier harvests made, ready for matching: each key once, by its number; and the
/// numbers by commune and type, with where each entry stands.
#[derive(Default)]
pub struct Previous {
    /// Shared with `numbers`: one allocation per key of millions.
    keys: Vec<std::sync::Arc<str>>,
    numbers: HashMap<std::sync::Arc<str>, u32>,
    by_place: HashMap<String, HashMap<String, Vec<(u32, LonLat)>>>,
}

impl Previous {
    /// Adds an entry of the source (any status): its key, typology, commune and position.
    pub fn add(&mut self, source_ref: &str, typology: &str, insee_code: &str, at: LonLat) {
        let number = self.keys.len() as u32;
        let key: std::sync::Arc<str> = source_ref.into();
        self.numbers.insert(key.clone(), number);
        self.keys.push(key);
        let by_type = match self.by_place.get_mut(insee_code) {
            Some(by_type) => by_type,
            None => self.by_place.entry(insee_code.to_owned()).or_default(),
        };
        match by_type.get_mut(typology) {
            Some(entries) => entries.push((number, at)),
            None => {
                by_type.insert(typology.to_owned(), vec![(number, at)]);
            }
        }
    }

    fn number(&self, key: &str) -> Option<u32> {
        self.numbers.get(key).copied()
    }
}

/// The columns read, by their BPE names (any case).
struct Columns {
    typequ: usize,
    depcom: usize,
    optional: HashMap<&'static str, usize>,
}

/// One row, its fields found by name.
struct Row<'r> {
    record: &'r csv::StringRecord,
    columns: &'r Columns,
}

impl<'r> Row<'r> {
    fn cell(&self, index: usize) -> &'r str {
        self.record.get(index).unwrap_or("").trim()
    }

    /// The field `name` of [`OPTIONAL`], empty when the file has no such column.
    fn field(&self, name: &str) -> &'r str {
        self.columns
            .optional
            .get(name)
            .map_or("", |&index| self.cell(index))
    }
}

const OPTIONAL: [&str; 16] = [
    "NOMRS",
    "CNOMRS",
    "NUMVOIE",
    "INDREP",
    "TYPVOIE",
    "LIBVOIE",
    "CADR",
    "CODPOS",
    "LIBCOM",
    "SIRET",
    "LAMBERT_X",
    "LAMBERT_Y",
    "EPSG",
    "LONGITUDE",
    "LATITUDE",
    "DEP",
];

/// The BPE's abbreviations of street types (`TYPVOIE`), written out as an address reads.
const STREET_TYPES: [(&str, &str); 24] = [
    ("R", "Rue"),
    ("AV", "Avenue"),
    ("BD", "Boulevard"),
    ("PL", "Place"),
    ("CHE", "Chemin"),
    ("RTE", "Route"),
    ("IMP", "Impasse"),
    ("ALL", "Allée"),
    ("QUAI", "Quai"),
    ("QU", "Quai"),
    ("CRS", "Cours"),
    ("FG", "Faubourg"),
    ("LD", "Lieu-dit"),
    ("PAS", "Passage"),
    ("SQ", "Square"),
    ("HAM", "Hameau"),
    ("RLE", "Ruelle"),
    ("CITE", "Cité"),
    ("RES", "Résidence"),
    ("LOT", "Lotissement"),
    ("PRO", "Promenade"),
    ("SEN", "Sentier"),
    ("ESP", "Esplanade"),
    ("MTE", "Montée"),
];

/// The system coordinates are in when the file has no `EPSG` column: Lambert-93 in
/// metropolitan France, the UTM zone of each overseas département.
fn default_crs(insee_code: &str) -> Crs {
    match insee_code.get(..3) {
        Some("971" | "972" | "977" | "978") => Crs::Antilles,
        Some("973") => Crs::Guyane,
        Some("974") => Crs::Reunion,
        Some("976") => Crs::Mayotte,
        _ => Crs::Lambert93,
    }
}

/// The system an `EPSG` value names: the French systems, and the WGS84 UTM zones some years
/// use for the same territories (the same projection: their datums differ by centimetres).
fn crs_of(epsg: &str) -> Option<Crs> {
    match epsg.trim().trim_start_matches("EPSG:") {
        "2154" => Some(Crs::Lambert93),
        "5490" | "32620" | "4559" => Some(Crs::Antilles),
        "2972" | "32622" => Some(Crs::Guyane),
        "2975" | "32740" => Some(Crs::Reunion),
        "4471" | "32738" => Some(Crs::Mayotte),
        _ => None,
    }
}

/// A row's position in WGS84: from `LONGITUDE`/`LATITUDE` where the file has them, else from
/// `LAMBERT_X`/`LAMBERT_Y` in the row's system; `None` for a row published without.
fn position(row: &Row<'_>, insee_code: &str, line: u64) -> Result<Option<LonLat>, PositionError> {
    let number = |name: &str| -> Result<Option<f64>, PositionError> {
        let text = row.field(name);
        if text.is_empty() {
            return Ok(None);
        }
        text.replace(',', ".")
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| {
                PositionError::Row(FieldError::new(
                    name,
                    format!("« {text} » n'est pas un nombre"),
                ))
            })
    };
    if let (Some(lon), Some(lat)) = (number("LONGITUDE")?, number("LATITUDE")?) {
        return Ok(Some(LonLat::new(lon, lat)));
    }
    let (Some(x), Some(y)) = (number("LAMBERT_X")?, number("LAMBERT_Y")?) else {
        return Ok(None);
    };
    let epsg = row.field("EPSG");
    let crs = if epsg.is_empty() {
        default_crs(insee_code)
    } else {
        crs_of(epsg).ok_or_else(|| {
            PositionError::File(
                FieldError::new(
                    "EPSG",
                    format!(
                        "système de coordonnées inconnu « {epsg} » (attendus : 2154, 5490, 2972, 2975, 4471 ou leurs zones UTM WGS84)"
                    ),
                )
                .at_row(line),
            )
        })?
    };
    // Northings are millions of metres north of the equator (south: from 10,000 km below it),
    // eastings hundreds of thousands: a first column larger than the second is a swap.
    if crs == Crs::Lambert93 && x > y {
        return Err(PositionError::Row(FieldError::new(
            "LAMBERT_Y",
            format!("LAMBERT_X et LAMBERT_Y semblent inversées (X={x}, Y={y}) : X est l'abscisse, autour de 100 000 à 1 300 000 m en Lambert-93"),
        )));
    }
    let (lon, lat) = crs
        .unproject(x, y)
        .map_err(|message| PositionError::Row(FieldError::new("LAMBERT_X", message)))?;
    Ok(Some(LonLat::new(lon, lat)))
}

enum PositionError {
    /// The row cannot be read: it is rejected.
    Row(FieldError),
    /// The file cannot be: nothing of it is written.
    File(FieldError),
}

/// A coordinate to four decimals (about 10 m), as keys write it: from the rounded integer,
/// without the float formatting that costs a tenth of a re-harvest.
fn ten_thousandths(degrees: f64) -> String {
    let n = (degrees * 10_000.0).round() as i64;
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}.{:04}", n.abs() / 10_000, n.abs() % 10_000)
}

/// Assigns each row the key of the entry it continues, or a new one.
struct Matcher<'a> {
    previous: &'a Previous,
    /// Entries of earlier harvests a row of this file took, by number.
    taken: Vec<bool>,
    /// New keys given to rows of this file.
    given: HashSet<String>,
    matching: Matching,
}

impl<'a> Matcher<'a> {
    fn new(previous: &'a Previous) -> Self {
        Self {
            previous,
            taken: vec![false; previous.keys.len()],
            given: HashSet::default(),
            matching: Matching::default(),
        }
    }

    /// Takes the earlier entry `number`, when no row took it yet.
    fn take(&mut self, number: Option<u32>) -> Option<String> {
        let number = number? as usize;
        if self.taken[number] {
            return None;
        }
        self.taken[number] = true;
        Some(self.previous.keys[number].to_string())
    }

    fn key(
        &mut self,
        typequ: &str,
        typology: &str,
        insee_code: &str,
        siret: &str,
        at: LonLat,
        centre: Option<LonLat>,
    ) -> String {
        let siret_key = crate::services::validate::siret_digits(siret)
            .map(|siret| format!("siret:{siret}:{typequ}"));
        if let Some(key) = siret_key
            .as_deref()
            .and_then(|k| self.take(self.previous.number(k)))
        {
            self.matching.by_siret += 1;
            return key;
        }
        // A row where it was last year has the key it was given then (the first untaken of
        // `base`, `base:2`… as they were given in the file's order): found without a scan,
        // which keeps the re-harvest of an unchanged file linear and its matches exact.
        let base = format!(
            "{typequ}:{insee_code}:{}:{}",
            ten_thousandths(at.lon),
            ten_thousandths(at.lat)
        );
        let mut n = 1;
        let mut candidate = self.previous.number(&base);
        while candidate.is_some() {
            if let Some(key) = self.take(candidate) {
                self.matching.by_position += 1;
                return key;
            }
            n += 1;
            candidate = self.previous.number(&format!("{base}:{n}"));
        }
        // The nearest entry of the same type in the commune that no row took yet; an entry
        // placed at the commune's centre (its point was outside) is found from there.
        let near = self
            .previous
            .by_place
            .get(insee_code)
            .and_then(|by_type| by_type.get(typology))
            .and_then(|candidates| {
                candidates
                    .iter()
                    .filter(|(number, _)| !self.taken[*number as usize])
                    .map(|(number, p)| {
                        let d = p
                            .distance_m(at)
                            .min(centre.map_or(f64::INFINITY, |c| p.distance_m(c)));
                        (*number, d)
                    })
                    .filter(|(_, d)| *d <= MATCH_TOLERANCE_M)
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(number, _)| number)
            });
        if let Some(key) = self.take(near) {
            self.matching.by_position += 1;
            return key;
        }
        self.matching.new += 1;
        let base = siret_key.unwrap_or(base);
        let mut key = base.clone();
        let mut n = 1;
        while self.given.contains(&key) || self.previous.number(&key).is_some() {
            n += 1;
            key = format!("{base}:{n}");
        }
        self.given.insert(key.clone());
        key
    }
}

/// Reads a BPE file (CSV, or a zip holding one), pushing a draft for each row whose `TYPEQU` a
/// typology takes; the others are counted by type. Rows are numbered as an editor shows them
/// (header = line 1).
pub fn read(
    reader: Box<dyn Read + Send>,
    head: &[u8],
    taxonomy: &Taxonomy,
    locator: &Locator,
    previous: impl FnOnce() -> Result<Previous, FileError>,
    mut each: impl FnMut(Record) -> bool,
) -> Result<(Unmapped, Matching), FileError> {
    let mut reader = reader;
    if head.starts_with(b"PK\x03\x04") {
        loop {
            let entry = zip::read::read_zipfile_from_stream(&mut reader).map_err(|e| {
                FileError(FieldError::new(
                    "file",
                    format!("archive zip illisible : {e}"),
                ))
            })?;
            let Some(mut entry) = entry else {
                return Err(FileError(FieldError::new(
                    "file",
                    "l'archive zip ne contient aucun fichier .csv",
                )));
            };
            if entry.name().to_lowercase().ends_with(".csv") {
                let mut head = vec![0; 8192];
                let n = read_up_to(&mut entry, &mut head)?;
                head.truncate(n);
                let chained = std::io::Cursor::new(head.clone()).chain(entry);
                return read_csv(chained, &head, taxonomy, locator, previous, &mut each);
            }
        }
    }
    read_csv(reader, head, taxonomy, locator, previous, &mut each)
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize, FileError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                return Err(FileError(FieldError::new(
                    "file",
                    format!("archive zip illisible : {e}"),
                )))
            }
        }
    }
    Ok(filled)
}

/// A row read and placed, waiting for its key: the matching takes rows in the file's order,
/// on its own thread, while the next rows are read.
struct Placed<'t> {
    line: u64,
    typequ: String,
    typology: &'t crate::taxonomy::Typology,
    siret: String,
    at: LonLat,
    centre: Option<LonLat>,
    located: bool,
    /// Everything but its `source_ref`.
    draft: Draft,
}

/// What the reading thread hands the matching one. Rows are not boxed: an allocation per row,
/// freed on the other thread, cost more than the batch's larger slots.
#[allow(clippy::large_enum_variant)]
enum Parsed<'t> {
    Row(Placed<'t>),
    Rejected(u64, FieldError),
}

/// Rows handed from the reading thread to the matching one at a time.
const PARSED_BATCH: usize = 1_024;

/// Batches the reading thread may read ahead of the matching one: while the source's earlier
/// entries load (3 s for 2.5 million), it parses and reprojects half a million rows (about
/// 200 MB) instead of waiting.
const PARSED_AHEAD: usize = 512;

fn read_csv(
    reader: impl Read + Send,
    head: &[u8],
    taxonomy: &Taxonomy,
    locator: &Locator,
    previous: impl FnOnce() -> Result<Previous, FileError>,
    each: &mut impl FnMut(Record) -> bool,
) -> Result<(Unmapped, Matching), FileError> {
    let typologies: HashMap<&str, &crate::taxonomy::Typology> = taxonomy
        .typologies
        .iter()
        .filter(|t| !t.retired)
        .flat_map(|t| t.bpe.iter().map(move |code| (code.as_str(), t)))
        .collect();
    let mut rows = super::formats::CsvRows::new(reader, head);
    let names = rows.headers().map_err(FileError)?;
    let find = |name: &str| names.iter().position(|h| h.eq_ignore_ascii_case(name));
    let missing = |name: &str| {
        FileError(
            FieldError::new(
                "header",
                format!("colonne {name} absente : fichier de la BPE attendu (TYPEQU, DEPCOM, …)"),
            )
            .at_row(1),
        )
    };
    let columns = Columns {
        typequ: find("TYPEQU").ok_or_else(|| missing("TYPEQU"))?,
        depcom: find("DEPCOM").ok_or_else(|| missing("DEPCOM"))?,
        optional: OPTIONAL
            .iter()
            .filter_map(|name| find(name).map(|i| (*name, i)))
            .collect(),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (stop, columns, typologies) = (&stop, &columns, &typologies);
    std::thread::scope(|scope| {
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<Parsed<'_>>>(PARSED_AHEAD);
        let reading = scope.spawn(move || {
            let mut unmapped = Unmapped::default();
            let mut file_error = None;
            let mut batch = Vec::with_capacity(PARSED_BATCH);
            rows.each(|line, record| {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return false;
                }
                let parsed = match record {
                    Ok(record) => {
                        let row = Row { record, columns };
                        match place(&row, line, typologies, locator, &mut unmapped) {
                            Ok(Some(placed)) => Parsed::Row(placed),
                            Ok(None) => return true,
                            Err(PositionError::Row(error)) => {
                                Parsed::Rejected(line, error.at_row(line))
                            }
                            Err(PositionError::File(error)) => {
                                file_error = Some(error);
                                return false;
                            }
                        }
                    }
                    Err(error) => Parsed::Rejected(line, error),
                };
                batch.push(parsed);
                if batch.len() == PARSED_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(PARSED_BATCH));
                    if batches.send(full).is_err() {
                        return false;
                    }
                }
                true
            });
            if !batch.is_empty() {
                let _ = batches.send(batch);
            }
            (unmapped, file_error)
        });
        // The earlier entries are needed from the first key on: the reading thread has been
        // parsing and reprojecting rows while they loaded.
        let previous = match previous() {
            Ok(previous) => previous,
            Err(error) => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                drop(received);
                let _ = reading.join();
                return Err(error);
            }
        };
        let mut matcher = Matcher::new(&previous);
        'rows: for batch in received.iter() {
            for parsed in batch {
                let go_on = match parsed {
                    Parsed::Rejected(line, error) => each((line, Err(error))),
                    Parsed::Row(placed) => {
                        let Placed {
                            line,
                            typequ,
                            typology,
                            siret,
                            at,
                            centre,
                            located,
                            mut draft,
                        } = placed;
                        if !located {
                            matcher.matching.without_coordinates += 1;
                        }
                        draft.source_ref = matcher.key(
                            &typequ,
                            &typology.code,
                            &draft.insee_code,
                            &siret,
                            at,
                            centre,
                        );
                        each((line, Ok(draft)))
                    }
                };
                if !go_on {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    break 'rows;
                }
            }
        }
        // The reading thread stops at its next send, or at its next row.
        drop(received);
        let (unmapped, file_error) = reading
            .join()
            .map_err(|_| FileError(FieldError::new("file", "lecture interrompue")))?;
        match file_error {
            Some(error) => Err(FileError(error)),
            None => Ok((unmapped, matcher.matching)),
        }
    })
}

/// A row of a type some typology takes, read and placed (its key aside); `None` for a type no
/// typology takes, counted in `unmapped`.
fn place<'t>(
    row: &Row<'_>,
    line: u64,
    typologies: &HashMap<&str, &'t crate::taxonomy::Typology>,
    locator: &Locator,
    unmapped: &mut Unmapped,
) -> Result<Option<Placed<'t>>, PositionError> {
    let field = |name: &str| row.field(name);
    let typequ = row.cell(row.columns.typequ);
    let Some(typology) = typologies.get(typequ).copied() else {
        unmapped.count(if typequ.is_empty() {
            "(sans TYPEQU)"
        } else {
            typequ
        });
        return Ok(None);
    };
    let insee_code = row.cell(row.columns.depcom);
    let commune = InseeCode::parse(insee_code)
        .ok()
        .and_then(|code| locator.commune(&code));
    let point = position(row, insee_code, line)?;
    let centre = commune.map(|c| c.centroid);
    let at = point.or(centre).unwrap_or(LonLat::new(0.0, 0.0));
    let city = match field("LIBCOM") {
        "" => commune.map_or(String::new(), |c| c.name.clone()),
        name => name.to_owned(),
    };
    let name = match field("NOMRS") {
        "" => format!("{} — {city}", typology.label_fr),
        name => name.to_owned(),
    };
    let street_type = field("TYPVOIE");
    let street_type = STREET_TYPES
        .iter()
        .find(|(abbreviation, _)| abbreviation.eq_ignore_ascii_case(street_type))
        .map_or(street_type, |(_, full)| full);
    let address = [
        field("NUMVOIE"),
        field("INDREP"),
        street_type,
        field("LIBVOIE"),
    ]
    .iter()
    .filter(|part| !part.is_empty())
    .copied()
    .collect::<Vec<_>>()
    .join(" ");
    let address = match field("CADR") {
        "" => address,
        complement if address.is_empty() => complement.to_owned(),
        complement => format!("{address}, {complement}"),
    };
    let (lon, lat) = point.map_or((String::new(), String::new()), |p| {
        (format!("{:.7}", p.lon), format!("{:.7}", p.lat))
    });
    Ok(Some(Placed {
        line,
        typequ: typequ.to_owned(),
        typology,
        siret: field("SIRET").to_owned(),
        at,
        centre,
        located: point.is_some(),
        draft: Draft {
            typology: typology.code.clone(),
            name,
            address,
            postcode: field("CODPOS").to_owned(),
            city,
            insee_code: insee_code.to_owned(),
            lon,
            lat,
            siret: field("SIRET").to_owned(),
            ..Draft::default()
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_write_coordinates_to_four_decimals() {
        assert_eq!(ten_thousandths(3.00004), "3.0000");
        assert_eq!(ten_thousandths(-61.07019), "-61.0702");
        assert_eq!(ten_thousandths(-0.5), "-0.5000");
        assert_eq!(ten_thousandths(45.0), "45.0000");
    }

    #[test]
    fn systems_are_read_from_the_epsg_column_or_the_departement() {
        assert_eq!(crs_of("2154"), Some(Crs::Lambert93));
        assert_eq!(crs_of("EPSG:32740"), Some(Crs::Reunion));
        assert_eq!(
            crs_of("27572"),
            None,
            "Lambert II étendu is not a BPE system"
        );
        assert_eq!(default_crs("97411"), Crs::Reunion);
        assert_eq!(default_crs("97209"), Crs::Antilles);
        assert_eq!(default_crs("63113"), Crs::Lambert93);
    }

    #[test]
    fn a_row_keeps_the_key_of_the_entry_it_continues() {
        let at = LonLat::new(3.0, 45.0);
        let mut previous = Previous::default();
        previous.add("siret:12345678900012:D307", "pharmacie", "63113", at);
        previous.add("A129:63113:3.0000:45.0000", "mairie", "63113", at);
        let mut matcher = Matcher::new(&previous);
        let far = LonLat::new(3.1, 45.0);
        let near = LonLat::new(3.0005, 45.0);
        assert_eq!(
            matcher.key("D307", "pharmacie", "63113", "12345678900012", far, None),
            "siret:12345678900012:D307"
        );
        assert_eq!(
            matcher.key("A129", "mairie", "63113", "", near, None),
            "A129:63113:3.0000:45.0000"
        );
        // The same place again is another equipment: a new key, told apart.
        assert_eq!(
            matcher.key("A129", "mairie", "63113", "", at, None),
            "A129:63113:3.0000:45.0000:2"
        );
        assert_eq!(
            (
                matcher.matching.by_siret,
                matcher.matching.by_position,
                matcher.matching.new
            ),
            (1, 1, 1)
        );
    }
}
