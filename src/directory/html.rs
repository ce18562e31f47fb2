//! The HTML side of printed directories: a guide as an accessible web page (the same content
//! as its PDF), and the contributor-space pages to choose a guide, preview its cover and follow
//! its making.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::content::{Block, Entry, Guide};
use super::jobs::{JobStatus, Stage};
use crate::espace::{self, Session};
use crate::taxonomy::Taxonomy;

/// The frame of a guide's HTML version: a document of its own, carrying its style, because it
/// is downloaded, kept and read offline like the PDF (not a page of the site).
fn document(lang: &str, title: &str, body: Markup) -> Markup {
    let skip = if lang == "en" {
        "Skip to content"
    } else {
        "Aller au contenu"
    };
    html! {
        (DOCTYPE)
        html lang=(lang) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                a.skip href="#contenu" { (skip) }
                main #contenu tabindex="-1" { (body) }
            }
        }
    }
}

const CSS: &str = "
body{font-family:'DejaVu Sans',Verdana,sans-serif;font-size:1.1rem;line-height:1.5;margin:0 auto;max-width:50rem;padding:0 1rem;color:#111;background:#fff}
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem;outline:3px solid #000}
h1,h2,h3{line-height:1.25}
.cover{border:3px solid var(--accent,#1d4e89);padding:1rem;margin:1rem 0}
.band{background:var(--accent,#1d4e89);color:var(--on-accent,#fff);padding:1rem}
.band h1{margin:0}
article.entry{border-left:4px solid var(--accent,#1d4e89);padding-left:.75rem;margin:1.25rem 0}
article.entry h5{margin:0;font-size:1.15rem}
table{border-collapse:collapse}th,td{text-align:left;padding:.15rem .75rem .15rem 0;vertical-align:top}
.emergency td:first-child{font-size:1.6rem;font-weight:bold}
label{display:block;font-weight:bold;margin-top:1rem}
input,select,button{font-size:1rem;padding:.4rem}
fieldset{margin-top:1rem}
.hint{font-weight:normal;color:#333;font-size:.95rem}
progress{width:100%;height:1.5rem}
:focus-visible{outline:3px solid #000;outline-offset:2px}
";

/// The guide as an HTML page, in the guide's language.
pub fn guide(g: &Guide) -> Markup {
    let t = g.texts;
    let style = format!("--accent:{};--on-accent:{}", g.accent, g.accent_text);
    let body = html! {
        div style=(style) {
            header.cover {
                p { strong { (g.publisher) } }
                div.band {
                    h1 { (g.title) }
                    p { (g.territory) }
                }
                p { (t.up_to_date) " " (g.date) }
                p { strong { (t.communes_covered) " : " } (g.communes.join(" · ")) }
            }
            nav aria-labelledby="sommaire" {
                h2 #sommaire { (t.contents) }
                ul {
                    li { a href="#numeros" { (t.useful_numbers) } }
                    @for b in &g.blocks {
                        @if let Block::Heading { level: 1, text, mark, anchor, .. } = b {
                            li { a href={ "#" (anchor) } { (heading_text(text, mark.as_deref())) } }
                        }
                    }
                    li { a href="#index" { (t.index) } }
                }
            }
            section aria-labelledby="numeros" {
                h2 #numeros { (t.useful_numbers) }
                p { (t.useful_intro) }
                table.emergency {
                    caption { (t.useful_numbers) }
                    thead { tr { th scope="col" { "N°" } th scope="col" { "Service" } } }
                    tbody {
                        @for n in &g.emergency {
                            tr { td { a href={ "tel:" (n.number) } { (n.number) } } td { (n.label) } }
                        }
                    }
                }
                p { (t.online) " : " a href=(g.online_url) { (g.online_url) } }
            }
            @for b in &g.blocks {
                @match b {
                    // Level 1 headings of the guide sit under the page's own h1: one level down.
                    Block::Heading { level, text, mark, anchor, .. } => {
                        @let text = heading_text(text, mark.as_deref());
                        @match level {
                            1 => h2 id=(anchor) { (text) },
                            2 => h3 id=(anchor) { (text) },
                            _ => h4 id=(anchor) { (text) },
                        }
                    }
                    Block::Entry(e) => (entry(e, g)),
                }
            }
            section aria-labelledby="index" {
                h2 #index { (t.index) }
                h3 { (t.index_names) }
                ul {
                    @for line in &g.index_names {
                        li {
                            @if let Some(id) = &line.id {
                                a href={ "#e-" (id) } { (line.term) }
                                @if let Some(detail) = &line.detail { " (" (detail) ")" }
                            } @else {
                                (line.term) ", " (t.see) " "
                                @if let Some(label) = &line.typology_label { (label) }
                            }
                        }
                    }
                }
                h3 { (t.index_communes) }
                ul {
                    @for c in &g.index_communes { li { (c.name) } }
                }
            }
            footer {
                h2 { (t.publisher) }
                p { (g.publisher) }
                h3 { (t.sources) }
                p { (t.sources_text) }
                h3 { (t.report) }
                p { (t.report_text) }
            }
        }
    };
    document(g.lang, &g.title, body)
}

fn heading_text(text: &str, mark: Option<&str>) -> String {
    match mark {
        Some(mark) => format!("{mark} · {text}"),
        None => text.to_owned(),
    }
}

fn entry(e: &Entry, g: &Guide) -> Markup {
    let t = g.texts;
    html! {
        article.entry id={ "e-" (e.id) } {
            h5 { (e.name) }
            p {
                em { (e.typology) } br;
                @for line in &e.address { (line) br; }
                @for phone in &e.phones {
                    (t.phone) " " a href={ "tel:" (phone.replace(' ', "")) } { (phone) } br;
                }
                @if let Some(email) = &e.email {
                    (t.email) " : " a href={ "mailto:" (email) } { (email) } br;
                }
                @if let Some(site) = &e.website {
                    (t.website) " : " a href=(site) { (site) } br;
                }
            }
            @if e.hours.is_empty() {
                p { (t.hours_unknown) }
            } @else {
                table {
                    caption { (t.hours) }
                    thead { tr { th scope="col" { (t.days) } th scope="col" { (t.hours) } } }
                    tbody {
                        @for row in &e.hours { tr { th scope="row" { (row.days) } td { (row.hours) } } }
                    }
                }
            }
            @if e.holidays_closed { p { strong { (t.holidays_closed) } } }
            p { (e.access) br; em { (e.verified) } br; a href=(e.url) { (e.url) } }
        }
    }
}

/// The form of a new guide, with the cover preview and the background generation.
pub fn new_page(
    taxonomy: &Taxonomy,
    session: &Session,
    territory: &str,
    error: Option<&str>,
) -> Markup {
    let body = html! {
        p { "Un livret prêt à imprimer (PDF balisé, accessible) et la même page en HTML, à partir des fiches publiées du jour." }
        @if let Some(error) = error {
            div.error-summary role="alert" { p { strong { "Erreur : " } (error) } }
        }
        form #choix method="post" action="/espace/annuaires" enctype="multipart/form-data" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="territory" { "Territoire" }
            p.hint #territory-hint { "commune:63113, epci:246300701, departement:63, region:84 ou communes:63113,63300 : le code INSEE d'une commune, le SIREN d'un EPCI, le code d'un département ou d'une région." }
            input #territory type="text" name="territory" required value=(territory) aria-describedby="territory-hint";
            fieldset {
                legend { "Thèmes (aucun : tous)" }
                @for theme in &taxonomy.themes {
                    @let id = format!("theme-{}", theme.code);
                    div.check {
                        input id=(id) type="checkbox" name="themes" value=(theme.code);
                        label for=(id) { (theme.label_fr) }
                    }
                }
            }
            label for="typologies" { "Typologies" }
            p.hint #typologies-hint { "Codes séparés par des virgules (ex. mairie,piscine), en plus des thèmes." }
            input #typologies type="text" name="typologies" aria-describedby="typologies-hint";
            label for="group" { "Regroupement" }
            select #group name="group" {
                option value="theme" { "Par thème, puis typologie et commune" }
                option value="commune" { "Par commune, puis thème" }
            }
            label for="format" { "Format" }
            select #format name="format" {
                option value="a5" { "A5, livret plié (pages par multiple de 4)" }
                option value="a4" { "A4" }
            }
            label for="title" { "Titre" }
            p.hint #title-hint { "Par défaut « Guide des services publics »." }
            input #title type="text" name="title" maxlength="120" aria-describedby="title-hint";
            label for="date" { "Date d'édition" }
            input #date type="date" name="date";
            label for="publisher" { "Collectivité éditrice" }
            p.hint #publisher-hint { "Par défaut le nom du territoire." }
            input #publisher type="text" name="publisher" maxlength="120" aria-describedby="publisher-hint";
            label for="logo" { "Logo" }
            p.hint #logo-hint { "PNG ou SVG, 2 Mo au plus." }
            input #logo type="file" name="logo" accept="image/png,image/svg+xml" aria-describedby="logo-hint";
            label for="color" { "Couleur d'accent" }
            input #color type="color" name="color" value="#1d4e89";
            label for="lang" { "Langue des textes fixes" }
            select #lang name="lang" {
                option value="fr" lang="fr" { "Français" }
                option value="en" lang="en" { "English" }
            }
            p {
                button.secondary type="submit" formaction="/espace/annuaires/couverture" formtarget="_blank" #apercu { "Aperçu de la couverture" }
                " "
                button.primary type="submit" { "Générer l'annuaire" }
            }
        }
        section aria-labelledby="apercu-titre" {
            h2 #apercu-titre { "Aperçu de la couverture" }
            p #apercu-etat aria-live="polite" { "L'aperçu s'affiche ici (ou dans un nouvel onglet sans JavaScript)." }
            img.cover-preview #apercu-image hidden alt="Aperçu de la couverture de l'annuaire";
        }
    };
    espace::page_with_script(
        "Nouvel annuaire imprimé",
        Some(session),
        Some("directory.js"),
        body,
    )
}

/// A job's page: progress while it runs (followed by a script, a refresh link without), the
/// links when done, the error when it failed.
pub fn job_page(status: &JobStatus, session: &Session) -> Markup {
    let running = matches!(
        status.stage,
        Stage::Queued | Stage::Composing | Stage::LayingOut | Stage::Writing
    );
    let percent = (status.progress * 100.0).round() as u32;
    let stage = stage_text(status.stage);
    let body = html! {
        p #etat aria-live="polite" data-job=(status.id) data-running=(if running { "1" } else { "0" }) {
            (stage)
            @if status.queue_position > 0 { " — " (status.queue_position) " avant lui dans la file" }
        }
        progress #avancement max="100" value=(percent) aria-labelledby="etat" { (percent) " %" }
        @if running {
            noscript { p { a href={ "/espace/annuaires/" (status.id) } { "Actualiser l'état de la génération" } } }
        }
        div #resultat hidden[running] {
            @if let (Some(pdf), Some(html)) = (&status.pdf, &status.html) {
                p {
                    a href=(pdf) { "Télécharger le livret PDF" }
                    @if let Some(pages) = status.pages { " (" (pages) " pages" }
                    @if let Some(entries) = status.entries { ", " (entries) " fiches)" }
                }
                p { a href=(html) { "Lire la version HTML" } }
            }
            @if let Some(problem) = &status.error {
                div.error-summary role="alert" { p { strong { "Erreur : " } (problem.detail) } }
            }
            p { a href="/espace/annuaires/nouveau" { "Faire un autre annuaire" } }
        }
    };
    espace::page_with_script(
        "Annuaire imprimé",
        Some(session),
        running.then_some("directory.js"),
        body,
    )
}

pub fn stage_text(stage: Stage) -> &'static str {
    match stage {
        Stage::Queued => "En attente dans la file",
        Stage::Composing => "Sélection et composition des fiches",
        Stage::LayingOut => "Mise en page",
        Stage::Writing => "Écriture du PDF",
        Stage::Done => "Annuaire prêt",
        Stage::Failed => "Échec",
    }
}
