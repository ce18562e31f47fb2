//! Coordinate reference systems the layers are served in, and reprojection from the stored
//! WGS84 longitudes and latitudes, in pure Rust (proj4rs).
//!
//! Every French system here is based on GRS80 with a null shift from WGS84 (RGF93, RGAF09,
//! RGFG95, RGR92, RGM04), as PROJ itself takes them: reprojecting is a projection, no datum
//! change.

use std::sync::OnceLock;

use proj4rs::proj::Proj;

/// A CRS a client may ask for in `crs` or `bbox-crs`, or a download may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Crs {
    /// WGS84 longitude, latitude: the OGC API default and GeoJSON's only CRS.
    Crs84,
    /// WGS84 with EPSG's axis order: latitude first.
    Epsg4326,
    /// RGF93 / Lambert-93, the legal projection of metropolitan France.
    Lambert93,
    /// RGAF09 / UTM 20N (Guadeloupe, Martinique, Saint-Martin, Saint-Barthélemy).
    Antilles,
    /// RGFG95 / UTM 22N (Guyane).
    Guyane,
    /// RGR92 / UTM 40S (La Réunion).
    Reunion,
    /// RGM04 / UTM 38S (Mayotte).
    Mayotte,
}

const CRS84_URI: &str = "http://www.opengis.net/def/crs/OGC/1.3/CRS84";
const EPSG_PREFIX: &str = "http://www.opengis.net/def/crs/EPSG/0/";

impl Crs {
    pub const ALL: [Crs; 7] = [
        Crs::Crs84,
        Crs::Epsg4326,
        Crs::Lambert93,
        Crs::Antilles,
        Crs::Guyane,
        Crs::Reunion,
        Crs::Mayotte,
    ];

    /// The EPSG code; CRS84 shares WGS84's 4326 (only the axis order differs).
    pub fn epsg(self) -> u32 {
        match self {
            Crs::Crs84 | Crs::Epsg4326 => 4326,
            Crs::Lambert93 => 2154,
            Crs::Antilles => 5490,
            Crs::Guyane => 2972,
            Crs::Reunion => 2975,
            Crs::Mayotte => 4471,
        }
    }

    /// The OGC URI, as OGC API – Features Part 2 names CRSs.
    pub fn uri(self) -> String {
        match self {
            Crs::Crs84 => CRS84_URI.to_owned(),
            other => format!("{EPSG_PREFIX}{}", other.epsg()),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Crs::Crs84 => "WGS 84 (longitude, latitude)",
            Crs::Epsg4326 => "WGS 84 (latitude, longitude)",
            Crs::Lambert93 => "RGF93 / Lambert-93",
            Crs::Antilles => "RGAF09 / UTM 20N (Antilles)",
            Crs::Guyane => "RGFG95 / UTM 22N (Guyane)",
            Crs::Reunion => "RGR92 / UTM 40S (La Réunion)",
            Crs::Mayotte => "RGM04 / UTM 38S (Mayotte)",
        }
    }

    /// Reads a URI (`http://www.opengis.net/def/crs/EPSG/0/2154`), a CURIE (`[EPSG:2154]`) or a
    /// short name (`EPSG:2154`, `2154`, `CRS84`, `WGS84`, `lambert93`).
    pub fn parse(value: &str) -> Result<Crs, String> {
        let v = value.trim().trim_start_matches('[').trim_end_matches(']');
        let lower = v.to_ascii_lowercase();
        if lower == CRS84_URI.to_ascii_lowercase()
            || matches!(lower.as_str(), "crs84" | "ogc:crs84" | "wgs84" | "crs:84")
        {
            return Ok(Crs::Crs84);
        }
        if lower == "lambert93" || lower == "lambert-93" {
            return Ok(Crs::Lambert93);
        }
        let code = lower
            .strip_prefix(&EPSG_PREFIX.to_ascii_lowercase())
            .or_else(|| lower.strip_prefix("epsg:"))
            .or_else(|| lower.strip_prefix("urn:ogc:def:crs:epsg::"))
            .unwrap_or(&lower);
        Crs::ALL
            .into_iter()
            .filter(|crs| *crs != Crs::Crs84)
            .find(|crs| code.parse::<u32>().ok() == Some(crs.epsg()))
            .ok_or_else(|| {
                format!(
                    "« {value} » : système de coordonnées non proposé (CRS84, EPSG:4326, EPSG:2154, EPSG:5490, EPSG:2972, EPSG:2975, EPSG:4471)"
                )
            })
    }

    /// True for a projected system (coordinates in metres).
    pub fn is_projected(self) -> bool {
        !matches!(self, Crs::Crs84 | Crs::Epsg4326)
    }

    /// The OGC WKT 1 definition, as GeoPackage's `gpkg_spatial_ref_sys` stores it.
    pub fn wkt(self) -> String {
        let geogcs = |name: &str, datum: &str| {
            format!(
                r#"GEOGCS["{name}",DATUM["{datum}",SPHEROID["GRS 1980",6378137,298.257222101]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]]"#
            )
        };
        let utm = |name: &str, geo: &str, datum: &str, zone: i32, south: bool| {
            format!(
                r#"PROJCS["{name}",{},PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",{}],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER["false_northing",{}],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","{}"]]"#,
                geogcs(geo, datum),
                zone * 6 - 183,
                if south { 10_000_000 } else { 0 },
                self.epsg()
            )
        };
        match self {
            Crs::Crs84 | Crs::Epsg4326 => r#"GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]"#.to_owned(),
            Crs::Lambert93 => format!(
                r#"PROJCS["RGF93 / Lambert-93",{},PROJECTION["Lambert_Conformal_Conic_2SP"],PARAMETER["latitude_of_origin",46.5],PARAMETER["central_meridian",3],PARAMETER["standard_parallel_1",49],PARAMETER["standard_parallel_2",44],PARAMETER["false_easting",700000],PARAMETER["false_northing",6600000],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","2154"]]"#,
                geogcs("RGF93", "Reseau_Geodesique_Francais_1993")
            ),
            Crs::Antilles => utm("RGAF09 / UTM zone 20N", "RGAF09", "Reseau_Geodesique_des_Antilles_Francaises_2009", 20, false),
            Crs::Guyane => utm("RGFG95 / UTM zone 22N", "RGFG95", "Reseau_Geodesique_Francais_Guyane_1995", 22, false),
            Crs::Reunion => utm("RGR92 / UTM zone 40S", "RGR92", "Reseau_Geodesique_de_la_Reunion_1992", 40, true),
            Crs::Mayotte => utm("RGM04 / UTM zone 38S", "RGM04", "Reseau_Geodesique_de_Mayotte_2004", 38, true),
        }
    }

    /// The organisation and name of the system, for `gpkg_spatial_ref_sys`.
    pub fn srs_name(self) -> &'static str {
        match self {
            Crs::Crs84 | Crs::Epsg4326 => "WGS 84 geodetic",
            Crs::Lambert93 => "RGF93 / Lambert-93",
            Crs::Antilles => "RGAF09 / UTM zone 20N",
            Crs::Guyane => "RGFG95 / UTM zone 22N",
            Crs::Reunion => "RGR92 / UTM zone 40S",
            Crs::Mayotte => "RGM04 / UTM zone 38S",
        }
    }

    fn proj_string(self) -> Option<&'static str> {
        Some(match self {
            Crs::Crs84 | Crs::Epsg4326 => return None,
            Crs::Lambert93 => "+proj=lcc +lat_0=46.5 +lon_0=3 +lat_1=49 +lat_2=44 +x_0=700000 +y_0=6600000 +ellps=GRS80 +units=m +no_defs",
            Crs::Antilles => "+proj=utm +zone=20 +ellps=GRS80 +units=m +no_defs",
            Crs::Guyane => "+proj=utm +zone=22 +ellps=GRS80 +units=m +no_defs",
            Crs::Reunion => "+proj=utm +zone=40 +south +ellps=GRS80 +units=m +no_defs",
            Crs::Mayotte => "+proj=utm +zone=38 +south +ellps=GRS80 +units=m +no_defs",
        })
    }

    fn projections() -> &'static Projections {
        static PROJECTIONS: OnceLock<Projections> = OnceLock::new();
        PROJECTIONS.get_or_init(|| {
            let parse = |s: &str| Proj::from_proj_string(s).expect("built-in projection");
            Projections {
                geographic: parse("+proj=longlat +ellps=GRS80 +no_defs"),
                projected: Crs::ALL.map(|crs| crs.proj_string().map(parse)),
            }
        })
    }

    fn index(self) -> usize {
        Crs::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// The coordinates of a WGS84 point in this system, in its axis order (latitude first for
    /// EPSG:4326, easting first for the projected ones).
    pub fn project(self, lon: f64, lat: f64) -> Result<(f64, f64), String> {
        match self {
            Crs::Crs84 => Ok((lon, lat)),
            Crs::Epsg4326 => Ok((lat, lon)),
            projected => {
                let all = Crs::projections();
                let target = all.projected[projected.index()]
                    .as_ref()
                    .ok_or("projection absente")?;
                let mut point = (lon.to_radians(), lat.to_radians(), 0.0);
                proj4rs::transform::transform(&all.geographic, target, &mut point)
                    .map_err(|e| format!("reprojection de ({lon}, {lat}) impossible : {e}"))?;
                Ok((point.0, point.1))
            }
        }
    }

    /// The WGS84 longitude and latitude of coordinates given in this system's axis order.
    pub fn unproject(self, x: f64, y: f64) -> Result<(f64, f64), String> {
        match self {
            Crs::Crs84 => Ok((x, y)),
            Crs::Epsg4326 => Ok((y, x)),
            projected => {
                let all = Crs::projections();
                let source = all.projected[projected.index()]
                    .as_ref()
                    .ok_or("projection absente")?;
                let mut point = (x, y, 0.0);
                proj4rs::transform::transform(source, &all.geographic, &mut point)
                    .map_err(|e| format!("reprojection de ({x}, {y}) impossible : {e}"))?;
                Ok((point.0.to_degrees(), point.1.to_degrees()))
            }
        }
    }

    /// Decimals that keep a position to about a decimetre's tenth: 6 for degrees, 2 for metres.
    pub fn decimals(self) -> usize {
        if self.is_projected() {
            2
        } else {
            6
        }
    }
}

struct Projections {
    geographic: Proj,
    projected: [Option<Proj>; 7],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(Crs::parse(CRS84_URI).unwrap(), Crs::Crs84);
        assert_eq!(
            Crs::parse("http://www.opengis.net/def/crs/EPSG/0/2154").unwrap(),
            Crs::Lambert93
        );
        assert_eq!(Crs::parse("EPSG:4326").unwrap(), Crs::Epsg4326);
        assert_eq!(Crs::parse("[EPSG:4471]").unwrap(), Crs::Mayotte);
        assert!(Crs::parse("EPSG:3857").is_err());
        assert!(Crs::parse("").is_err());
    }

    #[test]
    fn lambert93_of_the_origin_and_back() {
        let (x, y) = Crs::Lambert93.project(3.0, 46.5).unwrap();
        assert!((x - 700_000.0).abs() < 1e-3 && (y - 6_600_000.0).abs() < 1e-3);
        let (lon, lat) = Crs::Lambert93.unproject(x, y).unwrap();
        assert!((lon - 3.0).abs() < 1e-9 && (lat - 46.5).abs() < 1e-9);
    }

    #[test]
    fn epsg4326_swaps_axes() {
        assert_eq!(Crs::Epsg4326.project(3.1, 45.7).unwrap(), (45.7, 3.1));
    }
}
