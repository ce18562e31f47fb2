//! Write API of the entries, for contributors' scripts (bearer tokens): create, change with
//! `If-Match`, withdraw, confirm, history and restore, and bulk upserts in the import formats.

use crate::http::Path;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::history::{Change, Via};
use super::routes::ServiceView;
use super::upload;
use super::write::{self, Written};
use crate::accounts::auth::ApiActor;
use crate::error::{Error, FieldError, Problem, Result};
use crate::http::Query;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/services", post(create_service))
        .route(
            "/api/v1/services/bulk",
            post(bulk_upsert).layer(axum::extract::DefaultBodyLimit::max(upload::MAX_BYTES)),
        )
        .route(
            "/api/v1/services/{id}",
            patch(update_service).delete(withdraw_service),
        )
        .route("/api/v1/services/{id}/confirm", post(confirm_service))
        .route(
            "/api/v1/services/{id}/history",
            axum::routing::get(service_history),
        )
        .route(
            "/api/v1/services/{id}/history/{change}/restore",
            post(restore_service),
        )
        .route(
            "/api/v1/services/{id}/claim",
            post(claim_service).delete(release_service),
        )
        .route(
            "/api/v1/services/{id}/suggestions",
            axum::routing::get(service_suggestions),
        )
        .route(
            "/api/v1/services/{id}/suggestions/{field}/accept",
            post(accept_suggestion),
        )
        .route(
            "/api/v1/services/{id}/suggestions/{field}/dismiss",
            post(dismiss_suggestion),
        )
}

/// A JSON object body, or a 400 problem saying why not.
fn object(body: &Bytes) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::BadRequest {
            code: "invalid_body",
            detail: "un objet JSON est attendu".into(),
        }),
        Err(e) => Err(Error::BadRequest {
            code: "invalid_body",
            detail: format!("JSON illisible : {e}"),
        }),
    }
}

fn if_match(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
}

/// The entry as written, with its new ETag.
fn answer(state: &AppState, status: StatusCode, written: Written) -> Response {
    let tag = write::etag(&written.service);
    let location = format!("/api/v1/services/{}", written.service.id);
    let view = ServiceView::new(
        written.service,
        &state.reference.taxonomy,
        &state.reference.locator,
    );
    let mut response = (status, Json(view)).into_response();
    let headers = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, tag);
    }
    if status == StatusCode::CREATED {
        if let Ok(location) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, location);
        }
    }
    response
}

/// The fields of an entry, as the project's CSV names them. Send only those that change to
/// `PATCH`; `null` or `""` empties an optional field.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct EntryFields {
    /// For `POST`: the organisation the entry is for (the operator's choice; a token's own
    /// organisation otherwise).
    organisation_id: Option<String>,
    /// For `POST`: the entry's id in the contributor's own system (default: the new id).
    source_ref: Option<String>,
    typology: Option<String>,
    name: Option<String>,
    description: Option<String>,
    address: Option<String>,
    postcode: Option<String>,
    city: Option<String>,
    /// Found from the point when absent.
    insee_code: Option<String>,
    lon: Option<f64>,
    lat: Option<f64>,
    /// Numbers separated by `;`, or a list.
    phone: Option<String>,
    email: Option<String>,
    website: Option<String>,
    /// OSM `opening_hours`.
    opening_hours: Option<String>,
    wheelchair: Option<String>,
    wheelchair_note: Option<String>,
    closures: Option<Vec<super::Closure>>,
}

/// Creates an entry (published) for the token's organisation, inside its territory.
#[utoipa::path(post, path = "/api/v1/services", tag = "contributors",
    request_body = EntryFields,
    security(("bearer" = [])),
    responses((status = 201, body = ServiceView, description = "Created; `ETag` and `Location` headers"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_service(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    body: Bytes,
) -> Result<Response> {
    let fields = object(&body)?;
    let written = write::create(&state, &actor, Via::Api, write::NewEntry { fields }).await?;
    Ok(answer(&state, StatusCode::CREATED, written))
}

/// Changes the fields sent. `If-Match` must carry the ETag of the entry as read: a stale one
/// gets 412 (somebody else changed it meanwhile), none 428.
#[utoipa::path(patch, path = "/api/v1/services/{id}", tag = "contributors",
    params(("id" = String, Path, description = "Entry id"),
        ("If-Match" = String, Header, description = "The entry's ETag")),
    request_body = EntryFields,
    security(("bearer" = [])),
    responses((status = 200, body = ServiceView, description = "Changed; new `ETag`"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
async fn update_service(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let fields = object(&body)?;
    let written = write::update(&state, &actor, Via::Api, &id, if_match(&headers), &fields).await?;
    Ok(answer(&state, StatusCode::OK, written))
}

/// Withdraws (unpublishes) the entry; it keeps its history and can be restored. `If-Match`
/// is checked when sent.
#[utoipa::path(delete, path = "/api/v1/services/{id}", tag = "contributors",
    params(("id" = String, Path, description = "Entry id")),
    security(("bearer" = [])),
    responses((status = 200, body = ServiceView, description = "Withdrawn"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 412, body = Problem)))]
async fn withdraw_service(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let written = write::withdraw(&state, &actor, Via::Api, &id, if_match(&headers)).await?;
    Ok(answer(&state, StatusCode::OK, written))
}

/// « Rien n'a changé » : confirms the entry as it is (sets `verified_at`).
#[utoipa::path(post, path = "/api/v1/services/{id}/confirm", tag = "contributors",
    params(("id" = String, Path, description = "Entry id")),
    security(("bearer" = [])),
    responses((status = 200, body = ServiceView), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn confirm_service(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
) -> Result<Response> {
    let written = write::confirm(&state, &actor, Via::Api, &id).await?;
    Ok(answer(&state, StatusCode::OK, written))
}

#[derive(Serialize, ToSchema)]
pub struct HistoryView {
    pub id: String,
    /// The entry's current ETag (to restore or change it next).
    pub etag: String,
    /// Most recent first.
    pub changes: Vec<Change>,
}

/// Every change of the entry: who (person, token or import), when, how, each field's old and
/// new value, and the whole version before it.
#[utoipa::path(get, path = "/api/v1/services/{id}/history", tag = "contributors",
    params(("id" = String, Path, description = "Entry id")),
    security(("bearer" = [])),
    responses((status = 200, body = HistoryView), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn service_history(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
) -> Result<Json<HistoryView>> {
    let (service, changes) = write::history_of(&state, &actor, &id).await?;
    Ok(Json(HistoryView {
        id: service.id.to_string(),
        etag: write::etag(&service),
        changes,
    }))
}

/// Puts the entry back as it was before the change `change` (a row of its history).
#[utoipa::path(post, path = "/api/v1/services/{id}/history/{change}/restore", tag = "contributors",
    params(("id" = String, Path, description = "Entry id"), ("change" = String, Path, description = "History row id")),
    security(("bearer" = [])),
    responses((status = 200, body = ServiceView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn restore_service(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path((id, change)): Path<(String, String)>,
) -> Result<Response> {
    let written = write::restore(&state, &actor, Via::Api, &id, &change).await?;
    Ok(answer(&state, StatusCode::OK, written))
}

/// The token's organisation claims a harvested entry of its territory (from the Annuaire de
/// l'administration, data·inclusion or the BPE): it signs the entry from now on, the harvest
/// no longer overwrites its fields and shows what the source says differently as suggestions.
#[utoipa::path(post, path = "/api/v1/services/{id}/claim", tag = "contributors",
    params(("id" = String, Path, description = "Entry id")),
    security(("bearer" = [])),
    responses((status = 200, body = ServiceView, description = "Claimed: the entry is the organisation's"),
        (status = 401, body = Problem), (status = 403, body = Problem, description = "Outside the organisation's territory"),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "Not a harvested entry, or already the organisation's")))]
async fn claim_service(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
) -> Result<Response> {
    let written = super::claims::claim(&state, &actor, Via::Api, &id).await?;
    Ok(answer(&state, StatusCode::OK, written))
}

/// The operator releases a claim: the entry goes back to the source that harvested it, whose
/// next harvest writes over it again.
#[utoipa::path(delete, path = "/api/v1/services/{id}/claim", tag = "contributors",
    params(("id" = String, Path, description = "Entry id")),
    security(("bearer" = [])),
    responses((status = 200, body = ServiceView, description = "Released"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "Not claimed")))]
async fn release_service(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
) -> Result<Response> {
    let written = super::claims::release(&state, &actor, Via::Api, &id).await?;
    Ok(answer(&state, StatusCode::OK, written))
}

#[derive(Serialize, ToSchema)]
pub struct SuggestionsView {
    pub id: String,
    /// The entry's current ETag.
    pub etag: String,
    /// Where the entry came from, when an organisation claimed it.
    pub claim: Option<super::claims::Claim>,
    /// What the source says differently: pending first, then dismissed.
    pub suggestions: Vec<super::claims::Suggestion>,
}

async fn suggestions_view(
    state: &AppState,
    actor: &crate::accounts::Actor,
    id: &str,
) -> Result<Json<SuggestionsView>> {
    let found = super::claims::suggestions_of(state, actor, id).await?;
    Ok(Json(SuggestionsView {
        id: found.service.id.to_string(),
        etag: write::etag(&found.service),
        claim: found.claim,
        suggestions: found.suggestions,
    }))
}

/// A claimed entry's origin, and what its source says differently, field by field.
#[utoipa::path(get, path = "/api/v1/services/{id}/suggestions", tag = "contributors",
    params(("id" = String, Path, description = "Entry id")),
    security(("bearer" = [])),
    responses((status = 200, body = SuggestionsView), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn service_suggestions(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
) -> Result<Json<SuggestionsView>> {
    suggestions_view(&state, &actor, &id).await
}

/// Takes the source's value for the field: a change of the entry like any other, in its
/// history.
#[utoipa::path(post, path = "/api/v1/services/{id}/suggestions/{field}/accept", tag = "contributors",
    params(("id" = String, Path, description = "Entry id"),
        ("field" = String, Path, description = "The suggestion's field (`name`, `phone`, `position`…)")),
    security(("bearer" = [])),
    responses((status = 200, body = ServiceView, description = "Changed; new `ETag`"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
async fn accept_suggestion(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path((id, field)): Path<(String, String)>,
) -> Result<Response> {
    let written = super::claims::accept(&state, &actor, Via::Api, &id, &field).await?;
    Ok(answer(&state, StatusCode::OK, written))
}

/// Keeps the entry's own value: the suggestion stays dismissed until the source says
/// something else for that field.
#[utoipa::path(post, path = "/api/v1/services/{id}/suggestions/{field}/dismiss", tag = "contributors",
    params(("id" = String, Path, description = "Entry id"),
        ("field" = String, Path, description = "The suggestion's field")),
    security(("bearer" = [])),
    responses((status = 200, body = SuggestionsView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
async fn dismiss_suggestion(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path((id, field)): Path<(String, String)>,
) -> Result<Json<SuggestionsView>> {
    super::claims::dismiss(&state, &actor, &id, &field).await?;
    suggestions_view(&state, &actor, &id).await
}

#[derive(Deserialize, IntoParams)]
pub struct BulkParams {
    /// Check and plan only, write nothing: the answer details each row.
    #[serde(default)]
    dry_run: bool,
    /// Withdraw the organisation's published entries the file leaves out (in the same
    /// transaction).
    #[serde(default)]
    withdraw_missing: bool,
    /// Confirm (« rien n'a changé », `verified_at` now) the entries the file leaves unchanged,
    /// in the same transaction.
    #[serde(default)]
    confirm_unchanged: bool,
    /// The organisation the entries are for (operator only; a token's own otherwise).
    organisation: Option<String>,
    /// `csv` or `geojson`; guessed from the content when absent.
    format: Option<String>,
}

/// What a bulk upsert did (or would do, in a dry run).
#[derive(Serialize, ToSchema)]
pub struct BulkReport {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// Entries the file left out, withdrawn (`withdraw_missing`).
    pub withdrawn: u64,
    /// Unchanged entries confirmed (`confirm_unchanged`).
    pub confirmed: u64,
    pub committed: bool,
    pub errors: Vec<FieldError>,
    /// In a dry run: rows to create, to change (field by field), unchanged, and the entries
    /// the file leaves out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<upload::Plan>,
}

/// Creates or updates many entries of the organisation at once, from a file in the import
/// formats (the project's CSV, SCDL CSV, GeoJSON) sent as the body, keyed by `source_ref`. All
/// or nothing: one wrong row (or one outside the territory) and nothing is written; the answer
/// lists every wrong row and field.
#[utoipa::path(post, path = "/api/v1/services/bulk", tag = "contributors",
    params(BulkParams),
    request_body(content = String, content_type = "text/csv", description = "CSV or GeoJSON"),
    security(("bearer" = [])),
    responses((status = 200, body = BulkReport, description = "Written, or checked and planned (dry run)"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 413, body = Problem),
        (status = 422, body = Problem)))]
async fn bulk_upsert(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Query(params): Query<BulkParams>,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<BulkReport>> {
    let body =
        body.map_err(|rejection| upload::body_error(rejection.status(), &rejection.body_text()))?;
    let organisation_id = upload::organisation_of(&actor, params.organisation.as_deref())?;
    let name = match params.format.as_deref() {
        Some("geojson") => "envoi.geojson",
        _ => "envoi.csv",
    };
    let (report, plan) = upload::run(
        &state,
        &actor,
        &organisation_id,
        name,
        body.to_vec(),
        upload::Mode {
            dry_run: params.dry_run,
            withdraw_missing: params.withdraw_missing,
            confirm_unchanged: params.confirm_unchanged,
        },
    )
    .await?;
    if report.rejected > 0 {
        return Err(Error::Invalid(report.errors));
    }
    Ok(Json(BulkReport {
        rows: report.rows,
        created: report.created,
        updated: report.updated,
        unchanged: report.unchanged,
        rejected: report.rejected,
        withdrawn: report.withdrawn,
        confirmed: report.confirmed,
        committed: report.committed,
        errors: report.errors,
        plan,
    }))
}
