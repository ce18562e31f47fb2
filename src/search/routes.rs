//! `GET /api/v1/services`: the search API over the in-memory indexes.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::DateTime;
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::engine::SearchParams;
use crate::error::{Problem, Result};
use crate::http::Query;
use crate::services::routes::ServiceView;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/services", get(search))
}

/// One result: the entry as `GET /api/v1/services/{id}` gives it, with its distance and whether
/// it is open.
#[derive(Serialize, ToSchema)]
pub struct SearchItem {
    #[serde(flatten)]
    pub service: ServiceView,
    /// Metres from `near`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    /// Open at the moment asked (now by default): null when the hours are unknown.
    pub open_now: Option<bool>,
    /// When it next opens or closes (Europe/Paris).
    #[schema(value_type = Option<String>)]
    pub next_change: Option<DateTime<Tz>>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    pub items: Vec<SearchItem>,
    /// Cursor of the next page; null on the last one.
    pub next: Option<String>,
    /// Entries matching the query, all pages together.
    pub total: usize,
}

/// Search published entries by place, territory, typology or theme, words, opening hours and
/// wheelchair access. With `near`, nearest first unless `sort=relevance`.
#[utoipa::path(get, path = "/api/v1/services", tag = "services", params(SearchParams),
    responses((status = 200, body = SearchResponse), (status = 400, body = Problem),
        (status = 503, body = Problem, description = "Searches by words while the word index is first built after start (`text_index_building`, with `Retry-After`)")))]
async fn search(
    State(state): State<AppState>,
    Query(params): Query<SearchParams>,
) -> Result<Response> {
    let now = super::hours::paris_now();
    let query = params.parse(&state.reference.taxonomy, &state.reference.locator, now)?;
    let super::Results {
        page,
        entries: services,
        at,
    } = super::answer(&state, &query, now).await?;
    // The response is `SearchResponse`, written by hand around each entry's JSON rendered once
    // (see `services::cache::Cached`): what would otherwise cost most of each request.
    let mut body = String::with_capacity(1_024 * page.found.len() + 64);
    body.push_str("{\"items\":[");
    let mut first = true;
    for found in page.found {
        // An entry withdrawn since the index was built is left out of the page.
        let Some(cached) = services.get(&found.id) else {
            continue;
        };
        let state_now = state
            .hours
            .state_at(cached.service.content.opening_hours.as_deref(), at);
        let view = cached.view_json(&state.reference.taxonomy, &state.reference.locator);
        let extra = serde_json::to_string(&ItemExtra {
            distance_m: found.distance_m.map(|d| (d * 10.0).round() / 10.0),
            open_now: state_now.open,
            next_change: state_now.next_change,
        })
        .map_err(anyhow::Error::from)?;
        if !first {
            body.push(',');
        }
        first = false;
        // `{view…}` and `{extra…}` joined into one object.
        body.push_str(view.strip_suffix('}').unwrap_or(view));
        body.push(',');
        body.push_str(extra.strip_prefix('{').unwrap_or(&extra));
    }
    body.push_str("],\"next\":");
    body.push_str(
        &serde_json::to_string(&page.next.map(|c| c.encode())).map_err(anyhow::Error::from)?,
    );
    body.push_str(",\"total\":");
    body.push_str(&page.total.to_string());
    body.push('}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// What a search item adds to the entry (see [`SearchItem`]).
#[derive(Serialize)]
struct ItemExtra {
    #[serde(skip_serializing_if = "Option::is_none")]
    distance_m: Option<f64>,
    open_now: Option<bool>,
    next_change: Option<DateTime<Tz>>,
}
