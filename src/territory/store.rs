//! SQL of the territory reference: loading reference files into the database and reading communes back.

use sqlx::QueryBuilder;

use super::{boundary_to_geojson, to_multipolygon, Commune, InseeCode, ReferenceFiles};
use crate::db::{Db, Pool};
use crate::error::Result;
use crate::spatial::{BBox, LonLat};

/// Rows per multi-row INSERT: well under SQLite's limit of bound parameters.
const CHUNK: usize = 500;

/// How much a reference load changed.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct LoadSummary {
    pub regions: usize,
    pub departements: usize,
    pub epcis: usize,
    pub communes: usize,
    pub boundaries: usize,
}

/// Upserts the reference files in one transaction. A commune keeps its stored boundary when the
/// files bring none for it, so loading national CSVs never erases finer regional boundaries.
pub async fn load_reference(pool: &Pool, files: &ReferenceFiles) -> Result<LoadSummary> {
    // IMMEDIATE: another process (a server, an import) may write meanwhile; a read
    // transaction upgraded later would fail at once instead of waiting its turn.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    for chunk in files.regions.chunks(CHUNK) {
        let mut q = QueryBuilder::<Db>::new("INSERT INTO regions (code, name) ");
        q.push_values(chunk, |mut b, r| {
            b.push_bind(&r.code).push_bind(&r.name);
        });
        q.push(" ON CONFLICT (code) DO UPDATE SET name = excluded.name");
        q.build().execute(&mut *tx).await?;
    }
    for chunk in files.departements.chunks(CHUNK) {
        let mut q = QueryBuilder::<Db>::new("INSERT INTO departements (code, name, region_code) ");
        q.push_values(chunk, |mut b, d| {
            b.push_bind(&d.code)
                .push_bind(&d.name)
                .push_bind(&d.region_code);
        });
        q.push(" ON CONFLICT (code) DO UPDATE SET name = excluded.name, region_code = excluded.region_code");
        q.build().execute(&mut *tx).await?;
    }
    for chunk in files.epcis.chunks(CHUNK) {
        let mut q = QueryBuilder::<Db>::new("INSERT INTO epcis (siren, name, kind) ");
        q.push_values(chunk, |mut b, e| {
            b.push_bind(&e.siren).push_bind(&e.name).push_bind(&e.kind);
        });
        q.push(" ON CONFLICT (siren) DO UPDATE SET name = excluded.name, kind = excluded.kind");
        q.build().execute(&mut *tx).await?;
    }
    for chunk in files.communes.chunks(CHUNK) {
        let mut q = QueryBuilder::<Db>::new(
            "INSERT INTO communes (insee_code, name, kind, departement_code, region_code, epci_siren,
             population, postcodes, centroid_lon, centroid_lat, min_lon, min_lat, max_lon, max_lat, boundary) ",
        );
        q.push_values(chunk, |mut b, c| {
            b.push_bind(c.insee_code.as_str())
                .push_bind(&c.name)
                .push_bind(&c.kind)
                .push_bind(&c.departement_code)
                .push_bind(&c.region_code)
                .push_bind(&c.epci_siren)
                .push_bind(c.population)
                .push_bind(c.postcodes.join(";"))
                .push_bind(c.centroid.lon)
                .push_bind(c.centroid.lat)
                .push_bind(c.bbox.min_lon)
                .push_bind(c.bbox.min_lat)
                .push_bind(c.bbox.max_lon)
                .push_bind(c.bbox.max_lat)
                .push_bind(c.boundary.as_ref().map(boundary_to_geojson));
        });
        q.push(
            " ON CONFLICT (insee_code) DO UPDATE SET name = excluded.name, kind = excluded.kind,
              departement_code = excluded.departement_code, region_code = excluded.region_code,
              epci_siren = excluded.epci_siren, population = excluded.population,
              postcodes = excluded.postcodes, centroid_lon = excluded.centroid_lon,
              centroid_lat = excluded.centroid_lat, min_lon = excluded.min_lon,
              min_lat = excluded.min_lat, max_lon = excluded.max_lon, max_lat = excluded.max_lat,
              boundary = COALESCE(excluded.boundary, communes.boundary)",
        );
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(LoadSummary {
        regions: files.regions.len(),
        departements: files.departements.len(),
        epcis: files.epcis.len(),
        communes: files.communes.len(),
        boundaries: files
            .communes
            .iter()
            .filter(|c| c.boundary.is_some())
            .count(),
    })
}

pub async fn commune_count(pool: &Pool) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM communes")
        .fetch_one(pool)
        .await?;
    Ok(n)
}

/// Every commune, with its boundary parsed: the input of the in-memory [`super::Locator`].
/// Read through SQLite's C API, on a blocking thread (with the boundaries' parsing): every
/// command starts with it.
pub async fn load_communes(pool: &Pool) -> Result<Vec<Commune>> {
    crate::db::raw::fold_rows(
        pool,
        c"SELECT insee_code, name, kind, departement_code, region_code, epci_siren, population,
        postcodes, centroid_lon, centroid_lat, min_lon, min_lat, max_lon, max_lat, boundary
        FROM communes ORDER BY insee_code",
        "lecture des communes",
        Vec::new(),
        |communes, row| {
            let boundary = match row.text(14)? {
                Some(text) => {
                    let geometry: geojson::Geometry = text.parse()?;
                    Some(to_multipolygon(geometry)?)
                }
                None => None,
            };
            communes.push(Commune {
                insee_code: InseeCode::parse(row.required_text(0)?).map_err(anyhow::Error::msg)?,
                name: row.required_text(1)?.to_owned(),
                kind: row.required_text(2)?.to_owned(),
                departement_code: row.required_text(3)?.to_owned(),
                region_code: row.required_text(4)?.to_owned(),
                epci_siren: row.text(5)?.map(str::to_owned),
                population: row.integer(6),
                postcodes: row
                    .required_text(7)?
                    .split(';')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                centroid: LonLat::new(row.real(8), row.real(9)),
                bbox: BBox::new(row.real(10), row.real(11), row.real(12), row.real(13)),
                boundary,
            });
            Ok(())
        },
    )
    .await
}

/// Names of a commune's enclosing territories, for display.
#[derive(Debug, sqlx::FromRow)]
pub struct Enclosing {
    pub departement_name: String,
    pub region_name: String,
    pub epci_name: Option<String>,
    pub epci_kind: Option<String>,
}

pub async fn enclosing(pool: &Pool, code: &InseeCode) -> Result<Option<Enclosing>> {
    Ok(sqlx::query_as(
        "SELECT d.name AS departement_name, r.name AS region_name, e.name AS epci_name, e.kind AS epci_kind
         FROM communes c
         JOIN departements d ON d.code = c.departement_code
         JOIN regions r ON r.code = c.region_code
         LEFT JOIN epcis e ON e.siren = c.epci_siren
         WHERE c.insee_code = $1",
    )
    .bind(code.as_str())
    .fetch_optional(pool)
    .await?)
}

/// The EPCIs, départements and régions with their names, as `(kind, code, name)`: what a person may
/// type to choose a territory.
pub async fn named_areas(pool: &Pool) -> Result<Vec<(String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT 'epci', siren, name FROM epcis
         UNION ALL SELECT 'departement', code, name FROM departements
         UNION ALL SELECT 'region', code, name FROM regions",
    )
    .fetch_all(pool)
    .await?)
}
