//! Printed directories over HTTP: the jobs API (`/api/v1/directories`) and the pages to choose
//! a guide, preview its cover and follow its making (`/annuaires/…`).
//!
//! Who may make guides (contributors and the operator) comes with the accounts of the
//! contributors' issue; until then these routes are open like the rest of the instance.

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::jobs::{self, JobStatus};
use super::{content, html, render, Choices, RawChoices};
use crate::app::AppState;
use crate::error::{Error, Problem, Result};

/// A request holds at most the logo and a few fields; the logo's own limit is checked with a
/// clear message, so the body limit sits above it.
const BODY_LIMIT: usize = super::MAX_LOGO_BYTES + 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/directories", post(create))
        .route("/api/v1/directories/cover", post(cover))
        .route("/api/v1/directories/{job}", get(job))
        .route("/api/v1/directories/{job}/guide.pdf", get(guide_pdf))
        .route("/api/v1/directories/{job}/guide.html", get(guide_html))
        .route("/annuaires/nouveau", get(new_page))
        .route("/annuaires", post(create_from_form))
        .route("/annuaires/couverture", post(cover))
        .route("/annuaires/{job}", get(job_page))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Reads the choices from a JSON body or a `multipart/form-data` one (with the logo).
async fn read_choices(state: &AppState, request: Request) -> Result<(RawChoices, Option<Vec<u8>>)> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| bad_body(e.body_text()))?;
        let mut raw = RawChoices::default();
        let mut logo = None;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| bad_body(e.body_text()))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            if name == "logo" {
                let bytes = field.bytes().await.map_err(|e| bad_body(e.body_text()))?;
                if !bytes.is_empty() {
                    logo = Some(bytes.to_vec());
                }
                continue;
            }
            let value = field.text().await.map_err(|e| bad_body(e.body_text()))?;
            let value = Some(value).filter(|v| !v.trim().is_empty());
            match name.as_str() {
                "territory" => raw.territory = value.unwrap_or_default(),
                "themes" | "theme" => raw.themes.extend(value),
                "typologies" | "typology" => raw.typologies.extend(value),
                "group" => raw.group = value,
                "format" => raw.format = value,
                "title" => raw.title = value,
                "date" => raw.date = value,
                "publisher" => raw.publisher = value,
                "color" => raw.color = value,
                "lang" => raw.lang = value,
                _ => {}
            }
        }
        Ok((raw, logo))
    } else {
        let Json(raw) = Json::<RawChoices>::from_request(request, state)
            .await
            .map_err(|e| bad_body(e.body_text()))?;
        Ok((raw, None))
    }
}

fn bad_body(detail: String) -> Error {
    Error::BadRequest {
        code: "invalid_body",
        detail: format!("corps de requête illisible / unreadable body : {detail}"),
    }
}

/// Parses the choices and checks the logo decodes.
async fn choose(state: &AppState, raw: RawChoices, logo: Option<Vec<u8>>) -> Result<Choices> {
    let today = crate::search::hours::paris_now().date_naive();
    let choices = Choices::parse(
        &raw,
        logo,
        &state.reference.taxonomy,
        &state.reference.locator,
        today,
    )?;
    if let Some(logo) = choices.logo.clone() {
        tokio::task::spawn_blocking(move || render::check_logo(&logo))
            .await
            .map_err(anyhow::Error::from)?
            .map_err(jobs::render_error)?;
    }
    Ok(choices)
}

/// Queues the guide, or answers with the one already made for the same data and choices.
async fn submit(state: &AppState, choices: Choices) -> Result<JobStatus> {
    let version = crate::db::fact(&state.pool, "data_version")
        .await?
        .unwrap_or_default();
    let key = choices.key(&version, &state.public_url);
    if let Some(found) = state.directories.find(&key) {
        return Ok(found);
    }
    let prepared = jobs::prepare(
        &state.pool,
        &state.reference,
        state.hours.clone(),
        choices,
        &state.public_url,
        key,
    )
    .await?;
    Ok(state.directories.submit(prepared))
}

/// Starts making a printed directory (or finds the same one already made: same data version
/// and choices). JSON body, or `multipart/form-data` with the same fields and a `logo` file
/// (PNG or SVG, 2 MB at most). Answers 202 with the job; follow `GET /api/v1/directories/{job}`.
#[utoipa::path(post, path = "/api/v1/directories", tag = "directories",
    request_body(content = RawChoices, description = "JSON, or multipart/form-data with the same fields (themes and typologies repeated) and a `logo` file"),
    responses(
        (status = 202, body = JobStatus, description = "queued, under way, or already made"),
        (status = 400, body = Problem, description = "unreadable body"),
        (status = 404, body = Problem, description = "unknown territory"),
        (status = 422, body = Problem, description = "wrong choices, unreadable or too large logo, empty selection")))]
pub async fn create(State(state): State<AppState>, request: Request) -> Result<Response> {
    let (raw, logo) = read_choices(&state, request).await?;
    let choices = choose(&state, raw, logo).await?;
    let status = submit(&state, choices).await?;
    let location = format!("/api/v1/directories/{}", status.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(status),
    )
        .into_response())
}

/// Where a job stands: stage, progress from 0 to 1, place in the queue; the links to the PDF
/// and the HTML page once done, the problem when it failed.
#[utoipa::path(get, path = "/api/v1/directories/{job}", tag = "directories",
    params(("job" = String, Path, description = "the job id")),
    responses((status = 200, body = JobStatus), (status = 404, body = Problem)))]
pub async fn job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobStatus>> {
    state
        .directories
        .status(&id)
        .map(Json)
        .ok_or_else(|| Error::not_found("annuaire", id))
}

fn finished(state: &AppState, id: &str) -> Result<std::sync::Arc<jobs::Output>> {
    match state.directories.output(id) {
        Ok(Some(output)) => Ok(output),
        Ok(None) => Err(Error::Conflict {
            code: "directory_not_ready",
            detail: format!("l'annuaire {id} n'est pas encore prêt / not ready yet"),
        }),
        Err(error) => Err(replay(&error)),
    }
}

/// A job's stored failure, answered again (errors are not `Clone`).
fn replay(error: &Error) -> Error {
    match error {
        Error::NotFound { what, id } => Error::not_found(what, id.clone()),
        Error::Invalid(errors) => Error::Invalid(errors.clone()),
        other => Error::Internal(anyhow::anyhow!("{other}")),
    }
}

/// The booklet, a tagged PDF (PDF/UA-1 when it validates).
#[utoipa::path(get, path = "/api/v1/directories/{job}/guide.pdf", tag = "directories",
    params(("job" = String, Path, description = "the job id")),
    responses((status = 200, content_type = "application/pdf", description = "the PDF"),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "not ready yet"),
        (status = 422, body = Problem, description = "the job failed")))]
pub async fn guide_pdf(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let output = finished(&state, &id)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"annuaire-{id}.pdf\""),
            ),
        ],
        output.pdf.clone(),
    )
        .into_response())
}

/// The same guide as an accessible HTML page.
#[utoipa::path(get, path = "/api/v1/directories/{job}/guide.html", tag = "directories",
    params(("job" = String, Path, description = "the job id")),
    responses((status = 200, content_type = "text/html", description = "the page"),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "not ready yet"),
        (status = 422, body = Problem, description = "the job failed")))]
pub async fn guide_html(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let output = finished(&state, &id)?;
    Ok(Html(output.html.clone()).into_response())
}

/// The cover of a guide with these choices, as SVG: a quick preview before making it.
#[utoipa::path(post, path = "/api/v1/directories/cover", tag = "directories",
    request_body(content = RawChoices, description = "JSON, or multipart/form-data with a `logo` file"),
    responses((status = 200, content_type = "image/svg+xml", description = "the cover"),
        (status = 400, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn cover(State(state): State<AppState>, request: Request) -> Result<Response> {
    let (raw, logo) = read_choices(&state, request).await?;
    let choices = choose(&state, raw, logo).await?;
    let prepared = jobs::prepare(
        &state.pool,
        &state.reference,
        state.hours.clone(),
        choices,
        &state.public_url,
        String::new(),
    )
    .await?;
    let svg = tokio::task::spawn_blocking(move || -> Result<String> {
        let sources = content::Sources {
            taxonomy: &prepared.reference.taxonomy,
            locator: &prepared.reference.locator,
            hours: &prepared.hours,
            territory_name: prepared.territory_name.clone(),
            public_url: &prepared.public_url,
        };
        let guide = content::build_cover(&prepared.choices, &prepared.services, &sources)?;
        render::cover_svg(&guide, prepared.choices.logo.as_ref()).map_err(jobs::render_error)
    })
    .await
    .map_err(anyhow::Error::from)??;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

async fn new_page(State(state): State<AppState>) -> Html<String> {
    Html(html::new_page(&state.reference.taxonomy, "epci:246300701", None).into_string())
}

/// The form's submission without JavaScript: the job is queued and its page shown; wrong
/// choices come back on the form with the message.
async fn create_from_form(State(state): State<AppState>, request: Request) -> Response {
    let mut territory = String::new();
    let result = async {
        let (raw, logo) = read_choices(&state, request).await?;
        territory.clone_from(&raw.territory);
        let choices = choose(&state, raw, logo).await?;
        submit(&state, choices).await
    }
    .await;
    match result {
        Ok(status) => Redirect::to(&format!("/annuaires/{}", status.id)).into_response(),
        Err(error) => {
            let problem = Problem::from(&error);
            let page = html::new_page(&state.reference.taxonomy, &territory, Some(&problem.detail));
            (error.status(), Html(page.into_string())).into_response()
        }
    }
}

async fn job_page(State(state): State<AppState>, Path(id): Path<String>) -> Result<Html<String>> {
    let status = state
        .directories
        .status(&id)
        .ok_or_else(|| Error::not_found("annuaire", id.clone()))?;
    Ok(Html(html::job_page(&status).into_string()))
}
