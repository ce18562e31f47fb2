//! The generator of realistic entries for benchmarks: real communes weighted by population,
//! typologies in plausible proportions, plausible hours, deterministic for a seed.

use std::io::Write;
use std::path::Path;

use geo::Intersects;
use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::import::formats::PROJECT_COLUMNS;
use crate::taxonomy::Taxonomy;
use crate::territory::{Commune, ReferenceFiles};
use crate::text::fold;

/// Entries per 100,000 inhabitants for the frequent typologies (orders of magnitude from INSEE's
/// Base permanente des équipements); every other typology counts 1.
const FREQUENT: &[(&str, f64)] = &[
    ("arret-bus", 500.0),
    ("assistante-maternelle", 350.0),
    ("container-recyclage", 300.0),
    ("association-sportive", 220.0),
    ("terrain-sport", 220.0),
    ("infirmier", 190.0),
    ("medecin-generaliste", 150.0),
    ("association-culturelle", 150.0),
    ("parking", 150.0),
    ("kinesitherapeute", 130.0),
    ("medecin-specialiste", 100.0),
    ("stade", 60.0),
    ("mairie", 52.0),
    ("ecole-elementaire", 50.0),
    ("salle-fetes", 45.0),
    ("jardin-parc", 40.0),
    ("pharmacie", 31.0),
    ("bureau-poste", 25.0),
    ("bibliotheque", 24.0),
    ("ecole-maternelle", 22.0),
    ("garde-enfants", 20.0),
    ("services-personnes-agees", 15.0),
    ("marche", 15.0),
    ("college", 11.0),
    ("ambulancier", 8.0),
    ("dechetterie", 7.0),
    ("piscine", 6.0),
    ("laboratoire-analyses", 6.0),
    ("brigade-gendarmerie", 5.0),
    ("lycee", 4.0),
    ("office-tourisme", 4.0),
    ("cinema", 3.0),
    ("lycee-professionnel", 2.5),
    ("commissariat-police", 2.0),
    ("musee", 2.0),
    ("anpe", 1.3),
    ("cpam", 0.8),
    ("caf", 0.5),
    ("sous-prefecture", 0.35),
    ("tribunal-grande-instance", 0.25),
    ("prefecture", 0.15),
    ("rectorat", 0.05),
    ("conseil-regional", 0.03),
];

const STREETS: &[&str] = &[
    "rue de la République",
    "place de l'Église",
    "avenue Jean-Jaurès",
    "rue Victor-Hugo",
    "chemin des Écoles",
    "boulevard Gambetta",
    "rue du Marché",
    "place de la Mairie",
    "rue Pasteur",
    "avenue de la Gare",
    "rue des Tilleuls",
    "allée des Sports",
    "route Nationale",
    "rue du 8-Mai-1945",
];

const FIRST_NAMES: &[&str] = &[
    "Marie", "Jean", "Nathalie", "Pierre", "Isabelle", "Michel", "Sophie", "Philippe", "Camille",
    "Léa", "Hugo", "Chloé",
];
const LAST_NAMES: &[&str] = &[
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
    "Moreau", "Chabrier", "Vialle", "Fayolle", "Bonnefoy",
];

const OFFICE_HOURS: &[&str] = &[
    "Mo-Fr 08:30-12:00,13:30-17:00",
    "Mo-Fr 09:00-12:00,14:00-17:00; Sa 09:00-12:00",
    "Mo,Tu,Th,Fr 08:30-12:00,13:30-17:30; We 08:30-12:00; PH off",
    "Tu,Th 14:00-17:00",
    "Mo-Fr 08:00-12:00,14:00-18:00; PH off",
];
const CARE_HOURS: &[&str] = &[
    "Mo-Fr 08:00-19:00; Sa 08:00-12:00",
    "Mo-Fr 08:30-12:30,14:00-19:00",
    "Mo-Sa 09:00-12:30,14:00-19:30",
];
const LEISURE_HOURS: &[&str] = &[
    "Mo-Su 10:00-20:00",
    "Tu-Sa 10:00-12:30,14:00-18:00",
    "We,Sa 14:00-18:00; Su 10:00-12:00",
];

fn phone_prefix(commune: &Commune) -> &'static str {
    match commune.region_code.as_str() {
        "11" => "01",
        "24" | "28" | "52" | "53" => "02",
        "27" | "32" | "44" => "03",
        "75" | "76" => "05",
        "01" => "0590",
        "02" => "0596",
        "03" => "0594",
        "04" => "0262",
        "06" => "0269",
        _ => "04",
    }
}

fn slug(name: &str) -> String {
    fold(name).replace(' ', "-")
}

/// A point inside the commune: near its centre, within its boundary when it has one.
fn point_in(commune: &Commune, rng: &mut ChaCha8Rng) -> (f64, f64) {
    let b = commune.bbox;
    let (half_w, half_h) = ((b.max_lon - b.min_lon) / 2.0, (b.max_lat - b.min_lat) / 2.0);
    for _ in 0..10 {
        let lon =
            (commune.centroid.lon + rng.gen_range(-0.5..0.5) * half_w).clamp(b.min_lon, b.max_lon);
        let lat =
            (commune.centroid.lat + rng.gen_range(-0.5..0.5) * half_h).clamp(b.min_lat, b.max_lat);
        let inside = commune
            .boundary
            .as_ref()
            .is_none_or(|shape| shape.intersects(&geo::Point::new(lon, lat)));
        if inside {
            return (lon, lat);
        }
    }
    (commune.centroid.lon, commune.centroid.lat)
}

/// Writes `count` generated entries to `path` in the project's CSV; returns the count written.
pub fn write_file(path: &Path, count: u64, seed: u64) -> anyhow::Result<u64> {
    write_file_in(path, count, seed, &[])
}

/// Like [`write_file`], in the communes of `departements` only (all of France when empty).
pub fn write_file_in(
    path: &Path,
    count: u64,
    seed: u64,
    departements: &[String],
) -> anyhow::Result<u64> {
    let taxonomy = Taxonomy::embedded()?;
    let mut communes = ReferenceFiles::embedded()?.communes;
    if !departements.is_empty() {
        communes.retain(|c| departements.contains(&c.departement_code));
        anyhow::ensure!(
            !communes.is_empty(),
            "aucune commune dans les départements {departements:?}"
        );
    }
    let file =
        std::fs::File::create(path).map_err(|e| anyhow::anyhow!("{} : {e}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    write(&mut out, &taxonomy, &communes, count, seed)?;
    out.flush()?;
    Ok(count)
}

pub fn write(
    out: impl Write,
    taxonomy: &Taxonomy,
    communes: &[Commune],
    count: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let typologies: Vec<_> = taxonomy.typologies.iter().filter(|t| !t.retired).collect();
    let typology_pick = WeightedIndex::new(typologies.iter().map(|t| {
        FREQUENT
            .iter()
            .find(|(c, _)| *c == t.code)
            .map_or(1.0, |(_, w)| *w)
    }))?;
    // Paris, Lyon and Marseille count once, as communes, not again through their arrondissements.
    let communes: Vec<&Commune> = communes.iter().filter(|c| c.kind == "COM").collect();
    let commune_pick = WeightedIndex::new(communes.iter().map(|c| c.population.max(1) as f64))?;
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(PROJECT_COLUMNS)?;
    for i in 0..count {
        let typology = typologies[typology_pick.sample(&mut rng)];
        let commune = communes[commune_pick.sample(&mut rng)];
        let (lon, lat) = point_in(commune, &mut rng);
        let is_person = matches!(
            typology.code.as_str(),
            "medecin-generaliste"
                | "medecin-specialiste"
                | "infirmier"
                | "kinesitherapeute"
                | "assistante-maternelle"
        );
        let name = if is_person {
            let first = FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())];
            let last = LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())];
            if typology.code.starts_with("medecin") {
                format!("Dr {first} {last}")
            } else {
                format!("{first} {last}")
            }
        } else {
            format!("{} de {}", typology.label_fr, commune.name)
        };
        let street = format!(
            "{} {}",
            rng.gen_range(1..80),
            STREETS[rng.gen_range(0..STREETS.len())]
        );
        let postcode = commune.postcodes.first().cloned().unwrap_or_default();
        let no_hours = matches!(
            typology.code.as_str(),
            "arret-bus" | "container-recyclage" | "parking" | "cabine-telephonique"
        );
        let hours = if no_hours {
            ""
        } else if typology.theme == "action-sociale-sante" {
            CARE_HOURS[rng.gen_range(0..CARE_HOURS.len())]
        } else if typology.theme == "sports-loisirs" {
            LEISURE_HOURS[rng.gen_range(0..LEISURE_HOURS.len())]
        } else {
            OFFICE_HOURS[rng.gen_range(0..OFFICE_HOURS.len())]
        };
        let prefix = phone_prefix(commune);
        let phone = if no_hours {
            String::new()
        } else {
            let mut digits = prefix.to_owned();
            while digits.len() < 10 {
                digits.push(char::from(b'0' + rng.gen_range(0..10u8)));
            }
            digits
                .as_bytes()
                .chunks(2)
                .map(|p| std::str::from_utf8(p).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let domain = slug(&commune.name);
        let (email, website) = if !no_hours && rng.gen_bool(0.4) {
            (
                format!("contact@{domain}.fr"),
                format!("https://www.{domain}.fr/"),
            )
        } else {
            (String::new(), String::new())
        };
        let wheelchair = ["yes", "limited", "no", "unknown", "unknown"][rng.gen_range(0..5)];
        let description = if rng.gen_bool(0.05) {
            format!(
                "{} au service des habitants de {}.",
                typology.label_fr, commune.name
            )
        } else {
            String::new()
        };
        csv.write_record([
            format!("synth-{seed}-{i}").as_str(),
            &typology.code,
            &name,
            &street,
            &postcode,
            &commune.name,
            commune.insee_code.as_str(),
            &format!("{lon:.6}"),
            &format!("{lat:.6}"),
            &phone,
            &email,
            &website,
            hours,
            wheelchair,
            &description,
        ])?;
    }
    csv.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_file_and_plausible_mix() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let communes = ReferenceFiles::embedded().unwrap().communes;
        let generate = |seed| {
            let mut out = Vec::new();
            write(&mut out, &taxonomy, &communes, 2_000, seed).unwrap();
            String::from_utf8(out).unwrap()
        };
        let a = generate(7);
        assert_eq!(a, generate(7));
        assert_ne!(a, generate(8));
        let bus_stops = a.lines().filter(|l| l.contains(",arret-bus,")).count();
        let prefectures = a.lines().filter(|l| l.contains(",prefecture,")).count();
        assert!(
            bus_stops > 50 * prefectures.max(1),
            "{bus_stops} bus stops, {prefectures} prefectures"
        );
        // Paris, the most populated commune, gets entries; the header is the contract one.
        assert!(a.contains(",75056,"));
        assert_eq!(a.lines().next().unwrap(), PROJECT_COLUMNS.join(","));
    }
}
