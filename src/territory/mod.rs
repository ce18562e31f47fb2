//! The French territory reference: communes, EPCI, départements and régions, read from the
//! reference files, kept in the database, and held in memory for point-in-commune lookups.

pub mod geocoder;
pub mod locator;
pub mod places;
pub mod routes;
pub mod store;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use geo::{MultiPolygon, Polygon};
use serde::{Deserialize, Serialize};

use crate::spatial::{BBox, LonLat};

pub use locator::Locator;

/// A commune's official code (COG): five characters, digits except `2A`/`2B` for Corsica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InseeCode(String);

impl InseeCode {
    pub fn parse(value: &str) -> Result<Self, String> {
        let v = value.trim().to_ascii_uppercase();
        let bytes = v.as_bytes();
        let ok = bytes.len() == 5
            && (bytes[..2].iter().all(u8::is_ascii_digit)
                || &bytes[..2] == b"2A"
                || &bytes[..2] == b"2B")
            && bytes[2..].iter().all(u8::is_ascii_digit);
        if ok {
            Ok(Self(v))
        } else {
            Err(format!(
                "« {value} » n'est pas un code INSEE de commune (5 caractères, ex. 63113)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InseeCode {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<InseeCode> for String {
    fn from(code: InseeCode) -> String {
        code.0
    }
}

impl fmt::Display for InseeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Commune {
    pub insee_code: InseeCode,
    pub name: String,
    /// `COM` for a commune, `ARM` for a municipal arrondissement of Paris, Lyon or Marseille.
    pub kind: String,
    pub departement_code: String,
    pub region_code: String,
    pub epci_siren: Option<String>,
    pub population: i64,
    pub postcodes: Vec<String>,
    pub centroid: LonLat,
    pub bbox: BBox,
    pub boundary: Option<MultiPolygon<f64>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Region {
    pub code: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Departement {
    pub code: String,
    pub name: String,
    pub region_code: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Epci {
    pub siren: String,
    pub name: String,
    pub kind: String,
}

/// One row of `communes.csv`, as the reference files write it.
#[derive(Debug, Deserialize)]
struct CommuneRow {
    insee_code: String,
    name: String,
    kind: String,
    department_code: String,
    region_code: String,
    epci_siren: String,
    population: i64,
    postcodes: String,
    centroid_lon: f64,
    centroid_lat: f64,
    min_lon: f64,
    min_lat: f64,
    max_lon: f64,
    max_lat: f64,
}

/// The content of a territory reference directory: `communes.csv`, `epci.csv`, `departements.csv`,
/// `regions.csv`, and commune boundaries in any `*.geojson` FeatureCollection whose features carry
/// an `insee_code` property.
#[derive(Debug, Default)]
pub struct ReferenceFiles {
    pub regions: Vec<Region>,
    pub departements: Vec<Departement>,
    pub epcis: Vec<Epci>,
    pub communes: Vec<Commune>,
}

const EMBEDDED_REGIONS: &str = include_str!("../../data/territory/regions.csv");
const EMBEDDED_DEPARTEMENTS: &str = include_str!("../../data/territory/departements.csv");
const EMBEDDED_EPCI: &str = include_str!("../../data/territory/epci.csv");
const EMBEDDED_COMMUNES: &str = include_str!("../../data/territory/communes.csv");
const EMBEDDED_BOUNDARIES: &str = include_str!("../../data/territory/communes-auvergne.geojson");

impl ReferenceFiles {
    /// The reference shipped in the binary: every French commune, and the boundaries of the
    /// Auvergne demo territory (Allier, Cantal, Haute-Loire, Puy-de-Dôme).
    pub fn embedded() -> anyhow::Result<Self> {
        let mut files = Self::from_csv(
            EMBEDDED_REGIONS,
            EMBEDDED_DEPARTEMENTS,
            EMBEDDED_EPCI,
            EMBEDDED_COMMUNES,
        )?;
        files.attach_boundaries(EMBEDDED_BOUNDARIES, "communes-auvergne.geojson")?;
        Ok(files)
    }

    pub fn read_dir(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| anyhow::anyhow!("{} : {e}", dir.join(name).display()))
        };
        let mut files = Self::from_csv(
            &read("regions.csv")?,
            &read("departements.csv")?,
            &read("epci.csv")?,
            &read("communes.csv")?,
        )?;
        let mut geojson_files: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "geojson"))
            .collect();
        geojson_files.sort();
        for path in geojson_files {
            let text = std::fs::read_to_string(&path)?;
            files.attach_boundaries(&text, &path.display().to_string())?;
        }
        Ok(files)
    }

    fn from_csv(
        regions: &str,
        departements: &str,
        epci: &str,
        communes: &str,
    ) -> anyhow::Result<Self> {
        fn rows<T: serde::de::DeserializeOwned>(text: &str, name: &str) -> anyhow::Result<Vec<T>> {
            csv::Reader::from_reader(text.as_bytes())
                .deserialize()
                .enumerate()
                .map(|(i, r)| r.map_err(|e| anyhow::anyhow!("{name}, ligne {} : {e}", i + 2)))
                .collect()
        }
        let communes = rows::<CommuneRow>(communes, "communes.csv")?
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                let insee_code = InseeCode::parse(&row.insee_code)
                    .map_err(|e| anyhow::anyhow!("communes.csv, ligne {} : {e}", i + 2))?;
                Ok(Commune {
                    insee_code,
                    name: row.name,
                    kind: row.kind,
                    departement_code: row.department_code,
                    region_code: row.region_code,
                    epci_siren: Some(row.epci_siren).filter(|s| !s.is_empty()),
                    population: row.population,
                    postcodes: row
                        .postcodes
                        .split(';')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    centroid: LonLat::new(row.centroid_lon, row.centroid_lat),
                    bbox: BBox::new(row.min_lon, row.min_lat, row.max_lon, row.max_lat),
                    boundary: None,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            regions: rows(regions, "regions.csv")?,
            departements: rows(departements, "departements.csv")?,
            epcis: rows(epci, "epci.csv")?,
            communes,
        })
    }

    /// Sets the boundaries found in a GeoJSON FeatureCollection. Where two files give one commune
    /// a boundary, the finer one (more vertices) wins.
    fn attach_boundaries(&mut self, geojson_text: &str, name: &str) -> anyhow::Result<()> {
        let boundaries =
            parse_boundaries(geojson_text).map_err(|e| anyhow::anyhow!("{name} : {e}"))?;
        let index: HashMap<String, usize> = self
            .communes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.insee_code.to_string(), i))
            .collect();
        for (code, shape) in boundaries {
            if let Some(&i) = index.get(&code) {
                let commune = &mut self.communes[i];
                let finer = commune
                    .boundary
                    .as_ref()
                    .is_none_or(|old| vertex_count(old) < vertex_count(&shape));
                if finer {
                    commune.boundary = Some(shape);
                }
            }
        }
        Ok(())
    }
}

fn vertex_count(shape: &MultiPolygon<f64>) -> usize {
    use geo::CoordsIter;
    shape.coords_count()
}

/// `(insee_code, boundary)` pairs of a GeoJSON FeatureCollection of communes.
pub fn parse_boundaries(text: &str) -> anyhow::Result<Vec<(String, MultiPolygon<f64>)>> {
    let collection: geojson::FeatureCollection = text.parse()?;
    let mut out = Vec::with_capacity(collection.features.len());
    for feature in collection.features {
        let Some(code) = feature
            .property("insee_code")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
        else {
            continue;
        };
        let Some(geometry) = feature.geometry else {
            continue;
        };
        out.push((code, to_multipolygon(geometry)?));
    }
    Ok(out)
}

pub fn to_multipolygon(geometry: geojson::Geometry) -> anyhow::Result<MultiPolygon<f64>> {
    let shape: geo::Geometry<f64> = geometry.try_into()?;
    match shape {
        geo::Geometry::Polygon(p) => Ok(MultiPolygon(vec![p])),
        geo::Geometry::MultiPolygon(m) => Ok(m),
        other => anyhow::bail!("géométrie non surfacique : {other:?}"),
    }
}

pub fn boundary_to_geojson(shape: &MultiPolygon<f64>) -> String {
    let geometry = if shape.0.len() == 1 {
        geojson::Geometry::from(&shape.0[0] as &Polygon<f64>)
    } else {
        geojson::Geometry::from(shape)
    };
    geometry.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text is a code or a refusal, never a panic (a multibyte character among the
        /// first two bytes used to be sliced inside itself).
        #[test]
        fn insee_codes_parse_any_text(text in "\\PC{0,7}") {
            if let Ok(code) = InseeCode::parse(&text) {
                proptest::prop_assert_eq!(InseeCode::parse(code.as_str()), Ok(code));
            }
        }
    }

    #[test]
    fn insee_codes() {
        assert_eq!(InseeCode::parse("63113").unwrap().as_str(), "63113");
        assert_eq!(InseeCode::parse("2a004").unwrap().as_str(), "2A004");
        assert!(InseeCode::parse("6311").is_err());
        assert!(InseeCode::parse("2C004").is_err());
    }

    #[test]
    fn embedded_reference_has_every_commune_and_auvergne_boundaries() {
        let files = ReferenceFiles::embedded().unwrap();
        assert_eq!(files.communes.len(), 34_912);
        let with_boundary = files
            .communes
            .iter()
            .filter(|c| c.boundary.is_some())
            .count();
        assert_eq!(with_boundary, 1_283);
        assert!(files.epcis.len() > 1_200);
        assert_eq!(files.departements.len(), 101);
    }
}
