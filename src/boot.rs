//! Start-up of an instance: migrate, sync the taxonomy, load the territory reference into a new
//! database, optionally the Auvergne demo, and build the in-memory reference from the database.

use std::sync::Arc;

use crate::db::{self, Store};
use crate::import::{self, Input, Reference};
use crate::taxonomy::{self, Taxonomy};
use crate::territory::{self, Locator, ReferenceFiles};

/// The DILA town halls of Allier, Cantal, Haute-Loire and Puy-de-Dôme, as shipped in `data/demo/`.
const DEMO_TOWN_HALLS: &str = include_str!("../data/demo/mairies-auvergne.csv");

/// Makes the database ready for use and returns the reference held in memory. A new database
/// gets the embedded territory; with `demo`, an empty directory gets the Auvergne town halls.
pub async fn prepare(store: &Store, demo: bool) -> anyhow::Result<Reference> {
    let started = std::time::Instant::now();
    // Instances started together on a new database: one loads the reference and the demo, the
    // others find them done.
    let preparing = store.exclusively("proximites:prepare").await?;
    let reference = prepare_reference(store).await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "reference loaded"
    );
    if demo
        && db::fact(store, "demo_loaded").await?.is_none()
        && crate::services::store::count(store).await? == 0
    {
        // Harvested like the national file it comes from, through the same reader.
        let report = import::harvest(
            store,
            &reference,
            import::National::Dila,
            Input::Bytes {
                name: "mairies-auvergne-dila.json".into(),
                bytes: demo_town_halls_dila()?.into_bytes(),
            },
            false,
            false,
        )
        .await?;
        for error in &report.errors {
            tracing::warn!(%error, "demo town hall skipped");
        }
        db::set_fact(store, "demo_loaded", "true").await?;
        tracing::info!(
            created = report.created,
            rejected = report.rejected,
            "Auvergne demo loaded"
        );
    }
    if let Some(lock) = preparing {
        lock.release().await?;
    }
    Ok(reference)
}

/// Syncs the embedded taxonomy into the database of `store`, loads the embedded territory when
/// it has none, and builds the in-memory reference from what the database then holds: the part
/// of [`prepare`] written for both engines.
pub async fn prepare_reference(store: &Store) -> anyhow::Result<Reference> {
    let started = std::time::Instant::now();
    let taxonomy = Taxonomy::embedded()?;
    taxonomy::store::sync(store, &taxonomy).await?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "taxonomy synced");
    if territory::store::commune_count(store).await? == 0 {
        let files = tokio::task::spawn_blocking(ReferenceFiles::embedded).await??;
        let summary = territory::store::load_reference(store, &files).await?;
        tracing::info!(
            communes = summary.communes,
            boundaries = summary.boundaries,
            "territory reference loaded"
        );
    }
    load_reference(store, taxonomy).await
}

/// The in-memory reference (taxonomy and communes) built from what the database holds.
pub async fn load_reference(store: &Store, taxonomy: Taxonomy) -> anyhow::Result<Reference> {
    let communes = territory::store::load_communes(store).await?;
    let locator = tokio::task::spawn_blocking(move || Locator::new(communes)).await?;
    Ok(Reference {
        taxonomy: Arc::new(taxonomy),
        locator: Arc::new(locator),
    })
}

/// The demo town halls written back as the Annuaire de l'administration publishes them (its
/// bulk JSON: address, position, phone, e-mail, website, `plage_ouverture`), to be harvested by
/// the DILA reader like a real instance's.
///
/// About 5 % of the DILA points lie outside their commune (a neighbour's village, once a town
/// 300 km away): the harvest places those at the commune's centre with a quality flag, as it
/// does for a real instance, and the demo shows them « à vérifier ».
pub fn demo_town_halls_dila() -> anyhow::Result<String> {
    use serde_json::json;
    let mut reader = csv::Reader::from_reader(DEMO_TOWN_HALLS.as_bytes());
    let mut records = Vec::new();
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
        let (lon, lat) = (row.lon.clone(), row.lat.clone());
        // service-public.fr's hours, `[[from, to, [[open, close], …]], …]`, as DILA ranges.
        let rules: Vec<HoursRule> = serde_json::from_str(&row.horaires_source).unwrap_or_default();
        let ranges: Vec<serde_json::Value> = rules
            .iter()
            .map(|(from, to, slots)| {
                let mut range =
                    json!({"nom_jour_debut": from, "nom_jour_fin": to, "commentaire": ""});
                for (i, (open, close)) in slots.iter().take(2).enumerate() {
                    range[format!("valeur_heure_debut_{}", i + 1)] = json!(open);
                    range[format!("valeur_heure_fin_{}", i + 1)] = json!(close);
                }
                range
            })
            .collect();
        let mut record = json!({
            "id": format!("mairie-{}", row.insee_code),
            "nom": format!("Mairie de {}", row.commune),
            "pivot": [{"type_service_local": "mairie", "code_insee_commune": [row.insee_code]}],
            "code_insee_commune": row.insee_code,
            "adresse": [{"type_adresse": "Adresse", "numero_voie": street, "code_postal": postcode,
                         "nom_commune": city, "pays": "France", "longitude": lon, "latitude": lat}],
            "plage_ouverture": ranges,
        });
        if !row.phone.is_empty() {
            record["telephone"] = json!([{"valeur": row.phone, "description": ""}]);
        }
        if !row.email.is_empty() {
            record["adresse_courriel"] = json!([row.email]);
        }
        if !row.website.is_empty() {
            record["site_internet"] = json!([{"libelle": "", "valeur": row.website}]);
        }
        records.push(record);
    }
    Ok(serde_json::json!({ "service": records }).to_string())
}

/// One rule of service-public.fr's JSON hours: first and last day, opening intervals.
type HoursRule = (String, String, Vec<(String, String)>);

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
    horaires_source: String,
}
