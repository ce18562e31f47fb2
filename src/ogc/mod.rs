//! OGC API – Features over the directory's layers (Part 1 Core with GeoJSON, HTML and OpenAPI
//! 3.0; Part 2 CRS by reference; Part 3 queryables and CQL2 text filters), and the « Données
//! SIG » page that tells GIS teams how to use it.

pub mod api;
pub mod html;
pub mod routes;
pub mod tiles;

use crate::export::crs::Crs;
use crate::import::Reference;

/// Largest page a client may ask for; `limit` above it is clamped to it.
pub const MAX_LIMIT: usize = 10_000;
/// The page size of JSON when the client gives none: the maximum, because QGIS pages by the
/// default the API document declares (1,000 made it ask a 100,000-entry layer in 100 requests).
pub const DEFAULT_LIMIT: usize = MAX_LIMIT;
/// The page size of HTML when the client gives none: a page a person reads.
pub const HTML_DEFAULT_LIMIT: usize = 100;

/// A feature collection: the whole directory, or one theme.
#[derive(Debug, Clone)]
pub struct Collection {
    pub id: String,
    pub title: String,
    pub description: String,
    /// The theme the collection holds; `None` for all entries.
    pub theme: Option<String>,
}

/// The id of the whole-directory collection.
pub const SERVICES: &str = "services";

pub fn collections(reference: &Reference) -> Vec<Collection> {
    let mut all = vec![Collection {
        id: SERVICES.into(),
        title: "Services publics — tous thèmes".into(),
        description: "Toutes les fiches publiées de l'annuaire Proximités.".into(),
        theme: None,
    }];
    all.extend(reference.taxonomy.themes.iter().map(|theme| Collection {
        id: theme.code.clone(),
        title: theme.label_fr.clone(),
        description: format!("Fiches publiées du thème « {} ».", theme.label_fr),
        theme: Some(theme.code.clone()),
    }));
    all
}

pub fn collection(reference: &Reference, id: &str) -> Option<Collection> {
    collections(reference).into_iter().find(|c| c.id == id)
}

/// The WGS84 box of the territory reference: the spatial extent of every collection.
pub fn extent(reference: &Reference) -> [f64; 4] {
    let mut b = [180.0, 90.0, -180.0, -90.0];
    for commune in reference.locator.communes() {
        b[0] = f64::min(b[0], commune.bbox.min_lon);
        b[1] = f64::min(b[1], commune.bbox.min_lat);
        b[2] = f64::max(b[2], commune.bbox.max_lon);
        b[3] = f64::max(b[3], commune.bbox.max_lat);
    }
    if b[0] > b[2] {
        [-180.0, -90.0, 180.0, 90.0]
    } else {
        b
    }
}

/// The CRS URIs every collection offers.
pub fn crs_list() -> Vec<String> {
    Crs::ALL.iter().map(|c| c.uri()).collect()
}

/// The conformance classes implemented.
pub const CONFORMANCE: [&str; 20] = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus-points",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/tms/2.0/conf/tilematrixset",
];
