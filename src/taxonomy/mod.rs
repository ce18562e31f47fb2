//! The typologies of services (Annexe 1 of the convention): loading and validating `taxonomy/`, lookups.

pub mod data_inclusion;
pub mod life_events;
pub mod routes;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::text::fold;

const EMBEDDED_THEMES: &str = include_str!("../../taxonomy/themes.toml");
const EMBEDDED_TYPOLOGIES: &str = include_str!("../../taxonomy/typologies.toml");

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Theme {
    pub code: String,
    pub position: i64,
    pub label_fr: String,
    pub label_en: String,
    /// The number of typologies Annexe 1 announces for this theme; checked at load.
    pub typology_count: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Group {
    pub code: String,
    pub theme: String,
    #[serde(default)]
    pub parent: Option<String>,
    pub position: i64,
    pub label_fr: String,
    pub label_en: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Typology {
    pub code: String,
    pub theme: String,
    pub group: String,
    pub position: i64,
    pub label_fr: String,
    pub label_en: String,
    #[serde(default)]
    pub synonyms: Vec<String>,
    /// DILA Annuaire de l'administration "pivot" type codes.
    #[serde(default)]
    pub pivot: Vec<String>,
    /// INSEE Base permanente des équipements `TYPEQU` codes.
    #[serde(default)]
    pub bpe: Vec<String>,
    #[serde(default)]
    pub note: Option<String>,
    /// Kept for existing entries, refused for new ones.
    #[serde(default)]
    pub retired: bool,
}

#[derive(Deserialize)]
struct ThemesFile {
    theme: Vec<Theme>,
    group: Vec<Group>,
}

#[derive(Deserialize)]
struct TypologiesFile {
    typology: Vec<Typology>,
}

/// The validated taxonomy, with indexes for the lookups imports and search need.
#[derive(Debug, Clone)]
pub struct Taxonomy {
    pub themes: Vec<Theme>,
    pub groups: Vec<Group>,
    pub typologies: Vec<Typology>,
    by_code: HashMap<String, usize>,
    by_folded_label: HashMap<String, usize>,
    by_folded_synonym: HashMap<String, usize>,
}

impl Taxonomy {
    /// The taxonomy compiled into the binary from `taxonomy/`.
    pub fn embedded() -> anyhow::Result<Self> {
        Self::parse(EMBEDDED_THEMES, EMBEDDED_TYPOLOGIES)
    }

    /// A taxonomy read from a directory holding `themes.toml` and `typologies.toml`.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(name).display()))
        };
        Self::parse(&read("themes.toml")?, &read("typologies.toml")?)
    }

    pub fn parse(themes_toml: &str, typologies_toml: &str) -> anyhow::Result<Self> {
        let themes: ThemesFile =
            toml::from_str(themes_toml).map_err(|e| anyhow::anyhow!("themes.toml: {e}"))?;
        let typologies: TypologiesFile =
            toml::from_str(typologies_toml).map_err(|e| anyhow::anyhow!("typologies.toml: {e}"))?;
        let taxonomy = Self::index(themes.theme, themes.group, typologies.typology);
        let problems = taxonomy.problems();
        if !problems.is_empty() {
            anyhow::bail!("taxonomie invalide :\n- {}", problems.join("\n- "));
        }
        Ok(taxonomy)
    }

    fn index(themes: Vec<Theme>, groups: Vec<Group>, typologies: Vec<Typology>) -> Self {
        let by_code = typologies
            .iter()
            .enumerate()
            .map(|(i, t)| (t.code.clone(), i))
            .collect();
        let by_folded_label = typologies
            .iter()
            .enumerate()
            .map(|(i, t)| (fold(&t.label_fr), i))
            .collect();
        let mut by_folded_synonym = HashMap::new();
        for (i, t) in typologies.iter().enumerate() {
            for synonym in t.synonyms.iter().chain([&t.label_en]) {
                // A synonym shared by several typologies is ambiguous: the first keeps it.
                by_folded_synonym.entry(fold(synonym)).or_insert(i);
            }
        }
        Self {
            themes,
            groups,
            typologies,
            by_code,
            by_folded_label,
            by_folded_synonym,
        }
    }

    /// Everything wrong with this taxonomy, in words a reviewer understands.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let valid_code = |code: &str| {
            !code.is_empty()
                && code.len() <= 40
                && code.split('-').all(|part| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
        };
        let mut seen = HashSet::new();
        let all_codes = self
            .themes
            .iter()
            .map(|t| ("thème", &t.code))
            .chain(self.groups.iter().map(|g| ("groupe", &g.code)))
            .chain(self.typologies.iter().map(|t| ("typologie", &t.code)));
        for (kind, code) in all_codes {
            if !valid_code(code) {
                problems.push(format!(
                    "{kind} « {code} » : code invalide (kebab-case ASCII, ≤ 40 caractères)"
                ));
            }
            if !seen.insert((kind, code.as_str())) {
                problems.push(format!("{kind} « {code} » : code en double"));
            }
        }
        let theme_codes: HashSet<&str> = self.themes.iter().map(|t| t.code.as_str()).collect();
        let groups: HashMap<&str, &Group> =
            self.groups.iter().map(|g| (g.code.as_str(), g)).collect();
        for group in &self.groups {
            if !theme_codes.contains(group.theme.as_str()) {
                problems.push(format!(
                    "groupe « {} » : thème inconnu « {} »",
                    group.code, group.theme
                ));
            }
            if let Some(parent) = &group.parent {
                match groups.get(parent.as_str()) {
                    None => problems.push(format!(
                        "groupe « {} » : parent inconnu « {parent} »",
                        group.code
                    )),
                    Some(p) if p.theme != group.theme => problems.push(format!(
                        "groupe « {} » : son parent « {parent} » est dans un autre thème",
                        group.code
                    )),
                    Some(p) if p.parent.is_some() => problems.push(format!(
                        "groupe « {} » : au plus deux niveaux de groupes",
                        group.code
                    )),
                    Some(_) => {}
                }
            }
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for typology in &self.typologies {
            *counts.entry(typology.theme.as_str()).or_default() += 1;
            match groups.get(typology.group.as_str()) {
                None => problems.push(format!(
                    "typologie « {} » : groupe inconnu « {} »",
                    typology.code, typology.group
                )),
                Some(g) if g.theme != typology.theme => problems.push(format!(
                    "typologie « {} » : le groupe « {} » n'est pas dans le thème « {} »",
                    typology.code, typology.group, typology.theme
                )),
                Some(_) => {}
            }
            if !theme_codes.contains(typology.theme.as_str()) {
                problems.push(format!(
                    "typologie « {} » : thème inconnu « {} »",
                    typology.code, typology.theme
                ));
            }
            if typology.label_fr.trim().is_empty() || typology.label_en.trim().is_empty() {
                problems.push(format!(
                    "typologie « {} » : libellé manquant",
                    typology.code
                ));
            }
        }
        for theme in &self.themes {
            let found = counts.get(theme.code.as_str()).copied().unwrap_or(0);
            if found != theme.typology_count {
                problems.push(format!(
                    "thème « {} » : {found} typologies, l'annexe 1 en annonce {}",
                    theme.code, theme.typology_count
                ));
            }
        }
        problems
    }

    pub fn typology(&self, code: &str) -> Option<&Typology> {
        self.by_code.get(code).map(|&i| &self.typologies[i])
    }

    pub fn theme(&self, code: &str) -> Option<&Theme> {
        self.themes.iter().find(|t| t.code == code)
    }

    pub fn group(&self, code: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.code == code)
    }

    /// A typology named by its code or its exact French label (case and accents aside).
    pub fn resolve(&self, code_or_label: &str) -> Option<&Typology> {
        let value = code_or_label.trim();
        self.typology(value).or_else(|| {
            self.by_folded_label
                .get(&fold(value))
                .map(|&i| &self.typologies[i])
        })
    }

    /// Like [`Taxonomy::resolve`], and also by search synonym or English label: for foreign
    /// vocabularies such as the SCDL « Équipements » `EQUIP_TYPE`.
    pub fn resolve_loosely(&self, value: &str) -> Option<&Typology> {
        self.resolve(value).or_else(|| {
            self.by_folded_synonym
                .get(&fold(value))
                .map(|&i| &self.typologies[i])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_taxonomy_has_the_annex_counts() {
        let taxonomy = Taxonomy::embedded().expect("embedded taxonomy is valid");
        assert_eq!(taxonomy.typologies.len(), 175);
        let count = |theme: &str| {
            taxonomy
                .typologies
                .iter()
                .filter(|t| t.theme == theme)
                .count()
        };
        assert_eq!(count("services-publics"), 88);
        assert_eq!(count("action-sociale-sante"), 28);
        assert_eq!(count("sports-loisirs"), 27);
        assert_eq!(count("enseignement-education"), 20);
        assert_eq!(count("vie-pratique"), 12);
    }

    #[test]
    fn resolves_codes_labels_and_synonyms() {
        let taxonomy = Taxonomy::embedded().unwrap();
        assert_eq!(taxonomy.resolve("mairie").unwrap().code, "mairie");
        assert_eq!(taxonomy.resolve("PHARMACIE").unwrap().label_fr, "Pharmacie");
        assert!(taxonomy.resolve("France Travail").is_none());
        let anpe = taxonomy.resolve_loosely("France Travail").unwrap();
        assert!(anpe.label_fr.contains("ANPE"), "{}", anpe.label_fr);
    }

    #[test]
    fn rejects_wrong_counts_and_dangling_references() {
        let themes = r#"
            [[theme]]
            code = "t"
            position = 1
            label_fr = "T"
            label_en = "T"
            typology_count = 2
            [[group]]
            code = "g"
            theme = "t"
            position = 1
            label_fr = "G"
            label_en = "G"
        "#;
        let typologies = r#"
            [[typology]]
            code = "a"
            theme = "t"
            group = "nope"
            position = 1
            label_fr = "A"
            label_en = "A"
            [[typology]]
            code = "a"
            theme = "t"
            group = "g"
            position = 2
            label_fr = "B"
            label_en = "B"
        "#;
        let error = Taxonomy::parse(themes, typologies).unwrap_err().to_string();
        assert!(error.contains("groupe inconnu « nope »"), "{error}");
        assert!(error.contains("code en double"), "{error}");
        let ok = typologies.replace("\"nope\"", "\"g\"").replace("code = \"a\"\n            theme = \"t\"\n            group = \"g\"\n            position = 2", "code = \"b\"\n            theme = \"t\"\n            group = \"g\"\n            position = 2");
        assert!(Taxonomy::parse(themes, &ok).is_ok());
        let error = Taxonomy::parse(
            &themes.replace("typology_count = 2", "typology_count = 3"),
            &ok,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("l'annexe 1 en annonce 3"), "{error}");
    }
}
