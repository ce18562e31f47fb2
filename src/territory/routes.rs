//! Read API of the territory reference: one commune with its enclosing territories and boundary.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::{store, InseeCode};
use crate::app::AppState;
use crate::error::{Error, Problem, Result};
use crate::spatial::{BBox, LonLat};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/communes/{insee}", get(get_commune))
}

#[derive(Serialize, ToSchema)]
pub struct NamedCode {
    pub code: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct EpciView {
    pub siren: String,
    pub name: String,
    /// CC, CA, CU or METRO.
    pub kind: String,
}

#[derive(Serialize, ToSchema)]
pub struct CommuneView {
    pub insee_code: String,
    pub name: String,
    /// `COM` commune, `ARM` municipal arrondissement.
    pub kind: String,
    pub departement: NamedCode,
    pub region: NamedCode,
    pub epci: Option<EpciView>,
    pub population: i64,
    pub postcodes: Vec<String>,
    pub centroid: LonLat,
    pub bbox: BBox,
    /// GeoJSON Polygon or MultiPolygon (WGS84), when boundaries are loaded.
    #[schema(value_type = Option<Object>)]
    pub boundary: Option<serde_json::Value>,
    pub published_services: i64,
}

/// A commune by its INSEE code.
#[utoipa::path(get, path = "/api/v1/communes/{insee}", tag = "territory",
    params(("insee" = String, Path, description = "Code INSEE (COG) de la commune, ex. 63113")),
    responses((status = 200, body = CommuneView), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn get_commune(
    State(state): State<AppState>,
    Path(insee): Path<String>,
) -> Result<Json<CommuneView>> {
    let code = InseeCode::parse(&insee).map_err(|detail| Error::BadRequest {
        code: "invalid_insee_code",
        detail,
    })?;
    let commune = state
        .reference
        .locator
        .commune(&code)
        .ok_or_else(|| Error::not_found("commune", code.as_str()))?;
    let enclosing = store::enclosing(&state.pool, &code)
        .await?
        .ok_or_else(|| Error::not_found("commune", code.as_str()))?;
    let published_services =
        crate::services::store::published_in_commune(&state.pool, &code).await?;
    Ok(Json(CommuneView {
        insee_code: commune.insee_code.to_string(),
        name: commune.name.clone(),
        kind: commune.kind.clone(),
        departement: NamedCode {
            code: commune.departement_code.clone(),
            name: enclosing.departement_name,
        },
        region: NamedCode {
            code: commune.region_code.clone(),
            name: enclosing.region_name,
        },
        epci: match (
            &commune.epci_siren,
            enclosing.epci_name,
            enclosing.epci_kind,
        ) {
            (Some(siren), Some(name), Some(kind)) => Some(EpciView {
                siren: siren.clone(),
                name,
                kind,
            }),
            _ => None,
        },
        population: commune.population,
        postcodes: commune.postcodes.clone(),
        centroid: commune.centroid,
        bbox: commune.bbox,
        boundary: commune
            .boundary
            .as_ref()
            .and_then(|b| serde_json::from_str(&super::boundary_to_geojson(b)).ok()),
        published_services,
    }))
}
