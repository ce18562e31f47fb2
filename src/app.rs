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
use crate::search;
use crate::search::engine::SearchIndex;
use crate::search::hours::HoursEvaluator;
use crate::search::text::TextIndex;
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
    /// The search index, derived from the database and swapped whole when its data changes.
    pub search: search::engine::Shared,
    /// The full-text index (tantivy, on disk), kept at the same data version as `search`.
    pub text: TextIndex,
    /// Opening hours evaluation (Europe/Paris, French public holidays).
    pub hours: Arc<HoursEvaluator>,
    /// Where the text index lives.
    pub text_dir: std::path::PathBuf,
    /// Entries recently read, for the search API's pages.
    pub service_cache: Arc<crate::services::cache::ServiceCache>,
    /// The address geocoder the server queries for clients, when one is configured.
    pub geocoder: Option<crate::territory::geocoder::Geocoder>,
    /// Coverage figures of territories, cached by data version.
    pub coverage: Arc<crate::coverage::Coverage>,
    /// Printed directories: the render queue and the guides made, by data version and choices.
    pub directories: Arc<crate::directory::jobs::Directories>,
    /// The public address of the online directory, which printed QR codes lead to.
    pub public_url: String,
}

/// Entries the search API keeps in memory: at most about 200 MB, each entry with its JSON.
const SERVICE_CACHE_ENTRIES: usize = 100_000;

impl AppState {
    /// The state of a server on `pool`, its search index loaded from the database.
    /// The text index lives in `text_dir` and is rebuilt only when it is behind the database.
    pub async fn build(
        pool: Pool,
        reference: Reference,
        text_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let dir = text_dir.to_owned();
        let text = tokio::task::spawn_blocking(move || TextIndex::open_or_create(&dir)).await??;
        let index = load_search_index(&pool, &reference, &text, text_dir).await?;
        Ok(Self {
            places: Arc::new(PlaceIndex::new(&reference.locator)),
            text,
            text_dir: text_dir.to_owned(),
            hours: Arc::new(HoursEvaluator::default()),
            search: Arc::new(std::sync::RwLock::new(in_service(index))),
            pool,
            reference,
            published_counts: Arc::default(),
            geocoder: None,
            coverage: Arc::default(),
            directories: Arc::new(crate::directory::jobs::Directories::start()),
            public_url: crate::directory::DEFAULT_PUBLIC_URL.to_owned(),
            service_cache: Arc::new(crate::services::cache::ServiceCache::new(
                SERVICE_CACHE_ENTRIES,
            )),
        })
    }

    /// The current search index (cheap: an `Arc`).
    pub fn search_index(&self) -> Arc<SearchIndex> {
        self.search
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Rebuilds the search index from the database when the data version moved (an import by
    /// this or another process); true when it did.
    pub async fn refresh_search(&self) -> anyhow::Result<bool> {
        let version = crate::db::fact(&self.pool, "data_version").await?;
        if self.search_index().version == version {
            return Ok(false);
        }
        let index =
            load_search_index(&self.pool, &self.reference, &self.text, &self.text_dir).await?;
        *self
            .search
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = in_service(index);
        Ok(true)
    }
}

/// Puts `index` in service and completes it in the background (see
/// [`search::spatial::SpatialIndex::complete`]): queries are answered from the first moment,
/// faster once it is done.
fn in_service(index: SearchIndex) -> Arc<SearchIndex> {
    let index = Arc::new(index);
    let completing = index.clone();
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        completing.spatial.complete();
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "search index completed"
        );
    });
    index
}

async fn load_search_index(
    pool: &Pool,
    reference: &Reference,
    text: &TextIndex,
    text_dir: &std::path::Path,
) -> anyhow::Result<SearchIndex> {
    // The version is read first: a write landing during the load moves it again and triggers
    // another refresh, never a missed one.
    let version = crate::db::fact(pool, "data_version").await?;
    let started = std::time::Instant::now();
    let spatial = search::spatial::load(pool).await?;
    let spatial_ms = started.elapsed().as_millis() as u64;
    // The persisted text index is reused across restarts while it is at the database's version.
    search::bring_text_up_to_date(pool, reference, text, text_dir, spatial.len() as u64, false)
        .await?;
    tracing::info!(
        entries = spatial.len(),
        spatial_ms,
        total_ms = started.elapsed().as_millis() as u64,
        "search index loaded"
    );
    Ok(SearchIndex { spatial, version })
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
        crate::territory::routes::geocode,
        crate::services::routes::get_service,
        crate::search::routes::search,
        crate::coverage::routes::coverage,
        crate::directory::routes::create,
        crate::directory::routes::job,
        crate::directory::routes::guide_pdf,
        crate::directory::routes::guide_html,
        crate::directory::routes::cover,
    ),
    components(schemas(Problem, crate::error::FieldError, crate::coverage::Report, crate::directory::RawChoices, crate::directory::jobs::JobStatus)),
    tags(
        (name = "taxonomy", description = "Thèmes et typologies / Themes and typologies"),
        (name = "territory", description = "Référentiel territorial / Territory reference"),
        (name = "services", description = "Fiches / Directory entries"),
        (name = "coverage", description = "Veille territoriale / Territorial monitoring"),
        (name = "directories", description = "Annuaires imprimés / Printed directories"),
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
        .merge(crate::search::routes::router())
        .merge(crate::coverage::routes::router())
        .merge(crate::directory::routes::router())
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
    // Imports may run in another process: the data version tells when to rebuild the index.
    let watched = state.clone();
    let watcher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            if let Err(error) = watched.refresh_search().await {
                tracing::warn!(%error, "search index refresh failed");
            }
        }
    });
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    watcher.abort();
    served?;
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
