//! SQL of the citizen reports.

use chrono::Utc;

use super::NewReport;
use crate::db::{Store, Tx};
use crate::error::Result;
use crate::services::ServiceId;
use crate::{in_tx, on_engine};

/// Stores `report` on entry `service` for the organisation that signs it; the report's id.
pub async fn insert(tx: &mut Tx, service: &ServiceId, report: &NewReport) -> Result<String> {
    let id = format!("rep-{}", ServiceId::generate());
    in_tx!(tx, |conn| sqlx::query(
        "INSERT INTO reports (id, service_id, organisation_id, message, email, status, created_at)
         SELECT $1, id, source_id, $2, $3, 'new', $4 FROM services WHERE id = $5",
    )
    .bind(&id)
    .bind(&report.message)
    .bind(&report.email)
    .bind(Utc::now())
    .bind(service.as_str())
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(id)
}

/// A stored report, as its organisation's queue lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredReport {
    pub id: String,
    pub service_id: String,
    pub organisation_id: String,
    pub message: String,
    pub email: Option<String>,
    pub status: String,
}

/// The reports of organisation `organisation`, newest first.
pub async fn for_organisation(store: &Store, organisation: &str) -> Result<Vec<StoredReport>> {
    Ok(on_engine!(store, |db| sqlx::query_as(
        "SELECT id, service_id, organisation_id, message, email, status FROM reports
         WHERE organisation_id = $1 ORDER BY created_at DESC",
    )
    .bind(organisation)
    .fetch_all(db)
    .await)?)
}

/// The statuses a report goes through, in order.
pub const STATUSES: [&str; 4] = ["new", "in_progress", "fixed", "rejected"];

/// A report with its entry's name and creation date, for the queue page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedReport {
    pub id: String,
    pub service_id: String,
    pub service_name: String,
    pub organisation_id: String,
    pub message: String,
    pub email: Option<String>,
    pub status: String,
    pub created_at: chrono::DateTime<Utc>,
}

/// The queue: reports of `organisation` (every organisation's when none), optionally of one
/// status, newest first, at most 500.
pub async fn queue(
    store: &Store,
    organisation: Option<&str>,
    status: Option<&str>,
) -> Result<Vec<QueuedReport>> {
    on_engine!(store, |db| {
        let mut q = crate::db::builder(db,
        "SELECT r.id, r.service_id, s.name AS service_name, r.organisation_id, r.message, r.email,
         r.status, r.created_at FROM reports r JOIN services s ON s.id = r.service_id WHERE 1 = 1",
    );
        if let Some(organisation) = organisation {
            q.push(" AND r.organisation_id = ")
                .push_bind(organisation.to_owned());
        }
        if let Some(status) = status {
            q.push(" AND r.status = ").push_bind(status.to_owned());
        }
        q.push(" ORDER BY r.created_at DESC LIMIT 500");
        Ok(q.build_query_as().fetch_all(db).await?)
    })
}

/// The organisation a report is for, when it exists.
pub async fn organisation_of(store: &Store, id: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = on_engine!(store, |db| sqlx::query_as(
        "SELECT organisation_id FROM reports WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(db)
    .await)?;
    Ok(row.map(|(o,)| o))
}

pub async fn set_status(store: &Store, id: &str, status: &str) -> Result<()> {
    on_engine!(store, |db| sqlx::query(
        "UPDATE reports SET status = $1 WHERE id = $2"
    )
    .bind(status)
    .bind(id)
    .execute(db)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}
