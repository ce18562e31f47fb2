//! Read API of the territory reference: one commune with its enclosing territories and
//! boundary, communes by what people type, and addresses through the configured geocoder.

use crate::http::Path;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::geocoder::Address;
use super::{store, InseeCode};
use crate::error::{Error, FieldError, Problem, Result};
use crate::http::Query;
use crate::spatial::{BBox, LonLat};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/communes/{insee}", get(get_commune))
        .route("/api/v1/places", get(find_places))
        .route("/api/v1/geocode", get(geocode))
        .route("/api/v1/boundaries", get(boundaries))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BoundariesQuery {
    /// `min_lon,min_lat,max_lon,max_lat` (WGS84): the communes that touch this box.
    bbox: String,
}

/// Communes drawn at most (a view of a whole région).
const MAX_BOUNDARIES: usize = 3_000;

/// The boundaries of the communes in a box, simplified to the box's scale: the base map the
/// citizen map draws when no tile source is configured. Communes without a loaded boundary
/// are left out.
#[utoipa::path(get, path = "/api/v1/boundaries", tag = "territory", params(BoundariesQuery),
    responses((status = 200, description = "GeoJSON FeatureCollection (insee_code, name)", content_type = "application/geo+json"),
        (status = 400, body = Problem)))]
pub async fn boundaries(
    State(state): State<AppState>,
    Query(query): Query<BoundariesQuery>,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    use geo::Simplify;
    let numbers: Vec<f64> = query
        .bbox
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let bbox = match numbers[..] {
        [min_lon, min_lat, max_lon, max_lat]
            if min_lon < max_lon && min_lat < max_lat && max_lon - min_lon <= 40.0 =>
        {
            BBox::new(min_lon, min_lat, max_lon, max_lat)
        }
        _ => {
            return Err(Error::InvalidParameters(vec![FieldError::new(
                "bbox",
                "attendu min_lon,min_lat,max_lon,max_lat (40° de large au plus)",
            )]))
        }
    };
    let locator = state.reference.locator.clone();
    let body = tokio::task::spawn_blocking(move || {
        // About one screen pixel at the box's scale.
        let epsilon = (bbox.max_lon - bbox.min_lon) / 1_000.0;
        let features: Vec<geojson::Feature> = locator
            .communes()
            .filter(|c| {
                c.bbox.max_lon >= bbox.min_lon
                    && c.bbox.min_lon <= bbox.max_lon
                    && c.bbox.max_lat >= bbox.min_lat
                    && c.bbox.min_lat <= bbox.max_lat
            })
            .filter_map(|c| c.boundary.as_ref().map(|b| (c, b.simplify(&epsilon))))
            .take(MAX_BOUNDARIES)
            .map(|(c, shape)| {
                let mut properties = serde_json::Map::new();
                properties.insert("insee_code".into(), c.insee_code.as_str().into());
                properties.insert("name".into(), c.name.clone().into());
                geojson::Feature {
                    geometry: Some(geojson::Geometry::new((&shape).into())),
                    properties: Some(properties),
                    ..Default::default()
                }
            })
            .collect();
        geojson::FeatureCollection {
            features,
            bbox: None,
            foreign_members: None,
        }
        .to_string()
    })
    .await
    .map_err(anyhow::Error::from)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/geo+json")],
        body,
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GeocodeQuery {
    /// An address as people type it: « 12 rue de la République Riom ».
    q: String,
    /// At most this many addresses (default 5, at most 20).
    limit: Option<usize>,
    /// `lon,lat`: addresses near this point first.
    near: Option<String>,
}

/// Addresses through the geocoder this instance is configured with (an IGN Géoplateforme
/// `/geocodage/search`-shaped service), queried by the server so that browsers talk to no third
/// party. 404 when none is configured: `/api/v1/places` then finds communes.
#[utoipa::path(get, path = "/api/v1/geocode", tag = "territory", params(GeocodeQuery),
    responses((status = 200, body = Vec<Address>), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 502, body = Problem)))]
pub async fn geocode(
    State(state): State<AppState>,
    Query(query): Query<GeocodeQuery>,
) -> Result<Json<Vec<Address>>> {
    let geocoder = state
        .geocoder
        .as_ref()
        .ok_or_else(|| Error::NotConfigured {
            code: "geocoder_not_configured",
            detail: "aucun géocodeur d'adresses n'est configuré sur cette instance ; \
                 /api/v1/places trouve les communes / no address geocoder is configured on \
                 this instance; /api/v1/places finds communes"
                .into(),
        })?;
    let mut errors = Vec::new();
    let q = query.q.trim();
    if q.chars().count() < 3 {
        errors.push(FieldError::new(
            "q",
            "au moins 3 caractères / at least 3 characters",
        ));
    }
    let limit = query.limit.unwrap_or(5);
    if !(1..=20).contains(&limit) {
        errors.push(FieldError::new("limit", "entre 1 et 20 / between 1 and 20"));
    }
    let near = match query.near.as_deref() {
        None => None,
        Some(value) => match LonLat::parse_pair(value) {
            Some(p) => Some(p),
            None => {
                errors.push(FieldError::new(
                    "near",
                    format!("« {value} » : attendu lon,lat / expected lon,lat"),
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(Error::InvalidParameters(errors));
    }
    Ok(Json(geocoder.search(q, limit, near).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlaceQuery {
    /// A commune name or its beginning (accents, case and hyphens ignored), a postcode or an
    /// INSEE code.
    q: String,
    /// At most this many places (default 10, at most 50).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct PlaceView {
    /// `commune` (or `arrondissement` for Paris, Lyon and Marseille).
    pub kind: &'static str,
    pub insee_code: String,
    pub name: String,
    pub departement_code: String,
    pub postcodes: Vec<String>,
    pub population: i64,
    /// The reference point to search around.
    pub point: LonLat,
    pub bbox: BBox,
}

/// Communes by name prefix, postcode or INSEE code, most relevant first; works offline.
#[utoipa::path(get, path = "/api/v1/places", tag = "territory", params(PlaceQuery),
    responses((status = 200, body = Vec<PlaceView>), (status = 400, body = Problem)))]
async fn find_places(
    State(state): State<AppState>,
    Query(query): Query<PlaceQuery>,
) -> Result<Json<Vec<PlaceView>>> {
    let limit = query.limit.unwrap_or(10).clamp(1, 50);
    let locator = &state.reference.locator;
    Ok(Json(
        state
            .places
            .search(locator, &query.q, limit)
            .into_iter()
            .map(|c| PlaceView {
                kind: if c.kind == "ARM" {
                    "arrondissement"
                } else {
                    "commune"
                },
                insee_code: c.insee_code.to_string(),
                name: c.name.clone(),
                departement_code: c.departement_code.clone(),
                postcodes: c.postcodes.clone(),
                population: c.population,
                point: c.centroid,
                bbox: c.bbox,
            })
            .collect(),
    ))
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
    let enclosing = store::enclosing(&state.store, &code)
        .await?
        .ok_or_else(|| Error::not_found("commune", code.as_str()))?;
    let published_services =
        crate::services::store::published_in_commune(&state.store, &code).await?;
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
