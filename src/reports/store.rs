//! SQL of the citizen reports.

use chrono::Utc;

use super::NewReport;
use crate::db::Pool;
use crate::error::Result;
use crate::services::ServiceId;

/// Stores `report` on entry `service` for the organisation that signs it; the report's id.
pub async fn insert(pool: &Pool, service: &ServiceId, report: &NewReport) -> Result<String> {
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
    .execute(pool)
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
