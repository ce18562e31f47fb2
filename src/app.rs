//! The HTTP application: the router of every domain, the OpenAPI document, serving.

use std::net::SocketAddr;

use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::trace::TraceLayer;
use utoipa::{OpenApi, ToSchema};

use crate::error::{Error, Problem};
pub use crate::state::{AppState, DEFAULT_PUBLIC_URL};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Proximités",
        description = "Annuaire géolocalisé des services publics / Geolocated directory of public services"
    ),
    paths(
        healthz,
        readyz,
        crate::metrics::metrics_page,
        openapi_json,
        crate::taxonomy::routes::list_themes,
        crate::taxonomy::routes::list_typologies,
        crate::taxonomy::routes::get_typology,
        crate::territory::routes::get_commune,
        crate::territory::routes::find_places,
        crate::territory::routes::geocode,
        crate::services::routes::get_service,
        crate::services::api::create_service,
        crate::services::api::update_service,
        crate::services::api::withdraw_service,
        crate::services::api::confirm_service,
        crate::services::api::service_history,
        crate::services::api::restore_service,
        crate::services::api::claim_service,
        crate::services::api::release_service,
        crate::services::api::service_suggestions,
        crate::services::api::accept_suggestion,
        crate::services::api::dismiss_suggestion,
        crate::services::api::bulk_upsert,
        crate::restitution::export,
        crate::restitution::withdraw,
        crate::restitution::undo,
        crate::espace::pages::login_form,
        crate::espace::pages::login,
        crate::espace::pages::logout,
        crate::espace::pages::invitation_form,
        crate::espace::pages::accept_invitation,
        crate::espace::pages::join_by_invitation,
        crate::espace::pages::entries,
        crate::espace::pages::new_entry_form,
        crate::espace::pages::create_entry,
        crate::espace::pages::edit_form,
        crate::espace::pages::save_entry,
        crate::espace::pages::confirm_entry,
        crate::espace::pages::withdraw_entry,
        crate::espace::claims::claim_entry,
        crate::espace::claims::release_entry,
        crate::espace::claims::accept_suggestion,
        crate::espace::claims::dismiss_suggestion,
        crate::espace::duplicates::groups_page,
        crate::espace::duplicates::decide,
        crate::espace::duplicates::detect,
        crate::espace::pages::history_page,
        crate::espace::pages::restore_entry,
        crate::espace::pages::commune_at,
        crate::espace::organisation::commitments,
        crate::espace::campaigns::campaigns_page,
        crate::espace::campaigns::create_campaign,
        crate::espace::organisation::report_queue,
        crate::espace::organisation::set_report_status,
        crate::espace::organisation::export,
        crate::espace::team::team_page,
        crate::espace::team::invite,
        crate::espace::team::create_token,
        crate::espace::team::revoke_token,
        crate::espace::settings::list,
        crate::espace::settings::new_form,
        crate::espace::settings::create,
        crate::espace::settings::settings,
        crate::espace::settings::save,
        crate::espace::bulk::upload_form,
        crate::espace::bulk::check_upload,
        crate::espace::bulk::apply_upload,
        crate::espace::pages::hours_fragment,
        crate::search::routes::search,
        crate::coverage::routes::coverage,
        crate::directory::routes::create,
        crate::directory::routes::job,
        crate::directory::routes::guide_pdf,
        crate::directory::routes::guide_html,
        crate::directory::routes::cover,
        crate::directory::routes::new_page,
        crate::directory::routes::create_from_form,
        crate::directory::routes::cover_from_form,
        crate::directory::routes::job_page,
        crate::territory::routes::boundaries,
        crate::web::home::home,
        crate::web::search::search_page,
        crate::web::search::embed_page,
        crate::web::entry::entry_page,
        crate::web::entry::report,
        crate::web::life_events::index,
        crate::web::life_events::event,
        crate::web::widget::generator,
        crate::web::widget::loader,
        crate::web::widget::theme_css,
        crate::web::tiles::tile,
        crate::coverage::page::choose,
        crate::coverage::page::territory_page,
        crate::export::routes::download,
        crate::export::catalogue::catalogue,
        crate::export::data_inclusion::download,
        crate::ogc::tiles::tile_matrix_sets,
        crate::ogc::tiles::tile_matrix_set_page,
        crate::ogc::tiles::tilesets,
        crate::ogc::tiles::tileset_page,
        crate::ogc::tiles::tile,
        crate::hsds::routes::about,
        crate::hsds::routes::services,
        crate::hsds::routes::service,
        crate::hsds::routes::organizations,
        crate::hsds::routes::organization,
        crate::hsds::routes::taxonomies,
        crate::hsds::routes::taxonomy,
        crate::hsds::routes::taxonomy_terms,
        crate::hsds::routes::taxonomy_term,
        crate::ogc::routes::landing,
        crate::ogc::routes::conformance,
        crate::ogc::routes::api,
        crate::ogc::routes::collections,
        crate::ogc::routes::collection_page,
        crate::ogc::routes::items,
        crate::ogc::routes::feature,
        crate::ogc::routes::queryables,
        crate::ogc::routes::schema,
        crate::ogc::html::gis_page,
    ),
    components(schemas(Problem, crate::search::live::Positions, crate::error::FieldError, crate::coverage::Report, crate::directory::RawChoices, crate::directory::jobs::JobStatus)),
    modifiers(&BearerScheme, &ProblemResponses),
    tags(
        (name = "taxonomy", description = "Thèmes et typologies / Themes and typologies"),
        (name = "territory", description = "Référentiel territorial / Territory reference"),
        (name = "services", description = "Fiches / Directory entries"),
        (name = "coverage", description = "Veille territoriale / Territorial monitoring"),
        (name = "directories", description = "Annuaires imprimés / Printed directories"),
        (name = "export", description = "Téléchargements SIG / GIS downloads"),
        (name = "hsds", description = "Open Referral HSDS 3.0 (lecture seule) / read-only"),
        (name = "ogc", description = "OGC API – Features et page Données SIG / OGC API – Features and GIS page"),
        (name = "contributors", description = "Écriture par les contributeurs (jeton Bearer) / Contributors' write API (bearer token)"),
        (name = "meta", description = "État du service / Service status"),
        (name = "pages", description = "Pages des citoyens et widget (HTML) / Citizen pages and widget (HTML)"),
    )
)]
pub struct ApiDoc;

/// Says what errors really are: a problem document is `application/problem+json` (RFC 9457),
/// and any operation may answer an error not listed for it (an overload's 503, a refused
/// cross-site form's 403) as a problem document, or as an HTML page for the pages.
struct ProblemResponses;

impl utoipa::Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        const PROBLEM: &str = "#/components/schemas/Problem";
        let is_problem = |content: &utoipa::openapi::Content| matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == PROBLEM);
        for (path, item) in openapi.paths.paths.iter_mut() {
            let contributors_page = path.starts_with("/espace");
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
            ]
            .into_iter()
            .flatten()
            {
                let problem = ContentBuilder::new()
                    .schema(Some(Ref::new(PROBLEM)))
                    .build();
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if let Some(content) = response.content.shift_remove("application/json") {
                        let kind = if is_problem(&content) {
                            "application/problem+json"
                        } else {
                            "application/json"
                        };
                        response.content.insert(kind.to_owned(), content);
                    }
                    // A request refused before its handler (a malformed form or path) is a
                    // problem document, whatever the handler itself answers.
                    if status.starts_with('4') && !response.content.is_empty() {
                        response
                            .content
                            .entry("application/problem+json".to_owned())
                            .or_insert_with(|| problem.clone());
                    }
                }
                if contributors_page {
                    operation
                        .responses
                        .responses
                        .entry("303".to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(
                                    "Pas de session : vers la page de connexion / no session: \
                                     to the login page",
                                )
                                .into()
                        });
                }
                let html = ContentBuilder::new()
                    .schema(Some(utoipa::openapi::schema::Object::with_type(
                        utoipa::openapi::schema::Type::String,
                    )))
                    .build();
                operation
                    .responses
                    .responses
                    .entry("default".to_owned())
                    .or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(
                                "Erreur : document problem+json (RFC 9457), page HTML pour les \
                                 pages / Error: a problem document, an HTML page for the pages",
                            )
                            .content("application/problem+json", problem)
                            .content("text/html", html)
                            .into()
                    });
            }
        }
    }
}

/// Declares the contributors' bearer tokens (`proximites admin create-token`).
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn router(state: AppState) -> Router {
    // Installed before the first request is counted.
    crate::metrics::handle();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::metrics_page))
        .route("/api/v1/openapi.json", get(openapi_json))
        .merge(crate::taxonomy::routes::router())
        .merge(crate::territory::routes::router())
        .merge(crate::services::routes::router())
        .merge(crate::services::api::router())
        .merge(crate::restitution::router())
        .merge(crate::search::routes::router())
        .merge(crate::coverage::routes::router())
        .merge(crate::directory::routes::router(state.clone()))
        .merge(crate::web::router())
        .merge(crate::export::routes::router(state.clone()))
        .merge(crate::ogc::routes::router(state.clone()))
        .merge(crate::hsds::routes::router(state.clone()))
        .merge(crate::espace::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::admission::same_origin_forms,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::web::default_security_headers,
        ))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub communes: usize,
    pub typologies: usize,
    /// Where the search indexes stand in the change log.
    pub indexes: crate::search::live::Positions,
    /// Change-log rows written but not yet applied to the search indexes.
    pub lag: i64,
    /// Whether the search indexes show every committed write (`lag` is 0).
    pub caught_up: bool,
}

/// Liveness and readiness: the database answers, the reference is loaded, and whether the
/// search indexes are caught up with the change log.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health), (status = 500, body = Problem)))]
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<Health>, Error> {
    let head = crate::db::log_head(&state.store).await?;
    let mut indexes = state.live.positions();
    indexes.head = indexes.head.max(head);
    let lag = indexes.lag();
    Ok(Json(Health {
        status: "ok",
        communes: state.reference.locator.len(),
        typologies: state.reference.taxonomy.typologies.len(),
        indexes,
        lag,
        caught_up: lag == 0,
    }))
}

/// How far behind the change log a ready server may be: a load balancer keeps an instance
/// whose indexes lag more out of rotation.
pub const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    /// Change-log rows written but not yet applied to the search indexes.
    pub lag: i64,
    /// How long ago the oldest of them was written, in milliseconds (0 when caught up).
    pub behind_ms: i64,
}

/// Readiness, for a load balancer: 200 once the indexes are loaded (the server answers only
/// then) and every write older than 2 s is searchable; 503 `not_ready` with `Retry-After`
/// otherwise. `/healthz` stays liveness.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses((status = 200, body = Readiness), (status = 503, body = Problem)))]
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<Readiness>, Error> {
    if let Err(Error::Busy { detail, .. }) = state.live.words_searchable() {
        return Err(Error::Busy {
            code: "not_ready",
            detail,
            retry_after: 10,
        });
    }
    let positions = state.live.positions();
    let applied = positions.spatial.min(positions.text);
    let oldest: Option<(chrono::DateTime<chrono::Utc>,)> = crate::on_engine!(&state.store, |db| {
        sqlx::query_as("SELECT at FROM change_log WHERE seq > $1 ORDER BY seq LIMIT 1")
            .bind(applied)
            .fetch_optional(db)
            .await?
    });
    let head = crate::db::log_head(&state.store).await?;
    let lag = (head - applied).max(0);
    let behind_ms = oldest.map_or(0, |(at,)| {
        (chrono::Utc::now() - at).num_milliseconds().max(0)
    });
    if behind_ms > READY_WITHIN.as_millis() as i64 {
        return Err(Error::Busy {
            code: "not_ready",
            detail: format!(
                "index de recherche en retard de {lag} écritures ({behind_ms} ms) / search indexes {lag} writes behind"
            ),
            retry_after: 1,
        });
    }
    Ok(Json(Readiness {
        status: "ready",
        lag,
        behind_ms,
    }))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found(uri: Uri) -> Error {
    Error::NotFound {
        what: "ressource",
        id: uri.path().to_owned(),
    }
}

/// Serves until Ctrl-C or SIGTERM, then lets requests in flight finish.
pub async fn serve(state: AppState, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("écoute sur {listen} impossible : {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "Proximités à l'écoute / listening on http://{local}");
    // Other processes (a command-line import) write too: their rows of the change log are
    // applied as they come.
    let state_live = state.live.clone();
    let watcher = tokio::spawn(crate::search::live::follow(
        state.live.clone(),
        state.store.clone(),
    ));
    let admission = state.admission.clone();
    crate::admission::serve_connections(
        listener,
        router(state),
        admission,
        shutdown_signal(),
        std::time::Duration::from_secs(30),
    )
    .await;
    watcher.abort();
    // What the text index holds in memory is committed, so that the next start need not apply
    // it again.
    if let Err(error) = state_live.commit_text(std::time::Duration::ZERO).await {
        tracing::warn!(%error, "text index not committed at stop");
    }
    tracing::info!("arrêt / stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
