//! The HTML side of printed directories: a guide as an accessible web page (the same content
//! as its PDF), and the pages to choose a guide, preview its cover and follow its making.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::content::{Block, Entry, Guide};
use super::jobs::{JobStatus, Stage};
use crate::taxonomy::Taxonomy;

/// The page frame, until the citizen site's shared layout replaces it.
pub fn page(lang: &str, title: &str, body: Markup) -> Markup {
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
                        @if let Block::Heading { level: 1, text, mark, anchor } = b {
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
                    Block::Heading { level, text, mark, anchor } => {
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
    page(g.lang, &g.title, body)
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
pub fn new_page(taxonomy: &Taxonomy, territory: &str, error: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Nouvel annuaire imprimé" }
        p { "Un livret prêt à imprimer (PDF balisé, accessible) et la même page en HTML, à partir des fiches publiées du jour." }
        @if let Some(error) = error {
            div role="alert" { p { strong { "Erreur : " } (error) } }
        }
        form #choix method="post" action="/annuaires" enctype="multipart/form-data" {
            label for="territory" { "Territoire" span.hint { " — commune:63113, epci:246300701, departement:63, region:84 ou communes:63113,63300" } }
            input #territory name="territory" required value=(territory) aria-describedby="territory-hint";
            p.hint #territory-hint { "Le code INSEE d'une commune, le SIREN d'un EPCI, le code d'un département ou d'une région." }
            fieldset {
                legend { "Thèmes (aucun : tous)" }
                @for theme in &taxonomy.themes {
                    label.hint { input type="checkbox" name="themes" value=(theme.code); " " (theme.label_fr) }
                }
            }
            label for="typologies" { "Typologies" span.hint { " — codes séparés par des virgules (ex. mairie,piscine), en plus des thèmes" } }
            input #typologies name="typologies";
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
            label for="title" { "Titre" span.hint { " — par défaut « Guide des services publics »" } }
            input #title name="title" maxlength="120";
            label for="date" { "Date d'édition" }
            input #date type="date" name="date";
            label for="publisher" { "Collectivité éditrice" span.hint { " — par défaut le nom du territoire" } }
            input #publisher name="publisher" maxlength="120";
            label for="logo" { "Logo" span.hint { " — PNG ou SVG, 2 Mo au plus" } }
            input #logo type="file" name="logo" accept="image/png,image/svg+xml";
            label for="color" { "Couleur d'accent" }
            input #color type="color" name="color" value="#1d4e89";
            label for="lang" { "Langue des textes fixes" }
            select #lang name="lang" {
                option value="fr" lang="fr" { "Français" }
                option value="en" lang="en" { "English" }
            }
            p {
                button type="submit" formaction="/annuaires/couverture" formtarget="_blank" #apercu { "Aperçu de la couverture" }
                " "
                button type="submit" { "Générer l'annuaire" }
            }
        }
        section aria-labelledby="apercu-titre" {
            h2 #apercu-titre { "Aperçu de la couverture" }
            p #apercu-etat aria-live="polite" { "L'aperçu s'affiche ici (ou dans un nouvel onglet sans JavaScript)." }
            img #apercu-image hidden alt="Aperçu de la couverture de l'annuaire" style="max-width:100%;border:1px solid #555";
        }
        script { (PreEscaped(PREVIEW_SCRIPT)) }
    };
    page("fr", "Nouvel annuaire imprimé — Proximités", body)
}

/// Shows the cover preview in the page instead of a new tab.
const PREVIEW_SCRIPT: &str = r#"
document.getElementById('apercu').addEventListener('click', async function (event) {
  event.preventDefault();
  const state = document.getElementById('apercu-etat');
  const image = document.getElementById('apercu-image');
  state.textContent = 'Aperçu en cours…';
  const response = await fetch('/annuaires/couverture', { method: 'POST', body: new FormData(document.getElementById('choix')) });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({ detail: response.statusText }));
    state.textContent = 'Erreur : ' + problem.detail;
    image.hidden = true;
    return;
  }
  image.src = URL.createObjectURL(await response.blob());
  image.hidden = false;
  state.textContent = 'Aperçu à jour.';
});
"#;

/// A job's page: progress while it runs (polled with JavaScript, a refresh link without), the
/// links when done, the error when it failed.
pub fn job_page(status: &JobStatus) -> Markup {
    let running = matches!(
        status.stage,
        Stage::Queued | Stage::Composing | Stage::LayingOut | Stage::Writing
    );
    let percent = (status.progress * 100.0).round() as u32;
    let stage = stage_text(status.stage);
    let body = html! {
        h1 { "Annuaire imprimé" }
        p #etat aria-live="polite" data-job=(status.id) {
            (stage)
            @if status.queue_position > 0 { " — " (status.queue_position) " avant lui dans la file" }
        }
        progress #avancement max="100" value=(percent) aria-labelledby="etat" { (percent) " %" }
        @if running {
            noscript { p { a href={ "/annuaires/" (status.id) } { "Actualiser l'état de la génération" } } }
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
                div role="alert" { p { strong { "Erreur : " } (problem.detail) } }
            }
            p { a href="/annuaires/nouveau" { "Faire un autre annuaire" } }
        }
        @if running { script { (PreEscaped(POLL_SCRIPT)) } }
    };
    page("fr", "Annuaire imprimé — Proximités", body)
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

/// Polls the job and reloads the page once it is finished (the page then holds the links).
const POLL_SCRIPT: &str = r#"
(function () {
  const state = document.getElementById('etat');
  const bar = document.getElementById('avancement');
  const labels = { queued: 'En attente dans la file', composing: 'Sélection et composition des fiches', laying_out: 'Mise en page', writing: 'Écriture du PDF', done: 'Annuaire prêt', failed: 'Échec' };
  async function poll() {
    const response = await fetch('/api/v1/directories/' + state.dataset.job);
    if (!response.ok) { setTimeout(poll, 2000); return; }
    const job = await response.json();
    bar.value = Math.round(job.progress * 100);
    state.textContent = labels[job.stage] + (job.queue_position > 0 ? ' — ' + job.queue_position + ' avant lui dans la file' : '');
    if (job.stage === 'done' || job.stage === 'failed') { window.location.reload(); } else { setTimeout(poll, 1000); }
  }
  setTimeout(poll, 1000);
})();
"#;
