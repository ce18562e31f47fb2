//! The base map's tiles, fetched by the server from the configured source and cached: the
//! citizen's browser never talks to a third party.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::http::Path;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::{Error, Result};
use crate::state::AppState;

/// Tiles kept in memory (about 20 KB each).
const CACHED_TILES: usize = 4_096;

type TileKey = (u8, u32, u32);

/// Tiles fetched (with their content type), and their keys oldest first for eviction.
#[derive(Default)]
struct TileCache {
    tiles: HashMap<TileKey, (Bytes, String)>,
    order: VecDeque<TileKey>,
}

/// A tile source (`https://…/{z}/{x}/{y}.png`) and what was fetched from it.
pub struct TileProxy {
    template: String,
    /// Credit the source asks for, shown on the map.
    pub attribution: String,
    client: reqwest::Client,
    cache: Mutex<TileCache>,
}

impl TileProxy {
    pub fn new(template: &str, attribution: &str) -> anyhow::Result<Self> {
        for part in ["{z}", "{x}", "{y}"] {
            anyhow::ensure!(
                template.contains(part),
                "source de tuiles sans {part} : {template}"
            );
        }
        Ok(Self {
            template: template.to_owned(),
            attribution: attribution.to_owned(),
            client: reqwest::Client::builder()
                .user_agent(concat!("Proximites/", env!("CARGO_PKG_VERSION")))
                .timeout(std::time::Duration::from_secs(10))
                .build()?,
            cache: Mutex::default(),
        })
    }

    async fn fetch(&self, key: TileKey) -> Result<(Bytes, String)> {
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tiles
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let (z, x, y) = key;
        let url = self
            .template
            .replace("{z}", &z.to_string())
            .replace("{x}", &x.to_string())
            .replace("{y}", &y.to_string());
        let unavailable = |detail: String| Error::Unavailable {
            code: "tiles_unavailable",
            detail,
        };
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| unavailable(format!("source de tuiles injoignable : {e}")))?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "source de tuiles : statut {}",
                response.status()
            )));
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("image/png")
            .to_owned();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable(format!("source de tuiles : {e}")))?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.tiles.len() >= CACHED_TILES {
            if let Some(oldest) = cache.order.pop_front() {
                cache.tiles.remove(&oldest);
            }
        }
        cache
            .tiles
            .insert(key, (bytes.clone(), content_type.clone()));
        cache.order.push_back(key);
        Ok((bytes, content_type))
    }
}

/// `GET /tuiles/{z}/{x}/{y}`: one base-map tile through the server.
#[utoipa::path(get, path = "/tuiles/{z}/{x}/{y}", tag = "pages",
    params(("z" = u8, Path, description = "Zoom"), ("x" = u32, Path, description = "Colonne"), ("y" = String, Path, description = "Ligne (extension .png facultative)")),
    responses((status = 200, description = "Tuile", content_type = "image/png"),
              (status = 404, description = "Aucune source de tuiles configurée, ou tuile hors du monde"),
              (status = 502, description = "Source de tuiles injoignable")))]
pub async fn tile(
    State(state): State<AppState>,
    Path((z, x, y)): Path<(u8, u32, String)>,
) -> Result<Response> {
    let not_found = || Error::NotFound {
        what: "tuile",
        id: format!("{z}/{x}/{y}"),
    };
    let proxy = state.web.tiles.as_ref().ok_or_else(not_found)?;
    let y: u32 = y
        .trim_end_matches(".png")
        .parse()
        .map_err(|_| not_found())?;
    if z > 19 || x >= (1 << z) || y >= (1 << z) {
        return Err(not_found());
    }
    let (bytes, content_type) = proxy.fetch((z, x, y)).await?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    Ok(response)
}
