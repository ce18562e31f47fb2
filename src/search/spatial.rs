//! The spatial index of published entries: one R-tree of unit-sphere points per typology, bulk
//! loaded from the database at start, updated with every committed write, checkable against it.
//!
//! Points are indexed as 3-D unit vectors, not as raw degrees: a degree of longitude is 30 %
//! shorter than a degree of latitude at 46°N, so ranking by degrees misorders neighbours. The
//! straight-line (chord) distance between unit vectors grows with the great-circle distance, so
//! the R-tree's own ordering is the true one, and metres follow exactly from the chord.
//!
//! The index holds all of France (three million entries) in memory, so each entry is one
//! fixed-size slot (id inline, typology and timetable as numbers, folded name in one shared
//! buffer) and the trees hold slot numbers: about 200 bytes an entry, trees included, and no
//! allocation per entry.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::f64::consts::PI;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use rstar::primitives::GeomWithData;
use rstar::{RTree, AABB};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::db::Store;
use crate::error::Result;
use crate::services::{ServiceId, Wheelchair, ID_ALPHABET};
use crate::spatial::{BBox, LonLat, EARTH_RADIUS_M};
use crate::territory::InseeCode;
use crate::text::fold_into;

/// How far (in degrees) a stored point may differ from the database's before `check` calls it moved.
const MOVED_TOLERANCE_DEG: f64 = 1e-9;

/// How many discrepancies `check` spells out before summing up the rest in one line.
const MAX_REPORTED: usize = 100;

/// Slack added to 3-D query boxes and radii so that float rounding never drops a point on the edge;
/// the exact test that follows decides.
const UNIT_SLACK: f64 = 1e-12;

/// The length of an entry id (see [`ServiceId`]).
const ID_BYTES: usize = 16;

/// The length of an INSEE commune code.
const INSEE_BYTES: usize = 5;

/// A slot's timetable number when it has no hours.
const NO_TIMETABLE: u32 = u32::MAX;

/// A vacant slot's typology number (its entry was removed; the slot waits for reuse).
const VACANT: u16 = u16::MAX;

/// An entry id held inline: the 16 characters of a [`ServiceId`], no allocation. Orders as the
/// id's text does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdKey([u8; ID_BYTES]);

impl IdKey {
    /// The key of `id`; `None` when it is not a 16-byte id.
    pub fn new(id: &str) -> Option<IdKey> {
        Some(IdKey(id.as_bytes().try_into().ok()?))
    }

    pub fn of(id: &ServiceId) -> Option<IdKey> {
        IdKey::new(id.as_str())
    }

    pub fn as_str(&self) -> &str {
        // Built from a `&str` of exactly these bytes.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn to_service_id(self) -> ServiceId {
        ServiceId(self.as_str().to_owned())
    }

    /// The id as two numbers of 40 bits (8 characters of the id alphabet each), for indexes that
    /// store numbers faster than text; `None` for an id outside the alphabet.
    pub fn to_numbers(self) -> Option<(u64, u64)> {
        let half = |chars: &[u8]| -> Option<u64> {
            chars.iter().try_fold(0u64, |n, c| {
                let digit = ID_ALPHABET.iter().position(|a| a == c)?;
                Some(n << 5 | digit as u64)
            })
        };
        Some((half(&self.0[..8])?, half(&self.0[8..])?))
    }

    /// The id of [`IdKey::to_numbers`]; `None` for numbers past 40 bits.
    pub fn from_numbers(hi: u64, lo: u64) -> Option<IdKey> {
        if hi >> 40 != 0 || lo >> 40 != 0 {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let (n, at) = if i < 8 { (hi, 7 - i) } else { (lo, 15 - i) };
            *byte = ID_ALPHABET[((n >> (5 * at)) & 31) as usize];
        }
        Some(IdKey(bytes))
    }
}

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// Normalised OSM hours.
    pub opening_hours: Option<String>,
    /// The entry's name, folded (`crate::text::fold`): the order of lists without a place.
    pub folded_name: String,
}

/// One entry in the index, fixed size; what it shares with others lives in the index's tables.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slot {
    id: IdKey,
    location: LonLat,
    insee_code: [u8; INSEE_BYTES],
    wheelchair: Wheelchair,
    /// Into `SpatialIndex::typologies`; [`VACANT`] for a free slot.
    typology: u16,
    /// Into `SpatialIndex::timetables`; [`NO_TIMETABLE`] without hours.
    timetable: u32,
    /// The folded name: `SpatialIndex::names[name_start..name_start + name_len]`.
    name_start: u32,
    name_len: u32,
}

/// What the index holds about one entry: a view into the index.
#[derive(Clone, Copy)]
pub struct Placement<'a> {
    index: &'a Core,
    slot: &'a Slot,
    number: u32,
}

impl fmt::Debug for Placement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("id", &self.id())
            .field("typology", &self.typology())
            .field("location", &self.location())
            .field("insee_code", &self.insee_code())
            .finish_non_exhaustive()
    }
}

impl<'a> Placement<'a> {
    pub fn id(&self) -> IdKey {
        self.slot.id
    }

    /// Where the entry lives in the index (see [`SpatialIndex::at`]).
    pub fn slot(&self) -> u32 {
        self.number
    }

    pub fn typology(&self) -> &'a str {
        &self.index.typologies[usize::from(self.slot.typology)]
    }

    pub fn location(&self) -> LonLat {
        self.slot.location
    }

    pub fn insee_code(&self) -> &'a str {
        std::str::from_utf8(&self.slot.insee_code).unwrap_or_default()
    }

    pub fn wheelchair(&self) -> Wheelchair {
        self.slot.wheelchair
    }

    /// The normalised OSM hours, when known.
    pub fn opening_hours(&self) -> Option<&'a str> {
        (self.slot.timetable != NO_TIMETABLE)
            .then(|| &*self.index.timetables[self.slot.timetable as usize])
    }

    /// The entry as a write would place it again (`None` for a commune code the slot could
    /// not have been given).
    pub fn to_entry(&self) -> Option<SpatialEntry> {
        Some(SpatialEntry {
            id: self.id().to_service_id(),
            location: self.location(),
            insee_code: InseeCode::parse(self.insee_code()).ok()?,
            attributes: Attributes {
                wheelchair: self.wheelchair(),
                opening_hours: self.opening_hours().map(str::to_owned),
                folded_name: self.folded_name().to_owned(),
            },
        })
    }

    /// The folded name.
    pub fn folded_name(&self) -> &'a str {
        let start = self.slot.name_start as usize;
        self.index
            .names
            .get(start..start + self.slot.name_len as usize)
            .unwrap_or_default()
    }
}

/// One answer of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: IdKey,
    /// Where the entry lives in the index (see [`SpatialIndex::at`]).
    pub slot: u32,
    pub location: LonLat,
    /// Great-circle distance from the query point, in metres; 0.0 for a box query, which has no
    /// query point.
    pub distance_m: f64,
}

/// A tree element: the entry's unit vector with its slot number.
type Item = GeomWithData<[f64; 3], u32>;

/// The published entries in memory, for nearest, radius and box queries filtered by typology.
///
/// One R-tree per typology keeps a filtered query from walking through entries of other
/// typologies; a query over several typologies (a theme) merges the trees' answers.
///
/// Cloned whole only when a [`SpatialIndex`] folds its recent changes into a new base.
#[derive(Default, Clone)]
struct Core {
    /// Added to this core's slot numbers in the hits and placements it hands out: 0 for a base,
    /// [`DELTA_SLOTS`] for the changes held beside it.
    offset: u32,
    slots: Vec<Slot>,
    /// Slots freed by removals, reused by the next insertions.
    vacant: Vec<u32>,
    by_id: FxHashMap<IdKey, u32>,
    /// Typology codes by number, and their trees (empty ones included).
    typologies: Vec<Box<str>>,
    typology_numbers: FxHashMap<Box<str>, u16>,
    trees: Vec<RTree<Item>>,
    /// Every entry in one tree, for queries on all typologies (one tree to walk rather than
    /// 175): built after the index is in service (see [`SpatialIndex::complete`]), those
    /// queries walk the typologies' trees until then.
    all: std::sync::OnceLock<RTree<Item>>,
    /// Distinct timetables by number: a directory repeats a few thousand of them.
    timetables: Vec<Box<str>>,
    timetable_numbers: FxHashMap<Box<str>, u32>,
    /// Every folded name, end to end.
    names: String,
}

impl fmt::Debug for SpatialIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpatialIndex")
            .field("entries", &self.len())
            .field("pending_changes", &self.pending_changes())
            .finish_non_exhaustive()
    }
}

/// The number of `code` in `numbers`, adding it to `table` when new.
fn number_of<N: Copy + TryFrom<usize>>(
    table: &mut Vec<Box<str>>,
    numbers: &mut FxHashMap<Box<str>, N>,
    code: &str,
) -> Option<N> {
    if let Some(&n) = numbers.get(code) {
        return Some(n);
    }
    let n = N::try_from(table.len()).ok()?;
    table.push(code.into());
    numbers.insert(code.into(), n);
    Some(n)
}

impl Core {
    /// An index of `entries`, each with its typology code, every tree bulk loaded at once (far
    /// faster and better balanced than inserting one by one). An id given twice keeps its last
    /// placement.
    pub fn new(entries: impl IntoIterator<Item = (String, SpatialEntry)>) -> Self {
        let mut builder = Builder {
            dedupe: true,
            ..Builder::default()
        };
        for (typology, entry) in entries {
            let hours = entry.attributes.opening_hours.as_deref();
            // Test and caller data: an entry the slots cannot hold is left out, as `load` reports.
            let _ = builder.push(
                entry.id.as_str(),
                &typology,
                entry.location,
                entry.insee_code.as_str(),
                entry.attributes.wheelchair,
                hours,
                &entry.attributes.folded_name,
                false,
            );
        }
        builder.build()
    }

    /// Removes the entry `id` (withdrawn, unpublished, deleted) wherever it is; false when the
    /// index did not hold it. No typology is asked for: the index knows the entry's own, which a
    /// caller holding the entry's new content might not.
    pub fn remove(&mut self, id: &ServiceId) -> bool {
        let Some(key) = IdKey::of(id) else {
            return false;
        };
        let Some(number) = self.by_id.remove(&key) else {
            return false;
        };
        let slot = &mut self.slots[number as usize];
        if let Some(tree) = self.trees.get_mut(usize::from(slot.typology)) {
            tree.remove(&item(number, slot.location));
        }
        if let Some(all) = self.all.get_mut() {
            all.remove(&item(number, slot.location));
        }
        slot.typology = VACANT;
        self.vacant.push(number);
        true
    }

    /// Puts the entry where a committed write says it is: removes its old placement (another
    /// point, another typology) then inserts it. True when an older placement was replaced.
    pub fn upsert(&mut self, typology: &str, entry: SpatialEntry) -> bool {
        let replaced = self.remove(&entry.id);
        let (Some(id), Ok(insee_code), Some(typology)) = (
            IdKey::of(&entry.id),
            <[u8; INSEE_BYTES]>::try_from(entry.insee_code.as_str().as_bytes()),
            number_of(&mut self.typologies, &mut self.typology_numbers, typology),
        ) else {
            return replaced;
        };
        if usize::from(typology) == self.trees.len() {
            self.trees.push(RTree::new());
        }
        let timetable = entry
            .attributes
            .opening_hours
            .as_deref()
            .map_or(Some(NO_TIMETABLE), |h| {
                number_of(&mut self.timetables, &mut self.timetable_numbers, h)
            });
        let name_start = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push_str(&entry.attributes.folded_name);
        let slot = Slot {
            id,
            location: entry.location,
            insee_code,
            wheelchair: entry.attributes.wheelchair,
            typology,
            timetable: timetable.unwrap_or(NO_TIMETABLE),
            name_start,
            name_len: entry.attributes.folded_name.len() as u32,
        };
        let number = match self.vacant.pop() {
            Some(number) => {
                self.slots[number as usize] = slot;
                number
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.trees[usize::from(typology)].insert(item(number, entry.location));
        if let Some(all) = self.all.get_mut() {
            all.insert(item(number, entry.location));
        }
        self.by_id.insert(id, number);
        replaced
    }

    /// Builds the tree of all entries, which queries on every typology then use. CPU work of
    /// about a second for three million entries: run it off the async threads, once the index
    /// is in service. Does nothing when it is built already.
    pub fn complete(&self) {
        if self.all.get().is_some() {
            return;
        }
        let items: Vec<Item> = self
            .by_id
            .values()
            .map(|&number| item(number, self.slots[number as usize].location))
            .collect();
        // Another thread may have built it meanwhile: either tree is the same.
        let _ = self.all.set(RTree::bulk_load(items));
    }

    /// Whether [`SpatialIndex::complete`] has run.
    pub fn is_complete(&self) -> bool {
        self.all.get().is_some()
    }

    /// The number of entries held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Where the index has the entry `id`, if it holds it.
    pub fn get(&self, id: &IdKey) -> Option<Placement<'_>> {
        self.by_id.get(id).map(|&number| self.at(number))
    }

    /// The entry in slot `number`, as a [`Hit`] names it.
    fn at(&self, number: u32) -> Placement<'_> {
        Placement {
            index: self,
            slot: &self.slots[number as usize],
            number: self.offset + number,
        }
    }

    /// How many entries `typologies` hold (all when `None`), without visiting them.
    pub fn count(&self, typologies: Option<&[&str]>) -> usize {
        self.trees_for(typologies).iter().map(|t| t.size()).sum()
    }

    /// The typology codes that have at least one entry, in no particular order.
    pub fn typologies(&self) -> impl Iterator<Item = &str> {
        self.typologies
            .iter()
            .zip(&self.trees)
            .filter(|(_, tree)| tree.size() > 0)
            .map(|(code, _)| &**code)
    }

    /// The entry of `typology` nearest to `from` (`None` when it has none): one descent of one
    /// tree, without the k-way merge of [`SpatialIndex::nearest`], for coverage, which asks it
    /// millions of times. Of entries at the very same distance, any one may come.
    pub fn nearest_of_typology(&self, from: LonLat, typology: &str) -> Option<Hit> {
        let tree = &self.trees[usize::from(*self.typology_numbers.get(typology)?)];
        let query = unit_vector(from);
        let element = tree.nearest_neighbor(&query)?;
        let chord_2: f64 = element
            .geom()
            .iter()
            .zip(query)
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        Some(self.hit(element.data, metres_from_chord_2(chord_2)))
    }

    /// Every entry of `typologies` (all when `None`), in no particular order: for queries
    /// without a place.
    pub fn entries<'a>(
        &'a self,
        typologies: Option<&[&str]>,
    ) -> impl Iterator<Item = Placement<'a>> + 'a {
        self.trees_for(typologies)
            .into_iter()
            .flat_map(move |tree| tree.iter().map(move |element| self.at(element.data)))
    }

    /// Every entry of `typologies` (all when `None`) inside `bbox` (edges included), in no
    /// particular order: for territories, through their bounding box.
    pub fn entries_in<'a>(
        &'a self,
        bbox: BBox,
        typologies: Option<&[&str]>,
    ) -> impl Iterator<Item = Placement<'a>> + 'a {
        let envelope = enclosing_envelope(bbox);
        self.trees_for(typologies)
            .into_iter()
            .flat_map(move |tree| {
                envelope
                    .into_iter()
                    .flat_map(move |envelope| tree.locate_in_envelope(&envelope))
            })
            .map(move |element| self.at(element.data))
            .filter(move |placement| bbox.contains(placement.location()))
    }

    /// Every entry of `typologies` (all when `None`) within about `radius_m` metres of `from`,
    /// in no particular order: the trees' own test, a hair wider than the exact one, which the
    /// caller makes on the great-circle distance.
    pub fn around<'a>(
        &'a self,
        from: LonLat,
        radius_m: f64,
        typologies: Option<&[&str]>,
    ) -> impl Iterator<Item = Placement<'a>> + 'a {
        let query = unit_vector(from);
        let max_chord_2 = chord_2_for(radius_m) + UNIT_SLACK;
        let valid = !(radius_m.is_nan() || radius_m < 0.0);
        self.trees_for(typologies)
            .into_iter()
            .filter(move |_| valid)
            .flat_map(move |tree| tree.locate_within_distance(query, max_chord_2))
            .map(move |element| self.at(element.data))
    }

    /// The hit of local slot `slot`, numbered as the whole index numbers it.
    fn hit(&self, slot: u32, distance_m: f64) -> Hit {
        let entry = &self.slots[slot as usize];
        Hit {
            id: entry.id,
            slot: self.offset + slot,
            location: entry.location,
            distance_m,
        }
    }

    /// The trees a filter selects: all for `None`, each named typology once otherwise (unknown
    /// codes select nothing).
    fn trees_for(&self, typologies: Option<&[&str]>) -> Vec<&RTree<Item>> {
        match typologies {
            None => match self.all.get() {
                Some(all) => vec![all],
                None => self.trees.iter().filter(|t| t.size() > 0).collect(),
            },
            Some(codes) => {
                let mut seen = HashSet::with_capacity(codes.len());
                codes
                    .iter()
                    .filter_map(|code| self.typology_numbers.get(*code))
                    .filter(|n| seen.insert(**n))
                    .map(|&n| &self.trees[usize::from(n)])
                    .collect()
            }
        }
    }

    /// Every disagreement between the trees and the id table, in words: they must hold the same
    /// entries at the same places.
    fn internal_discrepancies(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut in_trees = 0;
        for (typology, tree) in self.trees.iter().enumerate() {
            in_trees += tree.size();
            for element in tree.iter() {
                let slot = self.slots.get(element.data as usize);
                let fits = slot.is_some_and(|slot| {
                    usize::from(slot.typology) == typology
                        && *element.geom() == unit_vector(slot.location)
                        && self.by_id.get(&slot.id) == Some(&element.data)
                });
                if !fits {
                    found.push(format!(
                        "index incohérent : l'emplacement {} de l'arbre « {} » ne correspond pas à sa fiche",
                        element.data, self.typologies[typology]
                    ));
                }
            }
        }
        if let Some(all) = self.all.get() {
            if all.size() != self.by_id.len() {
                found.push(format!(
                    "index incohérent : {} points dans l'arbre de toutes les fiches pour {} identifiants",
                    all.size(),
                    self.by_id.len()
                ));
            }
            for element in all.iter() {
                let fits = self.slots.get(element.data as usize).is_some_and(|slot| {
                    slot.typology != VACANT && *element.geom() == unit_vector(slot.location)
                });
                if !fits {
                    found.push(format!(
                        "index incohérent : l'emplacement {} de l'arbre de toutes les fiches ne correspond à aucune fiche",
                        element.data
                    ));
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

/// The slot numbers of the changes held beside the base start here; below are the base's own.
const DELTA_SLOTS: u32 = 1 << 31;

/// Past this many changed entries beside the base, [`SpatialIndex::needs_compaction`] says to
/// fold them into a new base: each write copies the changes (not the base), so they must stay
/// few for a write to stay cheap, while folding copies the base (about a second for three
/// million entries, off the write path).
const COMPACT_AT: usize = 8_192;

/// The published entries in memory, for nearest, radius and box queries filtered by typology.
///
/// A large immutable base shared by every version of the index (an `Arc`, never copied by a
/// write) and, beside it, the entries written since it was built: the base's slots they
/// replaced or removed are hidden, their new placements live in a small index of their own.
/// A write therefore copies only that small part; queries merge both; once the changes grow
/// past [`COMPACT_AT`], [`SpatialIndex::compacted`] folds them into a new base.
#[derive(Clone)]
pub struct SpatialIndex {
    base: Arc<Core>,
    /// Base slots whose entry was removed or replaced since the base was built.
    hidden: FxHashSet<u32>,
    /// The entries written since the base was built, numbered from [`DELTA_SLOTS`].
    delta: Core,
}

impl Default for SpatialIndex {
    fn default() -> Self {
        SpatialIndex::from_core(Core::default())
    }
}

impl SpatialIndex {
    /// An index of `entries`, each with its typology code, every tree bulk loaded at once (far
    /// faster and better balanced than inserting one by one). An id given twice keeps its last
    /// placement.
    pub fn new(entries: impl IntoIterator<Item = (String, SpatialEntry)>) -> Self {
        SpatialIndex::from_core(Core::new(entries))
    }

    fn from_core(base: Core) -> Self {
        SpatialIndex {
            base: Arc::new(base),
            hidden: FxHashSet::default(),
            delta: Core {
                offset: DELTA_SLOTS,
                ..Core::default()
            },
        }
    }

    /// Adds an entry. An id the index already holds is moved rather than duplicated, exactly as
    /// [`SpatialIndex::upsert`] does: the index never holds one id twice.
    pub fn insert(&mut self, typology: &str, entry: SpatialEntry) {
        self.upsert(typology, entry);
    }

    /// Removes the entry `id` (withdrawn, unpublished, deleted) wherever it is; false when the
    /// index did not hold it. No typology is asked for: the index knows the entry's own.
    pub fn remove(&mut self, id: &ServiceId) -> bool {
        if self.delta.remove(id) {
            // An entry of the delta is never visible in the base too: its base slot is hidden.
            return true;
        }
        let Some(key) = IdKey::of(id) else {
            return false;
        };
        match self.base.by_id.get(&key) {
            Some(&number) => self.hidden.insert(number),
            None => false,
        }
    }

    /// Puts the entry where a committed write says it is: removes its old placement (another
    /// point, another typology) then inserts it. True when an older placement was replaced.
    pub fn upsert(&mut self, typology: &str, entry: SpatialEntry) -> bool {
        let replaced = self.remove(&entry.id);
        self.delta.upsert(typology, entry);
        replaced
    }

    /// Whether the index holds the entry exactly so already (a write that changed none of the
    /// facts it keeps, a description say, need not touch it).
    pub fn holds(&self, typology: &str, entry: &SpatialEntry) -> bool {
        let Some(placement) = IdKey::of(&entry.id).and_then(|key| self.get(&key)) else {
            return false;
        };
        placement.typology() == typology && placement.to_entry().as_ref() == Some(entry)
    }

    /// How many entries were written since the base was built (each copied by the next write).
    pub fn pending_changes(&self) -> usize {
        self.hidden.len() + self.delta.len()
    }

    /// Whether the changes beside the base have grown enough to fold them into it.
    pub fn needs_compaction(&self) -> bool {
        self.pending_changes() > COMPACT_AT
    }

    /// The same entries with the changes folded into a new base, its trees bulk loaded anew
    /// from every entry (rstar 0.12's bulk loading may leave leaves at unequal depths, on
    /// which a later insertion panics: the bases are never inserted into). CPU work of a
    /// second or two for three million entries: call it off the async threads, then
    /// [`SpatialIndex::complete`] the result; queries go on reading `self` meanwhile.
    pub fn compacted(&self) -> SpatialIndex {
        let mut builder = Builder::for_unique_ids(self.len());
        let base = self
            .base
            .slots
            .iter()
            .enumerate()
            .filter(|(number, slot)| {
                slot.typology != VACANT && !self.hidden.contains(&(*number as u32))
            })
            .map(|(number, _)| self.base.at(number as u32));
        let delta = self
            .delta
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.typology != VACANT)
            .map(|(number, _)| self.delta.at(number as u32));
        for placement in base.chain(delta) {
            // Each was pushed once already, into the index it comes from.
            let _ = builder.push(
                placement.id().as_str(),
                placement.typology(),
                placement.location(),
                placement.insee_code(),
                placement.wheelchair(),
                placement.opening_hours(),
                placement.folded_name(),
                false,
            );
        }
        SpatialIndex::from_core(builder.build())
    }

    /// Builds the tree of all entries of the base, which queries on every typology then use.
    /// CPU work of about a second for three million entries: run it off the async threads, once
    /// the index is in service. Does nothing when it is built already.
    pub fn complete(&self) {
        self.base.complete();
    }

    /// Whether [`SpatialIndex::complete`] has run.
    pub fn is_complete(&self) -> bool {
        self.base.is_complete()
    }

    /// The number of entries held.
    pub fn len(&self) -> usize {
        self.base.len() - self.hidden.len() + self.delta.len()
    }

    /// Whether the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the index has the entry `id`, if it holds it.
    pub fn get(&self, id: &IdKey) -> Option<Placement<'_>> {
        if let Some(placement) = self.delta.get(id) {
            return Some(placement);
        }
        self.base
            .get(id)
            .filter(|placement| !self.hidden.contains(&placement.slot()))
    }

    /// The entry in slot `number`, as a [`Hit`] names it.
    pub fn at(&self, number: u32) -> Placement<'_> {
        if number >= DELTA_SLOTS {
            self.delta.at(number - DELTA_SLOTS)
        } else {
            self.base.at(number)
        }
    }

    fn hit(&self, number: u32, distance_m: f64) -> Hit {
        let placement = self.at(number);
        Hit {
            id: placement.id(),
            slot: number,
            location: placement.location(),
            distance_m,
        }
    }

    fn head(&self, number: u32, chord_2: f64, cursor: usize) -> Head {
        Head {
            chord_2,
            id: self.at(number).id(),
            cursor,
            slot: number,
        }
    }

    /// Whether the base slot of `placement` is hidden (a delta slot never is).
    fn visible(&self, placement: &Placement<'_>) -> bool {
        self.hidden.is_empty() || !self.hidden.contains(&placement.slot())
    }

    /// How many entries `typologies` hold (all when `None`), without visiting them.
    pub fn count(&self, typologies: Option<&[&str]>) -> usize {
        let hidden = if self.hidden.is_empty() {
            0
        } else {
            let wanted: Option<HashSet<&str>> = typologies.map(|t| t.iter().copied().collect());
            self.hidden
                .iter()
                .filter(|&&number| {
                    wanted
                        .as_ref()
                        .is_none_or(|w| w.contains(self.base.at(number).typology()))
                })
                .count()
        };
        self.base.count(typologies) - hidden + self.delta.count(typologies)
    }

    /// The typology codes that have at least one entry, in no particular order.
    pub fn typologies(&self) -> impl Iterator<Item = &str> {
        let mut hidden: FxHashMap<&str, usize> = FxHashMap::default();
        for &number in &self.hidden {
            *hidden.entry(self.base.at(number).typology()).or_default() += 1;
        }
        let mut codes: Vec<&str> = self
            .base
            .typologies()
            .filter(|code| self.base.count(Some(&[code])) > hidden.get(code).copied().unwrap_or(0))
            .chain(self.delta.typologies())
            .collect();
        codes.sort_unstable();
        codes.dedup();
        codes.into_iter()
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
        let hidden = &self.hidden;
        let mut cursors: Vec<TreeWalk<'a>> = Vec::new();
        for tree in self.base.trees_for(typologies) {
            let walk = tree
                .nearest_neighbor_iter_with_distance_2(&query)
                .map(|(element, chord_2)| (element.data, chord_2));
            if hidden.is_empty() {
                cursors.push(Box::new(walk));
            } else {
                cursors.push(Box::new(
                    walk.filter(move |(number, _)| !hidden.contains(number)),
                ));
            }
        }
        for tree in self.delta.trees_for(typologies) {
            cursors.push(Box::new(
                tree.nearest_neighbor_iter_with_distance_2(&query)
                    .map(|(element, chord_2)| (DELTA_SLOTS + element.data, chord_2)),
            ));
        }
        let mut heads = BinaryHeap::with_capacity(cursors.len());
        for (cursor, iter) in cursors.iter_mut().enumerate() {
            if let Some((number, chord_2)) = iter.next() {
                heads.push(self.head(number, chord_2, cursor));
            }
        }
        NearestIter {
            index: self,
            cursors,
            heads,
        }
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

    /// The entry of `typology` nearest to `from` (`None` when it has none): one descent of one
    /// tree per part, without the k-way merge of [`SpatialIndex::nearest`], for coverage, which
    /// asks it millions of times. Of entries at the very same distance, any one may come.
    pub fn nearest_of_typology(&self, from: LonLat, typology: &str) -> Option<Hit> {
        let base = if self.hidden.is_empty() {
            self.base.nearest_of_typology(from, typology)
        } else {
            let tree = &self.base.trees[usize::from(*self.base.typology_numbers.get(typology)?)];
            tree.nearest_neighbor_iter_with_distance_2(&unit_vector(from))
                .find(|(element, _)| !self.hidden.contains(&element.data))
                .map(|(element, chord_2)| self.hit(element.data, metres_from_chord_2(chord_2)))
        };
        let delta = self.delta.nearest_of_typology(from, typology);
        match (base, delta) {
            (Some(b), Some(d)) => Some(if d.distance_m < b.distance_m { d } else { b }),
            (b, d) => b.or(d),
        }
    }

    /// Every entry of `typologies` (all when `None`), in no particular order: for queries
    /// without a place.
    pub fn entries<'a>(
        &'a self,
        typologies: Option<&[&str]>,
    ) -> impl Iterator<Item = Placement<'a>> + 'a {
        self.base
            .entries(typologies)
            .filter(move |placement| self.visible(placement))
            .chain(self.delta.entries(typologies))
    }

    /// Every entry of `typologies` (all when `None`) inside `bbox` (edges included), in no
    /// particular order: for territories, through their bounding box.
    pub fn entries_in<'a>(
        &'a self,
        bbox: BBox,
        typologies: Option<&[&str]>,
    ) -> impl Iterator<Item = Placement<'a>> + 'a {
        self.base
            .entries_in(bbox, typologies)
            .filter(move |placement| self.visible(placement))
            .chain(self.delta.entries_in(bbox, typologies))
    }

    /// Every entry of `typologies` (all when `None`) within about `radius_m` metres of `from`,
    /// in no particular order: the trees' own test, a hair wider than the exact one, which the
    /// caller makes on the great-circle distance.
    pub fn around<'a>(
        &'a self,
        from: LonLat,
        radius_m: f64,
        typologies: Option<&[&str]>,
    ) -> impl Iterator<Item = Placement<'a>> + 'a {
        self.base
            .around(from, radius_m, typologies)
            .filter(move |placement| self.visible(placement))
            .chain(self.delta.around(from, radius_m, typologies))
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
        let mut hits = Vec::new();
        for placement in self.around(from, radius_m, typologies) {
            let distance_m = from.distance_m(placement.location());
            if distance_m <= radius_m {
                hits.push(self.hit(placement.slot(), distance_m));
            }
        }
        hits.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m).then(a.id.cmp(&b.id)));
        hits
    }

    /// Every entry inside `bbox` (edges included, `BBox::contains`), among `typologies` (every
    /// typology when `None`), sorted by id so that the answer is stable; `distance_m` is 0.0.
    /// A box whose `min_lon` exceeds its `max_lon` holds nothing, as for `BBox::contains`.
    pub fn within_bbox(&self, bbox: BBox, typologies: Option<&[&str]>) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .entries_in(bbox, typologies)
            .map(|placement| Hit {
                id: placement.id(),
                slot: placement.slot(),
                location: placement.location(),
                distance_m: 0.0,
            })
            .collect();
        hits.sort_by_key(|hit| hit.id);
        hits
    }

    /// Every id the index holds.
    fn ids(&self) -> impl Iterator<Item = &IdKey> + '_ {
        self.base
            .by_id
            .iter()
            .filter(|(_, number)| !self.hidden.contains(number))
            .map(|(id, _)| id)
            .chain(self.delta.by_id.keys())
    }

    /// Every disagreement inside the index, in words: each part's trees and id table must hold
    /// the same entries at the same places, and no entry may be visible in both parts.
    fn internal_discrepancies(&self) -> Vec<String> {
        let mut found = self.base.internal_discrepancies();
        found.extend(self.delta.internal_discrepancies());
        for id in self.delta.by_id.keys() {
            if let Some(&number) = self.base.by_id.get(id) {
                if !self.hidden.contains(&number) {
                    found.push(format!(
                        "index incohérent : la fiche {id} est à la fois dans la base et dans les changements récents"
                    ));
                }
            }
        }
        found
    }
}

/// Gathers entries slot by slot, then builds the trees on every core.
#[derive(Default)]
struct Builder {
    index: Core,
    /// Each typology's elements, by typology number.
    items: Vec<Vec<Item>>,
    /// Whether an id may come twice (and ids are mapped as they come).
    dedupe: bool,
}

impl Builder {
    /// A builder for about `entries` entries read once each (a load from the database).
    fn for_unique_ids(entries: usize) -> Self {
        let mut builder = Builder::default();
        builder.index.slots.reserve(entries);
        builder.index.names.reserve(entries * 32);
        builder
    }

    /// Adds one entry; with `dedupe`, an id already pushed keeps the last placement (a load
    /// reads each id once: the database's primary key, so its ids are mapped in `build`, in
    /// parallel with the trees). Refuses what a slot cannot hold.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        id: &str,
        typology: &str,
        location: LonLat,
        insee_code: &str,
        wheelchair: Wheelchair,
        opening_hours: Option<&str>,
        name: &str,
        fold_name: bool,
    ) -> anyhow::Result<()> {
        let index = &mut self.index;
        let key = IdKey::new(id).ok_or_else(|| anyhow::anyhow!("identifiant « {id} » invalide"))?;
        let insee: [u8; INSEE_BYTES] = insee_code
            .as_bytes()
            .try_into()
            .map_err(|_| anyhow::anyhow!("fiche {id} : code commune « {insee_code} » invalide"))?;
        let typology = number_of(&mut index.typologies, &mut index.typology_numbers, typology)
            .ok_or_else(|| anyhow::anyhow!("trop de typologies"))?;
        let timetable = match opening_hours {
            None => NO_TIMETABLE,
            Some(hours) => number_of(&mut index.timetables, &mut index.timetable_numbers, hours)
                .ok_or_else(|| anyhow::anyhow!("trop d'horaires distincts"))?,
        };
        let name_start = u32::try_from(index.names.len())?;
        if fold_name {
            fold_into(&mut index.names, name);
        } else {
            index.names.push_str(name);
        }
        let name_len = u32::try_from(index.names.len())? - name_start;
        let number = u32::try_from(index.slots.len())?;
        let slot = Slot {
            id: key,
            location,
            insee_code: insee,
            wheelchair,
            typology,
            timetable,
            name_start,
            name_len,
        };
        if self.dedupe {
            if let Some(previous) = index.by_id.insert(key, number) {
                // The earlier placement goes: its slot stays vacant.
                let old = &mut index.slots[previous as usize];
                let old_items = &mut self.items[usize::from(old.typology)];
                old_items.retain(|item| item.data != previous);
                old.typology = VACANT;
                index.vacant.push(previous);
            }
        }
        index.slots.push(slot);
        if usize::from(typology) == self.items.len() {
            self.items.push(Vec::new());
        }
        self.items[usize::from(typology)].push(item(number, location));
        Ok(())
    }

    /// The index, its trees bulk loaded on every core, largest typologies first, while another
    /// thread maps the ids when `push` did not.
    fn build(self) -> Core {
        let Builder {
            mut index,
            items,
            dedupe,
        } = self;
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&t| std::cmp::Reverse(items[t].len()));
        let items: Vec<std::sync::Mutex<Vec<Item>>> =
            items.into_iter().map(std::sync::Mutex::new).collect();
        let next = AtomicUsize::new(0);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let slots = &index.slots;
        let (by_id, mut trees) = std::thread::scope(|scope| {
            let mapping = (!dedupe).then(|| {
                scope.spawn(|| {
                    let mut by_id =
                        FxHashMap::with_capacity_and_hasher(slots.len(), Default::default());
                    for (number, slot) in slots.iter().enumerate() {
                        by_id.insert(slot.id, number as u32);
                    }
                    by_id
                })
            });
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut built = Vec::new();
                        loop {
                            let at = next.fetch_add(1, AtomicOrdering::Relaxed);
                            let Some(&typology) = order.get(at) else {
                                break;
                            };
                            let elements = std::mem::take(
                                &mut *items[typology]
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                            );
                            built.push((typology, RTree::bulk_load(elements)));
                        }
                        built
                    })
                })
                .collect();
            let trees: Vec<(usize, RTree<Item>)> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect();
            (mapping.map(|m| m.join().unwrap_or_default()), trees)
        });
        if let Some(by_id) = by_id {
            index.by_id = by_id;
        }
        trees.sort_by_key(|(typology, _)| *typology);
        index.trees = trees.into_iter().map(|(_, tree)| tree).collect();
        while index.trees.len() < index.typologies.len() {
            index.trees.push(RTree::new());
        }
        index
    }
}

/// One tree's nearest-first walk as (slot number, squared chord) pairs, hidden slots skipped
/// (rstar does not export its iterator type, hence the box).
type TreeWalk<'a> = Box<dyn Iterator<Item = (u32, f64)> + 'a>;

/// The lazy nearest-first walk of [`SpatialIndex::nearest_iter`].
pub struct NearestIter<'a> {
    index: &'a SpatialIndex,
    cursors: Vec<TreeWalk<'a>>,
    heads: BinaryHeap<Head>,
}

impl Iterator for NearestIter<'_> {
    type Item = Hit;

    fn next(&mut self) -> Option<Hit> {
        let head = self.heads.pop()?;
        let found = self.index.hit(head.slot, metres_from_chord_2(head.chord_2));
        if let Some((slot, chord_2)) = self.cursors[head.cursor].next() {
            let next = self.index.head(slot, chord_2, head.cursor);
            self.heads.push(next);
        }
        Some(found)
    }
}

/// The next element of one tree in a k-way merge, ordered so that `BinaryHeap` pops the nearest.
struct Head {
    chord_2: f64,
    id: IdKey,
    cursor: usize,
    slot: u32,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    /// Reversed (nearer is greater) for the max-heap; ties go to the lower id, then the lower cursor.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .chord_2
            .total_cmp(&self.chord_2)
            .then_with(|| other.id.cmp(&self.id))
            .then_with(|| other.cursor.cmp(&self.cursor))
    }
}

/// The tree element of slot `number` at `location`.
fn item(number: u32, location: LonLat) -> Item {
    GeomWithData::new(unit_vector(location), number)
}

/// The point on the unit sphere at `p` (x towards lon 0 on the equator, z towards the north pole).
fn unit_vector(p: LonLat) -> [f64; 3] {
    let (lon, lat) = (p.lon.to_radians(), p.lat.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
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

/// Every published entry of the database, gathered in slots (trees not built yet). Read in one
/// statement, hence from one snapshot of the database.
async fn read_published(store: &Store) -> Result<Builder> {
    let expected = crate::services::store::count(store).await?;
    let builder = Builder::for_unique_ids(usize::try_from(expected).unwrap_or(0));
    crate::services::store::for_each_published(store, builder, |builder, row| {
        builder.push(
            row.id,
            row.typology,
            LonLat::new(row.lon, row.lat),
            row.insee_code,
            Wheelchair::from_stored(row.wheelchair),
            row.opening_hours,
            row.name,
            true,
        )
    })
    .await
}

/// The index of every published entry of the database, its trees built on blocking threads so
/// that the bulk load does not hold up the async workers.
///
/// A write committed after the read is not in the answer: install the index before accepting
/// writes, or replay them (`upsert` of an entry already placed is harmless).
pub async fn load(store: &Store) -> Result<SpatialIndex> {
    let started = std::time::Instant::now();
    let builder = read_published(store).await?;
    let read_ms = started.elapsed().as_millis() as u64;
    let index = tokio::task::spawn_blocking(move || builder.build())
        .await
        .map_err(anyhow::Error::from)?;
    tracing::debug!(
        read_ms,
        build_ms = started.elapsed().as_millis() as u64 - read_ms,
        "spatial index loaded"
    );
    Ok(SpatialIndex::from_core(index))
}

/// The differences between `index` and the published entries of the database, one sentence
/// each (empty when they agree): entries missing on either side, in another typology or commune,
/// moved by more than 1e-9°, and any incoherence inside the index itself. Past 100 sentences the
/// rest is summed up in a last one.
pub async fn check(store: &Store, index: &SpatialIndex) -> Result<Vec<String>> {
    let database = read_published(store).await?.index;
    let published: rustc_hash::FxHashSet<IdKey> = database.slots.iter().map(|s| s.id).collect();
    let mut found = index.internal_discrepancies();
    for number in 0..database.slots.len() as u32 {
        let stored = database.at(number);
        if stored.slot.typology == VACANT {
            continue;
        }
        let id = stored.id();
        let typology = stored.typology();
        match index.get(&id) {
            None => found.push(format!(
                "la fiche publiée {id} ({typology}) manque dans l'index"
            )),
            Some(placement) => {
                if placement.typology() != typology {
                    found.push(format!(
                        "la fiche {id} est de typologie « {typology} » en base mais « {} » dans l'index",
                        placement.typology()
                    ));
                }
                let (at, was) = (placement.location(), stored.location());
                if (at.lon - was.lon).abs() > MOVED_TOLERANCE_DEG
                    || (at.lat - was.lat).abs() > MOVED_TOLERANCE_DEG
                {
                    found.push(format!(
                        "la fiche {id} est en {}, {} en base mais en {}, {} dans l'index",
                        was.lon, was.lat, at.lon, at.lat
                    ));
                }
                if placement.insee_code() != stored.insee_code() {
                    found.push(format!(
                        "la fiche {id} est dans la commune {} en base mais {} dans l'index",
                        stored.insee_code(),
                        placement.insee_code()
                    ));
                }
            }
        }
    }
    let mut extra: Vec<&IdKey> = index.ids().filter(|id| !published.contains(*id)).collect();
    extra.sort();
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
        hits.iter().map(|h| h.id.to_service_id()).collect()
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

        // Before and after the tree of all entries is built: the same answers.
        for complete in [false, true] {
            if complete {
                index.complete();
            }
            assert_eq!(index.is_complete(), complete);
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
                        assert_eq!(index.at(hit.slot).id(), hit.id);
                        assert!(typologies.is_none_or(|ts| ts.contains(&placement.typology())));
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
    }

    #[test]
    fn radius_matches_brute_force() {
        let entries = random_entries();
        let index = SpatialIndex::new(entries.clone());

        // Before and after the tree of all entries is built: the same answers.
        for complete in [false, true] {
            if complete {
                index.complete();
            }
            assert_eq!(index.is_complete(), complete);
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
    }

    #[test]
    fn bbox_matches_brute_force() {
        let entries = random_entries();
        let index = SpatialIndex::new(entries.clone());

        // Before and after the tree of all entries is built: the same answers.
        for complete in [false, true] {
            if complete {
                index.complete();
            }
            assert_eq!(index.is_complete(), complete);
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
            both.iter()
                .map(|h| index.at(h.slot).typology())
                .collect::<Vec<_>>(),
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

    /// Writes land beside the base; folded into a new base they answer the same, and both
    /// answer as brute force over what the writes left.
    #[test]
    fn changes_beside_the_base_answer_as_brute_force_before_and_after_compaction() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut live: Vec<Option<(String, SpatialEntry)>> =
            random_entries().into_iter().map(Some).collect();
        let mut index = SpatialIndex::new(live.iter().flatten().cloned());
        index.complete();
        for _ in 0..(COMPACT_AT + 500) {
            let n = rng.gen_range(0..live.len() + 50);
            if n >= live.len() || rng.gen_bool(0.7) {
                // Created, moved or retyped.
                let n = n.min(live.len());
                let typology = TYPOLOGIES[rng.gen_range(0..TYPOLOGIES.len())].to_owned();
                let e = entry(n, rng.gen_range(-5.0..9.5), rng.gen_range(41.5..51.0));
                index.upsert(&typology, e.clone());
                if n == live.len() {
                    live.push(Some((typology, e)));
                } else {
                    live[n] = Some((typology, e));
                }
            } else {
                index.remove(&id(n));
                live[n] = None;
            }
        }
        assert!(index.needs_compaction());
        let compacted = index.compacted();
        assert_eq!(compacted.pending_changes(), 0);
        let expected: Vec<(String, SpatialEntry)> = live.into_iter().flatten().collect();
        for index in [&index, &compacted] {
            assert!(index.internal_discrepancies().is_empty());
            assert_eq!(index.len(), expected.len());
            for typology in [None, Some("piscine")] {
                let filter = typology.map(|t| vec![t]);
                assert_eq!(
                    index.count(filter.as_deref()),
                    expected
                        .iter()
                        .filter(|(t, _)| typology.is_none_or(|w| t == w))
                        .count()
                );
                for from in query_points() {
                    let hits = index.nearest(from, filter.as_deref(), 10, None);
                    let brute = brute_force(&expected, from, typology.map(|t| vec![t]).as_deref());
                    let got: Vec<f64> = hits.iter().map(|h| h.distance_m).collect();
                    let want: Vec<f64> = brute.iter().take(10).map(|h| h.1).collect();
                    assert_eq!(got.len(), want.len());
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
                    }
                    let one = index
                        .nearest_of_typology(from, "piscine")
                        .map(|h| h.distance_m);
                    let want_one = brute_force(&expected, from, Some(&["piscine"]))
                        .first()
                        .map(|h| h.1);
                    assert_eq!(one.is_some(), want_one.is_some());
                    if let (Some(a), Some(b)) = (one, want_one) {
                        assert!((a - b).abs() < 1e-6);
                    }
                }
            }
            let mut typologies: Vec<&str> = index.typologies().collect();
            typologies.sort_unstable();
            let mut want: Vec<&str> = expected.iter().map(|(t, _)| t.as_str()).collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(typologies, want);
        }
    }

    #[test]
    fn upsert_moves_and_retypes_remove_withdraws() {
        let from = LonLat::new(3.0, 45.0);
        let mut index = SpatialIndex::new([
            ("piscine".to_owned(), entry(1, 3.01, 45.0)),
            ("piscine".to_owned(), entry(2, 3.02, 45.0)),
        ]);
        // Writes keep the tree of all entries in step too.
        index.complete();
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
        assert!(index.get(&IdKey::of(&id(1)).unwrap()).is_none());
        assert!(index.internal_discrepancies().is_empty());
    }

    #[test]
    fn duplicate_ids_at_construction_keep_the_last() {
        let index = SpatialIndex::new([
            ("piscine".to_owned(), entry(1, 3.01, 45.0)),
            ("poste".to_owned(), entry(1, 3.02, 45.0)),
        ]);
        assert_eq!(index.len(), 1);
        let placement = index.get(&IdKey::of(&id(1)).unwrap()).unwrap();
        assert_eq!(placement.typology(), "poste");
        assert_eq!(placement.location(), LonLat::new(3.02, 45.0));
        assert!(index.internal_discrepancies().is_empty());
    }

    #[tokio::test]
    async fn load_and_check_against_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::db::Store::connect(dir.path().join("test.db").to_str().unwrap())
            .await
            .unwrap();
        crate::boot::prepare(&store, true).await.unwrap();
        let mut index = load(&store).await.unwrap();
        assert_eq!(index.len(), 1283);
        assert_eq!(check(&store, &index).await.unwrap(), Vec::<String>::new());

        let (moved,): (String,) = sqlx::query_as("SELECT id FROM services ORDER BY id LIMIT 1")
            .fetch_one(store.sqlite().unwrap())
            .await
            .unwrap();
        sqlx::query("UPDATE services SET lon = lon + 0.001 WHERE id = $1")
            .bind(&moved)
            .execute(store.sqlite().unwrap())
            .await
            .unwrap();
        let found = check(&store, &index).await.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains(&moved), "{found:?}");

        let (withdrawn,): (String,) =
            sqlx::query_as("SELECT id FROM services ORDER BY id DESC LIMIT 1")
                .fetch_one(store.sqlite().unwrap())
                .await
                .unwrap();
        sqlx::query("UPDATE services SET status = 'withdrawn' WHERE id = $1")
            .bind(&withdrawn)
            .execute(store.sqlite().unwrap())
            .await
            .unwrap();
        let found = check(&store, &index).await.unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().any(|f| f.contains(&withdrawn)), "{found:?}");

        // Replaying the two writes as the application will brings the index back in step.
        let (typology, lon, lat, insee): (String, f64, f64, String) = sqlx::query_as(
            "SELECT typology_code, lon, lat, insee_code FROM services WHERE id = $1",
        )
        .bind(&moved)
        .fetch_one(store.sqlite().unwrap())
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
        assert_eq!(check(&store, &index).await.unwrap(), Vec::<String>::new());
    }
}
