//! The organisations the HSDS API publishes (contributors not withdrawn), read from SQL.

use std::collections::HashMap;

use super::Organisation;
use crate::db::Pool;
use crate::error::Result;

type OrganisationRow = (String, String, Option<String>);

fn organisation((id, name, siren): OrganisationRow) -> Organisation {
    Organisation { id, name, siren }
}

/// The organisations of `ids` that are published, by id.
pub async fn by_ids(pool: &Pool, ids: &[&str]) -> Result<HashMap<String, Organisation>> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT id, name, siren FROM organisations WHERE withdrawn_at IS NULL AND id IN ({marks})"
        );
        let mut query = sqlx::query_as::<_, OrganisationRow>(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(pool).await? {
            found.insert(row.0.clone(), organisation(row));
        }
    }
    Ok(found)
}

/// One published organisation.
pub async fn by_id(pool: &Pool, id: &str) -> Result<Option<Organisation>> {
    Ok(by_ids(pool, &[id]).await?.remove(id))
}

/// A page of published organisations by name, those whose name holds `search` when given, and
/// how many there are in all.
pub async fn page(
    pool: &Pool,
    search: Option<&str>,
    offset: u64,
    limit: u64,
) -> Result<(u64, Vec<Organisation>)> {
    let pattern = search.map(|s| format!("%{}%", s.replace(['%', '_'], "")));
    let (total,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM organisations WHERE withdrawn_at IS NULL AND ($1 IS NULL OR name LIKE $1)",
    )
    .bind(&pattern)
    .fetch_one(pool)
    .await?;
    let rows: Vec<OrganisationRow> = sqlx::query_as(
        "SELECT id, name, siren FROM organisations
          WHERE withdrawn_at IS NULL AND ($1 IS NULL OR name LIKE $1)
          ORDER BY name, id LIMIT $2 OFFSET $3",
    )
    .bind(&pattern)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(i64::try_from(offset).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    Ok((
        u64::try_from(total).unwrap_or_default(),
        rows.into_iter().map(organisation).collect(),
    ))
}
