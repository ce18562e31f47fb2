//! Finding communes by what people type: a name prefix, a postcode or an INSEE code, ignoring
//! accents, case and hyphens — the offline part of place search.

use crate::text::fold;

use super::{Commune, Locator};

/// Communes sorted by folded name, for prefix lookups by binary search.
#[derive(Debug, Default)]
pub struct PlaceIndex {
    /// (folded name, index into the locator's communes)
    by_name: Vec<(String, usize)>,
}

impl PlaceIndex {
    pub fn new(locator: &Locator) -> Self {
        let mut by_name: Vec<(String, usize)> = locator
            .communes()
            .enumerate()
            .map(|(i, c)| (fold(&c.name), i))
            .collect();
        by_name.sort();
        Self { by_name }
    }

    /// Up to `limit` communes matching `query`, best first: exact name or code before prefixes,
    /// then the most populated.
    pub fn search<'a>(&self, locator: &'a Locator, query: &str, limit: usize) -> Vec<&'a Commune> {
        let communes: Vec<&Commune> = locator.communes().collect();
        let trimmed = query.trim();
        let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
        let mut found: Vec<(bool, &Commune)> = if compact.len() == 5
            && compact.chars().all(|c| c.is_ascii_alphanumeric())
            && compact[2..].bytes().all(|b| b.is_ascii_digit())
        {
            let code = compact.to_ascii_uppercase();
            communes
                .iter()
                .filter(|c| c.insee_code.as_str() == code || c.postcodes.contains(&code))
                // The commune whose INSEE code it is comes before those whose postcode it is.
                .map(|c| (c.insee_code.as_str() == code, *c))
                .collect()
        } else {
            let folded = fold(trimmed);
            if folded.is_empty() {
                return Vec::new();
            }
            let start = self
                .by_name
                .partition_point(|(name, _)| name.as_str() < folded.as_str());
            self.by_name[start..]
                .iter()
                .take_while(|(name, _)| name.starts_with(&folded))
                .map(|(name, i)| (*name == folded, communes[*i]))
                .collect()
        };
        found.sort_by(|(exact_a, a), (exact_b, b)| {
            exact_b
                .cmp(exact_a)
                .then(b.population.cmp(&a.population))
                .then(a.insee_code.cmp(&b.insee_code))
        });
        found.into_iter().take(limit).map(|(_, c)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::territory::ReferenceFiles;

    fn reference() -> &'static (Locator, PlaceIndex) {
        static REFERENCE: OnceLock<(Locator, PlaceIndex)> = OnceLock::new();
        REFERENCE.get_or_init(|| {
            let locator = Locator::new(ReferenceFiles::embedded().unwrap().communes);
            let places = PlaceIndex::new(&locator);
            (locator, places)
        })
    }

    fn names(query: &str) -> Vec<String> {
        let (locator, places) = reference();
        places
            .search(locator, query, 5)
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    #[test]
    fn name_prefixes_ignore_accents_case_and_hyphens() {
        assert_eq!(names("riom")[0], "Riom");
        assert_eq!(names("RIOM-ès-mont")[0], "Riom-ès-Montagnes");
        assert_eq!(names("chatel guyon")[0], "Châtel-Guyon");
        assert_eq!(names("clermont f")[0], "Clermont-Ferrand");
        assert_eq!(names("le puy en v")[0], "Le Puy-en-Velay");
        assert!(names("zzzz").is_empty());
        assert!(names("  ").is_empty());
    }

    #[test]
    fn codes_and_postcodes() {
        // 63113 is Clermont-Ferrand's INSEE code and Picherande's postcode.
        assert_eq!(names("63113"), ["Clermont-Ferrand", "Picherande"]);
        assert_eq!(names("2a004"), ["Ajaccio"]);
        assert!(
            names("63200").contains(&"Riom".to_owned()),
            "{:?}",
            names("63200")
        );
    }

    #[test]
    fn the_most_populated_come_first() {
        let found = names("saint");
        assert_eq!(found.len(), 5);
        let (locator, places) = reference();
        let populations: Vec<i64> = places
            .search(locator, "saint", 5)
            .iter()
            .map(|c| c.population)
            .collect();
        assert!(
            populations.windows(2).all(|w| w[0] >= w[1]),
            "{populations:?}"
        );
    }
}
