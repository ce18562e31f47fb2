//! The OGC API – Features routes under `/ogc`.

use std::sync::Arc;

use crate::http::Path;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{collection, Collection, DEFAULT_LIMIT, HTML_DEFAULT_LIMIT, MAX_LIMIT};
use crate::admission::PublicBase;
use crate::error::{Error, FieldError, Result};
use crate::export::crs::Crs;
use crate::export::formats::{feature_json, Format};
use crate::export::routes::{list, query_pairs, with_theme, with_typologies};
use crate::export::{cql2, store, Selection, FIELDS};
use crate::import::Reference;
use crate::services::ServiceId;
use crate::state::AppState;

pub fn router(state: AppState) -> Router<AppState> {
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([axum::http::Method::GET, axum::http::Method::HEAD])
        .allow_headers(tower_http::cors::Any)
        .expose_headers([
            header::LINK,
            header::ETAG,
            header::HeaderName::from_static("content-crs"),
        ]);
    Router::new()
        .route("/ogc", get(landing))
        .route("/ogc/conformance", get(conformance))
        .route("/ogc/api", get(api))
        .route("/ogc/collections", get(collections))
        .route("/ogc/collections/{collection}", get(collection_page))
        .route(
            "/ogc/collections/{collection}/items",
            get(items).route_layer(axum::middleware::from_fn_with_state(
                state,
                crate::admission::heavy_when_scanning,
            )),
        )
        .route(
            "/ogc/collections/{collection}/items/{feature}",
            get(feature),
        )
        .route("/ogc/collections/{collection}/queryables", get(queryables))
        .route("/ogc/tileMatrixSets", get(super::tiles::tile_matrix_sets))
        .route(
            "/ogc/tileMatrixSets/{id}",
            get(super::tiles::tile_matrix_set_page),
        )
        .route(
            "/ogc/collections/{collection}/tiles",
            get(super::tiles::tilesets),
        )
        .route(
            "/ogc/collections/{collection}/tiles/{matrix_set}",
            get(super::tiles::tileset_page),
        )
        .route(
            "/ogc/collections/{collection}/tiles/{matrix_set}/{matrix}/{row}/{col}",
            get(super::tiles::tile),
        )
        .route("/ogc/collections/{collection}/schema", get(schema))
        .route("/donnees-sig", get(super::html::gis_page))
        // GIS clients fetch pages of megabytes on fast networks: the fastest level compresses
        // 6 MB of GeoJSON about 8 times in a few tens of milliseconds, where the default level
        // took longer than writing the page.
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(true)
                .quality(tower_http::CompressionLevel::Fastest),
        )
        .layer(cors)
}

/// JSON or HTML, from `f`, else from `Accept` (`*/*` and anything not HTML get JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Html,
}

impl Output {
    fn choose(f: Option<&str>, headers: &HeaderMap) -> Result<Output, FieldError> {
        match f {
            Some("json" | "geojson" | "application/json" | "application/geo+json") => {
                Ok(Output::Json)
            }
            Some("html" | "text/html") => Ok(Output::Html),
            Some(other) => Err(FieldError::new(
                "f",
                format!("format « {other} » : json ou html"),
            )),
            None => {
                let accept = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let html = accept.find("text/html");
                let json = accept.find("json");
                Ok(match (html, json) {
                    (Some(h), Some(j)) if h < j => Output::Html,
                    (Some(_), None) => Output::Html,
                    _ => Output::Json,
                })
            }
        }
    }
}

fn link(href: String, rel: &str, kind: &str, title: &str) -> Value {
    json!({"href": href, "rel": rel, "type": kind, "title": title})
}

const GEOJSON: &str = "application/geo+json";
const JSON: &str = "application/json";
const HTML: &str = "text/html";

/// The parameters of a request that are not in `allowed` answer 400 (OGC API – Features asks
/// so, and it catches a misspelt filter that would otherwise silently return everything).
fn check_known(pairs: &[(String, String)], allowed: &[&str]) -> Result<()> {
    let unknown: Vec<FieldError> = pairs
        .iter()
        .filter(|(name, _)| !allowed.contains(&name.as_str()))
        .map(|(name, _)| {
            FieldError::new(
                name,
                format!("paramètre inconnu (admis : {})", allowed.join(", ")),
            )
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidParameters(unknown))
    }
}

fn value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn output(pairs: &[(String, String)], headers: &HeaderMap) -> Result<Output> {
    Output::choose(value(pairs, "f"), headers).map_err(|e| Error::InvalidParameters(vec![e]))
}

/// A strong validator of the response: the data version, the request, its format and the
/// base URL its links are built on.
fn etag(version: &Option<String>, uri: &Uri, output: Output, extra: &str) -> String {
    let mut h = Sha256::new();
    h.update(version.as_deref().unwrap_or("0"));
    h.update([0]);
    h.update(uri.to_string());
    h.update([0]);
    h.update(format!("{output:?}{extra}"));
    format!("\"{}\"", hex::encode(&h.finalize()[..12]))
}

fn not_modified(headers: &HeaderMap, tag: &str) -> Option<Response> {
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().trim_start_matches("W/"))
        .any(|v| v == tag || v == "*");
    matches.then(|| {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(tag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        response
    })
}

fn respond(body: impl Into<Body>, kind: &str, tag: &str, crs: Option<Crs>) -> Response {
    let mut response = body.into().into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(kind) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, value);
    }
    // OGC API – Features Part 2: every response with geometries names their CRS.
    if let Some(crs) = crs {
        if let Ok(value) = HeaderValue::from_str(&format!("<{}>", crs.uri())) {
            headers.insert("content-crs", value);
        }
    }
    response
}

/// Ready-made answer for the JSON or HTML of a document that depends on the data version only
/// through its ETag.
async fn document(
    state: &AppState,
    uri: &Uri,
    base: &str,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    json_body: impl FnOnce() -> Value,
    html_body: impl FnOnce(&Value) -> maud::Markup,
) -> Result<Response> {
    // Other parameters are ignored here: GDAL repeats a URL's own parameters (`crs=…`) on every
    // request, these documents included.
    let output = output(pairs, headers)?;
    let version = crate::db::data_version(&state.store).await?;
    let tag = etag(&version, uri, output, base);
    if let Some(response) = not_modified(headers, &tag) {
        return Ok(response);
    }
    let doc = json_body();
    Ok(match output {
        Output::Json => respond(doc.to_string(), JSON, &tag, None),
        Output::Html => respond(
            html_body(&doc).into_string(),
            "text/html; charset=utf-8",
            &tag,
            None,
        ),
    })
}

/// OGC API landing page.
#[utoipa::path(get, path = "/ogc", tag = "ogc", params(("f" = Option<String>, Query, description = "json ou html")), responses((status = 200, description = "Page d'accueil OGC API – Features")))]
pub(crate) async fn landing(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    PublicBase(base): PublicBase,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let pairs = query_pairs(query.as_deref());
    document(
        &state,
        &uri,
        &base,
        &headers,
        &pairs,
        || {
            json!({
                "title": "Proximités — OGC API – Features",
                "description": "Les services publics de l'annuaire Proximités, en couches SIG (WGS84, Lambert-93, systèmes d'outre-mer).",
                "links": [
                    link(format!("{base}/ogc?f=json"), "self", JSON, "Cette page"),
                    link(format!("{base}/ogc?f=html"), "alternate", HTML, "Cette page en HTML"),
                    link(format!("{base}/ogc/api"), "service-desc", "application/vnd.oai.openapi+json;version=3.0", "Définition de l'API (OpenAPI 3.0)"),
                    link(format!("{base}/donnees-sig"), "service-doc", HTML, "Documentation : Données SIG"),
                    link(format!("{base}/ogc/conformance"), "conformance", JSON, "Classes de conformité"),
                    link(format!("{base}/ogc/collections"), "data", JSON, "Collections"),
                    link(format!("{base}/ogc/tileMatrixSets"), "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes", JSON, "Schémas de tuilage"),
                    link(state.layers.licence.url.clone(), "license", HTML, &state.layers.licence.name),
                ]
            })
        },
        super::html::landing,
    )
    .await
}

/// OGC API conformance classes.
#[utoipa::path(get, path = "/ogc/conformance", tag = "ogc", params(("f" = Option<String>, Query, description = "json ou html")), responses((status = 200, description = "Classes de conformité")))]
pub(crate) async fn conformance(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    PublicBase(base): PublicBase,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let pairs = query_pairs(query.as_deref());
    document(
        &state,
        &uri,
        &base,
        &headers,
        &pairs,
        || json!({"conformsTo": super::CONFORMANCE}),
        super::html::conformance,
    )
    .await
}

/// The OGC API definition, OpenAPI 3.0, with one path per collection.
#[utoipa::path(get, path = "/ogc/api", tag = "ogc", responses((status = 200, description = "OpenAPI 3.0")))]
pub(crate) async fn api(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    PublicBase(base): PublicBase,
) -> Result<Response> {
    let version = crate::db::data_version(&state.store).await?;
    let tag = etag(&version, &uri, Output::Json, &base);
    if let Some(response) = not_modified(&headers, &tag) {
        return Ok(response);
    }
    let doc = super::api::document(&state.reference, &base, &state.layers.licence);
    Ok(respond(
        doc.to_string(),
        "application/vnd.oai.openapi+json;version=3.0",
        &tag,
        None,
    ))
}

/// The description of one collection, with its links.
pub fn collection_json(state: &AppState, base: &str, collection: &Collection) -> Value {
    let id = &collection.id;
    let url = format!("{base}/ogc/collections/{id}");
    let [w, s, e, n] = super::extent(&state.reference);
    let mut links = vec![
        link(format!("{url}?f=json"), "self", JSON, "Cette collection"),
        link(
            format!("{url}?f=html"),
            "alternate",
            HTML,
            "Cette collection en HTML",
        ),
        link(
            format!("{url}/items?f=json"),
            "items",
            GEOJSON,
            "Les entités",
        ),
        link(
            format!("{url}/items?f=html"),
            "items",
            HTML,
            "Les entités en HTML",
        ),
        link(
            format!("{url}/queryables"),
            "http://www.opengis.net/def/rel/ogc/1.0/queryables",
            "application/schema+json",
            "Propriétés filtrables",
        ),
        // The short relation name GDAL 3.6 looks for.
        link(
            format!("{url}/queryables"),
            "queryables",
            "application/schema+json",
            "Propriétés filtrables",
        ),
        // The features' schema: every property with its type, also the ones a page leaves
        // out when empty. GDAL 3.6 reads it from `describedBy`, spelt so.
        link(
            format!("{url}/schema"),
            "http://www.opengis.net/def/rel/ogc/1.0/schema",
            "application/schema+json",
            "Schéma des entités",
        ),
        link(
            format!("{url}/schema"),
            "describedBy",
            "application/schema+json",
            "Schéma des entités",
        ),
        link(
            format!("{url}/tiles"),
            "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector",
            JSON,
            "Tuiles vectorielles (MVT, WebMercatorQuad)",
        ),
        link(
            state.layers.licence.url.clone(),
            "license",
            HTML,
            &state.layers.licence.name,
        ),
    ];
    let filter = collection
        .theme
        .as_ref()
        .map(|t| format!("?theme={t}"))
        .unwrap_or_default();
    for format in Format::ALL {
        links.push(link(
            format!(
                "{base}/api/v1/export/services.{}{filter}",
                format.extension()
            ),
            "enclosure",
            format.media_type(),
            &format!("Téléchargement {}", format.label()),
        ));
    }
    json!({
        "id": id,
        "title": collection.title,
        "description": collection.description,
        "itemType": "feature",
        "extent": {"spatial": {"bbox": [[w, s, e, n]], "crs": Crs::Crs84.uri()}},
        "crs": super::crs_list(),
        "storageCrs": Crs::Crs84.uri(),
        "links": links,
    })
}

/// The collections: every published entry, and one per theme.
#[utoipa::path(get, path = "/ogc/collections", tag = "ogc", params(("f" = Option<String>, Query, description = "json ou html")), responses((status = 200, description = "Collections")))]
pub(crate) async fn collections(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    PublicBase(base): PublicBase,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let pairs = query_pairs(query.as_deref());
    let all = super::collections(&state.reference);
    document(
        &state,
        &uri,
        &base,
        &headers,
        &pairs,
        || {
            json!({
                "links": [
                    link(format!("{base}/ogc/collections?f=json"), "self", JSON, "Collections"),
                    link(format!("{base}/ogc/collections?f=html"), "alternate", HTML, "Collections en HTML"),
                ],
                "crs": super::crs_list(),
                "collections": all.iter().map(|c| collection_json(&state, &base, c)).collect::<Vec<_>>(),
            })
        },
        super::html::collections,
    )
    .await
}

fn find_collection(reference: &Reference, id: &str) -> Result<Collection> {
    collection(reference, id).ok_or_else(|| Error::not_found("collection", id))
}

/// One collection.
#[utoipa::path(get, path = "/ogc/collections/{collection}", tag = "ogc", params(("collection" = String, Path, description = "services ou un code de thème"), ("f" = Option<String>, Query, description = "json ou html")), responses((status = 200, description = "La collection"), (status = 404, body = crate::error::Problem)))]
pub(crate) async fn collection_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    PublicBase(base): PublicBase,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let found = find_collection(&state.reference, &id)?;
    let pairs = query_pairs(query.as_deref());
    document(
        &state,
        &uri,
        &base,
        &headers,
        &pairs,
        || collection_json(&state, &base, &found),
        super::html::collection,
    )
    .await
}

/// The queryables of a collection, as JSON Schema.
#[utoipa::path(get, path = "/ogc/collections/{collection}/queryables", tag = "ogc", params(("collection" = String, Path, description = "services ou un code de thème")), responses((status = 200, description = "JSON Schema des propriétés filtrables"), (status = 404, body = crate::error::Problem)))]
pub(crate) async fn queryables(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    PublicBase(base): PublicBase,
) -> Result<Response> {
    let found = find_collection(&state.reference, &id)?;
    let version = crate::db::data_version(&state.store).await?;
    let tag = etag(&version, &uri, Output::Json, &base);
    if let Some(response) = not_modified(&headers, &tag) {
        return Ok(response);
    }
    let doc = queryables_json(&state.reference, &base, &found);
    Ok(respond(
        doc.to_string(),
        "application/schema+json",
        &tag,
        None,
    ))
}

/// The schema of a collection's features (OGC API – Features Part 5), as JSON Schema.
#[utoipa::path(get, path = "/ogc/collections/{collection}/schema", tag = "ogc", params(("collection" = String, Path, description = "services ou un code de thème")), responses((status = 200, description = "JSON Schema des entités"), (status = 404, body = crate::error::Problem)))]
pub(crate) async fn schema(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    PublicBase(base): PublicBase,
) -> Result<Response> {
    let found = find_collection(&state.reference, &id)?;
    // The schema follows the code, not the data: the version of the program tags it.
    let tag = format!("\"schema-{}-{}\"", env!("CARGO_PKG_VERSION"), found.id);
    if let Some(response) = not_modified(&headers, &tag) {
        return Ok(response);
    }
    Ok(respond(
        schema_json(&base, &found).to_string(),
        "application/schema+json",
        &tag,
        None,
    ))
}

pub fn schema_json(base: &str, collection: &Collection) -> Value {
    let mut properties = serde_json::Map::new();
    for field in &FIELDS[1..] {
        let (title, format) = field_description(field);
        let mut schema = json!({"title": title, "type": "string"});
        if let Some(format) = format {
            schema["format"] = json!(format);
        }
        properties.insert((*field).into(), schema);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{base}/ogc/collections/{}/schema", collection.id),
        "title": collection.title,
        "type": "object",
        "required": ["type", "geometry", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["Feature"]},
            "id": {"type": "string", "title": "Identifiant de la fiche", "x-ogc-role": "id"},
            "geometry": {
                "title": "Position",
                "format": "geometry-point",
                "x-ogc-role": "primary-geometry",
                "type": "object",
            },
            "properties": {
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            },
        },
    })
}

/// The French title of an exported field, and its JSON Schema format if any.
fn field_description(field: &str) -> (&'static str, Option<&'static str>) {
    match field {
        "name" => ("Nom", None),
        "typology" => ("Code de la typologie", None),
        "typology_label" => ("Typologie", None),
        "theme" => ("Code du thème", None),
        "address" => ("Adresse", None),
        "postcode" => ("Code postal", None),
        "city" => ("Commune", None),
        "insee_code" => ("Code INSEE de la commune", None),
        "departement" => ("Code du département", None),
        "epci" => ("SIREN de l'EPCI", None),
        "phone" => ("Téléphone (E.164)", None),
        "email" => ("Courriel", Some("email")),
        "website" => ("Site web", Some("uri")),
        "opening_hours" => ("Horaires (format OpenStreetMap opening_hours)", None),
        "wheelchair" => ("Accessibilité en fauteuil roulant (yes, limited, no)", None),
        "description" => ("Description", None),
        "source" => ("Source", None),
        "source_ref" => ("Identifiant dans la source", None),
        "updated_at" => ("Dernière mise à jour", Some("date-time")),
        _ => ("", None),
    }
}

pub fn queryables_json(reference: &Reference, base: &str, collection: &Collection) -> Value {
    let mut properties = serde_json::Map::new();
    properties.insert(
        "geometry".into(),
        json!({"title": "Position", "format": "geometry-point", "x-ogc-role": "primary-geometry"}),
    );
    for q in cql2::Queryable::ALL {
        let mut schema = if q.is_timestamp() {
            json!({"title": q.title(), "type": "string", "format": "date-time"})
        } else {
            json!({"title": q.title(), "type": "string"})
        };
        if q == cql2::Queryable::Typology {
            let codes: Vec<&str> = reference
                .taxonomy
                .typologies
                .iter()
                .filter(|t| {
                    collection
                        .theme
                        .as_ref()
                        .is_none_or(|theme| &t.theme == theme)
                })
                .map(|t| t.code.as_str())
                .collect();
            schema["enum"] = json!(codes);
        }
        if q == cql2::Queryable::Wheelchair {
            schema["enum"] = json!(["yes", "limited", "no", "unknown"]);
        }
        if q == cql2::Queryable::Id {
            schema["x-ogc-role"] = json!("id");
        }
        properties.insert(q.name().into(), schema);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{base}/ogc/collections/{}/queryables", collection.id),
        "type": "object",
        "title": collection.title,
        "properties": properties,
        "additionalProperties": false,
    })
}

/// The parameters `items` understands.
pub const ITEMS_PARAMETERS: [&str; 15] = [
    "f",
    "limit",
    "cursor",
    "sortby",
    "bbox",
    "bbox-crs",
    "crs",
    "datetime",
    "typology",
    "commune",
    "departement",
    "epci",
    "filter",
    "filter-lang",
    "filter-crs",
];

/// Where a page starts.
#[derive(Debug, Clone, PartialEq)]
enum After {
    Start,
    /// After this id (pages by id).
    Id(String),
    /// After the row with these values of the sort keys, then its id.
    Values(Vec<String>),
}

impl After {
    /// A `cursor` as the `next` links write it: an id, or (sorted pages) the hex of a JSON
    /// array of the last row's values of the `keys` sort keys and its id.
    fn parse(cursor: &str, keys: usize) -> Option<After> {
        if keys == 0 {
            return ServiceId::parse(cursor).map(|id| After::Id(id.as_str().to_owned()));
        }
        hex::decode(cursor)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
            .filter(|values| values.len() == keys + 1)
            .map(After::Values)
    }

    fn encode(values: &[&str]) -> String {
        hex::encode(serde_json::to_vec(values).unwrap_or_default())
    }
}

/// `sortby`: comma-separated properties, each with `-` for descending (`+` or nothing for
/// ascending), each named once.
fn parse_sortby(value: &str) -> Result<Vec<store::SortKey>, String> {
    let mut keys: Vec<store::SortKey> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (descending, name) = match part.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, part.trim_start_matches('+')),
        };
        let property = store::SortProperty::ALL
            .into_iter()
            .find(|p| p.name() == name.trim())
            .ok_or_else(|| {
                format!(
                    "« {name} » : tri possible par {} (préfixe - pour l'ordre décroissant)",
                    store::SortProperty::ALL.map(|p| p.name()).join(", ")
                )
            })?;
        if keys.iter().any(|k| k.property == property) {
            return Err(format!("« {name} » est nommé deux fois"));
        }
        keys.push(store::SortKey {
            property,
            descending,
        });
    }
    Ok(keys)
}

/// What a page of items asks.
struct ItemsRequest {
    selection: Selection,
    limit: usize,
    /// The `cursor` as sent (checked), for the page's own links.
    cursor: Option<String>,
    /// Where the page starts: after this id, or after these values of the sort keys and id.
    after: After,
    /// `sortby`: empty for the order of ids.
    sort: Vec<store::SortKey>,
    crs: Crs,
    output: Output,
}

fn parse_instant(value: &str, end: bool) -> Result<Option<DateTime<Utc>>, String> {
    let v = value.trim();
    if v.is_empty() || v == ".." {
        return Ok(None);
    }
    if let Ok(instant) = crate::dates::parse_instant(v) {
        return Ok(Some(instant));
    }
    crate::dates::parse_date(v)
        .ok()
        .and_then(|d| {
            if end {
                d.and_hms_opt(23, 59, 59)
            } else {
                d.and_hms_opt(0, 0, 0)
            }
        })
        .map(|d| Some(d.and_utc()))
        .ok_or_else(|| format!("« {v} » : date RFC 3339 ou AAAA-MM-JJ attendue"))
}

fn parse_datetime(value: &str) -> Result<crate::export::Interval, String> {
    match value.split_once('/') {
        Some((from, to)) => {
            let from = parse_instant(from, false)?;
            let to = parse_instant(to, true)?;
            if let (Some(f), Some(t)) = (from, to) {
                if f > t {
                    return Err("le début de l'intervalle est après sa fin".into());
                }
            }
            Ok((from, to))
        }
        None => {
            let start = parse_instant(value, false)?
                .ok_or_else(|| "date ou intervalle attendu".to_string())?;
            let end = if value.trim().len() == 10 {
                parse_instant(value, true)?
            } else {
                Some(start)
            };
            Ok((Some(start), end))
        }
    }
}

fn parse_bbox(value: &str, crs: Crs) -> Result<Selection, String> {
    let numbers: Vec<f64> = value
        .split(',')
        .map(|n| n.trim().parse::<f64>().ok().filter(|n| n.is_finite()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("« {value} » : 4 nombres séparés par des virgules attendus"))?;
    let [x1, y1, x2, y2] = match numbers[..] {
        [a, b, c, d] => [a, b, c, d],
        [a, b, _, c, d, _] => [a, b, c, d],
        _ => return Err("4 nombres attendus (ouest, sud, est, nord)".into()),
    };
    // EPSG:4326 is latitude first.
    let [x1, y1, x2, y2] = if crs == Crs::Epsg4326 {
        [y1, x1, y2, x2]
    } else {
        [x1, y1, x2, y2]
    };
    if x1 > x2 || y1 > y2 {
        return Err("ouest ≤ est et sud ≤ nord attendus".into());
    }
    let mut selection = Selection::default();
    if crs.is_projected() {
        // SQL filters on the WGS84 envelope of the box's edges; each entry is then tested in
        // the box's own system.
        let mut envelope = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for i in 0..=16 {
            let t = f64::from(i) / 16.0;
            for (x, y) in [
                (x1 + (x2 - x1) * t, y1),
                (x1 + (x2 - x1) * t, y2),
                (x1, y1 + (y2 - y1) * t),
                (x2, y1 + (y2 - y1) * t),
            ] {
                let (lon, lat) = crs.unproject(x, y)?;
                envelope = [
                    envelope[0].min(lon),
                    envelope[1].min(lat),
                    envelope[2].max(lon),
                    envelope[3].max(lat),
                ];
            }
        }
        // A margin of about a metre keeps points on the edge through the envelope.
        let m = 1e-5;
        selection.bbox = Some(crate::spatial::BBox::new(
            envelope[0] - m,
            envelope[1] - m,
            envelope[2] + m,
            envelope[3] + m,
        ));
        selection.projected_bbox = Some((crs, [x1, y1, x2, y2]));
    } else {
        if !(-180.0..=180.0).contains(&x1)
            || !(-180.0..=180.0).contains(&x2)
            || !(-90.0..=90.0).contains(&y1)
            || !(-90.0..=90.0).contains(&y2)
        {
            return Err("longitudes entre -180 et 180, latitudes entre -90 et 90".into());
        }
        selection.bbox = Some(crate::spatial::BBox::new(x1, y1, x2, y2));
    }
    Ok(selection)
}

fn parse_items(
    reference: &Reference,
    collection: &Collection,
    pairs: &[(String, String)],
    headers: &HeaderMap,
) -> Result<ItemsRequest> {
    check_known(pairs, &ITEMS_PARAMETERS)?;
    let mut errors = Vec::new();
    let mut request = ItemsRequest {
        selection: Selection::default(),
        limit: DEFAULT_LIMIT,
        cursor: None,
        after: After::Start,
        sort: Vec::new(),
        crs: Crs::Crs84,
        output: Output::Json,
    };
    match Output::choose(value(pairs, "f"), headers) {
        Ok(Output::Html) => {
            request.output = Output::Html;
            request.limit = HTML_DEFAULT_LIMIT;
        }
        Ok(o) => request.output = o,
        Err(e) => errors.push(e),
    }
    if let Some(theme) = &collection.theme {
        match with_theme(Selection::default(), reference, theme) {
            Ok(s) => request.selection = s,
            Err(e) => errors.push(e),
        }
    }
    let crs_of = |name: &str| -> Result<Crs, FieldError> {
        value(pairs, name)
            .map(Crs::parse)
            .transpose()
            .map(|c| c.unwrap_or(Crs::Crs84))
            .map_err(|m| FieldError::new(name, m))
    };
    match crs_of("crs") {
        Ok(c) => request.crs = c,
        Err(e) => errors.push(e),
    }
    let bbox_crs = crs_of("bbox-crs").unwrap_or_else(|e| {
        errors.push(e);
        Crs::Crs84
    });
    let filter_crs = crs_of("filter-crs").unwrap_or_else(|e| {
        errors.push(e);
        Crs::Crs84
    });
    let mut typologies = Vec::new();
    for (name, v) in pairs {
        let outcome: Result<(), FieldError> = match name.as_str() {
            "limit" => match v.trim().parse::<i64>() {
                Ok(n) if n >= 1 => {
                    request.limit = usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
                    Ok(())
                }
                _ => Err(FieldError::new(
                    "limit",
                    format!("« {v} » : un entier ≥ 1 attendu (au plus {MAX_LIMIT})"),
                )),
            },
            // Read once `sortby` is known, below.
            "cursor" => {
                request.cursor = Some(v.clone());
                Ok(())
            }
            "sortby" => parse_sortby(v)
                .map(|keys| request.sort = keys)
                .map_err(|m| FieldError::new("sortby", m)),
            "bbox" => parse_bbox(v, bbox_crs)
                .map(|b| {
                    request.selection.bbox = b.bbox;
                    request.selection.projected_bbox = b.projected_bbox;
                })
                .map_err(|m| FieldError::new("bbox", m)),
            "datetime" => parse_datetime(v)
                .map(|d| request.selection.updated = Some(d))
                .map_err(|m| FieldError::new("datetime", m)),
            "typology" => {
                typologies.extend(list(v));
                Ok(())
            }
            "commune" | "departement" | "epci" => {
                narrow_by_place(&mut request.selection, reference, name, v)
            }
            "filter-lang" => match v.as_str() {
                "cql2-text" | "cql-text" => Ok(()),
                other => Err(FieldError::new(
                    "filter-lang",
                    format!("« {other} » : seul cql2-text (ou cql-text) est pris en charge"),
                )),
            },
            "filter" => cql2::parse(v, filter_crs)
                .map(|expr| {
                    let selection = std::mem::take(&mut request.selection);
                    request.selection = selection.narrowed_by(reference, &expr);
                    request.selection.filter = Some(Arc::new(expr));
                })
                .map_err(|e| FieldError::new("filter", e.to_string())),
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            errors.push(e);
        }
    }
    if let Some(cursor) = &request.cursor {
        match After::parse(cursor, request.sort.len()) {
            Some(after) => request.after = after,
            None => errors.push(FieldError::new(
                "cursor",
                "curseur invalide : reprenez le lien « next » tel quel (avec le même sortby)",
            )),
        }
    }
    if !typologies.is_empty() {
        match with_typologies(
            std::mem::take(&mut request.selection),
            reference,
            "typology",
            typologies,
        ) {
            Ok(s) => request.selection = s,
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(Error::InvalidParameters(errors));
    }
    Ok(request)
}

/// The URL of these items with `cursor` set (or removed), other parameters as given.
fn items_url(
    base: &str,
    collection: &str,
    pairs: &[(String, String)],
    cursor: Option<&str>,
    f: Option<&str>,
) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, v) in pairs {
        if name != "cursor" && !(f.is_some() && name == "f") {
            query.append_pair(name, v);
        }
    }
    if let Some(f) = f {
        query.append_pair("f", f);
    }
    if let Some(cursor) = cursor {
        query.append_pair("cursor", cursor);
    }
    let query = query.finish();
    if query.is_empty() {
        format!("{base}/ogc/collections/{collection}/items")
    } else {
        format!("{base}/ogc/collections/{collection}/items?{query}")
    }
}

/// A page of features: the JSON array's content, how many, and the id to continue after.
struct Page {
    features: Vec<u8>,
    returned: usize,
    next: Option<String>,
    matched: u64,
    lookup: Arc<crate::export::Lookup>,
}

async fn read_page(
    state: &AppState,
    request: &ItemsRequest,
    version: &Option<String>,
) -> Result<Page> {
    let key = request.selection.key();
    // Counts scan the selection: they follow the settled version (at most the configured
    // staleness behind), the features themselves are read as they are now.
    let counted_at = state.live.settled_version();
    let cached = state.layers.cached_count(&counted_at, &key);
    let reference = state.reference.clone();
    let selection = request.selection.clone();
    let (limit, crs) = (request.limit, request.crs);
    let (after, sort) = (request.after.clone(), request.sort.clone());
    let known_lookup = state.layers.cached_lookup(version);
    let page = store::with_connection(&state.store, move |handle| {
        let lookup = match known_lookup {
            Some(lookup) => lookup,
            None => Arc::new(store::lookup(handle, &reference)?),
        };
        let matched = match cached {
            Some(n) => n,
            None => store::count(handle, &lookup, &selection)?,
        };
        let mut features = Vec::with_capacity(limit.min(2_000) * 700);
        let mut returned = 0;
        let mut last: Option<String> = None;
        let mut more = false;
        let order = match &after {
            After::Values(values) => store::Order::Sorted {
                keys: &sort,
                after: Some(values),
            },
            _ if !sort.is_empty() => store::Order::Sorted {
                keys: &sort,
                after: None,
            },
            After::Id(id) => store::Order::Id { after: Some(id) },
            After::Start => store::Order::Id { after: None },
        };
        // One row past the page tells whether there is a next one.
        store::scan_limited(
            handle,
            &lookup,
            &selection,
            order,
            limit as u64 + 1,
            |row| {
                if returned == limit {
                    more = true;
                    return Ok(false);
                }
                if returned > 0 {
                    features.push(b',');
                }
                feature_json(&mut features, row, crs)?;
                returned += 1;
                last = Some(if sort.is_empty() {
                    row.id.to_owned()
                } else {
                    let mut values: Vec<&str> =
                        sort.iter().map(|k| k.property.value(row)).collect();
                    values.push(row.id);
                    After::encode(&values)
                });
                Ok(true)
            },
        )?;
        Ok(Page {
            features,
            returned,
            next: if more { last } else { None },
            matched,
            lookup,
        })
    })
    .await?;
    state.layers.keep_lookup(version, page.lookup.clone());
    if cached.is_none() {
        state.layers.keep_count(&counted_at, key, page.matched);
    }
    Ok(page)
}

/// The features of a collection, a page at a time (cursor-based `next` links).
#[utoipa::path(
    get,
    path = "/ogc/collections/{collection}/items",
    tag = "ogc",
    params(
        ("collection" = String, Path, description = "services ou un code de thème"),
        ("limit" = Option<usize>, Query, description = "Taille de page (1 à 10 000, 1 000 par défaut)"),
        ("cursor" = Option<String>, Query, description = "Reprise après une fiche : suivre le lien next"),
        ("sortby" = Option<String>, Query, description = "Tri : name, typology, commune, updated_at, séparés par des virgules, préfixe - pour décroissant"),
        ("bbox" = Option<String>, Query, description = "ouest,sud,est,nord (dans bbox-crs)"),
        ("bbox-crs" = Option<String>, Query, description = "CRS de bbox"),
        ("crs" = Option<String>, Query, description = "CRS de la réponse (CRS84 par défaut)"),
        ("datetime" = Option<String>, Query, description = "Dernière mise à jour : instant ou intervalle début/fin (.. ouvert)"),
        ("typology" = Option<String>, Query, description = "Codes de typologie"),
        ("commune" = Option<String>, Query, description = "Codes INSEE"),
        ("departement" = Option<String>, Query, description = "Codes de département"),
        ("epci" = Option<String>, Query, description = "SIREN d'EPCI"),
        ("filter" = Option<String>, Query, description = "Filtre CQL2 texte"),
        ("filter-lang" = Option<String>, Query, description = "cql2-text (ou cql-text)"),
        ("filter-crs" = Option<String>, Query, description = "CRS des géométries du filtre"),
        ("f" = Option<String>, Query, description = "json ou html"),
    ),
    responses((status = 200, description = "GeoJSON FeatureCollection"), (status = 400, body = crate::error::Problem), (status = 404, body = crate::error::Problem))
)]
pub(crate) async fn items(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    PublicBase(base): PublicBase,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let found = find_collection(&state.reference, &id)?;
    let pairs = query_pairs(query.as_deref());
    let request = parse_items(&state.reference, &found, &pairs, &headers)?;
    let version = crate::db::data_version(&state.store).await?;
    let tag = etag(&version, &uri, request.output, &base);
    if let Some(response) = not_modified(&headers, &tag) {
        return Ok(response);
    }
    let page = read_page(&state, &request, &version).await?;
    let (own_kind, own_f) = match request.output {
        Output::Json => (GEOJSON, "json"),
        Output::Html => (HTML, "html"),
    };
    let mut links = vec![
        link(
            items_url(&base, &id, &pairs, request.cursor.as_deref(), Some("json")),
            if own_f == "json" { "self" } else { "alternate" },
            GEOJSON,
            "Cette page en GeoJSON",
        ),
        link(
            items_url(&base, &id, &pairs, request.cursor.as_deref(), Some("html")),
            if own_f == "html" { "self" } else { "alternate" },
            HTML,
            "Cette page en HTML",
        ),
        link(
            format!("{base}/ogc/collections/{id}"),
            "collection",
            JSON,
            &found.title,
        ),
    ];
    let next_url = page.next.as_deref().map(|next| {
        items_url(
            &base,
            &id,
            &pairs,
            Some(next),
            value(&pairs, "f").map(|_| own_f),
        )
    });
    if let Some(url) = &next_url {
        links.push(link(url.clone(), "next", own_kind, "Page suivante"));
    }
    let time_stamp = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut response = match request.output {
        Output::Json => {
            let mut body = Vec::with_capacity(page.features.len() + 2048);
            body.extend_from_slice(b"{\"type\":\"FeatureCollection\",\"numberMatched\":");
            body.extend_from_slice(page.matched.to_string().as_bytes());
            body.extend_from_slice(b",\"numberReturned\":");
            body.extend_from_slice(page.returned.to_string().as_bytes());
            body.extend_from_slice(b",\"timeStamp\":");
            body.extend_from_slice(json!(time_stamp).to_string().as_bytes());
            body.extend_from_slice(b",\"links\":");
            body.extend_from_slice(json!(links).to_string().as_bytes());
            body.extend_from_slice(b",\"features\":[");
            body.extend_from_slice(&page.features);
            body.extend_from_slice(b"]}");
            respond(body, GEOJSON, &tag, Some(request.crs))
        }
        Output::Html => {
            let features: Vec<Value> =
                serde_json::from_slice(&[b"[".as_slice(), &page.features, b"]"].concat())
                    .map_err(anyhow::Error::from)?;
            let markup = super::html::items(
                &found,
                &features,
                page.matched,
                request.crs,
                next_url.as_deref(),
            );
            respond(
                markup.into_string(),
                "text/html; charset=utf-8",
                &tag,
                Some(request.crs),
            )
        }
    };
    if let Some(url) = next_url {
        if let Ok(value) =
            HeaderValue::from_str(&format!("<{url}>; rel=\"next\"; type=\"{own_kind}\""))
        {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// One feature.
#[utoipa::path(get, path = "/ogc/collections/{collection}/items/{feature}", tag = "ogc", params(("collection" = String, Path, description = "services ou un code de thème"), ("feature" = String, Path, description = "Identifiant de la fiche"), ("crs" = Option<String>, Query, description = "CRS de la réponse"), ("f" = Option<String>, Query, description = "json ou html")), responses((status = 200, description = "GeoJSON Feature"), (status = 404, body = crate::error::Problem)))]
pub(crate) async fn feature(
    State(state): State<AppState>,
    Path((id, feature_id)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    PublicBase(base): PublicBase,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let found = find_collection(&state.reference, &id)?;
    let pairs = query_pairs(query.as_deref());
    check_known(&pairs, &["f", "crs"])?;
    let output = output(&pairs, &headers)?;
    let crs = value(&pairs, "crs")
        .map(Crs::parse)
        .transpose()
        .map_err(|m| Error::InvalidParameters(vec![FieldError::new("crs", m)]))?
        .unwrap_or(Crs::Crs84);
    let Some(service_id) = ServiceId::parse(&feature_id) else {
        return Err(Error::not_found("entité", feature_id));
    };
    let version = crate::db::data_version(&state.store).await?;
    let tag = etag(&version, &uri, output, &base);
    if let Some(response) = not_modified(&headers, &tag) {
        return Ok(response);
    }
    let mut selection = match &found.theme {
        Some(theme) => Selection::default().theme(&state.reference, theme),
        None => Selection::default(),
    };
    selection.id = Some(service_id.as_str().to_owned());
    let reference = state.reference.clone();
    let body = store::with_connection(&state.store, move |handle| {
        let lookup = store::lookup(handle, &reference)?;
        let mut body = None;
        store::scan(handle, &lookup, &selection, store::Order::Storage, |row| {
            let mut out = Vec::new();
            feature_json(&mut out, row, crs)?;
            body = Some(out);
            Ok(false)
        })?;
        Ok(body)
    })
    .await?
    .ok_or_else(|| Error::not_found("entité", feature_id.clone()))?;
    let url = format!("{base}/ogc/collections/{id}/items/{feature_id}");
    let links = json!([
        link(
            format!("{url}?f=json"),
            if output == Output::Json {
                "self"
            } else {
                "alternate"
            },
            GEOJSON,
            "Cette entité"
        ),
        link(
            format!("{url}?f=html"),
            if output == Output::Html {
                "self"
            } else {
                "alternate"
            },
            HTML,
            "Cette entité en HTML"
        ),
        link(
            format!("{base}/ogc/collections/{id}"),
            "collection",
            JSON,
            &found.title
        ),
    ]);
    let mut feature: Value = serde_json::from_slice(&body).map_err(anyhow::Error::from)?;
    feature["links"] = links;
    Ok(match output {
        Output::Json => respond(feature.to_string(), GEOJSON, &tag, Some(crs)),
        Output::Html => respond(
            super::html::feature(&found, &feature, crs).into_string(),
            "text/html; charset=utf-8",
            &tag,
            Some(crs),
        ),
    })
}

/// Narrows `selection` to the communes a place parameter names (`commune`: INSEE codes,
/// `departement`: codes, `epci`: SIREN numbers, each comma-separated); an unknown one is named.
pub fn narrow_by_place(
    selection: &mut Selection,
    reference: &Reference,
    name: &str,
    v: &str,
) -> Result<(), FieldError> {
    match name {
        "commune" => {
            let codes: Vec<String> = list(v).collect();
            match codes
                .iter()
                .find(|c| !crate::export::known_commune(reference, c))
            {
                Some(unknown) => Err(FieldError::new(
                    "commune",
                    format!("commune inconnue « {unknown} »"),
                )),
                None => {
                    *selection = std::mem::take(selection).communes(reference, |c| {
                        codes.iter().any(|k| k == c.insee_code.as_str())
                    });
                    Ok(())
                }
            }
        }
        "departement" => {
            let codes: Vec<String> = list(v).map(|c| c.to_ascii_uppercase()).collect();
            match codes.iter().find(|code| {
                !reference
                    .locator
                    .communes()
                    .any(|c| &c.departement_code == *code)
            }) {
                Some(unknown) => Err(FieldError::new(
                    "departement",
                    format!("département inconnu « {unknown} »"),
                )),
                None => {
                    *selection = std::mem::take(selection)
                        .communes(reference, |c| codes.contains(&c.departement_code));
                    Ok(())
                }
            }
        }
        _ => {
            let codes: Vec<String> = list(v).collect();
            match codes.iter().find(|code| {
                !reference
                    .locator
                    .communes()
                    .any(|c| c.epci_siren.as_ref() == Some(*code))
            }) {
                Some(unknown) => Err(FieldError::new(
                    "epci",
                    format!("EPCI inconnu « {unknown} »"),
                )),
                None => {
                    *selection = std::mem::take(selection).communes(reference, |c| {
                        c.epci_siren.as_ref().is_some_and(|s| codes.contains(s))
                    });
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_forms() {
        let (from, to) = parse_datetime("2025-01-01/..").unwrap();
        assert!(from.is_some() && to.is_none());
        let (from, to) = parse_datetime("2025-01-01").unwrap();
        assert!(from.unwrap() < to.unwrap());
        assert!(parse_datetime("2025-02-01/2025-01-01").is_err());
        assert!(parse_datetime("hier").is_err());
        assert!(parse_datetime("../..").is_ok());
    }

    #[test]
    fn bbox_forms() {
        assert!(parse_bbox("3,45,4,46", Crs::Crs84).unwrap().bbox.is_some());
        assert!(parse_bbox("3,45,4", Crs::Crs84).is_err());
        assert!(parse_bbox("4,45,3,46", Crs::Crs84).is_err());
        assert!(parse_bbox("3,45,4,NaN", Crs::Crs84).is_err());
        let lambert = parse_bbox("700000,6500000,720000,6550000", Crs::Lambert93).unwrap();
        let b = lambert.bbox.unwrap();
        // x = 700 000 m is the 3°E meridian of Lambert-93; y = 6 550 000 m is north of 46°N.
        assert!(
            b.min_lon <= 3.0 && b.max_lon > 3.2 && b.min_lat > 45.5 && b.max_lat < 46.1,
            "{b:?}"
        );
        let swapped = parse_bbox("45,3,46,4", Crs::Epsg4326)
            .unwrap()
            .bbox
            .unwrap();
        assert_eq!((swapped.min_lon, swapped.min_lat), (3.0, 45.0));
    }
}
