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
    /// What the citizen pages need: form signing, life events, the base map's source.
    pub web: Arc<crate::web::Web>,
    /// GIS layers: licence, whole-directory files and counts, by data version.
    pub layers: Arc<crate::export::Layers>,
    /// Held by each write of this process from its transaction until the indexes show it, so
    /// that the indexes follow the data versions in order.
    pub writes: Arc<tokio::sync::Mutex<()>>,
    /// Failed logins of the contributor pages.
    pub login_limiter: Arc<crate::accounts::LoginLimiter>,
    /// The address invitation links start with (`PROXIMITES_PUBLIC_URL`).
    pub public_url: Arc<str>,
}

/// Where the instance is reached, for the links it sends, unless configured.
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";

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
        let web = crate::web::Web {
            form_token: crate::reports::FormToken::new(form_secret(&pool).await?.as_bytes()),
            report_limiter: Default::default(),
            life_events: crate::taxonomy::life_events::LifeEvents::embedded(&reference.taxonomy)?,
            tiles: None,
        };
        Ok(Self {
            web: Arc::new(web),
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
            layers: Arc::new(crate::export::Layers::new(
                text_dir.with_extension("exports"),
                crate::export::Licence::default(),
            )),
            writes: Arc::default(),
            login_limiter: Arc::default(),
            public_url: DEFAULT_PUBLIC_URL.into(),
            service_cache: Arc::new(crate::services::cache::ServiceCache::new(
                SERVICE_CACHE_ENTRIES,
            )),
        })
    }

    /// The same state with a base-map tile source; call before serving.
    pub fn with_tiles(mut self, tiles: crate::web::tiles::TileProxy) -> Self {
        if let Some(web) = Arc::get_mut(&mut self.web) {
            web.tiles = Some(tiles);
        }
        self
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
        let _turn = self.writes.lock().await;
        // A write of this process may have brought the indexes there while this waited.
        let version = crate::db::fact(&self.pool, "data_version").await?;
        if self.search_index().version == version {
            return Ok(false);
        }
        self.reload_search().await?;
        Ok(true)
    }

    /// The base URL of the links this instance sends.
    pub fn with_public_url(mut self, url: &str) -> Self {
        self.public_url = url.trim_end_matches('/').into();
        self
    }

    /// Brings the indexes to a write this process just committed, which moved the data version
    /// from `before` and changed the entries `ids`: their text documents are replaced (or
    /// removed) one by one and the spatial index is changed on a copy, swapped in whole. When
    /// the indexes were not at `before` (another process wrote meanwhile), they are rebuilt.
    /// The caller holds `writes`.
    pub async fn index_committed(
        &self,
        before: Option<&str>,
        ids: &[crate::services::ServiceId],
    ) -> anyhow::Result<()> {
        let version = crate::db::fact(&self.pool, "data_version").await?;
        let current = self.search_index();
        if current.version.as_deref() != before {
            return self.reload_search().await;
        }
        let mut services = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1_000) {
            services.extend(crate::services::store::get_many(&self.pool, chunk).await?);
        }
        let published: Vec<_> = services
            .iter()
            .filter(|s| s.status == crate::services::Status::Published)
            .collect();
        let docs: Vec<_> = published
            .iter()
            .map(|s| search::text::doc_for(s, &self.reference.taxonomy, &self.reference.locator))
            .collect();
        let gone: Vec<_> = ids
            .iter()
            .filter(|id| !published.iter().any(|s| &s.id == *id))
            .cloned()
            .collect();
        let entries: Vec<_> = published
            .iter()
            .map(|s| {
                (
                    s.content.typology.clone(),
                    search::spatial::SpatialEntry {
                        id: s.id.clone(),
                        location: s.content.location,
                        insee_code: s.content.insee_code.clone(),
                        attributes: search::spatial::Attributes {
                            wheelchair: s.content.wheelchair,
                            opening_hours: s.content.opening_hours.clone(),
                            folded_name: crate::text::fold(&s.content.name),
                        },
                    },
                )
            })
            .collect();
        let text = self.text.clone();
        let text_dir = self.text_dir.clone();
        let marked = version.clone();
        let spatial = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            if !docs.is_empty() {
                text.upsert(&docs)?;
            }
            if !gone.is_empty() {
                text.remove(&gone)?;
            }
            search::mark_text_version(&text_dir, marked.as_deref())?;
            let mut spatial = current.spatial.clone();
            for id in &gone {
                spatial.remove(id);
            }
            for (typology, entry) in entries {
                spatial.upsert(&typology, entry);
            }
            Ok(spatial)
        })
        .await??;
        *self
            .search
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            in_service(SearchIndex { spatial, version });
        Ok(())
    }

    /// Rebuilds the search indexes from the database (the caller holds `writes`).
    async fn reload_search(&self) -> anyhow::Result<()> {
        let index =
            load_search_index(&self.pool, &self.reference, &self.text, &self.text_dir).await?;
        *self
            .search
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = in_service(index);
        Ok(())
    }
}

/// The instance's secret for signing forms, made at first start and kept in the database so
/// that forms shown before a restart stay valid.
async fn form_secret(pool: &Pool) -> anyhow::Result<String> {
    if let Some(secret) = crate::db::fact(pool, "form_secret").await? {
        return Ok(secret);
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    crate::db::set_fact(pool, "form_secret", &secret).await?;
    Ok(secret)
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
        crate::services::api::create_service,
        crate::services::api::update_service,
        crate::services::api::withdraw_service,
        crate::services::api::confirm_service,
        crate::services::api::service_history,
        crate::services::api::restore_service,
        crate::services::api::bulk_upsert,
        crate::espace::pages::login_form,
        crate::espace::pages::login,
        crate::espace::pages::logout,
        crate::espace::pages::invitation_form,
        crate::espace::pages::accept_invitation,
        crate::espace::pages::entries,
        crate::espace::pages::new_entry_form,
        crate::espace::pages::create_entry,
        crate::espace::pages::edit_form,
        crate::espace::pages::save_entry,
        crate::espace::pages::confirm_entry,
        crate::espace::pages::withdraw_entry,
        crate::espace::pages::history_page,
        crate::espace::pages::restore_entry,
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
    components(schemas(Problem, crate::error::FieldError, crate::coverage::Report, crate::directory::RawChoices, crate::directory::jobs::JobStatus)),
    modifiers(&BearerScheme),
    tags(
        (name = "taxonomy", description = "Thèmes et typologies / Themes and typologies"),
        (name = "territory", description = "Référentiel territorial / Territory reference"),
        (name = "services", description = "Fiches / Directory entries"),
        (name = "coverage", description = "Veille territoriale / Territorial monitoring"),
        (name = "directories", description = "Annuaires imprimés / Printed directories"),
        (name = "export", description = "Téléchargements SIG / GIS downloads"),
        (name = "ogc", description = "OGC API – Features et page Données SIG / OGC API – Features and GIS page"),
        (name = "contributors", description = "Écriture par les contributeurs (jeton Bearer) / Contributors' write API (bearer token)"),
        (name = "meta", description = "État du service / Service status"),
        (name = "pages", description = "Pages des citoyens et widget (HTML) / Citizen pages and widget (HTML)"),
    )
)]
pub struct ApiDoc;

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
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/openapi.json", get(openapi_json))
        .merge(crate::taxonomy::routes::router())
        .merge(crate::territory::routes::router())
        .merge(crate::services::routes::router())
        .merge(crate::services::api::router())
        .merge(crate::search::routes::router())
        .merge(crate::coverage::routes::router())
        .merge(crate::directory::routes::router())
        .merge(crate::web::router())
        .merge(crate::export::routes::router())
        .merge(crate::ogc::routes::router())
        .merge(crate::espace::router())
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
    // The peer address: report forms are rate-limited per address.
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
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
