//! The 12 life events (« événements de vie ») of `taxonomy/life-events.toml`: each a moment of
//! life with the typologies of the services people go to then.

use serde::Deserialize;

use super::Taxonomy;

const EMBEDDED_LIFE_EVENTS: &str = include_str!("../../taxonomy/life-events.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct LifeEvent {
    pub code: String,
    pub position: i64,
    pub label_fr: String,
    pub label_en: String,
    pub summary_fr: String,
    pub summary_en: String,
    /// Typology codes, most relevant first.
    pub typologies: Vec<String>,
}

#[derive(Deserialize)]
struct LifeEventsFile {
    event: Vec<LifeEvent>,
}

/// The life events in their order, checked against the taxonomy.
#[derive(Debug, Clone)]
pub struct LifeEvents {
    pub events: Vec<LifeEvent>,
}

impl LifeEvents {
    /// The life events compiled into the binary, checked against `taxonomy`.
    pub fn embedded(taxonomy: &Taxonomy) -> anyhow::Result<Self> {
        Self::parse(EMBEDDED_LIFE_EVENTS, taxonomy)
    }

    pub fn parse(toml_text: &str, taxonomy: &Taxonomy) -> anyhow::Result<Self> {
        let file: LifeEventsFile =
            toml::from_str(toml_text).map_err(|e| anyhow::anyhow!("life-events.toml: {e}"))?;
        let mut events = file.event;
        events.sort_by_key(|e| e.position);
        let mut problems = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for event in &events {
            if !seen.insert(event.code.as_str()) {
                problems.push(format!("événement « {} » en double", event.code));
            }
            if event.typologies.is_empty() {
                problems.push(format!("événement « {} » sans typologie", event.code));
            }
            for code in &event.typologies {
                if taxonomy.typology(code).is_none() {
                    problems.push(format!(
                        "événement « {} » : typologie inconnue « {code} »",
                        event.code
                    ));
                }
            }
        }
        if !problems.is_empty() {
            anyhow::bail!("life-events.toml invalide :\n- {}", problems.join("\n- "));
        }
        Ok(Self { events })
    }

    pub fn get(&self, code: &str) -> Option<&LifeEvent> {
        self.events.iter().find(|e| e.code == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_twelve_moments_name_known_typologies() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let events = LifeEvents::embedded(&taxonomy).unwrap();
        assert_eq!(events.events.len(), 12, "« 12 moments-clés de la vie »");
        for named in ["demenagement", "mariage", "retraite", "deces"] {
            assert!(events.get(named).is_some(), "the convention names {named}");
        }
    }

    #[test]
    fn an_unknown_typology_is_refused_by_name() {
        let taxonomy = Taxonomy::embedded().unwrap();
        let error = LifeEvents::parse(
            r#"[[event]]
code = "x"
position = 1
label_fr = "X"
label_en = "X"
summary_fr = "X"
summary_en = "X"
typologies = ["licorne"]"#,
            &taxonomy,
        )
        .unwrap_err();
        assert!(error.to_string().contains("licorne"), "{error}");
    }
}
