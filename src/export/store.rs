//! SQL of the layers: published entries of a selection, and their count, read on a blocking
//! thread: on SQLite through its C API on a connection lent by sqlx (rows are borrowed, not
//! copied: millions of them a second), on PostgreSQL as a stream of rows from its driver (never
//! the whole result in memory).

use std::ffi::{c_int, CString};
use std::ptr::NonNull;

use libsqlite3_sys as ffi;
use rustc_hash::FxHashMap as HashMap;
use sqlx::sqlite::LockedSqliteHandle;

use super::{cql2, Lookup, Row, Selection};
use crate::db::raw::{column_text, error_message};
use crate::db::Store;
use crate::error::{Error, Result};
use crate::import::Reference;

const COLUMNS: &str = "id, typology_code, name, description, street, postcode, city, insee_code,
    lon, lat, phones, email, website, opening_hours, wheelchair, source_id, source_ref, updated_at";

/// [`COLUMNS`] on PostgreSQL: the instant as RFC 3339 text to the microsecond, as SQLite holds
/// it, so that a row's values (and the cursors made of them) read alike on both engines.
const POSTGRES_COLUMNS: &str = "id, typology_code, name, description, street, postcode, city,
    insee_code, lon, lat, phones, email, website, opening_hours, wheelchair, source_id, source_ref,
    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

/// A connection read on a blocking thread.
pub enum Handle<'h> {
    Sqlite(LockedSqliteHandle<'h>),
    Postgres {
        conn: &'h mut sqlx::PgConnection,
        runtime: tokio::runtime::Handle,
    },
}

/// Runs `work` on a connection of `store` on a blocking thread.
pub async fn with_connection<T: Send + 'static>(
    store: &Store,
    work: impl FnOnce(&mut Handle<'_>) -> anyhow::Result<T> + Send + 'static,
) -> Result<T> {
    let runtime = tokio::runtime::Handle::current();
    let result = match store {
        Store::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            tokio::task::spawn_blocking(move || -> anyhow::Result<T> {
                let handle = runtime.block_on(conn.lock_handle())?;
                work(&mut Handle::Sqlite(handle))
            })
            .await
        }
        Store::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            tokio::task::spawn_blocking(move || -> anyhow::Result<T> {
                work(&mut Handle::Postgres {
                    conn: &mut conn,
                    runtime,
                })
            })
            .await
        }
    };
    let result = result.map_err(anyhow::Error::from)?.map_err(|error| {
        match error.downcast::<cql2::TooCostly>() {
            Ok(costly) => Error::BadRequest {
                code: "filter_too_costly",
                detail: costly.to_string(),
            },
            Err(other) => Error::from(other),
        }
    })?;
    Ok(result)
}

/// The current row of a read, whichever the engine.
enum RawRow<'r> {
    Sqlite(&'r Statement),
    Postgres(&'r sqlx::postgres::PgRow),
}

impl<'r> RawRow<'r> {
    /// Column `i` as text; `None` for NULL.
    fn text(&self, i: usize) -> anyhow::Result<Option<&'r str>> {
        match self {
            // SAFETY: the statement is on a row, which `each_row` keeps current while the
            // row is lent.
            RawRow::Sqlite(statement) => unsafe { statement.text(c_int::try_from(i)?) },
            RawRow::Postgres(row) => Ok(sqlx::Row::try_get(*row, i)?),
        }
    }

    fn required_text(&self, i: usize) -> anyhow::Result<&'r str> {
        self.text(i)?
            .ok_or_else(|| anyhow::anyhow!("colonne {i} vide"))
    }

    fn double(&self, i: usize) -> anyhow::Result<f64> {
        match self {
            RawRow::Sqlite(statement) => Ok(statement.double(c_int::try_from(i)?)),
            RawRow::Postgres(row) => Ok(sqlx::Row::try_get(*row, i)?),
        }
    }

    fn int(&self, i: usize) -> anyhow::Result<i64> {
        match self {
            RawRow::Sqlite(statement) => Ok(statement.int(c_int::try_from(i)?)),
            RawRow::Postgres(row) => Ok(sqlx::Row::try_get(*row, i)?),
        }
    }
}

/// `sql` (written with `?` placeholders) as PostgreSQL reads it: `$1`, `$2`… in order, an
/// instant compared with `updated_at` cast from its text.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            let compares_instant = out
                .trim_end()
                .trim_end_matches(['=', '<', '>'])
                .trim_end()
                .ends_with("updated_at");
            out.push_str(&format!("${n}"));
            if compares_instant {
                out.push_str("::timestamptz");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Steps every row of `sql` with `binds`, handing each to `each` until it returns false.
fn each_row(
    handle: &mut Handle<'_>,
    sql: &str,
    binds: &[Bind],
    mut each: impl FnMut(&RawRow<'_>) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    match handle {
        Handle::Sqlite(handle) => {
            let statement = Statement::prepare(handle, sql, binds)?;
            while statement.step()? {
                if !each(&RawRow::Sqlite(&statement))? {
                    break;
                }
            }
            Ok(())
        }
        Handle::Postgres { conn, runtime } => runtime.block_on(async {
            use futures_util::TryStreamExt;
            let sql = numbered(sql);
            let mut query = sqlx::query(&sql);
            for bind in binds {
                query = match bind {
                    Bind::Text(text) => query.bind(text.as_str()),
                    Bind::Real(value) => query.bind(*value),
                };
            }
            let mut rows = query.fetch(&mut **conn);
            while let Some(row) = rows.try_next().await? {
                if !each(&RawRow::Postgres(&row))? {
                    break;
                }
            }
            Ok(())
        }),
    }
}

/// The columns of a read of entries on the engine of `handle`.
fn columns(handle: &Handle<'_>) -> &'static str {
    match handle {
        Handle::Sqlite(_) => COLUMNS,
        Handle::Postgres { .. } => POSTGRES_COLUMNS,
    }
}

enum Bind {
    Text(String),
    Real(f64),
}

/// A property items may be sorted by (OGC API – Features `sortby`), and its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortProperty {
    Name,
    Typology,
    Commune,
    UpdatedAt,
}

impl SortProperty {
    pub const ALL: [SortProperty; 4] = [
        SortProperty::Name,
        SortProperty::Typology,
        SortProperty::Commune,
        SortProperty::UpdatedAt,
    ];

    /// The name clients use (the queryable's).
    pub fn name(self) -> &'static str {
        match self {
            SortProperty::Name => "name",
            SortProperty::Typology => "typology",
            SortProperty::Commune => "commune",
            SortProperty::UpdatedAt => "updated_at",
        }
    }

    fn column(self) -> &'static str {
        match self {
            SortProperty::Name => "name",
            SortProperty::Typology => "typology_code",
            SortProperty::Commune => "insee_code",
            SortProperty::UpdatedAt => "updated_at",
        }
    }

    /// This property's value in `row`, as it is compared.
    pub fn value<'r>(self, row: &Row<'r>) -> &'r str {
        match self {
            SortProperty::Name => row.name,
            SortProperty::Typology => row.typology,
            SortProperty::Commune => row.insee_code,
            SortProperty::UpdatedAt => row.updated_at,
        }
    }
}

/// One key of a sort: a property, ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub property: SortProperty,
    pub descending: bool,
}

/// The order rows are read in.
#[derive(Debug, Clone, Copy)]
pub enum Order<'a> {
    /// As stored (a whole export, a count).
    Storage,
    /// By increasing id, after `after` (a page).
    Id { after: Option<&'a str> },
    /// By `keys`, then by id in the last key's direction, after the row whose values of the
    /// keys and id are `after` (a sorted page: each page starts exactly where the last ended,
    /// whatever was written between them).
    Sorted {
        keys: &'a [SortKey],
        after: Option<&'a [String]>,
    },
}

/// The ORDER BY clause of `order`, and the condition that starts after its cursor.
fn ordering(order: Order<'_>, binds: &mut Vec<Bind>) -> (String, String) {
    match order {
        Order::Storage => (String::new(), String::new()),
        Order::Id { after } => {
            let condition = match after {
                Some(after) => {
                    binds.push(Bind::Text(after.to_owned()));
                    " AND id > ?".to_owned()
                }
                None => String::new(),
            };
            (condition, " ORDER BY id".to_owned())
        }
        Order::Sorted { keys, after } => {
            let descending = keys.last().is_some_and(|k| k.descending);
            let columns: Vec<(&str, bool)> = keys
                .iter()
                .map(|k| (k.property.column(), k.descending))
                .chain(std::iter::once(("id", descending)))
                .collect();
            let order_by = columns
                .iter()
                .map(|(c, d)| format!("{c} {}", if *d { "DESC" } else { "ASC" }))
                .collect::<Vec<_>>()
                .join(", ");
            // After (v1, …, vn): some key i beyond its value, every key before it equal.
            let condition = match after {
                Some(values) if values.len() == columns.len() => {
                    let mut alternatives = Vec::new();
                    for (i, (column, desc)) in columns.iter().enumerate() {
                        let mut parts = Vec::new();
                        for (j, (before, _)) in columns[..i].iter().enumerate() {
                            parts.push(format!("{before} = ?"));
                            binds.push(Bind::Text(values[j].clone()));
                        }
                        parts.push(format!("{column} {} ?", if *desc { "<" } else { ">" }));
                        binds.push(Bind::Text(values[i].clone()));
                        alternatives.push(format!("({})", parts.join(" AND ")));
                    }
                    format!(" AND ({})", alternatives.join(" OR "))
                }
                _ => String::new(),
            };
            (condition, format!(" ORDER BY {order_by}"))
        }
    }
}

/// The WHERE clause of a selection (without the row tests) and its values.
fn conditions(selection: &Selection) -> (String, Vec<Bind>) {
    let mut sql = String::from(" WHERE status = 'published'");
    let mut binds = Vec::new();
    if let Some(id) = &selection.id {
        sql.push_str(" AND id = ?");
        binds.push(Bind::Text(id.clone()));
    }
    let mut list = |column: &str, values: &Option<Vec<String>>, sql: &mut String| {
        if let Some(values) = values {
            if values.len() > super::MAX_BOUND_LIST {
                // Tested on each row (`Selection::row_passes`).
                return;
            }
            if values.is_empty() {
                sql.push_str(" AND 0 = 1");
            } else {
                sql.push_str(&format!(" AND {column} IN ("));
                for (i, value) in values.iter().enumerate() {
                    sql.push_str(if i == 0 { "?" } else { ", ?" });
                    binds.push(Bind::Text(value.clone()));
                }
                sql.push(')');
            }
        }
    };
    list("typology_code", &selection.typologies, &mut sql);
    list("insee_code", &selection.communes, &mut sql);
    list("source_id", &selection.sources, &mut sql);
    list("id", &selection.ids, &mut sql);
    if let Some(since) = &selection.updated_since {
        sql.push_str(" AND updated_at >= ?");
        binds.push(Bind::Text(since.clone()));
    }
    if let Some(b) = selection.bbox {
        sql.push_str(" AND lon >= ? AND lon <= ? AND lat >= ? AND lat <= ?");
        binds.extend([b.min_lon, b.max_lon, b.min_lat, b.max_lat].map(Bind::Real));
    }
    (sql, binds)
}

/// A prepared statement, finalized when dropped.
struct Statement {
    raw: NonNull<ffi::sqlite3_stmt>,
    db: *mut ffi::sqlite3,
}

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: `raw` came from sqlite3_prepare_v2 and is finalized once, here.
        unsafe {
            ffi::sqlite3_finalize(self.raw.as_ptr());
        }
    }
}

impl Statement {
    fn prepare(
        handle: &mut LockedSqliteHandle<'_>,
        sql: &str,
        binds: &[Bind],
    ) -> anyhow::Result<Self> {
        let db = handle.as_raw_handle().as_ptr();
        let sql = CString::new(sql)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `db` is a live connection whose lock the caller holds; `sql` is NUL-terminated.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut raw, std::ptr::null_mut())
        };
        let statement = match NonNull::new(raw) {
            Some(raw) if rc == ffi::SQLITE_OK => Statement { raw, db },
            _ => anyhow::bail!(
                "préparation de la lecture des couches : {}",
                error_message(db)
            ),
        };
        for (i, bind) in binds.iter().enumerate() {
            let at = c_int::try_from(i + 1)?;
            // SAFETY: the statement is live; SQLITE_TRANSIENT makes SQLite copy the text.
            let rc = unsafe {
                match bind {
                    Bind::Text(text) => ffi::sqlite3_bind_text(
                        statement.raw.as_ptr(),
                        at,
                        text.as_ptr().cast(),
                        c_int::try_from(text.len())?,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                    Bind::Real(value) => {
                        ffi::sqlite3_bind_double(statement.raw.as_ptr(), at, *value)
                    }
                }
            };
            if rc != ffi::SQLITE_OK {
                anyhow::bail!("lecture des couches : {}", error_message(db));
            }
        }
        Ok(statement)
    }

    /// Steps to the next row; false when done.
    fn step(&self) -> anyhow::Result<bool> {
        // SAFETY: a live statement of the locked connection.
        match unsafe { ffi::sqlite3_step(self.raw.as_ptr()) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            _ => anyhow::bail!("lecture des couches : {}", error_message(self.db)),
        }
    }

    /// The text of column `i` of the current row; `None` for NULL.
    ///
    /// # Safety
    /// The statement must be on a row; the text lives until the next step.
    unsafe fn text<'r>(&self, i: c_int) -> anyhow::Result<Option<&'r str>> {
        column_text(self.raw.as_ptr(), i)
    }

    fn double(&self, i: c_int) -> f64 {
        // SAFETY: a live statement on a row.
        unsafe { ffi::sqlite3_column_double(self.raw.as_ptr(), i) }
    }

    fn int(&self, i: c_int) -> i64 {
        // SAFETY: a live statement on a row.
        unsafe { ffi::sqlite3_column_int64(self.raw.as_ptr(), i) }
    }
}

/// Organisation ids and names.
pub fn sources(handle: &mut Handle<'_>) -> anyhow::Result<HashMap<String, String>> {
    let mut sources = HashMap::default();
    each_row(handle, "SELECT id, name FROM organisations", &[], |row| {
        if let (Some(id), Some(name)) = (row.text(0)?, row.text(1)?) {
            sources.insert(id.to_owned(), name.to_owned());
        }
        Ok(true)
    })?;
    Ok(sources)
}

/// The names of the organisations with published entries, sorted: the sources of a download.
pub fn publishing_sources(handle: &mut Handle<'_>) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    each_row(
        handle,
        "SELECT name FROM organisations o WHERE EXISTS (
            SELECT 1 FROM services s WHERE s.source_id = o.id AND s.status = 'published')
         ORDER BY name",
        &[],
        |row| {
            if let Some(name) = row.text(0)? {
                names.push(name.to_owned());
            }
            Ok(true)
        },
    )?;
    Ok(names)
}

/// The lookup of names a read needs.
pub fn lookup(handle: &mut Handle<'_>, reference: &Reference) -> anyhow::Result<Lookup> {
    Ok(Lookup::new(reference, sources(handle)?))
}

/// Streams the entries of `selection` to `each` in `order`; `each` returns false to stop.
pub fn scan(
    handle: &mut Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    order: Order<'_>,
    each: impl FnMut(&Row<'_>) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    read(handle, lookup, selection, order, None, each)
}

/// Streams at most `limit` entries of `selection` in `order`. Told to SQL when the selection is
/// all SQL: a sorted page then keeps only its best rows while reading (SQLite's top-N sort)
/// instead of sorting the whole selection before the first row.
pub fn scan_limited(
    handle: &mut Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    order: Order<'_>,
    limit: u64,
    mut each: impl FnMut(&Row<'_>) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let window = (!selection.needs_row_test()).then_some((0, limit));
    let mut left = limit;
    read(handle, lookup, selection, order, window, |row| {
        if left == 0 {
            return Ok(false);
        }
        left -= 1;
        each(row)
    })
}

/// Where numbered pages of a selection start: its entries counted in id order, with the id that
/// ends each run of `ANCHOR_STEP`, so that a page deep in it is read from the nearest anchor
/// instead of skipping every entry before it.
#[derive(Debug, Clone, Default)]
pub struct Anchors {
    pub total: u64,
    ends: Vec<String>,
}

/// Entries between two anchors.
pub const ANCHOR_STEP: u64 = 1_000;

/// The anchors of `selection` (all SQL: `needs_row_test` false), read from the ids alone.
pub fn anchors(handle: &mut Handle<'_>, selection: &Selection) -> anyhow::Result<Anchors> {
    anyhow::ensure!(
        !selection.needs_row_test(),
        "une page numérotée ne se lit qu'en SQL"
    );
    let (where_, binds) = conditions(selection);
    let mut anchors = Anchors::default();
    each_row(
        handle,
        &format!("SELECT id FROM services{where_} ORDER BY id"),
        &binds,
        |row| {
            anchors.total += 1;
            if anchors.total % ANCHOR_STEP == 0 {
                if let Some(id) = row.text(0)? {
                    anchors.ends.push(id.to_owned());
                }
            }
            Ok(true)
        },
    )?;
    Ok(anchors)
}

/// Streams `limit` entries of `selection` by increasing id, after skipping `offset` (a numbered
/// page), from the anchor before it. The selection must be all SQL (`needs_row_test` false):
/// rows tested one by one cannot be skipped by SQL.
pub fn numbered_page(
    handle: &mut Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    anchors: &Anchors,
    offset: u64,
    limit: u64,
    each: impl FnMut(&Row<'_>) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !selection.needs_row_test(),
        "une page numérotée ne se lit qu'en SQL"
    );
    let run = usize::try_from(offset / ANCHOR_STEP).unwrap_or(usize::MAX);
    let (after, skip) = match run.checked_sub(1).and_then(|i| anchors.ends.get(i)) {
        Some(end) => (Some(end.as_str()), offset % ANCHOR_STEP),
        None if run == 0 => (None, offset),
        // Past the last anchor: beyond the selection's end as it was counted.
        None => (
            anchors.ends.last().map(String::as_str),
            offset - anchors.ends.len() as u64 * ANCHOR_STEP,
        ),
    };
    read(
        handle,
        lookup,
        selection,
        Order::Id { after },
        Some((skip, limit)),
        each,
    )
}

fn read(
    handle: &mut Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    order: Order<'_>,
    window: Option<(u64, u64)>,
    mut each: impl FnMut(&Row<'_>) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let (where_, mut binds) = conditions(selection);
    let (after, order_by) = ordering(order, &mut binds);
    let window = window.map_or_else(String::new, |(offset, limit)| {
        format!(" LIMIT {limit} OFFSET {offset}")
    });
    let sql = format!(
        "SELECT {} FROM services{where_}{after}{order_by}{window}",
        columns(handle)
    );
    let test = selection.needs_row_test();
    let deadline = selection
        .filter
        .is_some()
        .then(|| std::time::Instant::now() + cql2::TIME_BUDGET);
    each_row(handle, &sql, &binds, |raw| {
        let row = Row {
            id: raw.required_text(0)?,
            typology: raw.required_text(1)?,
            name: raw.required_text(2)?,
            description: raw.text(3)?,
            street: raw.text(4)?,
            postcode: raw.text(5)?,
            city: raw.text(6)?,
            insee_code: raw.required_text(7)?,
            lon: raw.double(8)?,
            lat: raw.double(9)?,
            phones_json: raw.required_text(10)?,
            email: raw.text(11)?,
            website: raw.text(12)?,
            opening_hours: raw.text(13)?,
            wheelchair: raw.required_text(14)?,
            source_id: raw.required_text(15)?,
            source_ref: raw.required_text(16)?,
            updated_at: raw.required_text(17)?,
            lookup,
        };
        if test {
            if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                return Err(cql2::TooCostly.into());
            }
            if !selection.row_passes(&row) {
                return Ok(true);
            }
        }
        each(&row)
    })
}

/// How many entries `selection` holds.
pub fn count(
    handle: &mut Handle<'_>,
    lookup: &Lookup,
    selection: &Selection,
) -> anyhow::Result<u64> {
    if selection.needs_row_test() {
        let mut n = 0;
        scan(handle, lookup, selection, Order::Storage, |_| {
            n += 1;
            Ok(true)
        })?;
        return Ok(n);
    }
    let (where_, binds) = conditions(selection);
    let mut count = 0;
    each_row(
        handle,
        &format!("SELECT COUNT(*) FROM services{where_}"),
        &binds,
        |row| {
            count = u64::try_from(row.int(0)?)?;
            Ok(false)
        },
    )?;
    Ok(count)
}
