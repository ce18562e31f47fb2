//! The application state every handler may use: the pool, the reference, the live indexes and
//! the caches, each a cheap clone. A leaf: domain modules take it from here, not from the router.

use std::sync::Arc;

use crate::db::Store;
use crate::import::Reference;
use crate::search::engine::SearchIndex;
use crate::search::hours::HoursEvaluator;
use crate::search::live::LiveIndexes;
use crate::taxonomy::store::PublishedCounts;
use crate::territory::places::PlaceIndex;

/// What every handler may use. Cheap to clone: a pool and `Arc`s.
#[derive(Clone)]
pub struct AppState {
    /// The database, single source of truth, whichever its engine.
    pub store: Store,
    /// Taxonomy and territory held in memory, derived from the database at start.
    pub reference: Reference,
    /// Published entries per typology, cached by data version.
    pub published_counts: Arc<PublishedCounts>,
    /// Communes by folded name, for place search.
    pub places: Arc<PlaceIndex>,
    /// The spatial and text indexes, the entry cache and the write turn, following the change
    /// log.
    pub live: Arc<LiveIndexes>,
    /// Opening hours evaluation (Europe/Paris, French public holidays).
    pub hours: Arc<HoursEvaluator>,
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
    /// The entry counts vector tiles of low zooms are clustered from, by index version.
    pub tiles: Arc<crate::ogc::tiles::Pyramids>,
    /// The address invitation links start with (`PROXIMITES_PUBLIC_URL`).
    pub public_url: Arc<str>,
    /// Whether `public_url` was configured (`--public-url`) rather than the default: links
    /// then always start with it.
    pub public_url_configured: bool,
    /// Who the client is, and how many heavy requests run at once.
    pub admission: Arc<crate::admission::Admission>,
}

/// Where the instance is reached, for the links it sends, unless configured.
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";

impl AppState {
    /// The state of a server on `store`, its indexes loaded and brought to the change log's
    /// head. The text index lives in `text_dir` and is rebuilt only when it cannot catch up.
    pub async fn build(
        store: Store,
        reference: Reference,
        text_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        Self::build_with(store, reference, text_dir, None).await
    }

    /// The same; with `background_above`, a text index to build from every entry of a
    /// directory larger than that is built while the server answers (see
    /// [`LiveIndexes::open_with`]).
    pub async fn build_with(
        store: Store,
        reference: Reference,
        text_dir: &std::path::Path,
        background_above: Option<usize>,
    ) -> anyhow::Result<Self> {
        let live =
            LiveIndexes::open_with(&store, reference.clone(), text_dir, background_above).await?;
        let hours = Arc::new(HoursEvaluator::default());
        let web = crate::web::Web {
            form_token: crate::reports::FormToken::new(form_secret(&store).await?.as_bytes()),
            life_events: crate::taxonomy::life_events::LifeEvents::embedded(&reference.taxonomy)?,
            tiles: None,
        };
        Ok(Self {
            web: Arc::new(web),
            places: Arc::new(PlaceIndex::new(&reference.locator)),
            live: Arc::new(live),
            hours: hours.clone(),
            directories: Arc::new(crate::directory::jobs::Directories::start(
                crate::directory::jobs::Renderer {
                    store: store.clone(),
                    reference: reference.clone(),
                    hours,
                },
            )),
            store,
            reference,
            published_counts: Arc::default(),
            geocoder: None,
            coverage: Arc::default(),
            layers: Arc::new(crate::export::Layers::new(
                text_dir.with_extension("exports"),
                crate::export::Licence::default(),
            )),
            tiles: Arc::default(),
            public_url: DEFAULT_PUBLIC_URL.into(),
            public_url_configured: false,
            admission: Arc::default(),
        })
    }

    /// The same state with a base-map tile source; call before serving.
    pub fn with_tiles(mut self, tiles: crate::web::tiles::TileProxy) -> Self {
        if let Some(web) = Arc::get_mut(&mut self.web) {
            web.tiles = Some(tiles);
        }
        self
    }

    /// The base URL of the links this instance sends.
    pub fn with_public_url(mut self, url: &str) -> Self {
        self.public_url = url.trim_end_matches('/').into();
        self.public_url_configured = true;
        self
    }

    /// The current search index (cheap: an `Arc`).
    pub fn search_index(&self) -> Arc<SearchIndex> {
        self.live.search_index()
    }

    /// Applies the change log written by other processes (an import); true when it applied
    /// something.
    pub async fn refresh_search(&self) -> anyhow::Result<bool> {
        Ok(self.live.catch_up(&self.store).await?.rows > 0)
    }
}

/// The secret for signing forms, made at first start and kept in the database, so that forms
/// shown before a restart or by another instance stay valid.
async fn form_secret(store: &Store) -> anyhow::Result<String> {
    let proposed = hex::encode(rand::random::<[u8; 32]>());
    Ok(crate::db::fact_or_propose(store, "form_secret", &proposed).await?)
}
