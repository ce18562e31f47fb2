//! The territorial monitoring page (`/veille/{territory}`): for one typology or theme, the
//! indicators beside the département, région and France, a choropleth map of the communes drawn
//! on the server as SVG with its data table as the accessible alternative, a bar chart, the
//! gaps, the freshness of entries per contributor and the change between two dates.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use crate::http::Path;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{NaiveDate, TimeDelta, Utc};
use geo::Simplify;
use maud::{html, Markup, PreEscaped};

use super::{Area, AreaError, RawRequest, Report, Request, SubjectReport};
use crate::error::{Error, FieldError, Result};
use crate::search::hours::{long_date, Lang};
use crate::state::AppState;
use crate::territory::Locator;
use crate::web::layout::{self, distance, href, number, t, Chrome};
use crate::web::{encode_query, lang_of, path_without_lang};

/// An entry confirmed within this many days is fresh (convention: reviewed twice a year).
const FRESH_DAYS: i64 = 183;
/// Communes drawn at most on the map; beyond, the table alone.
const MAX_DRAWN: usize = 6_000;
const MAP_WIDTH: f64 = 640.0;
/// Fill of each distance class, nearest first, then « no entry in France ».
const CLASS_FILLS: [&str; 4] = ["#deebf7", "#9ecae1", "#3182bd", "#08306b"];
const NO_DATA_FILL: &str = "#bdbdbd";

#[derive(Debug, Default, serde::Deserialize)]
struct PageParams {
    territoire: Option<String>,
    typology: Option<String>,
    thresholds: Option<String>,
    du: Option<String>,
    au: Option<String>,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn label<'a>(lang: Lang, fr: &'a str, en: &'a str) -> &'a str {
    match lang {
        Lang::Fr => fr,
        Lang::En => en,
    }
}

fn percent(share: Option<f64>, lang: Lang) -> String {
    match share {
        Some(s) => {
            let text = format!("{:.1} %", s * 100.0);
            if lang == Lang::Fr {
                text.replace('.', ",")
            } else {
                text.replace(" %", "%")
            }
        }
        None => "—".into(),
    }
}

fn km(metres: Option<f64>, lang: Lang) -> String {
    metres.map_or_else(|| "—".into(), |m| distance(m, lang))
}

/// The typology/theme choice and the thresholds, as a form.
fn choices_form(
    state: &AppState,
    lang: Lang,
    action: &str,
    params: &PageParams,
    errors: &[FieldError],
    with_territory: bool,
) -> Markup {
    let taxonomy = &state.reference.taxonomy;
    let chosen = given(&params.typology).unwrap_or("mairie");
    let error = |field: &str| errors.iter().find(|e| e.field == field);
    html! {
        form.search-form method="get" action=(action) aria-label=(t(lang, "Choisir l'indicateur", "Choose the indicator")) {
            @if lang == Lang::En { input type="hidden" name="lang" value="en"; }
            div.fields {
                @if with_territory {
                    div.field {
                        label for="v-territoire" { (t(lang, "Territoire", "Territory")) span.hint { (t(lang, " (commune, EPCI, département, région : nom ou code ; plusieurs communes : communes:63113,63300 ; france)", " (commune, EPCI, département, région: name or code; several communes: communes:63113,63300; france)")) } }
                        input #v-territoire type="text" name="territoire" value=[given(&params.territoire)] required
                            aria-invalid=[error("territoire").map(|_| "true")] aria-describedby=[error("territoire").map(|_| "v-territoire-erreur")];
                        @if let Some(e) = error("territoire") { p.field-error #v-territoire-erreur { (e.message) } }
                    }
                }
                div.field {
                    label for="v-typology" { (t(lang, "Type de service", "Kind of service")) }
                    select #v-typology name="typology" aria-invalid=[error("typology").map(|_| "true")] aria-describedby=[error("typology").map(|_| "v-typology-erreur")] {
                        @for theme in &taxonomy.themes {
                            optgroup label=(label(lang, &theme.label_fr, &theme.label_en)) {
                                @for ty in taxonomy.typologies.iter().filter(|ty| ty.theme == theme.code) {
                                    option value=(ty.code) selected[ty.code == chosen] { (label(lang, &ty.label_fr, &ty.label_en)) }
                                }
                            }
                        }
                    }
                    @if let Some(e) = error("typology") { p.field-error #v-typology-erreur { (e.message) } }
                }
                div.field {
                    label for="v-thresholds" { (t(lang, "Seuils de distance (m)", "Distance thresholds (m)")) }
                    input #v-thresholds type="text" name="thresholds" value=(given(&params.thresholds).unwrap_or("5000,10000,20000"))
                        aria-invalid=[error("thresholds").map(|_| "true")] aria-describedby=[error("thresholds").map(|_| "v-thresholds-erreur")];
                    @if let Some(e) = error("thresholds") { p.field-error #v-thresholds-erreur { (e.message) } }
                }
                div.field {
                    label for="v-du" { (t(lang, "Évolution du", "Change from")) }
                    input #v-du type="date" name="du" value=[given(&params.du)];
                }
                div.field {
                    label for="v-au" { (t(lang, "au", "to")) }
                    input #v-au type="date" name="au" value=[given(&params.au)]
                        aria-invalid=[error("au").map(|_| "true")] aria-describedby=[error("au").map(|_| "v-au-erreur")];
                    @if let Some(e) = error("au") { p.field-error #v-au-erreur { (e.message) } }
                }
            }
            button.primary type="submit" { (t(lang, "Afficher", "Show")) }
        }
    }
}

/// `GET /veille`: choose a territory.
#[utoipa::path(get, path = "/veille", tag = "pages",
    params(("territoire" = Option<String>, Query, description = "Nom ou code d'une commune, d'un EPCI, d'un département ou d'une région"),
           ("typology" = Option<String>, Query, description = "Typologie")),
    responses((status = 200, description = "Veille territoriale : choix du territoire (HTML)", content_type = "text/html"),
              (status = 303, description = "Vers la page du territoire trouvé")))]
pub async fn choose(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let lang = lang_of(query.as_deref());
    let params: PageParams =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let mut errors = Vec::new();
    if let Some(typed) = given(&params.territoire) {
        // Written as the API writes it (`communes:63113,63300`, `france`…), or by name.
        let found = match Area::parse(typed, &state.reference.locator) {
            Ok(area) => Some((area.id(), String::new())),
            Err(_) => crate::web::resolve_territory(&state, typed).await?,
        };
        match found {
            Some((code, _)) => {
                let mut pairs: Vec<(&str, &str)> = Vec::new();
                for (key, value) in [
                    ("typology", &params.typology),
                    ("thresholds", &params.thresholds),
                    ("du", &params.du),
                    ("au", &params.au),
                ] {
                    if let Some(v) = given(value) {
                        pairs.push((key, v));
                    }
                }
                if lang == Lang::En {
                    pairs.push(("lang", "en"));
                }
                let target = format!("/veille/{code}?{}", encode_query(&pairs));
                return Ok(Redirect::to(&target).into_response());
            }
            None => errors.push(FieldError::new(
                "territoire",
                t(
                    lang,
                    "Territoire introuvable : saisissez un nom ou un code.",
                    "Territory not found: type a name or a code.",
                ),
            )),
        }
    }
    let path = path_without_lang(&uri);
    let body = html! {
        h1 { (t(lang, "Veille territoriale", "Territorial monitoring")) }
        p.lead { (t(lang, "Qui est loin de quoi ? Pour un territoire et un type de service : la distance de chaque commune au service le plus proche, la population concernée, les communes les plus éloignées, la fraîcheur des fiches et leur évolution.", "Who is far from what? For a territory and a kind of service: each commune's distance to the nearest one, the population concerned, the farthest communes, the freshness of the entries and how they changed.")) }
        (choices_form(&state, lang, "/veille", &params, &errors, true))
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = layout::page(
        &Chrome {
            lang,
            title: t(lang, "Veille territoriale", "Territorial monitoring"),
            path: &path,
            current: None,
        },
        body,
    );
    Ok((status, page).into_response())
}

/// A territory's name for people: « Puy-de-Dôme », « Riom », « 3 communes ».
async fn territory_name(state: &AppState, area: &Area, lang: Lang) -> Result<String> {
    Ok(match area {
        Area::France => "France".into(),
        Area::Communes(codes) => format!("{} {}", codes.len(), t(lang, "communes", "communes")),
        Area::Territory(_) => {
            let id = area.id();
            crate::web::resolve_territory(state, &id)
                .await?
                .map_or(id, |(_, name)| name)
        }
    })
}

/// « Département du Puy-de-Dôme », « Région Auvergne-Rhône-Alpes », « France ».
async fn comparison_name(
    state: &AppState,
    comparison: &super::Comparison,
    lang: Lang,
) -> Result<String> {
    let Some(code) = &comparison.code else {
        return Ok("France".into());
    };
    let id = format!("{}:{code}", comparison.level);
    let name = crate::web::resolve_territory(state, &id)
        .await?
        .map_or(id, |(_, name)| name);
    Ok(match comparison.level {
        "departement" => format!("{} {name}", t(lang, "Département :", "Département:")),
        _ => format!("{} {name}", t(lang, "Région :", "Région:")),
    })
}

/// The distance class of a commune: 0 (nearest) to 3, or `None` without any entry.
fn class_of(distance_m: Option<f64>, thresholds: &[f64]) -> Option<usize> {
    let d = distance_m?;
    Some(
        thresholds
            .iter()
            .take(3)
            .position(|t| d <= *t)
            .unwrap_or(3.min(thresholds.len())),
    )
}

/// The choropleth: each commune's boundary filled by its distance class, with its name and
/// distance as the path's title.
fn choropleth(locator: &Locator, report: &Report, lang: Lang) -> Option<Markup> {
    let thresholds = &report.thresholds_m;
    let shapes: Vec<_> = report
        .communes
        .iter()
        .filter_map(|row| {
            let code = crate::territory::InseeCode::parse(&row.insee_code).ok()?;
            let commune = locator.commune(&code)?;
            commune.boundary.as_ref().map(|b| (row, b))
        })
        .collect();
    if shapes.is_empty() || shapes.len() > MAX_DRAWN {
        return None;
    }
    let (mut min_lon, mut min_lat, mut max_lon, mut max_lat) =
        (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for (_, shape) in &shapes {
        for polygon in &shape.0 {
            for c in polygon.exterior().coords() {
                min_lon = min_lon.min(c.x);
                max_lon = max_lon.max(c.x);
                min_lat = min_lat.min(c.y);
                max_lat = max_lat.max(c.y);
            }
        }
    }
    let cos = ((min_lat + max_lat) / 2.0).to_radians().cos();
    let span = ((max_lon - min_lon) * cos).max(max_lat - min_lat).max(1e-6);
    let scale = MAP_WIDTH / ((max_lon - min_lon) * cos).max(1e-6);
    let height = ((max_lat - min_lat) * scale).ceil().max(1.0);
    let epsilon = span / 800.0;
    let mut paths = String::new();
    for (row, shape) in &shapes {
        let simple = shape.simplify(&epsilon);
        let mut d = String::new();
        for polygon in &simple.0 {
            for ring in std::iter::once(polygon.exterior()).chain(polygon.interiors()) {
                for (i, c) in ring.coords().enumerate() {
                    let x = (c.x - min_lon) * cos * scale;
                    let y = (max_lat - c.y) * scale;
                    let _ = write!(d, "{}{x:.1} {y:.1}", if i == 0 { "M" } else { "L" });
                }
                d.push('Z');
            }
        }
        let nearest = row.nearest.first().and_then(|n| n.distance_m);
        let fill = class_of(nearest, thresholds).map_or(NO_DATA_FILL, |c| CLASS_FILLS[c.min(3)]);
        let title = format!("{} : {}", row.name, km(nearest, lang));
        let _ = write!(
            paths,
            "<path d=\"{d}\" fill=\"{fill}\"><title>{}</title></path>",
            escape(&title)
        );
    }
    let legend = legend_items(thresholds, lang);
    Some(html! {
        figure.choropleth {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {MAP_WIDTH} {height}")) role="img"
                aria-labelledby="carte-veille-titre" width="100%" {
                title #carte-veille-titre { (t(lang, "Carte des communes par distance au service le plus proche (détail dans le tableau des communes)", "Map of the communes by distance to the nearest service (details in the table of communes)")) }
                g stroke="#ffffff" stroke-width="0.4" { (PreEscaped(paths)) }
            }
            figcaption {
                p { (t(lang, "Distance du point de référence de la commune (sa mairie, sinon son centre) au service le plus proche :", "Distance from the commune's reference point (its town hall, else its centre) to the nearest service:")) }
                ul.legend {
                    @for (fill, text) in legend {
                        li { svg.swatch width="18" height="18" aria-hidden="true" { rect width="18" height="18" fill=(fill) stroke="#1e1e1e" {} } " " (text) }
                    }
                }
            }
        }
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn legend_items(thresholds: &[f64], lang: Lang) -> Vec<(&'static str, String)> {
    let mut items = Vec::new();
    let bounds: Vec<f64> = thresholds.iter().take(3).copied().collect();
    let mut lower: Option<f64> = None;
    for (i, upper) in bounds.iter().enumerate() {
        let text = match lower {
            None => format!("{} {}", t(lang, "jusqu'à", "up to"), distance(*upper, lang)),
            Some(l) => format!("{} – {}", distance(l, lang), distance(*upper, lang)),
        };
        items.push((CLASS_FILLS[i], text));
        lower = Some(*upper);
    }
    if let Some(l) = lower {
        items.push((
            CLASS_FILLS[bounds.len().min(3)],
            format!("{} {}", t(lang, "plus de", "more than"), distance(l, lang)),
        ));
    }
    items.push((
        NO_DATA_FILL,
        t(
            lang,
            "aucun service de ce type en France",
            "no such service in France",
        )
        .to_owned(),
    ));
    items
}

/// A table of entries per row (contributor, source) with a part of them and its share.
fn share_table(
    lang: Lang,
    caption: &str,
    who: &str,
    part: &str,
    rows: &[(&str, i64, i64)],
) -> Markup {
    html! {
        table.data {
            caption { (caption) }
            thead { tr { th scope="col" { (who) } th scope="col" { (t(lang, "Fiches", "Entries")) } th scope="col" { (part) } th scope="col" { (t(lang, "Part", "Share")) } } }
            tbody {
                @for (name, entries, counted) in rows {
                    tr { th scope="row" { (name) } td { (number(*entries, lang)) } td { (number(*counted, lang)) }
                         td { (percent((*entries > 0).then(|| *counted as f64 / *entries as f64), lang)) } }
                }
            }
        }
    }
}

/// Share of the population beyond each threshold, per level, as horizontal bars with their
/// figures written beside them.
fn bar_chart(
    subject: &SubjectReport,
    levels: &[(String, &super::Indicators)],
    lang: Lang,
) -> Markup {
    let row_height = 22.0;
    let label_width = 190.0;
    let bar_width = 330.0;
    let mut groups = Vec::new();
    for (ti, beyond) in subject.indicators.beyond.iter().enumerate() {
        let rows: Vec<(String, Option<f64>)> = levels
            .iter()
            .map(|(name, indicators)| {
                (
                    name.clone(),
                    indicators.beyond.get(ti).and_then(|b| b.share),
                )
            })
            .collect();
        groups.push((beyond.threshold_m, rows));
    }
    let height = groups
        .iter()
        .map(|(_, rows)| (rows.len() as f64 + 1.5) * row_height)
        .sum::<f64>();
    let mut y = 0.0;
    let mut svg = String::new();
    for (threshold, rows) in &groups {
        y += row_height;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.0}\" font-weight=\"700\">{}</text>",
            y - 6.0,
            escape(&format!(
                "{} {}",
                t(lang, "Population à plus de", "Population beyond"),
                distance(*threshold, lang)
            ))
        );
        for (name, share) in rows {
            let w = share.unwrap_or(0.0) * bar_width;
            let _ = write!(
                svg,
                "<text x=\"0\" y=\"{:.0}\">{}</text><rect x=\"{label_width}\" y=\"{:.0}\" width=\"{w:.1}\" height=\"{:.0}\" fill=\"#3182bd\" stroke=\"#08306b\"></rect><text x=\"{:.0}\" y=\"{:.0}\">{}</text>",
                y + 15.0,
                escape(name),
                y + 3.0,
                row_height - 6.0,
                label_width + w + 6.0,
                y + 15.0,
                escape(&percent(*share, lang))
            );
            y += row_height;
        }
        y += row_height / 2.0;
    }
    html! {
        figure.bars {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {} {height:.0}", label_width + bar_width + 70.0)) width="100%" role="img"
                aria-labelledby="barres-titre" font-size="13" fill="#1e1e1e" {
                title #barres-titre { (t(lang, "Part de la population au-delà de chaque seuil, comparée (valeurs dans le tableau des indicateurs)", "Share of the population beyond each threshold, compared (values in the table of indicators)")) }
                (PreEscaped(svg))
            }
        }
    }
}

/// `GET /veille/{territory}`: a territory's monitoring page.
#[utoipa::path(get, path = "/veille/{territory}", tag = "pages",
    params(("territory" = String, Path, description = "`departement:63`, `epci:200070753`, `commune:63300`, `region:84`, `communes:63113,63300` ou `france`"),
           ("typology" = Option<String>, Query, description = "Typologie mesurée (mairie par défaut)"),
           ("thresholds" = Option<String>, Query, description = "Seuils en mètres"),
           ("du" = Option<String>, Query, description = "Début de la période d'évolution (AAAA-MM-JJ)"),
           ("au" = Option<String>, Query, description = "Fin de la période d'évolution (AAAA-MM-JJ)")),
    responses((status = 200, description = "Veille territoriale (HTML)", content_type = "text/html"),
              (status = 400, description = "Choix invalides, signalés dans la page", content_type = "text/html"),
              (status = 404, description = "Territoire inconnu (HTML)", content_type = "text/html")))]
pub async fn territory_page(
    State(state): State<AppState>,
    Path(territory): Path<String>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let lang = lang_of(query.as_deref());
    let path = path_without_lang(&uri);
    let params: PageParams =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let locator = state.reference.locator.clone();
    let area = match Area::parse(&territory, &locator) {
        Ok(area) => area,
        Err(AreaError::Unknown(_)) | Err(AreaError::Malformed(_)) => {
            return Ok(crate::web::entry::not_found_page(lang, &path));
        }
    };
    let typology = given(&params.typology).unwrap_or("mairie").to_owned();
    let mut errors = Vec::new();
    let request = Request::parse(
        &RawRequest {
            area: &territory,
            typologies: vec![typology.as_str()],
            themes: Vec::new(),
            thresholds: given(&params.thresholds),
            gap_threshold: None,
            compare: true,
        },
        &state.reference.taxonomy,
        &locator,
    );
    let today = Utc::now().date_naive();
    let parse_date = |value: Option<&str>,
                      default: NaiveDate,
                      field: &str,
                      errors: &mut Vec<FieldError>| match value {
        None => default,
        Some(v) => crate::dates::parse_date(v).unwrap_or_else(|_| {
            errors.push(FieldError::new(
                field,
                t(
                    lang,
                    "Date attendue au format AAAA-MM-JJ.",
                    "Date expected as YYYY-MM-DD.",
                ),
            ));
            default
        }),
    };
    let until = parse_date(given(&params.au), today, "au", &mut errors);
    let since = parse_date(
        given(&params.du),
        until - TimeDelta::days(FRESH_DAYS),
        "du",
        &mut errors,
    );
    if since > until {
        errors.push(FieldError::new(
            "au",
            t(
                lang,
                "La fin de la période précède son début.",
                "The period ends before it starts.",
            ),
        ));
    }
    let request = match request {
        Ok(request) => Some(request),
        Err(Error::InvalidParameters(mut wrong)) | Err(Error::Invalid(mut wrong)) => {
            errors.append(&mut wrong);
            None
        }
        Err(other) => return Err(other),
    };
    let name = territory_name(&state, &area, lang).await?;
    let title = format!(
        "{} — {name}",
        t(lang, "Veille territoriale", "Territorial monitoring")
    );
    let Some(request) = request.filter(|_| errors.is_empty()) else {
        let body = html! {
            h1 { (title) }
            div.error-summary role="alert" {
                h2 { (t(lang, "Veuillez corriger :", "Please correct:")) }
                ul { @for e in &errors { li { (e.message) } } }
            }
            (choices_form(&state, lang, &format!("/veille/{territory}"), &params, &errors, false))
        };
        let page = layout::page(
            &Chrome {
                lang,
                title: &title,
                path: &path,
                current: None,
            },
            body,
        );
        return Ok((StatusCode::BAD_REQUEST, page).into_response());
    };

    let index = state.live.settled_index();
    let coverage = state.coverage.clone();
    let reference = state.reference.clone();
    let report = tokio::task::spawn_blocking(move || {
        coverage.report(&index, &reference.locator, &reference.taxonomy, &request)
    })
    .await
    .map_err(anyhow::Error::from)??;
    let communes: HashSet<&str> = report
        .communes
        .iter()
        .map(|c| c.insee_code.as_str())
        .collect();
    let in_territory = |code: &str| matches!(area, Area::France) || communes.contains(code);

    // Freshness per contributor, over the territory's entries.
    let fresh_since = Utc::now() - TimeDelta::days(FRESH_DAYS);
    let mut per_organisation: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for row in super::store::freshness(&state.store, fresh_since).await? {
        if in_territory(&row.insee_code) {
            let entry = per_organisation.entry(row.organisation).or_default();
            entry.0 += row.entries;
            entry.1 += row.confirmed;
            entry.2 += row.flagged;
        }
    }
    let (all_entries, all_flagged) = per_organisation
        .values()
        .fold((0, 0), |(e, f), (entries, _, flagged)| {
            (e + entries, f + flagged)
        });

    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let (from, to) = (midnight(since), midnight(until + TimeDelta::days(1)));
    // Per commune of the territory: created, withdrawn, moved.
    let mut per_commune: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for (code, created, withdrawn) in
        super::store::created_and_withdrawn(&state.store, from, to).await?
    {
        if in_territory(&code) {
            let counts = per_commune.entry(code).or_default();
            counts.0 += created;
            counts.1 += withdrawn;
        }
    }
    for (code, moved) in super::store::moved(&state.store, from, to).await? {
        if in_territory(&code) {
            per_commune.entry(code).or_default().2 += moved;
        }
    }
    let mut changes: Vec<(String, String, (i64, i64, i64))> = per_commune
        .into_iter()
        .map(|(code, counts)| {
            let commune_name = crate::territory::InseeCode::parse(&code)
                .ok()
                .and_then(|c| locator.commune(&c).map(|m| m.name.clone()))
                .unwrap_or_else(|| code.clone());
            (code, commune_name, counts)
        })
        .collect();
    let activity = |c: &(i64, i64, i64)| c.0 + c.1 + c.2;
    changes.sort_by(|a, b| activity(&b.2).cmp(&activity(&a.2)).then(a.1.cmp(&b.1)));
    let created_total: i64 = changes.iter().map(|c| c.2 .0).sum();
    let withdrawn_total: i64 = changes.iter().map(|c| c.2 .1).sum();
    let moved_total: i64 = changes.iter().map(|c| c.2 .2).sum();

    let subject = &report.subjects[0];
    let subject_label = label(lang, &subject.label_fr, &subject.label_en);
    let api = format!(
        "/api/v1/territories/{}/coverage?{}",
        report.territory.id,
        encode_query(&[
            ("typology", typology.as_str()),
            (
                "thresholds",
                &report
                    .thresholds_m
                    .iter()
                    .map(|t| format!("{t}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        ])
    );
    let mut levels: Vec<(String, &super::Indicators)> = vec![(name.clone(), &subject.indicators)];
    for comparison in &subject.comparisons {
        levels.push((
            comparison_name(&state, comparison, lang).await?,
            &comparison.indicators,
        ));
    }
    let map = choropleth(&locator, &report, lang);
    let mut rows: Vec<_> = report.communes.iter().collect();
    rows.sort_by(|a, b| {
        let d = |r: &super::CommuneRow| {
            r.nearest
                .first()
                .and_then(|n| n.distance_m)
                .unwrap_or(f64::MAX)
        };
        d(b).total_cmp(&d(a)).then(b.population.cmp(&a.population))
    });
    let body = html! {
        h1 { (title) }
        p.lead {
            (number(report.territory.communes as i64, lang)) " " (t(lang, "communes", "communes")) ", "
            (number(report.territory.population, lang)) " " (t(lang, "habitants", "inhabitants")) " · "
            (t(lang, "Indicateur : ", "Indicator: ")) strong { (subject_label) }
        }
        (choices_form(&state, lang, &format!("/veille/{}", report.territory.id), &params, &[], false))
        @if let Some(message) = &subject.message { p.warning role="status" { (message) } }
        section aria-labelledby="indicateurs" {
            h2 #indicateurs { (t(lang, "Indicateurs", "Indicators")) }
            div.table-scroll {
                table.data {
                    caption { (subject_label) " — " (t(lang, "comparaison avec les territoires englobants", "compared with the enclosing territories")) }
                    thead { tr {
                        th scope="col" { (t(lang, "Indicateur", "Indicator")) }
                        @for (level, _) in &levels { th scope="col" { (level) } }
                    } }
                    tbody {
                        tr { th scope="row" { (t(lang, "Fiches publiées", "Published entries")) } @for (_, i) in &levels { td { (number(i.entries as i64, lang)) } } }
                        tr { th scope="row" { (t(lang, "Fiches pour 10 000 habitants", "Entries per 10,000 inhabitants")) } @for (_, i) in &levels { td { (i.entries_per_10k.map_or("—".into(), |v| format!("{v:.2}"))) } } }
                        tr { th scope="row" { (t(lang, "Communes qui en ont au moins une", "Communes with at least one")) } @for (_, i) in &levels { td { (number(i.communes_with_entry as i64, lang)) " / " (number(i.communes as i64, lang)) } } }
                        tr { th scope="row" { (t(lang, "Distance moyenne pondérée par la population", "Population-weighted mean distance")) } @for (_, i) in &levels { td { (km(i.mean_distance_m, lang)) } } }
                        @for (ti, b) in subject.indicators.beyond.iter().enumerate() {
                            tr { th scope="row" { (t(lang, "Population à plus de ", "Population beyond ")) (distance(b.threshold_m, lang)) }
                                @for (_, i) in &levels { td { @if let Some(x) = i.beyond.get(ti) { (number(x.population, lang)) " (" (percent(x.share, lang)) ")" } } } }
                        }
                    }
                }
            }
            (bar_chart(subject, &levels, lang))
            p.downloads {
                (t(lang, "Télécharger les chiffres par commune : ", "Download the figures per commune: "))
                a href=(format!("{api}&format=csv")) download { "CSV" } " · "
                a href=(api) { "JSON" }
            }
        }
        section aria-labelledby="carte-communes" {
            h2 #carte-communes { (t(lang, "Carte des communes", "Map of the communes")) }
            @match map {
                Some(map) => { (map) }
                None => { p { (t(lang, "Les contours de ces communes ne sont pas chargés (proximites territory import) : le tableau ci-dessous donne les distances.", "The boundaries of these communes are not loaded (proximites territory import): the table below gives the distances.")) } }
            }
            details.communes-table {
                summary { (t(lang, "Tableau des communes (alternative à la carte)", "Table of the communes (alternative to the map)")) }
                div.table-scroll {
                    table.data {
                        caption { (t(lang, "Communes, de la plus éloignée à la plus proche", "Communes, farthest first")) }
                        thead { tr {
                            th scope="col" { (t(lang, "Commune", "Commune")) }
                            th scope="col" { (t(lang, "Population", "Population")) }
                            th scope="col" { (t(lang, "Distance", "Distance")) }
                            th scope="col" { (t(lang, "Service le plus proche", "Nearest service")) }
                        } }
                        tbody {
                            @for row in &rows {
                                @let nearest = row.nearest.first();
                                tr {
                                    th scope="row" { (row.name) " (" (row.insee_code) ")" }
                                    td { (number(row.population, lang)) }
                                    td { (km(nearest.and_then(|n| n.distance_m), lang)) }
                                    td { @if let Some(id) = nearest.and_then(|n| n.id.as_ref()) { a href=(href(lang, &format!("/services/{}", id.0.as_str()))) { (t(lang, "fiche", "entry")) span.visually-hidden { " " (row.name) } } } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="lacunes" {
            h2 #lacunes { (t(lang, "Communes les plus éloignées", "Farthest communes")) }
            p { (number(subject.indicators.gap_communes as i64, lang)) " " (t(lang, "communes à plus de ", "communes beyond ")) (distance(report.gap_threshold_m, lang)) ", "
                (number(subject.indicators.gap_population, lang)) " " (t(lang, "habitants.", "inhabitants.")) }
            @if !subject.gaps.is_empty() {
                table.data {
                    caption { (t(lang, "Par population concernée", "By population concerned")) }
                    thead { tr { th scope="col" { (t(lang, "Commune", "Commune")) } th scope="col" { (t(lang, "Population", "Population")) } th scope="col" { (t(lang, "Distance", "Distance")) } } }
                    tbody { @for gap in subject.gaps.iter().take(20) { tr { th scope="row" { (gap.name) } td { (number(gap.population, lang)) } td { (km(gap.distance_m, lang)) } } } }
                }
            }
        }
        section aria-labelledby="fraicheur" {
            h2 #fraicheur { (t(lang, "Fraîcheur des fiches par contributeur", "Freshness of the entries per contributor")) }
            p { (t(lang, "Part des fiches publiées sur le territoire, tous types confondus, confirmées depuis moins de six mois.", "Share of the territory's published entries, all kinds, confirmed in the last six months.")) }
            (share_table(lang, t(lang, "Fiches confirmées depuis moins de six mois", "Entries confirmed in the last six months"),
                t(lang, "Contributeur", "Contributor"), t(lang, "Confirmées", "Confirmed"),
                &per_organisation.iter().map(|(o, (entries, confirmed, _))| (o.as_str(), *entries, *confirmed)).collect::<Vec<_>>()))
        }
        section aria-labelledby="qualite" {
            h2 #qualite { (t(lang, "Qualité des données par source", "Data quality per source")) }
            p { (t(lang, "Part des fiches publiées sur le territoire qui portent un signalement à vérifier (position hors de la commune, téléphone ou horaires illisibles…), par source.", "Share of the territory's published entries with a quality flag to check (position outside the commune, unreadable phone or hours…), per source.")) }
            (share_table(lang, t(lang, "Fiches à vérifier", "Entries to check"),
                t(lang, "Source", "Source"), t(lang, "À vérifier", "To check"),
                &per_organisation.iter().map(|(o, (entries, _, flagged))| (o.as_str(), *entries, *flagged))
                    .chain([(t(lang, "Territoire", "Territory"), all_entries, all_flagged)]).collect::<Vec<_>>()))
        }
        section aria-labelledby="evolution" {
            h2 #evolution { (t(lang, "Évolution", "Change")) }
            p { (t(lang, "Du ", "From ")) (long_date(since, lang)) (t(lang, " au ", " to ")) (long_date(until, lang)) " : "
                strong { (number(created_total, lang)) } (t(lang, " fiches créées, ", " entries created, "))
                strong { (number(withdrawn_total, lang)) } (t(lang, " retirées, ", " withdrawn, "))
                strong { (number(moved_total, lang)) } (t(lang, " déplacées.", " moved.")) }
            p.hint { (t(lang, "Déplacées : d'après l'historique des fiches, qui note les champs modifiés dans l'espace contributeurs et par l'API ; un import en masse n'y note pas le détail des champs.", "Moved: from the entries' history, which records the fields changed in the contributors' pages and through the API; a bulk import does not record the fields there.")) }
            @if !changes.is_empty() {
                table.data {
                    caption { (t(lang, "Par commune", "Per commune")) }
                    thead { tr {
                        th scope="col" { (t(lang, "Commune", "Commune")) }
                        th scope="col" { (t(lang, "Créées", "Created")) }
                        th scope="col" { (t(lang, "Retirées", "Withdrawn")) }
                        th scope="col" { (t(lang, "Déplacées", "Moved")) }
                    } }
                    tbody { @for (code, commune, (created, withdrawn, moved)) in changes.iter().take(50) {
                        tr { th scope="row" { (commune) " (" (code) ")" } td { (created) } td { (withdrawn) } td { (moved) } }
                    } }
                }
            }
        }
    };
    let page = layout::page(
        &Chrome {
            lang,
            title: &title,
            path: &path,
            current: None,
        },
        body,
    );
    Ok(page.into_response())
}
