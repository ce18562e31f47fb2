//! SQL of the territory reference: loading reference files into the database and reading communes back.

use sqlx::QueryBuilder;

use super::{boundary_to_geojson, to_multipolygon, Commune, InseeCode, ReferenceFiles};
use crate::db::{Pool, Store};
use crate::error::Result;
use crate::spatial::{BBox, LonLat};
use crate::{in_tx, on_engine};

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
pub async fn load_reference(store: &Store, files: &ReferenceFiles) -> Result<LoadSummary> {
    let mut tx = store.begin_writing().await?;
    in_tx!(&mut tx, |conn| {
        for chunk in files.regions.chunks(CHUNK) {
            let mut q = QueryBuilder::new("INSERT INTO regions (code, name) ");
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.code).push_bind(&r.name);
            });
            q.push(" ON CONFLICT (code) DO UPDATE SET name = excluded.name");
            q.build().execute(&mut *conn).await?;
        }
        for chunk in files.departements.chunks(CHUNK) {
            let mut q = QueryBuilder::new("INSERT INTO departements (code, name, region_code) ");
            q.push_values(chunk, |mut b, d| {
                b.push_bind(&d.code)
                    .push_bind(&d.name)
                    .push_bind(&d.region_code);
            });
            q.push(" ON CONFLICT (code) DO UPDATE SET name = excluded.name, region_code = excluded.region_code");
            q.build().execute(&mut *conn).await?;
        }
        for chunk in files.epcis.chunks(CHUNK) {
            let mut q = QueryBuilder::new("INSERT INTO epcis (siren, name, kind) ");
            q.push_values(chunk, |mut b, e| {
                b.push_bind(&e.siren).push_bind(&e.name).push_bind(&e.kind);
            });
            q.push(" ON CONFLICT (siren) DO UPDATE SET name = excluded.name, kind = excluded.kind");
            q.build().execute(&mut *conn).await?;
        }
        for chunk in files.communes.chunks(CHUNK) {
            let mut q = QueryBuilder::new(
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
            q.build().execute(&mut *conn).await?;
        }
    });
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

pub async fn commune_count(store: &Store) -> Result<i64> {
    let (n,): (i64,) = on_engine!(store, |db| sqlx::query_as("SELECT COUNT(*) FROM communes")
        .fetch_one(db)
        .await?);
    Ok(n)
}

/// Every commune, with its boundary parsed: the input of the in-memory [`super::Locator`].
/// Every command starts with it: on SQLite it is read through the C API, on a blocking thread
/// (with the boundaries' parsing); on PostgreSQL through the driver.
pub async fn load_communes(store: &Store) -> Result<Vec<Commune>> {
    match store {
        Store::Sqlite(pool) => load_communes_from_sqlite(pool).await,
        Store::Postgres(pool) => {
            let rows: Vec<CommuneRow> = sqlx::query_as(&format!("{COMMUNES} ORDER BY insee_code"))
                .fetch_all(pool)
                .await?;
            tokio::task::spawn_blocking(move || {
                rows.into_iter()
                    .map(|row| {
                        commune(
                            &row.0,
                            row.1,
                            row.2,
                            row.3,
                            row.4,
                            row.5,
                            row.6,
                            &row.7,
                            [row.8, row.9, row.10, row.11, row.12, row.13],
                            row.14.as_deref(),
                        )
                    })
                    .collect::<anyhow::Result<Vec<Commune>>>()
            })
            .await
            .map_err(anyhow::Error::from)?
            .map_err(Into::into)
        }
    }
}

/// The columns of a commune, in the order [`commune`] takes them.
const COMMUNES: &str = "SELECT insee_code, name, kind, departement_code, region_code, epci_siren, \
     population, postcodes, centroid_lon, centroid_lat, min_lon, min_lat, max_lon, max_lat, \
     boundary FROM communes";

type CommuneRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    f64,
    f64,
    f64,
    f64,
    f64,
    f64,
    Option<String>,
);

async fn load_communes_from_sqlite(pool: &Pool) -> Result<Vec<Commune>> {
    crate::db::raw::fold_rows(
        pool,
        c"SELECT insee_code, name, kind, departement_code, region_code, epci_siren, population,
        postcodes, centroid_lon, centroid_lat, min_lon, min_lat, max_lon, max_lat, boundary
        FROM communes ORDER BY insee_code",
        "lecture des communes",
        Vec::new(),
        |communes, row| {
            communes.push(commune(
                row.required_text(0)?,
                row.required_text(1)?.to_owned(),
                row.required_text(2)?.to_owned(),
                row.required_text(3)?.to_owned(),
                row.required_text(4)?.to_owned(),
                row.text(5)?.map(str::to_owned),
                row.integer(6),
                row.required_text(7)?,
                [8, 9, 10, 11, 12, 13].map(|i| row.real(i)),
                row.text(14)?,
            )?);
            Ok(())
        },
    )
    .await
}

/// A commune from its stored columns (see [`COMMUNES`]); `box_and_centre` is the centroid's
/// longitude and latitude, then the bounding box's.
#[allow(clippy::too_many_arguments)]
fn commune(
    insee_code: &str,
    name: String,
    kind: String,
    departement_code: String,
    region_code: String,
    epci_siren: Option<String>,
    population: i64,
    postcodes: &str,
    box_and_centre: [f64; 6],
    boundary: Option<&str>,
) -> anyhow::Result<Commune> {
    let boundary = match boundary {
        Some(text) => {
            let geometry: geojson::Geometry = text.parse()?;
            Some(to_multipolygon(geometry)?)
        }
        None => None,
    };
    let [lon, lat, min_lon, min_lat, max_lon, max_lat] = box_and_centre;
    Ok(Commune {
        insee_code: InseeCode::parse(insee_code).map_err(anyhow::Error::msg)?,
        name,
        kind,
        departement_code,
        region_code,
        epci_siren,
        population,
        postcodes: postcodes
            .split(';')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        centroid: LonLat::new(lon, lat),
        bbox: BBox::new(min_lon, min_lat, max_lon, max_lat),
        boundary,
    })
}

/// Names of a commune's enclosing territories, for display.
#[derive(Debug, sqlx::FromRow)]
pub struct Enclosing {
    pub departement_name: String,
    pub region_name: String,
    pub epci_name: Option<String>,
    pub epci_kind: Option<String>,
}

pub async fn enclosing(store: &Store, code: &InseeCode) -> Result<Option<Enclosing>> {
    Ok(on_engine!(store, |db| {
        sqlx::query_as(
        "SELECT d.name AS departement_name, r.name AS region_name, e.name AS epci_name, e.kind AS epci_kind
         FROM communes c
         JOIN departements d ON d.code = c.departement_code
         JOIN regions r ON r.code = c.region_code
         LEFT JOIN epcis e ON e.siren = c.epci_siren
         WHERE c.insee_code = $1",
    )
    .bind(code.as_str())
    .fetch_optional(db)
    .await?
    }))
}

/// The EPCIs, départements and régions with their names, as `(kind, code, name)`: what a person may
/// type to choose a territory.
pub async fn named_areas(store: &Store) -> Result<Vec<(String, String, String)>> {
    Ok(on_engine!(store, |db| sqlx::query_as(
        "SELECT 'epci', siren, name FROM epcis
         UNION ALL SELECT 'departement', code, name FROM departements
         UNION ALL SELECT 'region', code, name FROM regions",
    )
    .fetch_all(db)
    .await?))
}
