//! `GET /api/v1/territories/{territory}/coverage`: a territory's coverage as JSON or CSV.

use crate::http::Path;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{RawRequest, Report, Request};
use crate::error::{Error, FieldError, Problem, Result};
use crate::http::Query;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/territories/{territory}/coverage", get(coverage))
        .route("/veille", get(super::page::choose))
        .route("/veille/{territory}", get(super::page::territory_page))
}

/// The query parameters of the coverage API.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CoverageParams {
    /// One or several typology codes, comma-separated: each measured on its own.
    pub typology: Option<String>,
    /// One or several theme codes, comma-separated: each measured as the nearest entry of any
    /// of its typologies. At least one typology or theme.
    pub theme: Option<String>,
    /// Distance thresholds in metres, comma-separated (default `5000,10000,20000`, at most 10).
    pub thresholds: Option<String>,
    /// Communes farther than this many metres are the gaps (default: the largest threshold).
    pub gap_threshold: Option<f64>,
    /// `false`: the territory alone, without its département, région and France (faster).
    pub compare: Option<bool>,
    /// `json` (default) or `csv` (`insee_code,name,population,distance_m,nearest_id,reference`,
    /// then `typology` when several are asked; a theme is written `theme:CODE`).
    pub format: Option<String>,
}

/// Coverage of a territory by typologies or themes: for each commune, the straight-line
/// distance from its town hall (else its centroid) to the nearest published entry, wherever it
/// is in France; entries per 10,000 inhabitants, communes with one, population-weighted mean
/// distance, population beyond thresholds, gaps; the same for the enclosing département,
/// région and France. Cached by data version.
#[utoipa::path(get, path = "/api/v1/territories/{territory}/coverage", tag = "coverage",
    params(
        ("territory" = String, Path, description = "`departement:63`, `region:84`, `epci:246300701`, `commune:63113`, `communes:63113,63300` or `france`"),
        CoverageParams
    ),
    responses(
        (status = 200, body = Report, description = "JSON, or CSV with `format=csv`"),
        (status = 400, body = Problem),
        (status = 404, body = Problem, description = "unknown territory")))]
pub async fn coverage(
    State(state): State<AppState>,
    Path(territory): Path<String>,
    Query(params): Query<CoverageParams>,
) -> Result<Response> {
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(Error::InvalidParameters(vec![FieldError::new(
                "format",
                format!("« {other} » : json ou csv / json or csv"),
            )]))
        }
    };
    let reference = state.reference.clone();
    let request = Request::parse(
        &RawRequest {
            area: &territory,
            typologies: params.typology.as_deref().into_iter().collect(),
            themes: params.theme.as_deref().into_iter().collect(),
            thresholds: params.thresholds.as_deref(),
            gap_threshold: params.gap_threshold,
            compare: params.compare.unwrap_or(true),
        },
        &reference.taxonomy,
        &reference.locator,
    )?;
    let index = state.live.settled_index();
    let coverage = state.coverage.clone();
    let report = tokio::task::spawn_blocking(move || {
        coverage.report(&index, &reference.locator, &reference.taxonomy, &request)
    })
    .await
    .map_err(anyhow::Error::from)??;
    if !csv {
        return Ok(Json(&*report).into_response());
    }
    let mut body = Vec::new();
    super::write_csv(&report, &mut body).map_err(anyhow::Error::from)?;
    let file = format!(
        "attachment; filename=\"couverture-{}.csv\"",
        report
            .territory
            .id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, file),
        ],
        body,
    )
        .into_response())
}
