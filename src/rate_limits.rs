//! Rate limits every instance shares: each attempt counted against a limit is a row of the
//! database, counted over the limit's window, so that a client spreading its attempts over the
//! instances behind a load balancer gains nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use crate::db::Pool;
use crate::error::Result;

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

/// Whether every one of `limits` has room for one more attempt.
pub async fn within(pool: &Pool, limits: &[Limit]) -> Result<bool> {
    let now = Utc::now();
    for limit in limits {
        let (counted,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM rate_events WHERE key = $1 AND at > $2")
                .bind(&limit.key)
                .bind(limit.since(now))
                .fetch_one(pool)
                .await?;
        if counted >= limit.most as i64 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Counts one attempt against each of `limits`.
pub async fn record(pool: &Pool, limits: &[Limit]) -> Result<()> {
    let mut tx = pool.begin().await?;
    record_in(&mut tx, limits).await?;
    tx.commit().await?;
    Ok(())
}

/// Counts one attempt against `limit` if it has room, in the caller's transaction (so that the
/// attempt and what it allows are written together): false, and nothing counted, when it has
/// none. The row is written before the count (under a savepoint, undone when over the limit), so
/// that two instances' attempts at the same time are counted one after the other.
pub async fn take(conn: &mut SqliteConnection, limit: &Limit) -> Result<bool> {
    let now = Utc::now();
    let mut attempt = sqlx::Connection::begin(&mut *conn).await?;
    record_in(&mut attempt, std::slice::from_ref(limit)).await?;
    let (counted,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM rate_events WHERE key = $1 AND at > $2")
            .bind(&limit.key)
            .bind(limit.since(now))
            .fetch_one(&mut *attempt)
            .await?;
    if counted > limit.most as i64 {
        attempt.rollback().await?;
        return Ok(false);
    }
    attempt.commit().await?;
    Ok(true)
}

async fn record_in(conn: &mut SqliteConnection, limits: &[Limit]) -> Result<()> {
    let now = Utc::now();
    let expired = now - chrono::Duration::from_std(LONGEST_WINDOW).unwrap_or_default();
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attempts_are_counted_over_their_window_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::connect(dir.path().join("l.db").to_str().unwrap())
            .await
            .unwrap();
        let hour = Limit::new("report:192.0.2.1", 2, Duration::from_secs(3_600));
        let mut tx = pool.begin().await.unwrap();
        assert!(take(&mut tx, &hour).await.unwrap());
        assert!(take(&mut tx, &hour).await.unwrap());
        assert!(!take(&mut tx, &hour).await.unwrap());
        tx.commit().await.unwrap();
        assert!(!within(&pool, std::slice::from_ref(&hour)).await.unwrap());
        // A refused attempt is not counted: one old attempt lapsing frees one place.
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM rate_events")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 2);
        let other = Limit::new("report:192.0.2.2", 2, Duration::from_secs(3_600));
        assert!(within(&pool, &[other]).await.unwrap());
        // Attempts past every window are deleted by the next one.
        sqlx::query("UPDATE rate_events SET at = $1")
            .bind(Utc::now() - chrono::Duration::hours(2))
            .execute(&pool)
            .await
            .unwrap();
        assert!(within(&pool, std::slice::from_ref(&hour)).await.unwrap());
        record(&pool, std::slice::from_ref(&hour)).await.unwrap();
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM rate_events")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }
}
