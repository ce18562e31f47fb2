//! Printable thematic directories (issue 7): the choices of a guide parsed into domain types,
//! the entries selected from the database, laid out with Typst into a tagged PDF booklet and
//! written as the same content in accessible HTML, rendered one at a time by a job queue whose
//! results are cached by data version and choices.

pub mod content;
pub mod html;
pub mod jobs;
pub mod join;
pub mod render;
pub mod routes;
pub mod store;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::coverage::{Area, AreaError};
use crate::error::{Error, FieldError};
use crate::search::hours::Lang;
use crate::taxonomy::Taxonomy;
use crate::territory::Locator;

/// The largest logo accepted: a print logo needs no more, and the whole upload stays small.
pub const MAX_LOGO_BYTES: usize = 2 * 1024 * 1024;
/// The most pixels of a PNG logo: decoded, each takes four bytes of memory.
pub const MAX_LOGO_PIXELS: u64 = 16_000_000;
/// The most elements of an SVG logo, and of `<use>` references in it: a logo has tens or
/// hundreds; a few kilobytes of nested references can otherwise ask for billions of drawings.
pub const MAX_LOGO_ELEMENTS: usize = 5_000;
pub const MAX_LOGO_USES: usize = 200;

/// The longest title, publisher name: they must fit on the cover.
pub const MAX_TEXT_CHARS: usize = 120;

/// How entries are ordered into sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grouping {
    /// Theme, then typology, then commune.
    Theme,
    /// Commune, then theme (entries by typology within).
    Commune,
}

/// The page format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A5 pages printed as a folded booklet: the page count is a multiple of 4.
    A5,
    /// A4 pages.
    A4,
}

/// An sRGB colour, `#RRGGBB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Color(pub [u8; 3]);

impl Color {
    /// The project's blue when none is asked for.
    pub const DEFAULT: Color = Color([0x1d, 0x4e, 0x89]);

    /// `#RRGGBB` or `#RGB`, read by the one colour parser ([`crate::colour::Rgb::parse`]).
    pub fn parse(value: &str) -> Result<Self, String> {
        crate::colour::Rgb::parse(value)
            .map(Color::from)
            .ok_or_else(|| {
                format!("« {value} » : couleur attendue au format #RRGGBB (ex. #1d4e89)")
            })
    }

    pub fn hex(self) -> String {
        self.rgb().hex()
    }

    fn rgb(self) -> crate::colour::Rgb {
        crate::colour::Rgb(self.0[0], self.0[1], self.0[2])
    }

    /// Black or white, whichever reads better on this colour (WCAG contrast ratio).
    pub fn text_on(self) -> Color {
        Color::from(self.rgb().text_on())
    }
}

impl From<crate::colour::Rgb> for Color {
    fn from(crate::colour::Rgb(r, g, b): crate::colour::Rgb) -> Self {
        Color([r, g, b])
    }
}

/// The logo's kind, told by its content (never by the name it was uploaded under).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogoKind {
    Png,
    Svg,
}

/// An uploaded logo, checked to be a PNG or an SVG of at most [`MAX_LOGO_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Logo {
    pub kind: LogoKind,
    pub bytes: Vec<u8>,
}

impl Logo {
    pub fn parse(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() > MAX_LOGO_BYTES {
            return Err(format!(
                "logo trop lourd : {} Ko (au plus {} Ko) / logo too large",
                bytes.len() / 1024,
                MAX_LOGO_BYTES / 1024
            ));
        }
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            // The header chunk must be there and name a non-empty image.
            let ok = bytes.len() > 24 && &bytes[12..16] == b"IHDR" && {
                let width = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
                let height = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
                width > 0 && height > 0
            };
            if !ok {
                return Err("logo PNG illisible / unreadable PNG logo".into());
            }
            let width = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
            let height = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
            if u64::from(width) * u64::from(height) > MAX_LOGO_PIXELS {
                return Err(format!(
                    "logo PNG trop grand : {width} × {height} pixels (au plus {} millions) / PNG \
                     logo too large",
                    MAX_LOGO_PIXELS / 1_000_000
                ));
            }
            return Ok(Logo {
                kind: LogoKind::Png,
                bytes,
            });
        }
        let text = std::str::from_utf8(&bytes)
            .ok()
            .map(|t| t.trim_start_matches('\u{feff}').trim_start());
        let is_svg = text.is_some_and(|t| {
            (t.starts_with("<?xml") || t.starts_with("<svg") || t.starts_with("<!--"))
                && t.contains("<svg")
        });
        if let Some(text) = text.filter(|_| is_svg) {
            check_svg(text)?;
            return Ok(Logo {
                kind: LogoKind::Svg,
                bytes,
            });
        }
        Err("le logo doit être une image PNG ou SVG / the logo must be a PNG or SVG image".into())
    }

    /// The virtual file the layout reads it from.
    pub fn file_name(&self) -> &'static str {
        match self.kind {
            LogoKind::Png => "logo.png",
            LogoKind::Svg => "logo.svg",
        }
    }
}

/// Refuses an SVG whose drawing would cost far more than its size says: too many elements or
/// references, references to references (each level multiplies the drawing), filters (drawn
/// as pixels), a document type (entity expansion).
fn check_svg(text: &str) -> Result<(), String> {
    let unreadable =
        |e: roxmltree::Error| format!("logo SVG illisible : {e} / unreadable SVG logo");
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: u32::try_from(MAX_LOGO_ELEMENTS * 4).unwrap_or(u32::MAX),
        ..roxmltree::ParsingOptions::default()
    };
    let document = roxmltree::Document::parse_with_options(text, options).map_err(unreadable)?;
    let elements: Vec<roxmltree::Node<'_, '_>> =
        document.descendants().filter(|n| n.is_element()).collect();
    if elements.len() > MAX_LOGO_ELEMENTS {
        return Err(format!(
            "logo SVG trop complexe : {} éléments (au plus {MAX_LOGO_ELEMENTS}) / SVG logo too \
             complex",
            elements.len()
        ));
    }
    let named = |name: &'static str| elements.iter().filter(move |n| n.tag_name().name() == name);
    if named("filter").next().is_some() {
        return Err(
            "les filtres SVG (ombres, flous) ne sont pas acceptés : exportez le logo sans effet, \
             ou en PNG / SVG filters are not accepted"
                .into(),
        );
    }
    let uses: Vec<_> = named("use").collect();
    if uses.len() > MAX_LOGO_USES {
        return Err(format!(
            "logo SVG trop complexe : {} références <use> (au plus {MAX_LOGO_USES}) / too many \
             <use> references",
            uses.len()
        ));
    }
    for reference in uses {
        let target = reference
            .attributes()
            .find(|a| a.name() == "href")
            .and_then(|a| a.value().strip_prefix('#'))
            .and_then(|id| elements.iter().find(|n| n.attribute("id") == Some(id)));
        if target.is_some_and(|t| t.descendants().any(|d| d.tag_name().name() == "use")) {
            return Err(
                "logo SVG refusé : une référence <use> en vise une autre (références \
                 imbriquées) ; exportez le logo « aplati » ou en PNG / nested <use> references"
                    .into(),
            );
        }
    }
    Ok(())
}

/// The choices of a guide as the API and the command line receive them (JSON body, form
/// fields, flags), before any check.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(default)]
pub struct RawChoices {
    /// `commune:63113`, `epci:246300701`, `departement:63`, `region:84` or
    /// `communes:63113,63300`.
    pub territory: String,
    /// Theme codes (every typology of each).
    pub themes: Vec<String>,
    /// Typology codes.
    pub typologies: Vec<String>,
    /// `theme` (default) or `commune`.
    pub group: Option<String>,
    /// `a5` (default, a booklet) or `a4`.
    pub format: Option<String>,
    pub title: Option<String>,
    /// Edition date, `YYYY-MM-DD` (default today).
    pub date: Option<String>,
    /// The publishing body (default: the territory's name).
    pub publisher: Option<String>,
    /// Accent colour `#RRGGBB`.
    pub color: Option<String>,
    /// `fr` (default) or `en`, for the fixed texts.
    pub lang: Option<String>,
}

/// A guide's choices, checked against the taxonomy and the territory.
#[derive(Debug, Clone, PartialEq)]
pub struct Choices {
    pub area: Area,
    /// Theme codes asked for, in the taxonomy's order.
    pub themes: Vec<String>,
    /// Typology codes asked for on their own, in the taxonomy's order.
    pub typologies: Vec<String>,
    pub group: Grouping,
    pub format: Format,
    /// The title as asked for; `None` for the default, which names the territory.
    pub title: Option<String>,
    pub date: NaiveDate,
    pub publisher: Option<String>,
    pub color: Color,
    pub lang: Lang,
    pub logo: Option<Logo>,
}

impl Choices {
    /// Checks every choice and names each wrong one; an unknown territory is a 404.
    pub fn parse(
        raw: &RawChoices,
        logo: Option<Vec<u8>>,
        taxonomy: &Taxonomy,
        locator: &Locator,
        today: NaiveDate,
    ) -> Result<Self, Error> {
        let mut errors = Vec::new();
        let area = match Area::parse(&raw.territory, locator) {
            Ok(Area::France) => {
                errors.push(FieldError::new(
                    "territory",
                    "un annuaire imprimé porte sur une commune, un EPCI, un département, une \
                     région ou une liste de communes, pas sur toute la France / a printed \
                     directory covers a commune, an EPCI, a département, a région or a list of \
                     communes",
                ));
                None
            }
            Ok(area) => Some(area),
            Err(AreaError::Malformed(m)) => {
                errors.push(FieldError::new("territory", m));
                None
            }
            Err(unknown) => return Err(unknown.into_error("territory")),
        };
        let codes = |values: &[String]| -> Vec<String> {
            values
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut themes = codes(&raw.themes);
        for code in &themes {
            if taxonomy.theme(code).is_none() {
                errors.push(FieldError::new(
                    "theme",
                    format!(
                        "thème inconnu « {code} » (connus : {}) / unknown theme",
                        taxonomy
                            .themes
                            .iter()
                            .map(|t| t.code.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        themes.sort_by_key(|code| taxonomy.theme(code).map_or(i64::MAX, |t| t.position));
        themes.dedup();
        let mut typologies = codes(&raw.typologies);
        for code in &typologies {
            match taxonomy.typology(code) {
                None => errors.push(FieldError::new(
                    "typology",
                    format!("typologie inconnue « {code} » (voir /api/v1/typologies) / unknown typology"),
                )),
                Some(t) if t.retired => errors.push(FieldError::new(
                    "typology",
                    format!("typologie retirée « {code} » / retired typology"),
                )),
                Some(_) => {}
            }
        }
        let position = |code: &String| {
            taxonomy
                .typologies
                .iter()
                .position(|t| &t.code == code)
                .unwrap_or(usize::MAX)
        };
        typologies.sort_by_key(position);
        typologies.dedup();
        let group = match raw.group.as_deref().map(str::trim) {
            None | Some("") | Some("theme") => Grouping::Theme,
            Some("commune") => Grouping::Commune,
            Some(other) => {
                errors.push(FieldError::new(
                    "group",
                    format!("« {other} » : theme ou commune / theme or commune"),
                ));
                Grouping::Theme
            }
        };
        let format = match raw.format.as_deref().map(|f| f.trim().to_ascii_lowercase()) {
            None => Format::A5,
            Some(f) if f.is_empty() || f == "a5" => Format::A5,
            Some(f) if f == "a4" => Format::A4,
            Some(other) => {
                errors.push(FieldError::new(
                    "format",
                    format!("« {other} » : a5 ou a4 / a5 or a4"),
                ));
                Format::A5
            }
        };
        let mut text = |field: &str, value: &Option<String>| -> Option<String> {
            let value = value.as_deref().map(str::trim).filter(|v| !v.is_empty())?;
            if let Err(message) =
                crate::services::validate::check_text(value, MAX_TEXT_CHARS, false)
            {
                errors.push(FieldError::new(field, message));
                return None;
            }
            Some(value.to_owned())
        };
        let title = text("title", &raw.title);
        let publisher = text("publisher", &raw.publisher);
        let date = match raw.date.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
            None => today,
            Some(d) => match crate::dates::parse_date(d) {
                Ok(date) => date,
                Err(message) => {
                    errors.push(FieldError::new("date", message));
                    today
                }
            },
        };
        let color = match raw
            .color
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            None => Color::DEFAULT,
            Some(c) => Color::parse(c).unwrap_or_else(|m| {
                errors.push(FieldError::new("color", m));
                Color::DEFAULT
            }),
        };
        let lang = match raw.lang.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            None => Lang::Fr,
            Some(l) => Lang::from_code(l).unwrap_or_else(|| {
                errors.push(FieldError::new(
                    "lang",
                    format!("« {l} » : fr ou en / fr or en"),
                ));
                Lang::Fr
            }),
        };
        let logo = match logo {
            None => None,
            Some(bytes) if bytes.is_empty() => None,
            Some(bytes) => Logo::parse(bytes).map_or_else(
                |m| {
                    errors.push(FieldError::new("logo", m));
                    None
                },
                Some,
            ),
        };
        match area {
            Some(area) if errors.is_empty() => Ok(Choices {
                area,
                themes,
                typologies,
                group,
                format,
                title,
                date,
                publisher,
                color,
                lang,
                logo,
            }),
            _ => Err(Error::Invalid(errors)),
        }
    }

    /// Every typology the guide lists: those of the themes asked for and those asked for on
    /// their own, or all of them when neither was asked for; retired ones only through their
    /// theme (their entries still exist).
    pub fn typology_codes(&self, taxonomy: &Taxonomy) -> Vec<String> {
        taxonomy
            .typologies
            .iter()
            .filter(|t| {
                (self.themes.is_empty() && self.typologies.is_empty())
                    || self.themes.contains(&t.theme)
                    || self.typologies.contains(&t.code)
            })
            .map(|t| t.code.clone())
            .collect()
    }

    /// A digest of everything that changes the output, with the data version and the public
    /// address the QR codes point to: the cache key.
    pub fn key(&self, data_version: &str, public_url: &str) -> String {
        let mut h = Sha256::new();
        let mut field = |value: &[u8]| {
            h.update((value.len() as u64).to_le_bytes());
            h.update(value);
        };
        field(data_version.as_bytes());
        field(public_url.as_bytes());
        field(self.area.id().as_bytes());
        field(self.themes.join(",").as_bytes());
        field(self.typologies.join(",").as_bytes());
        field(format!("{:?}{:?}", self.group, self.format).as_bytes());
        field(self.title.as_deref().unwrap_or("\u{0}").as_bytes());
        field(self.date.to_string().as_bytes());
        field(self.publisher.as_deref().unwrap_or("\u{0}").as_bytes());
        field(self.color.hex().as_bytes());
        field(format!("{:?}", self.lang).as_bytes());
        field(self.logo.as_ref().map_or(&[][..], |l| &l.bytes[..]));
        hex::encode(&h.finalize()[..16])
    }
}

/// The public address of the online directory the QR codes point to, without a final slash.
pub fn public_url(configured: Option<&str>) -> Result<String, String> {
    let value = configured
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or(crate::app::DEFAULT_PUBLIC_URL);
    let url = url::Url::parse(value)
        .map_err(|e| format!("adresse publique invalide « {value} » : {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "adresse publique invalide « {value} » : http ou https"
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// Writes `bytes` to `path` whole or not at all: into a temporary file beside it, renamed over
/// it once complete.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| {
        anyhow::anyhow!(
            "{} : écriture impossible / cannot write ({e})",
            path.display()
        )
    })?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| {
        anyhow::anyhow!(
            "{} : écriture impossible / cannot write ({})",
            path.display(),
            e.error
        )
    })?;
    Ok(())
}

/// Reads a logo file for the command line, refusing a file too large before reading it.
pub fn read_logo(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("logo {} : {e}", path.display()))?
        .len();
    if size > MAX_LOGO_BYTES as u64 {
        return Err(format!(
            "logo {} trop lourd : {} Ko (au plus {} Ko) / logo too large",
            path.display(),
            size / 1024,
            MAX_LOGO_BYTES / 1024
        ));
    }
    std::fs::read(path).map_err(|e| format!("logo {} : {e}", path.display()))
}

#[cfg(test)]
mod tests;
