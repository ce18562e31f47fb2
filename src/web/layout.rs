//! The frame of every citizen page: document head, skip link, header with the language switch,
//! footer; and the small helpers all pages share (texts in two languages, links that keep the
//! language, distances).

use maud::{html, Markup, DOCTYPE};

use super::assets;
use crate::search::hours::Lang;

/// The text in the page's language: French first, English second.
pub fn t(lang: Lang, fr: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Fr => fr,
        Lang::En => en,
    }
}

pub fn code(lang: Lang) -> &'static str {
    t(lang, "fr", "en")
}

/// `path` (which may hold a query) with `lang=en` added when the page is in English.
pub fn href(lang: Lang, path: &str) -> String {
    match lang {
        Lang::Fr => path.to_owned(),
        Lang::En if path.contains('?') => format!("{path}&lang=en"),
        Lang::En => format!("{path}?lang=en"),
    }
}

/// A distance as people read it: « 350 m », « 1,2 km », « 12 km » (decimal point in English).
pub fn distance(metres: f64, lang: Lang) -> String {
    if metres < 1_000.0 {
        format!("{} m", ((metres / 10.0).round() * 10.0) as i64)
    } else if metres < 10_000.0 {
        let km = format!("{:.1}", metres / 1_000.0);
        match lang {
            Lang::Fr => format!("{} km", km.replace('.', ",")),
            Lang::En => format!("{km} km"),
        }
    } else {
        format!("{} km", (metres / 1_000.0).round() as i64)
    }
}

/// A whole number with its thousands separated: « 66 899 531 » (a narrow no-break space in
/// French), "66,899,531".
pub fn number(n: i64, lang: Lang) -> String {
    let separator = match lang {
        Lang::Fr => '\u{202f}',
        Lang::En => ',',
    };
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(separator);
        }
        out.push(c);
    }
    out
}

/// What changes from one page to another in the frame.
pub struct Chrome<'a> {
    pub lang: Lang,
    /// The page's title, without the site's name.
    pub title: &'a str,
    /// The page's path and query without `lang`: the language switch links to it.
    pub path: &'a str,
    /// Which item of the main menu is the current page.
    pub current: Option<Section>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Home,
    Search,
    LifeEvents,
    Widget,
}

/// The document head: the title, the site's stylesheet (and the widget's colours), the script.
fn head(title: &str, theme_css: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) }
            // No favicon request.
            link rel="icon" href="data:,";
            link rel="stylesheet" href=(assets::url("site.css"));
            @if let Some(css) = theme_css { link rel="stylesheet" href=(css); }
            script src=(assets::url("app.js")) defer {}
        }
    }
}

/// A whole citizen page around `body` (the content of `<main>`).
pub fn page(chrome: &Chrome, body: Markup) -> Markup {
    let lang = chrome.lang;
    let other = match lang {
        Lang::Fr => Lang::En,
        Lang::En => Lang::Fr,
    };
    let menu = [
        (Section::Home, "/", t(lang, "Accueil", "Home")),
        (
            Section::Search,
            "/recherche",
            t(lang, "Rechercher", "Search"),
        ),
        (
            Section::LifeEvents,
            "/evenements-de-vie",
            t(lang, "Événements de vie", "Life events"),
        ),
        (
            Section::Widget,
            "/integrer",
            t(lang, "Intégrer sur votre site", "Embed on your site"),
        ),
    ];
    html! {
        (DOCTYPE)
        html lang=(code(lang)) {
            (head(&format!("{} — Proximités", chrome.title), None))
            body {
                a.skip href="#contenu" { (t(lang, "Aller au contenu", "Skip to content")) }
                header.site-header {
                    div.wrap {
                        a.brand href=(href(lang, "/")) {
                            "Proximités"
                            span.tagline { (t(lang, " · services publics près de chez vous", " · public services near you")) }
                        }
                        nav aria-label=(t(lang, "Menu principal", "Main menu")) {
                            ul {
                                @for (section, path, label) in menu {
                                    li {
                                        a href=(href(lang, path))
                                          aria-current=[(chrome.current == Some(section)).then_some("page")] { (label) }
                                    }
                                }
                                li {
                                    a href=(href(other, chrome.path)) lang=(code(other)) hreflang=(code(other)) {
                                        (t(lang, "English", "Français"))
                                    }
                                }
                            }
                        }
                    }
                }
                main #contenu tabindex="-1" {
                    div.wrap { (body) }
                }
                footer.site-footer {
                    div.wrap {
                        p {
                            (t(lang,
                               "Proximités : l'annuaire géolocalisé des services publics, tenu à jour par les communes et les organismes publics du territoire. Aucun cookie, aucun traceur.",
                               "Proximités: the geolocated directory of public services, kept up to date by the communes and public bodies of the territory. No cookies, no trackers."))
                        }
                        ul.footer-links {
                            li { a href=(href(lang, "/integrer")) { (t(lang, "Intégrer le service sur votre site", "Embed the service on your site")) } }
                            li { a href="/donnees-sig" { (t(lang, "Données SIG", "GIS data (in French)")) } }
                            li { a href=(href(lang, "/veille")) { (t(lang, "Veille territoriale", "Territorial monitoring")) } }
                            li { a href="/espace/annuaires/nouveau" { (t(lang, "Annuaires imprimés (contributeurs)", "Printed directories (contributors, in French)")) } }
                            li { a href="/api/v1/openapi.json" { (t(lang, "API ouverte (OpenAPI)", "Open API (OpenAPI)")) } }
                        }
                    }
                }
            }
        }
    }
}

/// The frame of the embedded widget: no site header, the territory's colour and title.
pub fn embed_page(lang: Lang, title: &str, theme_css: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(code(lang)) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href=(assets::url("site.css"));
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(theme_css);
                script src=(assets::url("app.js")) defer {}
            }
            body.embed data-embed="1" {
                main #contenu { (body) }
            }
        }
    }
}
