//! The one write path of entries: [`WriteTurn`] takes this process's turn, opens the write
//! transaction, hands it to the caller's statements, commits (the store having logged every
//! changed entry in the change log in the same transaction), then brings this process's live
//! indexes to the log's head. Every writer of entries goes through it — the API, the pages,
//! bulk updates, confirmations, restore, restitution, imports — and [`set_version`] is the one
//! way an entry's content, status or confirmation changes with its history row.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::history::{self, Version, Via};
use super::{store, Content, Service, Status};
use crate::db::{Store, Tx};
use crate::error::Result;
use crate::search::live::LiveIndexes;

/// A write transaction on entries, from its turn to the indexes showing it.
///
/// Dropped without [`WriteTurn::commit`] (an error, a refused change), its transaction is
/// rolled back (see [`Tx`]).
pub struct WriteTurn {
    store: Store,
    /// The process's live indexes, brought up to date after the commit; `None` on the command
    /// line, where a server applies the log (or the next `serve` does).
    live: Option<Arc<LiveIndexes>>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    tx: Option<Tx>,
}

impl WriteTurn {
    /// Takes the turn and opens the transaction (on SQLite `BEGIN IMMEDIATE`: the database's
    /// write lock now rather than a failed upgrade later).
    pub async fn begin(store: &Store, live: Option<&Arc<LiveIndexes>>) -> Result<WriteTurn> {
        // The turn before the connection: writers waiting their turn hold no connection that
        // readers (and the indexes' catch-up) need.
        let turn = WriteTurn::turn(live).await;
        let tx = store.begin_writing().await?;
        Ok(WriteTurn::with(store, live, turn, tx))
    }

    /// The same on a connection of its own set for a bulk load (an import) on SQLite.
    pub async fn begin_bulk(store: &Store, live: Option<&Arc<LiveIndexes>>) -> Result<WriteTurn> {
        let turn = WriteTurn::turn(live).await;
        let tx = match store {
            Store::Sqlite(pool) => Store::begin_own(store::bulk_writer(pool).await?).await?,
            Store::Postgres(_) => store.begin_writing().await?,
        };
        Ok(WriteTurn::with(store, live, turn, tx))
    }

    async fn turn(live: Option<&Arc<LiveIndexes>>) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match live {
            Some(live) => Some(live.write_turn().await),
            None => None,
        }
    }

    fn with(
        store: &Store,
        live: Option<&Arc<LiveIndexes>>,
        turn: Option<tokio::sync::OwnedMutexGuard<()>>,
        tx: Tx,
    ) -> Self {
        WriteTurn {
            store: store.clone(),
            live: live.cloned(),
            _turn: turn,
            tx: Some(tx),
        }
    }

    /// The transaction the caller's statements run in.
    pub fn conn(&mut self) -> &mut Tx {
        // Only `commit` and `rollback`, which consume the turn, take it.
        self.tx.as_mut().expect("write turn already finished")
    }

    /// Commits, releases the turn, then applies the change log to this process's indexes. A
    /// failure there is logged, not returned: the write stands, and the next catch-up (every
    /// quarter second in a server) applies it.
    pub async fn commit(mut self) -> Result<()> {
        let tx = self.tx.take().expect("write turn already finished");
        let started = std::time::Instant::now();
        tx.commit().await?;
        tracing::debug!(
            commit_us = started.elapsed().as_micros() as u64,
            "write committed"
        );
        if abort_after_commit() {
            // The fault test's crash between the commit and the indexes (see the function).
            std::process::abort();
        }
        self._turn = None;
        if let Some(live) = &self.live {
            if let Err(error) = live.catch_up(&self.store).await {
                tracing::warn!(%error, "indexes not brought up to date after a write");
            }
        }
        Ok(())
    }

    /// Rolls back and releases the turn.
    pub async fn rollback(mut self) -> Result<()> {
        let tx = self.tx.take().expect("write turn already finished");
        tx.rollback().await
    }
}

/// Whether `PROXIMITES_ABORT_AFTER_COMMIT` asks the process to die right after a write's
/// commit, before its indexes see it: how the tests reproduce a crash at the worst moment.
fn abort_after_commit() -> bool {
    static ABORT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ABORT.get_or_init(|| std::env::var_os("PROXIMITES_ABORT_AFTER_COMMIT").is_some())
}

/// Who makes a change, as the history names them.
pub struct Author<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub via: Via,
}

/// Writes `content`, `status` and `verified_at` over the entry `current` and records the change
/// in its history as `action`, at `now`; `None` (nothing written) when nothing changes.
#[allow(clippy::too_many_arguments)]
pub async fn set_version(
    tx: &mut Tx,
    current: &Service,
    content: &Content,
    status: Status,
    verified_at: Option<DateTime<Utc>>,
    author: &Author<'_>,
    action: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    let previous = Version::of_service(current);
    let next = Version::of(content, status, verified_at);
    if previous == next {
        return Ok(None);
    }
    // The indexes hold the content's searchable fields and the status; a confirmation alone
    // changes neither.
    let change = if content == &current.content && status == current.status {
        store::Change::Touched
    } else {
        store::Change::Changed
    };
    store::overwrite(tx, &current.id, content, status, verified_at, now, change).await?;
    if current.status == Status::Published && status != Status::Published {
        // Citizens never lose a service because the entry shown for its group went.
        super::duplicates::show_in_place_of(tx, &current.id, author, now).await?;
    }
    let change_id = history::record(
        tx,
        history::Record {
            service_id: &current.id,
            at: now,
            actor_kind: author.kind,
            actor_id: author.id,
            via: author.via,
            action,
            previous: Some(&previous),
            next: &next,
        },
    )
    .await?;
    Ok(Some(change_id))
}

/// Gives `current` the status `status`, its content and confirmation kept, recorded in its
/// history as `action` by `author`: a withdrawal, its undoing, a duplicate hidden or shown.
pub async fn set_status(
    tx: &mut Tx,
    current: &Service,
    status: Status,
    author: &Author<'_>,
    action: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    set_version(
        tx,
        current,
        &current.content,
        status,
        current.verified_at,
        author,
        action,
        now,
    )
    .await
}
