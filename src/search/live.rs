//! The live search indexes of one process: the spatial index in memory and the text index on
//! disk, kept at the change log's head by applying its rows past the position each stands at,
//! in time proportional to what changed.
//!
//! One applier at a time per process (the `applier` lock) owns the text index's writer, held
//! open for the life of the process: the command line never writes the text index of a
//! database a server serves (imports write the database and its log only), so no two writers
//! fight over the directory. A write of this process applies the log right after its commit;
//! a server also applies it when PostgreSQL notifies a write, and every [`FOLLOW_INTERVAL`]
//! otherwise, which is how it sees a command-line import or another instance's write (see
//! [`follow`]). A full rebuild happens only for an index of another schema version, one whose
//! position the log was pruned past, or `check --repair`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustc_hash::FxHashSet;

use super::engine::SearchIndex;
use super::spatial::{self, Attributes, SpatialEntry};
use super::text::{self, TextIndex, TextWriter};
use crate::db::{self, Store};
use crate::import::Reference;
use crate::services::cache::ServiceCache;
use crate::services::{ServiceId, Status};
use crate::{in_tx, on_engine};

/// How often a server applies what other processes wrote.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

/// Rows of the log read and applied at once: a large import is applied in steps, each visible.
const BATCH_ROWS: i64 = 50_000;

/// Up to this many changed entries in a step are made searchable through the text index's small
/// index in memory and committed to disk later (about once a second, by the server's follower);
/// a larger step is committed at once.
const SEARCHABLE_SOON_MAX: usize = 2_000;

/// How often a server folds the database's write-ahead log into its file (see
/// `db::Checkpoints::Background`).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// How often the text index's changes are committed to disk (several file syncs each; queries
/// see them at once through the index in memory, a restart applies the log since).
pub const TEXT_COMMIT_INTERVAL: Duration = Duration::from_secs(10);

/// How long the change log keeps rows every index has applied, for a process that restarts
/// (or a second instance) to catch up from it rather than rebuild.
pub const LOG_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What one catch-up did, for the logs and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CaughtUp {
    /// Change-log rows applied.
    pub rows: usize,
    /// Entries re-read and placed again (or removed).
    pub entries: usize,
    /// Whether the indexes were rebuilt whole (the log was pruned past their position).
    pub rebuilt: bool,
    /// The position both indexes stand at now.
    pub position: i64,
}

/// Why the indexes are built whole rather than caught up from the log.
#[derive(Debug, Clone, Copy)]
enum Rebuild {
    /// The text index has no position (new, of another schema version, or older than the log).
    NoPosition,
    /// The log was pruned past the indexes' position.
    Pruned,
    /// `check --repair`.
    Asked,
}

/// The applier's side: the text index's writer and how far it went.
struct Applier {
    writer: Option<TextWriter>,
    /// Position of the changes handed to the writer (committed or not): what searches show.
    text_applied: i64,
    /// When the text index was last committed.
    committed_at: Instant,
}

/// The spatial and text indexes of this process, with their position in the change log.
pub struct LiveIndexes {
    /// What queries read: a whole index, swapped, never changed in place.
    current: RwLock<Arc<SearchIndex>>,
    text: TextIndex,
    dir: PathBuf,
    reference: Reference,
    applier: tokio::sync::Mutex<Applier>,
    /// The text index's position as searches see it (committed or in memory).
    text_visible: AtomicI64,
    /// The text index's committed position (what a restart starts from).
    text_position: AtomicI64,
    /// The log's head when last read, to tell the lag.
    head_seen: AtomicI64,
    /// Held by each write transaction of this process: writers take turns here rather than in
    /// SQLite's busy handler, which sleeps.
    writes: Arc<tokio::sync::Mutex<()>>,
    /// Entries recently read, evicted by the log's rows as they are applied.
    pub service_cache: Arc<ServiceCache>,
    /// What caches of whole-directory products key on (see [`LiveIndexes::settled_index`]),
    /// and since when.
    settled: std::sync::Mutex<(Arc<SearchIndex>, Instant)>,
    /// How long a change may take to reach those caches, in milliseconds.
    staleness_ms: std::sync::atomic::AtomicU64,
}

/// Above this many entries, a server builds a missing text index while it answers searches
/// that need no words (below, the build takes a second or two and happens before listening).
pub const BACKGROUND_TEXT_BUILD_ABOVE: usize = 100_000;

/// The entries the search API keeps in memory: at most about 200 MB, each entry with its JSON.
const SERVICE_CACHE_ENTRIES: usize = 100_000;

impl LiveIndexes {
    /// Opens the text index in `dir` and loads the spatial index from the database, then
    /// brings both to the log's head: the text index from its own position (rebuilt only when
    /// it has none, is of another schema version, or the log was pruned past it).
    pub async fn open(store: &Store, reference: Reference, dir: &Path) -> anyhow::Result<Self> {
        Self::open_with(store, reference, dir, None).await
    }

    /// The same; with `background_above`, a text index that must be built from every entry
    /// of a directory of more entries than that (a new database: after a national harvest,
    /// minutes for millions of entries) is left to the server's follower ([`follow`]), so that
    /// searches by place and typology answer at once; searches by words are refused with 503
    /// `text_index_building` until it is built, and `/readyz` says not ready.
    pub async fn open_with(
        store: &Store,
        reference: Reference,
        dir: &Path,
        background_above: Option<usize>,
    ) -> anyhow::Result<Self> {
        let owned = dir.to_owned();
        let taxonomy = reference.taxonomy.clone();
        let text =
            tokio::task::spawn_blocking(move || TextIndex::open_or_create(&owned, &taxonomy))
                .await??;
        let started = Instant::now();
        // Read before the rows: a write landing during the load is applied again, harmlessly.
        let head = db::log_head(store).await?;
        let spatial = spatial::load(store).await?;
        tracing::info!(
            entries = spatial.len(),
            ms = started.elapsed().as_millis() as u64,
            "spatial index loaded"
        );
        let text_position = text.position().unwrap_or(-1);
        let entries = spatial.len();
        let first = in_service(SearchIndex {
            spatial,
            version: Some(head.to_string()),
            position: head,
        });
        let live = LiveIndexes {
            settled: std::sync::Mutex::new((first.clone(), Instant::now())),
            staleness_ms: Default::default(),
            current: RwLock::new(first),
            text,
            dir: dir.to_owned(),
            reference,
            applier: tokio::sync::Mutex::new(Applier {
                writer: None,
                text_applied: text_position,
                committed_at: Instant::now(),
            }),
            text_visible: AtomicI64::new(text_position),
            text_position: AtomicI64::new(text_position),
            head_seen: AtomicI64::new(head),
            writes: Arc::default(),
            service_cache: Arc::new(ServiceCache::new(SERVICE_CACHE_ENTRIES)),
        };
        if text_position < 0 && background_above.is_some_and(|above| entries > above) {
            tracing::info!(
                "text index to build from the database: in the background, searches by words wait for it"
            );
        } else {
            live.catch_up(store).await?;
        }
        Ok(live)
    }

    /// Whether searches by words can be answered: not while the text index is first built.
    pub fn words_searchable(&self) -> crate::error::Result<()> {
        if self.text_visible.load(Ordering::Acquire) >= 0 {
            return Ok(());
        }
        Err(crate::error::Error::Busy {
            code: "text_index_building",
            detail: "index des mots en construction après le démarrage : réessayez dans un instant ; les recherches par lieu et par type répondent déjà / the word index is being built after start: retry shortly; searches by place and type already answer".to_owned(),
            retry_after: 10,
        })
    }

    /// The index queries read now (cheap: an `Arc`).
    pub fn search_index(&self) -> Arc<SearchIndex> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The index that caches of whole-directory products key on: the GIS files, the OGC
    /// counts, coverage, the published counts, printed guides. It follows the live index but
    /// moves at most once per [`LiveIndexes::set_cache_staleness`], so that a stream of small
    /// writes (a campaign week) does not rebuild them after each one; a change reaches them
    /// within that time. With no staleness (the default) it is the live index.
    pub fn settled_index(&self) -> Arc<SearchIndex> {
        let current = self.search_index();
        let mut settled = self
            .settled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let staleness = Duration::from_millis(self.staleness_ms.load(Ordering::Relaxed));
        if settled.0.position != current.position && settled.1.elapsed() >= staleness {
            *settled = (current, Instant::now());
        }
        settled.0.clone()
    }

    /// The data version of [`LiveIndexes::settled_index`].
    pub fn settled_version(&self) -> Option<String> {
        self.settled_index().version.clone()
    }

    /// How long a change may take to reach the caches of whole-directory products.
    pub fn set_cache_staleness(&self, staleness: Duration) {
        self.staleness_ms.store(
            u64::try_from(staleness.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn text(&self) -> &TextIndex {
        &self.text
    }

    /// Where the text index lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The turn of a write transaction of this process (see [`LiveIndexes::writes`]).
    pub async fn write_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.writes.clone().lock_owned().await
    }

    /// Positions of the spatial and text indexes and the log's head when last read.
    pub fn positions(&self) -> Positions {
        Positions {
            spatial: self.search_index().position,
            text: self.text_visible.load(Ordering::Acquire),
            text_committed: self.text_position.load(Ordering::Acquire),
            head: self.head_seen.load(Ordering::Acquire),
        }
    }

    /// Applies the change log past the indexes' positions: each changed entry is read again
    /// and its text document and spatial placement replaced or removed. Writes of this process
    /// call it after their commit; a server calls it every [`FOLLOW_INTERVAL`].
    pub async fn catch_up(&self, store: &Store) -> anyhow::Result<CaughtUp> {
        let mut applier = self.applier.lock().await;
        let mut done = CaughtUp::default();
        loop {
            let step_started = Instant::now();
            let current = self.search_index();
            let from = current.position.min(applier.text_applied);
            let rows: Vec<(i64, String, String)> = on_engine!(store, |db| {
                sqlx::query_as(
                    "SELECT seq, entry_id, kind FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(from)
                .bind(BATCH_ROWS)
                .fetch_all(db)
                .await?
            });
            // Sequence numbers follow one another: a gap after the position means rows were
            // pruned (only then is the fact worth reading).
            let gap = rows.first().is_some_and(|(seq, _, _)| *seq > from + 1);
            let pruned: i64 = if gap {
                db::fact(store, "log_pruned_through")
                    .await?
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            } else {
                0
            };
            if applier.text_applied < 0 || from < pruned {
                let reason = if applier.text_applied < 0 {
                    Rebuild::NoPosition
                } else {
                    Rebuild::Pruned
                };
                self.rebuild(store, &mut applier, reason).await?;
                done.rebuilt = true;
                continue;
            }
            let Some(&(last, _, _)) = rows.last() else {
                self.head_seen.fetch_max(from, Ordering::AcqRel);
                break;
            };
            self.head_seen.fetch_max(last, Ordering::AcqRel);
            let mut for_spatial = FxHashSet::default();
            let mut for_text = FxHashSet::default();
            let mut for_cache = FxHashSet::default();
            for (seq, id, kind) in &rows {
                let Some(id) = ServiceId::parse(id) else {
                    continue;
                };
                for_cache.insert(id.clone());
                if kind == "touched" {
                    continue;
                }
                if *seq > current.position {
                    for_spatial.insert(id.clone());
                }
                if *seq > applier.text_applied {
                    for_text.insert(id);
                }
            }
            if for_spatial.is_empty() && for_text.is_empty() {
                // Only confirmations and the like: the indexes hold nothing they changed.
                applier.text_applied = last;
                self.text_visible.store(last, Ordering::Release);
                let changed: Vec<ServiceId> = for_cache.into_iter().collect();
                let version = Some(last.to_string());
                self.service_cache.advance(
                    current.version.as_deref(),
                    version.as_deref(),
                    &changed,
                );
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(SearchIndex {
                    spatial: current.spatial.clone(),
                    version,
                    position: last,
                });
                done.rows += rows.len();
                done.position = last;
                continue;
            }
            let wanted: Vec<ServiceId> = for_spatial.union(&for_text).cloned().collect();
            let mut published = Vec::new();
            for chunk in wanted.chunks(500) {
                published.extend(
                    crate::services::store::get_many(store, chunk)
                        .await?
                        .into_iter()
                        .filter(|s| s.status == Status::Published),
                );
            }
            done.rows += rows.len();
            done.entries += wanted.len();
            let read_us = step_started.elapsed().as_micros() as u64;
            let reference = self.reference.clone();
            let mut writer = match applier.writer.take() {
                Some(writer) => writer,
                None => self.text.writer()?,
            };
            let previous = current.clone();
            let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let published_ids: FxHashSet<&ServiceId> =
                    published.iter().map(|s| &s.id).collect();
                let gone = |ids: &FxHashSet<ServiceId>| -> Vec<ServiceId> {
                    ids.iter()
                        .filter(|id| !published_ids.contains(id))
                        .cloned()
                        .collect()
                };
                let docs: Vec<_> = published
                    .iter()
                    .filter(|s| for_text.contains(&s.id))
                    .map(|s| text::doc_for(s, &reference.locator))
                    .collect();
                let removed = gone(&for_text);
                let soon = docs.len() + removed.len() <= SEARCHABLE_SOON_MAX;
                writer.upsert(&docs, soon)?;
                writer.remove(&removed, soon)?;
                let mut spatial = previous.spatial.clone();
                for id in gone(&for_spatial) {
                    spatial.remove(&id);
                }
                for s in published.iter().filter(|s| for_spatial.contains(&s.id)) {
                    let entry = spatial_entry(s);
                    if !spatial.holds(&s.content.typology, &entry) {
                        spatial.upsert(&s.content.typology, entry);
                    }
                }
                let mut compacted = false;
                if spatial.needs_compaction() {
                    let started = Instant::now();
                    spatial = spatial.compacted();
                    compacted = true;
                    tracing::info!(
                        ms = started.elapsed().as_millis() as u64,
                        "spatial index compacted"
                    );
                }
                if !soon {
                    writer.commit(last)?;
                }
                Ok((writer, spatial, !soon, compacted))
            })
            .await?;
            let writer = match writer {
                Ok(done) => done,
                Err(error) => {
                    // The writer is gone with what it held uncommitted: start again from the
                    // last commit.
                    let committed = self.text_position.load(Ordering::Acquire);
                    applier.text_applied = committed;
                    self.text_visible.store(committed, Ordering::Release);
                    self.text.forget_recent();
                    return Err(error);
                }
            };
            let (writer, spatial, committed, compacted) = writer;
            tracing::debug!(
                rows = rows.len(),
                read_us,
                applied_us = step_started.elapsed().as_micros() as u64,
                "change log step applied"
            );
            applier.writer = Some(writer);
            applier.text_applied = last;
            self.text_visible.store(last, Ordering::Release);
            if committed {
                applier.committed_at = Instant::now();
                self.text_position.store(last, Ordering::Release);
            }
            let changed: Vec<ServiceId> = for_cache.into_iter().collect();
            let version = Some(last.to_string());
            self.service_cache
                .advance(current.version.as_deref(), version.as_deref(), &changed);
            let next = SearchIndex {
                spatial,
                version,
                position: last,
            };
            // A new base answers at once and gets its tree of all entries in the background.
            let next = if compacted {
                in_service(next)
            } else {
                Arc::new(next)
            };
            *self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
            done.position = last;
        }
        done.position = self.search_index().position;
        Ok(done)
    }

    /// Rebuilds both indexes from the database, saying why in the log.
    async fn rebuild(
        &self,
        store: &Store,
        applier: &mut Applier,
        reason: Rebuild,
    ) -> anyhow::Result<()> {
        match reason {
            Rebuild::Pruned => tracing::warn!(
                position = applier.text_applied,
                "search indexes rebuilt from the database: the change log was pruned past their position"
            ),
            Rebuild::NoPosition => tracing::info!(
                "search indexes built from the database: the text index had no position in the change log"
            ),
            Rebuild::Asked => tracing::info!("search indexes rebuilt from the database, as asked"),
        }
        // The writer must be released: the rebuild opens one of its own.
        applier.writer = None;
        self.text.forget_recent();
        let head = db::log_head(store).await?;
        self.text.sync_from_db(store, &self.reference).await?;
        let spatial = spatial::load(store).await?;
        applier.text_applied = head;
        applier.committed_at = Instant::now();
        self.text_visible.store(head, Ordering::Release);
        self.text_position.store(head, Ordering::Release);
        self.service_cache
            .advance(None, Some(&head.to_string()), &[]);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = in_service(SearchIndex {
            spatial,
            version: Some(head.to_string()),
            position: head,
        });
        Ok(())
    }

    /// Commits the text index's changes held in memory (with their position), when there are
    /// any and the last commit is older than `min_age`: the server's follower calls it about
    /// once a second, and once more when it stops. True when it committed.
    pub async fn commit_text(&self, min_age: Duration) -> anyhow::Result<bool> {
        let mut applier = self.applier.lock().await;
        let position = applier.text_applied;
        if position <= self.text_position.load(Ordering::Acquire)
            || applier.committed_at.elapsed() < min_age
        {
            return Ok(false);
        }
        let mut writer = match applier.writer.take() {
            Some(writer) => writer,
            None => self.text.writer()?,
        };
        let (writer, done) = tokio::task::spawn_blocking(move || {
            let done = writer.commit(position);
            (writer, done)
        })
        .await?;
        applier.writer = Some(writer);
        done?;
        applier.committed_at = Instant::now();
        self.text_position.store(position, Ordering::Release);
        Ok(true)
    }

    /// Rebuilds both indexes from the database whatever their position (`check --repair`).
    pub async fn rebuild_all(&self, store: &Store) -> anyhow::Result<()> {
        let mut applier = self.applier.lock().await;
        self.rebuild(store, &mut applier, Rebuild::Asked).await?;
        drop(applier);
        self.catch_up(store).await?;
        Ok(())
    }

    /// Records this process's position in the database (for pruning and `check`).
    pub async fn record_position(&self, store: &Store) -> anyhow::Result<()> {
        let positions = self.positions();
        on_engine!(store, |db| {
            sqlx::query(
                "INSERT INTO index_positions (name, seq, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
            )
            .bind(self.dir.display().to_string())
            .bind(positions.text_committed)
            .bind(chrono::Utc::now())
            .execute(db)
            .await
            .map(drop)?
        });
        Ok(())
    }
}

/// Where the indexes of a process stand in the change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Positions {
    pub spatial: i64,
    /// What text searches show (the last commit and the changes held in memory since).
    pub text: i64,
    /// The text index's last commit (a restart starts there).
    pub text_committed: i64,
    /// The log's last row when last read.
    pub head: i64,
}

impl Positions {
    /// Rows of the log not applied yet by the slower index.
    pub fn lag(&self) -> i64 {
        (self.head - self.spatial.min(self.text)).max(0)
    }
}

/// Deletes the change-log rows every recorded index has applied and that are older than
/// `retention`; the last row always stays (it is the data version). Returns the rows deleted.
pub async fn prune_log(store: &Store, retention: Duration) -> anyhow::Result<u64> {
    let mut tx = store.begin_writing().await?;
    let before =
        chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    // An index that reported nothing for as long as the retention is gone (or will rebuild).
    let (applied,): (Option<i64>,) = in_tx!(&mut tx, |conn| {
        sqlx::query_as("SELECT MIN(seq) FROM index_positions WHERE updated_at > $1")
            .bind(before)
            .fetch_one(conn)
            .await?
    });
    let head = db::log_head_in(&mut tx).await?;
    let through = applied.unwrap_or(head).min(head - 1);
    let (last_old,): (Option<i64>,) = in_tx!(&mut tx, |conn| {
        sqlx::query_as("SELECT MAX(seq) FROM change_log WHERE seq <= $1 AND at <= $2")
            .bind(through)
            .bind(db::Stamp(before))
            .fetch_one(conn)
            .await?
    });
    let Some(last_old) = last_old else {
        tx.rollback().await?;
        return Ok(0);
    };
    let deleted = in_tx!(&mut tx, |conn| {
        sqlx::query("DELETE FROM change_log WHERE seq <= $1")
            .bind(last_old)
            .execute(conn)
            .await?
            .rows_affected()
    });
    db::set_fact_in(&mut tx, "log_pruned_through", &last_old.to_string()).await?;
    tx.commit().await?;
    Ok(deleted)
}

/// The spatial placement of a published entry.
pub fn spatial_entry(s: &crate::services::Service) -> SpatialEntry {
    SpatialEntry {
        id: s.id.clone(),
        location: s.content.location,
        insee_code: s.content.insee_code.clone(),
        attributes: Attributes {
            wheelchair: s.content.wheelchair,
            opening_hours: s.content.opening_hours.clone(),
            folded_name: crate::text::fold(&s.content.name),
        },
    }
}

/// Puts `index` in service and completes it in the background (see
/// [`spatial::SpatialIndex::complete`]): queries are answered from the first moment, faster
/// once it is done.
fn in_service(index: SearchIndex) -> Arc<SearchIndex> {
    let index = Arc::new(index);
    let completing = index.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        completing.spatial.complete();
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "search index completed"
        );
    });
    index
}

/// Follows the change log until the process ends: applies it when woken by another
/// instance's write (PostgreSQL's `LISTEN`, see [`listen`]) and every [`FOLLOW_INTERVAL`]
/// otherwise (every [`FOLLOW_INTERVAL_LISTENING`] while notifications arrive), commits the
/// text index about every [`TEXT_COMMIT_INTERVAL`], checkpoints a SQLite database every
/// second, records the position every minute, and prunes the log once an hour.
pub async fn follow(live: Arc<LiveIndexes>, store: Store) {
    let woken = Arc::new(tokio::sync::Notify::new());
    let listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Store::Postgres(pool) = &store {
        tokio::spawn(listen(pool.clone(), woken.clone(), listening.clone()));
    }
    let mut recorded = Instant::now() - Duration::from_secs(3600);
    let mut pruned = Instant::now();
    let mut checkpointed = Instant::now();
    loop {
        let interval = if listening.load(Ordering::Acquire) {
            FOLLOW_INTERVAL_LISTENING
        } else {
            FOLLOW_INTERVAL
        };
        let _ = tokio::time::timeout(interval, woken.notified()).await;
        match live.catch_up(&store).await {
            Ok(done) if done.rows > 0 => tracing::debug!(?done, "change log applied"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "change log not applied"),
        }
        if let Err(error) = live.commit_text(TEXT_COMMIT_INTERVAL).await {
            tracing::warn!(%error, "text index not committed");
        }
        // With `Checkpoints::Background`, nothing else folds the write-ahead log into the
        // database file; elsewhere this finds little to do.
        if checkpointed.elapsed() >= CHECKPOINT_INTERVAL {
            checkpointed = Instant::now();
            if let Err(error) = db::checkpoint_passive(&store).await {
                tracing::warn!(%error, "database checkpoint failed");
            }
        }
        if recorded.elapsed() >= Duration::from_secs(60) {
            recorded = Instant::now();
            if let Err(error) = live.record_position(&store).await {
                tracing::warn!(%error, "index position not recorded");
            }
        }
        if pruned.elapsed() >= Duration::from_secs(3600) {
            pruned = Instant::now();
            match prune_log(&store, LOG_RETENTION).await {
                Ok(rows) if rows > 0 => tracing::info!(rows, "change log pruned"),
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "change log not pruned"),
            }
        }
    }
}

/// How often a server reads the log while PostgreSQL's notifications arrive: a safety net
/// only, since each write wakes it.
pub const FOLLOW_INTERVAL_LISTENING: Duration = Duration::from_secs(2);

/// Listens on PostgreSQL's [`db::CHANGES_CHANNEL`], waking the follower at each notification,
/// with `listening` true while connected. A dropped connection is opened again after a
/// second; meanwhile the follower polls every [`FOLLOW_INTERVAL`], and is woken once on
/// reconnecting, for what was notified while nobody listened.
async fn listen(
    pool: sqlx::PgPool,
    woken: Arc<tokio::sync::Notify>,
    listening: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if let Err(error) = listener.listen(db::CHANGES_CHANNEL).await {
                    tracing::warn!(%error, "change notifications not listened to");
                } else {
                    listening.store(true, Ordering::Release);
                    woken.notify_one();
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => woken.notify_one(),
                            Ok(None) => {
                                tracing::warn!(
                                    "change notifications interrupted: polling meanwhile"
                                );
                                break;
                            }
                            Err(error) => {
                                tracing::warn!(%error, "change notifications interrupted: polling meanwhile");
                                break;
                            }
                        }
                    }
                }
                listening.store(false, Ordering::Release);
                // The follower goes back to polling now, not after its longer wait.
                woken.notify_one();
                drop(listener);
            }
            Err(error) => tracing::warn!(%error, "change notifications unavailable: polling"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl std::fmt::Debug for LiveIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveIndexes")
            .field("dir", &self.dir)
            .field("positions", &self.positions())
            .finish_non_exhaustive()
    }
}
