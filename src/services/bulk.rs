//! Bulk reads and writes of entries through SQLite's C API on a connection lent by sqlx.
//!
//! Writes (imports) step one prepared single-row statement per row: multi-row statements through
//! sqlx cost twice as much per row (statement journal, per-statement round trip to sqlx's worker
//! thread). Reads (the search index at start) borrow each row's text from SQLite instead of
//! copying it into sqlx's rows: millions of rows in a second rather than in ten.

use std::ffi::{c_int, CStr};

use libsqlite3_sys as ffi;
use sqlx::sqlite::LockedSqliteHandle;

use super::history::{changes, Version};
use super::store::Upsert;
use super::{Phone, Status};
use crate::db::raw::{column_text, each_row, error_message, prepare, Row, Statement};

const INSERT: &CStr = c"INSERT INTO services (id, typology_code, name, description, street, postcode, city,
    insee_code, lon, lat, phones, email, website, opening_hours, closures, wheelchair, wheelchair_note,
    verified_at, content_hash, source_id, source_ref, status, created_at, updated_at, quality,
    source_digest, siret)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
    ?20, ?21, 'published', ?22, ?22, ?23, ?24, ?25)";

const UPDATE: &CStr =
    c"UPDATE services SET typology_code = ?2, name = ?3, description = ?4, street = ?5,
    postcode = ?6, city = ?7, insee_code = ?8, lon = ?9, lat = ?10, phones = ?11, email = ?12,
    website = ?13, opening_hours = ?14, closures = ?15, wheelchair = ?16, wheelchair_note = ?17,
    verified_at = COALESCE(?18, verified_at), content_hash = ?19,
    status = CASE WHEN status = 'duplicate' THEN 'duplicate' ELSE 'published' END, updated_at = ?22,
    quality = ?23, source_digest = ?24, siret = ?25
    WHERE id = ?1 AND source_id = ?20 AND source_ref = ?21";

/// One compact history row per written entry: a creation names no values (the entry itself is
/// the first version), an update keeps the version it replaces and each field's change.
/// The change log's row of each entry written (see `store::log_change`).
/// Records the digest of a record found unchanged by its content, so that the next harvest
/// recognises it without validating it (entries written before digests, or after a person's
/// write).
const SOURCE_DIGEST: &CStr = c"UPDATE services SET source_digest = ?2, siret = ?3 WHERE id = ?1";

const LOG: &CStr = c"INSERT INTO change_log (entry_id, kind, at) VALUES (?1, ?2, ?3)";

const HISTORY: &CStr =
    c"INSERT INTO service_history (service_id, id, at, actor_kind, actor_id, via,
    action, changes, previous) VALUES (?1, ?2, ?3, 'import', ?4, 'import', ?5, ?6, ?7)";

const CURRENT: &CStr =
    c"SELECT typology_code, name, description, street, postcode, city, insee_code,
    lon, lat, phones, email, website, opening_hours, closures, wheelchair, wheelchair_note, status,
    verified_at, quality FROM services WHERE id = ?1";

const PUBLISHED: &CStr =
    c"SELECT id, typology_code, lon, lat, insee_code, wheelchair, opening_hours, name
    FROM services WHERE status = 'published'";

/// One published entry as the search indexes need it, borrowed from SQLite's row.
#[derive(Debug, Clone, Copy)]
pub struct PublishedRow<'r> {
    pub id: &'r str,
    pub typology: &'r str,
    pub lon: f64,
    pub lat: f64,
    pub insee_code: &'r str,
    pub wheelchair: &'r str,
    pub opening_hours: Option<&'r str>,
    pub name: &'r str,
}

/// [`PUBLISHED`], for PostgreSQL's driver.
pub const PUBLISHED_ROWS: &str = "SELECT id, typology_code, lon, lat, insee_code, wheelchair,
    opening_hours, name FROM services WHERE status = 'published'";

impl<'r> PublishedRow<'r> {
    /// The row of [`PUBLISHED_ROWS`] that `row` is, read by PostgreSQL's driver.
    pub fn of_postgres(row: &'r sqlx::postgres::PgRow) -> anyhow::Result<Self> {
        use sqlx::Row as _;
        Ok(PublishedRow {
            id: row.try_get(0)?,
            typology: row.try_get(1)?,
            lon: row.try_get(2)?,
            lat: row.try_get(3)?,
            insee_code: row.try_get(4)?,
            wheelchair: row.try_get(5)?,
            opening_hours: row.try_get(6)?,
            name: row.try_get(7)?,
        })
    }
}

/// Published rows copied out of SQLite, to hand to another thread: their texts end to end in
/// one buffer.
#[derive(Debug, Default)]
pub struct RowBatch {
    text: String,
    rows: Vec<BatchedRow>,
}

/// A row of a [`RowBatch`]: byte ranges of its texts in the batch's buffer.
#[derive(Debug, Clone, Copy)]
struct BatchedRow {
    /// Ends of id, typology, insee_code, wheelchair, opening_hours, name (in that order, each
    /// starting where the previous ends).
    ends: [u32; 6],
    has_hours: bool,
    lon: f64,
    lat: f64,
}

impl RowBatch {
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            text: String::with_capacity(rows * 80),
            rows: Vec::with_capacity(rows),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn push(&mut self, row: PublishedRow<'_>) {
        let mut ends = [0u32; 6];
        let parts = [
            row.id,
            row.typology,
            row.insee_code,
            row.wheelchair,
            row.opening_hours.unwrap_or_default(),
            row.name,
        ];
        for (end, part) in ends.iter_mut().zip(parts) {
            self.text.push_str(part);
            *end = self.text.len() as u32;
        }
        self.rows.push(BatchedRow {
            ends,
            has_hours: row.opening_hours.is_some(),
            lon: row.lon,
            lat: row.lat,
        });
    }

    pub fn rows(&self) -> impl Iterator<Item = PublishedRow<'_>> {
        let mut start = 0;
        self.rows.iter().map(move |row| {
            let mut parts = [""; 6];
            for (part, &end) in parts.iter_mut().zip(&row.ends) {
                *part = self.text.get(start..end as usize).unwrap_or_default();
                start = end as usize;
            }
            PublishedRow {
                id: parts[0],
                typology: parts[1],
                lon: row.lon,
                lat: row.lat,
                insee_code: parts[2],
                wheelchair: parts[3],
                opening_hours: row.has_hours.then_some(parts[4]),
                name: parts[5],
            }
        })
    }
}

/// Streams every published entry to `each`, from one statement, hence one snapshot of the
/// database; returns how many. Stops at the first error `each` returns.
pub fn read_published(
    handle: &mut LockedSqliteHandle<'_>,
    mut each: impl FnMut(PublishedRow<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    each_row(handle, PUBLISHED, "lecture des fiches publiées", |row| {
        each(PublishedRow {
            id: row.required_text(0)?,
            typology: row.required_text(1)?,
            lon: row.real(2),
            lat: row.real(3),
            insee_code: row.required_text(4)?,
            wheelchair: row.required_text(5)?,
            opening_hours: row.text(6)?,
            name: row.required_text(7)?,
        })
    })
}

/// Every published entry as the text index needs it (see [`TextRow`]).
pub const PUBLISHED_TEXT: &CStr = c"SELECT id, name, typology_code, insee_code, lon, lat, street,
    postcode, city, description FROM services WHERE status = 'published'";

/// One published entry as the text index needs it, borrowed from SQLite's row.
#[derive(Debug, Clone, Copy)]
pub struct TextRow<'r> {
    pub id: &'r str,
    pub name: &'r str,
    pub typology: &'r str,
    pub insee_code: &'r str,
    pub lon: f64,
    pub lat: f64,
    pub street: Option<&'r str>,
    pub postcode: Option<&'r str>,
    pub city: Option<&'r str>,
    pub description: Option<&'r str>,
}

impl<'r> TextRow<'r> {
    /// The row of [`PUBLISHED_TEXT`] that `row` is.
    pub fn read(row: &'r Row<'_>) -> anyhow::Result<Self> {
        Ok(TextRow {
            id: row.required_text(0)?,
            name: row.required_text(1)?,
            typology: row.required_text(2)?,
            insee_code: row.required_text(3)?,
            lon: row.real(4),
            lat: row.real(5),
            street: row.text(6)?,
            postcode: row.text(7)?,
            city: row.text(8)?,
            description: row.text(9)?,
        })
    }
}

/// [`PUBLISHED_TEXT`], for PostgreSQL's driver.
pub const PUBLISHED_TEXT_ROWS: &str = "SELECT id, name, typology_code, insee_code, lon, lat,
    street, postcode, city, description FROM services WHERE status = 'published'";

impl<'r> TextRow<'r> {
    /// The row of [`PUBLISHED_TEXT_ROWS`] that `row` is, read by PostgreSQL's driver.
    pub fn of_postgres(row: &'r sqlx::postgres::PgRow) -> anyhow::Result<Self> {
        use sqlx::Row as _;
        Ok(TextRow {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            typology: row.try_get(2)?,
            insee_code: row.try_get(3)?,
            lon: row.try_get(4)?,
            lat: row.try_get(5)?,
            street: row.try_get(6)?,
            postcode: row.try_get(7)?,
            city: row.try_get(8)?,
            description: row.try_get(9)?,
        })
    }
}

/// One entry of a source as an import compares it, borrowed from SQLite's row.
pub struct SourceRow<'r> {
    pub source_digest: Option<&'r str>,
    pub quality: Option<&'r str>,
    pub source_ref: &'r str,
    pub id: &'r str,
    pub digest: &'r str,
    pub status: &'r str,
    pub typology: &'r str,
    pub insee_code: &'r str,
    pub lon: f64,
    pub lat: f64,
}

/// Every entry of a source, as [`SourceRow`] reads it (`$1`: the source).
pub const OF_SOURCE: &str = "SELECT source_ref, id, content_hash, status, typology_code,
    insee_code, lon, lat, source_digest, quality FROM services WHERE source_id = $1";

impl<'r> SourceRow<'r> {
    /// The row of [`OF_SOURCE`] that `row` is, read by PostgreSQL's driver.
    pub fn of_postgres(row: &'r sqlx::postgres::PgRow) -> anyhow::Result<Self> {
        use sqlx::Row as _;
        Ok(SourceRow {
            source_ref: row.try_get(0)?,
            id: row.try_get(1)?,
            digest: row.try_get(2)?,
            status: row.try_get(3)?,
            typology: row.try_get(4)?,
            insee_code: row.try_get(5)?,
            lon: row.try_get(6)?,
            lat: row.try_get(7)?,
            source_digest: row.try_get(8)?,
            quality: row.try_get(9)?,
        })
    }
}

/// Streams every entry of `source_id` (any status) to `each`: through the source's index, or
/// reading the whole table in order when `scan` (the source holds much of it).
pub fn read_of_source(
    handle: &mut LockedSqliteHandle<'_>,
    source_id: &str,
    scan: bool,
    mut each: impl FnMut(SourceRow<'_>),
) -> anyhow::Result<()> {
    let sql: &CStr = if scan {
        c"SELECT source_ref, id, content_hash, status, typology_code, insee_code, lon, lat,
        source_digest, quality FROM services WHERE +source_id = ?1"
    } else {
        c"SELECT source_ref, id, content_hash, status, typology_code, insee_code, lon, lat,
        source_digest, quality FROM services WHERE source_id = ?1"
    };
    let db = handle.as_raw_handle().as_ptr();
    let statement = prepare(db, sql)?;
    let stmt = statement.raw.as_ptr();
    // SAFETY: `stmt` is a prepared statement of this locked connection; `source_id` is copied
    // by SQLite (SQLITE_TRANSIENT); each row's texts are used before the next step.
    unsafe {
        let len = c_int::try_from(source_id.len())?;
        if ffi::sqlite3_bind_text(
            stmt,
            1,
            source_id.as_ptr().cast(),
            len,
            ffi::SQLITE_TRANSIENT(),
        ) != ffi::SQLITE_OK
        {
            anyhow::bail!("lecture des fiches de la source : {}", error_message(db));
        }
        loop {
            match ffi::sqlite3_step(stmt) {
                ffi::SQLITE_ROW => {}
                ffi::SQLITE_DONE => return Ok(()),
                _ => anyhow::bail!("lecture des fiches de la source : {}", error_message(db)),
            }
            let text =
                |i: c_int| -> anyhow::Result<&str> { Ok(column_text(stmt, i)?.unwrap_or("")) };
            each(SourceRow {
                source_ref: text(0)?,
                id: text(1)?,
                digest: text(2)?,
                status: text(3)?,
                typology: text(4)?,
                insee_code: text(5)?,
                lon: ffi::sqlite3_column_double(stmt, 6),
                lat: ffi::sqlite3_column_double(stmt, 7),
                source_digest: column_text(stmt, 8)?,
                quality: column_text(stmt, 9)?,
            });
        }
    }
}

/// Writes entries of one source within the transaction open on the locked connection.
pub struct BulkWriter<'c> {
    insert: Statement,
    update: Statement,
    history: Statement,
    current: Statement,
    log: Statement,
    source_digest: Statement,
    /// The change log's stamp of every row of this import: when it started.
    stamp: String,
    /// The import's id, which the history names as the author of its changes.
    import_id: String,
    // Declared last: the statements are finalized before the connection lock is released.
    handle: LockedSqliteHandle<'c>,
}

/// The columns of an imported row stored as text (lists as JSON, the instant to the second),
/// as both engines' bulk writers write them.
pub(crate) struct StoredTexts {
    pub phones: String,
    pub closures: String,
    pub verified_at: Option<String>,
    pub quality: Option<String>,
}

impl StoredTexts {
    pub(crate) fn of(row: &Upsert) -> anyhow::Result<Self> {
        let c = &row.content;
        Ok(StoredTexts {
            phones: serde_json::to_string(&c.phones.iter().map(Phone::e164).collect::<Vec<_>>())?,
            closures: serde_json::to_string(&c.closures)?,
            verified_at: row
                .verified_at
                .map(|v| v.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            quality: super::quality::to_stored(&c.quality),
        })
    }
}

/// What the history row of an imported `row` holds, whose previous version is `previous`
/// (none: created): its action, the changes of its fields and the version it replaces (JSON).
pub(crate) fn import_history(
    row: &Upsert,
    previous: Option<&Version>,
) -> anyhow::Result<(&'static str, Option<String>, Option<String>)> {
    let Some(previous) = previous else {
        return Ok(("created", None, None));
    };
    // A hidden duplicate stays hidden: the detection decides, after the import.
    let status = match previous.status {
        Status::Duplicate => Status::Duplicate,
        _ => Status::Published,
    };
    let next = Version::of(
        &row.content,
        status,
        row.verified_at.or(previous.verified_at),
    );
    Ok((
        "updated",
        Some(serde_json::to_string(&changes(Some(previous), &next))?),
        Some(serde_json::to_string(previous)?),
    ))
}

/// Binds `texts` to `stmt` by index (NULL for `None`), steps it once and resets it; the
/// database's message when it fails.
///
/// # Safety
/// `stmt` must be a prepared statement of the connection `db`. The texts are bound without a
/// copy (`SQLITE_STATIC`): they outlive the call, which resets the statement before returning.
unsafe fn step_once(
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
    texts: &[(c_int, Option<&str>)],
) -> Result<(), String> {
    let mut rc = ffi::SQLITE_OK;
    for &(index, value) in texts {
        rc |= match value {
            Some(text) => match c_int::try_from(text.len()) {
                Ok(length) => ffi::sqlite3_bind_text(
                    stmt,
                    index,
                    text.as_ptr().cast(),
                    length,
                    ffi::SQLITE_STATIC(),
                ),
                Err(_) => ffi::SQLITE_TOOBIG,
            },
            None => ffi::sqlite3_bind_null(stmt, index),
        };
    }
    let step = if rc == ffi::SQLITE_OK {
        ffi::sqlite3_step(stmt)
    } else {
        rc
    };
    let failed = (step != ffi::SQLITE_DONE).then(|| error_message(db));
    ffi::sqlite3_reset(stmt);
    failed.map_or(Ok(()), Err)
}

impl<'c> BulkWriter<'c> {
    pub fn new(mut handle: LockedSqliteHandle<'c>, import_id: &str) -> anyhow::Result<Self> {
        let db = handle.as_raw_handle().as_ptr();
        Ok(Self {
            insert: prepare(db, INSERT)?,
            update: prepare(db, UPDATE)?,
            history: prepare(db, HISTORY)?,
            current: prepare(db, CURRENT)?,
            log: prepare(db, LOG)?,
            source_digest: prepare(db, SOURCE_DIGEST)?,
            stamp: super::store::log_stamp(chrono::Utc::now()),
            import_id: import_id.to_owned(),
            handle,
        })
    }

    /// The entry `id` as stored, for the history of an update.
    fn current(&mut self, id: &str) -> anyhow::Result<Version> {
        let db = self.handle.as_raw_handle().as_ptr();
        let stmt = self.current.raw.as_ptr();
        // SAFETY: `stmt` is a prepared statement of this connection; `id` outlives the step
        // (bound SQLITE_STATIC) and the row's texts are copied before the reset.
        unsafe {
            let rc = ffi::sqlite3_bind_text(
                stmt,
                1,
                id.as_ptr().cast(),
                c_int::try_from(id.len())?,
                ffi::SQLITE_STATIC(),
            );
            if rc != ffi::SQLITE_OK || ffi::sqlite3_step(stmt) != ffi::SQLITE_ROW {
                let message = error_message(db);
                ffi::sqlite3_reset(stmt);
                anyhow::bail!("lecture de la fiche {id} : {message}");
            }
            let read = || -> anyhow::Result<Version> {
                let text = |i: c_int| -> anyhow::Result<Option<String>> {
                    Ok(column_text(stmt, i)?.map(str::to_owned))
                };
                let required = |i: c_int| -> anyhow::Result<String> {
                    text(i)?.ok_or_else(|| anyhow::anyhow!("colonne {i} vide"))
                };
                Ok(Version {
                    typology: required(0)?,
                    name: required(1)?,
                    description: text(2)?,
                    street: text(3)?,
                    postcode: text(4)?,
                    city: text(5)?,
                    insee_code: required(6)?,
                    lon: ffi::sqlite3_column_double(stmt, 7),
                    lat: ffi::sqlite3_column_double(stmt, 8),
                    phones: serde_json::from_str(&required(9)?)?,
                    email: text(10)?,
                    website: text(11)?,
                    opening_hours: text(12)?,
                    closures: serde_json::from_str(&required(13)?)?,
                    wheelchair: required(14)?,
                    wheelchair_note: text(15)?,
                    status: Status::parse(&required(16)?).unwrap_or(Status::Published),
                    verified_at: text(17)?
                        .map(|v| chrono::DateTime::parse_from_rfc3339(&v).map(|d| d.to_utc()))
                        .transpose()?,
                    quality: super::quality::from_stored(text(18)?.as_deref()),
                })
            };
            let version = read();
            ffi::sqlite3_reset(stmt);
            version
        }
    }

    /// Records the history row of `row`, written at `now`, whose previous version is `previous`.
    fn record(
        &mut self,
        row: &Upsert,
        now: &str,
        previous: Option<&Version>,
    ) -> anyhow::Result<()> {
        let db = self.handle.as_raw_handle().as_ptr();
        let stmt = self.history.raw.as_ptr();
        let history_id = super::ServiceId::generate();
        let (action, changes, previous_json) = import_history(row, previous)?;
        let texts = [
            (1, Some(row.id.as_str())),
            (2, Some(history_id.as_str())),
            (3, Some(now)),
            (4, Some(self.import_id.as_str())),
            (5, Some(action)),
            (6, changes.as_deref()),
            (7, previous_json.as_deref()),
        ];
        // SAFETY: `stmt` is a prepared statement of `db`, and every text outlives the call.
        unsafe { step_once(db, stmt, &texts) }
            .map_err(|message| anyhow::anyhow!("historique de « {} » : {message}", row.source_ref))
    }

    /// Creates (`row.is_new`) or updates one entry of `source_id`, stamped `now` (RFC 3339),
    /// and records it in the history.
    pub fn write(&mut self, source_id: &str, row: &Upsert, now: &str) -> anyhow::Result<()> {
        let previous = if row.is_new {
            None
        } else {
            Some(self.current(row.id.as_str())?)
        };
        self.write_row(source_id, row, now)?;
        self.record(row, now, previous.as_ref())?;
        self.log(row)
    }

    /// Records the source digest of an entry whose record is unchanged (no history, no change
    /// log: nothing a reader sees changes).
    pub fn set_source_digest(
        &mut self,
        id: &str,
        digest: &str,
        siret: Option<&str>,
    ) -> anyhow::Result<()> {
        let db = self.handle.as_raw_handle().as_ptr();
        let stmt = self.source_digest.raw.as_ptr();
        let texts = [(1, Some(id)), (2, Some(digest)), (3, siret)];
        // SAFETY: `stmt` is a prepared statement of `db`, and every text outlives the call.
        unsafe { step_once(db, stmt, &texts) }
            .map_err(|message| anyhow::anyhow!("empreinte de la fiche {id} : {message}"))
    }

    /// Appends the row's entry to the change log (as `store::log_change` does).
    fn log(&mut self, row: &Upsert) -> anyhow::Result<()> {
        let db = self.handle.as_raw_handle().as_ptr();
        let stmt = self.log.raw.as_ptr();
        let kind = if row.is_new { "created" } else { "changed" };
        let texts = [
            (1, Some(row.id.as_str())),
            (2, Some(kind)),
            (3, Some(self.stamp.as_str())),
        ];
        // SAFETY: `stmt` is a prepared statement of `db`, and every text outlives the call.
        unsafe { step_once(db, stmt, &texts) }.map_err(|message| {
            anyhow::anyhow!(
                "journal des changements de « {} » : {message}",
                row.source_ref
            )
        })
    }

    fn write_row(&mut self, source_id: &str, row: &Upsert, now: &str) -> anyhow::Result<()> {
        let db = self.handle.as_raw_handle().as_ptr();
        let stmt = if row.is_new {
            self.insert.raw.as_ptr()
        } else {
            self.update.raw.as_ptr()
        };
        let c = &row.content;
        let StoredTexts {
            phones,
            closures,
            verified_at,
            quality,
        } = StoredTexts::of(row)?;
        let texts: [(c_int, Option<&str>); 23] = [
            (1, Some(row.id.as_str())),
            (2, Some(&c.typology)),
            (3, Some(&c.name)),
            (4, c.description.as_deref()),
            (5, c.street.as_deref()),
            (6, c.postcode.as_deref()),
            (7, c.city.as_deref()),
            (8, Some(c.insee_code.as_str())),
            (11, Some(&phones)),
            (12, c.email.as_deref()),
            (13, c.website.as_deref()),
            (14, c.opening_hours.as_deref()),
            (15, Some(&closures)),
            (16, Some(c.wheelchair.as_str())),
            (17, c.wheelchair_note.as_deref()),
            (18, verified_at.as_deref()),
            (19, Some(&row.digest)),
            (20, Some(source_id)),
            (21, Some(&row.source_ref)),
            (22, Some(now)),
            (23, quality.as_deref()),
            (24, row.source_digest.as_deref()),
            (25, row.siret.as_deref()),
        ];
        // SAFETY: `stmt` is a prepared statement of this connection. Texts are bound
        // SQLITE_STATIC (not copied): every string above outlives the step, and the statement is
        // reset (and all its parameters bound again) before the next row.
        unsafe {
            let mut rc = ffi::sqlite3_bind_double(stmt, 9, c.location.lon);
            rc |= ffi::sqlite3_bind_double(stmt, 10, c.location.lat);
            for (index, value) in texts {
                rc |= match value {
                    Some(text) => ffi::sqlite3_bind_text(
                        stmt,
                        index,
                        text.as_ptr().cast(),
                        c_int::try_from(text.len())?,
                        ffi::SQLITE_STATIC(),
                    ),
                    None => ffi::sqlite3_bind_null(stmt, index),
                };
            }
            if rc != ffi::SQLITE_OK {
                ffi::sqlite3_reset(stmt);
                anyhow::bail!("écriture de « {} » : {}", row.source_ref, error_message(db));
            }
            let step = ffi::sqlite3_step(stmt);
            let changed = ffi::sqlite3_changes(db);
            ffi::sqlite3_reset(stmt);
            if step != ffi::SQLITE_DONE {
                anyhow::bail!("écriture de « {} » : {}", row.source_ref, error_message(db));
            }
            if changed != 1 {
                anyhow::bail!(
                    "écriture de « {} » : la fiche a changé pendant l'import",
                    row.source_ref
                );
            }
        }
        Ok(())
    }
}
