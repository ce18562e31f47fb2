//! OGC API – Tiles of the services collections: vector tiles in the WebMercatorQuad tiling
//! scheme, Mapbox Vector Tile encoded (geozero's MVT writer), with the items' filters
//! (typology, commune, département, EPCI, and the collection's theme). A tile holding more
//! entries than a map shows one by one carries clustered counts on a grid instead, so that a
//! tile of France stays small; the tiling scheme and tilesets are described as the standard
//! asks.

use std::collections::HashMap;
use std::f64::consts::PI;

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use geozero::mvt::{Message, MvtWriter, Tile};
use geozero::{ColumnValue, FeatureProcessor, GeomProcessor, PropertyProcessor};
use rustc_hash::FxHashSet;
use serde_json::{json, Value};

use crate::admission::PublicBase;
use crate::error::{Error, FieldError, Result};
use crate::export::routes::{finish_selection, list, query_pairs};
use crate::export::Selection;
use crate::http::Path;
use crate::search::spatial::IdKey;
use crate::spatial::{BBox, LonLat};
use crate::state::AppState;

/// The one tiling scheme served.
pub const TILE_MATRIX_SET: &str = "WebMercatorQuad";
const TILE_MATRIX_SET_URI: &str =
    "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad";
const WEB_MERCATOR: &str = "http://www.opengis.net/def/crs/EPSG/0/3857";
/// Deepest zoom level served.
pub const MAX_ZOOM: u8 = 22;
/// Tile coordinates per side (the MVT default).
const EXTENT: u32 = 4096;
/// Cluster cells per tile side: 64 cells of 64 tile units (16 pixels at 256 per tile).
const GRID: u32 = 64;
/// A tile holding more entries than this carries clusters; fewer, each entry.
pub const MAX_POINTS: usize = 2_000;
pub const MVT: &str = "application/vnd.mapbox-vector-tile";
/// Layer names in a tile.
pub const POINTS_LAYER: &str = "services";
pub const CLUSTERS_LAYER: &str = "clusters";

const EARTH_RADIUS: f64 = 6_378_137.0;
const HALF_WORLD: f64 = PI * EARTH_RADIUS;
/// The latitude where WebMercatorQuad's square world ends.
const MAX_LATITUDE: f64 = 85.051_128_779_806_59;

/// Web Mercator coordinates (metres) of a WGS84 point.
fn mercator(p: LonLat) -> (f64, f64) {
    let lat = p.lat.clamp(-MAX_LATITUDE, MAX_LATITUDE).to_radians();
    (
        EARTH_RADIUS * p.lon.to_radians(),
        EARTH_RADIUS * (PI / 4.0 + lat / 2.0).tan().ln(),
    )
}

fn latitude(y: f64) -> f64 {
    (2.0 * (y / EARTH_RADIUS).exp().atan() - PI / 2.0).to_degrees()
}

/// One tile of WebMercatorQuad: `row` from the top, `col` from the left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileId {
    pub zoom: u8,
    pub row: u32,
    pub col: u32,
}

impl TileId {
    /// The tile of the path's `{tileMatrix}/{tileRow}/{tileCol}`; `None` outside the scheme.
    pub fn parse(matrix: &str, row: &str, col: &str) -> Option<Self> {
        let zoom: u8 = matrix.parse().ok().filter(|z| *z <= MAX_ZOOM)?;
        let size = 1u32 << zoom;
        let row: u32 = row.parse().ok().filter(|r| *r < size)?;
        let col: u32 = col.parse().ok().filter(|c| *c < size)?;
        Some(Self { zoom, row, col })
    }

    /// Left, bottom, right, top in Web Mercator metres.
    pub fn bounds(&self) -> (f64, f64, f64, f64) {
        let size = 2.0 * HALF_WORLD / f64::from(1u32 << self.zoom);
        let left = -HALF_WORLD + f64::from(self.col) * size;
        let top = HALF_WORLD - f64::from(self.row) * size;
        (left, top - size, left + size, top)
    }

    /// The WGS84 box the tile covers.
    pub fn bbox(&self) -> BBox {
        let (left, bottom, right, top) = self.bounds();
        BBox::new(
            left / EARTH_RADIUS * 180.0 / PI,
            latitude(bottom),
            right / EARTH_RADIUS * 180.0 / PI,
            latitude(top),
        )
    }
}

/// What a tile holds besides place: typologies and communes to keep (`None`: all).
#[derive(Debug, Clone, Default)]
pub struct TileFilter {
    pub typologies: Option<Vec<String>>,
    pub communes: Option<FxHashSet<String>>,
}

impl TileFilter {
    fn from_selection(selection: Selection) -> Self {
        Self {
            typologies: selection.typologies,
            communes: selection.communes.map(|c| c.into_iter().collect()),
        }
    }
}

/// One entry of a tile.
#[derive(Debug, Clone)]
pub struct Point {
    pub id: IdKey,
    pub at: (f64, f64),
    pub typology: String,
    pub insee_code: String,
}

/// What a tile shows.
#[derive(Debug, Clone)]
pub enum Content {
    Points(Vec<Point>),
    /// Per non-empty cell: the mean position of its entries and how many.
    Clusters(Vec<Cluster>),
}

/// A cluster: the mean position of its entries, and how many.
pub type Cluster = ((f64, f64), u64);

/// The entries of `tile` passing `filter`, one by one when few, else counted per grid cell.
/// CPU work: call it off the async threads.
pub fn collect(
    index: &crate::search::spatial::SpatialIndex,
    tile: TileId,
    filter: &TileFilter,
) -> Content {
    let (left, bottom, right, top) = tile.bounds();
    let cell = (right - left) / f64::from(GRID);
    let typologies: Option<Vec<&str>> = filter
        .typologies
        .as_ref()
        .map(|t| t.iter().map(String::as_str).collect());
    let mut points = Vec::new();
    let mut cells: HashMap<u32, (f64, f64, u64)> = HashMap::new();
    for placement in index.entries_in(tile.bbox(), typologies.as_deref()) {
        if filter
            .communes
            .as_ref()
            .is_some_and(|c| !c.contains(placement.insee_code()))
        {
            continue;
        }
        let (x, y) = mercator(placement.location());
        // Edges belong to one tile only: the left and top ones.
        if x < left || x >= right || y <= bottom || y > top {
            continue;
        }
        let column = (((x - left) / cell) as u32).min(GRID - 1);
        let row = (((top - y) / cell) as u32).min(GRID - 1);
        let sums = cells.entry(row * GRID + column).or_insert((0.0, 0.0, 0));
        sums.0 += x;
        sums.1 += y;
        sums.2 += 1;
        if points.len() <= MAX_POINTS {
            points.push(Point {
                id: placement.id(),
                at: (x, y),
                typology: placement.typology().to_owned(),
                insee_code: placement.insee_code().to_owned(),
            });
        }
    }
    if points.len() <= MAX_POINTS {
        return Content::Points(points);
    }
    let mut clusters: Vec<(u32, (f64, f64), u64)> = cells
        .into_iter()
        .map(|(key, (x, y, n))| (key, (x / n as f64, y / n as f64), n))
        .collect();
    // Same tile, same bytes.
    clusters.sort_by_key(|(key, _, _)| *key);
    Content::Clusters(clusters.into_iter().map(|(_, at, n)| (at, n)).collect())
}

/// The zoom whose tiles are the pyramid's cells: clusters (64 cells per tile side) come from it
/// for tiles of zoom 8 and less.
const PYRAMID_ZOOM: u8 = 14;
/// The deepest tile zoom clustered from the pyramid.
pub const PYRAMID_MAX_TILE_ZOOM: u8 = PYRAMID_ZOOM - 6;

/// Interleaves the bits of a cell's column and row (Z-order): the cells of any coarser tile
/// are then one contiguous range of keys.
fn morton(col: u32, row: u32) -> u64 {
    let spread = |v: u32| {
        let mut v = u64::from(v);
        v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
        v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
        v = (v | (v << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
        v = (v | (v << 2)) & 0x3333_3333_3333_3333;
        (v | (v << 1)) & 0x5555_5555_5555_5555
    };
    spread(col) | (spread(row) << 1)
}

/// The entries of one typology in one cell of zoom `PYRAMID_ZOOM`.
#[derive(Debug, Clone, Copy)]
struct Cell {
    key: u64,
    col: u32,
    row: u32,
    typology: u16,
    count: u32,
    sum_x: f64,
    sum_y: f64,
}

/// Every entry counted per typology and cell of zoom 14, in Z-order: a tile of zoom 8 or less
/// is one contiguous run of cells, summed into its 64 × 64 clusters without visiting its
/// entries (a tile over Paris at zoom 6 holds about a million).
pub struct Pyramid {
    /// The index position it was counted at.
    pub position: i64,
    typologies: Vec<String>,
    cells: Vec<Cell>,
}

impl Pyramid {
    /// Counts every entry of `index`. CPU work (about a second for 3 million entries): call it
    /// off the async threads.
    pub fn build(index: &crate::search::engine::SearchIndex) -> Self {
        let size = 2.0 * HALF_WORLD / f64::from(1u32 << PYRAMID_ZOOM);
        let last = (1u32 << PYRAMID_ZOOM) - 1;
        let mut typologies: Vec<String> = Vec::new();
        let mut numbers: HashMap<String, u16> = HashMap::new();
        let mut points: Vec<(u64, u16, u32, u32, f64, f64)> = Vec::new();
        for placement in index.spatial.entries(None) {
            let typology = placement.typology();
            let number = match numbers.get(typology) {
                Some(n) => *n,
                None => {
                    let n = u16::try_from(typologies.len()).unwrap_or(u16::MAX);
                    typologies.push(typology.to_owned());
                    numbers.insert(typology.to_owned(), n);
                    n
                }
            };
            let (x, y) = mercator(placement.location());
            let col = (((x + HALF_WORLD) / size).floor().max(0.0) as u32).min(last);
            let row = (((HALF_WORLD - y) / size).floor().max(0.0) as u32).min(last);
            points.push((morton(col, row), number, col, row, x, y));
        }
        points.sort_unstable_by_key(|p| (p.0, p.1));
        let mut cells: Vec<Cell> = Vec::new();
        for (key, typology, col, row, x, y) in points {
            match cells.last_mut() {
                Some(c) if c.key == key && c.typology == typology => {
                    c.count += 1;
                    c.sum_x += x;
                    c.sum_y += y;
                }
                _ => cells.push(Cell {
                    key,
                    col,
                    row,
                    typology,
                    count: 1,
                    sum_x: x,
                    sum_y: y,
                }),
            }
        }
        cells.shrink_to_fit();
        Self {
            position: index.position,
            typologies,
            cells,
        }
    }

    /// The clusters of `tile` (zoom 8 or less) for the typologies of `filter` (its communes are
    /// not looked at), and how many entries they hold.
    fn clusters(&self, tile: TileId, filter: &TileFilter) -> (Vec<Cluster>, u64) {
        let shift = u32::from(PYRAMID_ZOOM - tile.zoom);
        let first = morton(tile.col << shift, tile.row << shift);
        let end = first + (1u64 << (2 * shift));
        let wanted: Option<Vec<bool>> = filter.typologies.as_ref().map(|codes| {
            self.typologies
                .iter()
                .map(|t| codes.iter().any(|c| c == t))
                .collect()
        });
        let start = self.cells.partition_point(|c| c.key < first);
        let to_grid = shift - GRID.trailing_zeros();
        let mut grid: HashMap<u32, (f64, f64, u64)> = HashMap::new();
        let mut total = 0;
        for cell in self.cells[start..].iter().take_while(|c| c.key < end) {
            if wanted
                .as_ref()
                .is_some_and(|w| !w[usize::from(cell.typology)])
            {
                continue;
            }
            let column = (cell.col >> to_grid) - (tile.col << GRID.trailing_zeros());
            let row = (cell.row >> to_grid) - (tile.row << GRID.trailing_zeros());
            let sums = grid.entry(row * GRID + column).or_insert((0.0, 0.0, 0));
            sums.0 += cell.sum_x;
            sums.1 += cell.sum_y;
            sums.2 += u64::from(cell.count);
            total += u64::from(cell.count);
        }
        let mut clusters: Vec<(u32, (f64, f64), u64)> = grid
            .into_iter()
            .map(|(key, (x, y, n))| (key, (x / n as f64, y / n as f64), n))
            .collect();
        clusters.sort_by_key(|(key, _, _)| *key);
        (
            clusters.into_iter().map(|(_, at, n)| (at, n)).collect(),
            total,
        )
    }
}

/// The pyramid of the settled index, built once per index position; concurrent first requests
/// wait for the one build.
#[derive(Default)]
pub struct Pyramids {
    current: tokio::sync::Mutex<Option<std::sync::Arc<Pyramid>>>,
}

impl Pyramids {
    pub async fn of(
        &self,
        index: std::sync::Arc<crate::search::engine::SearchIndex>,
    ) -> Result<std::sync::Arc<Pyramid>> {
        let mut current = self.current.lock().await;
        if let Some(pyramid) = current.as_ref().filter(|p| p.position == index.position) {
            return Ok(pyramid.clone());
        }
        let started = std::time::Instant::now();
        let pyramid = tokio::task::spawn_blocking(move || Pyramid::build(&index))
            .await
            .map_err(anyhow::Error::from)?;
        tracing::info!(
            cells = pyramid.cells.len(),
            ms = started.elapsed().as_millis() as u64,
            "tile pyramid built"
        );
        let pyramid = std::sync::Arc::new(pyramid);
        *current = Some(pyramid.clone());
        Ok(pyramid)
    }
}

fn mvt_error(error: geozero::error::GeozeroError) -> Error {
    anyhow::anyhow!("encodage MVT : {error}").into()
}

/// The tile as Mapbox Vector Tile bytes: its entries with `id`, `name`, `typology`, `theme` and
/// `commune`, or its clusters with `count`.
pub fn encode(
    tile: TileId,
    content: &Content,
    names: &HashMap<String, String>,
    theme_of: impl Fn(&str) -> Option<String>,
) -> Result<Vec<u8>> {
    let (left, bottom, right, top) = tile.bounds();
    let mut writer = MvtWriter::new(EXTENT, left, bottom, right, top).map_err(mvt_error)?;
    let point = |writer: &mut MvtWriter,
                 index: u64,
                 at: (f64, f64),
                 properties: &[(&str, ColumnValue<'_>)]| {
        writer.feature_begin(index)?;
        for (i, (name, value)) in properties.iter().enumerate() {
            writer.property(i, name, value)?;
        }
        writer.geometry_begin()?;
        writer.point_begin(0)?;
        writer.xy(at.0, at.1, 0)?;
        writer.point_end(0)?;
        writer.geometry_end()?;
        writer.feature_end(index)
    };
    let layer = match content {
        Content::Points(points) => {
            for (i, p) in points.iter().enumerate() {
                let id = p.id.as_str();
                let theme = theme_of(&p.typology).unwrap_or_default();
                let mut properties = vec![
                    ("id", ColumnValue::String(id)),
                    ("typology", ColumnValue::String(&p.typology)),
                    ("theme", ColumnValue::String(&theme)),
                    ("commune", ColumnValue::String(&p.insee_code)),
                ];
                if let Some(name) = names.get(id) {
                    properties.push(("name", ColumnValue::String(name)));
                }
                point(&mut writer, i as u64, p.at, &properties).map_err(mvt_error)?;
            }
            POINTS_LAYER
        }
        Content::Clusters(clusters) => {
            for (i, (at, count)) in clusters.iter().enumerate() {
                point(
                    &mut writer,
                    i as u64,
                    *at,
                    &[("count", ColumnValue::ULong(*count))],
                )
                .map_err(mvt_error)?;
            }
            CLUSTERS_LAYER
        }
    };
    Ok(Tile {
        layers: vec![writer.layer(layer)],
    }
    .encode_to_vec())
}

/// The tile matrices of WebMercatorQuad, zoom 0 to `MAX_ZOOM` (OGC 2D Tile Matrix Set 2.0).
pub fn tile_matrix_set() -> Value {
    // Zoom 0's scale for 0.28 mm pixels, and its cell size in metres.
    let (scale0, cell0) = (559_082_264.028_717_8, 156_543.033_928_040_97);
    let matrices: Vec<Value> = (0..=MAX_ZOOM)
        .map(|z| {
            let factor = f64::from(1u32 << z);
            json!({
                "id": z.to_string(),
                "scaleDenominator": scale0 / factor,
                "cellSize": cell0 / factor,
                "cornerOfOrigin": "topLeft",
                "pointOfOrigin": [-HALF_WORLD, HALF_WORLD],
                "tileWidth": 256,
                "tileHeight": 256,
                "matrixWidth": 1u32 << z,
                "matrixHeight": 1u32 << z,
            })
        })
        .collect();
    json!({
        "id": TILE_MATRIX_SET,
        "title": "Google Maps Compatible for the World",
        "uri": TILE_MATRIX_SET_URI,
        "crs": WEB_MERCATOR,
        "orderedAxes": ["X", "Y"],
        "wellKnownScaleSet": "http://www.opengis.net/def/wkss/OGC/1.0/GoogleMapsCompatible",
        "tileMatrices": matrices,
    })
}

fn link(href: String, rel: &str, kind: &str, title: &str) -> Value {
    json!({"href": href, "rel": rel, "type": kind, "title": title})
}

/// The tiling schemes this server tiles in: WebMercatorQuad.
#[utoipa::path(get, path = "/ogc/tileMatrixSets", tag = "ogc",
    responses((status = 200, description = "Schémas de tuilage", content_type = "application/json")))]
pub(crate) async fn tile_matrix_sets(PublicBase(base): PublicBase) -> Response {
    let url = format!("{base}/ogc/tileMatrixSets/{TILE_MATRIX_SET}");
    crate::http::open_json(&json!({
        "tileMatrixSets": [{
            "id": TILE_MATRIX_SET,
            "title": "Google Maps Compatible for the World",
            "uri": TILE_MATRIX_SET_URI,
            "links": [link(url, "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", "application/json", TILE_MATRIX_SET)],
        }],
        "links": [link(format!("{base}/ogc/tileMatrixSets"), "self", "application/json", "Schémas de tuilage")],
    }))
}

/// The WebMercatorQuad tiling scheme, zoom 0 to 22.
#[utoipa::path(get, path = "/ogc/tileMatrixSets/{tileMatrixSetId}", tag = "ogc",
    params(("tileMatrixSetId" = String, Path, description = "WebMercatorQuad")),
    responses((status = 200, description = "Schéma de tuilage", content_type = "application/json"),
              (status = 404, body = crate::error::Problem)))]
pub(crate) async fn tile_matrix_set_page(Path(id): Path<String>) -> Result<Response> {
    if id != TILE_MATRIX_SET {
        return Err(Error::not_found("schéma de tuilage", id));
    }
    Ok(crate::http::open_json(&tile_matrix_set()))
}

/// The description of a collection's vector tileset: scheme, layers, template of its tiles.
fn tileset(base: &str, collection: &str, title: &str) -> Value {
    let url = format!("{base}/ogc/collections/{collection}/tiles/{TILE_MATRIX_SET}");
    json!({
        "title": format!("{title} — tuiles vectorielles"),
        "dataType": "vector",
        "crs": WEB_MERCATOR,
        "tileMatrixSetURI": TILE_MATRIX_SET_URI,
        "minZoom": 0,
        "maxZoom": MAX_ZOOM,
        "layers": [
            {"id": POINTS_LAYER, "dataType": "vector", "geometryDimension": 0,
             "description": format!("Les fiches une à une (id, name, typology, theme, commune), dans une tuile qui en tient au plus {MAX_POINTS}"),
             "minTileMatrix": "0", "maxTileMatrix": MAX_ZOOM.to_string()},
            {"id": CLUSTERS_LAYER, "dataType": "vector", "geometryDimension": 0,
             "description": format!("Au-delà de {MAX_POINTS} fiches dans une tuile : leur nombre (count) par case de 16 pixels, au centre de ses fiches"),
             "minTileMatrix": "0", "maxTileMatrix": MAX_ZOOM.to_string()},
        ],
        "links": [
            link(url.clone(), "self", "application/json", "Ce jeu de tuiles"),
            link(format!("{base}/ogc/tileMatrixSets/{TILE_MATRIX_SET}"), "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme", "application/json", TILE_MATRIX_SET),
            link(format!("{base}/ogc/collections/{collection}"), "http://www.opengis.net/def/rel/ogc/1.0/geodata", "application/json", title),
            json!({
                "href": format!("{url}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"),
                "rel": "item",
                "type": MVT,
                "templated": true,
                "title": "Tuile MVT",
            }),
        ],
    })
}

fn find(state: &AppState, collection: &str) -> Result<super::Collection> {
    super::collection(&state.reference, collection)
        .ok_or_else(|| Error::not_found("collection", collection))
}

/// The vector tilesets of a collection: one, in WebMercatorQuad.
#[utoipa::path(get, path = "/ogc/collections/{collection}/tiles", tag = "ogc",
    params(("collection" = String, Path, description = "Identifiant de la collection")),
    responses((status = 200, description = "Jeux de tuiles vectorielles", content_type = "application/json"),
              (status = 404, body = crate::error::Problem)))]
pub(crate) async fn tilesets(
    State(state): State<AppState>,
    PublicBase(base): PublicBase,
    Path(collection): Path<String>,
) -> Result<Response> {
    let found = find(&state, &collection)?;
    let mut set = tileset(&base, &found.id, &found.title);
    if let Some(object) = set.as_object_mut() {
        object.remove("layers");
    }
    Ok(crate::http::open_json(&json!({
        "tilesets": [set],
        "links": [link(format!("{base}/ogc/collections/{collection}/tiles"), "self", "application/json", "Jeux de tuiles")],
    })))
}

/// The vector tileset of a collection in WebMercatorQuad.
#[utoipa::path(get, path = "/ogc/collections/{collection}/tiles/{tileMatrixSetId}", tag = "ogc",
    params(("collection" = String, Path, description = "Identifiant de la collection"),
           ("tileMatrixSetId" = String, Path, description = "WebMercatorQuad")),
    responses((status = 200, description = "Jeu de tuiles vectorielles", content_type = "application/json"),
              (status = 404, body = crate::error::Problem)))]
pub(crate) async fn tileset_page(
    State(state): State<AppState>,
    PublicBase(base): PublicBase,
    Path((collection, matrix_set)): Path<(String, String)>,
) -> Result<Response> {
    let found = find(&state, &collection)?;
    if matrix_set != TILE_MATRIX_SET {
        return Err(Error::not_found("schéma de tuilage", matrix_set));
    }
    Ok(crate::http::open_json(&tileset(
        &base,
        &found.id,
        &found.title,
    )))
}

/// The filter of a tile request: the collection's theme, then `typology`, `commune`,
/// `departement` and `epci` as for items.
fn parse_filter(
    state: &AppState,
    collection: &super::Collection,
    pairs: &[(String, String)],
) -> Result<TileFilter> {
    let reference = &state.reference;
    let mut selection = match &collection.theme {
        Some(theme) => crate::export::routes::with_theme(Selection::default(), reference, theme)
            .map_err(|e| Error::InvalidParameters(vec![e]))?,
        None => Selection::default(),
    };
    let mut errors = Vec::new();
    let mut typologies = Vec::new();
    for (name, value) in pairs {
        let outcome = match name.as_str() {
            "typology" => {
                typologies.extend(list(value));
                Ok(())
            }
            "commune" | "departement" | "epci" => {
                super::routes::narrow_by_place(&mut selection, reference, name, value)
            }
            "f" if value == "mvt" => Ok(()),
            other => Err(FieldError::new(
                other,
                "paramètre inconnu (typology, commune, departement, epci)",
            )),
        };
        if let Err(e) = outcome {
            errors.push(e);
        }
    }
    let selection = finish_selection(selection, reference, typologies, errors)?;
    Ok(TileFilter::from_selection(selection))
}

/// One vector tile of a collection (Mapbox Vector Tile): its entries one by one in layer
/// `services` when it holds at most 2,000 of them, else their counts per 16-pixel cell in
/// layer `clusters`. Filtered like the items by `typology`, `commune`, `departement`, `epci`.
#[utoipa::path(
    get,
    path = "/ogc/collections/{collection}/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}",
    tag = "ogc",
    params(
        ("collection" = String, Path, description = "Identifiant de la collection"),
        ("tileMatrixSetId" = String, Path, description = "WebMercatorQuad"),
        ("tileMatrix" = String, Path, description = "Niveau de zoom, 0 à 22"),
        ("tileRow" = String, Path, description = "Rangée, depuis le haut"),
        ("tileCol" = String, Path, description = "Colonne, depuis la gauche"),
        ("typology" = Option<String>, Query, description = "Codes de typologie, séparés par des virgules"),
        ("commune" = Option<String>, Query, description = "Codes INSEE"),
        ("departement" = Option<String>, Query, description = "Codes de département"),
        ("epci" = Option<String>, Query, description = "SIREN d'EPCI"),
    ),
    responses(
        (status = 200, description = "Tuile MVT", content_type = "application/vnd.mapbox-vector-tile"),
        (status = 400, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
    )
)]
pub(crate) async fn tile(
    State(state): State<AppState>,
    Path((collection, matrix_set, matrix, row, col)): Path<(
        String,
        String,
        String,
        String,
        String,
    )>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let found = find(&state, &collection)?;
    if matrix_set != TILE_MATRIX_SET {
        return Err(Error::not_found("schéma de tuilage", matrix_set));
    }
    let tile = TileId::parse(&matrix, &row, &col)
        .ok_or_else(|| Error::not_found("tuile", format!("{matrix}/{row}/{col}")))?;
    let filter = parse_filter(&state, &found, &query_pairs(query.as_deref()))?;
    let index = state.search_index();
    let version = index.version.clone();
    // A low zoom's tile of many entries is clustered from the pyramid of the settled index
    // (counted once per data version, at most the cache staleness behind the writes); a tile
    // of few entries, or narrowed to communes, is read from the live index.
    let from_pyramid = if tile.zoom <= PYRAMID_MAX_TILE_ZOOM && filter.communes.is_none() {
        let pyramid = state.tiles.of(state.live.settled_index()).await?;
        let (clusters, total) = pyramid.clusters(tile, &filter);
        (total > MAX_POINTS as u64).then_some(Content::Clusters(clusters))
    } else {
        None
    };
    let content = match from_pyramid {
        Some(content) => content,
        None => tokio::task::spawn_blocking(move || collect(&index.spatial, tile, &filter))
            .await
            .map_err(anyhow::Error::from)?,
    };
    let names: HashMap<String, String> = match &content {
        Content::Points(points) => {
            let ids: Vec<_> = points.iter().map(|p| p.id.to_service_id()).collect();
            state
                .live
                .service_cache
                .get_many(&state.store, version.as_deref(), &ids)
                .await?
                .into_iter()
                .map(|s| (s.service.id.to_string(), s.service.content.name.clone()))
                .collect()
        }
        Content::Clusters(_) => HashMap::new(),
    };
    let taxonomy = state.reference.taxonomy.clone();
    let bytes = encode(tile, &content, &names, |code| {
        taxonomy.typology(code).map(|t| t.theme.clone())
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, MVT),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_world_and_invert() {
        let root = TileId::parse("0", "0", "0").unwrap();
        let (l, b, r, t) = root.bounds();
        assert!((l + HALF_WORLD).abs() < 1e-6 && (t - HALF_WORLD).abs() < 1e-6);
        assert!((r - HALF_WORLD).abs() < 1e-6 && (b + HALF_WORLD).abs() < 1e-6);
        assert!((root.bbox().max_lat - MAX_LATITUDE).abs() < 1e-9);
        // Paris at zoom 6 is tile row 22, column 32.
        let paris = TileId::parse("6", "22", "32").unwrap();
        assert!(paris.bbox().contains(LonLat {
            lon: 2.35,
            lat: 48.85
        }));
        assert!(TileId::parse("6", "64", "0").is_none());
        assert!(TileId::parse("23", "0", "0").is_none());
        let (x, y) = mercator(LonLat {
            lon: 2.35,
            lat: 48.85,
        });
        assert!((latitude(y) - 48.85).abs() < 1e-9);
        assert!((x / EARTH_RADIUS).to_degrees() - 2.35 < 1e-9);
    }

    #[test]
    fn z_order_keeps_each_tile_contiguous() {
        assert_eq!(morton(1, 0), 1);
        assert_eq!(morton(0, 1), 2);
        assert_eq!(morton(3, 3), 15);
        // The 4 × 4 cells of the tile (1, 2) two levels up are 16 keys in a row.
        let keys: Vec<u64> = (4..8)
            .flat_map(|col| (8..12).map(move |row| morton(col, row)))
            .collect();
        let first = morton(4, 8);
        assert!(keys.iter().all(|k| (first..first + 16).contains(k)));
    }

    #[test]
    fn encoded_tiles_read_back() {
        let tile = TileId::parse("10", "360", "518").unwrap();
        let (l, b, r, t) = tile.bounds();
        let clusters = Content::Clusters(vec![(((l + r) / 2.0, (b + t) / 2.0), 42)]);
        let bytes = encode(tile, &clusters, &HashMap::new(), |_| None).unwrap();
        let decoded = Tile::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.layers[0].name, CLUSTERS_LAYER);
        assert_eq!(decoded.layers[0].features.len(), 1);
        assert_eq!(decoded.layers[0].keys, ["count"]);
        assert_eq!(decoded.layers[0].values[0].uint_value, Some(42));
        assert_eq!(decoded.layers[0].features[0].geometry, [9, 4096, 4096]);
    }
}
