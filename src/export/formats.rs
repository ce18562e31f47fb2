//! The download formats: GeoJSON (RFC 7946), GeoPackage 1.2 with its R-tree, FlatGeobuf with
//! its index, and CSV in the project's import format or the SCDL « Équipements » schema. Each
//! carries the licence and the sources: a foreign member in GeoJSON, `gpkg_contents` and
//! `gpkg_metadata` in GeoPackage, the header's description and metadata in FlatGeobuf, and for
//! CSV, which has no place for them, a sidecar text file (`FILE.licence.txt`) and the HTTP
//! `Link: rel="license"` header.

use std::ffi::{c_int, CString};
use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use libsqlite3_sys as ffi;

use super::crs::Crs;
use super::{store, Licence, Lookup, Row, Selection, FIELDS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    GeoJson,
    GeoPackage,
    FlatGeobuf,
    /// The project's import CSV.
    Csv,
    /// The SCDL « Équipements » CSV.
    Scdl,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::GeoJson,
        Format::GeoPackage,
        Format::FlatGeobuf,
        Format::Csv,
        Format::Scdl,
    ];

    pub fn parse(value: &str) -> Option<Format> {
        Some(match value.to_ascii_lowercase().as_str() {
            "geojson" | "json" => Format::GeoJson,
            "gpkg" | "geopackage" => Format::GeoPackage,
            "fgb" | "flatgeobuf" => Format::FlatGeobuf,
            "csv" => Format::Csv,
            "scdl" | "scdl.csv" => Format::Scdl,
            _ => return None,
        })
    }

    /// The file name ending, also the last part of the download URL.
    pub fn extension(self) -> &'static str {
        match self {
            Format::GeoJson => "geojson",
            Format::GeoPackage => "gpkg",
            Format::FlatGeobuf => "fgb",
            Format::Csv => "csv",
            Format::Scdl => "scdl.csv",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Format::GeoJson => "application/geo+json",
            Format::GeoPackage => "application/geopackage+sqlite3",
            Format::FlatGeobuf => "application/flatgeobuf",
            Format::Csv | Format::Scdl => "text/csv; charset=utf-8",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Format::GeoJson => "GeoJSON",
            Format::GeoPackage => "GeoPackage",
            Format::FlatGeobuf => "FlatGeobuf",
            Format::Csv => "CSV (format d'import Proximités)",
            Format::Scdl => "CSV SCDL « Équipements »",
        }
    }

    /// The CRSs the format may be written in: GeoJSON is WGS84 only (RFC 7946).
    pub fn accepts(self, crs: Crs) -> bool {
        match self {
            Format::GeoJson => crs == Crs::Crs84,
            _ => crs != Crs::Epsg4326,
        }
    }
}

/// What a download says about itself.
#[derive(Debug, Clone)]
pub struct About {
    pub title: String,
    pub licence: Licence,
    pub sources: Vec<String>,
    pub generated: DateTime<Utc>,
}

impl About {
    /// The licence and sources as plain text (FlatGeobuf description, CSV sidecar).
    pub fn text(&self) -> String {
        format!(
            "{}\nLicence : {} — {}\nSources : {}\nProduit le {} par Proximités.\n",
            self.title,
            self.licence.name,
            self.licence.url,
            self.sources.join(", "),
            self.generated
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "title": self.title,
            "licence": {"name": self.licence.name, "url": self.licence.url},
            "sources": self.sources,
            "generated": self.generated.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })
    }
}

fn write_number(out: &mut Vec<u8>, value: f64, decimals: usize) {
    // A bare `write!` into a Vec cannot fail.
    let _ = write!(out, "{value:.decimals$}");
}

fn write_string(out: &mut Vec<u8>, value: &str) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// One feature as GeoJSON, coordinates in `crs` (its axis order) with its precision.
pub fn feature_json(out: &mut Vec<u8>, row: &Row<'_>, crs: Crs) -> anyhow::Result<()> {
    let (x, y) = crs.project(row.lon, row.lat).map_err(anyhow::Error::msg)?;
    let decimals = crs.decimals();
    out.extend_from_slice(b"{\"type\":\"Feature\",\"id\":");
    write_string(out, row.id);
    out.extend_from_slice(b",\"geometry\":{\"type\":\"Point\",\"coordinates\":[");
    write_number(out, x, decimals);
    out.push(b',');
    write_number(out, y, decimals);
    out.extend_from_slice(b"]},\"properties\":{");
    for (i, field) in FIELDS.iter().enumerate().skip(1) {
        if i > 1 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":");
        match row.field(i) {
            Some(value) => write_string(out, &value),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"}}");
    Ok(())
}

/// Hands out the bytes written so far when they pass `FLUSH_AT`: one write per 256 KiB.
const FLUSH_AT: usize = 256 * 1024;

/// Streams a GeoJSON FeatureCollection of `selection` to `out`; returns the feature count.
pub fn write_geojson(
    handle: &mut super::store::Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    about: &About,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
    buf.extend_from_slice(b"{\"type\":\"FeatureCollection\",\"name\":");
    write_string(&mut buf, &about.title);
    // RFC 7946 foreign members: the licence and sources travel with the data.
    buf.extend_from_slice(b",\"licence\":");
    serde_json::to_writer(&mut buf, &about.json()["licence"])?;
    buf.extend_from_slice(b",\"sources\":");
    serde_json::to_writer(&mut buf, &about.sources)?;
    buf.extend_from_slice(b",\"generated\":");
    serde_json::to_writer(&mut buf, &about.json()["generated"])?;
    buf.extend_from_slice(b",\"features\":[\n");
    let mut count = 0u64;
    store::scan(handle, lookup, selection, store::Order::Storage, |row| {
        if count > 0 {
            buf.extend_from_slice(b",\n");
        }
        feature_json(&mut buf, row, Crs::Crs84)?;
        count += 1;
        if buf.len() >= FLUSH_AT {
            out.write_all(&buf)?;
            buf.clear();
        }
        Ok(true)
    })?;
    buf.extend_from_slice(b"\n]}\n");
    out.write_all(&buf)?;
    out.flush()?;
    Ok(count)
}

const SCDL_COLUMNS: [&str; 17] = [
    "COLL_NOM",
    "COLL_SIRET",
    "EQUIP_UID",
    "EQUIP_THEME",
    "EQUIP_TYPE",
    "EQUIP_NOM",
    "ADRESSE",
    "CODE_POSTAL",
    "COMMUNE",
    "COM_INSEE",
    "EQUIP_LAT",
    "EQUIP_LONG",
    "EQUIP_TEL",
    "EQUIP_EMAIL",
    "EQUIP_WEB",
    "EQUIP_OUVERTURE",
    "EQUIP_ACCES_HANDI",
];

/// Streams a CSV of `selection` to `out`: the project's import columns (the entry id as
/// `source_ref`, so that a re-import keeps entries apart) or SCDL's; projected coordinates, when
/// `crs` is projected, in two more columns `x` and `y` (WGS84 stays in its own columns, which
/// both schemas require).
pub fn write_csv(
    handle: &mut super::store::Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    scdl: bool,
    crs: Crs,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut csv = csv::WriterBuilder::new()
        .buffer_capacity(FLUSH_AT)
        .from_writer(out);
    let projected = crs.is_projected();
    let mut header: Vec<&str> = if scdl {
        SCDL_COLUMNS.to_vec()
    } else {
        let mut h = crate::import::formats::PROJECT_COLUMNS.to_vec();
        h.extend(["source", "updated_at"]);
        h
    };
    if projected {
        header.extend(["x", "y"]);
    }
    csv.write_record(&header)?;
    let mut count = 0u64;
    let mut record: Vec<String> = Vec::with_capacity(header.len());
    store::scan(handle, lookup, selection, store::Order::Storage, |row| {
        record.clear();
        let text = |v: Option<&str>| v.unwrap_or_default().to_owned();
        let lon = format!("{:.7}", row.lon);
        let lat = format!("{:.7}", row.lat);
        if scdl {
            record.extend([
                row.source().to_owned(),
                String::new(),
                row.id.to_owned(),
                text(row.theme()),
                row.typology.to_owned(),
                row.name.to_owned(),
                text(row.street),
                text(row.postcode),
                text(row.city),
                row.insee_code.to_owned(),
                lat,
                lon,
                row.phones(),
                text(row.email),
                text(row.website),
                text(row.opening_hours),
                row.wheelchair.to_owned(),
            ]);
        } else {
            record.extend([
                row.id.to_owned(),
                row.typology.to_owned(),
                row.name.to_owned(),
                text(row.street),
                text(row.postcode),
                text(row.city),
                row.insee_code.to_owned(),
                lon,
                lat,
                row.phones(),
                text(row.email),
                text(row.website),
                text(row.opening_hours),
                row.wheelchair.to_owned(),
                text(row.description),
                row.source().to_owned(),
                row.updated_text(),
            ]);
        }
        if projected {
            let (x, y) = crs.project(row.lon, row.lat).map_err(anyhow::Error::msg)?;
            record.extend([format!("{x:.2}"), format!("{y:.2}")]);
        }
        csv.write_record(&record)?;
        count += 1;
        Ok(true)
    })?;
    csv.flush()?;
    Ok(count)
}

/// A SQLite database of our own (the GeoPackage being written), closed when dropped.
struct Gpkg {
    db: *mut ffi::sqlite3,
}

impl Drop for Gpkg {
    fn drop(&mut self) {
        // SAFETY: opened by sqlite3_open_v2, closed once; statements are finalized before.
        unsafe {
            ffi::sqlite3_close(self.db);
        }
    }
}

impl Gpkg {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let name = CString::new(path.to_string_lossy().as_bytes())?;
        let mut db = std::ptr::null_mut();
        // SAFETY: a fresh connection to a new file, used from this thread only.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                name.as_ptr(),
                &mut db,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
                std::ptr::null(),
            )
        };
        let gpkg = Gpkg { db };
        if rc != ffi::SQLITE_OK {
            anyhow::bail!("création du GeoPackage : {}", gpkg.error());
        }
        Ok(gpkg)
    }

    fn error(&self) -> String {
        // SAFETY: a NUL-terminated string owned by the connection.
        unsafe {
            std::ffi::CStr::from_ptr(ffi::sqlite3_errmsg(self.db))
                .to_string_lossy()
                .into_owned()
        }
    }

    fn exec(&self, sql: &str) -> anyhow::Result<()> {
        let sql = CString::new(sql)?;
        // SAFETY: a live connection; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.db,
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            anyhow::bail!("écriture du GeoPackage : {}", self.error());
        }
        Ok(())
    }

    fn prepare(&self, sql: &str) -> anyhow::Result<GpkgStatement> {
        let sql = CString::new(sql)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: a live connection; `sql` is NUL-terminated.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(self.db, sql.as_ptr(), -1, &mut raw, std::ptr::null_mut())
        };
        if rc != ffi::SQLITE_OK || raw.is_null() {
            anyhow::bail!("écriture du GeoPackage : {}", self.error());
        }
        Ok(GpkgStatement { raw, db: self.db })
    }
}

struct GpkgStatement {
    raw: *mut ffi::sqlite3_stmt,
    db: *mut ffi::sqlite3,
}

impl Drop for GpkgStatement {
    fn drop(&mut self) {
        // SAFETY: prepared once, finalized once.
        unsafe {
            ffi::sqlite3_finalize(self.raw);
        }
    }
}

impl GpkgStatement {
    /// Binds `value` without a copy: the caller keeps it alive until `run` and `clear`.
    fn text(&self, i: c_int, value: Option<&str>) -> anyhow::Result<()> {
        // SAFETY: a live statement; SQLITE_STATIC is sound because every caller steps the
        // statement and clears its bindings while the value is still borrowed.
        let rc = unsafe {
            match value {
                Some(v) => ffi::sqlite3_bind_text(
                    self.raw,
                    i,
                    v.as_ptr().cast(),
                    c_int::try_from(v.len())?,
                    ffi::SQLITE_STATIC(),
                ),
                None => ffi::sqlite3_bind_null(self.raw, i),
            }
        };
        self.check(rc)
    }

    fn blob(&self, i: c_int, value: &[u8]) -> anyhow::Result<()> {
        // SAFETY: as `text`.
        let rc = unsafe {
            ffi::sqlite3_bind_blob(
                self.raw,
                i,
                value.as_ptr().cast(),
                c_int::try_from(value.len())?,
                ffi::SQLITE_TRANSIENT(),
            )
        };
        self.check(rc)
    }

    fn int(&self, i: c_int, value: i64) -> anyhow::Result<()> {
        // SAFETY: a live statement.
        self.check(unsafe { ffi::sqlite3_bind_int64(self.raw, i, value) })
    }

    /// Forgets the bound values (bound without a copy: they may not outlive their owner).
    fn clear(&self) -> anyhow::Result<()> {
        // SAFETY: a live statement.
        self.check(unsafe { ffi::sqlite3_clear_bindings(self.raw) })
    }

    fn run(&self) -> anyhow::Result<()> {
        // SAFETY: a live statement with its values bound.
        let rc = unsafe { ffi::sqlite3_step(self.raw) };
        if rc != ffi::SQLITE_DONE {
            anyhow::bail!("écriture du GeoPackage : {}", self.error());
        }
        // SAFETY: as above.
        self.check(unsafe { ffi::sqlite3_reset(self.raw) })
    }

    fn check(&self, rc: c_int) -> anyhow::Result<()> {
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            anyhow::bail!("écriture du GeoPackage : {}", self.error())
        }
    }

    fn error(&self) -> String {
        // SAFETY: a NUL-terminated string owned by the connection.
        unsafe {
            std::ffi::CStr::from_ptr(ffi::sqlite3_errmsg(self.db))
                .to_string_lossy()
                .into_owned()
        }
    }
}

fn sql_text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The GeoPackage table (and layer) name.
const GPKG_TABLE: &str = "services";

/// Writes a GeoPackage 1.2 of `selection` at `path` (a new file), with its R-tree spatial
/// index; returns the feature count.
pub fn write_gpkg(
    handle: &mut super::store::Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    about: &About,
    crs: Crs,
    path: &Path,
) -> anyhow::Result<u64> {
    // Two threads: this one reads and formats rows, the other writes them into the GeoPackage,
    // so that the export takes the time of the slower of the two rather than of both.
    let (batches, received) = std::sync::mpsc::sync_channel::<GpkgBatch>(4);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_gpkg_rows(received, about, crs, path));
        let mut batch = GpkgBatch::default();
        let read = store::scan(handle, lookup, selection, store::Order::Storage, |row| {
            let (x, y) = crs.project(row.lon, row.lat).map_err(anyhow::Error::msg)?;
            // Lambert-93 and UTM positions to the centimetre, as the other formats.
            let (x, y) = if crs.is_projected() {
                ((x * 100.0).round() / 100.0, (y * 100.0).round() / 100.0)
            } else {
                (x, y)
            };
            batch.push(row, x, y);
            if batch.points.len() == GPKG_BATCH {
                batches
                    .send(std::mem::take(&mut batch))
                    .map_err(|_| anyhow::anyhow!("écriture du GeoPackage interrompue"))?;
            }
            Ok(true)
        })
        .and_then(|()| {
            batches
                .send(batch)
                .map_err(|_| anyhow::anyhow!("écriture du GeoPackage interrompue"))
        });
        drop(batches);
        // The writer's own error, when it has one, says more than the reader's.
        let written = writer.join().map_err(|_| {
            anyhow::anyhow!("écriture du GeoPackage : le fil d'écriture a paniqué")
        })??;
        read.map(|()| written)
    })
}

/// Rows handed from the reading thread to the GeoPackage writer: fields as spans of one buffer.
#[derive(Default)]
struct GpkgBatch {
    text: String,
    /// `FIELDS.len()` spans per row; `None` for an empty field.
    fields: Vec<Option<(usize, usize)>>,
    points: Vec<(f64, f64)>,
}

const GPKG_BATCH: usize = 4_096;

impl GpkgBatch {
    fn push(&mut self, row: &Row<'_>, x: f64, y: f64) {
        for i in 0..FIELDS.len() {
            self.fields.push(row.field(i).map(|value| {
                let start = self.text.len();
                self.text.push_str(&value);
                (start, self.text.len())
            }));
        }
        self.points.push((x, y));
    }

    fn field(&self, row: usize, i: usize) -> Option<&str> {
        self.fields[row * FIELDS.len() + i].map(|(a, b)| &self.text[a..b])
    }
}

/// The writing half of [`write_gpkg`]: creates the GeoPackage, writes the rows it receives,
/// then the R-tree, the metadata and the triggers; returns the feature count.
fn write_gpkg_rows(
    received: std::sync::mpsc::Receiver<GpkgBatch>,
    about: &About,
    crs: Crs,
    path: &Path,
) -> anyhow::Result<u64> {
    let gpkg = Gpkg::open(path)?;
    let srs_id = crs.epsg();
    // The file is new and renamed into place only once complete: no journal needed.
    gpkg.exec(
        "PRAGMA application_id = 1196444487; PRAGMA user_version = 10200;
         PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA page_size = 4096;
         PRAGMA cache_size = -262144;",
    )?;
    gpkg.exec("BEGIN")?;
    gpkg.exec(
        "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY,
            organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL,
            definition TEXT NOT NULL, description TEXT);
         CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
            identifier TEXT UNIQUE, description TEXT DEFAULT '',
            last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
            min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
            CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
         CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
            geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL,
            m TINYINT NOT NULL, CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
            CONSTRAINT uk_gc_table_name UNIQUE (table_name),
            CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
            CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
         CREATE TABLE gpkg_extensions (table_name TEXT, column_name TEXT,
            extension_name TEXT NOT NULL, definition TEXT NOT NULL, scope TEXT NOT NULL,
            CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));
         CREATE TABLE gpkg_metadata (id INTEGER CONSTRAINT m_pk PRIMARY KEY ASC NOT NULL,
            md_scope TEXT NOT NULL DEFAULT 'dataset', md_standard_uri TEXT NOT NULL,
            mime_type TEXT NOT NULL DEFAULT 'text/xml', metadata TEXT NOT NULL DEFAULT '');
         CREATE TABLE gpkg_metadata_reference (reference_scope TEXT NOT NULL, table_name TEXT,
            column_name TEXT, row_id_value INTEGER,
            timestamp DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
            md_file_id INTEGER NOT NULL, md_parent_id INTEGER,
            CONSTRAINT crmr_mfi_fk FOREIGN KEY (md_file_id) REFERENCES gpkg_metadata(id),
            CONSTRAINT crmr_mpi_fk FOREIGN KEY (md_parent_id) REFERENCES gpkg_metadata(id));
         INSERT INTO gpkg_spatial_ref_sys VALUES
            ('Undefined cartesian SRS', -1, 'NONE', -1, 'undefined', 'undefined cartesian coordinate reference system'),
            ('Undefined geographic SRS', 0, 'NONE', 0, 'undefined', 'undefined geographic coordinate reference system');",
    )?;
    let add_srs = |crs: Crs| {
        gpkg.exec(&format!(
            "INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES ({}, {}, 'EPSG', {}, {}, {})",
            sql_text(crs.srs_name()),
            crs.epsg(),
            crs.epsg(),
            sql_text(&crs.wkt()),
            sql_text(crs.label())
        ))
    };
    add_srs(Crs::Epsg4326)?;
    add_srs(crs)?;
    let columns: String = FIELDS
        .iter()
        .map(|f| format!(", {f} TEXT"))
        .collect::<String>();
    gpkg.exec(&format!(
        "CREATE TABLE {GPKG_TABLE} (fid INTEGER PRIMARY KEY NOT NULL, geom POINT{columns});
         CREATE VIRTUAL TABLE rtree_{GPKG_TABLE}_geom USING rtree(id, minx, maxx, miny, maxy);"
    ))?;
    let placeholders: String = (0..FIELDS.len()).map(|i| format!(", ?{}", i + 3)).collect();
    let insert = gpkg.prepare(&format!(
        "INSERT INTO {GPKG_TABLE} (fid, geom, {}) VALUES (?1, ?2{placeholders})",
        FIELDS.join(", ")
    ))?;
    // The GeoPackage binary header (magic, version 0, little-endian without envelope, SRS id),
    // then a little-endian WKB point.
    let mut blob = Vec::with_capacity(29);
    blob.extend_from_slice(b"GP\x00\x01");
    blob.extend_from_slice(&i32::try_from(srs_id)?.to_le_bytes());
    blob.extend_from_slice(&[1, 1, 0, 0, 0]);
    let header_len = blob.len();
    let mut extent = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    let mut fid = 0i64;
    let mut points: Vec<(i64, f64, f64)> = Vec::new();
    for batch in received {
        for (k, &(x, y)) in batch.points.iter().enumerate() {
            fid += 1;
            extent = [
                extent[0].min(x),
                extent[1].min(y),
                extent[2].max(x),
                extent[3].max(y),
            ];
            blob.truncate(header_len);
            blob.extend_from_slice(&x.to_le_bytes());
            blob.extend_from_slice(&y.to_le_bytes());
            insert.int(1, fid)?;
            insert.blob(2, &blob)?;
            // The batch outlives the step: SQLite reads the values in place, no copy.
            for i in 0..FIELDS.len() {
                insert.text(c_int::try_from(i + 3)?, batch.field(k, i))?;
            }
            insert.run()?;
            insert.clear()?;
            points.push((fid, x, y));
        }
    }
    drop(insert);
    if fid > 0 {
        bulk_rtree(
            &gpkg,
            &format!("rtree_{GPKG_TABLE}_geom"),
            &mut points,
            extent,
        )?;
    }
    let extent = if fid == 0 { [0.0; 4] } else { extent };
    let description = about.text();
    gpkg.exec(&format!(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, min_x, min_y, max_x, max_y, srs_id)
            VALUES ('{GPKG_TABLE}', 'features', {}, {}, {}, {}, {}, {}, {srs_id});
         INSERT INTO gpkg_geometry_columns VALUES ('{GPKG_TABLE}', 'geom', 'POINT', {srs_id}, 0, 0);
         INSERT INTO gpkg_extensions VALUES
            ('{GPKG_TABLE}', 'geom', 'gpkg_rtree_index', 'http://www.geopackage.org/spec120/#extension_rtree', 'write-only'),
            ('gpkg_metadata', NULL, 'gpkg_metadata', 'http://www.geopackage.org/spec120/#extension_metadata', 'read-write'),
            ('gpkg_metadata_reference', NULL, 'gpkg_metadata', 'http://www.geopackage.org/spec120/#extension_metadata', 'read-write');
         INSERT INTO gpkg_metadata (id, md_scope, md_standard_uri, mime_type, metadata)
            VALUES (1, 'dataset', 'https://www.etalab.gouv.fr/licence-ouverte-open-licence/', 'application/json', {});
         INSERT INTO gpkg_metadata_reference (reference_scope, table_name, md_file_id)
            VALUES ('table', '{GPKG_TABLE}', 1);",
        sql_text(&about.title),
        sql_text(&description),
        extent[0],
        extent[1],
        extent[2],
        extent[3],
        sql_text(&about.json().to_string()),
    ))?;
    // The R-tree triggers of GeoPackage 1.2, so that edits made later in a GIS keep the index.
    let (t, c, i) = (GPKG_TABLE, "geom", "fid");
    let r = format!("rtree_{t}_{c}");
    let values = format!(
        "(NEW.{i}, ST_MinX(NEW.{c}), ST_MaxX(NEW.{c}), ST_MinY(NEW.{c}), ST_MaxY(NEW.{c}))"
    );
    gpkg.exec(&format!(
        "CREATE TRIGGER {r}_insert AFTER INSERT ON {t} WHEN (new.{c} NOT NULL AND NOT ST_IsEmpty(NEW.{c}))
         BEGIN INSERT OR REPLACE INTO {r} VALUES {values}; END;
         CREATE TRIGGER {r}_update1 AFTER UPDATE OF {c} ON {t} WHEN OLD.{i} = NEW.{i} AND (NEW.{c} NOTNULL AND NOT ST_IsEmpty(NEW.{c}))
         BEGIN INSERT OR REPLACE INTO {r} VALUES {values}; END;
         CREATE TRIGGER {r}_update2 AFTER UPDATE OF {c} ON {t} WHEN OLD.{i} = NEW.{i} AND (NEW.{c} IS NULL OR ST_IsEmpty(NEW.{c}))
         BEGIN DELETE FROM {r} WHERE id = OLD.{i}; END;
         CREATE TRIGGER {r}_update3 AFTER UPDATE OF {c} ON {t} WHEN OLD.{i} != NEW.{i} AND (NEW.{c} NOTNULL AND NOT ST_IsEmpty(NEW.{c}))
         BEGIN DELETE FROM {r} WHERE id = OLD.{i}; INSERT OR REPLACE INTO {r} VALUES {values}; END;
         CREATE TRIGGER {r}_update4 AFTER UPDATE ON {t} WHEN OLD.{i} != NEW.{i} AND (NEW.{c} IS NULL OR ST_IsEmpty(NEW.{c}))
         BEGIN DELETE FROM {r} WHERE id IN (OLD.{i}, NEW.{i}); END;
         CREATE TRIGGER {r}_delete AFTER DELETE ON {t} WHEN old.{c} NOT NULL
         BEGIN DELETE FROM {r} WHERE id = OLD.{i}; END;"
    ))?;
    gpkg.exec("COMMIT")?;
    Ok(u64::try_from(fid)?)
}

/// The largest `f32` not above `v`: SQLite's R-tree stores single precision, a box's minimum
/// rounded down and its maximum up, so that it still holds the exact point.
fn f32_down(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) <= v {
        f
    } else if f == 0.0 {
        -f32::from_bits(1)
    } else if f > 0.0 {
        f32::from_bits(f.to_bits() - 1)
    } else {
        f32::from_bits(f.to_bits() + 1)
    }
}

fn f32_up(v: f64) -> f32 {
    -f32_down(-v)
}

/// Fills the GeoPackage's R-tree `name` at once, the way GDAL's bulk loader does: the entries
/// sorted in Z-order and packed into full nodes, written straight into the virtual table's
/// shadow tables (`_node`, `_rowid`, `_parent`) in SQLite's node format — one row per node of
/// 167 entries instead of one R*-tree insertion per point, which costs tens of seconds for a
/// million. `rtreecheck()` accepts the result (see the tests).
fn bulk_rtree(
    gpkg: &Gpkg,
    name: &str,
    points: &mut [(i64, f64, f64)],
    extent: [f64; 4],
) -> anyhow::Result<()> {
    /// One cell: a point's fid or a child node's index, and its box (min x, max x, min y, max y).
    #[derive(Clone, Copy)]
    struct Cell {
        id: i64,
        b: [f32; 4],
    }
    // The node size SQLite chose at creation is the length of the empty root it wrote.
    let size_statement = gpkg.prepare(&format!(
        "SELECT length(data) FROM {name}_node WHERE nodeno = 1"
    ))?;
    // SAFETY: a live statement; the single row is read before it is finalized.
    let node_size = unsafe {
        anyhow::ensure!(
            ffi::sqlite3_step(size_statement.raw) == ffi::SQLITE_ROW,
            "R-tree sans racine"
        );
        usize::try_from(ffi::sqlite3_column_int64(size_statement.raw, 0))?
    };
    drop(size_statement);
    let max_cells = (node_size - 4) / 24;
    anyhow::ensure!(
        max_cells >= 2,
        "nœuds d'R-tree trop petits ({node_size} octets)"
    );

    let (w, h) = (
        (extent[2] - extent[0]).max(f64::MIN_POSITIVE),
        (extent[3] - extent[1]).max(f64::MIN_POSITIVE),
    );
    let cell = |v: f64, min: f64, size: f64| ((v - min) / size * 65_535.0) as u32;
    points.sort_unstable_by_key(|&(_, x, y)| z_order(cell(x, extent[0], w), cell(y, extent[1], h)));

    // Bottom-up: each level's cells packed into nodes, each node a cell of the level above.
    let mut nodes: Vec<(Vec<Cell>, u16)> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    let mut level: Vec<Cell> = points
        .iter()
        .map(|&(fid, x, y)| Cell {
            id: fid,
            b: [f32_down(x), f32_up(x), f32_down(y), f32_up(y)],
        })
        .collect();
    let mut height = 0u16;
    let root = loop {
        let mut above = Vec::with_capacity(level.len() / max_cells + 1);
        for chunk in level.chunks(max_cells) {
            let index = nodes.len();
            let mut b = [
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::INFINITY,
                f32::NEG_INFINITY,
            ];
            for c in chunk {
                b = [
                    b[0].min(c.b[0]),
                    b[1].max(c.b[1]),
                    b[2].min(c.b[2]),
                    b[3].max(c.b[3]),
                ];
                if height > 0 {
                    parent[usize::try_from(c.id)?] = index;
                }
            }
            nodes.push((chunk.to_vec(), height));
            parent.push(usize::MAX);
            above.push(Cell {
                id: i64::try_from(index)?,
                b,
            });
        }
        if above.len() == 1 {
            break nodes.len() - 1;
        }
        level = above;
        height += 1;
    };
    // The root is node 1, as SQLite expects; the others follow.
    let mut number = vec![0i64; nodes.len()];
    let mut next = 2;
    for (i, n) in number.iter_mut().enumerate() {
        if i == root {
            *n = 1;
        } else {
            *n = next;
            next += 1;
        }
    }
    gpkg.exec(&format!(
        "DELETE FROM {name}_node; DELETE FROM {name}_rowid; DELETE FROM {name}_parent;"
    ))?;
    let insert_node = gpkg.prepare(&format!(
        "INSERT INTO {name}_node (nodeno, data) VALUES (?1, ?2)"
    ))?;
    let insert_rowid = gpkg.prepare(&format!(
        "INSERT INTO {name}_rowid (rowid, nodeno) VALUES (?1, ?2)"
    ))?;
    let insert_parent = gpkg.prepare(&format!(
        "INSERT INTO {name}_parent (nodeno, parentnode) VALUES (?1, ?2)"
    ))?;
    let mut data = vec![0u8; node_size];
    for (i, (cells, node_height)) in nodes.iter().enumerate() {
        data.fill(0);
        if i == root {
            data[0..2].copy_from_slice(&height.to_be_bytes());
        }
        data[2..4].copy_from_slice(&u16::try_from(cells.len())?.to_be_bytes());
        for (k, c) in cells.iter().enumerate() {
            let at = 4 + k * 24;
            let id = if *node_height == 0 {
                c.id
            } else {
                number[usize::try_from(c.id)?]
            };
            data[at..at + 8].copy_from_slice(&id.to_be_bytes());
            for (d, v) in c.b.iter().enumerate() {
                data[at + 8 + d * 4..at + 12 + d * 4].copy_from_slice(&v.to_be_bytes());
            }
            if *node_height == 0 {
                insert_rowid.int(1, c.id)?;
                insert_rowid.int(2, number[i])?;
                insert_rowid.run()?;
            }
        }
        insert_node.int(1, number[i])?;
        insert_node.blob(2, &data)?;
        insert_node.run()?;
        if i != root {
            insert_parent.int(1, number[i])?;
            insert_parent.int(2, number[parent[i]])?;
            insert_parent.run()?;
        }
    }
    Ok(())
}

/// Interleaves the bits of two 16-bit cell numbers: the position on a Z-order curve.
fn z_order(x: u32, y: u32) -> u64 {
    let spread = |v: u32| {
        let mut v = u64::from(v & 0xffff);
        v = (v | (v << 8)) & 0x00ff_00ff;
        v = (v | (v << 4)) & 0x0f0f_0f0f;
        v = (v | (v << 2)) & 0x3333_3333;
        (v | (v << 1)) & 0x5555_5555
    };
    spread(x) | (spread(y) << 1)
}

/// A point for geozero, already in the output CRS.
struct XY(f64, f64);

impl geozero::GeozeroGeometry for XY {
    fn process_geom<P: geozero::GeomProcessor>(
        &self,
        processor: &mut P,
    ) -> geozero::error::Result<()> {
        processor.point_begin(0)?;
        processor.xy(self.0, self.1, 0)?;
        processor.point_end(0)
    }
}

/// Writes a FlatGeobuf of `selection` to `out`, with its packed Hilbert R-tree index;
/// returns the feature count.
pub fn write_fgb(
    handle: &mut super::store::Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    about: &About,
    crs: Crs,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    use flatgeobuf::{ColumnType, FgbCrs, FgbWriter, FgbWriterOptions, GeometryType};
    use geozero::{ColumnValue, PropertyProcessor};

    let wkt = crs.wkt();
    let description = about.text();
    let metadata = about.json().to_string();
    let mut fgb = FgbWriter::create_with_options(
        GPKG_TABLE,
        GeometryType::Point,
        FgbWriterOptions {
            write_index: true,
            detect_type: false,
            promote_to_multi: false,
            crs: FgbCrs {
                org: Some("EPSG"),
                code: i32::try_from(crs.epsg())?,
                name: Some(crs.srs_name()),
                wkt: Some(&wkt),
                ..Default::default()
            },
            title: Some(&about.title),
            description: Some(&description),
            metadata: Some(&metadata),
            ..Default::default()
        },
    )?;
    for field in FIELDS {
        fgb.add_column(field, ColumnType::String, |_, column| {
            column.nullable = true;
        });
    }
    let mut count = 0u64;
    store::scan(handle, lookup, selection, store::Order::Storage, |row| {
        let (x, y) = crs.project(row.lon, row.lat).map_err(anyhow::Error::msg)?;
        let mut failed = None;
        fgb.add_feature_geom(XY(x, y), |feature| {
            for (i, field) in FIELDS.iter().enumerate() {
                if let Some(value) = row.field(i) {
                    if let Err(e) = feature.property(i, field, &ColumnValue::String(&value)) {
                        failed = Some(e);
                        return;
                    }
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        count += 1;
        Ok(true)
    })?;
    fgb.write(out)?;
    Ok(count)
}

/// Writes `selection` in `format` to `path`, through a temporary file beside it renamed into
/// place once complete (a failure leaves no half-written file); returns the feature count.
/// CSV also gets its licence sidecar `PATH.licence.txt`.
#[allow(clippy::too_many_arguments)]
pub fn write_file(
    handle: &mut super::store::Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    about: &About,
    format: Format,
    crs: Crs,
    path: &Path,
) -> anyhow::Result<u64> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".proximites-export-")
        .tempfile_in(dir)?;
    let count = match format {
        Format::GeoPackage => write_gpkg(handle, lookup, selection, about, crs, temp.path())?,
        other => {
            let mut out = std::io::BufWriter::with_capacity(FLUSH_AT, temp.as_file());
            let count = match other {
                Format::GeoJson => write_geojson(handle, lookup, selection, about, &mut out)?,
                Format::FlatGeobuf => write_fgb(handle, lookup, selection, about, crs, &mut out)?,
                Format::Csv | Format::Scdl => write_csv(
                    handle,
                    lookup,
                    selection,
                    other == Format::Scdl,
                    crs,
                    &mut out,
                )?,
                Format::GeoPackage => unreachable!(),
            };
            out.flush()?;
            count
        }
    };
    temp.as_file().sync_all()?;
    if matches!(format, Format::Csv | Format::Scdl) {
        let sidecar = path.with_file_name(format!(
            "{}.licence.txt",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::write(sidecar, about.text())?;
    }
    // A temporary file is private to its owner; the export is for anyone who may read the folder.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    temp.persist(path).map_err(|e| e.error)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_precision_bounds_hold_the_point() {
        for v in [
            0.0,
            1e-12,
            -1e-12,
            3.0863,
            -61.533_1,
            6_556_241.62,
            734_304.39,
            -20.878_9,
        ] {
            let (low, high) = (f32_down(v), f32_up(v));
            assert!(f64::from(low) <= v && f64::from(high) >= v, "{v}");
            assert!(
                f64::from(high) - f64::from(low) <= (v.abs() * 1e-6).max(1e-30),
                "{v}"
            );
        }
    }

    #[test]
    fn z_order_interleaves_bits() {
        assert_eq!(z_order(0, 0), 0);
        assert_eq!(z_order(1, 0), 1);
        assert_eq!(z_order(0, 1), 2);
        assert_eq!(z_order(3, 3), 15);
        assert_eq!(z_order(0xffff, 0xffff), 0xffff_ffff);
    }

    #[test]
    fn formats_parse_and_name_themselves() {
        for format in Format::ALL {
            assert_eq!(Format::parse(format.extension()), Some(format));
        }
        assert_eq!(Format::parse("shp"), None);
        assert!(!Format::GeoJson.accepts(Crs::Lambert93));
        assert!(Format::GeoPackage.accepts(Crs::Lambert93));
        assert!(!Format::Csv.accepts(Crs::Epsg4326));
    }
}
