//! The widget communes embed: its settings (territory, themes, colour, title), the colour
//! contrast rules that keep it accessible in any identity, its stylesheet, the `widget.js`
//! loader and the generator page where a webmaster chooses and copies the snippets.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::layout::{self, t, Chrome, Section};
use super::search::PageParams;
use super::{encode_query, lang_of, path_without_lang};
use crate::error::{Error, FieldError, Result};
use crate::search::engine::Territory;
use crate::search::hours::Lang;
use crate::state::AppState;

/// The accent colour when none is chosen: passes both contrast rules on white.
pub const DEFAULT_COLOR: Rgb = Rgb(0x00, 0x5a, 0x9c);
/// WCAG 2.1 1.4.3: text.
pub const TEXT_CONTRAST: f64 = 4.5;
/// WCAG 2.1 1.4.11: controls and their borders.
pub const CONTROL_CONTRAST: f64 = 3.0;

pub use crate::colour::{Rgb, WHITE};

/// How an accent colour fares: text on white and white on it use 4.5:1, controls 3:1.
pub struct ContrastCheck {
    pub asked: Rgb,
    pub ratio: f64,
    pub text_ok: bool,
    pub controls_ok: bool,
    /// The colour the widget uses: the one asked when it passes, else the nearest darker one.
    pub used: Rgb,
}

pub fn check_contrast(asked: Rgb) -> ContrastCheck {
    let ratio = asked.contrast(WHITE);
    let text_ok = ratio >= TEXT_CONTRAST;
    ContrastCheck {
        asked,
        ratio,
        text_ok,
        controls_ok: ratio >= CONTROL_CONTRAST,
        used: if text_ok {
            asked
        } else {
            asked.darkened_to(TEXT_CONTRAST)
        },
    }
}

/// The widget's settings, from `/embed`'s query.
pub struct EmbedSettings {
    pub territory: Option<String>,
    pub themes: Vec<String>,
    pub typology: Option<String>,
    pub color: ContrastCheck,
    pub title: String,
    pub map: bool,
    pub lang: Lang,
    pub errors: Vec<FieldError>,
}

impl EmbedSettings {
    pub fn parse(state: &AppState, params: &PageParams, lang: Lang) -> Self {
        let mut errors = Vec::new();
        let territory = params
            .territory
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .and_then(|v| match Territory::parse(v, &state.reference.locator) {
                Ok(_) => Some(v.to_owned()),
                Err(message) => {
                    errors.push(FieldError::new("territory", message));
                    None
                }
            });
        let themes = params
            .theme
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .filter(|c| {
                let known = state.reference.taxonomy.theme(c).is_some();
                if !known {
                    errors.push(FieldError::new("theme", format!("thème inconnu « {c} »")));
                }
                known
            })
            .map(str::to_owned)
            .collect();
        let asked = params.color.as_deref().and_then(Rgb::parse);
        let title = params
            .title
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(80).collect())
            .unwrap_or_else(|| {
                t(
                    lang,
                    "Services publics près de chez vous",
                    "Public services near you",
                )
                .to_owned()
            });
        Self {
            territory,
            themes,
            typology: params.typology.clone().filter(|v| !v.trim().is_empty()),
            color: check_contrast(asked.unwrap_or(DEFAULT_COLOR)),
            title,
            map: params.map.as_deref() == Some("1"),
            lang,
            errors,
        }
    }

    /// The typologies of the chosen themes, when there are any.
    pub fn theme_typologies(&self, state: &AppState) -> Option<Vec<String>> {
        (!self.themes.is_empty()).then(|| {
            state
                .reference
                .taxonomy
                .typologies
                .iter()
                .filter(|ty| self.themes.contains(&ty.theme))
                .map(|ty| ty.code.clone())
                .collect()
        })
    }

    /// The settings the widget's form carries from one search to the next.
    pub fn hidden_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = Vec::new();
        if let Some(territory) = &self.territory {
            fields.push(("territory", territory.clone()));
        }
        if !self.themes.is_empty() {
            fields.push(("theme", self.themes.join(",")));
        }
        fields.push(("color", self.color.asked.hex()));
        fields.push(("title", self.title.clone()));
        if self.map {
            fields.push(("map", "1".into()));
        }
        if self.lang == Lang::En {
            fields.push(("lang", "en".into()));
        }
        fields
    }

    pub fn theme_css_url(&self) -> String {
        format!(
            "/embed/theme.css?color={}",
            self.color.used.hex().trim_start_matches('#')
        )
    }

    /// The `/embed` query of these settings.
    pub fn embed_query(&self) -> String {
        encode_query(&self.hidden_fields())
    }
}

/// `GET /embed/theme.css`: the widget's accent colour as CSS variables.
#[utoipa::path(get, path = "/embed/theme.css", tag = "pages",
    params(("color" = Option<String>, Query, description = "RRGGBB")),
    responses((status = 200, description = "Feuille de style", content_type = "text/css")))]
pub async fn theme_css(RawQuery(query): RawQuery) -> Response {
    let params: PageParams =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let colour = check_contrast(
        params
            .color
            .as_deref()
            .and_then(Rgb::parse)
            .unwrap_or(DEFAULT_COLOR),
    )
    .used;
    let css = format!(
        ":root{{--accent:{};--accent-contrast:#ffffff}}\n",
        colour.hex()
    );
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        css,
    )
        .into_response()
}

/// `GET /widget.js`: the loader communes paste in their pages.
#[utoipa::path(get, path = "/widget.js", tag = "pages",
    responses((status = 200, description = "Chargeur du widget", content_type = "text/javascript")))]
pub async fn loader(headers: HeaderMap) -> Result<Response> {
    let asset = super::assets::asset("widget.js").ok_or_else(|| Error::NotFound {
        what: "fichier",
        id: "widget.js".into(),
    })?;
    // Its URL is pasted in other sites and never changes: a short cache lets fixes through.
    let mut response = super::assets::respond(asset, &headers, "public, max-age=3600");
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(response)
}

fn ratio_text(ratio: f64, lang: Lang) -> String {
    let text = format!("{ratio:.1}:1");
    match lang {
        Lang::Fr => text.replace('.', ","),
        Lang::En => text,
    }
}

/// `GET /integrer`: the widget generator.
#[utoipa::path(get, path = "/integrer", tag = "pages",
    responses((status = 200, description = "Générateur du widget (HTML)", content_type = "text/html")))]
pub async fn generator(
    State(state): State<AppState>,
    uri: Uri,
    crate::admission::PublicBase(origin): crate::admission::PublicBase,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let lang = lang_of(query.as_deref());
    let raw: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let value = |key: &str| {
        raw.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let chosen_themes: Vec<String> = raw
        .iter()
        .filter(|(k, _)| k == "theme")
        .map(|(_, v)| v.clone())
        .collect();
    let typed_territory = value("territoire");
    let mut errors = Vec::new();
    let territory = match typed_territory.as_deref() {
        Some(typed) => super::resolve_territory(&state, typed).await?,
        None => None,
    };
    if typed_territory.is_some() && territory.is_none() {
        errors.push(FieldError::new(
            "territoire",
            t(lang, "Territoire introuvable : saisissez un nom ou un code de commune, d'EPCI ou de département.", "Territory not found: type the name or code of a commune, an EPCI or a département."),
        ));
    }
    let typed_colour = value("couleur").unwrap_or_else(|| DEFAULT_COLOR.hex());
    let colour = match Rgb::parse(&typed_colour) {
        Some(c) => c,
        None => {
            errors.push(FieldError::new(
                "couleur",
                t(
                    lang,
                    "Couleur attendue au format #RRGGBB.",
                    "Colour expected as #RRGGBB.",
                ),
            ));
            DEFAULT_COLOR
        }
    };
    let contrast = check_contrast(colour);
    let title = value("titre").unwrap_or_default();
    let with_map = value("carte").is_some();
    let widget_lang = match value("langue").as_deref() {
        Some("en") => Lang::En,
        _ => Lang::Fr,
    };

    let settings = EmbedSettings {
        territory: territory.as_ref().map(|(code, _)| code.clone()),
        themes: chosen_themes
            .iter()
            .filter(|c| state.reference.taxonomy.theme(c).is_some())
            .cloned()
            .collect(),
        typology: None,
        color: check_contrast(colour),
        title: if title.is_empty() {
            t(
                widget_lang,
                "Services publics près de chez vous",
                "Public services near you",
            )
            .to_owned()
        } else {
            title.clone()
        },
        map: with_map,
        lang: widget_lang,
        errors: Vec::new(),
    };
    let embed_url = format!("{origin}/embed?{}", settings.embed_query());
    let mut data = vec![(
        "data-territory",
        settings.territory.clone().unwrap_or_default(),
    )];
    data.push(("data-theme", settings.themes.join(",")));
    data.push(("data-color", settings.color.asked.hex()));
    data.push(("data-title", settings.title.clone()));
    data.push(("data-map", if with_map { "1" } else { "0" }.to_owned()));
    data.push(("data-lang", layout::code(widget_lang).to_owned()));
    let attributes: String = data
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!(" {k}=\"{}\"", attribute_escape(v)))
        .collect();
    let script_snippet = format!("<script src=\"{origin}/widget.js\"{attributes} async></script>");
    let iframe_snippet = format!(
        "<iframe src=\"{}\" title=\"{}\" allow=\"geolocation\" loading=\"lazy\" style=\"width:100%;height:640px;border:0\"></iframe>",
        attribute_escape(&embed_url),
        attribute_escape(&settings.title)
    );
    let preview_src = format!("/embed?{}", settings.embed_query());
    let path = path_without_lang(&uri);
    let error_of = |field: &str| errors.iter().find(|e| e.field == field);
    let body = html! {
        h1 { (t(lang, "Intégrer Proximités sur votre site", "Embed Proximités on your site")) }
        p { (t(lang,
            "Choisissez le territoire, les thèmes et les couleurs de votre collectivité, vérifiez l'aperçu, puis copiez l'un des deux codes dans votre page. Le widget ne dépose aucun cookie et n'appelle aucun service tiers : pas de bandeau de consentement à prévoir.",
            "Choose your territory, themes and colours, check the preview, then copy one of the two snippets into your page. The widget sets no cookie and calls no third party: no consent banner is needed.")) }
        form.generator method="get" action="/integrer" data-live="apercu" {
            @if lang == Lang::En { input type="hidden" name="lang" value="en"; }
            div.field {
                label for="g-territoire" { (t(lang, "Territoire", "Territory")) span.hint { (t(lang, " (commune, EPCI ou département : nom ou code)", " (commune, EPCI or département: name or code)")) } }
                input #g-territoire type="text" name="territoire" value=[typed_territory.as_deref()]
                    aria-invalid=[error_of("territoire").map(|_| "true")] aria-describedby=[error_of("territoire").map(|_| "g-territoire-erreur")];
                @if let Some(e) = error_of("territoire") { p.field-error #g-territoire-erreur { (e.message) } }
            }
            fieldset {
                legend { (t(lang, "Thèmes proposés (aucun : tous)", "Themes offered (none: all)")) }
                @for theme in &state.reference.taxonomy.themes {
                    div.check {
                        input id=(format!("g-theme-{}", theme.code)) type="checkbox" name="theme" value=(theme.code) checked[chosen_themes.contains(&theme.code)];
                        label for=(format!("g-theme-{}", theme.code)) { (match lang { Lang::Fr => &theme.label_fr, Lang::En => &theme.label_en }) }
                    }
                }
            }
            div.field {
                label for="g-titre" { (t(lang, "Titre du widget", "Widget title")) }
                input #g-titre type="text" name="titre" maxlength="80" value=(title);
            }
            div.field {
                label for="g-couleur" { (t(lang, "Couleur d'accent", "Accent colour")) span.hint { " (#RRGGBB)" } }
                input #g-couleur type="text" name="couleur" value=(typed_colour) pattern="#?[0-9a-fA-F]{6}"
                    aria-invalid=[error_of("couleur").map(|_| "true")] aria-describedby="g-couleur-contraste";
                @if let Some(e) = error_of("couleur") { p.field-error { (e.message) } }
            }
            div.check {
                input #g-carte type="checkbox" name="carte" value="1" checked[with_map];
                label for="g-carte" { (t(lang, "Proposer la carte", "Offer the map")) }
            }
            div.field {
                label for="g-langue" { (t(lang, "Langue du widget", "Widget language")) }
                select #g-langue name="langue" {
                    option value="fr" selected[widget_lang == Lang::Fr] { "Français" }
                    option value="en" selected[widget_lang == Lang::En] { "English" }
                }
            }
            button.primary type="submit" { (t(lang, "Mettre à jour l'aperçu", "Update the preview")) }
        }
        section #apercu aria-labelledby="apercu-titre" data-live-region {
            h2 #apercu-titre { (t(lang, "Contraste, aperçu et codes", "Contrast, preview and snippets")) }
            div #g-couleur-contraste.contrast role="status" {
                p {
                    (t(lang, "Contraste avec le blanc : ", "Contrast with white: ")) strong { (ratio_text(contrast.ratio, lang)) }
                }
                ul {
                    li { (if contrast.text_ok { t(lang, "Texte : conforme (4,5:1 requis).", "Text: compliant (4.5:1 required).") } else { t(lang, "Texte : insuffisant (4,5:1 requis).", "Text: insufficient (4.5:1 required).") }) }
                    li { (if contrast.controls_ok { t(lang, "Contrôles : conformes (3:1 requis).", "Controls: compliant (3:1 required).") } else { t(lang, "Contrôles : insuffisants (3:1 requis).", "Controls: insufficient (3:1 required).") }) }
                }
                @if !contrast.text_ok {
                    p.warning { (t(lang, "Le widget utilisera la teinte plus foncée ", "The widget will use the darker shade ")) strong { (contrast.used.hex()) } (t(lang, ", qui atteint 4,5:1.", ", which reaches 4.5:1.")) }
                }
            }
            @if let Some((code, name)) = &territory {
                p { (t(lang, "Territoire retenu : ", "Territory: ")) strong { (name) } " (" code { (code) } ")" }
            }
            h3 { (t(lang, "Aperçu", "Preview")) }
            iframe.preview src=(preview_src) title=(format!("{} : {}", t(lang, "Aperçu du widget", "Widget preview"), settings.title)) {}
            h3 { label for="g-script" { (t(lang, "Code à coller (avec script)", "Snippet to paste (with script)")) } }
            textarea #g-script readonly rows="4" { (script_snippet) }
            button.secondary type="button" hidden data-copy="g-script" data-copied=(t(lang, "Copié", "Copied")) { (t(lang, "Copier le code", "Copy the snippet")) }
            h3 { label for="g-iframe" { (t(lang, "Code sans script (pour les CMS qui retirent les scripts)", "Snippet without script (for CMSs that strip scripts)")) } }
            textarea #g-iframe readonly rows="4" { (iframe_snippet) }
            button.secondary type="button" hidden data-copy="g-iframe" data-copied=(t(lang, "Copié", "Copied")) { (t(lang, "Copier le code", "Copy the snippet")) }
            p.copy-status role="status" data-copy-status {}
        }
    };
    let page = layout::page(
        &Chrome {
            lang,
            title: t(lang, "Intégrer le widget", "Embed the widget"),
            path: &path,
            current: Some(Section::Widget),
        },
        body,
    );
    Ok(page.into_response())
}

fn attribute_escape(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text a visitor can put in `couleur=` is a colour or nothing, never a panic
        /// (a multibyte character among six bytes used to be sliced inside itself).
        #[test]
        fn colours_parse_any_text_without_panicking(text in "\\PC{0,8}") {
            if let Some(rgb) = Rgb::parse(&text) {
                proptest::prop_assert_eq!(Rgb::parse(&rgb.hex()), Some(rgb));
            }
        }
    }

    #[test]
    fn colours_with_multibyte_characters_are_refused() {
        assert_eq!(Rgb::parse("aé12b"), None);
        assert_eq!(Rgb::parse("#€1"), None);
        assert_eq!(Rgb::parse("#1A2b3C"), Some(Rgb(0x1a, 0x2b, 0x3c)));
        assert_eq!(Rgb::parse("fa0"), Some(Rgb(0xff, 0xaa, 0x00)));
    }

    #[test]
    fn contrast_ratios_match_wcag() {
        assert!((WHITE.contrast(Rgb(0, 0, 0)) - 21.0).abs() < 1e-9);
        assert!((Rgb(0x76, 0x76, 0x76).contrast(WHITE) - 4.54).abs() < 0.01);
        let pale = check_contrast(Rgb::parse("#ffcc00").unwrap());
        assert!(!pale.text_ok && !pale.controls_ok);
        assert!(pale.used.contrast(WHITE) >= TEXT_CONTRAST);
        let blue = check_contrast(DEFAULT_COLOR);
        assert!(blue.text_ok && blue.used == DEFAULT_COLOR);
        assert_eq!(Rgb::parse("#0af"), Some(Rgb(0, 0xaa, 0xff)));
        assert_eq!(Rgb::parse("blue"), None);
    }
}
