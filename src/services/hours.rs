//! Opening hours: OpenStreetMap `opening_hours` validated and normalised with the `opening-hours`
//! crate, and the service-public.fr JSON form converted to it.

use opening_hours::OpeningHours;

/// Parses OSM `opening_hours` and returns its normalised form, or a French message saying what is wrong.
pub fn normalize(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let parsed = raw.parse::<OpeningHours>().map_err(|e| {
        format!(
            "horaires illisibles (syntaxe OpenStreetMap opening_hours attendue) : {}",
            one_line(&e.to_string())
        )
    })?;
    Ok(parsed.normalize().to_string())
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

const FRENCH_DAYS: [(&str, &str); 7] = [
    ("lundi", "Mo"),
    ("mardi", "Tu"),
    ("mercredi", "We"),
    ("jeudi", "Th"),
    ("vendredi", "Fr"),
    ("samedi", "Sa"),
    ("dimanche", "Su"),
];

fn osm_day(french: &str) -> Result<&'static str, String> {
    let lower = french.trim().to_lowercase();
    FRENCH_DAYS
        .iter()
        .find(|(fr, _)| *fr == lower)
        .map(|(_, osm)| *osm)
        .ok_or_else(|| format!("jour inconnu « {french} »"))
}

/// `08:30:00` → `08:30`.
fn osm_time(time: &str) -> Result<String, String> {
    let parts: Vec<&str> = time.trim().split(':').collect();
    let ok = matches!(parts.len(), 2 | 3)
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        return Err(format!("heure invalide « {time} »"));
    }
    Ok(format!("{}:{}", parts[0], parts[1]))
}

/// Converts the service-public.fr JSON hours (`[[from_day, to_day, [[open, close], …]], …]`, French
/// day names) to OSM `opening_hours` syntax; an empty list means no hours are known.
pub fn from_service_public_json(json: &str) -> Result<Option<String>, String> {
    type Rule = (String, String, Vec<(String, String)>);
    let rules: Vec<Rule> = serde_json::from_str(json)
        .map_err(|e| format!("horaires JSON illisibles ([[jour_début, jour_fin, [[ouverture, fermeture], …]], …] attendu) : {e}"))?;
    let mut out = Vec::with_capacity(rules.len());
    for (from, to, slots) in rules {
        let (from, to) = (osm_day(&from)?, osm_day(&to)?);
        let days = if from == to {
            from.to_owned()
        } else {
            format!("{from}-{to}")
        };
        if slots.is_empty() {
            out.push(format!("{days} off"));
            continue;
        }
        let times = slots
            .iter()
            .map(|(open, close)| Ok(format!("{}-{}", osm_time(open)?, osm_time(close)?)))
            .collect::<Result<Vec<_>, String>>()?;
        out.push(format!("{days} {}", times.join(",")));
    }
    Ok((!out.is_empty()).then(|| out.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_valid_hours() {
        let n = normalize("Mo-Fr 08:30-12:00,13:30-17:30; Sa 09:00-12:00; PH off").unwrap();
        assert!(n.contains("08:30-12:00"), "{n}");
        assert_eq!(normalize(&n).unwrap(), n, "normalisation is idempotent");
    }

    #[test]
    fn rejects_broken_hours() {
        let e = normalize("Lundi 8h-12h").unwrap_err();
        assert!(e.contains("horaires illisibles"), "{e}");
        assert!(normalize("Mo-Fr 25:00-26:99").is_err());
    }

    #[test]
    fn converts_service_public_json() {
        let json = r#"[["lundi","mardi",[["13:30:00","18:00:00"]]],["jeudi","jeudi",[["13:30:00","18:00:00"]]],["vendredi","vendredi",[["08:30:00","13:00:00"]]]]"#;
        assert_eq!(
            from_service_public_json(json).unwrap().unwrap(),
            "Mo-Tu 13:30-18:00; Th 13:30-18:00; Fr 08:30-13:00"
        );
        let json = r#"[["lundi","vendredi",[["08:30:00","12:00:00"],["13:30:00","17:30:00"]]]]"#;
        assert_eq!(
            from_service_public_json(json).unwrap().unwrap(),
            "Mo-Fr 08:30-12:00,13:30-17:30"
        );
        assert!(from_service_public_json(r#"[["lunedi","mardi",[]]]"#)
            .unwrap_err()
            .contains("lunedi"));
        assert!(from_service_public_json("not json").is_err());
        assert_eq!(from_service_public_json("[]").unwrap(), None);
    }

    #[test]
    fn every_demo_town_hall_converts_to_its_osm_hours() {
        let text = include_str!("../../data/demo/mairies-auvergne.csv");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        let osm = headers.iter().position(|h| h == "opening_hours").unwrap();
        let json = headers.iter().position(|h| h == "horaires_source").unwrap();
        let mut compared = 0;
        for record in reader.records() {
            let record = record.unwrap();
            if record[json].is_empty() || record[osm].is_empty() {
                continue;
            }
            let converted = from_service_public_json(&record[json]).unwrap().unwrap();
            assert_eq!(
                normalize(&converted).unwrap(),
                normalize(&record[osm]).unwrap()
            );
            compared += 1;
        }
        assert!(compared > 1000, "{compared}");
    }
}
