//! SQL of the territorial monitoring: freshness of entries per contributor and the entries
//! created, withdrawn or moved between two dates.

use chrono::{DateTime, Utc};

use crate::db::Store;
use crate::error::Result;
use crate::on_engine;

/// Published entries of one organisation in one commune, and how many were confirmed since a date.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FreshnessRow {
    pub organisation_id: String,
    pub organisation: String,
    pub insee_code: String,
    pub entries: i64,
    pub confirmed: i64,
    /// Those with a quality flag (« à vérifier »).
    pub flagged: i64,
}

/// Every (organisation, commune) pair with its published entries, those confirmed since
/// `since` and those with a quality flag. One pass over the entries; the caller keeps the communes of its territory.
pub async fn freshness(store: &Store, since: DateTime<Utc>) -> Result<Vec<FreshnessRow>> {
    Ok(on_engine!(store, |db| sqlx::query_as(
        "SELECT s.source_id AS organisation_id, o.name AS organisation, s.insee_code,
                COUNT(*) AS entries,
                SUM(CASE WHEN s.verified_at >= $1 THEN 1 ELSE 0 END) AS confirmed,
                SUM(CASE WHEN s.quality IS NOT NULL THEN 1 ELSE 0 END) AS flagged
         FROM services s JOIN organisations o ON o.id = s.source_id
         WHERE s.status = 'published'
         GROUP BY s.source_id, o.name, s.insee_code",
    )
    .bind(since)
    .fetch_all(db)
    .await)?)
}

/// Entries created, and entries withdrawn, between `from` (included) and `to` (excluded), per
/// commune: `(insee_code, created, withdrawn)`.
pub async fn created_and_withdrawn(
    store: &Store,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i64, i64)>> {
    Ok(on_engine!(store, |db| {
        sqlx::query_as(
        "SELECT insee_code,
                SUM(CASE WHEN created_at >= $1 AND created_at < $2 THEN 1 ELSE 0 END),
                SUM(CASE WHEN status = 'withdrawn' AND updated_at >= $1 AND updated_at < $2 THEN 1 ELSE 0 END)
         FROM services
         WHERE (created_at >= $1 AND created_at < $2)
            OR (status = 'withdrawn' AND updated_at >= $1 AND updated_at < $2)
         GROUP BY insee_code",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db).await
    })?)
}

/// Entries whose position changed between `from` (included) and `to` (excluded), per commune
/// where they are now: `(insee_code, moved)`. From the entries' history, where it records the
/// fields a change touched (edits through the pages and the API; a bulk import records
/// compact rows without them).
pub async fn moved(
    store: &Store,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i64)>> {
    Ok(on_engine!(store, |db| sqlx::query_as(
        "SELECT s.insee_code, COUNT(DISTINCT h.service_id)
         FROM service_history h JOIN services s ON s.id = h.service_id
         WHERE h.at >= $1 AND h.at < $2
           AND (h.changes LIKE '%\"lon\"%' OR h.changes LIKE '%\"lat\"%')
         GROUP BY s.insee_code",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await)?)
}
