//! GIS layers of the directory: which published entries a layer holds (a [`Selection`]), how
//! they are read from the database, the coordinate systems, CQL2 filters, and the download
//! formats (GeoJSON, GeoPackage, FlatGeobuf, CSV) with their licence and sources.

pub mod catalogue;
pub mod cql2;
pub mod crs;
pub mod data_inclusion;
pub mod formats;
pub mod routes;
pub mod store;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap as HashMap;

use crate::import::Reference;
use crate::spatial::BBox;
use crate::territory::InseeCode;
use cql2::{Queryable, Subject};

/// The licence and attribution every download and every OGC response carries.
#[derive(Debug, Clone)]
pub struct Licence {
    pub name: String,
    pub url: String,
}

impl Default for Licence {
    fn default() -> Self {
        Self {
            name: "Licence Ouverte / Open Licence version 2.0".into(),
            url: "https://www.etalab.gouv.fr/licence-ouverte-open-licence/".into(),
        }
    }
}

/// An interval of time, either end open.
pub type Interval = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Past this many values, a list of a selection is not bound in SQL but tested on each row.
pub const MAX_BOUND_LIST: usize = 500;

/// Which published entries a layer holds. Every part narrows it; the empty selection is the
/// whole directory.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Typology codes (a theme is expanded to its typologies); `None` for all.
    pub typologies: Option<Vec<String>>,
    /// INSEE codes of communes (a territory is expanded to its communes); `None` for all.
    pub communes: Option<Vec<String>>,
    /// WGS84 box; `None` for everywhere.
    pub bbox: Option<BBox>,
    /// Last update within `[from, to]`, either end open.
    pub updated: Option<Interval>,
    /// A box in a projected CRS (`bbox-crs`): `bbox` holds its WGS84 envelope for SQL, and
    /// each entry is tested exactly in that CRS.
    pub projected_bbox: Option<(crs::Crs, [f64; 4])>,
    /// One entry only (a feature's own URL).
    pub id: Option<String>,
    /// A CQL2 filter, evaluated on each entry.
    pub filter: Option<Arc<cql2::Expr>>,
    /// Organisation ids of the entries' sources; `None` for all.
    pub sources: Option<Vec<String>>,
    /// These entries only (at most `MAX_BOUND_LIST`, bound in SQL); `None` for all.
    pub ids: Option<Vec<String>>,
    /// Last update on or after this second (`YYYY-MM-DDTHH:MM:SS`, UTC), compared in SQL.
    pub updated_since: Option<String>,
}

impl Selection {
    /// Keeps only the typologies of `theme`.
    pub fn theme(mut self, reference: &Reference, theme: &str) -> Self {
        let of_theme: Vec<String> = reference
            .taxonomy
            .typologies
            .iter()
            .filter(|t| t.theme == theme)
            .map(|t| t.code.clone())
            .collect();
        self.typologies = Some(match self.typologies {
            Some(already) => already
                .into_iter()
                .filter(|t| of_theme.contains(t))
                .collect(),
            None => of_theme,
        });
        self
    }

    /// Keeps only the typologies in `codes`.
    pub fn typologies(mut self, codes: Vec<String>) -> Self {
        self.typologies = Some(match self.typologies {
            Some(already) => already.into_iter().filter(|t| codes.contains(t)).collect(),
            None => codes,
        });
        self
    }

    /// Keeps only the communes whose codes pass `keep`.
    pub fn communes(
        mut self,
        reference: &Reference,
        keep: impl Fn(&crate::territory::Commune) -> bool,
    ) -> Self {
        let mut codes: Vec<String> = reference
            .locator
            .communes()
            .filter(|c| keep(c))
            .filter(|c| {
                self.communes.as_ref().is_none_or(|already| {
                    already
                        .binary_search_by(|a| a.as_str().cmp(c.insee_code.as_str()))
                        .is_ok()
                })
            })
            .map(|c| c.insee_code.as_str().to_owned())
            .collect();
        // Sorted: intersections and row tests search it rather than walk it.
        codes.sort_unstable();
        codes.dedup();
        self.communes = Some(codes);
        self
    }

    /// This selection narrowed by what `filter` requires at its top level (communes,
    /// départements, EPCI, typologies, themes), so that SQL reads only the rows that may pass.
    pub fn narrowed_by(mut self, reference: &Reference, filter: &cql2::Expr) -> Self {
        use cql2::Queryable;
        if let Some(codes) = filter.required_values(Queryable::Commune) {
            self = self.communes(reference, |c| {
                codes.iter().any(|v| v == c.insee_code.as_str())
            });
        }
        if let Some(codes) = filter.required_values(Queryable::Departement) {
            self = self.communes(reference, |c| codes.contains(&c.departement_code));
        }
        if let Some(codes) = filter.required_values(Queryable::Epci) {
            self = self.communes(reference, |c| {
                c.epci_siren.as_ref().is_some_and(|s| codes.contains(s))
            });
        }
        if let Some(codes) = filter.required_values(Queryable::Typology) {
            self = self.typologies(codes);
        }
        if let Some(themes) = filter.required_values(Queryable::Theme) {
            let codes = reference
                .taxonomy
                .typologies
                .iter()
                .filter(|t| themes.contains(&t.theme))
                .map(|t| t.code.clone())
                .collect();
            self = self.typologies(codes);
        }
        self
    }

    /// Whether a list is too long to bind in SQL (SQLite takes at most 32,766 values per
    /// statement): its rows are tested one by one instead.
    fn too_long(list: &Option<Vec<String>>) -> bool {
        list.as_ref().is_some_and(|l| l.len() > MAX_BOUND_LIST)
    }

    /// True when the selection needs each row looked at (not only SQL conditions).
    pub fn needs_row_test(&self) -> bool {
        self.filter.is_some()
            || self.updated.is_some()
            || self.projected_bbox.is_some()
            || Self::too_long(&self.typologies)
            || Self::too_long(&self.communes)
            || Self::too_long(&self.sources)
            || Self::too_long(&self.ids)
    }

    /// Keeps only the communes of `territory`.
    pub fn territory(
        self,
        reference: &Reference,
        territory: &crate::search::engine::Territory,
    ) -> Self {
        self.communes(reference, |c| territory.contains(c))
    }

    /// True when the selection is the whole directory.
    pub fn is_whole(&self) -> bool {
        self.typologies.is_none()
            && self.communes.is_none()
            && self.bbox.is_none()
            && self.id.is_none()
            && self.sources.is_none()
            && self.ids.is_none()
            && self.updated_since.is_none()
            && !self.needs_row_test()
    }

    /// Whether a row passes the tests SQL does not do (the CQL2 filter, the update interval).
    pub fn row_passes(&self, row: &Row<'_>) -> bool {
        if Self::too_long(&self.communes)
            && self.communes.as_ref().is_some_and(|communes| {
                communes
                    .binary_search_by(|c| c.as_str().cmp(row.insee_code))
                    .is_err()
            })
        {
            return false;
        }
        if Self::too_long(&self.typologies)
            && self
                .typologies
                .as_ref()
                .is_some_and(|typologies| !typologies.iter().any(|t| t == row.typology))
        {
            return false;
        }
        for (list, value) in [(&self.sources, row.source_id), (&self.ids, row.id)] {
            if Self::too_long(list) && list.as_ref().is_some_and(|l| !l.iter().any(|v| v == value))
            {
                return false;
            }
        }
        if let Some((crs, [x1, y1, x2, y2])) = self.projected_bbox {
            match crs.project(row.lon, row.lat) {
                Ok((x, y)) if x >= x1 && x <= x2 && y >= y1 && y <= y2 => {}
                _ => return false,
            }
        }
        if let Some((from, to)) = &self.updated {
            let Some(at) = row.updated() else {
                return false;
            };
            if from.is_some_and(|f| at < f) || to.is_some_and(|t| at > t) {
                return false;
            }
        }
        self.filter.as_ref().is_none_or(|f| f.matches(row))
    }

    /// A stable text of the selection, to key caches on.
    pub fn key(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.typologies,
            self.communes,
            self.bbox,
            self.projected_bbox,
            self.id,
            self.updated,
            self.filter,
            self.sources,
            self.ids,
            self.updated_since
        )
    }
}

/// Names and codes an entry's row refers to, resolved once per read.
pub struct Lookup {
    theme_of: HashMap<String, String>,
    typology_label: HashMap<String, String>,
    /// INSEE code → (département, EPCI SIREN).
    territory_of: HashMap<String, (String, Option<String>)>,
    /// Organisation id → name.
    pub sources: HashMap<String, String>,
}

impl Lookup {
    pub fn new(reference: &Reference, sources: HashMap<String, String>) -> Self {
        Self {
            theme_of: reference
                .taxonomy
                .typologies
                .iter()
                .map(|t| (t.code.clone(), t.theme.clone()))
                .collect(),
            typology_label: reference
                .taxonomy
                .typologies
                .iter()
                .map(|t| (t.code.clone(), t.label_fr.clone()))
                .collect(),
            territory_of: reference
                .locator
                .communes()
                .map(|c| {
                    (
                        c.insee_code.as_str().to_owned(),
                        (c.departement_code.clone(), c.epci_siren.clone()),
                    )
                })
                .collect(),
            sources,
        }
    }
}

/// One published entry as the layers show it, borrowed from the database row.
pub struct Row<'r> {
    pub id: &'r str,
    pub typology: &'r str,
    pub name: &'r str,
    pub description: Option<&'r str>,
    pub street: Option<&'r str>,
    pub postcode: Option<&'r str>,
    pub city: Option<&'r str>,
    pub insee_code: &'r str,
    pub lon: f64,
    pub lat: f64,
    /// JSON array of E.164 numbers, as stored.
    pub phones_json: &'r str,
    pub email: Option<&'r str>,
    pub website: Option<&'r str>,
    pub opening_hours: Option<&'r str>,
    pub wheelchair: &'r str,
    pub source_id: &'r str,
    pub source_ref: &'r str,
    pub updated_at: &'r str,
    pub lookup: &'r Lookup,
}

/// The attributes of a feature, in the order every format writes them.
pub const FIELDS: [&str; 20] = [
    "id",
    "name",
    "typology",
    "typology_label",
    "theme",
    "address",
    "postcode",
    "city",
    "insee_code",
    "departement",
    "epci",
    "phone",
    "email",
    "website",
    "opening_hours",
    "wheelchair",
    "description",
    "source",
    "source_ref",
    "updated_at",
];

impl<'r> Row<'r> {
    pub fn theme(&self) -> Option<&'r str> {
        self.lookup.theme_of.get(self.typology).map(String::as_str)
    }

    pub fn typology_label(&self) -> Option<&'r str> {
        self.lookup
            .typology_label
            .get(self.typology)
            .map(String::as_str)
    }

    pub fn departement(&self) -> Option<&'r str> {
        self.lookup
            .territory_of
            .get(self.insee_code)
            .map(|t| t.0.as_str())
    }

    pub fn epci(&self) -> Option<&'r str> {
        self.lookup
            .territory_of
            .get(self.insee_code)
            .and_then(|t| t.1.as_deref())
    }

    pub fn source(&self) -> &'r str {
        self.lookup
            .sources
            .get(self.source_id)
            .map_or(self.source_id, String::as_str)
    }

    /// The phone numbers, comma-separated (the import formats read them back that way).
    pub fn phones(&self) -> String {
        // Stored numbers are E.164 (`+` and digits): read without a JSON parser, which would
        // allocate for every row of a multi-million-row export; anything else goes through it.
        let inner = self
            .phones_json
            .trim()
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'));
        match inner {
            Some(inner) if !inner.contains('\\') => inner
                .split(',')
                .map(|p| p.trim().trim_matches('"'))
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(", "),
            _ => serde_json::from_str::<Vec<String>>(self.phones_json)
                .map(|p| p.join(", "))
                .unwrap_or_default(),
        }
    }

    pub fn updated(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(self.updated_at)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last update as `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn updated_text(&self) -> String {
        self.updated().map_or_else(
            || self.updated_at.to_owned(),
            |d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    }

    /// The value of field `FIELDS[i]` as text; `None` when empty.
    pub fn field(&self, i: usize) -> Option<std::borrow::Cow<'r, str>> {
        use std::borrow::Cow::{Borrowed, Owned};
        let value = match FIELDS[i] {
            "id" => Borrowed(self.id),
            "name" => Borrowed(self.name),
            "typology" => Borrowed(self.typology),
            "typology_label" => Borrowed(self.typology_label()?),
            "theme" => Borrowed(self.theme()?),
            "address" => Borrowed(self.street?),
            "postcode" => Borrowed(self.postcode?),
            "city" => Borrowed(self.city?),
            "insee_code" => Borrowed(self.insee_code),
            "departement" => Borrowed(self.departement()?),
            "epci" => Borrowed(self.epci()?),
            "phone" => Owned(self.phones()),
            "email" => Borrowed(self.email?),
            "website" => Borrowed(self.website?),
            "opening_hours" => Borrowed(self.opening_hours?),
            "wheelchair" => Borrowed(self.wheelchair),
            "description" => Borrowed(self.description?),
            "source" => Borrowed(self.source()),
            "source_ref" => Borrowed(self.source_ref),
            "updated_at" => Owned(self.updated_text()),
            _ => return None,
        };
        (!value.is_empty()).then_some(value)
    }
}

impl Subject for Row<'_> {
    fn text(&self, property: Queryable) -> Option<&str> {
        match property {
            Queryable::Id => Some(self.id),
            Queryable::Name => Some(self.name),
            Queryable::Typology => Some(self.typology),
            Queryable::Theme => self.theme(),
            Queryable::Commune => Some(self.insee_code),
            Queryable::Departement => self.departement(),
            Queryable::Epci => self.epci(),
            Queryable::Postcode => self.postcode,
            Queryable::City => self.city,
            Queryable::Wheelchair => Some(self.wheelchair),
            Queryable::Source => Some(self.source()),
            Queryable::UpdatedAt => None,
        }
    }

    fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated()
    }

    fn point(&self) -> (f64, f64) {
        (self.lon, self.lat)
    }
}

/// Checks that `code` is a known commune, for filters given by INSEE code.
pub fn known_commune(reference: &Reference, code: &str) -> bool {
    InseeCode::parse(code).is_ok_and(|c| reference.locator.commune(&c).is_some())
}

/// What a server keeps for the layers: the licence it publishes under, the directory of the
/// whole-directory files built once per data version, and the counts already made.
pub struct Layers {
    pub licence: Licence,
    /// `PATH.exports` beside the SQLite file `PATH`.
    pub dir: std::path::PathBuf,
    /// One build of a whole-directory file at a time: concurrent first requests wait for it
    /// instead of all building it.
    building: tokio::sync::Mutex<()>,
    /// Counts by selection, for the data version they were made at.
    counts: std::sync::Mutex<(Option<String>, HashMap<String, u64>)>,
    /// Where numbered pages start, by selection, for the data version they were read at.
    anchors: std::sync::Mutex<(Option<String>, AnchorsBySelection)>,
    /// The names rows refer to, for the data version they were read at: a page of features
    /// should not pay for resolving every commune again.
    lookup: std::sync::Mutex<Option<(Option<String>, Arc<Lookup>)>>,
}

/// Counts kept before the cache starts over (keys are selections: bounded memory).
const MAX_COUNTS: usize = 10_000;
type AnchorsBySelection = HashMap<String, Arc<store::Anchors>>;

/// Selections whose page anchors are kept before the cache starts over.
const MAX_ANCHORED: usize = 256;

impl Layers {
    pub fn new(dir: std::path::PathBuf, licence: Licence) -> Self {
        Self {
            licence,
            dir,
            building: tokio::sync::Mutex::new(()),
            counts: std::sync::Mutex::new((None, HashMap::default())),
            anchors: std::sync::Mutex::new((None, HashMap::default())),
            lookup: std::sync::Mutex::new(None),
        }
    }

    pub fn cached_lookup(&self, version: &Option<String>) -> Option<Arc<Lookup>> {
        let lookup = self
            .lookup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lookup
            .as_ref()
            .filter(|(v, _)| v == version)
            .map(|(_, l)| l.clone())
    }

    pub fn keep_lookup(&self, version: &Option<String>, lookup: Arc<Lookup>) {
        *self
            .lookup
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((version.clone(), lookup));
    }

    pub fn cached_anchors(
        &self,
        version: &Option<String>,
        key: &str,
    ) -> Option<Arc<store::Anchors>> {
        let anchors = self
            .anchors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (anchors.0 == *version).then(|| anchors.1.get(key).cloned())?
    }

    pub fn keep_anchors(&self, version: &Option<String>, key: String, found: Arc<store::Anchors>) {
        let mut anchors = self
            .anchors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A few kilobytes per selection of a million entries: a few hundred selections at most.
        if anchors.0 != *version || anchors.1.len() >= MAX_ANCHORED {
            *anchors = (version.clone(), HashMap::default());
        }
        anchors.1.insert(key, found);
    }

    pub fn cached_count(&self, version: &Option<String>, key: &str) -> Option<u64> {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (counts.0 == *version).then(|| counts.1.get(key).copied())?
    }

    pub fn keep_count(&self, version: &Option<String>, key: String, count: u64) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.0 != *version || counts.1.len() >= MAX_COUNTS {
            *counts = (version.clone(), HashMap::default());
        }
        counts.1.insert(key, count);
    }

    /// The whole-directory file in `format` and `crs` at data version `version`, built on
    /// first demand.
    pub async fn whole_file(
        &self,
        db_store: &crate::db::Store,
        reference: &Reference,
        version: &Option<String>,
        format: formats::Format,
        crs: crs::Crs,
    ) -> crate::error::Result<std::path::PathBuf> {
        let key = format!("services-{}.{}", crs.epsg(), format.extension());
        let built = self
            .whole(
                db_store,
                reference,
                version,
                &key,
                move |handle, lookup, about, target| {
                    let count = formats::write_file(
                        handle,
                        lookup,
                        &Selection::default(),
                        about,
                        format,
                        crs,
                        target,
                    )?;
                    Ok(Built {
                        written: count,
                        left_out: 0,
                    })
                },
            )
            .await?;
        Ok(built.0)
    }

    /// The whole-directory file named `key` at data version `version`, written by `build` on
    /// first demand and kept until the data changes (files of older versions are removed then),
    /// with what `build` counted.
    pub async fn whole<F>(
        &self,
        db_store: &crate::db::Store,
        reference: &Reference,
        version: &Option<String>,
        key: &str,
        build: F,
    ) -> crate::error::Result<(std::path::PathBuf, Built)>
    where
        F: FnOnce(
                &mut store::Handle<'_>,
                &Lookup,
                &formats::About,
                &std::path::Path,
            ) -> anyhow::Result<Built>
            + Send
            + 'static,
    {
        let stamp: String = version
            .as_deref()
            .unwrap_or("0")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let name = format!("whole-{stamp}-{key}");
        let path = self.dir.join(&name);
        let counts_path = self.dir.join(format!("{name}.counts"));
        let _building = self.building.lock().await;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            if let Some(built) = tokio::fs::read_to_string(&counts_path)
                .await
                .ok()
                .and_then(|text| Built::parse(&text))
            {
                return Ok((path, built));
            }
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(anyhow::Error::from)?;
        let started = std::time::Instant::now();
        let reference = reference.clone();
        let licence = self.licence.clone();
        let target = path.clone();
        let built = store::with_connection(db_store, move |handle| {
            let lookup = store::lookup(handle, &reference)?;
            let about = formats::About {
                title: "Proximités — services publics".into(),
                licence,
                sources: store::publishing_sources(handle)?,
                generated: Utc::now(),
            };
            build(handle, &lookup, &about, &target)
        })
        .await?;
        tokio::fs::write(&counts_path, built.to_string())
            .await
            .map_err(anyhow::Error::from)?;
        tracing::info!(
            file = %name,
            count = built.written,
            left_out = built.left_out,
            ms = started.elapsed().as_millis() as u64,
            "whole-directory export built"
        );
        // Files of other data versions are stale: nothing serves them any more (`services-` is
        // how files were named before other products were cached).
        if let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await {
            let current = format!("whole-{stamp}-");
            while let Ok(Some(entry)) = entries.next_entry().await {
                let file = entry.file_name().to_string_lossy().into_owned();
                if (file.starts_with("whole-") && !file.starts_with(&current))
                    || file.starts_with("services-")
                {
                    let _ = tokio::fs::remove_file(entry.path()).await;
                }
            }
        }
        Ok((path, built))
    }
}

/// What building a whole-directory file counted: records written and entries left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    pub written: u64,
    pub left_out: u64,
}

impl Built {
    fn parse(text: &str) -> Option<Self> {
        let (written, left_out) = text.trim().split_once(' ')?;
        Some(Self {
            written: written.parse().ok()?,
            left_out: left_out.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.written, self.left_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'r>(phones_json: &'r str, lookup: &'r Lookup) -> Row<'r> {
        Row {
            id: "0123456789abcdef",
            typology: "mairie",
            name: "Mairie",
            description: None,
            street: None,
            postcode: None,
            city: None,
            insee_code: "63113",
            lon: 3.0,
            lat: 45.0,
            phones_json,
            email: None,
            website: None,
            opening_hours: None,
            wheelchair: "unknown",
            source_id: "org",
            source_ref: "1",
            updated_at: "2025-06-01T10:00:00Z",
            lookup,
        }
    }

    #[test]
    fn phones_read_back_as_the_json_says() {
        let lookup = Lookup {
            theme_of: HashMap::default(),
            typology_label: HashMap::default(),
            territory_of: HashMap::default(),
            sources: HashMap::default(),
        };
        assert_eq!(row("[]", &lookup).phones(), "");
        assert_eq!(row(r#"["+33473426363"]"#, &lookup).phones(), "+33473426363");
        assert_eq!(
            row(r#"["+33473426363", "+33612345678"]"#, &lookup).phones(),
            "+33473426363, +33612345678"
        );
        assert_eq!(row(r#"["a\"b"]"#, &lookup).phones(), "a\"b");
        assert_eq!(row("[]", &lookup).updated_text(), "2025-06-01T10:00:00Z");
    }
}
