//! SQL of the citizen reports.

use chrono::Utc;

use super::NewReport;
use crate::db::Pool;
use crate::error::Result;
use crate::services::ServiceId;

/// Stores `report` on entry `service` for the organisation that signs it; the report's id.
pub async fn insert(
    conn: &mut sqlx::SqliteConnection,
    service: &ServiceId,
    report: &NewReport,
) -> Result<String> {
    let id = format!("rep-{}", ServiceId::generate());
    sqlx::query(
        "INSERT INTO reports (id, service_id, organisation_id, message, email, status, created_at)
         SELECT $1, id, source_id, $2, $3, 'new', $4 FROM services WHERE id = $5",
    )
    .bind(&id)
    .bind(&report.message)
    .bind(&report.email)
    .bind(Utc::now())
    .bind(service.as_str())
    .execute(conn)
    .await?;
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
pub async fn for_organisation(pool: &Pool, organisation: &str) -> Result<Vec<StoredReport>> {
    Ok(sqlx::query_as(
        "SELECT id, service_id, organisation_id, message, email, status FROM reports
         WHERE organisation_id = $1 ORDER BY created_at DESC",
    )
    .bind(organisation)
    .fetch_all(pool)
    .await?)
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
    pool: &Pool,
    organisation: Option<&str>,
    status: Option<&str>,
) -> Result<Vec<QueuedReport>> {
    let mut q = sqlx::QueryBuilder::<crate::db::Db>::new(
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
    Ok(q.build_query_as().fetch_all(pool).await?)
}

/// The organisation a report is for, when it exists.
pub async fn organisation_of(pool: &Pool, id: &str) -> Result<Option<String>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT organisation_id FROM reports WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(o,)| o))
}

pub async fn set_status(pool: &Pool, id: &str, status: &str) -> Result<()> {
    sqlx::query("UPDATE reports SET status = $1 WHERE id = $2")
        .bind(status)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
