//! One search query over the in-memory indexes: place (nearest, radius), territory, typologies
//! and themes, words, opening hours and wheelchair access, ranked and paged by an opaque cursor.

use chrono::DateTime;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::hours::HoursEvaluator;
use rustc_hash::FxHashSet;

use super::spatial::{IdKey, Placement, SpatialIndex};
use crate::error::{Error, FieldError};
use crate::services::validate::COMMUNE_TOLERANCE_M;
use crate::services::{ServiceId, Wheelchair};
use crate::spatial::{in_france, BBox, LonLat};
use crate::taxonomy::Taxonomy;
use crate::territory::{Commune, InseeCode, Locator};

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// A territory to search in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Territory {
    Commune(InseeCode),
    Epci(String),
    Departement(String),
    Region(String),
}

impl Territory {
    /// `commune:63113`, `epci:246300701`, `departement:63`, `region:84`, checked against the reference.
    pub fn parse(value: &str, locator: &Locator) -> Result<Self, String> {
        let (kind, code) = value.split_once(':').ok_or_else(|| {
            format!(
                "« {value} » : attendu commune:CODE, epci:SIREN, departement:CODE ou region:CODE"
            )
        })?;
        let code = code.trim();
        let known = |test: &dyn Fn(&Commune) -> bool| locator.communes().any(test);
        let territory = match kind.trim() {
            "commune" => Territory::Commune(InseeCode::parse(code)?),
            "epci" => Territory::Epci(code.to_owned()),
            "departement" => Territory::Departement(code.to_ascii_uppercase()),
            "region" => Territory::Region(code.to_owned()),
            other => {
                return Err(format!(
                    "type de territoire inconnu « {other} » (commune, epci, departement, region)"
                ))
            }
        };
        if known(&|c| territory.contains(c)) {
            Ok(territory)
        } else {
            Err(format!("territoire inconnu « {value} »"))
        }
    }

    /// The text index's `place` token of the territory.
    pub fn token(&self) -> String {
        use super::text::territory_token;
        match self {
            Territory::Commune(code) => territory_token('c', code.as_str()),
            Territory::Epci(siren) => territory_token('e', siren),
            Territory::Departement(code) => territory_token('d', code),
            Territory::Region(code) => territory_token('r', code),
        }
    }

    pub fn contains(&self, commune: &Commune) -> bool {
        match self {
            Territory::Commune(code) => &commune.insee_code == code,
            Territory::Epci(siren) => commune.epci_siren.as_deref() == Some(siren.as_str()),
            Territory::Departement(code) => &commune.departement_code == code,
            Territory::Region(code) => &commune.region_code == code,
        }
    }
}

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Nearest first (the default with `near`).
    Distance,
    /// Best text match first, then nearest or by name.
    Relevance,
}

/// A parsed search: every part optional.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// The words asked for (`q`), matched by the text index.
    pub text: Option<String>,
    pub near: Option<LonLat>,
    pub radius_m: Option<f64>,
    pub territory: Option<Territory>,
    /// Typology codes (from `typology` and `theme`); `None` for all.
    pub typologies: Option<Vec<String>>,
    /// Only entries open at this moment (Europe/Paris).
    pub open_at: Option<DateTime<Tz>>,
    pub wheelchair: Option<Wheelchair>,
    pub sort: Sort,
    pub limit: usize,
    pub after: Option<Cursor>,
}

/// Where a page ends: the sort key of its last entry. Opaque to clients (hex of JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Negated text score (higher scores first).
    s: i64,
    /// Distance in metres, 0 without a place: its bits, since serde_json's parsing of a
    /// decimal may land one unit in the last place away, and the page's last entry would come
    /// again at the top of the next page.
    #[serde(with = "f64_bits")]
    d: f64,
    /// Folded name, empty when the order is by distance.
    n: String,
    id: String,
}

mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        u64::deserialize(deserializer).map(f64::from_bits)
    }
}

impl Cursor {
    pub fn encode(&self) -> String {
        hex::encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(value: &str) -> Result<Self, String> {
        hex::decode(value)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| "curseur invalide : reprenez celui de la réponse précédente".to_owned())
    }
}

/// An entry that matched with its place in the page order, borrowed from the index: a page is
/// cut from thousands of these, and only its last becomes a [`Cursor`].
#[derive(Clone, Copy)]
struct Candidate<'i> {
    /// Negated text score (higher scores first).
    s: i64,
    /// Distance in metres, 0 without a place.
    d: f64,
    /// Folded name, empty when the order is by distance.
    n: &'i str,
    id: IdKey,
    distance_m: Option<f64>,
}

impl Candidate<'_> {
    /// Page order: higher score, then nearer, then by name, then by id.
    fn order(&self, other: &Candidate<'_>) -> std::cmp::Ordering {
        self.s
            .cmp(&other.s)
            .then(self.d.total_cmp(&other.d))
            .then(self.n.cmp(other.n))
            .then(self.id.cmp(&other.id))
    }

    fn comes_after(&self, cursor: Option<&Cursor>) -> bool {
        cursor.is_none_or(|c| {
            self.s
                .cmp(&c.s)
                .then(self.d.total_cmp(&c.d))
                .then(self.n.cmp(c.n.as_str()))
                .then(self.id.as_str().cmp(c.id.as_str()))
                .is_gt()
        })
    }

    fn cursor(&self) -> Cursor {
        Cursor {
            s: self.s,
            d: self.d,
            n: self.n.to_owned(),
            id: self.id.to_string(),
        }
    }

    fn found(&self) -> Found {
        Found {
            id: self.id.to_service_id(),
            distance_m: self.distance_m,
        }
    }
}

/// One entry of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub id: ServiceId,
    pub distance_m: Option<f64>,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub found: Vec<Found>,
    /// Every entry matching the query, all pages together.
    pub total: usize,
    pub next: Option<Cursor>,
}

/// What a query needs besides the spatial index.
pub struct Context<'a> {
    pub locator: &'a Locator,
    pub hours: &'a HoursEvaluator,
    /// The entries matching the query's words with their text score (from the text index);
    /// `None` when the query has no words.
    pub text_hits: Option<&'a [(IdKey, f32)]>,
}

/// A territory made ready for testing entries: its communes' codes, and the box that holds them.
struct TerritoryFilter<'a> {
    codes: FxHashSet<&'a str>,
    /// Every commune's box, widened by the distance an entry may lie outside its commune.
    bbox: Option<BBox>,
}

impl<'a> TerritoryFilter<'a> {
    fn new(territory: &Territory, locator: &'a Locator) -> Self {
        let mut codes = FxHashSet::default();
        let mut bbox: Option<BBox> = None;
        for commune in locator.communes().filter(|c| territory.contains(c)) {
            codes.insert(commune.insee_code.as_str());
            let b = commune.bbox;
            bbox = Some(match bbox {
                None => b,
                Some(a) => BBox::new(
                    a.min_lon.min(b.min_lon),
                    a.min_lat.min(b.min_lat),
                    a.max_lon.max(b.max_lon),
                    a.max_lat.max(b.max_lat),
                ),
            });
        }
        Self {
            codes,
            // Validation keeps every entry within this distance of its commune; the slack
            // covers the rounding of boxes.
            bbox: bbox.map(|b| b.expanded_m(COMMUNE_TOLERANCE_M + 100.0)),
        }
    }
}

impl Context<'_> {
    /// The rank of a text score: positive, higher for better matches (1 without words).
    fn rank(score: f32) -> u32 {
        1 + (score.max(0.0) * 1000.0) as u32
    }

    /// Whether an entry passes the filters other than typology and text.
    fn passes(
        &self,
        query: &SearchQuery,
        territory: Option<&TerritoryFilter>,
        placement: Placement<'_>,
    ) -> bool {
        territory.is_none_or(|t| t.codes.contains(placement.insee_code()))
            && query
                .wheelchair
                .is_none_or(|wanted| placement.wheelchair() == wanted)
            && query.open_at.is_none_or(|at| {
                self.hours.state_at(placement.opening_hours(), at).open == Some(true)
            })
    }

    /// The entries that may match, before the filters: the text hits when there are words (far
    /// fewer than the entries), else those around the query's point, else the entries of the
    /// territory's box, else every entry of the typologies.
    fn candidates<'i>(
        &self,
        index: &'i SpatialIndex,
        query: &SearchQuery,
        typologies: Option<&[&str]>,
        territory: Option<&TerritoryFilter>,
    ) -> Box<dyn Iterator<Item = (Placement<'i>, u32)> + 'i> {
        if let Some(hits) = self.text_hits {
            let found: Vec<(Placement<'i>, u32)> = hits
                .iter()
                .filter_map(|(id, score)| Some((index.get(id)?, Self::rank(*score))))
                .filter(|(p, _)| typologies.is_none_or(|t| t.contains(&p.typology())))
                .collect();
            return Box::new(found.into_iter());
        }
        let unranked = |p: Placement<'i>| (p, 1);
        if let (Some(from), Some(radius_m)) = (query.near, query.radius_m) {
            return Box::new(index.around(from, radius_m, typologies).map(unranked));
        }
        match territory.map(|t| t.bbox) {
            Some(Some(bbox)) => Box::new(index.entries_in(bbox, typologies).map(unranked)),
            // A territory without communes holds nothing.
            Some(None) => Box::new(std::iter::empty()),
            None => Box::new(index.entries(typologies).map(unranked)),
        }
    }

    /// Runs the query. CPU work: call it off the async threads.
    pub fn run<'i>(&self, index: &'i SpatialIndex, query: &SearchQuery) -> Page {
        let typologies: Option<Vec<&str>> = query
            .typologies
            .as_ref()
            .map(|t| t.iter().map(String::as_str).collect());
        let typologies = typologies.as_deref();
        let territory = query
            .territory
            .as_ref()
            .map(|t| TerritoryFilter::new(t, self.locator));
        let territory = territory.as_ref();
        let mut total = 0;
        let mut found = Vec::with_capacity(query.limit);
        let mut last: Option<Candidate<'i>> = None;
        let mut more = false;

        match (query.near, query.sort) {
            // Without words, streamed from the trees; with words, the text hits are fewer.
            (Some(from), Sort::Distance)
                if self.text_hits.is_none() && query.radius_m.is_none() =>
            {
                // Streamed nearest first: stops at the radius, skips to the cursor.
                for hit in index.nearest_iter(from, typologies) {
                    if query.radius_m.is_some_and(|r| hit.distance_m > r) {
                        break;
                    }
                    if !self.passes(query, territory, index.at(hit.slot)) {
                        continue;
                    }
                    total += 1;
                    let candidate = Candidate {
                        s: 0,
                        d: hit.distance_m,
                        n: "",
                        id: hit.id,
                        distance_m: Some(hit.distance_m),
                    };
                    if !candidate.comes_after(query.after.as_ref()) {
                        continue;
                    }
                    if found.len() < query.limit {
                        last = Some(candidate);
                        found.push(candidate.found());
                    } else {
                        more = true;
                        if query.radius_m.is_none() {
                            // Without a radius the rest is counted by a plain scan, cheaper than
                            // ordering every entry by distance.
                            total = self.count(index, query, typologies, territory);
                            break;
                        }
                    }
                }
            }
            _ => {
                let by_distance = query.near.is_some() && query.sort == Sort::Distance;
                let candidate = |(placement, score): (Placement<'i>, u32)| {
                    let distance_m = query.near.map(|from| from.distance_m(placement.location()));
                    if let (Some(d), Some(r)) = (distance_m, query.radius_m) {
                        if d > r {
                            return None;
                        }
                    }
                    let id = placement.id();
                    if !self.passes(query, territory, placement) {
                        return None;
                    }
                    Some(Candidate {
                        s: if by_distance { 0 } else { -i64::from(score) },
                        d: distance_m.unwrap_or(0.0),
                        n: if by_distance {
                            ""
                        } else {
                            placement.folded_name()
                        },
                        id,
                        distance_m,
                    })
                };
                let mut ranked: Vec<Candidate<'i>> = self
                    .candidates(index, query, typologies, territory)
                    .filter_map(candidate)
                    .collect();
                total = ranked.len();
                ranked.retain(|c| c.comes_after(query.after.as_ref()));
                more = ranked.len() > query.limit;
                // Only the page is put in order: the rest is split off around it first.
                if ranked.len() > query.limit {
                    ranked.select_nth_unstable_by(query.limit, |a, b| a.order(b));
                    ranked.truncate(query.limit);
                }
                ranked.sort_unstable_by(|a, b| a.order(b));
                for candidate in &ranked {
                    found.push(candidate.found());
                }
                last = ranked.last().copied();
            }
        }
        Page {
            found,
            total,
            next: if more { last.map(|c| c.cursor()) } else { None },
        }
    }

    fn count(
        &self,
        index: &SpatialIndex,
        query: &SearchQuery,
        typologies: Option<&[&str]>,
        territory: Option<&TerritoryFilter>,
    ) -> usize {
        let filtered = territory.is_some()
            || query.wheelchair.is_some()
            || query.open_at.is_some()
            || self.text_hits.is_some();
        if !filtered {
            // Only typologies: the trees know their sizes.
            return index.count(typologies);
        }
        self.candidates(index, query, typologies, territory)
            .filter(|(p, _)| self.passes(query, territory, *p))
            .count()
    }
}

/// Longest text query, in characters and in words: each word is a term of the text index's
/// query (with its fuzzy variants), so the cost of a query grows with them; a search box
/// never needs more.
pub const MAX_QUERY_CHARS: usize = 200;
pub const MAX_QUERY_WORDS: usize = 16;

/// Refuses a text query past `MAX_QUERY_CHARS` or `MAX_QUERY_WORDS`, saying why.
pub fn check_query_length(q: &str) -> Result<(), String> {
    let words = q.split_whitespace().count();
    if q.chars().count() > MAX_QUERY_CHARS || words > MAX_QUERY_WORDS {
        return Err(format!(
            "recherche trop longue ({words} mots) : {MAX_QUERY_WORDS} mots et \
             {MAX_QUERY_CHARS} caractères au plus / query too long"
        ));
    }
    Ok(())
}

/// The raw parameters of `GET /api/v1/services`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words to find in the name, the typology (labels, synonyms) or the commune.
    pub q: Option<String>,
    /// `lon,lat` (WGS84) to search around: nearest first.
    pub near: Option<String>,
    /// With `near`: only entries within this many metres.
    pub radius: Option<f64>,
    /// A territory: `commune:63113`, `epci:246300701`, `departement:63`, `region:84`.
    #[serde(rename = "in")]
    #[param(rename = "in")]
    pub within: Option<String>,
    /// A theme code.
    pub theme: Option<String>,
    /// One or several typology codes, comma-separated.
    pub typology: Option<String>,
    /// `true`: only entries open now (Europe/Paris, French public holidays).
    pub open_now: Option<bool>,
    /// Only entries open at this ISO date-time (Europe/Paris when no offset is given).
    pub open_at: Option<String>,
    /// `yes`, `limited` or `no`.
    pub wheelchair: Option<String>,
    /// `distance` (default with `near`) or `relevance`.
    pub sort: Option<String>,
    /// Page size, default 20, at most 100.
    pub limit: Option<usize>,
    /// The `next` cursor of the previous page.
    pub cursor: Option<String>,
}

impl SearchParams {
    /// Parses every parameter and reports every wrong one by name.
    pub fn parse(
        &self,
        taxonomy: &Taxonomy,
        locator: &Locator,
        now: DateTime<Tz>,
    ) -> Result<SearchQuery, Error> {
        let mut errors = Vec::new();
        let mut wrong = |field: &str, message: String| errors.push(FieldError::new(field, message));

        let near = self
            .near
            .as_deref()
            .and_then(|value| match LonLat::parse_pair(value) {
                Some(p) if in_france(p) => Some(p),
                Some(p) => {
                    wrong(
                        "near",
                        format!(
                            "le point ({}, {}) est hors de France (lon,lat attendu)",
                            p.lon, p.lat
                        ),
                    );
                    None
                }
                None => {
                    wrong(
                        "near",
                        format!(
                            "« {value} » : attendu lon,lat en degrés décimaux, ex. 3.0863,45.7797"
                        ),
                    );
                    None
                }
            });
        let radius_m = match self.radius {
            Some(r) if !(r.is_finite() && r > 0.0 && r <= 1_000_000.0) => {
                wrong(
                    "radius",
                    "rayon en mètres attendu, entre 0 et 1 000 000".into(),
                );
                None
            }
            Some(_) if self.near.is_none() => {
                wrong("radius", "un rayon demande aussi near=lon,lat".into());
                None
            }
            other => other,
        };
        let territory = self.within.as_deref().and_then(|v| {
            Territory::parse(v, locator)
                .map_err(|m| wrong("in", m))
                .ok()
        });
        let mut typologies: Option<Vec<String>> = None;
        if let Some(theme) = self.theme.as_deref() {
            if taxonomy.theme(theme).is_some() {
                typologies = Some(
                    taxonomy
                        .typologies
                        .iter()
                        .filter(|t| t.theme == theme)
                        .map(|t| t.code.clone())
                        .collect(),
                );
            } else {
                wrong("theme", format!("thème inconnu « {theme} »"));
            }
        }
        if let Some(list) = self.typology.as_deref() {
            let mut codes = Vec::new();
            for code in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if taxonomy.typology(code).is_some() {
                    codes.push(code.to_owned());
                } else {
                    wrong("typology", format!("typologie inconnue « {code} »"));
                }
            }
            typologies = Some(match typologies {
                // A theme and typologies together: the typologies of that theme.
                Some(of_theme) => codes.into_iter().filter(|c| of_theme.contains(c)).collect(),
                None => codes,
            });
        }
        let open_at = match (self.open_now, self.open_at.as_deref()) {
            (_, Some(value)) => super::hours::parse_open_at(value)
                .map_err(|m| wrong("open_at", m))
                .ok(),
            (Some(true), None) => Some(now),
            _ => None,
        };
        let wheelchair = self.wheelchair.as_deref().and_then(|v| {
            Wheelchair::parse(v)
                .map_err(|m| wrong("wheelchair", m))
                .ok()
        });
        let sort = match self.sort.as_deref() {
            None | Some("distance") => {
                if near.is_some() {
                    Sort::Distance
                } else {
                    Sort::Relevance
                }
            }
            Some("relevance") => Sort::Relevance,
            Some(other) => {
                wrong("sort", format!("« {other} » : distance ou relevance"));
                Sort::Relevance
            }
        };
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                wrong("limit", format!("entre 1 et {MAX_LIMIT}"));
                DEFAULT_LIMIT
            }
        };
        let after = self
            .cursor
            .as_deref()
            .and_then(|c| Cursor::decode(c).map_err(|m| wrong("cursor", m)).ok());
        let text = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        if let Some(Err(message)) = text.map(check_query_length) {
            wrong("q", message);
        }
        if !errors.is_empty() {
            return Err(Error::InvalidParameters(errors));
        }
        Ok(SearchQuery {
            text: text.map(str::to_owned),
            near,
            radius_m,
            territory,
            typologies,
            open_at,
            wheelchair,
            sort,
            limit,
            after,
        })
    }
}

/// The whole in-memory search state, swapped as one when the data changes.
pub struct SearchIndex {
    pub spatial: SpatialIndex,
    /// The data version the index was built at.
    pub version: Option<String>,
    /// The change-log row the index has applied (the data version as a number).
    pub position: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_keeps_its_distance_to_the_last_bit() {
        // A distance to a demo town hall whose decimal serde_json read back one unit in the
        // last place lower: the page's last entry came again at the top of the next page.
        for d in [102_477.270_081_406_81, 0.1, 1e-300, 6_371_008.8] {
            let cursor = Cursor {
                s: -3,
                d,
                n: "mairie".into(),
                id: "01m93pb6nq99b05m".into(),
            };
            assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }
    }
}
