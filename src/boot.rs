//! Start-up of an instance: migrate, sync the taxonomy, load the territory reference into a new
//! database, optionally the Auvergne demo, and build the in-memory reference from the database.

use std::sync::Arc;

use crate::db::{self, Pool};
use crate::import::{self, ImportOptions, Input, Reference};
use crate::services::validate::COMMUNE_TOLERANCE_M;
use crate::spatial::LonLat;
use crate::taxonomy::{self, Taxonomy};
use crate::territory::{self, InseeCode, Locator, ReferenceFiles};

/// The DILA town halls of Allier, Cantal, Haute-Loire and Puy-de-Dôme, as shipped in `data/demo/`.
const DEMO_TOWN_HALLS: &str = include_str!("../data/demo/mairies-auvergne.csv");
pub const DEMO_SOURCE: &str = "Annuaire de l'administration (DILA)";

/// Makes the database ready for use and returns the reference held in memory. A new database
/// gets the embedded territory; with `demo`, an empty directory gets the Auvergne town halls.
pub async fn prepare(pool: &Pool, demo: bool) -> anyhow::Result<Reference> {
    let started = std::time::Instant::now();
    let taxonomy = Taxonomy::embedded()?;
    taxonomy::store::sync(pool, &taxonomy).await?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "taxonomy synced");
    if territory::store::commune_count(pool).await? == 0 {
        let files = tokio::task::spawn_blocking(ReferenceFiles::embedded).await??;
        let summary = territory::store::load_reference(pool, &files).await?;
        tracing::info!(
            communes = summary.communes,
            boundaries = summary.boundaries,
            "territory reference loaded"
        );
    }
    let reference = load_reference(pool, taxonomy).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "reference loaded"
    );
    if demo
        && db::fact(pool, "demo_loaded").await?.is_none()
        && crate::services::store::count(pool).await? == 0
    {
        let report = import::import(
            pool,
            &reference,
            Input::Bytes {
                name: "mairies-auvergne.csv".into(),
                bytes: demo_town_halls_csv(&reference.locator)?.into_bytes(),
            },
            ImportOptions {
                source: Some(DEMO_SOURCE.into()),
                skip_invalid: true,
                ..ImportOptions::default()
            },
        )
        .await?;
        for error in &report.errors {
            tracing::warn!(%error, "demo town hall skipped");
        }
        db::set_fact(pool, "demo_loaded", "true").await?;
        tracing::info!(
            created = report.created,
            rejected = report.rejected,
            "Auvergne demo loaded"
        );
    }
    Ok(reference)
}

/// The in-memory reference (taxonomy and communes) built from what the database holds.
pub async fn load_reference(pool: &Pool, taxonomy: Taxonomy) -> anyhow::Result<Reference> {
    let communes = territory::store::load_communes(pool).await?;
    let locator = tokio::task::spawn_blocking(move || Locator::new(communes)).await?;
    Ok(Reference {
        taxonomy: Arc::new(taxonomy),
        locator: Arc::new(locator),
    })
}

/// The demo town halls rewritten in the project's CSV (address split into street, postcode and
/// city; service-public JSON hours kept as the fallback column).
///
/// About 5 % of the DILA points lie outside their commune (a neighbour's village, once a town
/// 300 km away): for those the commune's centre stands in, so that the demo shows every town
/// hall near where it is rather than rejecting it; each is logged.
pub fn demo_town_halls_csv(locator: &Locator) -> anyhow::Result<String> {
    let mut reader = csv::Reader::from_reader(DEMO_TOWN_HALLS.as_bytes());
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = crate::import::formats::PROJECT_COLUMNS.to_vec();
    header.push("opening_hours_json");
    writer.write_record(&header)?;
    for row in reader.deserialize::<DemoTownHall>() {
        let row = row?;
        // « Avenue de Vichy | 03200 Abrest »
        let (street, rest) = row
            .address
            .split_once(" | ")
            .unwrap_or(("", row.address.as_str()));
        let (postcode, city) = rest.split_once(' ').unwrap_or(("", rest));
        let postcode = if postcode.len() == 5 && postcode.bytes().all(|b| b.is_ascii_digit()) {
            postcode
        } else {
            ""
        };
        let (mut lon, mut lat) = (row.lon.clone(), row.lat.clone());
        let commune = InseeCode::parse(&row.insee_code)
            .ok()
            .and_then(|code| locator.commune(&code));
        if let (Some(commune), Ok(x), Ok(y)) =
            (commune, row.lon.parse::<f64>(), row.lat.parse::<f64>())
        {
            if locator.distance_to_commune_m(commune, LonLat::new(x, y)) > COMMUNE_TOLERANCE_M {
                tracing::debug!(commune = %commune.insee_code, "DILA town hall outside its commune: centre used");
                lon = format!("{:.6}", commune.centroid.lon);
                lat = format!("{:.6}", commune.centroid.lat);
            }
        }
        writer.write_record([
            format!("mairie-{}", row.insee_code).as_str(),
            "mairie",
            format!("Mairie de {}", row.commune).as_str(),
            street,
            postcode,
            city,
            &row.insee_code,
            &lon,
            &lat,
            &row.phone,
            &row.email,
            &row.website,
            &row.opening_hours,
            "",
            "",
            &row.horaires_source,
        ])?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

#[derive(serde::Deserialize)]
struct DemoTownHall {
    insee_code: String,
    commune: String,
    address: String,
    lon: String,
    lat: String,
    phone: String,
    email: String,
    website: String,
    opening_hours: String,
    horaires_source: String,
}
