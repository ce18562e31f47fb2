//! The organisations the HSDS API publishes (contributors not withdrawn), read from SQL.

use std::collections::HashMap;

use super::Organisation;
use crate::db::Store;
use crate::error::Result;
use crate::on_engine;

type OrganisationRow = (String, String, Option<String>);

fn organisation((id, name, siren): OrganisationRow) -> Organisation {
    Organisation { id, name, siren }
}

/// The organisations of `ids` that are published, by id.
pub async fn by_ids(store: &Store, ids: &[&str]) -> Result<HashMap<String, Organisation>> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<OrganisationRow> = on_engine!(store, |db| {
            let mut q = crate::db::builder(
                db,
                "SELECT id, name, siren FROM organisations WHERE withdrawn_at IS NULL AND id IN (",
            );
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            q.push(")");
            q.build_query_as().fetch_all(db).await?
        });
        for row in rows {
            found.insert(row.0.clone(), organisation(row));
        }
    }
    Ok(found)
}

/// One published organisation.
pub async fn by_id(store: &Store, id: &str) -> Result<Option<Organisation>> {
    Ok(by_ids(store, &[id]).await?.remove(id))
}

/// A page of published organisations by name, those whose name holds `search` when given, and
/// how many there are in all.
pub async fn page(
    store: &Store,
    search: Option<&str>,
    offset: u64,
    limit: u64,
) -> Result<(u64, Vec<Organisation>)> {
    let pattern = search.map(|s| format!("%{}%", s.replace(['%', '_'], "")));
    let (total,): (i64,) = on_engine!(store, |db| {
        sqlx::query_as(
        "SELECT COUNT(*) FROM organisations WHERE withdrawn_at IS NULL AND ($1 IS NULL OR name LIKE $1)",
    )
    .bind(&pattern)
    .fetch_one(db).await
    })?;
    let rows: Vec<OrganisationRow> = on_engine!(store, |db| sqlx::query_as(
        "SELECT id, name, siren FROM organisations
          WHERE withdrawn_at IS NULL AND ($1 IS NULL OR name LIKE $1)
          ORDER BY name, id LIMIT $2 OFFSET $3",
    )
    .bind(&pattern)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(i64::try_from(offset).unwrap_or(i64::MAX))
    .fetch_all(db)
    .await)?;
    Ok((
        u64::try_from(total).unwrap_or_default(),
        rows.into_iter().map(organisation).collect(),
    ))
}
