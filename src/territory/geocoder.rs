//! The optional address geocoder: a service shaped like the IGN Géoplateforme's
//! `/geocodage/search` (or an addok of one's own), queried by the server on the citizen's
//! behalf so that no browser talks to a third party. None is configured by default; the commune
//! lookup of [`super::places`] works without it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::spatial::LonLat;

/// How long the server waits for the geocoder before telling the client it is unavailable.
const TIMEOUT: Duration = Duration::from_secs(3);

/// A configured geocoder. Cheap to clone (one connection pool shared).
#[derive(Debug, Clone)]
pub struct Geocoder {
    client: reqwest::Client,
    search_url: reqwest::Url,
}

/// An address found by the geocoder.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Address {
    /// The address as people read it: « 8 Boulevard du Port 80000 Amiens ».
    pub label: String,
    /// `housenumber`, `street`, `locality` or `municipality`.
    pub kind: String,
    /// Where to search around.
    pub point: LonLat,
    pub insee_code: Option<String>,
    pub postcode: Option<String>,
    pub city: Option<String>,
    /// The geocoder's confidence, 0 to 1.
    pub score: Option<f64>,
}

/// The GeoJSON answer of a `/geocodage/search`-shaped service (only what is used).
#[derive(Deserialize)]
struct Answer {
    features: Vec<Feature>,
}

#[derive(Deserialize)]
struct Feature {
    geometry: Option<Geometry>,
    #[serde(default)]
    properties: Properties,
}

#[derive(Deserialize)]
struct Geometry {
    coordinates: Vec<f64>,
}

#[derive(Deserialize, Default)]
struct Properties {
    label: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    citycode: Option<String>,
    postcode: Option<String>,
    city: Option<String>,
    score: Option<f64>,
}

impl Geocoder {
    /// A geocoder at `base`: the service root (`https://data.geopf.fr/geocodage`), or its
    /// search URL itself (ending in `/search`).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let trimmed = base.trim().trim_end_matches('/');
        let search = if trimmed.ends_with("/search") {
            trimmed.to_owned()
        } else {
            format!("{trimmed}/search")
        };
        let search_url = reqwest::Url::parse(&search)
            .map_err(|e| anyhow::anyhow!("adresse du géocodeur invalide « {base} » : {e}"))?;
        anyhow::ensure!(
            matches!(search_url.scheme(), "http" | "https"),
            "adresse du géocodeur invalide « {base} » : http ou https attendu"
        );
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("proximites/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, search_url })
    }

    /// Up to `limit` addresses for `q`, the ones near `near` first when given.
    pub async fn search(
        &self,
        q: &str,
        limit: usize,
        near: Option<LonLat>,
    ) -> Result<Vec<Address>> {
        let mut url = self.search_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("q", q)
                .append_pair("limit", &limit.to_string())
                .append_pair("index", "address");
            if let Some(p) = near {
                query
                    .append_pair("lon", &p.lon.to_string())
                    .append_pair("lat", &p.lat.to_string());
            }
        }
        let unavailable = |why: String| {
            tracing::warn!(%why, "geocoder unavailable");
            Error::Unavailable {
                code: "geocoder_unavailable",
                detail: "le géocodeur d'adresses ne répond pas ; la recherche par commune reste \
                         disponible / the address geocoder is not answering; search by commune \
                         still works"
                    .into(),
            }
        };
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("status {}", response.status())));
        }
        let answer: Answer = response
            .json()
            .await
            .map_err(|e| unavailable(format!("answer not understood: {e}")))?;
        Ok(answer
            .features
            .into_iter()
            .filter_map(|feature| {
                let coordinates = feature.geometry?.coordinates;
                let (&lon, &lat) = (coordinates.first()?, coordinates.get(1)?);
                let p = feature.properties;
                Some(Address {
                    label: p.label?,
                    kind: p.kind.unwrap_or_else(|| "housenumber".into()),
                    point: LonLat::new(lon, lat),
                    insee_code: p.citycode,
                    postcode: p.postcode,
                    city: p.city,
                    score: p.score,
                })
            })
            .take(limit)
            .collect())
    }
}
