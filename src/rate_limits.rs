//! Rate limits every instance shares: each attempt counted against a limit is a row of the
//! database, counted over the limit's window, so that a client spreading its attempts over the
//! instances behind a load balancer gains nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::{Store, Tx};
use crate::error::Result;
use crate::{in_tx, on_engine};

/// The longest window of any limit: older attempts are deleted as new ones come.
const LONGEST_WINDOW: Duration = Duration::from_secs(3_600);

/// At most `most` attempts under `key` in `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub key: String,
    pub most: usize,
    pub window: Duration,
}

impl Limit {
    pub fn new(key: impl Into<String>, most: usize, window: Duration) -> Self {
        debug_assert!(window <= LONGEST_WINDOW);
        Self {
            key: key.into(),
            most,
            window,
        }
    }

    fn since(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::zero())
    }
}

const COUNT: &str = "SELECT COUNT(*) FROM rate_events WHERE key = $1 AND at > $2";

/// Whether every one of `limits` has room for one more attempt.
pub async fn within(store: &Store, limits: &[Limit]) -> Result<bool> {
    let now = Utc::now();
    for limit in limits {
        let (counted,): (i64,) = on_engine!(store, |db| sqlx::query_as(COUNT)
            .bind(&limit.key)
            .bind(limit.since(now))
            .fetch_one(db)
            .await?);
        if counted >= limit.most as i64 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Counts one attempt against each of `limits`.
pub async fn record(store: &Store, limits: &[Limit]) -> Result<()> {
    let mut tx = store.begin().await?;
    record_in(&mut tx, limits).await?;
    tx.commit().await
}

/// Counts one attempt against `limit` if it has room, in the caller's transaction (so that the
/// attempt and what it allows are written together): false, and nothing counted, when it has
/// none. The row is written before the count (under a savepoint, undone when over the limit),
/// with the limit's key locked on PostgreSQL, so that two instances' attempts at the same time
/// are counted one after the other.
pub async fn take(tx: &mut Tx, limit: &Limit) -> Result<bool> {
    let now = Utc::now();
    let expired = now - chrono::Duration::from_std(LONGEST_WINDOW).unwrap_or_default();
    let key_lock = tx.engine().key_lock();
    in_tx!(tx, |conn| {
        sqlx::query("SAVEPOINT rate_attempt")
            .execute(&mut *conn)
            .await?;
        if let Some(lock) = key_lock {
            sqlx::query(lock)
                .bind(&limit.key)
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query("DELETE FROM rate_events WHERE at < $1")
            .bind(expired)
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO rate_events (key, at) VALUES ($1, $2)")
            .bind(&limit.key)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        let (counted,): (i64,) = sqlx::query_as(COUNT)
            .bind(&limit.key)
            .bind(limit.since(now))
            .fetch_one(&mut *conn)
            .await?;
        if counted > limit.most as i64 {
            sqlx::query("ROLLBACK TO SAVEPOINT rate_attempt")
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query("RELEASE SAVEPOINT rate_attempt")
            .execute(&mut *conn)
            .await?;
        Ok(counted <= limit.most as i64)
    })
}

async fn record_in(tx: &mut Tx, limits: &[Limit]) -> Result<()> {
    let now = Utc::now();
    let expired = now - chrono::Duration::from_std(LONGEST_WINDOW).unwrap_or_default();
    in_tx!(tx, |conn| {
        sqlx::query("DELETE FROM rate_events WHERE at < $1")
            .bind(expired)
            .execute(&mut *conn)
            .await?;
        for limit in limits {
            sqlx::query("INSERT INTO rate_events (key, at) VALUES ($1, $2)")
                .bind(&limit.key)
                .bind(now)
                .execute(&mut *conn)
                .await?;
        }
    });
    Ok(())
}
