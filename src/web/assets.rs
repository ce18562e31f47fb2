//! The scripts and styles built from `frontend/` (see `build.rs`), embedded in the binary and
//! served under `/assets/` with a content version in their URLs so browsers keep them.

use std::sync::OnceLock;

use crate::http::Path;
use axum::extract::Query;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::Error;

static FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// An embedded file and the digest of its content.
pub struct Asset {
    pub name: &'static str,
    pub bytes: &'static [u8],
    pub version: String,
}

fn assets() -> &'static [Asset] {
    static ASSETS: OnceLock<Vec<Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, bytes)| Asset {
                name,
                bytes,
                version: hex::encode(&Sha256::digest(bytes)[..6]),
            })
            .collect()
    })
}

pub fn asset(name: &str) -> Option<&'static Asset> {
    assets().iter().find(|a| a.name == name)
}

/// The URL of embedded file `name`, with its content version.
pub fn url(name: &str) -> String {
    match asset(name) {
        Some(a) => format!("/assets/{}?v={}", a.name, a.version),
        None => format!("/assets/{name}"),
    }
}

#[derive(serde::Deserialize)]
pub struct Version {
    v: Option<String>,
}

/// `GET /assets/{name}`: an embedded script or stylesheet.
pub async fn serve(
    Path(name): Path<String>,
    Query(version): Query<Version>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let asset = asset(&name).ok_or_else(|| Error::NotFound {
        what: "fichier",
        id: name.clone(),
    })?;
    // A URL with the right version never changes; any other is revalidated.
    let cache = if version.v.as_deref() == Some(asset.version.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Ok(respond(asset, &headers, cache))
}

/// `asset` with its type, `cache` policy and ETag, or 304 when the client has it.
pub fn respond(asset: &Asset, headers: &HeaderMap, cache: &'static str) -> Response {
    let etag = format!("\"{}\"", asset.version);
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let content_type = match asset.name.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    let mut response = asset.bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    response
}
