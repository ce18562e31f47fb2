//! Geographic primitives shared by every domain: WGS84 points, boxes, France's extents and true distances.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Mean Earth radius (IUGG), in metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A WGS84 point, longitude first as in GeoJSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LonLat {
    pub lon: f64,
    pub lat: f64,
}

impl LonLat {
    pub fn new(lon: f64, lat: f64) -> Self {
        Self { lon, lat }
    }

    /// `lon,lat` in decimal degrees, as URLs give points; `None` when it is not two finite numbers.
    pub fn parse_pair(value: &str) -> Option<LonLat> {
        let (lon, lat) = value.split_once(',')?;
        let (lon, lat): (f64, f64) = (lon.trim().parse().ok()?, lat.trim().parse().ok()?);
        (lon.is_finite() && lat.is_finite()).then_some(LonLat { lon, lat })
    }

    /// Great-circle distance in metres (haversine).
    pub fn distance_m(self, other: LonLat) -> f64 {
        let (phi1, phi2) = (self.lat.to_radians(), other.lat.to_radians());
        let dphi = phi2 - phi1;
        let dlambda = (other.lon - self.lon).to_radians();
        let a =
            (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
    }
}

/// A WGS84 bounding box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BBox {
    pub min_lon: f64,
    pub min_lat: f64,
    pub max_lon: f64,
    pub max_lat: f64,
}

impl BBox {
    pub const fn new(min_lon: f64, min_lat: f64, max_lon: f64, max_lat: f64) -> Self {
        Self {
            min_lon,
            min_lat,
            max_lon,
            max_lat,
        }
    }

    pub fn contains(&self, p: LonLat) -> bool {
        p.lon >= self.min_lon
            && p.lon <= self.max_lon
            && p.lat >= self.min_lat
            && p.lat <= self.max_lat
    }

    /// This box grown by `margin_m` metres on every side (approximate, fine for tolerances).
    pub fn expanded_m(&self, margin_m: f64) -> BBox {
        let dlat = margin_m / 111_320.0;
        let mid_lat = ((self.min_lat + self.max_lat) / 2.0).to_radians();
        let dlon = margin_m / (111_320.0 * mid_lat.cos().max(0.01));
        BBox::new(
            self.min_lon - dlon,
            self.min_lat - dlat,
            self.max_lon + dlon,
            self.max_lat + dlat,
        )
    }
}

/// The areas where an entry may lie: metropolitan France (with Corsica) and the overseas territories
/// whose communes are in the official geographic code.
pub const FRANCE_AREAS: &[(&str, BBox)] = &[
    ("France métropolitaine", BBox::new(-5.3, 41.3, 9.7, 51.2)),
    ("Guadeloupe", BBox::new(-61.9, 15.8, -60.9, 16.6)),
    ("Martinique", BBox::new(-61.3, 14.3, -60.7, 14.95)),
    ("Guyane", BBox::new(-54.7, 2.1, -51.5, 5.9)),
    ("La Réunion", BBox::new(55.2, -21.45, 55.9, -20.85)),
    ("Mayotte", BBox::new(44.9, -13.1, 45.35, -12.55)),
];

pub fn in_france(p: LonLat) -> bool {
    FRANCE_AREAS.iter().any(|(_, area)| area.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_known_distance() {
        // Clermont-Ferrand town hall to Riom town hall: about 12.8 km.
        let clermont = LonLat::new(3.0863, 45.7797);
        let riom = LonLat::new(3.1130, 45.8937);
        let d = clermont.distance_m(riom);
        assert!((d - 12_844.0).abs() < 5.0, "{d}");
    }

    #[test]
    fn france_areas() {
        assert!(in_france(LonLat::new(3.08, 45.77)));
        assert!(in_france(LonLat::new(55.45, -20.88)));
        assert!(in_france(LonLat::new(9.45, 42.7)));
        assert!(!in_france(LonLat::new(45.77, 3.08)));
        assert!(!in_france(LonLat::new(13.4, 52.5)));
    }
}
