//! The life-event pages: the 12 moments of life, and for each the nearest services of the
//! typologies that matter then, around a commune or the citizen's position.

use crate::http::Path;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::layout::{self, href, t, Chrome, Section};
use super::search::{item, resolve_place};
use super::{lang_of, path_without_lang};
use crate::error::Result;
use crate::search::answer;
use crate::search::engine::{SearchQuery, Sort};
use crate::search::hours::{self, Lang};
use crate::spatial::LonLat;
use crate::state::AppState;

/// Services shown per typology of an event.
const PER_TYPOLOGY: usize = 3;

/// `GET /evenements-de-vie`: the 12 life events.
#[utoipa::path(get, path = "/evenements-de-vie", tag = "pages",
    responses((status = 200, description = "Événements de vie (HTML)", content_type = "text/html")))]
pub async fn index(State(state): State<AppState>, uri: Uri, RawQuery(query): RawQuery) -> Response {
    let lang = lang_of(query.as_deref());
    let path = path_without_lang(&uri);
    let body = html! {
        h1 { (t(lang, "Événements de vie", "Life events")) }
        p.lead { (t(lang, "À chaque moment clé de la vie, ses démarches : trouvez les services qui vous accompagnent, au plus près de chez vous.", "Each key moment of life comes with its formalities: find the services that help, close to home.")) }
        ol.cards.events {
            @for event in &state.web.life_events.events {
                li {
                    a href=(href(lang, &format!("/evenements-de-vie/{}", event.code))) {
                        (match lang { Lang::Fr => &event.label_fr, Lang::En => &event.label_en })
                    }
                    p { (match lang { Lang::Fr => &event.summary_fr, Lang::En => &event.summary_en }) }
                }
            }
        }
    };
    layout::page(
        &Chrome {
            lang,
            title: t(lang, "Événements de vie", "Life events"),
            path: &path,
            current: Some(Section::LifeEvents),
        },
        body,
    )
    .into_response()
}

#[derive(Default, serde::Deserialize)]
struct Where {
    lieu: Option<String>,
    near: Option<String>,
}

/// `GET /evenements-de-vie/{code}`: one life event and its nearest services.
#[utoipa::path(get, path = "/evenements-de-vie/{code}", tag = "pages",
    params(("code" = String, Path, description = "Code de l'événement (demenagement, mariage…)"),
           ("lieu" = Option<String>, Query, description = "Commune ou code postal"),
           ("near" = Option<String>, Query, description = "lon,lat")),
    responses((status = 200, description = "Événement de vie (HTML)", content_type = "text/html"),
              (status = 404, description = "Événement inconnu (HTML)", content_type = "text/html")))]
pub async fn event(
    State(state): State<AppState>,
    Path(code): Path<String>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let lang = lang_of(query.as_deref());
    let path = path_without_lang(&uri);
    let Some(event) = state.web.life_events.get(&code) else {
        return Ok(super::entry::not_found_page(lang, &path));
    };
    let asked: Where =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let typed = asked
        .lieu
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let mut error = None;
    let mut place_name = None;
    let near = match asked.near.as_deref().and_then(LonLat::parse_pair) {
        Some(p) => Some(p),
        None => match typed {
            Some(typed) => match resolve_place(&state, typed) {
                Some(commune) => {
                    place_name = Some(format!("{} ({})", commune.name, commune.insee_code));
                    Some(commune.centroid)
                }
                None => {
                    error = Some(format!(
                        "{} « {typed} ».",
                        t(lang, "Aucune commune ne correspond à", "No commune matches")
                    ));
                    None
                }
            },
            None => None,
        },
    };
    let now = hours::paris_now();
    let mut sections = Vec::new();
    for typology_code in &event.typologies {
        let Some(typology) = state.reference.taxonomy.typology(typology_code) else {
            continue;
        };
        let results = match near {
            Some(near) => {
                let query = SearchQuery {
                    text: None,
                    near: Some(near),
                    radius_m: None,
                    territory: None,
                    typologies: Some(vec![typology_code.clone()]),
                    open_at: None,
                    wheelchair: None,
                    sort: Sort::Distance,
                    limit: PER_TYPOLOGY,
                    after: None,
                };
                Some(answer(&state, &query, now).await?)
            }
            None => None,
        };
        sections.push((typology, results));
    }
    let label = match lang {
        Lang::Fr => &event.label_fr,
        Lang::En => &event.label_en,
    };
    let body = html! {
        p.breadcrumb { a href=(href(lang, "/evenements-de-vie")) { (t(lang, "← Tous les événements de vie", "← All life events")) } }
        h1 { (label) }
        p.lead { (match lang { Lang::Fr => &event.summary_fr, Lang::En => &event.summary_en }) }
        form.search-form method="get" action=(format!("/evenements-de-vie/{}", event.code)) role="search"
             aria-label=(t(lang, "Choisir un lieu", "Choose a place")) {
            @if lang == Lang::En { input type="hidden" name="lang" value="en"; }
            div.field {
                label for="f-lieu" { (t(lang, "Près de quelle commune ? (nom ou code postal)", "Near which commune? (name or postcode)")) }
                input #f-lieu type="text" name="lieu" value=[typed] list="f-lieu-suggestions" autocomplete="off" data-suggest="/api/v1/places"
                    aria-invalid=[error.as_ref().map(|_| "true")] aria-describedby=[error.as_ref().map(|_| "f-lieu-erreur")];
                datalist #f-lieu-suggestions {}
                @if let Some(e) = &error { p.field-error #f-lieu-erreur { (e) } }
                button.secondary.locate type="button" hidden data-locate
                    data-locating=(t(lang, "Localisation en cours…", "Locating…"))
                    data-denied=(t(lang, "Position indisponible : saisissez une commune.", "Position unavailable: type a commune.")) {
                    (t(lang, "Autour de moi", "Near me"))
                }
                p.locate-status role="status" data-locate-status {}
            }
            button.primary type="submit" { (t(lang, "Afficher les services", "Show the services")) }
        }
        @if let Some(place) = &place_name {
            p.place { (t(lang, "Autour de ", "Around ")) strong { (place) } }
        }
        @if near.is_none() {
            p { (t(lang, "Indiquez une commune pour voir les services les plus proches de chaque type :", "Give a commune to see the nearest services of each kind:")) }
        }
        @for (typology, results) in &sections {
            section.event-typology aria-labelledby=(format!("t-{}", typology.code)) {
                h2 id=(format!("t-{}", typology.code)) { (match lang { Lang::Fr => &typology.label_fr, Lang::En => &typology.label_en }) }
                @if let Some(results) = results {
                    @if results.page.found.is_empty() {
                        p { (t(lang, "Aucun service de ce type n'est encore publié.", "No service of this kind is published yet.")) }
                    } @else {
                        ol.results {
                            @for found in &results.page.found {
                                @if let Some(cached) = results.entries.get(&found.id) {
                                    (item(&state, lang, cached, found.distance_m, results.at, false))
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let page = layout::page(
        &Chrome {
            lang,
            title: label,
            path: &path,
            current: Some(Section::LifeEvents),
        },
        body,
    );
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((status, page).into_response())
}
