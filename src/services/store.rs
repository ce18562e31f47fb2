//! SQL of the entries and of the organisations that source them.

use rustc_hash::FxHashMap as HashMap;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;

use super::{Closure, Content, Phone, Service, ServiceId, Status, Wheelchair};
use crate::db::{Store, Tx};
use crate::error::Result;
use crate::spatial::LonLat;
use crate::territory::InseeCode;
use crate::{in_tx, on_engine};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Organisation {
    pub id: String,
    pub name: String,
}

/// The organisation called `name`, created (kind `other`) when it does not exist yet.
pub async fn organisation_named(tx: &mut Tx, name: &str) -> Result<Organisation> {
    let found: Option<Organisation> = in_tx!(tx, |conn| {
        sqlx::query_as("SELECT id, name FROM organisations WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?
    });
    if let Some(found) = found {
        return Ok(found);
    }
    let organisation = Organisation {
        id: format!("org-{}", ServiceId::generate()),
        name: name.to_owned(),
    };
    in_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO organisations (id, name, kind, created_at) VALUES ($1, $2, 'other', $3)",
        )
        .bind(&organisation.id)
        .bind(&organisation.name)
        .bind(Utc::now())
        .execute(conn)
        .await
        .map(drop)?
    });
    Ok(organisation)
}

/// What the database already holds for one source_ref.
#[derive(Debug, Clone)]
pub struct Known {
    pub id: ServiceId,
    pub digest: String,
    pub published: bool,
    /// The digest of the record as the source last gave it (see `Draft::raw_digest`).
    pub source_digest: Option<String>,
    /// Its quality flags as stored, when it has some.
    pub quality: Option<String>,
    /// The line of the file being imported that names it (0: none yet).
    pub seen_at: u64,
}

/// Every entry of a source, by source_ref: lets an import classify rows without a query per row.
/// What an import needs to know of a source's entries: each one's key, id, digest and status,
/// and, for a source whose rows are matched by type, commune and position (the BPE), where each
/// stands (`with_places`).
pub async fn known_for_source(
    store: &Store,
    source_id: &str,
    with_places: bool,
) -> Result<(HashMap<String, Known>, crate::import::bpe::Previous)> {
    let (of_source,): (i64,) = on_engine!(store, |db| {
        sqlx::query_as("SELECT COUNT(*) FROM services WHERE source_id = $1")
            .bind(source_id)
            .fetch_one(db)
            .await?
    });
    let mut known = HashMap::default();
    known.reserve(usize::try_from(of_source).unwrap_or(0));
    let add =
        move |(known, places): &mut (HashMap<String, Known>, crate::import::bpe::Previous),
              row: super::bulk::SourceRow<'_>| {
            known.insert(
                row.source_ref.to_owned(),
                Known {
                    id: ServiceId(row.id.to_owned()),
                    digest: row.digest.to_owned(),
                    // A hidden duplicate is still listed by its source.
                    published: row.status == "published" || row.status == "duplicate",
                    source_digest: row.source_digest.map(str::to_owned),
                    quality: row.quality.map(str::to_owned),
                    seen_at: 0,
                },
            );
            if with_places {
                places.add(
                    row.source_ref,
                    row.typology,
                    row.insee_code,
                    LonLat::new(row.lon, row.lat),
                );
            }
        };
    let state = (known, crate::import::bpe::Previous::default());
    let source_id = source_id.to_owned();
    match store {
        Store::Sqlite(pool) => {
            let (all,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(rowid), 0) FROM services")
                .fetch_one(pool)
                .await?;
            // Through the (source_id, source_ref) index for a small source; by reading the
            // table in order for one that holds much of it (a national harvest): ten times
            // faster than millions of lookups from the index into the table.
            let scan = of_source * 8 > all;
            let mut conn = pool.acquire().await?;
            let runtime = tokio::runtime::Handle::current();
            let read = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let mut handle = runtime.block_on(conn.lock_handle())?;
                let mut state = state;
                super::bulk::read_of_source(&mut handle, &source_id, scan, |row| {
                    add(&mut state, row)
                })?;
                Ok(state)
            });
            Ok(read.await.map_err(anyhow::Error::from)??)
        }
        Store::Postgres(pool) => {
            let pool = pool.clone();
            let runtime = tokio::runtime::Handle::current();
            let read = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let mut state = state;
                runtime.block_on(async {
                    let mut rows = sqlx::query(super::bulk::OF_SOURCE)
                        .bind(&source_id)
                        .fetch(&pool);
                    while let Some(row) = rows.try_next().await? {
                        add(&mut state, super::bulk::SourceRow::of_postgres(&row)?);
                    }
                    anyhow::Ok(())
                })?;
                Ok(state)
            });
            Ok(read.await.map_err(anyhow::Error::from)??)
        }
    }
}

/// Streams every published entry into `state` through `each`, and hands `state` back.
///
/// Two threads share the work: one steps SQLite (see [`super::bulk::read_published`]) and copies
/// rows into batches, the other runs `each` on them, so that a load of millions of entries
/// takes the time of the slower of the two rather than of both.
pub async fn for_each_published<S: Send + 'static>(
    store: &Store,
    state: S,
    each: fn(&mut S, super::bulk::PublishedRow<'_>) -> anyhow::Result<()>,
) -> Result<S> {
    use super::bulk::RowBatch;
    const BATCH_ROWS: usize = 4_096;

    let runtime = tokio::runtime::Handle::current();
    let store = store.clone();
    let state = tokio::task::spawn_blocking(move || -> anyhow::Result<S> {
        let (batches, received) = std::sync::mpsc::sync_channel::<RowBatch>(4);
        std::thread::scope(|scope| {
            let consumer = scope.spawn(move || -> anyhow::Result<S> {
                let mut state = state;
                for batch in received {
                    for row in batch.rows() {
                        each(&mut state, row)?;
                    }
                }
                Ok(state)
            });
            let mut batch = RowBatch::with_capacity(BATCH_ROWS);
            let mut push = |row: super::bulk::PublishedRow<'_>| {
                batch.push(row);
                if batch.len() == BATCH_ROWS {
                    let full = std::mem::replace(&mut batch, RowBatch::with_capacity(BATCH_ROWS));
                    batches
                        .send(full)
                        .map_err(|_| anyhow::anyhow!("lecture des fiches interrompue"))?;
                }
                anyhow::Ok(())
            };
            let read = match &store {
                Store::Sqlite(pool) => runtime
                    .block_on(pool.acquire())
                    .map_err(Into::into)
                    .and_then(|mut conn| {
                        let mut handle = runtime.block_on(conn.lock_handle())?;
                        super::bulk::read_published(&mut handle, &mut push).map(drop)
                    }),
                Store::Postgres(pool) => runtime.block_on(async {
                    let mut rows = sqlx::query(super::bulk::PUBLISHED_ROWS).fetch(pool);
                    while let Some(row) = rows.try_next().await? {
                        push(super::bulk::PublishedRow::of_postgres(&row)?)?;
                    }
                    anyhow::Ok(())
                }),
            }
            .and_then(|()| {
                batches
                    .send(batch)
                    .map_err(|_| anyhow::anyhow!("lecture des fiches interrompue"))
            });
            drop(batches);
            // The consumer's own error, when it has one, says more than the reader's.
            let state = consumer.join().map_err(|_| {
                anyhow::anyhow!("lecture des fiches : le fil de traitement a paniqué")
            })??;
            read.map(|()| state)
        })
    })
    .await
    .map_err(anyhow::Error::from)??;
    Ok(state)
}

/// A connection of its own for a bulk write, closed when dropped. Rows reach it validated
/// against the taxonomy and the territory, so it skips SQLite's per-row foreign-key lookups,
/// which cost a third of an import's time.
pub async fn bulk_writer(pool: &crate::db::Pool) -> Result<sqlx::SqliteConnection> {
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut conn)
        .await?;
    // A large cache keeps a million-row transaction from spilling pages to disk before commit.
    sqlx::query("PRAGMA cache_size = -262144")
        .execute(&mut conn)
        .await?;
    // The index rebuild at the end of a bulk load sorts with a helper thread.
    sqlx::query("PRAGMA threads = 2").execute(&mut conn).await?;
    Ok(conn)
}

/// One entry to create or update, keyed by (source, source_ref).
#[derive(Debug, Clone)]
pub struct Upsert {
    pub id: ServiceId,
    /// Create (no entry has this source_ref yet) or update the entry `id`.
    pub is_new: bool,
    pub source_ref: String,
    pub digest: String,
    pub content: Content,
    pub verified_at: Option<DateTime<Utc>>,
    /// The record's digest as it came (see `Draft::raw_digest`).
    pub source_digest: Option<String>,
    /// The SIRET the source gives (see `Draft::valid_siret`).
    pub siret: Option<String>,
}

/// An entry as its row reads (the directory module reads them in bulk).
#[derive(sqlx::FromRow)]
pub(crate) struct ServiceRecord {
    id: String,
    typology_code: String,
    name: String,
    description: Option<String>,
    street: Option<String>,
    postcode: Option<String>,
    city: Option<String>,
    pub(crate) insee_code: String,
    lon: f64,
    lat: f64,
    phones: String,
    email: Option<String>,
    website: Option<String>,
    opening_hours: Option<String>,
    closures: String,
    wheelchair: String,
    wheelchair_note: Option<String>,
    quality: Option<String>,
    source_id: String,
    source_name: String,
    source_ref: String,
    status: String,
    verified_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ServiceRecord> for Service {
    type Error = anyhow::Error;
    fn try_from(r: ServiceRecord) -> anyhow::Result<Self> {
        let phones: Vec<String> = serde_json::from_str(&r.phones)?;
        let closures: Vec<Closure> = serde_json::from_str(&r.closures)?;
        Ok(Service {
            id: ServiceId(r.id),
            content: Content {
                typology: r.typology_code,
                name: r.name,
                description: r.description,
                street: r.street,
                postcode: r.postcode,
                city: r.city,
                insee_code: InseeCode::parse(&r.insee_code).map_err(anyhow::Error::msg)?,
                location: LonLat::new(r.lon, r.lat),
                phones: phones
                    .iter()
                    .map(|p| Phone::parse(p).map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?,
                email: r.email,
                website: r.website,
                opening_hours: r.opening_hours,
                closures,
                wheelchair: Wheelchair::parse(&r.wheelchair).map_err(anyhow::Error::msg)?,
                wheelchair_note: r.wheelchair_note,
                quality: super::quality::from_stored(r.quality.as_deref()),
            },
            source_id: r.source_id,
            source_name: r.source_name,
            source_ref: r.source_ref,
            status: Status::parse(&r.status)
                .ok_or_else(|| anyhow::anyhow!("statut inconnu {}", r.status))?,
            verified_at: r.verified_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const ONE_ENTRY: &str = "SELECT s.*, o.name AS source_name FROM services s
    JOIN organisations o ON o.id = s.source_id WHERE s.id = $1";

pub async fn get(store: &Store, id: &ServiceId) -> Result<Option<Service>> {
    let record: Option<ServiceRecord> = on_engine!(store, |db| {
        sqlx::query_as(ONE_ENTRY)
            .bind(id.as_str())
            .fetch_optional(db)
            .await?
    });
    Ok(record.map(Service::try_from).transpose()?)
}

/// `get` within the caller's transaction.
pub async fn get_in(tx: &mut Tx, id: &ServiceId) -> Result<Option<Service>> {
    let record: Option<ServiceRecord> = in_tx!(tx, |conn| {
        sqlx::query_as(ONE_ENTRY)
            .bind(id.as_str())
            .fetch_optional(conn)
            .await?
    });
    Ok(record.map(Service::try_from).transpose()?)
}

/// Streams every published entry as the text index needs it into `state` through `each`, on a
/// blocking thread, from one snapshot of the database, and hands `state` back.
pub async fn for_each_published_text<S: Send + 'static>(
    store: &Store,
    state: S,
    mut each: impl FnMut(&mut S, super::bulk::TextRow<'_>) -> anyhow::Result<()> + Send + 'static,
) -> Result<S> {
    match store {
        Store::Sqlite(pool) => {
            crate::db::raw::fold_rows(
                pool,
                super::bulk::PUBLISHED_TEXT,
                "lecture des fiches publiées",
                state,
                move |state, row| each(state, super::bulk::TextRow::read(row)?),
            )
            .await
        }
        Store::Postgres(pool) => {
            let pool = pool.clone();
            let runtime = tokio::runtime::Handle::current();
            let read = tokio::task::spawn_blocking(move || -> anyhow::Result<S> {
                let mut state = state;
                runtime.block_on(async {
                    let mut rows = sqlx::query(super::bulk::PUBLISHED_TEXT_ROWS).fetch(&pool);
                    while let Some(row) = rows.try_next().await? {
                        each(&mut state, super::bulk::TextRow::of_postgres(&row)?)?;
                    }
                    anyhow::Ok(())
                })?;
                Ok(state)
            });
            Ok(read.await.map_err(anyhow::Error::from)??)
        }
    }
}

pub async fn count(store: &Store) -> Result<i64> {
    let (n,): (i64,) = on_engine!(store, |db| {
        sqlx::query_as("SELECT COUNT(*) FROM services")
            .fetch_one(db)
            .await?
    });
    Ok(n)
}

pub async fn published_count(store: &Store) -> Result<u64> {
    let (n,): (i64,) = on_engine!(store, |db| {
        sqlx::query_as("SELECT COUNT(*) FROM services WHERE status = 'published'")
            .fetch_one(db)
            .await?
    });
    Ok(n.unsigned_abs())
}

pub async fn published_in_commune(store: &Store, code: &InseeCode) -> Result<i64> {
    let (n,): (i64,) = on_engine!(store, |db| {
        sqlx::query_as(
            "SELECT COUNT(*) FROM services WHERE insee_code = $1 AND status = 'published'",
        )
        .bind(code.as_str())
        .fetch_one(db)
        .await?
    });
    Ok(n)
}

/// The entries `ids`, in no particular order (missing ones left out): one query for a page of
/// search results.
pub async fn get_many(store: &Store, ids: &[ServiceId]) -> Result<Vec<Service>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let records: Vec<ServiceRecord> = on_engine!(store, |db| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT s.*, o.name AS source_name FROM services s
             JOIN organisations o ON o.id = s.source_id WHERE s.id IN (",
        );
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.as_str());
        }
        q.push(")");
        q.build_query_as().fetch_all(db).await?
    });
    Ok(records
        .into_iter()
        .map(Service::try_from)
        .collect::<anyhow::Result<_>>()?)
}

fn phones_json(content: &Content) -> Result<String> {
    Ok(
        serde_json::to_string(&content.phones.iter().map(Phone::e164).collect::<Vec<_>>())
            .map_err(anyhow::Error::from)?,
    )
}

/// What a write did to an entry, as the change log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    /// A field the indexes hold, or the status.
    Changed,
    /// Only what no index holds (the confirmation, the phones, the closures…).
    Touched,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Changed => "changed",
            Change::Touched => "touched",
        }
    }
}

/// The change log's time stamp of `at`: RFC 3339 in UTC to the microsecond, fixed width, so that
/// stamps order as text.
pub fn log_stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Appends `change` of the entry `id` to the change log, in the caller's transaction: done by
/// every statement of this module that writes an entry.
async fn log_change(tx: &mut Tx, id: &ServiceId, change: Change, at: DateTime<Utc>) -> Result<()> {
    crate::db::order_log(tx).await?;
    in_tx!(tx, |conn| {
        sqlx::query("INSERT INTO change_log (entry_id, kind, at) VALUES ($1, $2, $3)")
            .bind(id.as_str())
            .bind(change.as_str())
            .bind(crate::db::Stamp(at))
            .execute(conn)
            .await
            .map(drop)?
    });
    Ok(())
}

/// Creates one published entry (a contributor's, confirmed `now`), in the caller's transaction.
pub async fn insert(
    tx: &mut Tx,
    id: &ServiceId,
    source_id: &str,
    source_ref: &str,
    content: &Content,
    now: DateTime<Utc>,
) -> Result<()> {
    let phones = phones_json(content)?;
    let closures = serde_json::to_string(&content.closures).map_err(anyhow::Error::from)?;
    in_tx!(tx, |conn| sqlx::query(
        "INSERT INTO services (id, typology_code, name, description, street, postcode, city,
         insee_code, lon, lat, phones, email, website, opening_hours, closures, wheelchair,
         wheelchair_note, verified_at, content_hash, source_id, source_ref, status, created_at,
         updated_at, quality)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
         $18, $19, $20, $21, 'published', $18, $18, $22)",
    )
    .bind(id.as_str())
    .bind(&content.typology)
    .bind(&content.name)
    .bind(&content.description)
    .bind(&content.street)
    .bind(&content.postcode)
    .bind(&content.city)
    .bind(content.insee_code.as_str())
    .bind(content.location.lon)
    .bind(content.location.lat)
    .bind(&phones)
    .bind(&content.email)
    .bind(&content.website)
    .bind(&content.opening_hours)
    .bind(&closures)
    .bind(content.wheelchair.as_str())
    .bind(&content.wheelchair_note)
    .bind(now)
    .bind(content.digest())
    .bind(source_id)
    .bind(source_ref)
    .bind(super::quality::to_stored(&content.quality))
    .execute(conn)
    .await
    .map(drop)?);
    log_change(tx, id, Change::Created, now).await
}

/// Writes an entry's content, status and confirmation, in the caller's transaction, logged as
/// `change`.
#[allow(clippy::too_many_arguments)]
pub async fn overwrite(
    tx: &mut Tx,
    id: &ServiceId,
    content: &Content,
    status: Status,
    verified_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    change: Change,
) -> Result<()> {
    let phones = phones_json(content)?;
    let closures = serde_json::to_string(&content.closures).map_err(anyhow::Error::from)?;
    in_tx!(tx, |conn| sqlx::query(
        "UPDATE services SET typology_code = $2, name = $3, description = $4, street = $5,
         postcode = $6, city = $7, insee_code = $8, lon = $9, lat = $10, phones = $11,
         email = $12, website = $13, opening_hours = $14, closures = $15, wheelchair = $16,
         wheelchair_note = $17, verified_at = $18, content_hash = $19, status = $20,
         updated_at = $21, quality = $22, source_digest = NULL WHERE id = $1",
    )
    .bind(id.as_str())
    .bind(&content.typology)
    .bind(&content.name)
    .bind(&content.description)
    .bind(&content.street)
    .bind(&content.postcode)
    .bind(&content.city)
    .bind(content.insee_code.as_str())
    .bind(content.location.lon)
    .bind(content.location.lat)
    .bind(&phones)
    .bind(&content.email)
    .bind(&content.website)
    .bind(&content.opening_hours)
    .bind(&closures)
    .bind(content.wheelchair.as_str())
    .bind(&content.wheelchair_note)
    .bind(verified_at)
    .bind(content.digest())
    .bind(status.as_str())
    .bind(now)
    .bind(super::quality::to_stored(&content.quality))
    .execute(conn)
    .await
    .map(drop)?);
    log_change(tx, id, change, now).await
}

/// Gives the entry `id` to another source (a claim, or its release), in the caller's
/// transaction: the content stays, the digest of the source's last record is forgotten (the
/// next harvest of that source reads the record again), and the change is logged so that
/// caches keyed on the data version see the new signature.
pub async fn reassign(
    tx: &mut Tx,
    id: &ServiceId,
    source_id: &str,
    source_ref: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    in_tx!(tx, |conn| sqlx::query(
        "UPDATE services SET source_id = $2, source_ref = $3, source_digest = NULL, updated_at = $4
         WHERE id = $1",
    )
    .bind(id.as_str())
    .bind(source_id)
    .bind(source_ref)
    .bind(now)
    .execute(conn)
    .await
    .map(drop)?);
    log_change(tx, id, Change::Touched, now).await
}

/// An entry as the contributors' list shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub typology_code: String,
    pub insee_code: String,
    pub status: String,
    pub verified_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub source_name: String,
    /// Its quality flags as stored (NULL: none).
    pub quality: Option<String>,
    /// Its state in the review campaign of the list (`to_review`, `confirmed`, `updated`).
    pub review_state: Option<String>,
}

/// A review campaign's days, as instants compare in the database: from its first day to the
/// day after its last.
#[derive(Debug, Clone)]
pub struct ReviewWindow {
    pub from: crate::db::Day,
    pub until: crate::db::Day,
}

impl ReviewWindow {
    pub fn days(first: chrono::NaiveDate, last: chrono::NaiveDate) -> Self {
        Self {
            from: crate::db::Day(first),
            until: crate::db::Day(last + chrono::Days::new(1)),
        }
    }
}

/// Pushes the SQL expression of the review state of the entry `s` in `window`: `updated` when a
/// person, a script or a contributor's upload changed it (or restored a version) during the
/// window, else `confirmed` when it was confirmed (verified_at) during it, else `to_review`.
/// National imports run from the command line (no `started_by`) review nothing.
pub fn push_review_state<'a, DB: sqlx::Database>(
    q: &mut sqlx::QueryBuilder<'a, DB>,
    window: &ReviewWindow,
) where
    crate::db::Day: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    // One set of the entries changed in the window, built once per query (not one lookup per
    // entry): the window holds few changes, the directory many entries.
    q.push(
        "(CASE WHEN s.id IN (SELECT h.service_id FROM service_history h
             LEFT JOIN imports i ON h.actor_kind = 'import' AND i.id = h.actor_id
             WHERE h.action IN ('updated', 'restored')
             AND (h.actor_kind <> 'import' OR i.started_by IS NOT NULL) AND h.at >= ",
    )
    .push_bind(window.from)
    .push(" AND h.at < ")
    .push_bind(window.until)
    .push(") THEN 'updated' WHEN s.verified_at >= ")
    .push_bind(window.from)
    .push(" AND s.verified_at < ")
    .push_bind(window.until)
    .push(" THEN 'confirmed' ELSE 'to_review' END)");
}

/// What the contributors' list is narrowed to.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// One organisation's entries (none: every organisation's, for the operator).
    pub organisation: Option<String>,
    /// `a_verifier` (never confirmed, or not for six months), `publiees`, `retirees`.
    pub state: Option<String>,
    pub typology: Option<String>,
    pub insee_code: Option<String>,
    /// Words of the name.
    pub name: Option<String>,
    /// The review campaign whose state each entry shows…
    pub review: Option<ReviewWindow>,
    /// …and the one state kept (`to_review`, `confirmed`, `updated`): published entries only.
    pub review_state: Option<String>,
    /// Only entries with a quality flag: any (`None` inside) or of this code.
    pub flagged: Option<Option<super::quality::QualityCode>>,
}

/// The entries matching `filter`, by name, at most `limit`; and how many match in all.
pub async fn list(
    store: &Store,
    filter: &ListFilter,
    stale_before: DateTime<Utc>,
    limit: i64,
) -> Result<(Vec<Listed>, i64)> {
    on_engine!(store, |db| {
        let build = |select: &str, review_column: bool| {
            let mut q = crate::db::builder(db, select);
            match (&filter.review, review_column) {
                (Some(window), true) => {
                    q.push(", ");
                    push_review_state(&mut q, window);
                    q.push(" AS review_state");
                }
                (None, true) => {
                    q.push(", NULL AS review_state");
                }
                (_, false) => {}
            }
            q.push(" FROM services s JOIN organisations o ON o.id = s.source_id WHERE 1 = 1");
            if let Some(organisation) = &filter.organisation {
                q.push(" AND s.source_id = ")
                    .push_bind(organisation.clone());
            }
            match filter.state.as_deref() {
                Some("a_verifier") => {
                    q.push(
                    " AND s.status = 'published' AND (s.verified_at IS NULL OR s.verified_at < ",
                )
                .push_bind(stale_before)
                .push(")");
                }
                Some("retirees") => {
                    q.push(" AND s.status = 'withdrawn'");
                }
                Some("publiees") => {
                    q.push(" AND s.status = 'published'");
                }
                _ => {}
            }
            match filter.flagged {
                Some(None) => {
                    q.push(" AND s.quality IS NOT NULL");
                }
                Some(Some(code)) => {
                    // Codes are plain words: a match on the quoted code cannot hit another field.
                    q.push(" AND s.quality IS NOT NULL AND s.quality LIKE ")
                        .push_bind(format!("%\"code\":\"{}\"%", code.as_str()));
                }
                None => {}
            }
            if let Some(typology) = &filter.typology {
                q.push(" AND s.typology_code = ")
                    .push_bind(typology.clone());
            }
            if let Some(code) = &filter.insee_code {
                q.push(" AND s.insee_code = ").push_bind(code.clone());
            }
            if let Some(name) = &filter.name {
                q.push(" AND LOWER(s.name) LIKE ")
                    .push_bind(format!("%{}%", name.to_lowercase()));
            }
            if let (Some(window), Some(state)) = (&filter.review, &filter.review_state) {
                q.push(" AND s.status = 'published' AND ");
                push_review_state(&mut q, window);
                q.push(" = ").push_bind(state.clone());
            }
            q
        };
        let mut rows = build(
            "SELECT s.id, s.name, s.typology_code, s.insee_code, s.status, s.verified_at,
         s.updated_at, o.name AS source_name, s.quality",
            true,
        );
        rows.push(" ORDER BY s.name LIMIT ").push_bind(limit);
        let listed: Vec<Listed> = rows.build_query_as().fetch_all(db).await?;
        let (total,): (i64,) = build("SELECT COUNT(*)", false)
            .build_query_as()
            .fetch_one(db)
            .await?;
        Ok((listed, total))
    })
}
