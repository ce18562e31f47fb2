//! The directory in data·inclusion's schema 1.x (the national inclusion platform's, which feeds
//! DORA and regional guides): every published entry as a *structure*, and as a *service* where
//! its typology has one in `taxonomy/data-inclusion.toml`; in JSON and CSV, at
//! `GET /api/v1/export/data-inclusion/{structures,services}.{json,csv}` and through
//! `proximites export --format data-inclusion`. Entries whose required fields the schema cannot
//! take are left out and counted.

use std::borrow::Cow;
use std::io::Write;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::{store, Built, Lookup, Row, Selection};
use crate::admission::PublicBase;
use crate::error::{Error, Result};
use crate::http::Path;
use crate::import::Reference;
use crate::state::AppState;
use crate::taxonomy::data_inclusion::{DataInclusion, Zone};

/// The producer named in every record's `source` and `id`.
pub const SOURCE: &str = "proximites";

/// The two tables of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Structures,
    Services,
}

/// How a table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Csv,
}

/// Every file of the export, as named in URLs and in `proximites export`'s directory.
pub const FILES: [(Table, Encoding); 4] = [
    (Table::Structures, Encoding::Json),
    (Table::Services, Encoding::Json),
    (Table::Structures, Encoding::Csv),
    (Table::Services, Encoding::Csv),
];

pub fn file_name(table: Table, encoding: Encoding) -> &'static str {
    match (table, encoding) {
        (Table::Structures, Encoding::Json) => "structures.json",
        (Table::Services, Encoding::Json) => "services.json",
        (Table::Structures, Encoding::Csv) => "structures.csv",
        (Table::Services, Encoding::Csv) => "services.csv",
    }
}

fn parse_file(name: &str) -> Option<(Table, Encoding)> {
    FILES
        .into_iter()
        .find(|&(table, encoding)| file_name(table, encoding) == name)
}

/// The fields of a structure, in the schema's order (the CSV's columns).
pub const STRUCTURE_COLUMNS: &[&str] = &[
    "source",
    "id",
    "nom",
    "date_maj",
    "description",
    "lien_source",
    "siret",
    "commune",
    "code_postal",
    "code_insee",
    "adresse",
    "complement_adresse",
    "longitude",
    "latitude",
    "telephone",
    "courriel",
    "site_web",
    "horaires_accueil",
    "accessibilite_lieu",
    "reseaux_porteurs",
];

/// The fields of a service, in the schema's order (the CSV's columns).
pub const SERVICE_COLUMNS: &[&str] = &[
    "source",
    "structure_id",
    "id",
    "nom",
    "description",
    "lien_source",
    "date_maj",
    "type",
    "thematiques",
    "frais",
    "frais_precisions",
    "publics",
    "publics_precisions",
    "conditions_acces",
    "commune",
    "code_postal",
    "code_insee",
    "adresse",
    "complement_adresse",
    "longitude",
    "latitude",
    "telephone",
    "courriel",
    "modes_accueil",
    "zone_eligibilite",
    "contact_nom_prenom",
    "lien_mobilisation",
    "modes_mobilisation",
    "mobilisable_par",
    "mobilisation_precisions",
    "volume_horaire_hebdomadaire",
    "nombre_semaines",
    "horaires_accueil",
];

/// One field's value. Lists are JSON arrays, and comma-separated in CSV (as on
/// schema.data.gouv.fr); none of the référentiels' codes holds a comma.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'r> {
    Text(Cow<'r, str>),
    Number(f64),
    List(Vec<Cow<'r, str>>),
}

/// A record of one table: a value or nothing for each of its columns.
#[derive(Debug)]
pub struct Record<'r> {
    columns: &'static [&'static str],
    values: Vec<Option<Value<'r>>>,
}

impl<'r> Record<'r> {
    fn new(table: Table) -> Self {
        let columns = match table {
            Table::Structures => STRUCTURE_COLUMNS,
            Table::Services => SERVICE_COLUMNS,
        };
        Self {
            columns,
            values: vec![None; columns.len()],
        }
    }

    fn put(&mut self, column: &str, value: Value<'r>) {
        let index = self
            .columns
            .iter()
            .position(|c| *c == column)
            .unwrap_or_else(|| panic!("{column} is not a column"));
        self.values[index] = Some(value);
    }

    fn text(&mut self, column: &str, value: impl Into<Cow<'r, str>>) {
        self.put(column, Value::Text(value.into()));
    }

    /// `value` when it holds more than blanks.
    fn optional(&mut self, column: &str, value: Option<&'r str>) {
        if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
            self.text(column, v);
        }
    }

    fn list(&mut self, column: &str, values: impl IntoIterator<Item = Cow<'r, str>>) {
        let values: Vec<_> = values.into_iter().collect();
        if !values.is_empty() {
            self.put(column, Value::List(values));
        }
    }

    pub fn get(&self, column: &str) -> Option<&Value<'r>> {
        let index = self.columns.iter().position(|c| *c == column)?;
        self.values[index].as_ref()
    }
}

/// A name data·inclusion takes: between 3 and 150 characters.
fn acceptable_name(name: &str) -> bool {
    (3..=150).contains(&name.chars().count())
}

fn acceptable_description(description: &str) -> bool {
    (5..=10_000).contains(&description.chars().count())
}

/// The day of the last update, when the schema takes it (not in the future: a clock ahead of
/// the reader's is not one).
fn update_day<'r>(row: &Row<'r>, today: &str) -> Option<&'r str> {
    row.updated_at.get(..10).filter(|day| *day <= today)
}

fn identifier(row: &Row<'_>) -> String {
    format!("{SOURCE}--{}", row.id)
}

/// What a structure and its service share: where it is and how to reach it.
fn place<'r>(record: &mut Record<'r>, row: &Row<'r>, day: &'r str, base: &str) {
    record.text("source", SOURCE);
    record.text("date_maj", day);
    record.text("lien_source", format!("{base}/services/{}", row.id));
    record.text("code_insee", row.insee_code);
    record.put("longitude", Value::Number(row.lon));
    record.put("latitude", Value::Number(row.lat));
    record.optional("adresse", row.street);
    record.optional(
        "code_postal",
        row.postcode
            .filter(|p| p.len() == 5 && p.bytes().all(|b| b.is_ascii_digit())),
    );
    record.optional("commune", row.city);
    record.optional("courriel", row.email);
    record.optional("horaires_accueil", row.opening_hours);
    if let Some(phone) = first_phone(row.phones_json) {
        record.put("telephone", Value::Text(phone));
    }
}

/// The first stored number (E.164, one per service as the schema wants). Stored numbers are
/// `+` and digits: read without a JSON parser, which would allocate for every row of a
/// multi-million-row export; anything else goes through it.
fn first_phone(phones_json: &str) -> Option<Cow<'_, str>> {
    let inner = phones_json
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))?;
    if !inner.contains('\\') {
        return inner
            .split(',')
            .map(|p| p.trim().trim_matches('"'))
            .find(|p| !p.is_empty())
            .map(Cow::Borrowed);
    }
    serde_json::from_str::<Vec<String>>(phones_json)
        .ok()?
        .into_iter()
        .find(|p| !p.trim().is_empty())
        .map(Cow::Owned)
}

/// The name and update day of `row` when the schema takes them (every record needs both).
fn required<'r>(row: &Row<'r>, today: &str) -> Option<(&'r str, &'r str)> {
    let name = row.name.trim();
    acceptable_name(name).then_some(())?;
    Some((name, update_day(row, today)?))
}

/// The structure of `row`, or `None` when a required field cannot be given.
pub fn structure<'r>(
    row: &Row<'r>,
    crosswalk: &'r DataInclusion,
    base: &str,
    today: &str,
) -> Option<Record<'r>> {
    let (name, day) = required(row, today)?;
    let mut record = Record::new(Table::Structures);
    place(&mut record, row, day, base);
    record.text("id", identifier(row));
    record.text("nom", name);
    record.optional("site_web", row.website);
    if let Some(description) = row.description.filter(|d| acceptable_description(d)) {
        record.text("description", description);
    }
    if let Some(reseau) = crosswalk.of(row.typology).and_then(|c| c.reseau.as_deref()) {
        record.list("reseaux_porteurs", [Cow::Borrowed(reseau)]);
    }
    Some(record)
}

/// What an entry gives as a service.
pub enum AsService<'r> {
    /// Its typology has no service in data·inclusion.
    NotAService,
    /// A required field cannot be given: left out, counted.
    LeftOut,
    Service(Record<'r>),
}

/// The service of `row`, when its typology has one.
pub fn service<'r>(
    row: &Row<'r>,
    crosswalk: &'r DataInclusion,
    base: &str,
    today: &str,
) -> AsService<'r> {
    let Some(walk) = crosswalk.of(row.typology).filter(|c| c.has_service()) else {
        return AsService::NotAService;
    };
    // A service belongs to its structure: none without it.
    let Some((name, day)) = required(row, today) else {
        return AsService::LeftOut;
    };
    let mut record = Record::new(Table::Services);
    place(&mut record, row, day, base);
    let id = identifier(row);
    record.text("structure_id", id.clone());
    record.text("id", id);
    record.text("nom", name);
    // The schema requires a description: an entry without one is described by its typology
    // and place, which is what a reader of the directory learns from it.
    let description = match row.description.filter(|d| acceptable_description(d)) {
        Some(own) => Cow::Borrowed(own),
        None => {
            let label = row.typology_label().unwrap_or(row.typology);
            Cow::Owned(match row.city.map(str::trim).filter(|c| !c.is_empty()) {
                Some(city) => format!("{label}. Accueil du public à {city}."),
                None => format!("{label}. Accueil du public."),
            })
        }
    };
    record.put("description", Value::Text(description));
    if let Some(kind) = &walk.service_type {
        record.text("type", kind.as_str());
    }
    record.list(
        "thematiques",
        walk.thematiques.iter().map(|t| Cow::Borrowed(t.as_str())),
    );
    if let Some(frais) = &walk.frais {
        record.text("frais", frais.as_str());
    }
    if walk.publics.is_empty() {
        record.list("publics", [Cow::Borrowed("tous-publics")]);
    } else {
        record.list(
            "publics",
            walk.publics.iter().map(|p| Cow::Borrowed(p.as_str())),
        );
    }
    record.list("modes_accueil", [Cow::Borrowed("en-presentiel")]);
    let zone = match walk.zone {
        Some(Zone::Commune) => Some(row.insee_code),
        Some(Zone::Epci) => row.epci(),
        Some(Zone::Departement) => row.departement(),
        Some(Zone::France) => Some("france"),
        None => None,
    };
    if let Some(zone) = zone {
        record.list("zone_eligibilite", [Cow::Borrowed(zone)]);
    }
    let mut modes = vec![Cow::Borrowed("se-presenter")];
    if record.get("telephone").is_some() {
        modes.push(Cow::Borrowed("telephoner"));
    }
    if record.get("courriel").is_some() {
        modes.push(Cow::Borrowed("envoyer-un-courriel"));
    }
    record.list("modes_mobilisation", modes);
    record.list(
        "mobilisable_par",
        [Cow::Borrowed("usagers"), Cow::Borrowed("professionnels")],
    );
    AsService::Service(record)
}

/// Writes records one after the other in an encoding.
trait Sink {
    fn record(&mut self, record: &Record<'_>) -> anyhow::Result<()>;
    fn finish(&mut self) -> anyhow::Result<()>;
}

/// Bytes handed to the file once past this size: one write per 256 KiB.
const FLUSH_AT: usize = 256 * 1024;

struct JsonSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    first: bool,
}

impl<W: Write> JsonSink<W> {
    fn new(out: W) -> Self {
        let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
        buf.push(b'[');
        Self {
            out,
            buf,
            first: true,
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn record(&mut self, record: &Record<'_>) -> anyhow::Result<()> {
        let buf = &mut self.buf;
        if !self.first {
            buf.push(b',');
        }
        self.first = false;
        buf.extend_from_slice(b"\n{");
        let mut first_field = true;
        for (column, value) in record.columns.iter().zip(&record.values) {
            let Some(value) = value else { continue };
            if !first_field {
                buf.push(b',');
            }
            first_field = false;
            buf.push(b'"');
            buf.extend_from_slice(column.as_bytes());
            buf.extend_from_slice(b"\":");
            match value {
                Value::Text(text) => serde_json::to_writer(&mut *buf, text.as_ref())?,
                Value::Number(number) => serde_json::to_writer(&mut *buf, number)?,
                Value::List(items) => serde_json::to_writer(&mut *buf, items)?,
            }
        }
        buf.push(b'}');
        if buf.len() >= FLUSH_AT {
            self.out.write_all(buf)?;
            buf.clear();
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.buf.extend_from_slice(b"\n]\n");
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()?;
        Ok(())
    }
}

struct CsvSink<W: Write> {
    writer: csv::Writer<W>,
    cell: String,
}

impl<W: Write> CsvSink<W> {
    fn new(out: W, table: Table) -> anyhow::Result<Self> {
        let mut writer = csv::WriterBuilder::new()
            .buffer_capacity(FLUSH_AT)
            .from_writer(out);
        writer.write_record(Record::new(table).columns)?;
        Ok(Self {
            writer,
            cell: String::new(),
        })
    }
}

impl<W: Write> Sink for CsvSink<W> {
    fn record(&mut self, record: &Record<'_>) -> anyhow::Result<()> {
        use std::fmt::Write as _;
        for value in &record.values {
            self.cell.clear();
            match value {
                None => {}
                Some(Value::Text(text)) => self.cell.push_str(text),
                Some(Value::Number(number)) => {
                    let _ = write!(self.cell, "{number}");
                }
                Some(Value::List(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            self.cell.push(',');
                        }
                        self.cell.push_str(item);
                    }
                }
            }
            self.writer.write_field(&self.cell)?;
        }
        self.writer.write_record(None::<&[u8]>)?;
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.writer.flush()?;
        Ok(())
    }
}

/// Writes `table` of the published entries of `selection` in `encoding` to `out`.
pub fn write(
    handle: &mut super::store::Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    base: &str,
    (table, encoding): (Table, Encoding),
    out: &mut impl Write,
) -> anyhow::Result<Built> {
    let mut sink: Box<dyn Sink + '_> = match encoding {
        Encoding::Json => Box::new(JsonSink::new(&mut *out)),
        Encoding::Csv => Box::new(CsvSink::new(&mut *out, table)?),
    };
    let crosswalk = DataInclusion::embedded();
    let today = Utc::now().date_naive().to_string();
    let mut built = Built {
        written: 0,
        left_out: 0,
    };
    // Only the typologies with a service are read for services: SQL skips the others.
    let narrowed;
    let selection = match table {
        Table::Structures => selection,
        Table::Services => {
            narrowed = selection.clone().typologies(crosswalk.service_typologies());
            &narrowed
        }
    };
    store::scan(handle, lookup, selection, store::Order::Storage, |row| {
        let record = match table {
            Table::Structures => structure(row, crosswalk, base, &today),
            Table::Services => match service(row, crosswalk, base, &today) {
                AsService::NotAService => return Ok(true),
                AsService::LeftOut => None,
                AsService::Service(record) => Some(record),
            },
        };
        match record {
            Some(record) => {
                sink.record(&record)?;
                built.written += 1;
            }
            None => built.left_out += 1,
        }
        Ok(true)
    })?;
    sink.finish()?;
    Ok(built)
}

/// A short fingerprint of the public address, in cached file names: `lien_source` links start
/// with it, so a file made for one address is not served for another.
fn base_key(base: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(base.as_bytes())[..6])
}

/// data·inclusion's structures or services (schema 1.x), in JSON or CSV.
///
/// Structures: every published entry of the selection whose required fields the schema takes
/// (a name of 3 to 150 characters). Services: those whose typology has a data·inclusion
/// thématique (`taxonomy/data-inclusion.toml`). Entries left out are counted in `X-Left-Out`,
/// records written in `X-Written`. In CSV, lists are comma-separated.
#[utoipa::path(
    get,
    path = "/api/v1/export/data-inclusion/{file}",
    tag = "export",
    params(
        ("file" = String, Path, description = "structures.json, services.json, structures.csv ou services.csv"),
        ("theme" = Option<String>, Query, description = "Code de thème"),
        ("typology" = Option<String>, Query, description = "Codes de typologie, séparés par des virgules"),
        ("in" = Option<String>, Query, description = "Territoire : commune:CODE, epci:SIREN, departement:CODE ou region:CODE"),
    ),
    responses(
        (status = 200, description = "Structures ou services data·inclusion (JSON : application/json ; CSV : text/csv)",
            headers(("X-Written" = u64, description = "Enregistrements écrits"),
                    ("X-Left-Out" = u64, description = "Fiches que le schéma ne peut pas recevoir"))),
        (status = 400, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
    )
)]
pub(crate) async fn download(
    State(state): State<AppState>,
    PublicBase(base): PublicBase,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let product = parse_file(&file).ok_or_else(|| Error::not_found("export", &file))?;
    let pairs = super::routes::query_pairs(query.as_deref());
    let (selection, _) = super::routes::parse_selection(&state.reference, &pairs, None)?;
    let (body, length, built) = if selection.is_whole() {
        let version = state.live.settled_version();
        let key = format!("data-inclusion-{}-{file}", base_key(&base));
        let (path, built) = state
            .layers
            .whole(
                &state.store,
                &state.reference,
                &version,
                &key,
                move |handle, lookup, _about, target| {
                    write_file(
                        handle,
                        lookup,
                        &Selection::default(),
                        &base,
                        product,
                        target,
                    )
                },
            )
            .await?;
        let (body, length) = super::routes::file_body(&path, ()).await?;
        (body, length, built)
    } else {
        // Written to a file first: the connection is given back before a slow client reads.
        let temp = tempfile::Builder::new()
            .prefix(".selection-")
            .tempfile_in(std::env::temp_dir())
            .map_err(anyhow::Error::from)?
            .into_temp_path();
        let target = temp.to_path_buf();
        let reference = state.reference.clone();
        let built = store::with_connection(&state.store, move |handle| {
            let lookup = store::lookup(handle, &reference)?;
            write_file(handle, &lookup, &selection, &base, product, &target)
        })
        .await?;
        let path = temp.to_path_buf();
        let (body, length) = super::routes::file_body(&path, temp).await?;
        (body, length, built)
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(match product.1 {
            Encoding::Json => "application/json",
            Encoding::Csv => "text/csv; charset=utf-8",
        }),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"proximites-data-inclusion-{file}\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert("x-written", HeaderValue::from(built.written));
    headers.insert("x-left-out", HeaderValue::from(built.left_out));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(response)
}

/// Writes one file of the export to `target`.
fn write_file(
    handle: &mut super::store::Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    base: &str,
    product: (Table, Encoding),
    target: &std::path::Path,
) -> anyhow::Result<Built> {
    let mut out = std::io::BufWriter::with_capacity(FLUSH_AT, std::fs::File::create(target)?);
    let built = write(handle, lookup, selection, base, product, &mut out)?;
    out.flush()?;
    Ok(built)
}

/// `proximites export --format data-inclusion`: the four files into `dir` (created), each
/// replaced only once complete; returns the number of structures.
pub async fn export_to_dir(
    db_store: &crate::db::Store,
    reference: &Reference,
    selection: Selection,
    public_url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<u64> {
    let base = crate::directory::public_url(Some(public_url)).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("{} : création impossible ({e})", dir.display()))?;
    let reference = reference.clone();
    let dir = dir.to_owned();
    let structures = store::with_connection(db_store, move |handle| {
        let lookup = store::lookup(handle, &reference)?;
        let mut structures = 0;
        for product in FILES {
            let name = file_name(product.0, product.1);
            let temp = tempfile::Builder::new()
                .prefix(".proximites-export-")
                .tempfile_in(&dir)?;
            let mut out = std::io::BufWriter::with_capacity(FLUSH_AT, temp.as_file());
            let built = write(handle, &lookup, &selection, &base, product, &mut out)?;
            out.flush()?;
            drop(out);
            temp.as_file().sync_all()?;
            temp.persist(dir.join(name))?;
            eprintln!(
                "{name} : {} enregistrements, {} fiches laissées de côté",
                built.written, built.left_out
            );
            if product.0 == Table::Structures {
                structures = built.written;
            }
        }
        Ok(structures)
    })
    .await?;
    Ok(structures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_name_reads_back() {
        for (table, encoding) in FILES {
            assert_eq!(
                parse_file(file_name(table, encoding)),
                Some((table, encoding))
            );
        }
        assert_eq!(parse_file("services.geojson"), None);
    }

    #[test]
    fn the_first_number_is_read_without_a_parser_when_plain() {
        assert_eq!(
            first_phone(r#"["+33473000000", "+33473000001"]"#).as_deref(),
            Some("+33473000000")
        );
        assert_eq!(first_phone("[]"), None);
        assert_eq!(first_phone(r#"["+33\u0034"]"#).as_deref(), Some("+334"));
    }

    #[test]
    fn csv_cells_join_lists_with_commas() {
        let mut record = Record::new(Table::Services);
        record.text("id", "proximites--1");
        record.list(
            "thematiques",
            [
                Cow::Borrowed("sante--addictions"),
                Cow::Borrowed("famille--soutien-aidants"),
            ],
        );
        record.put("longitude", Value::Number(3.5));
        let mut out = Vec::new();
        {
            let mut sink = CsvSink::new(&mut out, Table::Services).unwrap();
            sink.record(&record).unwrap();
            sink.finish().unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        assert_eq!(headers.len(), SERVICE_COLUMNS.len());
        let row = reader.records().next().unwrap().unwrap();
        let cell = |name: &str| &row[headers.iter().position(|h| h == name).unwrap()];
        assert_eq!(
            cell("thematiques"),
            "sante--addictions,famille--soutien-aidants"
        );
        assert_eq!(cell("longitude"), "3.5");
        assert_eq!(cell("nom"), "");
    }
}
