//! What a guide says, independent of its medium: the selected entries put into sections with
//! every text formatted (phones, addresses, weekly hours, dates) in the guide's language, the
//! indexes sorted, the fixed texts. The PDF layout and the HTML page both read this.

use chrono::NaiveTime;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use super::{Choices, Grouping};
use crate::coverage::Area;
use crate::error::{Error, FieldError, Result};
use crate::search::engine::Territory;
use crate::search::hours::{long_date, HoursEvaluator, Lang, TypicalDay};
use crate::services::{Service, Wheelchair};
use crate::taxonomy::Taxonomy;
use crate::territory::{Commune, Locator};

/// The numbers every guide gives first.
const EMERGENCY: [(&str, &str, &str); 5] = [
    ("15", "SAMU — urgence médicale", "SAMU — medical emergency"),
    ("17", "Police secours", "Police"),
    ("18", "Pompiers", "Fire brigade"),
    (
        "112",
        "Numéro d'urgence européen",
        "European emergency number",
    ),
    (
        "114",
        "Urgences pour les personnes sourdes ou malentendantes (SMS, visio, tchat)",
        "Emergencies for deaf or hard-of-hearing people (text, video, chat)",
    ),
];

/// The fixed texts of a guide in one language.
#[derive(Debug, Clone, Serialize)]
pub struct Texts {
    pub up_to_date: &'static str,
    pub communes_covered: &'static str,
    pub useful_numbers: &'static str,
    pub useful_intro: &'static str,
    pub online: &'static str,
    pub online_qr_alt: &'static str,
    pub contents: &'static str,
    pub index: &'static str,
    pub index_names: &'static str,
    pub index_communes: &'static str,
    pub see: &'static str,
    /// Beside a heading repeated at the top of a volume that starts inside its section.
    pub continued: &'static str,
    pub page: &'static str,
    pub phone: &'static str,
    pub email: &'static str,
    pub website: &'static str,
    pub hours: &'static str,
    pub hours_unknown: &'static str,
    pub closed: &'static str,
    pub unknown: &'static str,
    pub holidays_closed: &'static str,
    pub entry_qr_alt: &'static str,
    pub notes: &'static str,
    pub publisher: &'static str,
    pub sources: &'static str,
    pub sources_text: &'static str,
    pub report: &'static str,
    pub report_text: &'static str,
    pub entries: &'static str,
    pub days: &'static str,
    pub theme: &'static str,
    pub guide: &'static str,
}

const FR: Texts = Texts {
    up_to_date: "À jour au",
    communes_covered: "Communes couvertes",
    useful_numbers: "Numéros utiles",
    useful_intro: "Numéros d'urgence gratuits, joignables 24 h/24 et 7 j/7 depuis un fixe ou un portable.",
    online: "Cet annuaire en ligne, toujours à jour",
    online_qr_alt: "Code QR menant à l'annuaire en ligne",
    contents: "Sommaire",
    index: "Index",
    index_names: "Index alphabétique",
    index_communes: "Index par commune",
    see: "voir",
    continued: "(suite)",
    page: "p.",
    phone: "Tél.",
    email: "Courriel",
    website: "Site",
    hours: "Horaires",
    hours_unknown: "Horaires non renseignés",
    closed: "fermé",
    unknown: "non renseigné",
    holidays_closed: "Fermé les jours fériés",
    entry_qr_alt: "Code QR menant à la fiche en ligne de",
    notes: "Notes",
    publisher: "Éditeur",
    sources: "Sources et licences",
    sources_text: "Données de l'annuaire Proximités, tenues à jour par les communes et les organismes qui y contribuent. Référentiel des communes : INSEE (Code officiel géographique), licence Ouverte 2.0. Mairies : Annuaire de l'administration (DILA), licence Ouverte 2.0. Les fiches sont publiées sous licence Ouverte 2.0 (Etalab).",
    report: "Signaler une erreur",
    report_text: "Une information est inexacte ou a changé ? Signalez-le depuis la fiche en ligne (code QR de chaque fiche, bouton « Signaler une erreur ») ou auprès de l'éditeur de ce guide. La version en ligne est corrigée dès la mise à jour de la fiche.",
    entries: "fiches",
    days: "Jours",
    theme: "Thème",
    guide: "Guide des services publics",
};

const EN: Texts = Texts {
    up_to_date: "Up to date as of",
    communes_covered: "Communes covered",
    useful_numbers: "Useful numbers",
    useful_intro: "Free emergency numbers, answered day and night from any phone.",
    online: "This directory online, always up to date",
    online_qr_alt: "QR code leading to the online directory",
    contents: "Contents",
    index: "Index",
    index_names: "Alphabetical index",
    index_communes: "Index by commune",
    see: "see",
    continued: "(continued)",
    page: "p.",
    phone: "Phone",
    email: "E-mail",
    website: "Website",
    hours: "Opening hours",
    hours_unknown: "Opening hours not known",
    closed: "closed",
    unknown: "not known",
    holidays_closed: "Closed on public holidays",
    entry_qr_alt: "QR code leading to the online page of",
    notes: "Notes",
    publisher: "Publisher",
    sources: "Sources and licences",
    sources_text: "Data from the Proximités directory, kept up to date by the communes and bodies that contribute to it. Communes: INSEE (Code officiel géographique), Licence Ouverte 2.0. Town halls: Annuaire de l'administration (DILA), Licence Ouverte 2.0. Entries are published under the Licence Ouverte 2.0 (Etalab).",
    report: "Report an error",
    report_text: "Is something wrong or out of date? Report it from the online page of the entry (each entry's QR code, « Signaler une erreur » button) or to the publisher of this guide. The online version is corrected as soon as the entry is updated.",
    entries: "entries",
    days: "Days",
    theme: "Theme",
    guide: "Public services guide",
};

pub fn texts(lang: Lang) -> &'static Texts {
    match lang {
        Lang::Fr => &FR,
        Lang::En => &EN,
    }
}

/// One row of a weekly timetable: consecutive days with the same hours.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HoursRow {
    pub days: String,
    pub hours: String,
}

/// An entry as the guide prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: String,
    pub name: String,
    pub typology: String,
    pub typology_code: String,
    pub insee_code: String,
    pub commune: String,
    pub address: Vec<String>,
    pub phones: Vec<String>,
    pub email: Option<String>,
    pub website: Option<String>,
    /// Empty when the hours are unknown.
    pub hours: Vec<HoursRow>,
    pub holidays_closed: bool,
    pub access: String,
    pub verified: String,
    pub url: String,
    /// The QR code of `url`: where its pixels start in [`Guide::qr_pixels`] and its side, in
    /// modules (quiet zone included); `None` when it could not be made.
    pub qr: Option<(usize, usize)>,
}

/// A part of the body, in reading order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "k", rename_all = "lowercase")]
pub enum Block {
    /// A heading: level 1 (theme or commune), 2, or 3; `mark` is the theme's number shown
    /// beside its name (themes are never told apart by colour alone).
    Heading {
        level: u8,
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        mark: Option<String>,
        /// An anchor for the HTML page.
        anchor: String,
        /// For the headings of levels 1 and 2: their number among the places the contents
        /// and the PDF bookmarks point to (0 is the useful numbers).
        #[serde(skip_serializing_if = "Option::is_none")]
        target: Option<usize>,
    },
    Entry(Box<Entry>),
}

/// A line of the alphabetical index: an entry (by id) or a synonym pointing to a typology.
#[derive(Debug, Clone, Serialize)]
pub struct IndexLine {
    pub term: String,
    /// The entry's commune, told beside its name (names repeat across communes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For a synonym: the typology it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typology: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typology_label: Option<String>,
    /// The first letter, for the index's letter headings.
    pub letter: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommuneLine {
    pub code: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Emergency {
    pub number: &'static str,
    pub label: &'static str,
}

/// Everything a guide holds.
#[derive(Debug, Clone, Serialize)]
pub struct Guide {
    pub lang: &'static str,
    pub format: &'static str,
    pub group: &'static str,
    pub title: String,
    pub territory: String,
    pub publisher: String,
    pub date: String,
    pub date_iso: String,
    pub accent: String,
    pub accent_text: String,
    /// The virtual file of the logo, when there is one.
    pub logo: Option<&'static str>,
    /// The communes covered, by name; all of them also appear in the index by commune.
    pub communes: Vec<String>,
    pub entry_count: usize,
    pub themes: Vec<String>,
    pub online_url: String,
    pub online_qr: String,
    pub emergency: Vec<Emergency>,
    /// The body, the indexes and the codes: the layout receives them volume by volume, with
    /// their page numbers (src/directory/render.rs).
    #[serde(skip)]
    pub blocks: Vec<Block>,
    #[serde(skip)]
    pub index_names: Vec<IndexLine>,
    #[serde(skip)]
    pub index_communes: Vec<CommuneLine>,
    pub texts: &'static Texts,
    /// The entries' QR codes, one byte a module (0 dark, 255 light), one after the other: the
    /// layout reads them as raw images (`qr.bin`), far lighter than thousands of SVG drawings.
    #[serde(skip)]
    pub qr_pixels: Vec<u8>,
}

/// Everything the guide needs that is not in the choices.
pub struct Sources<'a> {
    pub taxonomy: &'a Taxonomy,
    pub locator: &'a Locator,
    pub hours: &'a HoursEvaluator,
    /// The name of the territory when it is an EPCI, a département or a région.
    pub territory_name: Option<String>,
    pub public_url: &'a str,
}

/// The communes of `area`, sorted by name.
pub fn communes_of<'l>(area: &Area, locator: &'l Locator) -> Vec<&'l Commune> {
    let mut communes: Vec<&Commune> = match area {
        Area::France => locator.communes().collect(),
        Area::Territory(t) => locator.communes().filter(|c| t.contains(c)).collect(),
        Area::Communes(codes) => codes.iter().filter_map(|c| locator.commune(c)).collect(),
    };
    communes.sort_by_cached_key(|c| collation_key(&c.name));
    communes
}

/// The key names are sorted by: accents, case and punctuation aside (French dictionary order
/// at the first level), the original as a tie-break.
pub fn collation_key(value: &str) -> (String, String) {
    let folded: String = crate::text::fold(value)
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (folded, value.to_owned())
}

/// Builds the guide. An empty selection is an error naming what was asked for.
pub fn build(choices: &Choices, services: &[Service], sources: &Sources<'_>) -> Result<Guide> {
    compose(choices, services, sources, true)
}

/// What the cover needs (counts, themes, communes), without composing the entries.
pub fn build_cover(
    choices: &Choices,
    services: &[Service],
    sources: &Sources<'_>,
) -> Result<Guide> {
    compose(choices, services, sources, false)
}

fn compose(
    choices: &Choices,
    services: &[Service],
    sources: &Sources<'_>,
    full: bool,
) -> Result<Guide> {
    let lang = choices.lang;
    let texts = texts(lang);
    let taxonomy = sources.taxonomy;
    let communes = communes_of(&choices.area, sources.locator);
    let territory = match &choices.area {
        Area::Territory(Territory::Commune(_)) | Area::Communes(_) if communes.len() == 1 => {
            communes[0].name.clone()
        }
        Area::Communes(_) => communes
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        _ => sources
            .territory_name
            .clone()
            .unwrap_or_else(|| choices.area.id()),
    };
    if services.is_empty() {
        return Err(Error::Invalid(vec![FieldError::new(
            "selection",
            format!(
                "aucune fiche publiée pour ces thèmes et typologies sur {territory} : rien à \
                 imprimer / no published entry for these themes and typologies in this territory"
            ),
        )]));
    }
    let commune_names: FxHashMap<&str, &str> = communes
        .iter()
        .map(|c| (c.insee_code.as_str(), c.name.as_str()))
        .collect();
    let commune_rank: FxHashMap<&str, usize> = communes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.insee_code.as_str(), i))
        .collect();
    let typology_rank: FxHashMap<&str, usize> = taxonomy
        .typologies
        .iter()
        .enumerate()
        .map(|(i, t)| (t.code.as_str(), i))
        .collect();
    let theme_rank = |code: &str| {
        taxonomy
            .typology(code)
            .and_then(|t| taxonomy.themes.iter().position(|th| th.code == t.theme))
            .unwrap_or(usize::MAX)
    };
    // Sort keys computed once: a guide may hold tens of thousands of entries.
    type Key = (usize, usize, usize, (String, String), String);
    let mut keyed: Vec<(Key, &Service)> = services
        .iter()
        .map(|s| {
            let theme = theme_rank(&s.content.typology);
            let typology = typology_rank
                .get(s.content.typology.as_str())
                .copied()
                .unwrap_or(usize::MAX);
            let commune = commune_rank
                .get(s.content.insee_code.as_str())
                .copied()
                .unwrap_or(usize::MAX);
            let name = collation_key(&s.content.name);
            let key = match choices.group {
                Grouping::Theme => (theme, typology, commune, name, s.id.to_string()),
                Grouping::Commune => (commune, theme, typology, name, s.id.to_string()),
            };
            (key, s)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));

    let label = |code: &str| -> String {
        taxonomy.typology(code).map_or_else(
            || code.to_owned(),
            |t| match lang {
                Lang::Fr => t.label_fr.clone(),
                Lang::En => t.label_en.clone(),
            },
        )
    };
    let theme_label = |code: &str| -> String {
        taxonomy.theme(code).map_or_else(
            || code.to_owned(),
            |t| match lang {
                Lang::Fr => t.label_fr.clone(),
                Lang::En => t.label_en.clone(),
            },
        )
    };
    let theme_number = |code: &str| -> String {
        let n = taxonomy
            .themes
            .iter()
            .position(|t| t.code == code)
            .map_or(0, |i| i + 1);
        format!("{n}")
    };

    let mut blocks = Vec::with_capacity(keyed.len() * 2);
    let mut current: (Option<String>, Option<String>, Option<String>) = (None, None, None);
    let mut themes_seen: Vec<String> = Vec::new();
    let mut index_names = Vec::with_capacity(keyed.len());
    let mut typologies_seen: Vec<String> = Vec::new();
    let mut communes_seen: FxHashSet<String> = FxHashSet::default();
    let entry_count = keyed.len();
    // Many entries share their hours (a network's offices, generated data): each distinct
    // timetable is read once.
    let mut timetables: FxHashMap<Option<&str>, (Vec<HoursRow>, bool)> = FxHashMap::default();
    let mut qr_pixels = Vec::new();
    let mut targets = 0;
    let mut next_target = || {
        targets += 1;
        Some(targets)
    };
    // Encoding a QR code (eight masks scored) is the costliest part of composing an entry:
    // done on every core beforehand.
    let mut codes = if full {
        qr_codes(keyed.iter().map(|(_, s)| s.id.as_str()), sources.public_url)
    } else {
        Vec::new()
    }
    .into_iter();
    for (_, service) in keyed {
        let c = &service.content;
        let theme = taxonomy
            .typology(&c.typology)
            .map(|t| t.theme.clone())
            .unwrap_or_default();
        let commune_name = commune_names
            .get(c.insee_code.as_str())
            .copied()
            .unwrap_or(c.insee_code.as_str())
            .to_owned();
        let (first, second, third) = match choices.group {
            Grouping::Theme => (theme.clone(), c.typology.clone(), c.insee_code.to_string()),
            Grouping::Commune => (c.insee_code.to_string(), theme.clone(), c.typology.clone()),
        };
        if current.0.as_ref() != Some(&first) {
            let (text, mark) = match choices.group {
                Grouping::Theme => (theme_label(&first), Some(theme_number(&first))),
                Grouping::Commune => (commune_name.clone(), None),
            };
            blocks.push(Block::Heading {
                level: 1,
                text,
                mark,
                anchor: format!("s-{first}"),
                target: next_target(),
            });
            current = (Some(first.clone()), None, None);
        }
        if current.1.as_ref() != Some(&second) {
            let (text, mark) = match choices.group {
                Grouping::Theme => (label(&second), None),
                Grouping::Commune => (theme_label(&second), Some(theme_number(&second))),
            };
            blocks.push(Block::Heading {
                level: 2,
                text,
                mark,
                anchor: format!("s-{first}-{second}"),
                target: next_target(),
            });
            current.1 = Some(second.clone());
            current.2 = None;
        }
        if current.2.as_ref() != Some(&third) {
            let text = match choices.group {
                Grouping::Theme => commune_name.clone(),
                Grouping::Commune => label(&third),
            };
            blocks.push(Block::Heading {
                level: 3,
                text,
                mark: None,
                anchor: format!("s-{first}-{second}-{third}"),
                target: None,
            });
            current.2 = Some(third.clone());
        }
        if !themes_seen.contains(&theme) {
            themes_seen.push(theme.clone());
        }
        if !typologies_seen.contains(&c.typology) {
            typologies_seen.push(c.typology.clone());
        }
        communes_seen.insert(c.insee_code.to_string());
        if !full {
            continue;
        }
        let timetable = timetables
            .entry(c.opening_hours.as_deref())
            .or_insert_with(|| timetable(c.opening_hours.as_deref(), sources, choices))
            .clone();
        let entry = entry(
            service,
            label(&c.typology),
            commune_name,
            timetable,
            // The code's pixels go into the guide's one buffer; the entry keeps where.
            codes.next().flatten().map(|(modules, side)| {
                let at = qr_pixels.len();
                qr_pixels.extend(modules.iter().map(|&dark| if dark { 0u8 } else { 255 }));
                (at, side)
            }),
            sources,
            choices,
        );
        index_names.push(IndexLine {
            letter: letter(&entry.name),
            term: entry.name.clone(),
            // The commune is told when the name does not already say it.
            detail: (!collation_key(&entry.name)
                .0
                .contains(&collation_key(&entry.commune).0))
            .then(|| entry.commune.clone()),
            id: Some(entry.id.clone()),
            typology: None,
            typology_label: None,
        });
        blocks.push(Block::Entry(Box::new(entry)));
    }
    if !full {
        blocks.clear();
    }
    // Synonyms (CCAS, PMI, déchetterie…) lead to the typology they stand for.
    for code in typologies_seen.iter().filter(|_| full) {
        let Some(typology) = taxonomy.typology(code) else {
            continue;
        };
        let own = label(code);
        for synonym in &typology.synonyms {
            if collation_key(synonym).0 == collation_key(&own).0 {
                continue;
            }
            index_names.push(IndexLine {
                letter: letter(synonym),
                term: synonym.clone(),
                detail: None,
                id: None,
                typology: Some(code.clone()),
                typology_label: Some(own.clone()),
            });
        }
    }
    index_names.sort_by_cached_key(|line| (collation_key(&line.term), line.detail.clone()));
    let index_communes = communes
        .iter()
        .filter(|c| communes_seen.contains(c.insee_code.as_str()))
        .map(|c| CommuneLine {
            code: c.insee_code.to_string(),
            name: c.name.clone(),
        })
        .collect();
    let title = choices.title.clone().unwrap_or_else(|| {
        let mut title = texts.guide.to_owned();
        if !choices.themes.is_empty() && choices.typologies.is_empty() {
            let labels: Vec<String> = choices.themes.iter().map(|t| theme_label(t)).collect();
            title = format!("{title} · {}", labels.join(", "));
        }
        title
    });
    let online_url = format!("{}/", sources.public_url);
    Ok(Guide {
        lang: match lang {
            Lang::Fr => "fr",
            Lang::En => "en",
        },
        format: match choices.format {
            super::Format::A5 => "a5",
            super::Format::A4 => "a4",
        },
        group: match choices.group {
            Grouping::Theme => "theme",
            Grouping::Commune => "commune",
        },
        publisher: choices
            .publisher
            .clone()
            .unwrap_or_else(|| territory.clone()),
        title,
        territory,
        date: long_date(choices.date, lang),
        date_iso: choices.date.to_string(),
        accent: choices.color.hex(),
        accent_text: choices.color.text_on().hex(),
        logo: choices.logo.as_ref().map(super::Logo::file_name),
        communes: communes.iter().map(|c| c.name.clone()).collect(),
        entry_count,
        themes: themes_seen.iter().map(|t| theme_label(t)).collect(),
        online_qr: qr_svg(&online_url),
        online_url,
        emergency: EMERGENCY
            .iter()
            .map(|(number, fr, en)| Emergency {
                number,
                label: if lang == Lang::Fr { fr } else { en },
            })
            .collect(),
        blocks,
        index_names,
        index_communes,
        texts,
        qr_pixels,
    })
}

fn letter(term: &str) -> String {
    collation_key(term)
        .0
        .chars()
        .next()
        .map(|c| {
            if c.is_ascii_digit() {
                "0–9".to_owned()
            } else {
                c.to_uppercase().to_string()
            }
        })
        .unwrap_or_default()
}

/// The weekly rows of a timetable, and whether it closes on public holidays.
fn timetable(
    hours: Option<&str>,
    sources: &Sources<'_>,
    choices: &Choices,
) -> (Vec<HoursRow>, bool) {
    let rows = sources
        .hours
        .typical_week(hours, choices.date)
        .map(|week| weekly_rows(&week, choices.lang, texts(choices.lang)))
        .unwrap_or_default();
    (rows, sources.hours.closed_on_public_holidays(hours))
}

fn entry(
    service: &Service,
    typology: String,
    commune: String,
    (hours, holidays_closed): (Vec<HoursRow>, bool),
    qr: Option<(usize, usize)>,
    sources: &Sources<'_>,
    choices: &Choices,
) -> Entry {
    let c = &service.content;
    let lang = choices.lang;
    let mut address = Vec::new();
    if let Some(street) = c.street.as_deref().filter(|s| !s.trim().is_empty()) {
        address.push(street.trim().to_owned());
    }
    let city = c.city.as_deref().unwrap_or(&commune);
    address.push(match c.postcode.as_deref() {
        Some(postcode) => format!("{postcode} {city}"),
        None => city.to_owned(),
    });
    let access = match c.wheelchair {
        Wheelchair::Yes if lang == Lang::Fr => "Accessible en fauteuil roulant",
        Wheelchair::Limited if lang == Lang::Fr => "Accès partiel en fauteuil roulant",
        Wheelchair::No if lang == Lang::Fr => "Non accessible en fauteuil roulant",
        Wheelchair::Unknown if lang == Lang::Fr => "Accessibilité non renseignée",
        Wheelchair::Yes => "Wheelchair accessible",
        Wheelchair::Limited => "Partly wheelchair accessible",
        Wheelchair::No => "Not wheelchair accessible",
        Wheelchair::Unknown => "Accessibility not known",
    };
    let access = match c
        .wheelchair_note
        .as_deref()
        .filter(|n| !n.trim().is_empty())
    {
        Some(note) => format!("{access} ({})", note.trim()),
        None => access.to_owned(),
    };
    let (verb, when) = match service.verified_at {
        Some(at) if lang == Lang::Fr => ("Vérifié le", at.date_naive()),
        Some(at) => ("Checked on", at.date_naive()),
        None if lang == Lang::Fr => ("Mis à jour le", service.updated_at.date_naive()),
        None => ("Updated on", service.updated_at.date_naive()),
    };
    let url = format!("{}/services/{}", sources.public_url, service.id);
    Entry {
        id: service.id.to_string(),
        name: c.name.clone(),
        typology,
        typology_code: c.typology.clone(),
        insee_code: c.insee_code.to_string(),
        commune,
        address,
        phones: c.phones.iter().map(|p| p.national()).collect(),
        email: c.email.clone(),
        website: c.website.clone(),
        hours,
        holidays_closed,
        access,
        verified: format!("{verb} {}", long_date(when, lang)),
        qr,
        url,
    }
}

const JOURS_COURTS: [&str; 7] = ["lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."];
const DAYS_SHORT: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
fn time(t: NaiveTime, lang: Lang, end: bool) -> String {
    use chrono::Timelike;
    let (h, m) = if end && t == NaiveTime::MIN {
        (24, 0)
    } else {
        (t.hour(), t.minute())
    };
    match lang {
        Lang::Fr if m == 0 => format!("{h} h"),
        Lang::Fr => format!("{h} h {m:02}"),
        Lang::En => format!("{h:02}:{m:02}"),
    }
}

/// The week as one row per distinct timetable, its days listed together even when they are not
/// consecutive: « lun.–ven. : 8 h 30–12 h, 13 h 30–17 h 30 », « mar., jeu. : 14 h–17 h »; the
/// open rows first (by their first day), then the closed days, then the unknown ones.
pub fn weekly_rows(week: &[TypicalDay; 7], lang: Lang, texts: &Texts) -> Vec<HoursRow> {
    let names = match lang {
        Lang::Fr => &JOURS_COURTS,
        Lang::En => &DAYS_SHORT,
    };
    let describe = |day: &TypicalDay| -> String {
        match day {
            None => texts.unknown.to_owned(),
            Some(intervals) if intervals.is_empty() => texts.closed.to_owned(),
            Some(intervals) => intervals
                .iter()
                .map(|(from, to)| format!("{}–{}", time(*from, lang, false), time(*to, lang, true)))
                .collect::<Vec<_>>()
                .join(", "),
        }
    };
    // Groups of days (as a bit set, Monday = bit 0) with the same hours, in order of first day.
    let mut groups: Vec<(&TypicalDay, u8)> = Vec::new();
    for (day, hours) in week.iter().enumerate() {
        match groups.iter_mut().find(|(h, _)| *h == hours) {
            Some((_, days)) => *days |= 1 << day,
            None => groups.push((hours, 1 << day)),
        }
    }
    let rank = |hours: &TypicalDay| match hours {
        Some(intervals) if !intervals.is_empty() => 0,
        Some(_) => 1,
        None => 2,
    };
    groups.sort_by_key(|(hours, days)| (rank(hours), days.trailing_zeros()));
    groups
        .into_iter()
        .map(|(hours, days)| HoursRow {
            days: day_list(days, names),
            hours: describe(hours),
        })
        .collect()
}

/// Days of a bit set as runs: « lun.–mer., ven. », « sam., dim. » (two days are not a range).
fn day_list(days: u8, names: &[&str; 7]) -> String {
    let mut runs = Vec::new();
    let mut day = 0;
    while day < 7 {
        if days & (1 << day) == 0 {
            day += 1;
            continue;
        }
        let start = day;
        while day + 1 < 7 && days & (1 << (day + 1)) != 0 {
            day += 1;
        }
        runs.push(match day - start {
            0 => names[start].to_owned(),
            1 => format!("{}, {}", names[start], names[day]),
            _ => format!("{}–{}", names[start], names[day]),
        });
        day += 1;
    }
    runs.join(", ")
}

/// The QR code of `url` as an SVG drawing, black on white with its quiet zone: one path of
/// horizontal runs of dark modules, which the layout parses thousands of times per guide.
pub fn qr_svg(url: &str) -> String {
    use std::fmt::Write;
    let Some((dark, size)) = qr_modules(url) else {
        // Only data far longer than an address fails; the guide then goes without this code.
        return String::new();
    };
    let mut path = String::with_capacity(size * size * 2);
    for (y, row) in dark.chunks(size).enumerate() {
        let mut x = 0;
        while x < size {
            if !row[x] {
                x += 1;
                continue;
            }
            let start = x;
            while x < size && row[x] {
                x += 1;
            }
            let run = x - start;
            let _ = write!(path, "M{start} {y}h{run}v1h-{run}z");
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" \
         fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>"
    )
}

/// The QR codes of the pages `/services/{id}` of `ids`, in order, encoded on every core.
fn qr_codes<'a>(
    ids: impl Iterator<Item = &'a str>,
    public_url: &str,
) -> Vec<Option<(Vec<bool>, usize)>> {
    let urls: Vec<String> = ids
        .map(|id| format!("{public_url}/services/{id}"))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = urls.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = urls
            .chunks(chunk)
            .map(|part| {
                (
                    part.len(),
                    scope.spawn(move || part.iter().map(|u| qr_modules(u)).collect::<Vec<_>>()),
                )
            })
            .collect();
        // A part that failed leaves its entries without a code, the others in their places.
        handles
            .into_iter()
            .flat_map(|(len, h)| h.join().unwrap_or_else(|_| vec![None; len]))
            .collect()
    })
}

/// The modules of the QR code of `url`, row by row (true for dark), with the 4-module quiet
/// zone around, and the side.
pub fn qr_modules(url: &str) -> Option<(Vec<bool>, usize)> {
    use qrcode::canvas::{Canvas, MaskPattern};
    use qrcode::{bits, ec, EcLevel};
    const QUIET: usize = 4;
    let bits = bits::encode_auto(url.as_bytes(), EcLevel::M).ok()?;
    let version = bits.version();
    let (data, correction) =
        ec::construct_codewords(&bits.into_bytes(), version, EcLevel::M).ok()?;
    let mut canvas = Canvas::new(version, EcLevel::M);
    canvas.draw_all_functional_patterns();
    canvas.draw_data(&data, &correction);
    // One fixed mask (its number is written in the code, readers take any): scoring the eight
    // masks to keep the best was half of composing a guide, for codes of 30 to 40 modules that
    // scan as well either way (checked with zbarimg on the printed pages).
    canvas.apply_mask(MaskPattern::Checkerboard);
    let width = usize::try_from(version.width()).ok()?;
    let side = width + 2 * QUIET;
    let mut modules = vec![false; side * side];
    for (i, color) in canvas.into_colors().into_iter().enumerate() {
        let (x, y) = (i % width, i / width);
        modules[(y + QUIET) * side + x + QUIET] = color == qrcode::Color::Dark;
    }
    Some((modules, side))
}
