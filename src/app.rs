//! The HTTP application: shared state, the router of every domain, the OpenAPI document, serving.

use std::net::SocketAddr;

use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower_http::trace::TraceLayer;
use utoipa::{OpenApi, ToSchema};

use std::sync::Arc;

use crate::db::Pool;
use crate::error::{Error, Problem};
use crate::import::Reference;
use crate::taxonomy::store::PublishedCounts;
use crate::territory::places::PlaceIndex;

/// What every handler may use. Cheap to clone: a pool and `Arc`s.
#[derive(Clone)]
pub struct AppState {
    /// The database, single source of truth.
    pub pool: Pool,
    /// Taxonomy and territory held in memory, derived from the database at start.
    pub reference: Reference,
    /// Published entries per typology, cached by data version.
    pub published_counts: Arc<PublishedCounts>,
    /// Communes by folded name, for place search.
    pub places: Arc<PlaceIndex>,
}

impl AppState {
    pub fn new(pool: Pool, reference: Reference) -> Self {
        Self {
            places: Arc::new(PlaceIndex::new(&reference.locator)),
            pool,
            reference,
            published_counts: Arc::default(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Proximités",
        description = "Annuaire géolocalisé des services publics / Geolocated directory of public services"
    ),
    paths(
        healthz,
        openapi_json,
        crate::taxonomy::routes::list_themes,
        crate::taxonomy::routes::list_typologies,
        crate::taxonomy::routes::get_typology,
        crate::territory::routes::get_commune,
        crate::territory::routes::find_places,
        crate::services::routes::get_service,
    ),
    components(schemas(Problem, crate::error::FieldError)),
    tags(
        (name = "taxonomy", description = "Thèmes et typologies / Themes and typologies"),
        (name = "territory", description = "Référentiel territorial / Territory reference"),
        (name = "services", description = "Fiches / Directory entries"),
        (name = "meta", description = "État du service / Service status"),
    )
)]
pub struct ApiDoc;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/openapi.json", get(openapi_json))
        .merge(crate::taxonomy::routes::router())
        .merge(crate::territory::routes::router())
        .merge(crate::services::routes::router())
        .fallback(not_found)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub communes: usize,
    pub typologies: usize,
}

/// Liveness and readiness: the database answers and the reference is loaded.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, body = Health), (status = 500, body = Problem)))]
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<Json<Health>, Error> {
    sqlx::query("SELECT 1").execute(&state.pool).await?;
    Ok(Json(Health {
        status: "ok",
        communes: state.reference.locator.len(),
        typologies: state.reference.taxonomy.typologies.len(),
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
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
