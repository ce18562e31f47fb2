//! Coverage against brute force on generated communes and entries, a territory checked by
//! hand, and bad input.

use std::sync::Arc;

use rand::{Rng, SeedableRng};

use super::*;
use crate::search::spatial::{Attributes, SpatialEntry};
use crate::services::ServiceId;

fn commune(code: &str, departement: &str, region: &str, population: i64, at: LonLat) -> Commune {
    Commune {
        insee_code: InseeCode::parse(code).unwrap(),
        name: format!("Commune {code}"),
        kind: "COM".into(),
        departement_code: departement.into(),
        region_code: region.into(),
        epci_siren: Some(format!("2000000{}", &code[..2])),
        population,
        postcodes: vec![],
        centroid: at,
        bbox: BBox::new(at.lon - 0.02, at.lat - 0.02, at.lon + 0.02, at.lat + 0.02),
        boundary: None,
    }
}

fn entry(n: usize, code: &str, at: LonLat) -> SpatialEntry {
    SpatialEntry {
        id: ServiceId(format!("{n:016}")),
        location: at,
        insee_code: InseeCode::parse(code).unwrap(),
        attributes: Attributes::default(),
    }
}

struct World {
    locator: Arc<Locator>,
    taxonomy: Taxonomy,
    index: Arc<SearchIndex>,
    /// (typology, id, commune, location) of every entry.
    entries: Vec<(String, String, String, LonLat)>,
}

impl World {
    fn new(communes: Vec<Commune>, entries: Vec<(&str, SpatialEntry)>) -> Self {
        let listed = entries
            .iter()
            .map(|(t, e)| {
                (
                    t.to_string(),
                    e.id.0.clone(),
                    e.insee_code.to_string(),
                    e.location,
                )
            })
            .collect();
        let spatial = SpatialIndex::new(entries.into_iter().map(|(t, e)| (t.to_owned(), e)));
        Self {
            locator: Arc::new(Locator::new(communes)),
            taxonomy: Taxonomy::embedded().unwrap(),
            index: Arc::new(SearchIndex {
                spatial,
                version: Some("1".into()),
                position: 1,
            }),
            entries: listed,
        }
    }

    fn parse(&self, area: &str, typologies: &[&str], themes: &[&str]) -> Result<Request, Error> {
        Request::parse(
            &RawRequest {
                area,
                typologies: typologies.to_vec(),
                themes: themes.to_vec(),
                thresholds: None,
                gap_threshold: None,
                compare: true,
            },
            &self.taxonomy,
            &self.locator,
        )
    }

    fn report(&self, request: &Request) -> Arc<Report> {
        Coverage::default()
            .report(&self.index, &self.locator, &self.taxonomy, request)
            .unwrap()
    }

    /// A commune's reference point by brute force: the town hall nearest its centroid, else
    /// the centroid.
    fn reference(&self, c: &Commune) -> LonLat {
        self.entries
            .iter()
            .filter(|(t, _, code, _)| t == TOWN_HALL && code == c.insee_code.as_str())
            .map(|(_, id, _, at)| (c.centroid.distance_m(*at), id.clone(), *at))
            .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)))
            .map_or(c.centroid, |(_, _, at)| at)
    }

    /// The nearest entry of any of `typologies` by brute force.
    fn nearest(&self, from: LonLat, typologies: &[&str]) -> Option<(f64, String)> {
        self.entries
            .iter()
            .filter(|(t, ..)| typologies.contains(&t.as_str()))
            .map(|(_, id, _, at)| (from.distance_m(*at), id.clone()))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    fn count(&self, typologies: &[&str], codes: &[&str]) -> u64 {
        self.entries
            .iter()
            .filter(|(t, _, code, _)| {
                typologies.contains(&t.as_str()) && codes.contains(&code.as_str())
            })
            .count() as u64
    }
}

const TYPOLOGIES: [&str; 4] = ["pharmacie", "piscine", "mairie", "college"];

/// 300 communes in two départements of one région and one of another, and 600 entries.
fn generated(seed: u64) -> World {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut communes = Vec::new();
    for n in 0..300 {
        let (departement, region, lon) = match n % 3 {
            0 => ("63", "84", rng.gen_range(2.5..3.5)),
            1 => ("03", "84", rng.gen_range(3.5..4.5)),
            _ => ("23", "75", rng.gen_range(1.5..2.5)),
        };
        let code = format!("{departement}{:03}", n + 1);
        let at = LonLat::new(lon, rng.gen_range(45.0..46.5));
        communes.push(commune(
            &code,
            departement,
            region,
            rng.gen_range(0..5_000),
            at,
        ));
    }
    let mut entries = Vec::new();
    for n in 0..600 {
        let c: &Commune = &communes[rng.gen_range(0..communes.len())];
        // Piscines are rare and only in the 03: the nearest from the 63 is beyond its border.
        let typology = match n % 10 {
            0 if c.departement_code == "03" => "piscine",
            0..=3 => "pharmacie",
            4..=6 => "mairie",
            _ => "college",
        };
        let at = LonLat::new(
            c.centroid.lon + rng.gen_range(-0.01..0.01),
            c.centroid.lat + rng.gen_range(-0.01..0.01),
        );
        entries.push((typology, entry(n, c.insee_code.as_str(), at)));
    }
    World::new(communes, entries)
}

fn close(a: f64, b: f64) -> bool {
    // Figures are rounded to 0.1 m and distances kept in f32.
    (a - b).abs() <= 0.5 + b.abs() * 1e-6
}

/// Checks every figure of the report over `codes` against brute force.
fn check_against_brute_force(world: &World, report: &Report, codes: &[&str]) {
    let communes: Vec<&Commune> = world
        .locator
        .communes()
        .filter(|c| codes.contains(&c.insee_code.as_str()))
        .collect();
    assert_eq!(report.communes.len(), communes.len());
    let subjects: Vec<Vec<&str>> = report
        .subjects
        .iter()
        .map(|s| match s.kind {
            "theme" => world
                .taxonomy
                .typologies
                .iter()
                .filter(|t| t.theme == s.code)
                .map(|t| t.code.as_str())
                .collect(),
            _ => vec![s.code.as_str()],
        })
        .collect();
    for (subject, typologies) in report.subjects.iter().zip(&subjects) {
        let mut population = 0;
        let mut weighted = 0.0;
        let mut with_entry = 0;
        let mut beyond = vec![0; report.thresholds_m.len()];
        let mut gaps = Vec::new();
        for c in &communes {
            let row = report
                .communes
                .iter()
                .find(|r| r.insee_code == c.insee_code.as_str())
                .unwrap();
            let at = report.subjects.iter().position(|s| s == subject).unwrap();
            let from = world.reference(c);
            assert_eq!(row.reference_point, from, "{}", c.insee_code);
            let expected = world.nearest(from, typologies);
            let got = row.nearest[at];
            match &expected {
                None => assert_eq!(got.distance_m, None),
                Some((d, id)) => {
                    let got_d = got.distance_m.unwrap();
                    assert!(
                        close(got_d, *d),
                        "{} {}: {got_d} vs {d}",
                        c.insee_code,
                        subject.code
                    );
                    // Another entry at the very same distance would do as well.
                    let got_id = got.id.unwrap().0;
                    if got_id.as_str() != id {
                        let other = world
                            .entries
                            .iter()
                            .find(|e| e.1 == got_id.as_str())
                            .unwrap();
                        assert!(close(from.distance_m(other.3), *d));
                    }
                }
            }
            population += c.population;
            let d = expected.map(|(d, _)| d);
            if world.count(typologies, &[c.insee_code.as_str()]) > 0 {
                with_entry += 1;
            }
            if let Some(d) = d {
                weighted += c.population as f64 * d;
                for (b, t) in beyond.iter_mut().zip(&report.thresholds_m) {
                    if d > *t {
                        *b += c.population;
                    }
                }
                if d > report.gap_threshold_m {
                    gaps.push((c.population, c.insee_code.to_string()));
                }
            }
        }
        let i = &subject.indicators;
        assert_eq!(i.population, population);
        assert_eq!(
            i.entries,
            world.count(typologies, codes),
            "{}",
            subject.code
        );
        assert_eq!(i.communes_with_entry, with_entry, "{}", subject.code);
        let mean = weighted / population as f64;
        assert!(
            close(i.mean_distance_m.unwrap(), mean),
            "{} {mean}",
            subject.code
        );
        for (b, expected) in i.beyond.iter().zip(&beyond) {
            assert_eq!(
                b.population, *expected,
                "{} {}",
                subject.code, b.threshold_m
            );
            assert!((b.share.unwrap() - *expected as f64 / population as f64).abs() < 1e-12);
        }
        gaps.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        assert_eq!(i.gap_communes, gaps.len());
        let listed: Vec<&str> = subject.gaps.iter().map(|g| g.insee_code.as_str()).collect();
        let expected: Vec<&str> = gaps
            .iter()
            .take(GAPS_LISTED)
            .map(|g| g.1.as_str())
            .collect();
        assert_eq!(listed, expected, "{}", subject.code);
    }
}

fn codes_of(world: &World, test: impl Fn(&Commune) -> bool) -> Vec<String> {
    world
        .locator
        .communes()
        .filter(|c| test(c))
        .map(|c| c.insee_code.to_string())
        .collect()
}

#[test]
fn departement_region_and_list_equal_brute_force() {
    let world = generated(7);
    for (area, test) in [
        (
            "departement:63",
            Box::new(|c: &Commune| c.departement_code == "63") as Box<dyn Fn(&Commune) -> bool>,
        ),
        ("region:84", Box::new(|c: &Commune| c.region_code == "84")),
        ("france", Box::new(|_: &Commune| true)),
        (
            "communes:63001,03002,23003",
            Box::new(|c: &Commune| ["63001", "03002", "23003"].contains(&c.insee_code.as_str())),
        ),
    ] {
        let codes = codes_of(&world, test);
        let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
        let request = world
            .parse(area, &TYPOLOGIES, &["action-sociale-sante"])
            .unwrap();
        let report = world.report(&request);
        check_against_brute_force(&world, &report, &codes);
        // The territory alone gives the same figures as with its comparisons.
        let alone = Request {
            compare: false,
            ..request
        };
        let report_alone = world.report(&alone);
        assert_eq!(report_alone.communes, report.communes, "{area}");
        for (a, b) in report_alone.subjects.iter().zip(&report.subjects) {
            assert_eq!(a.indicators, b.indicators, "{area} {}", a.code);
            assert_eq!(a.gaps, b.gaps);
            assert!(a.comparisons.is_empty());
        }
    }
}

#[test]
fn the_nearest_may_lie_beyond_the_border() {
    let world = generated(11);
    let request = world.parse("departement:63", &["piscine"], &[]).unwrap();
    let report = world.report(&request);
    let piscine = &report.subjects[0];
    assert_eq!(piscine.indicators.entries, 0, "piscines are in the 03 only");
    assert_eq!(piscine.indicators.communes_with_entry, 0);
    assert!(!piscine.no_entry_in_france);
    for row in &report.communes {
        let id = row.nearest[0].id.expect("a piscine in the 03").0;
        let found = world.entries.iter().find(|e| e.1 == id.as_str()).unwrap();
        assert!(found.2.starts_with("03"), "{found:?}");
    }
    // Compared with the région (which holds the 03's piscines) and France.
    let levels: Vec<(&str, Option<&str>)> = piscine
        .comparisons
        .iter()
        .map(|c| (c.level, c.code.as_deref()))
        .collect();
    assert_eq!(levels, [("region", Some("84")), ("france", None)]);
    let region = &piscine.comparisons[0].indicators;
    assert_eq!(
        region.entries,
        world.count(
            &["piscine"],
            &codes_of(&world, |c| c.region_code == "84")
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        )
    );
    assert!(region.entries > 0);
    let codes = codes_of(&world, |c| c.departement_code == "63");
    check_against_brute_force(
        &world,
        &report,
        &codes.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

/// Three communes on one meridian, 0.1° of latitude (11,119.5 m) apart, one pharmacy.
fn by_hand() -> World {
    let communes = vec![
        commune("63001", "63", "84", 1_000, LonLat::new(3.0, 45.0)),
        commune("63002", "63", "84", 2_000, LonLat::new(3.0, 45.1)),
        commune("63003", "63", "84", 500, LonLat::new(3.0, 45.3)),
        commune("03001", "03", "84", 100, LonLat::new(3.0, 46.0)),
    ];
    let entries = vec![
        ("pharmacie", entry(1, "63001", LonLat::new(3.0, 45.0))),
        // 63002's town hall, halfway to 63001: its reference point.
        ("mairie", entry(2, "63002", LonLat::new(3.0, 45.05))),
        // A second, farther from the centroid: not the reference.
        ("mairie", entry(3, "63002", LonLat::new(3.0, 45.2))),
    ];
    World::new(communes, entries)
}

#[test]
fn a_small_territory_checked_by_hand() {
    let world = by_hand();
    let request = world.parse("departement:63", &["pharmacie"], &[]).unwrap();
    let report = world.report(&request);
    assert_eq!(report.territory.communes, 3);
    assert_eq!(report.territory.population, 3_500);
    assert_eq!(report.territory.town_halls, 1);
    let distances: Vec<(&str, &str, Option<f64>)> = report
        .communes
        .iter()
        .map(|r| (r.insee_code.as_str(), r.reference, r.nearest[0].distance_m))
        .collect();
    // R·0.05°, R·0.3° with R = 6,371,008.8 m.
    assert_eq!(
        distances,
        [
            ("63001", "centroid", Some(0.0)),
            ("63002", "town_hall", Some(5_559.8)),
            ("63003", "centroid", Some(33_358.5)),
        ]
    );
    let i = &report.subjects[0].indicators;
    assert_eq!(i.entries, 1);
    assert_eq!(i.communes_with_entry, 1);
    assert!((i.entries_per_10k.unwrap() - 10_000.0 / 3_500.0).abs() < 1e-9);
    // (0 × 1000 + 5,559.75 × 2000 + 33,358.5 × 500) / 3500
    assert!(
        (i.mean_distance_m.unwrap() - 7_942.5).abs() < 0.1,
        "{:?}",
        i.mean_distance_m
    );
    let beyond: Vec<(f64, i64)> = i
        .beyond
        .iter()
        .map(|b| (b.threshold_m, b.population))
        .collect();
    assert_eq!(beyond, [(5_000.0, 2_500), (10_000.0, 500), (20_000.0, 500)]);
    assert_eq!((i.gap_communes, i.gap_population), (1, 500));
    assert_eq!(report.subjects[0].gaps[0].insee_code, "63003");
    // France adds 03001, 100 inhabitants 1° (111,195 m) north.
    let france = report.subjects[0].comparisons.last().unwrap();
    assert_eq!(france.level, "france");
    assert_eq!(france.indicators.population, 3_600);
    assert_eq!(france.indicators.gap_population, 600);

    let csv = {
        let mut out = Vec::new();
        write_csv(&report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        csv,
        "insee_code,name,population,distance_m,nearest_id,reference\n\
         63001,Commune 63001,1000,0.0,0000000000000001,centroid\n\
         63002,Commune 63002,2000,5559.8,0000000000000001,town_hall\n\
         63003,Commune 63003,500,33358.5,0000000000000001,centroid\n"
    );
}

#[test]
fn a_commune_territory_is_compared_with_its_departement() {
    let world = by_hand();
    let report = world.report(
        &world
            .parse("communes:03001,63003,63002", &["pharmacie"], &[])
            .unwrap(),
    );
    let levels: Vec<(&str, Option<&str>)> = report.subjects[0]
        .comparisons
        .iter()
        .map(|c| (c.level, c.code.as_deref()))
        .collect();
    // Most of its inhabitants live in the 63.
    assert_eq!(
        levels,
        [
            ("departement", Some("63")),
            ("region", Some("84")),
            ("france", None)
        ]
    );
    assert_eq!(report.subjects[0].comparisons[0].indicators.communes, 3);
}

#[test]
fn a_typology_without_entries_in_france_has_null_distances_and_says_so() {
    let world = by_hand();
    let report = world.report(
        &world
            .parse("departement:63", &["piscine", "pharmacie"], &[])
            .unwrap(),
    );
    let piscine = &report.subjects[0];
    assert!(piscine.no_entry_in_france);
    assert!(piscine.message.as_deref().unwrap().contains("aucune fiche"));
    assert_eq!(piscine.indicators.mean_distance_m, None);
    assert!(piscine.indicators.beyond.iter().all(|b| b.share.is_none()));
    assert!(report
        .communes
        .iter()
        .all(|r| r.nearest[0].distance_m.is_none() && r.nearest[0].id.is_none()));
    assert!(!report.subjects[1].no_entry_in_france);
    let mut out = Vec::new();
    write_csv(&report, &mut out).unwrap();
    let csv = String::from_utf8(out).unwrap();
    assert!(
        csv.starts_with("insee_code,name,population,distance_m,nearest_id,reference,typology\n")
    );
    assert!(
        csv.contains("63001,Commune 63001,1000,,,centroid,piscine\n"),
        "{csv}"
    );
}

#[test]
fn bad_input_is_named() {
    let world = by_hand();
    let fields = |result: Result<Request, Error>| match result {
        Err(Error::InvalidParameters(errors)) => {
            errors.into_iter().map(|e| e.field).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        fields(world.parse("departement:63", &["nope"], &[])),
        ["typology"]
    );
    assert_eq!(
        fields(world.parse("departement:63", &[], &["nope"])),
        ["theme"]
    );
    assert_eq!(
        fields(world.parse("departement:63", &[], &[])),
        ["typology"]
    );
    assert_eq!(
        fields(world.parse("communes:", &["pharmacie"], &[])),
        ["territory"]
    );
    assert_eq!(
        fields(world.parse("communes: , ", &["pharmacie"], &[])),
        ["territory"]
    );
    assert_eq!(
        fields(world.parse("canton:12", &["pharmacie"], &[])),
        ["territory"]
    );
    assert_eq!(
        fields(world.parse("departement:6", &["pharmacie"], &[])),
        ["territory"]
    );
    assert_eq!(
        fields(world.parse("63", &["x"], &[])),
        ["territory", "typology"]
    );
    for unknown in ["departement:99", "commune:99999", "communes:63001,99999"] {
        assert!(
            matches!(
                world.parse(unknown, &["pharmacie"], &[]),
                Err(Error::NotFound { .. })
            ),
            "{unknown}"
        );
    }
    let thresholds = |value: &str| {
        fields(Request::parse(
            &RawRequest {
                area: "departement:63",
                typologies: vec!["pharmacie"],
                thresholds: Some(value),
                ..RawRequest::default()
            },
            &world.taxonomy,
            &world.locator,
        ))
    };
    assert_eq!(thresholds("abc"), ["thresholds"]);
    assert_eq!(thresholds("-5"), ["thresholds"]);
    assert_eq!(thresholds(""), ["thresholds"]);
    assert_eq!(
        parse_thresholds("20000, 5000,5000").unwrap(),
        [5_000.0, 20_000.0]
    );
    let ok = world
        .parse(
            " communes:63001, 63001 ,63002",
            &["pharmacie,pharmacie"],
            &[],
        )
        .unwrap();
    assert_eq!(ok.area.id(), "communes:63001,63002");
    assert_eq!(ok.typologies, ["pharmacie"]);
}

#[test]
fn the_cache_follows_the_index() {
    let world = by_hand();
    let coverage = Coverage::default();
    let request = world.parse("departement:63", &["pharmacie"], &[]).unwrap();
    let first = coverage
        .report(&world.index, &world.locator, &world.taxonomy, &request)
        .unwrap();
    let again = coverage
        .report(&world.index, &world.locator, &world.taxonomy, &request)
        .unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    // A new index (new data): a pharmacy in 63003 now.
    let mut spatial = SpatialIndex::new(world.entries.iter().map(|(t, id, code, at)| {
        let mut e = entry(0, code, *at);
        e.id = ServiceId(id.clone());
        (t.clone(), e)
    }));
    spatial.insert("pharmacie", entry(9, "63003", LonLat::new(3.0, 45.3)));
    let newer = Arc::new(SearchIndex {
        spatial,
        version: Some("2".into()),
        position: 2,
    });
    let after = coverage
        .report(&newer, &world.locator, &world.taxonomy, &request)
        .unwrap();
    assert_eq!(after.data_version.as_deref(), Some("2"));
    assert_eq!(after.subjects[0].indicators.entries, 2);
    assert_eq!(after.communes[2].nearest[0].distance_m, Some(0.0));
}

#[test]
fn nearest_of_typology_agrees_with_nearest() {
    let world = generated(3);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for _ in 0..500 {
        let from = LonLat::new(rng.gen_range(1.0..5.0), rng.gen_range(44.5..47.0));
        for typology in TYPOLOGIES {
            let one = world.index.spatial.nearest_of_typology(from, typology);
            let merged = world
                .index
                .spatial
                .nearest(from, Some(&[typology]), 1, None);
            assert_eq!(
                one.map(|h| h.distance_m),
                merged.first().map(|h| h.distance_m)
            );
        }
    }
    assert!(world
        .index
        .spatial
        .nearest_of_typology(LonLat::new(3.0, 45.0), "piscine-olympique")
        .is_none());
}

#[test]
fn comparisons_equal_the_enclosing_territories_own_figures() {
    let world = generated(13);
    let coverage = Coverage::default();
    let report = |area: &str| {
        let request = world
            .parse(area, &["pharmacie", "college"], &["action-sociale-sante"])
            .unwrap();
        coverage
            .report(&world.index, &world.locator, &world.taxonomy, &request)
            .unwrap()
    };
    // Two territories of one département and région: the second reads the cached figures.
    for area in ["communes:63001,63004", "commune:63007"] {
        let small = report(area);
        for (at, subject) in small.subjects.iter().enumerate() {
            for comparison in &subject.comparisons {
                let whole = match (comparison.level, &comparison.code) {
                    ("france", None) => report("france"),
                    (level, Some(code)) => report(&format!("{level}:{code}")),
                    other => panic!("{other:?}"),
                };
                assert_eq!(
                    comparison.indicators, whole.subjects[at].indicators,
                    "{area} {} {}",
                    subject.code, comparison.level
                );
            }
            assert_eq!(subject.comparisons.len(), 3);
        }
    }
}
