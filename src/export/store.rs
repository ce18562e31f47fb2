//! SQL of the layers: published entries of a selection, read through SQLite's C API on a
//! connection lent by sqlx (rows are borrowed, not copied: millions of them a second), and
//! their count.

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

/// Runs `work` on a connection of `pool`, locked for the C API, on a blocking thread.
pub async fn with_connection<T: Send + 'static>(
    store: &Store,
    work: impl FnOnce(&mut LockedSqliteHandle<'_>) -> anyhow::Result<T> + Send + 'static,
) -> Result<T> {
    let mut conn = store.sqlite()?.acquire().await?;
    let runtime = tokio::runtime::Handle::current();
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<T> {
        let mut handle = runtime.block_on(conn.lock_handle())?;
        work(&mut handle)
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(|error| match error.downcast::<cql2::TooCostly>() {
        Ok(costly) => Error::BadRequest {
            code: "filter_too_costly",
            detail: costly.to_string(),
        },
        Err(other) => Error::from(other),
    })?;
    Ok(result)
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
pub fn sources(handle: &mut LockedSqliteHandle<'_>) -> anyhow::Result<HashMap<String, String>> {
    let statement = Statement::prepare(handle, "SELECT id, name FROM organisations", &[])?;
    let mut sources = HashMap::default();
    while statement.step()? {
        // SAFETY: on a row; the texts are copied before the next step.
        unsafe {
            if let (Some(id), Some(name)) = (statement.text(0)?, statement.text(1)?) {
                sources.insert(id.to_owned(), name.to_owned());
            }
        }
    }
    Ok(sources)
}

/// The names of the organisations with published entries, sorted: the sources of a download.
pub fn publishing_sources(handle: &mut LockedSqliteHandle<'_>) -> anyhow::Result<Vec<String>> {
    let statement = Statement::prepare(
        handle,
        "SELECT name FROM organisations o WHERE EXISTS (
            SELECT 1 FROM services s WHERE s.source_id = o.id AND s.status = 'published')
         ORDER BY name",
        &[],
    )?;
    let mut names = Vec::new();
    while statement.step()? {
        // SAFETY: on a row; the text is copied before the next step.
        if let Some(name) = unsafe { statement.text(0)? } {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// The lookup of names a read needs.
pub fn lookup(
    handle: &mut LockedSqliteHandle<'_>,
    reference: &Reference,
) -> anyhow::Result<Lookup> {
    Ok(Lookup::new(reference, sources(handle)?))
}

/// Streams the entries of `selection` to `each` in `order`; `each` returns false to stop.
pub fn scan(
    handle: &mut LockedSqliteHandle<'_>,
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
    handle: &mut LockedSqliteHandle<'_>,
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
pub fn anchors(
    handle: &mut LockedSqliteHandle<'_>,
    selection: &Selection,
) -> anyhow::Result<Anchors> {
    anyhow::ensure!(
        !selection.needs_row_test(),
        "une page numérotée ne se lit qu'en SQL"
    );
    let (where_, binds) = conditions(selection);
    let statement = Statement::prepare(
        handle,
        &format!("SELECT id FROM services{where_} ORDER BY id"),
        &binds,
    )?;
    let mut anchors = Anchors::default();
    while statement.step()? {
        anchors.total += 1;
        if anchors.total % ANCHOR_STEP == 0 {
            // SAFETY: on a row; the text is copied before the next step.
            if let Some(id) = unsafe { statement.text(0)? } {
                anchors.ends.push(id.to_owned());
            }
        }
    }
    Ok(anchors)
}

/// Streams `limit` entries of `selection` by increasing id, after skipping `offset` (a numbered
/// page), from the anchor before it. The selection must be all SQL (`needs_row_test` false):
/// rows tested one by one cannot be skipped by SQL.
pub fn numbered_page(
    handle: &mut LockedSqliteHandle<'_>,
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
    handle: &mut LockedSqliteHandle<'_>,
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
    let sql = format!("SELECT {COLUMNS} FROM services{where_}{after}{order_by}{window}");
    let statement = Statement::prepare(handle, &sql, &binds)?;
    let test = selection.needs_row_test();
    let deadline = selection
        .filter
        .is_some()
        .then(|| std::time::Instant::now() + cql2::TIME_BUDGET);
    while statement.step()? {
        // SAFETY: on a row; the row's borrows end before the next step.
        let row = unsafe {
            let text = |i: c_int| -> anyhow::Result<&str> {
                statement
                    .text(i)?
                    .ok_or_else(|| anyhow::anyhow!("colonne {i} vide"))
            };
            Row {
                id: text(0)?,
                typology: text(1)?,
                name: text(2)?,
                description: statement.text(3)?,
                street: statement.text(4)?,
                postcode: statement.text(5)?,
                city: statement.text(6)?,
                insee_code: text(7)?,
                lon: statement.double(8),
                lat: statement.double(9),
                phones_json: text(10)?,
                email: statement.text(11)?,
                website: statement.text(12)?,
                opening_hours: statement.text(13)?,
                wheelchair: text(14)?,
                source_id: text(15)?,
                source_ref: text(16)?,
                updated_at: text(17)?,
                lookup,
            }
        };
        if test {
            if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                return Err(cql2::TooCostly.into());
            }
            if !selection.row_passes(&row) {
                continue;
            }
        }
        if !each(&row)? {
            break;
        }
    }
    Ok(())
}

/// How many entries `selection` holds.
pub fn count(
    handle: &mut LockedSqliteHandle<'_>,
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
    let statement = Statement::prepare(
        handle,
        &format!("SELECT COUNT(*) FROM services{where_}"),
        &binds,
    )?;
    statement.step()?;
    Ok(u64::try_from(statement.int(0))?)
}
