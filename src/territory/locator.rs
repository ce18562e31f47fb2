//! Point-in-commune lookups over the communes held in memory (R-tree of boundary boxes, then exact test).

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use geo::Intersects;
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::RTree;

use super::{Commune, InseeCode};
use crate::spatial::LonLat;

type Envelope = GeomWithData<Rectangle<[f64; 2]>, usize>;

/// The territory reference in memory: every commune by code, and an R-tree to find which commune
/// holds a point.
#[derive(Debug, Default)]
pub struct Locator {
    communes: Vec<Arc<Commune>>,
    by_code: HashMap<InseeCode, usize>,
    /// Boxes of communes with a boundary: exact containment is decided by the polygon.
    boundaries: RTree<Envelope>,
    /// Boxes of communes without a boundary, for an approximate answer where none is loaded.
    boxes: RTree<Envelope>,
}

/// What the reference says about a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Located<'a> {
    /// Inside this commune's boundary.
    Inside(&'a Commune),
    /// No boundary covers the point; this commune's box holds it and its centre is the nearest.
    Approximately(&'a Commune),
    /// No commune of the reference is there.
    Nowhere,
}

impl Locator {
    pub fn new(communes: Vec<Commune>) -> Self {
        let communes: Vec<Arc<Commune>> = communes.into_iter().map(Arc::new).collect();
        let by_code = communes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.insee_code.clone(), i))
            .collect();
        let envelope = |i: usize, c: &Commune| {
            GeomWithData::new(
                Rectangle::from_corners(
                    [c.bbox.min_lon, c.bbox.min_lat],
                    [c.bbox.max_lon, c.bbox.max_lat],
                ),
                i,
            )
        };
        let (with, without): (Vec<_>, Vec<_>) = communes
            .iter()
            .enumerate()
            .partition(|(_, c)| c.boundary.is_some());
        Self {
            boundaries: RTree::bulk_load(with.into_iter().map(|(i, c)| envelope(i, c)).collect()),
            boxes: RTree::bulk_load(without.into_iter().map(|(i, c)| envelope(i, c)).collect()),
            communes,
            by_code,
        }
    }

    pub fn commune(&self, code: &InseeCode) -> Option<&Commune> {
        self.by_code.get(code).map(|&i| &*self.communes[i])
    }

    pub fn communes(&self) -> impl Iterator<Item = &Commune> {
        self.communes.iter().map(|c| &**c)
    }

    pub fn len(&self) -> usize {
        self.communes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.communes.is_empty()
    }

    pub fn has_boundaries(&self) -> bool {
        self.boundaries.size() > 0
    }

    pub fn locate(&self, p: LonLat) -> Located<'_> {
        let point = geo::Point::new(p.lon, p.lat);
        let query = rstar::AABB::from_point([p.lon, p.lat]);
        for candidate in self.boundaries.locate_in_envelope_intersecting(&query) {
            let commune = &*self.communes[candidate.data];
            if commune
                .boundary
                .as_ref()
                .is_some_and(|shape| shape.intersects(&point))
            {
                return Located::Inside(commune);
            }
        }
        self.boxes
            .locate_in_envelope_intersecting(&query)
            .map(|candidate| &*self.communes[candidate.data])
            .min_by(|a, b| {
                a.centroid
                    .distance_m(p)
                    .total_cmp(&b.centroid.distance_m(p))
            })
            .map_or(Located::Nowhere, Located::Approximately)
    }

    /// Distance in metres from `p` to the commune's boundary (0 inside), or to its box when it has
    /// no boundary. Used to tolerate points a few metres outside a simplified boundary.
    pub fn distance_to_commune_m(&self, commune: &Commune, p: LonLat) -> f64 {
        use geo::{Closest, ClosestPoint};
        let point = geo::Point::new(p.lon, p.lat);
        match &commune.boundary {
            Some(shape) if shape.intersects(&point) => 0.0,
            Some(shape) => match shape.closest_point(&point) {
                Closest::Intersection(_) => 0.0,
                Closest::SinglePoint(q) => p.distance_m(LonLat::new(q.x(), q.y())),
                Closest::Indeterminate => f64::INFINITY,
            },
            None => {
                let b = commune.bbox;
                let nearest = LonLat::new(
                    p.lon.clamp(b.min_lon, b.max_lon),
                    p.lat.clamp(b.min_lat, b.max_lat),
                );
                p.distance_m(nearest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::territory::ReferenceFiles;

    #[test]
    fn locates_points_in_auvergne_and_elsewhere() {
        let locator = Locator::new(ReferenceFiles::embedded().unwrap().communes);
        // Place de Jaude, Clermont-Ferrand.
        match locator.locate(LonLat::new(3.0826, 45.7772)) {
            Located::Inside(c) => assert_eq!(c.insee_code.as_str(), "63113"),
            other => panic!("{other:?}"),
        }
        // Lyon, outside the shipped boundaries: an approximate answer from the boxes.
        match locator.locate(LonLat::new(4.8357, 45.7640)) {
            Located::Approximately(c) => assert!(c.name.starts_with("Lyon"), "{}", c.name),
            other => panic!("{other:?}"),
        }
        assert_eq!(locator.locate(LonLat::new(-30.0, 40.0)), Located::Nowhere);
    }
}
