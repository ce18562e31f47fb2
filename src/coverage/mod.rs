//! Territorial monitoring: for a territory and typologies or themes, the distance from each
//! commune's reference point to the nearest published entry anywhere in France, and the
//! indicators drawn from it, compared with the enclosing département, région and France.
//!
//! Distances are computed for every commune of France once per data version and kept, one
//! column per typology (12 bytes a commune): a territory's figures and its comparisons are then
//! gathered from those columns. A territory may also be computed alone, without comparisons,
//! which costs its own communes only.

pub mod page;
pub mod routes;
pub mod store;

use std::sync::{Arc, Mutex, Weak};

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use crate::error::{Error, FieldError};
use crate::lock;
use crate::search::engine::{SearchIndex, Territory};
use crate::search::spatial::{IdKey, SpatialIndex};
use crate::services::validate::COMMUNE_TOLERANCE_M;
use crate::spatial::{BBox, LonLat};
use crate::taxonomy::Taxonomy;
use crate::territory::{Commune, InseeCode, Locator};

/// Distance thresholds when none are asked for, in metres.
pub const DEFAULT_THRESHOLDS_M: [f64; 3] = [5_000.0, 10_000.0, 20_000.0];
/// At most this many thresholds.
pub const MAX_THRESHOLDS: usize = 10;
/// No threshold beyond this (metres): farther than metropolitan France is wide.
pub const MAX_THRESHOLD_M: f64 = 2_000_000.0;
/// How many communes of a gap list a report spells out; its totals count them all.
pub const GAPS_LISTED: usize = 100;
/// The typology whose entry in a commune is that commune's reference point.
pub const TOWN_HALL: &str = "mairie";
/// Reports kept per data version; past that the cache starts again empty.
const REPORTS_KEPT: usize = 64;
/// Reports larger than this (communes × subjects) are not kept: all of France by every
/// typology is a quarter of a gigabyte, while its columns, which are kept, make it fast again.
const LARGEST_REPORT_KEPT: usize = 500_000;
/// Communes per unit of parallel work: small enough to balance two threads, large enough
/// that a unit's queries share the tree nodes near them.
const CHUNK: usize = 512;

/// Where coverage is measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Area {
    /// Every commune of France.
    France,
    /// A commune, an EPCI, a département or a région.
    Territory(Territory),
    /// A list of communes, in the order given, without repeats.
    Communes(Vec<InseeCode>),
}

/// Why a territory could not be read: not written as one (400), or naming none (404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AreaError {
    Malformed(String),
    Unknown(String),
}

impl AreaError {
    pub fn message(&self) -> &str {
        match self {
            AreaError::Malformed(m) | AreaError::Unknown(m) => m,
        }
    }

    /// The API's answer: 400 naming the parameter, or 404 for a territory that does not exist.
    pub fn into_error(self, field: &str) -> Error {
        match self {
            AreaError::Malformed(m) => Error::InvalidParameters(vec![FieldError::new(field, m)]),
            AreaError::Unknown(m) => Error::not_found("territoire", m),
        }
    }
}

impl Area {
    /// `france`, `commune:63113`, `epci:246300701`, `departement:63`, `region:84` or
    /// `communes:63113,63300`, checked against the reference.
    pub fn parse(value: &str, locator: &Locator) -> Result<Area, AreaError> {
        let value = value.trim();
        if value == "france" {
            return Ok(Area::France);
        }
        let Some((kind, code)) = value.split_once(':') else {
            return Err(AreaError::Malformed(format!(
                "« {value} » : attendu france, commune:CODE, epci:SIREN, departement:CODE, \
                 region:CODE ou communes:CODE,CODE… / expected one of those"
            )));
        };
        let code = code.trim();
        let kind = kind.trim();
        if kind == "communes" {
            let mut seen = FxHashSet::default();
            let mut codes = Vec::new();
            let mut unknown = Vec::new();
            for part in code.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let insee = InseeCode::parse(part).map_err(AreaError::Malformed)?;
                if locator.commune(&insee).is_none() {
                    unknown.push(part.to_owned());
                } else if seen.insert(insee.clone()) {
                    codes.push(insee);
                }
            }
            if !unknown.is_empty() {
                return Err(AreaError::Unknown(format!(
                    "communes inconnues / unknown communes : {}",
                    unknown.join(", ")
                )));
            }
            if codes.is_empty() {
                return Err(AreaError::Malformed(
                    "liste de communes vide : communes:63113,63300… / empty list of communes"
                        .into(),
                ));
            }
            return Ok(Area::Communes(codes));
        }
        let digits = |n: std::ops::RangeInclusive<usize>| {
            n.contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
        };
        let well_formed = match kind {
            "commune" => InseeCode::parse(code).is_ok(),
            "epci" => digits(9..=9),
            "departement" => {
                (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
            }
            "region" => digits(1..=3),
            other => {
                return Err(AreaError::Malformed(format!(
                    "type de territoire inconnu « {other} » (france, commune, epci, departement, \
                     region, communes) / unknown kind of territory"
                )))
            }
        };
        if !well_formed {
            return Err(AreaError::Malformed(format!(
                "« {code} » n'est pas un code de {kind} valide / is not a valid {kind} code"
            )));
        }
        Territory::parse(value, locator)
            .map(Area::Territory)
            .map_err(|_| {
                AreaError::Unknown(format!(
                    "« {value} » (territoire inconnu / unknown territory)"
                ))
            })
    }

    /// The territory as it is written: `departement:63`, `communes:63113,63300`, `france`.
    pub fn id(&self) -> String {
        match self {
            Area::France => "france".into(),
            Area::Territory(Territory::Commune(code)) => format!("commune:{code}"),
            Area::Territory(Territory::Epci(siren)) => format!("epci:{siren}"),
            Area::Territory(Territory::Departement(code)) => format!("departement:{code}"),
            Area::Territory(Territory::Region(code)) => format!("region:{code}"),
            Area::Communes(codes) => format!(
                "communes:{}",
                codes
                    .iter()
                    .map(InseeCode::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// `france`, `commune`, `epci`, `departement`, `region` or `communes`.
    pub fn kind(&self) -> &'static str {
        match self {
            Area::France => "france",
            Area::Territory(Territory::Commune(_)) => "commune",
            Area::Territory(Territory::Epci(_)) => "epci",
            Area::Territory(Territory::Departement(_)) => "departement",
            Area::Territory(Territory::Region(_)) => "region",
            Area::Communes(_) => "communes",
        }
    }
}

/// What to compute: parsed and checked at the boundary (see [`Request::parse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub area: Area,
    /// Typology codes, each measured on its own.
    pub typologies: Vec<String>,
    /// Theme codes, each measured as the union of its typologies.
    pub themes: Vec<String>,
    /// Ascending, without repeats, in metres.
    pub thresholds_m: Vec<f64>,
    /// Communes farther than this are the gaps.
    pub gap_threshold_m: f64,
    /// With the enclosing département, région and France.
    pub compare: bool,
}

/// The raw inputs of a request, as the API and the command line receive them.
#[derive(Debug, Clone, Default)]
pub struct RawRequest<'a> {
    pub area: &'a str,
    /// Codes, each possibly a comma-separated list.
    pub typologies: Vec<&'a str>,
    pub themes: Vec<&'a str>,
    pub thresholds: Option<&'a str>,
    pub gap_threshold: Option<f64>,
    pub compare: bool,
}

impl Request {
    /// Checks every input and names each wrong one (`territory`, `typology`, `theme`,
    /// `thresholds`, `gap_threshold`); an unknown territory is a 404.
    pub fn parse(
        raw: &RawRequest<'_>,
        taxonomy: &Taxonomy,
        locator: &Locator,
    ) -> Result<Self, Error> {
        let mut errors = Vec::new();
        let area = match Area::parse(raw.area, locator) {
            Ok(area) => Some(area),
            Err(AreaError::Malformed(m)) => {
                errors.push(FieldError::new("territory", m));
                None
            }
            Err(unknown) => return Err(unknown.into_error("territory")),
        };
        let split = |values: &[&str]| -> Vec<String> {
            let mut seen = FxHashSet::default();
            values
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|c| !c.is_empty() && seen.insert(c.to_owned()))
                .map(str::to_owned)
                .collect()
        };
        let typologies = split(&raw.typologies);
        let themes = split(&raw.themes);
        for code in &typologies {
            if taxonomy.typology(code).is_none() {
                errors.push(FieldError::new(
                    "typology",
                    format!("typologie inconnue « {code} » / unknown typology"),
                ));
            }
        }
        for code in &themes {
            if taxonomy.theme(code).is_none() {
                errors.push(FieldError::new(
                    "theme",
                    format!("thème inconnu « {code} » / unknown theme"),
                ));
            }
        }
        if typologies.is_empty() && themes.is_empty() {
            errors.push(FieldError::new(
                "typology",
                "au moins une typologie ou un thème / at least one typology or theme",
            ));
        }
        let thresholds_m = match raw.thresholds {
            None => DEFAULT_THRESHOLDS_M.to_vec(),
            Some(list) => parse_thresholds(list).unwrap_or_else(|m| {
                errors.push(FieldError::new("thresholds", m));
                Vec::new()
            }),
        };
        let gap_threshold_m = match raw.gap_threshold {
            None => thresholds_m
                .last()
                .copied()
                .unwrap_or(DEFAULT_THRESHOLDS_M[2]),
            Some(m) if m.is_finite() && m > 0.0 && m <= MAX_THRESHOLD_M => m,
            Some(_) => {
                errors.push(FieldError::new(
                    "gap_threshold",
                    format!(
                        "des mètres, entre 0 et {MAX_THRESHOLD_M} / metres, between 0 and {MAX_THRESHOLD_M}"
                    ),
                ));
                0.0
            }
        };
        match area {
            Some(area) if errors.is_empty() => Ok(Request {
                area,
                typologies,
                themes,
                thresholds_m,
                gap_threshold_m,
                compare: raw.compare,
            }),
            _ => Err(Error::InvalidParameters(errors)),
        }
    }

    fn key(&self) -> String {
        format!(
            "{}|{}|{}|{:?}|{}|{}",
            self.area.id(),
            self.typologies.join(","),
            self.themes.join(","),
            self.thresholds_m,
            self.gap_threshold_m,
            self.compare
        )
    }
}

/// `5000,10000,20000`: metres, ascending once read, without repeats.
pub fn parse_thresholds(list: &str) -> Result<Vec<f64>, String> {
    let mut thresholds = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<f64>() {
            Ok(m) if m.is_finite() && m > 0.0 && m <= MAX_THRESHOLD_M => thresholds.push(m),
            _ => {
                return Err(format!(
                    "« {part} » : des mètres, entre 0 et {MAX_THRESHOLD_M} / metres, between 0 and {MAX_THRESHOLD_M}"
                ))
            }
        }
    }
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    if thresholds.is_empty() {
        return Err("au moins un seuil, en mètres / at least one threshold, in metres".into());
    }
    if thresholds.len() > MAX_THRESHOLDS {
        return Err(format!(
            "au plus {MAX_THRESHOLDS} seuils / at most {MAX_THRESHOLDS} thresholds"
        ));
    }
    Ok(thresholds)
}

/// An entry id in a report, written as the API writes ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryId(pub IdKey);

impl Serialize for EntryId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

/// Population beyond one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Beyond {
    pub threshold_m: f64,
    /// Inhabitants of the communes whose nearest entry is farther than the threshold.
    pub population: i64,
    /// Their share of the population (0 to 1); null without population or without any entry in France.
    pub share: Option<f64>,
}

/// The figures of one typology or theme over a set of communes.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Indicators {
    pub communes: usize,
    pub population: i64,
    /// Published entries whose commune is in the set.
    pub entries: u64,
    /// Entries per 10,000 inhabitants; null without population.
    pub entries_per_10k: Option<f64>,
    /// Communes with at least one entry.
    pub communes_with_entry: usize,
    /// Mean distance to the nearest entry, weighted by population, in metres; null without
    /// population or without any entry in France.
    pub mean_distance_m: Option<f64>,
    pub beyond: Vec<Beyond>,
    /// Communes farther than the gap threshold, and their inhabitants.
    pub gap_communes: usize,
    pub gap_population: i64,
}

/// A commune far from what it needs.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Gap {
    pub insee_code: String,
    pub name: String,
    pub population: i64,
    pub distance_m: Option<f64>,
}

/// The same figures over an enclosing territory.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Comparison {
    /// `departement`, `region` or `france`.
    pub level: &'static str,
    /// The département's or région's code; null for France.
    pub code: Option<String>,
    pub indicators: Indicators,
}

/// One typology or theme measured.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubjectReport {
    /// `typology` or `theme`.
    pub kind: &'static str,
    pub code: String,
    pub label_fr: String,
    pub label_en: String,
    /// True when France has no published entry of it: distances are then null.
    pub no_entry_in_france: bool,
    /// Said when distances are null.
    pub message: Option<String>,
    pub indicators: Indicators,
    /// The communes beyond the gap threshold, most inhabitants first (the first 100).
    pub gaps: Vec<Gap>,
    pub comparisons: Vec<Comparison>,
}

/// The nearest entry of one subject from one commune.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct NearestEntry {
    /// Metres from the commune's reference point; null when France has no such entry.
    pub distance_m: Option<f64>,
    #[schema(value_type = Option<String>)]
    pub id: Option<EntryId>,
}

/// One commune of the territory.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CommuneRow {
    pub insee_code: String,
    pub name: String,
    pub population: i64,
    /// `town_hall` (its published town hall) or `centroid` (none is published).
    pub reference: &'static str,
    pub reference_point: LonLat,
    /// One per subject, in the order of `subjects`.
    pub nearest: Vec<NearestEntry>,
}

/// The territory measured.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TerritorySummary {
    /// As written: `departement:63`.
    pub id: String,
    pub kind: &'static str,
    pub communes: usize,
    pub population: i64,
    /// Communes whose reference point is their town hall (the others: their centroid).
    pub town_halls: usize,
}

/// Coverage of a territory.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Report {
    pub territory: TerritorySummary,
    /// The data version the figures are computed at.
    pub data_version: Option<String>,
    pub thresholds_m: Vec<f64>,
    pub gap_threshold_m: f64,
    pub subjects: Vec<SubjectReport>,
    /// The territory's communes by INSEE code.
    pub communes: Vec<CommuneRow>,
}

/// Writes the report's rows as CSV: `insee_code,name,population,distance_m,nearest_id`, then
/// `reference`, then `typology` when several subjects are measured (a theme is `theme:CODE`).
pub fn write_csv<W: std::io::Write>(report: &Report, out: W) -> csv::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    let several = report.subjects.len() > 1;
    let mut header = vec![
        "insee_code",
        "name",
        "population",
        "distance_m",
        "nearest_id",
        "reference",
    ];
    if several {
        header.push("typology");
    }
    writer.write_record(&header)?;
    let subjects: Vec<String> = report
        .subjects
        .iter()
        .map(|s| match s.kind {
            "theme" => format!("theme:{}", s.code),
            _ => s.code.clone(),
        })
        .collect();
    for row in &report.communes {
        let population = row.population.to_string();
        for (nearest, subject) in row.nearest.iter().zip(&subjects) {
            let distance = nearest
                .distance_m
                .map(|d| format!("{d:.1}"))
                .unwrap_or_default();
            let id = nearest
                .id
                .map(|i| i.0.as_str().to_owned())
                .unwrap_or_default();
            let mut record = vec![
                row.insee_code.as_str(),
                row.name.as_str(),
                population.as_str(),
                distance.as_str(),
                id.as_str(),
                row.reference,
            ];
            if several {
                record.push(subject.as_str());
            }
            writer.write_record(&record)?;
        }
    }
    writer.flush()?;
    Ok(())
}

/// Writes the report to `path` as JSON or CSV, through a temporary file beside it renamed at
/// the end: a failure leaves no half-written file, and an older file stays whole.
pub fn write_file(report: &Report, path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut out = std::io::BufWriter::new(file.as_file_mut());
        if json {
            serde_json::to_writer_pretty(&mut out, report)?;
        } else {
            write_csv(report, &mut out)?;
        }
        std::io::Write::flush(&mut out)?;
    }
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| {
        anyhow::anyhow!(
            "écriture de {} impossible / cannot write: {}",
            path.display(),
            e.error
        )
    })?;
    Ok(())
}

/// One line per subject, for the terminal.
pub fn summary(report: &Report) -> String {
    let mut lines = vec![format!(
        "{} : {} communes, {} habitants / inhabitants ({} avec mairie publiée / with a published town hall)",
        report.territory.id, report.territory.communes, report.territory.population, report.territory.town_halls
    )];
    for subject in &report.subjects {
        let i = &subject.indicators;
        let mean = i
            .mean_distance_m
            .map_or("—".to_owned(), |m| format!("{:.1} km", m / 1000.0));
        lines.push(format!(
            "  {} {} : {} fiches / entries, {} communes sur / of {} en ont / have one, distance moyenne / mean {}, {} communes au-delà de / beyond {:.0} m ({} hab.){}",
            subject.kind,
            subject.code,
            i.entries,
            i.communes_with_entry,
            i.communes,
            mean,
            i.gap_communes,
            report.gap_threshold_m,
            i.gap_population,
            subject.message.as_deref().map(|m| format!(" — {m}")).unwrap_or_default()
        ));
    }
    lines.join("\n")
}

/// The nearest entry of one typology from one commune: `f32` metres keep a France-wide column
/// at 12 bytes a commune (a tenth of a metre at 1,000 km is still exact).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Nearest {
    distance_m: f32,
    slot: u32,
}

const NO_ENTRY: Nearest = Nearest {
    distance_m: f32::INFINITY,
    slot: u32::MAX,
};

/// One typology over a list of communes: the nearest entry from each, and the entries each has
/// (an arrondissement's entries count for it and for its municipality).
#[derive(Debug, Clone, Default)]
struct Column {
    nearest: Vec<Nearest>,
    counts: Vec<u32>,
}

/// A piece of work for one thread.
enum Unit<'a> {
    Nearest {
        typology: &'a str,
        numbers: &'a [u32],
        out: &'a mut [Nearest],
    },
    Count {
        typology: &'a str,
        out: &'a mut [u32],
    },
}

/// Every commune, made ready for coverage at one data version: its reference point, and the
/// columns computed so far.
///
/// Communes are numbered along a Z-order curve of their reference points, so that consecutive
/// numbers, queried by one thread in a row, walk the same tree nodes.
pub struct Frame {
    /// The index this frame was built from; held weakly so an index replaced by a newer one is
    /// freed at once.
    index: Weak<SearchIndex>,
    version: Option<String>,
    locator: Arc<Locator>,
    /// Position in `locator.communes()` of each commune, by number.
    positions: Vec<u32>,
    numbers_by_code: FxHashMap<[u8; 5], u32>,
    points: Vec<LonLat>,
    town_halls: Vec<Option<IdKey>>,
    /// The municipality (Paris, Lyon, Marseille) of each arrondissement, by number.
    parents: Vec<Option<u32>>,
    columns: Mutex<FxHashMap<Box<str>, Arc<Column>>>,
    reports: Mutex<FxHashMap<String, Arc<Report>>>,
    /// Figures of départements, régions and France by subject, thresholds and gap threshold.
    comparisons: Mutex<FxHashMap<String, Indicators>>,
}

/// The municipality of an arrondissement of Paris, Lyon or Marseille.
fn municipality_of(commune: &Commune) -> Option<&'static str> {
    if commune.kind != "ARM" {
        return None;
    }
    let code = commune.insee_code.as_str();
    if code.starts_with("751") {
        Some("75056")
    } else if code.starts_with("6938") {
        Some("69123")
    } else if code.starts_with("132") {
        Some("13055")
    } else {
        None
    }
}

/// The Z-order (Morton) key of a point, 16 bits a coordinate.
fn z_order(p: LonLat) -> u64 {
    let scale =
        |v: f64, min: f64, span: f64| (((v - min) / span).clamp(0.0, 1.0) * 65_535.0) as u64;
    let (x, y) = (scale(p.lon, -180.0, 360.0), scale(p.lat, -90.0, 180.0));
    let spread = |mut v: u64| {
        v = (v | (v << 8)) & 0x00FF_00FF;
        v = (v | (v << 4)) & 0x0F0F_0F0F;
        v = (v | (v << 2)) & 0x3333_3333;
        (v | (v << 1)) & 0x5555_5555
    };
    spread(x) | (spread(y) << 1)
}

fn code_key(code: &str) -> Option<[u8; 5]> {
    code.as_bytes().try_into().ok()
}

/// The figures of one commune for one subject.
#[derive(Clone, Copy)]
struct Cell {
    nearest: Nearest,
    count: u32,
}

/// Where a report reads its cells: France-wide columns (by commune number) or columns of the
/// territory alone (by position in its list).
struct Grid {
    columns: Vec<Arc<Column>>,
    /// Position of each commune number in the columns; `None` when they are France-wide.
    positions: Option<FxHashMap<u32, usize>>,
}

impl Grid {
    fn cell(&self, typologies: &[usize], number: u32) -> Cell {
        let at = match &self.positions {
            None => number as usize,
            Some(positions) => positions[&number],
        };
        let mut cell = Cell {
            nearest: NO_ENTRY,
            count: 0,
        };
        for &t in typologies {
            let column = &self.columns[t];
            let nearest = column.nearest[at];
            if nearest.distance_m < cell.nearest.distance_m {
                cell.nearest = nearest;
            }
            cell.count += column.counts[at];
        }
        cell
    }
}

/// One typology or theme, with the typologies it stands for (positions in the grid).
struct Subject {
    kind: &'static str,
    code: String,
    label_fr: String,
    label_en: String,
    members: Vec<usize>,
}

impl Frame {
    /// Reference points for every commune: its published town hall nearest to its centroid
    /// when it has one (a commune has one town hall, but data may hold a second), else its
    /// centroid.
    pub fn new(index: &Arc<SearchIndex>, locator: Arc<Locator>) -> Self {
        let communes: Vec<&Commune> = locator.communes().collect();
        let by_code: FxHashMap<&str, usize> = communes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.insee_code.as_str(), i))
            .collect();
        let mut halls: Vec<Option<(f64, IdKey, LonLat)>> = vec![None; communes.len()];
        for placement in index.spatial.entries(Some(&[TOWN_HALL])) {
            let Some(&i) = by_code.get(placement.insee_code()) else {
                continue;
            };
            let d = communes[i].centroid.distance_m(placement.location());
            let candidate = (d, placement.id(), placement.location());
            if halls[i].is_none_or(|(best, id, _)| (d, placement.id()) < (best, id)) {
                halls[i] = Some(candidate);
            }
        }
        let reference = |i: usize| halls[i].map_or(communes[i].centroid, |(_, _, p)| p);
        let mut positions: Vec<u32> = (0..communes.len() as u32).collect();
        positions.sort_by_cached_key(|&i| (z_order(reference(i as usize)), i));
        let numbers_by_code: FxHashMap<[u8; 5], u32> = positions
            .iter()
            .enumerate()
            .filter_map(|(n, &i)| {
                Some((
                    code_key(communes[i as usize].insee_code.as_str())?,
                    n as u32,
                ))
            })
            .collect();
        let parents = positions
            .iter()
            .map(|&i| {
                municipality_of(communes[i as usize])
                    .and_then(|code| numbers_by_code.get(&code_key(code)?).copied())
            })
            .collect();
        let points = positions.iter().map(|&i| reference(i as usize)).collect();
        let town_halls = positions
            .iter()
            .map(|&i| halls[i as usize].map(|(_, id, _)| id))
            .collect();
        drop(by_code);
        drop(communes);
        Self {
            index: Arc::downgrade(index),
            version: index.version.clone(),
            positions,
            numbers_by_code,
            points,
            town_halls,
            parents,
            columns: Mutex::default(),
            reports: Mutex::default(),
            comparisons: Mutex::default(),
            locator,
        }
    }

    fn communes(&self) -> Vec<&Commune> {
        let all: Vec<&Commune> = self.locator.communes().collect();
        self.positions.iter().map(|&i| all[i as usize]).collect()
    }

    /// The numbers of the area's communes, ascending; an arrondissement is left out when its
    /// municipality is in (its population and entries are the municipality's already).
    fn numbers(&self, area: &Area, communes: &[&Commune]) -> Vec<u32> {
        let listed: FxHashSet<&str> = match area {
            Area::Communes(codes) => codes.iter().map(InseeCode::as_str).collect(),
            _ => FxHashSet::default(),
        };
        let inside = |c: &Commune| match area {
            Area::France => true,
            Area::Territory(t) => t.contains(c),
            Area::Communes(_) => listed.contains(c.insee_code.as_str()),
        };
        let selected: Vec<bool> = communes.iter().map(|c| inside(c)).collect();
        (0..communes.len() as u32)
            .filter(|&n| {
                selected[n as usize]
                    && self.parents[n as usize].is_none_or(|p| !selected[p as usize])
            })
            .collect()
    }

    /// The nearest entry of each typology from each commune of `numbers`, and the entries of
    /// each (those in `count_in` only, when given: the territory's box), on every core.
    fn compute(
        &self,
        spatial: &SpatialIndex,
        numbers: &[u32],
        typologies: &[&str],
        count_in: Option<BBox>,
    ) -> Vec<Column> {
        let mut columns: Vec<Column> = typologies
            .iter()
            .map(|_| Column {
                nearest: vec![NO_ENTRY; numbers.len()],
                counts: vec![0; numbers.len()],
            })
            .collect();
        let mut units = Vec::new();
        for (column, &typology) in columns.iter_mut().zip(typologies) {
            units.push(Unit::Count {
                typology,
                out: &mut column.counts,
            });
            if spatial.count(Some(&[typology])) == 0 {
                continue;
            }
            for (out, numbers) in column.nearest.chunks_mut(CHUNK).zip(numbers.chunks(CHUNK)) {
                units.push(Unit::Nearest {
                    typology,
                    numbers,
                    out,
                });
            }
        }
        let position: FxHashMap<u32, u32> = if numbers.len() == self.points.len() {
            FxHashMap::default()
        } else {
            numbers
                .iter()
                .enumerate()
                .map(|(at, &n)| (n, at as u32))
                .collect()
        };
        let at = |n: u32| -> Option<usize> {
            if position.is_empty() {
                Some(n as usize)
            } else {
                position.get(&n).map(|&a| a as usize)
            }
        };
        let units = Mutex::new(units);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let Some(unit) = lock(&units).pop() else {
                        break;
                    };
                    match unit {
                        Unit::Nearest {
                            typology,
                            numbers,
                            out,
                        } => {
                            for (slot, &n) in out.iter_mut().zip(numbers) {
                                if let Some(hit) =
                                    spatial.nearest_of_typology(self.points[n as usize], typology)
                                {
                                    *slot = Nearest {
                                        distance_m: hit.distance_m as f32,
                                        slot: hit.slot,
                                    };
                                }
                            }
                        }
                        Unit::Count { typology, out } => {
                            let mut add = |placement: crate::search::spatial::Placement<'_>| {
                                let Some(n) = code_key(placement.insee_code())
                                    .and_then(|k| self.numbers_by_code.get(&k).copied())
                                else {
                                    return;
                                };
                                if let Some(a) = at(n) {
                                    out[a] += 1;
                                }
                                if let Some(a) = self.parents[n as usize].and_then(at) {
                                    out[a] += 1;
                                }
                            };
                            match count_in {
                                Some(bbox) => spatial
                                    .entries_in(bbox, Some(&[typology]))
                                    .for_each(&mut add),
                                None => spatial.entries(Some(&[typology])).for_each(&mut add),
                            }
                        }
                    }
                });
            }
        });
        columns
    }

    /// France-wide columns of `typologies`, computed once per data version.
    fn columns(&self, spatial: &SpatialIndex, typologies: &[&str]) -> Vec<Arc<Column>> {
        let missing: Vec<&str> = {
            let known = lock(&self.columns);
            typologies
                .iter()
                .copied()
                .filter(|t| !known.contains_key(*t))
                .collect()
        };
        if !missing.is_empty() {
            let all: Vec<u32> = (0..self.points.len() as u32).collect();
            let computed = self.compute(spatial, &all, &missing, None);
            let mut known = lock(&self.columns);
            for (typology, column) in missing.iter().zip(computed) {
                known.insert((*typology).into(), Arc::new(column));
            }
        }
        let known = lock(&self.columns);
        typologies.iter().map(|t| known[*t].clone()).collect()
    }

    /// The indicators of `members` over `numbers`, and its gaps when asked.
    #[allow(clippy::too_many_arguments)]
    fn indicators(
        &self,
        grid: &Grid,
        members: &[usize],
        numbers: &[u32],
        communes: &[&Commune],
        request: &Request,
        any_entry: bool,
        gaps: Option<&mut Vec<Gap>>,
    ) -> Indicators {
        let thresholds = &request.thresholds_m;
        let mut population = 0i64;
        let mut entries = 0u64;
        let mut with_entry = 0;
        let mut weighted = 0.0;
        let mut beyond = vec![0i64; thresholds.len()];
        let mut gap_communes = 0;
        let mut gap_population = 0;
        let mut found_gaps = Vec::new();
        for &n in numbers {
            let commune = communes[n as usize];
            let people = commune.population.max(0);
            let cell = grid.cell(members, n);
            population += people;
            entries += u64::from(cell.count);
            with_entry += usize::from(cell.count > 0);
            let d = f64::from(cell.nearest.distance_m);
            if !d.is_finite() {
                continue;
            }
            weighted += people as f64 * d;
            for (b, &t) in beyond.iter_mut().zip(thresholds) {
                if d > t {
                    *b += people;
                }
            }
            if d > request.gap_threshold_m {
                gap_communes += 1;
                gap_population += people;
                if gaps.is_some() {
                    found_gaps.push(Gap {
                        insee_code: commune.insee_code.to_string(),
                        name: commune.name.clone(),
                        population: people,
                        distance_m: Some(round(d)),
                    });
                }
            }
        }
        if let Some(gaps) = gaps {
            found_gaps.sort_by(|a, b| {
                b.population
                    .cmp(&a.population)
                    .then_with(|| a.insee_code.cmp(&b.insee_code))
            });
            found_gaps.truncate(GAPS_LISTED);
            *gaps = found_gaps;
        }
        let share =
            |people: i64| (any_entry && population > 0).then(|| people as f64 / population as f64);
        Indicators {
            communes: numbers.len(),
            population,
            entries,
            entries_per_10k: (population > 0)
                .then(|| entries as f64 * 10_000.0 / population as f64),
            communes_with_entry: with_entry,
            mean_distance_m: (any_entry && population > 0)
                .then(|| round(weighted / population as f64)),
            beyond: thresholds
                .iter()
                .zip(beyond)
                .map(|(&threshold_m, people)| Beyond {
                    threshold_m,
                    population: if any_entry { people } else { 0 },
                    share: share(people),
                })
                .collect(),
            gap_communes,
            gap_population,
        }
    }

    /// Computes the report of `request`. CPU work: call it off the async threads.
    fn report(
        &self,
        spatial: &SpatialIndex,
        taxonomy: &Taxonomy,
        request: &Request,
    ) -> Result<Report, Error> {
        let communes = self.communes();
        let numbers = self.numbers(&request.area, &communes);
        if numbers.is_empty() {
            return Err(Error::InvalidParameters(vec![FieldError::new(
                "territory",
                "ce territoire ne compte aucune commune / this territory has no commune",
            )]));
        }
        // Every typology asked for, on its own or through a theme, once.
        let mut typologies: Vec<&str> = Vec::new();
        let mut subjects = Vec::new();
        fn member<'t>(code: &'t str, typologies: &mut Vec<&'t str>) -> usize {
            match typologies.iter().position(|t| *t == code) {
                Some(at) => at,
                None => {
                    typologies.push(code);
                    typologies.len() - 1
                }
            }
        }
        for code in &request.typologies {
            let Some(typology) = taxonomy.typology(code) else {
                continue;
            };
            subjects.push(Subject {
                kind: "typology",
                code: typology.code.clone(),
                label_fr: typology.label_fr.clone(),
                label_en: typology.label_en.clone(),
                members: vec![member(&typology.code, &mut typologies)],
            });
        }
        for code in &request.themes {
            let Some(theme) = taxonomy.theme(code) else {
                continue;
            };
            let members = taxonomy
                .typologies
                .iter()
                .filter(|t| t.theme == theme.code)
                .map(|t| member(&t.code, &mut typologies))
                .collect();
            subjects.push(Subject {
                kind: "theme",
                code: theme.code.clone(),
                label_fr: theme.label_fr.clone(),
                label_en: theme.label_en.clone(),
                members,
            });
        }
        let france_wide = request.compare || request.area == Area::France;
        let grid = if france_wide {
            Grid {
                columns: self.columns(spatial, &typologies),
                positions: None,
            }
        } else {
            let bbox = numbers
                .iter()
                .map(|&n| communes[n as usize].bbox)
                .reduce(|a, b| {
                    BBox::new(
                        a.min_lon.min(b.min_lon),
                        a.min_lat.min(b.min_lat),
                        a.max_lon.max(b.max_lon),
                        a.max_lat.max(b.max_lat),
                    )
                })
                // Validation keeps every entry this close to its commune.
                .map(|b| b.expanded_m(COMMUNE_TOLERANCE_M + 100.0));
            // An arrondissement's entries count for its municipality: they are counted too.
            let mut counted = numbers.clone();
            counted.extend((0..self.points.len() as u32).filter(|&n| {
                self.parents[n as usize].is_some_and(|p| numbers.binary_search(&p).is_ok())
            }));
            counted.sort_unstable();
            counted.dedup();
            let columns = self.compute(spatial, &counted, &typologies, bbox);
            Grid {
                columns: columns.into_iter().map(Arc::new).collect(),
                positions: Some(counted.iter().enumerate().map(|(at, &n)| (n, at)).collect()),
            }
        };
        let comparisons = if request.compare {
            self.enclosing(&request.area, &numbers, &communes)
        } else {
            Vec::new()
        };
        let subject_reports = subjects
            .iter()
            .map(|subject| {
                let any_entry = subject
                    .members
                    .iter()
                    .any(|&t| spatial.count(Some(&[typologies[t]])) > 0);
                let mut gaps = Vec::new();
                let indicators = self.indicators(
                    &grid,
                    &subject.members,
                    &numbers,
                    &communes,
                    request,
                    any_entry,
                    Some(&mut gaps),
                );
                SubjectReport {
                    kind: subject.kind,
                    code: subject.code.clone(),
                    label_fr: subject.label_fr.clone(),
                    label_en: subject.label_en.clone(),
                    no_entry_in_france: !any_entry,
                    message: (!any_entry).then(|| {
                        "aucune fiche publiée en France : distances nulles / no published entry \
                         in France: distances are null"
                            .to_owned()
                    }),
                    indicators,
                    gaps,
                    comparisons: comparisons
                        .iter()
                        .map(|(level, code, numbers)| {
                            // Many territories share a région and France: their figures are
                            // computed once per data version.
                            let key = format!(
                                "{level}|{}|{}:{}|{:?}|{}",
                                code.as_deref().unwrap_or_default(),
                                subject.kind,
                                subject.code,
                                request.thresholds_m,
                                request.gap_threshold_m
                            );
                            let known = lock(&self.comparisons).get(&key).cloned();
                            let indicators = known.unwrap_or_else(|| {
                                let computed = self.indicators(
                                    &grid,
                                    &subject.members,
                                    numbers,
                                    &communes,
                                    request,
                                    any_entry,
                                    None,
                                );
                                lock(&self.comparisons).insert(key, computed.clone());
                                computed
                            });
                            Comparison {
                                level,
                                code: code.clone(),
                                indicators,
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        let mut rows: Vec<CommuneRow> = numbers
            .iter()
            .map(|&n| {
                let commune = communes[n as usize];
                CommuneRow {
                    insee_code: commune.insee_code.to_string(),
                    name: commune.name.clone(),
                    population: commune.population,
                    reference: if self.town_halls[n as usize].is_some() {
                        "town_hall"
                    } else {
                        "centroid"
                    },
                    reference_point: self.points[n as usize],
                    nearest: subjects
                        .iter()
                        .map(|s| {
                            let cell = grid.cell(&s.members, n);
                            let found = cell.nearest.slot != u32::MAX;
                            NearestEntry {
                                distance_m: found
                                    .then(|| round(f64::from(cell.nearest.distance_m))),
                                id: found.then(|| EntryId(spatial.at(cell.nearest.slot).id())),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.insee_code.cmp(&b.insee_code));
        Ok(Report {
            territory: TerritorySummary {
                id: request.area.id(),
                kind: request.area.kind(),
                communes: numbers.len(),
                population: numbers
                    .iter()
                    .map(|&n| communes[n as usize].population.max(0))
                    .sum(),
                town_halls: numbers
                    .iter()
                    .filter(|&&n| self.town_halls[n as usize].is_some())
                    .count(),
            },
            data_version: self.version.clone(),
            thresholds_m: request.thresholds_m.clone(),
            gap_threshold_m: request.gap_threshold_m,
            subjects: subject_reports,
            communes: rows,
        })
    }

    /// The enclosing département, région and France of an area, with their communes: a
    /// département's own région; for a smaller or custom area, those of the département
    /// where most of its inhabitants live.
    fn enclosing(
        &self,
        area: &Area,
        numbers: &[u32],
        communes: &[&Commune],
    ) -> Vec<(&'static str, Option<String>, Vec<u32>)> {
        let (departement, region) = match area {
            Area::France | Area::Territory(Territory::Region(_)) => (None, None),
            Area::Territory(Territory::Departement(_)) => (
                None,
                numbers
                    .first()
                    .map(|&n| communes[n as usize].region_code.clone()),
            ),
            _ => {
                let mut people: FxHashMap<&str, i64> = FxHashMap::default();
                for &n in numbers {
                    let c = communes[n as usize];
                    *people.entry(c.departement_code.as_str()).or_default() += c.population.max(0);
                }
                let first = numbers.first().map(|&n| communes[n as usize]);
                let most = people
                    .into_iter()
                    .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
                    .map(|(code, _)| code.to_owned());
                let region = most.as_deref().and_then(|d| {
                    numbers
                        .iter()
                        .map(|&n| communes[n as usize])
                        .find(|c| c.departement_code == d)
                        .or(first)
                        .map(|c| c.region_code.clone())
                });
                (most, region)
            }
        };
        let mut levels = Vec::new();
        if let Some(code) = departement {
            let area = Area::Territory(Territory::Departement(code.clone()));
            levels.push(("departement", Some(code), self.numbers(&area, communes)));
        }
        if let Some(code) = region {
            let area = Area::Territory(Territory::Region(code.clone()));
            levels.push(("region", Some(code), self.numbers(&area, communes)));
        }
        if *area != Area::France {
            levels.push(("france", None, self.numbers(&Area::France, communes)));
        }
        levels
    }
}

fn round(metres: f64) -> f64 {
    (metres * 10.0).round() / 10.0
}

/// The coverage service of a server: one [`Frame`] for the current data version, replaced when
/// the search index is.
#[derive(Default)]
pub struct Coverage {
    frame: Mutex<Option<Arc<Frame>>>,
}

impl Coverage {
    /// The frame of `index`, built when the index changed since the last call.
    pub fn frame(&self, index: &Arc<SearchIndex>, locator: &Arc<Locator>) -> Arc<Frame> {
        let mut current = lock(&self.frame);
        if let Some(frame) = &*current {
            if std::ptr::eq(frame.index.as_ptr(), Arc::as_ptr(index))
                && frame.version == index.version
            {
                return frame.clone();
            }
        }
        let frame = Arc::new(Frame::new(index, locator.clone()));
        *current = Some(frame.clone());
        frame
    }

    /// The report of `request` on `index`, from the cache when the same request was answered
    /// at this data version. CPU work (seconds for all of France): call it off the async threads.
    pub fn report(
        &self,
        index: &Arc<SearchIndex>,
        locator: &Arc<Locator>,
        taxonomy: &Taxonomy,
        request: &Request,
    ) -> Result<Arc<Report>, Error> {
        let frame = self.frame(index, locator);
        let key = request.key();
        if let Some(report) = lock(&frame.reports).get(&key) {
            return Ok(report.clone());
        }
        let report = Arc::new(frame.report(&index.spatial, taxonomy, request)?);
        if report.communes.len() * report.subjects.len() > LARGEST_REPORT_KEPT {
            return Ok(report);
        }
        let mut reports = lock(&frame.reports);
        if reports.len() >= REPORTS_KEPT {
            reports.clear();
        }
        reports.insert(key, report.clone());
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
