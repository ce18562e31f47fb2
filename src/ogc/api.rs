//! The OGC API definition as an OpenAPI 3.0 document, built by hand: GDAL and QGIS read the
//! page size (`limit` in `components.parameters`) and the filterable properties only from a
//! concrete path per collection, relative to the landing page (`/collections/services/items`
//! under the server `…/ogc`), which utoipa's generic path cannot give.

use serde_json::{json, Map, Value};

use super::{collections, DEFAULT_LIMIT, MAX_LIMIT};
use crate::export::crs::Crs;
use crate::import::Reference;

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema, "style": "form", "explode": false})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

fn ok(description: &str, kinds: &[&str]) -> Value {
    let content: Map<String, Value> = kinds
        .iter()
        .map(|k| ((*k).to_owned(), json!({"schema": {"type": "object"}})))
        .collect();
    json!({
        "200": {"description": description, "content": content},
        "400": {"description": "Paramètre invalide", "content": {"application/problem+json": {"schema": {"type": "object"}}}},
        "404": {"description": "Introuvable", "content": {"application/problem+json": {"schema": {"type": "object"}}}},
    })
}

pub fn document(reference_data: &Reference, base: &str, licence: &crate::export::Licence) -> Value {
    let crs_enum: Vec<String> = Crs::ALL.iter().map(|c| c.uri()).collect();
    let typologies: Vec<&str> = reference_data
        .taxonomy
        .typologies
        .iter()
        .map(|t| t.code.as_str())
        .collect();
    let mut parameters = Map::new();
    parameters.insert(
        "limit".into(),
        query(
            "limit",
            "Nombre d'entités par page ; au-delà du maximum, le maximum. Sans limit, les pages HTML en ont 100.",
            json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
        ),
    );
    parameters.insert(
        "bbox".into(),
        json!({
            "name": "bbox", "in": "query", "required": false, "style": "form", "explode": false,
            "description": "Boîte ouest,sud,est,nord (dans bbox-crs, CRS84 par défaut)",
            "schema": {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}}
        }),
    );
    parameters.insert(
        "bbox-crs".into(),
        query(
            "bbox-crs",
            "CRS de bbox",
            json!({"type": "string", "format": "uri", "enum": crs_enum}),
        ),
    );
    parameters.insert(
        "crs".into(),
        query(
            "crs",
            "CRS de la réponse",
            json!({"type": "string", "format": "uri", "enum": crs_enum}),
        ),
    );
    parameters.insert(
        "datetime".into(),
        query(
            "datetime",
            "Dernière mise à jour : instant ou intervalle (début/fin, .. ouvert)",
            json!({"type": "string"}),
        ),
    );
    parameters.insert(
        "cursor".into(),
        query(
            "cursor",
            "Reprise de la pagination (lien next)",
            json!({"type": "string"}),
        ),
    );
    parameters.insert(
        "sortby".into(),
        query(
            "sortby",
            "Tri (OGC API – Features, partie 8) : name, typology, commune, updated_at, séparés par \
             des virgules, préfixe - pour l'ordre décroissant ; la pagination reste exacte",
            json!({
                "type": "array",
                "items": {
                    "type": "string",
                    "pattern": "^[+-]?(name|typology|commune|updated_at)$"
                }
            }),
        ),
    );
    parameters.insert(
        "typology".into(),
        query(
            "typology",
            "Codes de typologie, séparés par des virgules",
            json!({"type": "array", "items": {"type": "string", "enum": typologies}}),
        ),
    );
    parameters.insert(
        "commune".into(),
        query(
            "commune",
            "Codes INSEE de communes",
            json!({"type": "array", "items": {"type": "string"}}),
        ),
    );
    parameters.insert(
        "departement".into(),
        query(
            "departement",
            "Codes de départements",
            json!({"type": "array", "items": {"type": "string"}}),
        ),
    );
    parameters.insert(
        "epci".into(),
        query(
            "epci",
            "SIREN d'EPCI",
            json!({"type": "array", "items": {"type": "string"}}),
        ),
    );
    parameters.insert(
        "filter".into(),
        query(
            "filter",
            "Filtre CQL2 texte (voir /queryables)",
            json!({"type": "string"}),
        ),
    );
    parameters.insert(
        "filter-lang".into(),
        query(
            "filter-lang",
            "Langage du filtre",
            json!({"type": "string", "enum": ["cql2-text", "cql-text"], "default": "cql2-text"}),
        ),
    );
    parameters.insert(
        "filter-crs".into(),
        query(
            "filter-crs",
            "CRS des géométries du filtre",
            json!({"type": "string", "format": "uri", "enum": crs_enum}),
        ),
    );
    parameters.insert(
        "f".into(),
        query(
            "f",
            "Format de la réponse",
            json!({"type": "string", "enum": ["json", "html"]}),
        ),
    );
    let items_parameters: Vec<Value> = [
        "limit",
        "bbox",
        "bbox-crs",
        "crs",
        "datetime",
        "cursor",
        "sortby",
        "typology",
        "commune",
        "departement",
        "epci",
        "filter",
        "filter-lang",
        "filter-crs",
        "f",
    ]
    .iter()
    .map(|p| reference(p))
    .collect();

    let mut paths = Map::new();
    let simple = |summary: &str, id: &str, kinds: &[&str]| json!({"get": {"summary": summary, "operationId": id, "parameters": [reference("f")], "responses": ok(summary, kinds)}});
    paths.insert(
        "/".into(),
        simple(
            "Page d'accueil",
            "getLandingPage",
            &["application/json", "text/html"],
        ),
    );
    paths.insert(
        "/conformance".into(),
        simple(
            "Classes de conformité",
            "getConformance",
            &["application/json", "text/html"],
        ),
    );
    paths.insert("/api".into(), json!({"get": {"summary": "Cette définition", "operationId": "getApi", "responses": ok("OpenAPI 3.0", &["application/vnd.oai.openapi+json;version=3.0"])}}));
    paths.insert(
        "/collections".into(),
        simple(
            "Collections",
            "getCollections",
            &["application/json", "text/html"],
        ),
    );
    paths.insert(
        "/tileMatrixSets".into(),
        json!({"get": {"summary": "Schémas de tuilage", "operationId": "getTileMatrixSetsList",
            "responses": ok("Schémas de tuilage", &["application/json"])}}),
    );
    paths.insert(
        "/tileMatrixSets/{tileMatrixSetId}".into(),
        json!({"get": {"summary": "Schéma de tuilage", "operationId": "getTileMatrixSet",
            "parameters": [{"name": "tileMatrixSetId", "in": "path", "required": true, "schema": {"type": "string", "enum": [super::tiles::TILE_MATRIX_SET]}}],
            "responses": ok("Schéma de tuilage", &["application/json"])}}),
    );
    for collection in collections(reference_data) {
        let id = &collection.id;
        let op = id.replace('-', "_");
        let tile_matrix_set = json!({"name": "tileMatrixSetId", "in": "path", "required": true,
            "schema": {"type": "string", "enum": [super::tiles::TILE_MATRIX_SET]}});
        paths.insert(
            format!("/collections/{id}/tiles"),
            json!({"get": {
                "summary": format!("Tuiles vectorielles : {}", collection.title),
                "operationId": format!("getTilesets_{op}"),
                "tags": [id],
                "responses": ok("Jeux de tuiles", &["application/json"]),
            }}),
        );
        paths.insert(
            format!("/collections/{id}/tiles/{{tileMatrixSetId}}"),
            json!({"get": {
                "summary": format!("Jeu de tuiles vectorielles : {}", collection.title),
                "operationId": format!("getTileset_{op}"),
                "tags": [id],
                "parameters": [tile_matrix_set],
                "responses": ok("Jeu de tuiles", &["application/json"]),
            }}),
        );
        let path_integer = |name: &str, description: &str| {
            json!({"name": name, "in": "path",
            "required": true, "description": description, "schema": {"type": "integer", "minimum": 0}})
        };
        let query_list = |name: &str, description: &str| {
            json!({"name": name, "in": "query",
            "required": false, "description": description, "schema": {"type": "string"}})
        };
        paths.insert(
            format!("/collections/{id}/tiles/{{tileMatrixSetId}}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"),
            json!({"get": {
                "summary": format!("Tuile vectorielle (MVT) : {}", collection.title),
                "operationId": format!("getTile_{op}"),
                "tags": [id],
                "parameters": [
                    tile_matrix_set,
                    path_integer("tileMatrix", "Niveau de zoom, 0 à 22"),
                    path_integer("tileRow", "Rangée, depuis le haut"),
                    path_integer("tileCol", "Colonne, depuis la gauche"),
                    query_list("typology", "Codes de typologie, séparés par des virgules"),
                    query_list("commune", "Codes INSEE"),
                    query_list("departement", "Codes de département"),
                    query_list("epci", "SIREN d'EPCI"),
                ],
                "responses": ok("Mapbox Vector Tile", &[super::tiles::MVT]),
            }}),
        );
        paths.insert(
            format!("/collections/{id}"),
            simple(
                &collection.title,
                &format!("describe_{op}"),
                &["application/json", "text/html"],
            ),
        );
        paths.insert(format!("/collections/{id}/items"), json!({"get": {
            "summary": format!("Entités : {}", collection.title),
            "operationId": format!("getFeatures_{op}"),
            "tags": [id],
            "parameters": items_parameters,
            "responses": ok("GeoJSON FeatureCollection", &["application/geo+json", "text/html"]),
        }}));
        paths.insert(format!("/collections/{id}/items/{{featureId}}"), json!({"get": {
            "summary": format!("Une entité : {}", collection.title),
            "operationId": format!("getFeature_{op}"),
            "tags": [id],
            "parameters": [
                {"name": "featureId", "in": "path", "required": true, "schema": {"type": "string"}},
                reference("crs"), reference("f"),
            ],
            "responses": ok("GeoJSON Feature", &["application/geo+json", "text/html"]),
        }}));
        paths.insert(
            format!("/collections/{id}/queryables"),
            json!({"get": {
                "summary": format!("Propriétés filtrables : {}", collection.title),
                "operationId": format!("getQueryables_{op}"),
                "tags": [id],
                "responses": ok("JSON Schema", &["application/schema+json"]),
            }}),
        );
        paths.insert(
            format!("/collections/{id}/schema"),
            json!({"get": {
                "summary": format!("Schéma des entités : {}", collection.title),
                "operationId": format!("getSchema_{op}"),
                "tags": [id],
                "responses": ok("JSON Schema", &["application/schema+json"]),
            }}),
        );
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Proximités — OGC API – Features",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Les services publics de l'annuaire Proximités en couches SIG.",
            "license": {"name": licence.name, "url": licence.url},
        },
        "servers": [{"url": format!("{base}/ogc")}],
        "paths": paths,
        "components": {"parameters": parameters},
    })
}
