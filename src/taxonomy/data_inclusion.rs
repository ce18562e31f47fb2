//! The crosswalk from typologies to data·inclusion (schema 1.x) of
//! `taxonomy/data-inclusion.toml`: each typology's network (`reseaux_porteurs`), and the type,
//! thématiques, publics, fees and eligibility area of its service; checked against the
//! référentiels it carries and against the taxonomy.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::Deserialize;

use super::Taxonomy;

const EMBEDDED: &str = include_str!("../../taxonomy/data-inclusion.toml");

/// The area a service is open to, taken from its entry's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    Commune,
    Epci,
    Departement,
    France,
}

/// What one typology is in data·inclusion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Crosswalk {
    pub code: String,
    #[serde(default)]
    pub reseau: Option<String>,
    #[serde(default, rename = "type")]
    pub service_type: Option<String>,
    #[serde(default)]
    pub thematiques: Vec<String>,
    #[serde(default)]
    pub publics: Vec<String>,
    #[serde(default)]
    pub frais: Option<String>,
    #[serde(default)]
    pub zone: Option<Zone>,
}

impl Crosswalk {
    /// Whether entries of this typology are published as data·inclusion services.
    pub fn has_service(&self) -> bool {
        !self.thematiques.is_empty()
    }
}

/// The values data·inclusion accepts, as its schema package lists them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Referentiels {
    pub schema_version: String,
    pub types: Vec<String>,
    pub publics: Vec<String>,
    pub reseaux_porteurs: Vec<String>,
    pub thematiques: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    referentiels: Referentiels,
    typology: Vec<Crosswalk>,
}

/// The crosswalk, by typology code.
#[derive(Debug, Clone)]
pub struct DataInclusion {
    pub referentiels: Referentiels,
    by_typology: HashMap<String, Crosswalk>,
}

impl DataInclusion {
    /// The crosswalk compiled into the binary, checked against the embedded taxonomy once.
    pub fn embedded() -> &'static DataInclusion {
        static CROSSWALK: OnceLock<DataInclusion> = OnceLock::new();
        CROSSWALK.get_or_init(|| {
            let taxonomy = Taxonomy::embedded().expect("embedded taxonomy");
            Self::parse(EMBEDDED, &taxonomy).expect("taxonomy/data-inclusion.toml")
        })
    }

    pub fn parse(toml_text: &str, taxonomy: &Taxonomy) -> anyhow::Result<Self> {
        let file: File =
            toml::from_str(toml_text).map_err(|e| anyhow::anyhow!("data-inclusion.toml: {e}"))?;
        let r = &file.referentiels;
        let known = |list: &[String]| list.iter().cloned().collect::<HashSet<_>>();
        let (types, publics, reseaux, thematiques) = (
            known(&r.types),
            known(&r.publics),
            known(&r.reseaux_porteurs),
            known(&r.thematiques),
        );
        let mut problems = Vec::new();
        let mut by_typology = HashMap::new();
        for c in file.typology {
            let at = c.code.clone();
            if taxonomy.typology(&at).is_none() {
                problems.push(format!("« {at} » n'est pas une typologie"));
            }
            let mut check = |what: &str, value: &str, set: &HashSet<String>| {
                if !set.contains(value) {
                    problems.push(format!(
                        "{at} : {what} « {value} » inconnu de data·inclusion"
                    ));
                }
            };
            if let Some(reseau) = &c.reseau {
                check("réseau porteur", reseau, &reseaux);
            }
            if let Some(t) = &c.service_type {
                check("type", t, &types);
            }
            for t in &c.thematiques {
                check("thématique", t, &thematiques);
            }
            for p in &c.publics {
                check("public", p, &publics);
            }
            if c.publics.iter().any(|p| p == "tous-publics") {
                problems.push(format!(
                    "{at} : « tous-publics » est la valeur par défaut, ne pas l'écrire"
                ));
            }
            if let Some(f) = &c.frais {
                if f != "gratuit" && f != "payant" {
                    problems.push(format!("{at} : frais « {f} » (gratuit ou payant)"));
                }
            }
            let has_service = c.has_service();
            if has_service != c.service_type.is_some()
                || (!has_service
                    && (!c.publics.is_empty() || c.frais.is_some() || c.zone.is_some()))
            {
                problems.push(format!(
                    "{at} : un service a un type et des thématiques, sinon seulement un réseau"
                ));
            }
            if !has_service && c.reseau.is_none() {
                problems.push(format!("{at} : ni service ni réseau"));
            }
            if by_typology.insert(at.clone(), c).is_some() {
                problems.push(format!("« {at} » figure deux fois"));
            }
        }
        if !problems.is_empty() {
            anyhow::bail!("data-inclusion.toml :\n- {}", problems.join("\n- "));
        }
        Ok(Self {
            referentiels: file.referentiels,
            by_typology,
        })
    }

    /// The typologies whose entries are data·inclusion services.
    pub fn service_typologies(&self) -> Vec<String> {
        let mut codes: Vec<String> = self
            .by_typology
            .values()
            .filter(|c| c.has_service())
            .map(|c| c.code.clone())
            .collect();
        codes.sort();
        codes
    }

    pub fn of(&self, typology: &str) -> Option<&Crosswalk> {
        self.by_typology.get(typology)
    }

    pub fn len(&self) -> usize {
        self.by_typology.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_typology.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_crosswalk_is_valid() {
        let crosswalk = DataInclusion::embedded();
        assert!(crosswalk.len() > 60, "{}", crosswalk.len());
        let caf = crosswalk.of("caf").unwrap();
        assert_eq!(caf.reseau.as_deref(), Some("caf"));
        assert!(caf.has_service());
        assert!(!crosswalk.of("bureau-poste").unwrap().has_service());
        assert!(crosswalk.of("piscine").is_none());
    }

    #[test]
    fn unknown_values_are_named() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let text = EMBEDDED.replace(
            "code = \"caf\"\nreseau = \"caf\"",
            "code = \"caf\"\nreseau = \"caisse\"",
        );
        let error = DataInclusion::parse(&text, &taxonomy)
            .unwrap_err()
            .to_string();
        assert!(error.contains("caf : réseau porteur « caisse »"), "{error}");
        let text = EMBEDDED.replace("code = \"mdph\"", "code = \"mdph-inconnue\"");
        let error = DataInclusion::parse(&text, &taxonomy)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("« mdph-inconnue » n'est pas une typologie"),
            "{error}"
        );
    }
}
