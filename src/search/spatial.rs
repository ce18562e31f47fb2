//! The spatial index of published entries: one R-tree of unit-sphere points per typology, bulk
//! loaded from the database at start, updated with every committed write, checkable against it.
//!
//! Points are indexed as 3-D unit vectors, not as raw degrees: a degree of longitude is 30 %
//! shorter than a degree of latitude at 46°N, so ranking by degrees misorders neighbours. The
//! straight-line (chord) distance between unit vectors grows with the great-circle distance, so
//! the R-tree's own ordering is the true one, and metres follow exactly from the chord.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::f64::consts::PI;
use std::sync::Arc;

use rstar::primitives::GeomWithData;
use rstar::{RTree, AABB};

use crate::db::Pool;
use crate::error::Result;
use crate::services::{ServiceId, Wheelchair};
use crate::spatial::{BBox, LonLat, EARTH_RADIUS_M};
use crate::territory::InseeCode;
use crate::text::fold;

/// How far (in degrees) a stored point may differ from the database's before `check` calls it moved.
const MOVED_TOLERANCE_DEG: f64 = 1e-9;

/// How many discrepancies `check` spells out before summing up the rest in one line.
const MAX_REPORTED: usize = 100;

/// Slack added to 3-D query boxes and radii so that float rounding never drops a point on the edge;
/// the exact test that follows decides.
const UNIT_SLACK: f64 = 1e-12;

/// A published entry as the index needs it: where it is, in which commune, and what queries
/// filter or sort on without going back to the database.
#[derive(Debug, Clone, PartialEq)]
pub struct SpatialEntry {
    pub id: ServiceId,
    pub location: LonLat,
    pub insee_code: InseeCode,
    pub attributes: Attributes,
}

/// The filterable and sortable facts of an entry besides its place.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attributes {
    pub wheelchair: Wheelchair,
    /// Normalised OSM hours, shared between the entries that have the same timetable.
    pub opening_hours: Option<Arc<str>>,
    /// The entry's name, folded (`crate::text::fold`): the order of lists without a place, and
    /// the words text queries match.
    pub folded_name: Box<str>,
}

/// What the index holds about one entry, looked up by id to remove or move it without a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The typology code, shared with the key of the entry's tree.
    pub typology: Arc<str>,
    pub location: LonLat,
    pub insee_code: InseeCode,
    pub attributes: Attributes,
}

/// One answer of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: ServiceId,
    pub typology: String,
    pub location: LonLat,
    /// Great-circle distance from the query point, in metres; 0.0 for a box query, which has no
    /// query point.
    pub distance_m: f64,
}

/// What a tree stores beside the unit vector: enough to answer without the side table, and to
/// find the exact element again when it is removed.
#[derive(Debug, Clone, PartialEq)]
struct Indexed {
    id: ServiceId,
    location: LonLat,
}

/// A tree element: the entry's unit vector with its id and WGS84 position.
type Item = GeomWithData<[f64; 3], Indexed>;

/// The published entries in memory, for nearest, radius and box queries filtered by typology.
///
/// One R-tree per typology keeps a filtered query from walking through entries of other
/// typologies; a query over several typologies (a theme) merges the trees' answers.
#[derive(Debug, Default)]
pub struct SpatialIndex {
    trees: HashMap<Arc<str>, RTree<Item>>,
    by_id: HashMap<ServiceId, Placement>,
}

impl SpatialIndex {
    /// An index of `entries`, each with its typology code, every tree bulk loaded at once (far
    /// faster and better balanced than inserting one by one). An id given twice keeps its last
    /// placement.
    pub fn new(entries: impl IntoIterator<Item = (String, SpatialEntry)>) -> Self {
        let mut typologies: HashSet<Arc<str>> = HashSet::new();
        let mut by_id: HashMap<ServiceId, Placement> = HashMap::new();
        for (typology, entry) in entries {
            let typology = match typologies.get(typology.as_str()) {
                Some(shared) => Arc::clone(shared),
                None => {
                    let shared: Arc<str> = Arc::from(typology);
                    typologies.insert(Arc::clone(&shared));
                    shared
                }
            };
            by_id.insert(
                entry.id,
                Placement {
                    typology,
                    location: entry.location,
                    insee_code: entry.insee_code,
                    attributes: entry.attributes,
                },
            );
        }
        let mut items: HashMap<Arc<str>, Vec<Item>> = HashMap::new();
        for (id, placement) in &by_id {
            items
                .entry(Arc::clone(&placement.typology))
                .or_default()
                .push(item(id.clone(), placement.location));
        }
        let trees = items
            .into_iter()
            .map(|(typology, items)| (typology, RTree::bulk_load(items)))
            .collect();
        Self { trees, by_id }
    }

    /// Adds an entry. An id the index already holds is moved rather than duplicated, exactly as
    /// [`SpatialIndex::upsert`] does: the index never holds one id twice.
    pub fn insert(&mut self, typology: &str, entry: SpatialEntry) {
        self.upsert(typology, entry);
    }

    /// Removes the entry `id` (withdrawn, unpublished, deleted) wherever it is; false when the
    /// index did not hold it. No typology is asked for: the index knows the entry's own, which a
    /// caller holding the entry's new content might not.
    pub fn remove(&mut self, id: &ServiceId) -> bool {
        let Some(placement) = self.by_id.remove(id) else {
            return false;
        };
        if let Some(tree) = self.trees.get_mut(&placement.typology) {
            tree.remove(&item(id.clone(), placement.location));
            if tree.size() == 0 {
                self.trees.remove(&placement.typology);
            }
        }
        true
    }

    /// Puts the entry where a committed write says it is: removes its old placement (another
    /// point, another typology) then inserts it. True when an older placement was replaced.
    pub fn upsert(&mut self, typology: &str, entry: SpatialEntry) -> bool {
        let replaced = self.remove(&entry.id);
        let typology = match self.trees.get_key_value(typology) {
            Some((shared, _)) => Arc::clone(shared),
            None => Arc::from(typology),
        };
        self.trees
            .entry(Arc::clone(&typology))
            .or_default()
            .insert(item(entry.id.clone(), entry.location));
        self.by_id.insert(
            entry.id,
            Placement {
                typology,
                location: entry.location,
                insee_code: entry.insee_code,
                attributes: entry.attributes,
            },
        );
        replaced
    }

    /// The number of entries held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Where the index has the entry `id`, if it holds it.
    pub fn get(&self, id: &ServiceId) -> Option<&Placement> {
        self.by_id.get(id)
    }

    /// How many entries `typologies` hold (all when `None`), without visiting them.
    pub fn count(&self, typologies: Option<&[&str]>) -> usize {
        self.trees_for(typologies)
            .iter()
            .map(|(_, tree)| tree.size())
            .sum()
    }

    /// The typology codes that have at least one entry, in no particular order.
    pub fn typologies(&self) -> impl Iterator<Item = &str> {
        self.trees.keys().map(|t| &**t)
    }

    /// Entries nearest first from `from`, among `typologies` (every typology when `None`, none
    /// when the slice is empty), read lazily: the trees' nearest-neighbour iterators are merged
    /// k-way, so each tree is read only as far as the caller goes.
    pub fn nearest_iter<'a>(
        &'a self,
        from: LonLat,
        typologies: Option<&[&str]>,
    ) -> NearestIter<'a> {
        let query = unit_vector(from);
        let mut cursors: Vec<_> = self
            .trees_for(typologies)
            .into_iter()
            .map(|(typology, tree)| {
                let iter: TreeWalk<'a> =
                    Box::new(tree.nearest_neighbor_iter_with_distance_2(&query));
                (typology, iter)
            })
            .collect();
        let mut heads = BinaryHeap::with_capacity(cursors.len());
        for (cursor, (_, iter)) in cursors.iter_mut().enumerate() {
            if let Some((element, chord_2)) = iter.next() {
                heads.push(Head {
                    chord_2,
                    cursor,
                    element,
                });
            }
        }
        NearestIter { cursors, heads }
    }

    /// The `limit` entries nearest to `from`, nearest first, among `typologies`, no farther than
    /// `max_distance_m` when given.
    pub fn nearest(
        &self,
        from: LonLat,
        typologies: Option<&[&str]>,
        limit: usize,
        max_distance_m: Option<f64>,
    ) -> Vec<Hit> {
        self.nearest_iter(from, typologies)
            // Every later element of every tree is at least as far.
            .take_while(|hit| max_distance_m.is_none_or(|max| hit.distance_m <= max))
            .take(limit)
            .collect()
    }

    /// Every entry of `typologies` (all when `None`) with its placement, in no particular order:
    /// for queries without a place.
    pub fn entries<'a>(
        &'a self,
        typologies: Option<&[&str]>,
    ) -> impl Iterator<Item = (&'a ServiceId, &'a Placement)> + 'a {
        let trees = self.trees_for(typologies);
        trees.into_iter().flat_map(move |(_, tree)| {
            tree.iter().filter_map(move |element| {
                let id = &element.data.id;
                self.by_id.get(id).map(|placement| (id, placement))
            })
        })
    }

    /// Every entry within `radius_m` metres of `from` (boundary included), nearest first, among
    /// `typologies` (every typology when `None`).
    pub fn within_radius(
        &self,
        from: LonLat,
        radius_m: f64,
        typologies: Option<&[&str]>,
    ) -> Vec<Hit> {
        if radius_m.is_nan() || radius_m < 0.0 {
            return Vec::new();
        }
        let query = unit_vector(from);
        let max_chord_2 = chord_2_for(radius_m) + UNIT_SLACK;
        let mut hits = Vec::new();
        for (typology, tree) in self.trees_for(typologies) {
            for element in tree.locate_within_distance(query, max_chord_2) {
                let distance_m = metres_from_chord_2(squared_distance(element.geom(), &query));
                if distance_m <= radius_m {
                    hits.push(hit(element, typology, distance_m));
                }
            }
        }
        hits.sort_by(|a, b| {
            a.distance_m
                .total_cmp(&b.distance_m)
                .then_with(|| a.id.as_str().cmp(b.id.as_str()))
        });
        hits
    }

    /// Every entry inside `bbox` (edges included, `BBox::contains`), among `typologies` (every
    /// typology when `None`), sorted by id so that the answer is stable; `distance_m` is 0.0.
    /// A box whose `min_lon` exceeds its `max_lon` holds nothing, as for `BBox::contains`.
    pub fn within_bbox(&self, bbox: BBox, typologies: Option<&[&str]>) -> Vec<Hit> {
        let Some(envelope) = enclosing_envelope(bbox) else {
            return Vec::new();
        };
        let mut hits = Vec::new();
        for (typology, tree) in self.trees_for(typologies) {
            for element in tree.locate_in_envelope(&envelope) {
                if bbox.contains(element.data.location) {
                    hits.push(hit(element, typology, 0.0));
                }
            }
        }
        hits.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        hits
    }

    /// The trees a filter selects: all for `None`, each named typology once otherwise (unknown
    /// codes select nothing).
    fn trees_for(&self, typologies: Option<&[&str]>) -> Vec<(&Arc<str>, &RTree<Item>)> {
        match typologies {
            None => self.trees.iter().collect(),
            Some(codes) => {
                let mut seen = HashSet::with_capacity(codes.len());
                codes
                    .iter()
                    .filter(|code| seen.insert(**code))
                    .filter_map(|code| self.trees.get_key_value(*code))
                    .collect()
            }
        }
    }

    /// Every disagreement between the trees and the id table, in words: they must hold the same
    /// entries at the same places.
    fn internal_discrepancies(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut in_trees = 0;
        for (typology, tree) in &self.trees {
            in_trees += tree.size();
            for element in tree.iter() {
                let Indexed { id, location } = &element.data;
                match self.by_id.get(id) {
                    Some(p) if p.typology == *typology && p.location == *location => {}
                    _ => found.push(format!(
                        "index incohérent : {id} est dans l'arbre « {typology} » en {}, {} mais la table des identifiants dit autre chose",
                        location.lon, location.lat
                    )),
                }
            }
        }
        if in_trees != self.by_id.len() {
            found.push(format!(
                "index incohérent : {in_trees} points dans les arbres pour {} identifiants",
                self.by_id.len()
            ));
        }
        found
    }
}

/// One tree's nearest-first walk (rstar does not export its iterator type, hence the box).
type TreeWalk<'a> = Box<dyn Iterator<Item = (&'a Item, f64)> + 'a>;

/// The lazy nearest-first walk of [`SpatialIndex::nearest_iter`].
pub struct NearestIter<'a> {
    cursors: Vec<(&'a Arc<str>, TreeWalk<'a>)>,
    heads: BinaryHeap<Head<'a>>,
}

impl Iterator for NearestIter<'_> {
    type Item = Hit;

    fn next(&mut self) -> Option<Hit> {
        let head = self.heads.pop()?;
        let (typology, iter) = &mut self.cursors[head.cursor];
        let found = hit(head.element, typology, metres_from_chord_2(head.chord_2));
        if let Some((element, chord_2)) = iter.next() {
            self.heads.push(Head {
                chord_2,
                cursor: head.cursor,
                element,
            });
        }
        Some(found)
    }
}

/// The next element of one tree in a k-way merge, ordered so that `BinaryHeap` pops the nearest.
struct Head<'a> {
    chord_2: f64,
    cursor: usize,
    element: &'a Item,
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head<'_> {}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head<'_> {
    /// Reversed (nearer is greater) for the max-heap; ties go to the lower id, then the lower cursor.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .chord_2
            .total_cmp(&self.chord_2)
            .then_with(|| {
                other
                    .element
                    .data
                    .id
                    .as_str()
                    .cmp(self.element.data.id.as_str())
            })
            .then_with(|| other.cursor.cmp(&self.cursor))
    }
}

/// The tree element of an entry.
fn item(id: ServiceId, location: LonLat) -> Item {
    GeomWithData::new(unit_vector(location), Indexed { id, location })
}

/// The answer for one tree element.
fn hit(element: &Item, typology: &str, distance_m: f64) -> Hit {
    Hit {
        id: element.data.id.clone(),
        typology: typology.to_owned(),
        location: element.data.location,
        distance_m,
    }
}

/// The point on the unit sphere at `p` (x towards lon 0 on the equator, z towards the north pole).
fn unit_vector(p: LonLat) -> [f64; 3] {
    let (lon, lat) = (p.lon.to_radians(), p.lat.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// Squared straight-line distance between two 3-D points, as rstar computes it.
fn squared_distance(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Great-circle metres between two unit vectors `sqrt(chord_2)` apart: `2R·asin(chord/2)`.
fn metres_from_chord_2(chord_2: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * (chord_2.sqrt() / 2.0).min(1.0).asin()
}

/// The squared chord of a great-circle distance of `metres` (4, the whole sphere, beyond the antipode).
fn chord_2_for(metres: f64) -> f64 {
    let half_angle = metres.max(0.0) / (2.0 * EARTH_RADIUS_M);
    if half_angle >= PI / 2.0 {
        4.0
    } else {
        let chord = 2.0 * half_angle.sin();
        chord * chord
    }
}

/// The smallest 3-D box holding every unit vector of the lon/lat box (padded for rounding).
///
/// A lon/lat box maps to a patch of the sphere, not to a box. Each coordinate is a product of a
/// function of the latitude (`cos lat`, never negative, or `sin lat`) and a function of the
/// longitude, so its extremes over the patch are reached at the extremes of each factor: the
/// box's edges, the equator when the box crosses it, and the multiples of 90° of longitude it
/// crosses. Taking every combination of those gives the exact bounds, not a sampled guess.
fn enclosing_envelope(bbox: BBox) -> Option<AABB<[f64; 3]>> {
    let min_lat = bbox.min_lat.max(-90.0);
    let max_lat = bbox.max_lat.min(90.0);
    // Written so that a NaN bound, too, means an empty box.
    let in_order = |low: f64, high: f64| low <= high;
    if !in_order(bbox.min_lon, bbox.max_lon) || !in_order(min_lat, max_lat) {
        return None;
    }
    let mut lats = vec![min_lat, max_lat];
    if min_lat < 0.0 && max_lat > 0.0 {
        lats.push(0.0);
    }
    let mut lons = vec![bbox.min_lon, bbox.max_lon];
    let first = (bbox.min_lon / 90.0).ceil() as i64;
    let last = (bbox.max_lon / 90.0).floor() as i64;
    // Past four quarter-turns the box wraps the whole globe: four are enough.
    for quarter in first..=last.min(first + 4) {
        lons.push(quarter as f64 * 90.0);
    }
    let mut lower = [f64::INFINITY; 3];
    let mut upper = [f64::NEG_INFINITY; 3];
    for &lat in &lats {
        for &lon in &lons {
            let v = unit_vector(LonLat::new(lon, lat));
            for axis in 0..3 {
                lower[axis] = lower[axis].min(v[axis]);
                upper[axis] = upper[axis].max(v[axis]);
            }
        }
    }
    for axis in 0..3 {
        lower[axis] -= UNIT_SLACK;
        upper[axis] += UNIT_SLACK;
    }
    Some(AABB::from_corners(lower, upper))
}

/// The published entries as the database has them: id, typology, lon, lat, commune.
type Row = (
    String,
    String,
    f64,
    f64,
    String,
    String,
    Option<String>,
    String,
);

/// Every published entry's row. Read in one statement, hence from one snapshot of the database.
async fn published_rows(pool: &Pool) -> Result<Vec<Row>> {
    Ok(sqlx::query_as(
        "SELECT id, typology_code, lon, lat, insee_code, wheelchair, opening_hours, name
         FROM services WHERE status = 'published'",
    )
    .fetch_all(pool)
    .await?)
}

/// The index of every published entry of the database, built on a blocking thread so that the
/// bulk load does not hold up the async workers.
///
/// A write committed after the read is not in the answer: install the index before accepting
/// writes, or replay them (`upsert` of an entry already placed is harmless).
pub async fn load(pool: &Pool) -> Result<SpatialIndex> {
    let rows = published_rows(pool).await?;
    let index = tokio::task::spawn_blocking(move || -> anyhow::Result<SpatialIndex> {
        // A directory repeats a few thousand timetables: each is held once.
        let mut timetables: HashMap<String, Arc<str>> = HashMap::new();
        let entries = rows
            .into_iter()
            .map(
                |(id, typology, lon, lat, insee_code, wheelchair, hours, name)| {
                    let insee_code = InseeCode::parse(&insee_code)
                        .map_err(|e| anyhow::anyhow!("fiche {id} : {e}"))?;
                    let opening_hours = hours.map(|h| {
                        timetables
                            .entry(h)
                            .or_insert_with_key(|h| Arc::from(h.as_str()))
                            .clone()
                    });
                    Ok((
                        typology,
                        SpatialEntry {
                            id: ServiceId(id),
                            location: LonLat::new(lon, lat),
                            attributes: Attributes {
                                wheelchair: Wheelchair::parse(&wheelchair).unwrap_or_default(),
                                opening_hours,
                                folded_name: fold(&name).into_boxed_str(),
                            },
                            insee_code,
                        },
                    ))
                },
            )
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(SpatialIndex::new(entries))
    })
    .await
    .map_err(anyhow::Error::from)??;
    Ok(index)
}

/// The differences between `index` and the published entries of the database, one sentence
/// each (empty when they agree): entries missing on either side, in another typology or commune,
/// moved by more than 1e-9°, and any incoherence inside the index itself. Past 100 sentences the
/// rest is summed up in a last one.
pub async fn check(pool: &Pool, index: &SpatialIndex) -> Result<Vec<String>> {
    let rows = published_rows(pool).await?;
    let mut found = index.internal_discrepancies();
    let mut published: HashSet<String> = HashSet::with_capacity(rows.len());
    for (id, typology, lon, lat, insee_code, ..) in rows {
        match index.by_id.get(&ServiceId(id.clone())) {
            None => found.push(format!(
                "la fiche publiée {id} ({typology}) manque dans l'index"
            )),
            Some(placement) => {
                if *placement.typology != *typology {
                    found.push(format!(
                        "la fiche {id} est de typologie « {typology} » en base mais « {} » dans l'index",
                        placement.typology
                    ));
                }
                let at = placement.location;
                if (at.lon - lon).abs() > MOVED_TOLERANCE_DEG
                    || (at.lat - lat).abs() > MOVED_TOLERANCE_DEG
                {
                    found.push(format!(
                        "la fiche {id} est en {lon}, {lat} en base mais en {}, {} dans l'index",
                        at.lon, at.lat
                    ));
                }
                if placement.insee_code.as_str() != insee_code {
                    found.push(format!(
                        "la fiche {id} est dans la commune {insee_code} en base mais {} dans l'index",
                        placement.insee_code
                    ));
                }
            }
        }
        published.insert(id);
    }
    let mut extra: Vec<&ServiceId> = index
        .by_id
        .keys()
        .filter(|id| !published.contains(id.as_str()))
        .collect();
    extra.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    for id in extra {
        found.push(format!(
            "la fiche {id} est dans l'index mais n'est pas publiée en base"
        ));
    }
    if found.len() > MAX_REPORTED {
        let more = found.len() - MAX_REPORTED;
        found.truncate(MAX_REPORTED);
        found.push(format!("… et {more} autres écarts"));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    const TYPOLOGIES: [&str; 10] = [
        "mairie",
        "piscine",
        "mediatheque",
        "poste",
        "ecole",
        "college",
        "lycee",
        "gendarmerie",
        "pharmacie",
        "anpe",
    ];

    /// A fixed id for test entry `n`.
    fn id(n: usize) -> ServiceId {
        ServiceId(format!("{n:016}"))
    }

    /// Test entry `n` at (lon, lat), in Clermont-Ferrand for the index's purpose.
    fn entry(n: usize, lon: f64, lat: f64) -> SpatialEntry {
        SpatialEntry {
            id: id(n),
            location: LonLat::new(lon, lat),
            insee_code: InseeCode::parse("63113").unwrap(),
            attributes: Attributes::default(),
        }
    }

    /// 20,000 seeded random entries over metropolitan France, spread over ten typologies.
    fn random_entries() -> Vec<(String, SpatialEntry)> {
        let mut rng = ChaCha8Rng::seed_from_u64(46);
        (0..20_000)
            .map(|n| {
                let typology = TYPOLOGIES[rng.gen_range(0..TYPOLOGIES.len())].to_owned();
                let e = entry(n, rng.gen_range(-5.0..9.5), rng.gen_range(41.5..51.0));
                (typology, e)
            })
            .collect()
    }

    /// The brute-force answer: every entry of the filter with its haversine distance, nearest first.
    fn brute_force(
        entries: &[(String, SpatialEntry)],
        from: LonLat,
        typologies: Option<&[&str]>,
    ) -> Vec<(ServiceId, f64)> {
        let mut all: Vec<(ServiceId, f64)> = entries
            .iter()
            .filter(|(t, _)| typologies.is_none_or(|ts| ts.contains(&t.as_str())))
            .map(|(_, e)| (e.id.clone(), from.distance_m(e.location)))
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1));
        all
    }

    /// The ids of an answer, in its order.
    fn ids(hits: &[Hit]) -> Vec<ServiceId> {
        hits.iter().map(|h| h.id.clone()).collect()
    }

    /// Seeded query points over (and a little around) metropolitan France.
    fn query_points() -> Vec<LonLat> {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        (0..40)
            .map(|_| LonLat::new(rng.gen_range(-5.5..10.0), rng.gen_range(41.0..51.5)))
            .collect()
    }

    #[test]
    fn nearest_matches_brute_force() {
        let entries = random_entries();
        let index = SpatialIndex::new(entries.clone());
        assert_eq!(index.len(), 20_000);
        let filters: [Option<&[&str]>; 3] =
            [None, Some(&["piscine"]), Some(&["poste", "lycee", "anpe"])];
        for from in query_points() {
            for typologies in filters {
                let expected = brute_force(&entries, from, typologies);
                let hits = index.nearest(from, typologies, 15, None);
                assert_eq!(
                    ids(&hits),
                    expected
                        .iter()
                        .take(15)
                        .map(|e| e.0.clone())
                        .collect::<Vec<_>>()
                );
                for (hit, (_, metres)) in hits.iter().zip(&expected) {
                    assert!((hit.distance_m - metres).abs() < 1e-3, "{hit:?} {metres}");
                    let placement = index.get(&hit.id).unwrap();
                    assert_eq!(&*placement.typology, hit.typology);
                    assert!(typologies.is_none_or(|ts| ts.contains(&hit.typology.as_str())));
                }
                // A distance cap stops the merge early and keeps only what is close enough.
                let capped = index.nearest(from, typologies, 50, Some(8_000.0));
                let within: Vec<ServiceId> = expected
                    .iter()
                    .take(50)
                    .filter(|e| e.1 <= 8_000.0)
                    .map(|e| e.0.clone())
                    .collect();
                assert_eq!(ids(&capped), within);
            }
        }
        assert!(index
            .nearest(LonLat::new(3.0, 45.0), None, 0, None)
            .is_empty());
        assert!(index
            .nearest(LonLat::new(3.0, 45.0), Some(&[]), 5, None)
            .is_empty());
        assert!(index
            .nearest(LonLat::new(3.0, 45.0), Some(&["inconnue"]), 5, None)
            .is_empty());
    }

    #[test]
    fn radius_matches_brute_force() {
        let entries = random_entries();
        let index = SpatialIndex::new(entries.clone());
        for (n, from) in query_points().into_iter().enumerate() {
            let radius = 5_000.0 + 2_000.0 * n as f64;
            for typologies in [None, Some(&["mairie", "ecole"][..])] {
                let expected: Vec<ServiceId> = brute_force(&entries, from, typologies)
                    .into_iter()
                    .take_while(|e| e.1 <= radius)
                    .map(|e| e.0)
                    .collect();
                let hits = index.within_radius(from, radius, typologies);
                assert_eq!(ids(&hits), expected, "radius {radius} around {from:?}");
                assert!(hits.windows(2).all(|w| w[0].distance_m <= w[1].distance_m));
            }
        }
        assert!(index
            .within_radius(LonLat::new(3.0, 45.0), -1.0, None)
            .is_empty());
        assert_eq!(
            index
                .within_radius(LonLat::new(3.0, 45.0), 30_000_000.0, None)
                .len(),
            20_000,
            "past the antipode, everything"
        );
    }

    #[test]
    fn bbox_matches_brute_force() {
        let entries = random_entries();
        let index = SpatialIndex::new(entries.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..40 {
            let (lon, lat) = (rng.gen_range(-5.5..9.0), rng.gen_range(41.0..50.5));
            let bbox = BBox::new(
                lon,
                lat,
                lon + rng.gen_range(0.01..2.0),
                lat + rng.gen_range(0.01..1.5),
            );
            for typologies in [None, Some(&["pharmacie"][..])] {
                let mut expected: Vec<ServiceId> = entries
                    .iter()
                    .filter(|(t, e)| {
                        bbox.contains(e.location)
                            && typologies.is_none_or(|ts| ts.contains(&t.as_str()))
                    })
                    .map(|(_, e)| e.id.clone())
                    .collect();
                expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                let hits = index.within_bbox(bbox, typologies);
                assert_eq!(ids(&hits), expected, "{bbox:?}");
                assert!(hits.iter().all(|h| h.distance_m == 0.0));
            }
        }
        let france = BBox::new(-5.3, 41.3, 9.7, 51.2);
        assert_eq!(index.within_bbox(france, None).len(), 20_000);
        assert!(index
            .within_bbox(BBox::new(3.0, 45.0, 2.0, 46.0), None)
            .is_empty());
    }

    #[test]
    fn envelope_holds_patches_across_the_equator_and_the_quarter_meridians() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for bbox in [
            BBox::new(-10.0, -5.0, 100.0, 5.0),
            BBox::new(170.0, -80.0, 190.0, -60.0),
            BBox::new(-180.0, -90.0, 180.0, 90.0),
            BBox::new(55.2, -21.45, 55.9, -20.85),
        ] {
            let envelope = enclosing_envelope(bbox).unwrap();
            for _ in 0..2_000 {
                let p = LonLat::new(
                    rng.gen_range(bbox.min_lon..=bbox.max_lon),
                    rng.gen_range(bbox.min_lat..=bbox.max_lat),
                );
                let v = unit_vector(p);
                let (lower, upper) = (envelope.lower(), envelope.upper());
                assert!(
                    (0..3).all(|a| lower[a] <= v[a] && v[a] <= upper[a]),
                    "{p:?}"
                );
            }
        }
    }

    #[test]
    fn true_distances_rank_where_degrees_would_not() {
        // At 46°N a degree of longitude is 77 km, a degree of latitude 111 km.
        let from = LonLat::new(3.0, 46.0);
        let east_1_km = LonLat::new(3.0 + 1_000.0 / (111_195.0 * 46f64.to_radians().cos()), 46.0);
        let north_1_3_km = LonLat::new(3.0, 46.0 + 1_300.0 / 111_195.0);
        let degrees = |p: LonLat| (p.lon - from.lon).hypot(p.lat - from.lat);
        assert!(
            degrees(north_1_3_km) < degrees(east_1_km),
            "raw degrees put the farther point first"
        );
        let index = SpatialIndex::new([
            ("mairie".to_owned(), entry(1, east_1_km.lon, east_1_km.lat)),
            (
                "mairie".to_owned(),
                entry(2, north_1_3_km.lon, north_1_3_km.lat),
            ),
        ]);
        let hits = index.nearest(from, None, 2, None);
        assert_eq!(ids(&hits), vec![id(1), id(2)]);
        assert!((hits[0].distance_m - 1_000.0).abs() < 1.0, "{hits:?}");
        assert!((hits[1].distance_m - 1_300.0).abs() < 1.0, "{hits:?}");
        assert_eq!(ids(&index.within_radius(from, 1_100.0, None)), vec![id(1)]);
    }

    #[test]
    fn several_typologies_merge_by_distance() {
        let from = LonLat::new(3.0, 45.0);
        let index = SpatialIndex::new([
            ("piscine".to_owned(), entry(1, 3.01, 45.0)),
            ("poste".to_owned(), entry(2, 3.02, 45.0)),
            ("piscine".to_owned(), entry(3, 3.03, 45.0)),
            ("mairie".to_owned(), entry(4, 3.005, 45.0)),
            ("poste".to_owned(), entry(5, 3.04, 45.0)),
        ]);
        let both = index.nearest(from, Some(&["poste", "piscine", "poste"]), 10, None);
        assert_eq!(ids(&both), vec![id(1), id(2), id(3), id(5)]);
        assert_eq!(
            both.iter().map(|h| h.typology.as_str()).collect::<Vec<_>>(),
            ["piscine", "poste", "piscine", "poste"]
        );
        assert_eq!(
            ids(&index.nearest(from, None, 3, None)),
            vec![id(4), id(1), id(2)]
        );
        let mut typologies: Vec<&str> = index.typologies().collect();
        typologies.sort_unstable();
        assert_eq!(typologies, ["mairie", "piscine", "poste"]);
    }

    #[test]
    fn upsert_moves_and_retypes_remove_withdraws() {
        let from = LonLat::new(3.0, 45.0);
        let mut index = SpatialIndex::new([
            ("piscine".to_owned(), entry(1, 3.01, 45.0)),
            ("piscine".to_owned(), entry(2, 3.02, 45.0)),
        ]);
        assert!(!index.upsert("piscine", entry(3, 3.5, 45.0)));
        assert_eq!(index.len(), 3);

        // Moved nearer: now first.
        assert!(index.upsert("piscine", entry(2, 3.001, 45.0)));
        assert_eq!(index.len(), 3);
        assert_eq!(
            ids(&index.nearest(from, None, 3, None)),
            vec![id(2), id(1), id(3)]
        );

        // Another typology: gone from the old tree, found in the new one, old tree dropped when empty.
        index.upsert("mediatheque", entry(1, 3.01, 45.0));
        index.insert("mediatheque", entry(2, 3.001, 45.0));
        index.upsert("mediatheque", entry(3, 3.5, 45.0));
        assert_eq!(index.len(), 3);
        assert!(index.nearest(from, Some(&["piscine"]), 5, None).is_empty());
        assert_eq!(index.typologies().collect::<Vec<_>>(), ["mediatheque"]);
        assert_eq!(
            ids(&index.nearest(from, Some(&["mediatheque"]), 5, None)),
            vec![id(2), id(1), id(3)]
        );
        assert!(index.internal_discrepancies().is_empty());

        assert!(index.remove(&id(2)));
        assert!(!index.remove(&id(2)));
        assert!(index.remove(&id(1)));
        assert_eq!(index.len(), 1);
        assert_eq!(
            ids(&index.within_radius(from, 100_000.0, None)),
            vec![id(3)]
        );
        assert!(index.get(&id(1)).is_none());
        assert!(index.internal_discrepancies().is_empty());
    }

    #[test]
    fn duplicate_ids_at_construction_keep_the_last() {
        let index = SpatialIndex::new([
            ("piscine".to_owned(), entry(1, 3.01, 45.0)),
            ("poste".to_owned(), entry(1, 3.02, 45.0)),
        ]);
        assert_eq!(index.len(), 1);
        assert_eq!(&*index.get(&id(1)).unwrap().typology, "poste");
        assert!(index.internal_discrepancies().is_empty());
    }

    #[tokio::test]
    async fn load_and_check_against_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::connect(dir.path().join("test.db").to_str().unwrap())
            .await
            .unwrap();
        crate::boot::prepare(&pool, true).await.unwrap();
        let mut index = load(&pool).await.unwrap();
        assert_eq!(index.len(), 1283);
        assert_eq!(check(&pool, &index).await.unwrap(), Vec::<String>::new());

        let (moved,): (String,) = sqlx::query_as("SELECT id FROM services ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE services SET lon = lon + 0.001 WHERE id = $1")
            .bind(&moved)
            .execute(&pool)
            .await
            .unwrap();
        let found = check(&pool, &index).await.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains(&moved), "{found:?}");

        let (withdrawn,): (String,) =
            sqlx::query_as("SELECT id FROM services ORDER BY id DESC LIMIT 1")
                .fetch_one(&pool)
                .await
                .unwrap();
        sqlx::query("UPDATE services SET status = 'withdrawn' WHERE id = $1")
            .bind(&withdrawn)
            .execute(&pool)
            .await
            .unwrap();
        let found = check(&pool, &index).await.unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().any(|f| f.contains(&withdrawn)), "{found:?}");

        // Replaying the two writes as the application will brings the index back in step.
        let (typology, lon, lat, insee): (String, f64, f64, String) = sqlx::query_as(
            "SELECT typology_code, lon, lat, insee_code FROM services WHERE id = $1",
        )
        .bind(&moved)
        .fetch_one(&pool)
        .await
        .unwrap();
        index.upsert(
            &typology,
            SpatialEntry {
                id: ServiceId(moved),
                location: LonLat::new(lon, lat),
                insee_code: InseeCode::parse(&insee).unwrap(),
                attributes: Attributes::default(),
            },
        );
        assert!(index.remove(&ServiceId(withdrawn)));
        assert_eq!(check(&pool, &index).await.unwrap(), Vec::<String>::new());
    }
}
