//! Printed directories over HTTP: the jobs API (`/api/v1/directories`) and the contributor
//! space's pages to choose a guide, preview its cover and follow its making
//! (`/espace/annuaires/…`).
//!
//! Making a guide costs seconds of CPU, so it is for contributors and the operator: the API
//! asks for a contributor's bearer token, the pages for a session (whose cookie lives under
//! `/espace`). A made guide is public data: its status and files are read by its unguessable
//! job id, without an account. The command line stays open to whoever runs it.

use std::collections::HashMap;

use crate::http::Path;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::jobs::{self, JobStatus};
use super::{content, html, render, Choices, RawChoices};
use crate::accounts::auth::ApiActor;
use crate::accounts::Actor;
use crate::error::{Error, Problem, Result};
use crate::espace::{self, Session};
use crate::state::AppState;

/// A request holds at most the logo and a few fields; the logo's own limit is checked with a
/// clear message, so the body limit sits above it.
const BODY_LIMIT: usize = super::MAX_LOGO_BYTES + 1024 * 1024;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/directories", post(create))
        .route(
            "/api/v1/directories/cover",
            post(cover).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::admission::heavy,
            )),
        )
        .route("/api/v1/directories/{job}", get(job))
        .route("/api/v1/directories/{job}/guide.pdf", get(guide_pdf))
        .route("/api/v1/directories/{job}/guide.html", get(guide_html))
        .merge(
            Router::new()
                .route("/espace/annuaires/nouveau", get(new_page))
                .route("/espace/annuaires", post(create_from_form))
                .route(
                    "/espace/annuaires/couverture",
                    post(cover_from_form).route_layer(axum::middleware::from_fn_with_state(
                        state,
                        crate::admission::heavy,
                    )),
                )
                .route("/espace/annuaires/{job}", get(job_page))
                .layer(axum::middleware::from_fn(espace::no_store))
                .layer(axum::middleware::from_fn(crate::web::security_headers)),
        )
        // The address the first version of the page had.
        .route(
            "/annuaires/nouveau",
            get(|| async { Redirect::permanent("/espace/annuaires/nouveau") }),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// What a request sent: the choices, the logo, and a form's CSRF token.
struct Sent {
    raw: RawChoices,
    logo: Option<Vec<u8>>,
    csrf: Option<String>,
}

/// Reads the choices from a JSON body or a `multipart/form-data` one (with the logo).
async fn read_choices(state: &AppState, request: Request) -> Result<Sent> {
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
        let mut csrf = None;
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
                "csrf" => csrf = value,
                _ => {}
            }
        }
        Ok(Sent { raw, logo, csrf })
    } else {
        let Json(raw) = Json::<RawChoices>::from_request(request, state)
            .await
            .map_err(|e| bad_body(e.body_text()))?;
        Ok(Sent {
            raw,
            logo: None,
            csrf: None,
        })
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
/// `raw` and `logo` are the choices as received, which another instance may render from.
async fn submit(
    state: &AppState,
    raw: &RawChoices,
    logo: Option<&[u8]>,
    choices: Choices,
    actor: &Actor,
) -> Result<JobStatus> {
    let version = state.live.settled_version().unwrap_or_default();
    let key = choices.key(&version, &state.public_url);
    if let Some(found) = state.directories.find(&key).await? {
        return Ok(found);
    }
    let owner = actor.organisation_id().unwrap_or("operator");
    state.directories.admit(owner).await?;
    let prepared = jobs::prepare(
        &state.store,
        &state.reference,
        state.hours.clone(),
        choices,
        &state.public_url,
        key,
    )
    .await?;
    state.directories.submit(prepared, raw, logo, owner).await
}

/// Starts making a printed directory (or finds the same one already made: same data version
/// and choices). JSON body, or `multipart/form-data` with the same fields and a `logo` file
/// (PNG or SVG, 2 MB at most). Answers 202 with the job; follow `GET /api/v1/directories/{job}`.
/// For contributors: a bearer token is required.
#[utoipa::path(post, path = "/api/v1/directories", tag = "directories",
    security(("bearer" = [])),
    request_body(content = RawChoices, description = "JSON, or multipart/form-data with the same fields (themes and typologies repeated) and a `logo` file"),
    responses(
        (status = 202, body = JobStatus, description = "queued, under way, or already made"),
        (status = 400, body = Problem, description = "unreadable body"),
        (status = 401, body = Problem, description = "no valid bearer token"),
        (status = 404, body = Problem, description = "unknown territory"),
        (status = 422, body = Problem, description = "wrong choices, unreadable or too large logo, empty selection"),
        (status = 429, body = Problem, description = "this organisation already has guides being made"),
        (status = 503, body = Problem, description = "the queue of guides is full")))]
pub async fn create(
    State(state): State<AppState>,
    ApiActor(contributor): ApiActor,
    request: Request,
) -> Result<Response> {
    let Sent { raw, logo, .. } = read_choices(&state, request).await?;
    let choices = choose(&state, raw.clone(), logo.clone()).await?;
    let status = submit(&state, &raw, logo.as_deref(), choices, &contributor).await?;
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
        .await?
        .map(Json)
        .ok_or_else(|| Error::not_found("annuaire", id))
}

async fn finished(state: &AppState, id: &str, part: jobs::Part) -> Result<Vec<u8>> {
    match state.directories.output(id, part).await? {
        Some(output) => Ok(output),
        None => Err(Error::Conflict {
            code: "directory_not_ready",
            detail: format!("l'annuaire {id} n'est pas encore prêt / not ready yet"),
        }),
    }
}

/// The booklet, a tagged PDF (PDF/UA-1 when it validates).
#[utoipa::path(get, path = "/api/v1/directories/{job}/guide.pdf", tag = "directories",
    params(("job" = String, Path, description = "the job id")),
    responses((status = 200, content_type = "application/pdf", description = "the PDF"),
        (status = 404, body = Problem), (status = 409, body = Problem, description = "not ready yet"),
        (status = 422, body = Problem, description = "the job failed")))]
pub async fn guide_pdf(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let pdf = finished(&state, &id, jobs::Part::Pdf).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"annuaire-{id}.pdf\""),
            ),
        ],
        pdf,
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
    let html = finished(&state, &id, jobs::Part::Html).await?;
    Ok(Html(String::from_utf8_lossy(&html).into_owned()).into_response())
}

/// The cover of a guide with these choices, as SVG: a quick preview before making it. For
/// contributors: a bearer token is required.
#[utoipa::path(post, path = "/api/v1/directories/cover", tag = "directories",
    security(("bearer" = [])),
    request_body(content = RawChoices, description = "JSON, or multipart/form-data with a `logo` file"),
    responses((status = 200, content_type = "image/svg+xml", description = "the cover"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
pub async fn cover(
    State(state): State<AppState>,
    _contributor: ApiActor,
    request: Request,
) -> Result<Response> {
    let Sent { raw, logo, .. } = read_choices(&state, request).await?;
    cover_svg(&state, raw, logo).await
}

async fn cover_svg(state: &AppState, raw: RawChoices, logo: Option<Vec<u8>>) -> Result<Response> {
    let choices = choose(state, raw, logo).await?;
    let prepared = jobs::prepare(
        &state.store,
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

/// The session of a page's request, or the way to the login page.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    espace::require(state, headers).await
}

/// The CSRF token a form sent, checked against the session's.
fn check_csrf(session: &Session, sent: Option<String>) -> Result<()> {
    let form = HashMap::from([("csrf".to_owned(), sent.unwrap_or_default())]);
    espace::check_csrf(session, &form)
}

/// The form of a new printed directory (signed-in contributors and the operator).
#[utoipa::path(get, path = "/espace/annuaires/nouveau", tag = "contributors",
    responses((status = 200, description = "Choix, aperçu de la couverture et génération (HTML)", content_type = "text/html"),
        (status = 303, description = "Sans session : vers la connexion")))]
pub async fn new_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers).await {
        Ok(session) => Html(
            html::new_page(&state.reference.taxonomy, &session, "epci:246300701", None)
                .into_string(),
        )
        .into_response(),
        Err(response) => response,
    }
}

/// The form's submission: the job is queued and its page shown; wrong choices come back on the
/// form with the message.
#[utoipa::path(post, path = "/espace/annuaires", tag = "contributors",
    request_body(content_type = "multipart/form-data", description = "Les choix (comme l'API), le logo, csrf"),
    responses((status = 303, description = "Vers la page de la génération"),
        (status = 422, description = "Choix à corriger (HTML)")))]
pub async fn create_from_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let mut territory = String::new();
    let result = async {
        let sent = read_choices(&state, request).await?;
        check_csrf(&session, sent.csrf)?;
        territory.clone_from(&sent.raw.territory);
        let choices = choose(&state, sent.raw.clone(), sent.logo.clone()).await?;
        submit(
            &state,
            &sent.raw,
            sent.logo.as_deref(),
            choices,
            &session.actor,
        )
        .await
    }
    .await;
    match result {
        Ok(status) => Redirect::to(&format!("/espace/annuaires/{}", status.id)).into_response(),
        Err(error) if error.status() == StatusCode::INTERNAL_SERVER_ERROR => error.into_response(),
        Err(error) => {
            let problem = Problem::from(&error);
            let page = html::new_page(
                &state.reference.taxonomy,
                &session,
                &territory,
                Some(&problem.detail),
            );
            (error.status(), Html(page.into_string())).into_response()
        }
    }
}

/// The cover preview from the form (in the page with JavaScript, a new tab without).
#[utoipa::path(post, path = "/espace/annuaires/couverture", tag = "contributors",
    request_body(content_type = "multipart/form-data", description = "Les choix, le logo, csrf"),
    responses((status = 200, content_type = "image/svg+xml", description = "La couverture"),
        (status = 303, description = "Sans session : vers la connexion"),
        (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn cover_from_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let result = async {
        let sent = read_choices(&state, request).await?;
        check_csrf(&session, sent.csrf)?;
        cover_svg(&state, sent.raw, sent.logo).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A guide's making: its progress, then its links.
#[utoipa::path(get, path = "/espace/annuaires/{job}", tag = "contributors",
    params(("job" = String, Path, description = "the job id")),
    responses((status = 200, description = "Avancement, puis liens (HTML)", content_type = "text/html"),
        (status = 303, description = "Sans session : vers la connexion"), (status = 404, body = Problem)))]
pub async fn job_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = match signed_in(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    match state.directories.status(&id).await {
        Ok(Some(status)) => Html(html::job_page(&status, &session).into_string()).into_response(),
        Ok(None) => Error::not_found("annuaire", id).into_response(),
        Err(error) => error.into_response(),
    }
}
