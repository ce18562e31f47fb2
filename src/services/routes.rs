//! Read API of the entries: one published entry with everything it says.

use crate::http::Path;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{store, Closure, Service, ServiceId, Status, Wheelchair};
use crate::error::{Error, Problem, Result};
use crate::spatial::LonLat;
use crate::state::AppState;
use crate::taxonomy::Taxonomy;
use crate::territory::Locator;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/services/{id}", get(get_service))
}

#[derive(Serialize, ToSchema)]
pub struct TypologyRef {
    pub code: String,
    pub label_fr: String,
    pub label_en: String,
    pub theme: String,
}

#[derive(Serialize, ToSchema)]
pub struct AddressView {
    pub street: Option<String>,
    pub postcode: Option<String>,
    pub city: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CommuneRef {
    pub insee_code: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct PhoneView {
    /// E.164, for `tel:` links.
    pub e164: String,
    /// National display form, e.g. `04 73 00 00 00`.
    pub display: String,
}

#[derive(Serialize, ToSchema)]
pub struct AccessibilityView {
    pub wheelchair: Wheelchair,
    pub note: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SourceView {
    /// The contributing organisation (convention art. 2: always shown publicly).
    pub id: String,
    pub name: String,
    /// The entry's identifier in the source's own system.
    pub reference: String,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub typology: TypologyRef,
    pub description: Option<String>,
    pub address: AddressView,
    pub commune: CommuneRef,
    pub location: LonLat,
    pub phones: Vec<PhoneView>,
    pub email: Option<String>,
    pub website: Option<String>,
    /// Normalised OpenStreetMap `opening_hours`.
    pub opening_hours: Option<String>,
    pub closures: Vec<Closure>,
    pub accessibility: AccessibilityView,
    pub source: SourceView,
    /// What is doubtful in the entry, to be checked (empty for a clean entry): a position
    /// outside the commune the source names, a phone or hours that did not read…
    pub quality: Vec<crate::services::quality::QualityFlag>,
    pub status: Status,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ServiceView {
    pub fn new(service: Service, taxonomy: &Taxonomy, locator: &Locator) -> Self {
        let c = service.content;
        let typology = taxonomy.typology(&c.typology);
        ServiceView {
            id: service.id.to_string(),
            name: c.name,
            typology: TypologyRef {
                code: c.typology.clone(),
                label_fr: typology.map_or_else(|| c.typology.clone(), |t| t.label_fr.clone()),
                label_en: typology.map_or_else(|| c.typology.clone(), |t| t.label_en.clone()),
                theme: typology.map(|t| t.theme.clone()).unwrap_or_default(),
            },
            description: c.description,
            address: AddressView {
                street: c.street,
                postcode: c.postcode,
                city: c.city,
            },
            commune: CommuneRef {
                name: locator
                    .commune(&c.insee_code)
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                insee_code: c.insee_code.to_string(),
            },
            location: c.location,
            phones: c
                .phones
                .iter()
                .map(|p| PhoneView {
                    e164: p.e164().to_owned(),
                    display: p.national(),
                })
                .collect(),
            email: c.email,
            website: c.website,
            opening_hours: c.opening_hours,
            closures: c.closures,
            accessibility: AccessibilityView {
                wheelchair: c.wheelchair,
                note: c.wheelchair_note,
            },
            source: SourceView {
                id: service.source_id,
                name: service.source_name,
                reference: service.source_ref,
            },
            quality: c.quality,
            status: service.status,
            verified_at: service.verified_at,
            created_at: service.created_at,
            updated_at: service.updated_at,
        }
    }
}

/// One published entry.
#[utoipa::path(get, path = "/api/v1/services/{id}", tag = "services",
    params(("id" = String, Path, description = "Entry id (16 characters)")),
    responses((status = 200, body = ServiceView, description = "The entry; its `ETag` is what `PATCH` wants in `If-Match`"),
        (status = 307, description = "A duplicate of another source's entry: `Location` is the entry shown in its place"),
        (status = 404, body = Problem)))]
async fn get_service(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    let not_found = || Error::not_found("fiche", &id);
    let service_id = ServiceId::parse(&id).ok_or_else(not_found)?;
    let service = store::get(&state.store, &service_id)
        .await?
        .ok_or_else(not_found)?;
    // A hidden duplicate leads to the entry shown in its place.
    if service.status == Status::Duplicate {
        if let Some(shown) = super::duplicates::shown_instead(&state.store, &service_id).await? {
            return Ok(
                axum::response::Redirect::temporary(&format!("/api/v1/services/{shown}"))
                    .into_response(),
            );
        }
    }
    // Drafts and withdrawn entries are not public.
    if service.status != Status::Published {
        return Err(not_found());
    }
    let tag = super::write::etag(&service);
    let mut response = Json(ServiceView::new(
        service,
        &state.reference.taxonomy,
        &state.reference.locator,
    ))
    .into_response();
    if let Ok(tag) = axum::http::HeaderValue::from_str(&tag) {
        response.headers_mut().insert(axum::http::header::ETAG, tag);
    }
    Ok(response)
}
