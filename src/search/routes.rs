//! `GET /api/v1/services`: the search API over the in-memory indexes.

use std::collections::HashMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::DateTime;
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::engine::SearchParams;
use crate::app::AppState;
use crate::error::{Problem, Result};
use crate::http::Query;
use crate::services::routes::ServiceView;
use crate::services::store;

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
    responses((status = 200, body = SearchResponse), (status = 400, body = Problem)))]
async fn search(
    State(state): State<AppState>,
    Query(params): Query<SearchParams>,
) -> Result<Json<SearchResponse>> {
    let now = super::hours::paris_now();
    let reference = state.reference.clone();
    let query = params.parse(&reference.taxonomy, &reference.locator, now)?;
    let index = state.search_index();
    let hours = state.hours.clone();
    let text = state.text.clone();
    let run_query = query.clone();
    let page = tokio::task::spawn_blocking(move || {
        super::run(
            &text,
            &index.spatial,
            &reference.locator,
            &hours,
            &run_query,
        )
    })
    .await
    .map_err(anyhow::Error::from)??;

    let ids: Vec<_> = page.found.iter().map(|f| f.id.clone()).collect();
    let mut services: HashMap<_, _> = store::get_many(&state.pool, &ids)
        .await?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let at = query.open_at.unwrap_or(now);
    let items = page
        .found
        .into_iter()
        .filter_map(|found| {
            // An entry withdrawn since the index was built is left out of the page.
            let service = services.remove(&found.id)?;
            let state_now = state
                .hours
                .state_at(service.content.opening_hours.as_deref(), at);
            Some(SearchItem {
                service: ServiceView::new(
                    service,
                    &state.reference.taxonomy,
                    &state.reference.locator,
                ),
                distance_m: found.distance_m.map(|d| (d * 10.0).round() / 10.0),
                open_now: state_now.open,
                next_change: state_now.next_change,
            })
        })
        .collect();
    Ok(Json(SearchResponse {
        items,
        next: page.next.map(|c| c.encode()),
        total: page.total,
    }))
}
