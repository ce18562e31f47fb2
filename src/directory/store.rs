//! SQL of printed directories: the published entries of some typologies in some communes, and
//! the names of the territories a guide covers.

use futures_util::TryStreamExt;
use rustc_hash::FxHashSet;

use crate::db::Store;
use crate::error::Result;
use crate::on_engine;
use crate::services::Service;

/// The published entries of `typologies` whose commune is in `communes`, in no order.
///
/// The table has no index on typology or commune (see the schema): one pass over the published
/// entries of the typologies asked for, filtered here, reads 20,000 entries in well under a
/// second and stays portable SQL.
pub async fn published_in(
    store: &Store,
    typologies: &[String],
    communes: &FxHashSet<&str>,
) -> Result<Vec<Service>> {
    on_engine!(store, |db| {
        let mut q = crate::db::builder(
            db,
            "SELECT s.*, o.name AS source_name FROM services s
         JOIN organisations o ON o.id = s.source_id
         WHERE s.status = 'published' AND s.typology_code IN (",
        );
        let mut list = q.separated(", ");
        for code in typologies {
            list.push_bind(code.as_str());
        }
        q.push(")");
        let mut rows = q
            .build_query_as::<crate::services::store::ServiceRecord>()
            .fetch(db);
        let mut out = Vec::new();
        while let Some(record) = rows.try_next().await? {
            if communes.contains(record.insee_code.as_str()) {
                out.push(Service::try_from(record)?);
            }
        }
        Ok(out)
    })
}

/// The name of an EPCI, a département or a région by its code.
pub async fn territory_name(store: &Store, kind: &str, code: &str) -> Result<Option<String>> {
    let sql = match kind {
        "epci" => "SELECT name FROM epcis WHERE siren = $1",
        "departement" => "SELECT name FROM departements WHERE code = $1",
        "region" => "SELECT name FROM regions WHERE code = $1",
        _ => return Ok(None),
    };
    let row: Option<(String,)> = on_engine!(store, |db| sqlx::query_as(sql)
        .bind(code)
        .fetch_optional(db)
        .await?);
    Ok(row.map(|(name,)| name))
}
