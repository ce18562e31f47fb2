//! The search page `/recherche` and its compact twin `/embed` (the widget's iframe): one form
//! whose GET URL mirrors the API's parameters, and the list of results; both rendered here so
//! the page works without JavaScript and the script only swaps in the server's own HTML.

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, distance, href, t, Chrome, Section};
use super::{encode_query, lang_of, path_without_lang, widget};
use crate::error::{Error, FieldError, Result};
use crate::search::engine::{SearchParams, SearchQuery};
use crate::search::hours::{self, Lang};
use crate::search::{answer, Results};
use crate::services::cache::Cached;
use crate::services::Wheelchair;
use crate::state::AppState;
use crate::territory::Commune;

/// The search form's fields, as the URL carries them: the API's parameters, plus `lieu` (a
/// commune typed by name or postcode) and the widget's own settings.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct PageParams {
    pub q: Option<String>,
    pub lieu: Option<String>,
    pub near: Option<String>,
    pub radius: Option<String>,
    #[serde(rename = "in")]
    pub within: Option<String>,
    pub theme: Option<String>,
    pub typology: Option<String>,
    pub open_now: Option<String>,
    pub wheelchair: Option<String>,
    pub sort: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub lang: Option<String>,
    // The widget's settings (`/embed`).
    pub territory: Option<String>,
    pub color: Option<String>,
    pub title: Option<String>,
    pub map: Option<String>,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl PageParams {
    fn from_query(query: Option<&str>) -> Self {
        // Repeated or unknown parameters never fail a page: the last value wins.
        serde_urlencoded::from_str(query.unwrap_or_default()).unwrap_or_default()
    }

    /// Whether anything was asked: a bare page shows the form only.
    fn asks(&self) -> bool {
        [
            &self.q,
            &self.lieu,
            &self.near,
            &self.within,
            &self.theme,
            &self.typology,
            &self.territory,
        ]
        .iter()
        .any(|v| given(v).is_some())
            || self.open_now.is_some()
            || self.wheelchair.is_some()
    }

    /// The query-string pairs of this search (without the cursor), to link to its pages.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let fields: [(&'static str, &Option<String>); 16] = [
            ("q", &self.q),
            ("lieu", &self.lieu),
            ("near", &self.near),
            ("radius", &self.radius),
            ("in", &self.within),
            ("theme", &self.theme),
            ("typology", &self.typology),
            ("open_now", &self.open_now),
            ("wheelchair", &self.wheelchair),
            ("sort", &self.sort),
            ("limit", &self.limit),
            ("territory", &self.territory),
            ("color", &self.color),
            ("title", &self.title),
            ("map", &self.map),
            ("lang", &self.lang),
        ];
        fields
            .into_iter()
            .filter_map(|(k, v)| given(v).map(|v| (k, v.to_owned())))
            .collect()
    }
}

/// A commune typed by a citizen: « Riom », « 63200 », « Riom (63200) » as the suggestions write it.
pub fn resolve_place<'a>(state: &'a AppState, typed: &str) -> Option<&'a Commune> {
    let typed = typed.trim();
    let (name, postcode) = match typed.rsplit_once(" (") {
        Some((name, rest)) => (name.trim(), rest.strip_suffix(')').map(str::trim)),
        None => (typed, None),
    };
    let candidates = state.places.search(&state.reference.locator, name, 20);
    match postcode {
        Some(pc) => candidates
            .iter()
            .find(|c| c.postcodes.iter().any(|p| p == pc))
            .or(candidates.first())
            .copied(),
        None => candidates.first().copied(),
    }
}

/// What a search page shows: the query understood, the place chosen, or what is wrong.
pub struct Outcome<'a> {
    pub results: Option<Results>,
    pub place: Option<&'a Commune>,
    pub errors: Vec<FieldError>,
}

/// Parses the page's fields into the API's query and runs it.
pub async fn run<'a>(
    state: &'a AppState,
    lang: Lang,
    params: &PageParams,
    extra_typologies: Option<Vec<String>>,
) -> Result<Outcome<'a>> {
    let mut errors = Vec::new();
    let mut place = None;
    let mut near = given(&params.near).map(str::to_owned);
    if near.is_none() {
        if let Some(typed) = given(&params.lieu) {
            match resolve_place(state, typed) {
                Some(commune) => {
                    place = Some(commune);
                    near = Some(format!("{},{}", commune.centroid.lon, commune.centroid.lat));
                }
                None => errors.push(FieldError::new(
                    "lieu",
                    match lang {
                        Lang::Fr => format!("Aucune commune ne correspond à « {typed} »."),
                        Lang::En => format!("No commune matches “{typed}”."),
                    },
                )),
            }
        }
    }
    let within = given(&params.within)
        .or(given(&params.territory))
        .map(str::to_owned);
    let api = SearchParams {
        q: given(&params.q).map(str::to_owned),
        near,
        radius: given(&params.radius).and_then(|r| r.parse().ok()),
        within,
        theme: given(&params.theme).map(str::to_owned),
        typology: given(&params.typology).map(str::to_owned),
        open_now: params.open_now.as_ref().map(|_| true),
        open_at: None,
        wheelchair: given(&params.wheelchair).map(str::to_owned),
        sort: given(&params.sort).map(str::to_owned),
        limit: given(&params.limit).and_then(|l| l.parse().ok()),
        cursor: given(&params.cursor).map(str::to_owned),
    };
    if given(&params.radius).is_some() && api.radius.is_none() {
        errors.push(in_language(
            FieldError::new("radius", "rayon en mètres attendu"),
            lang,
        ));
    }
    let now = hours::paris_now();
    let query: Option<SearchQuery> =
        match api.parse(&state.reference.taxonomy, &state.reference.locator, now) {
            Ok(mut query) => {
                if let Some(extra) = extra_typologies {
                    query.typologies = Some(match query.typologies {
                        Some(asked) => asked.into_iter().filter(|c| extra.contains(c)).collect(),
                        None => extra,
                    });
                }
                Some(query)
            }
            Err(Error::InvalidParameters(wrong)) => {
                errors.extend(wrong.into_iter().map(|e| in_language(e, lang)));
                None
            }
            Err(other) => return Err(other),
        };
    let results = match query {
        Some(query) if errors.is_empty() && params.asks() => {
            Some(answer(state, &query, now).await?)
        }
        _ => None,
    };
    Ok(Outcome {
        results,
        place,
        errors,
    })
}

/// A parameter error of the API (written in French) in the page's language.
pub fn in_language(error: FieldError, lang: Lang) -> FieldError {
    if lang == Lang::Fr {
        return error;
    }
    let message = match error.field.as_str() {
        "theme" => "Unknown theme.",
        "typology" => "Unknown kind of service.",
        "near" => "Position not understood (expected longitude,latitude in France).",
        "radius" => "Radius expected in metres, between 0 and 1,000,000, with a position.",
        "in" | "territory" => "Unknown territory.",
        "wheelchair" => "Wheelchair access expected as yes, limited or no.",
        "open_at" => "Date and time not understood.",
        "sort" => "Sort expected as distance or relevance.",
        "limit" => "Page size expected between 1 and 100.",
        "cursor" => "This page link has expired: start the search again.",
        _ => return error,
    };
    FieldError::new(error.field, message)
}

/// The id of the form field a parameter error belongs to.
fn field_id(parameter: &str) -> &'static str {
    match parameter {
        "q" => "f-q",
        "lieu" | "near" | "radius" => "f-lieu",
        "theme" => "f-theme",
        "typology" => "f-typology",
        "wheelchair" => "f-wheelchair",
        "open_now" | "open_at" => "f-open",
        "in" => "f-q",
        _ => "f-q",
    }
}

fn error_for<'e>(errors: &'e [FieldError], id: &str) -> Option<&'e FieldError> {
    errors.iter().find(|e| field_id(&e.field) == id)
}

/// Where the form sends its fields and which it carries hidden.
pub struct FormSetup<'a> {
    pub action: &'a str,
    pub compact: bool,
    /// Fields the form carries unchanged (the widget's settings, the language).
    pub hidden: Vec<(&'static str, String)>,
}

/// The search form, its fields filled with `params`, each error next to its field.
pub fn form(
    state: &AppState,
    lang: Lang,
    setup: &FormSetup,
    params: &PageParams,
    errors: &[FieldError],
) -> Markup {
    let taxonomy = &state.reference.taxonomy;
    let field = |id: &'static str| {
        let error = error_for(errors, id);
        (error, error.map(|_| format!("{id}-erreur")))
    };
    let (q_error, q_described) = field("f-q");
    let (lieu_error, lieu_described) = field("f-lieu");
    let (theme_error, theme_described) = field("f-theme");
    let (typology_error, typology_described) = field("f-typology");
    let chosen_theme = given(&params.theme).unwrap_or_default();
    let chosen_typology = given(&params.typology).unwrap_or_default();
    let near = given(&params.near);
    html! {
        form.search-form.compact[setup.compact] method="get" action=(setup.action) role="search"
             data-live="resultats" aria-label=(t(lang, "Rechercher un service", "Search for a service")) {
            @for (name, value) in &setup.hidden {
                input type="hidden" name=(name) value=(value);
            }
            div.fields {
                div.field {
                    label for="f-q" { (t(lang, "Quoi ?", "What?")) span.hint { (t(lang, " (mairie, pharmacie, CAF…)", " (town hall, pharmacy, CAF…)")) } }
                    input #f-q type="search" name="q" value=[given(&params.q)] autocomplete="off"
                        aria-invalid=[q_error.map(|_| "true")] aria-describedby=[q_described.as_deref()];
                    @if let Some(e) = q_error { p.field-error id=[q_described.as_deref()] { (e.message) } }
                }
                div.field {
                    label for="f-lieu" { (t(lang, "Où ?", "Where?")) span.hint { (t(lang, " (commune ou code postal)", " (commune or postcode)")) } }
                    input #f-lieu type="text" name="lieu" value=[given(&params.lieu)] list="f-lieu-suggestions"
                        autocomplete="off" data-suggest="/api/v1/places"
                        aria-invalid=[lieu_error.map(|_| "true")] aria-describedby=[lieu_described.as_deref()];
                    datalist #f-lieu-suggestions {}
                    @if let Some(e) = lieu_error { p.field-error id=[lieu_described.as_deref()] { (e.message) } }
                    @if let Some(near) = near {
                        input type="hidden" name="near" value=(near) data-near;
                    }
                    button.secondary.locate type="button" hidden data-locate
                        data-locating=(t(lang, "Localisation en cours…", "Locating…"))
                        data-denied=(t(lang, "Position indisponible : saisissez une commune.", "Position unavailable: type a commune.")) {
                        (t(lang, "Autour de moi", "Near me"))
                    }
                    p.locate-status role="status" data-locate-status {}
                }
            }
            details.filters open[given(&params.theme).is_some() || given(&params.typology).is_some() || params.open_now.is_some() || params.wheelchair.is_some() || !errors.is_empty()] {
                summary { (t(lang, "Filtres", "Filters")) }
                div.fields {
                    div.field {
                        label for="f-theme" { (t(lang, "Thème", "Theme")) }
                        select #f-theme name="theme" aria-invalid=[theme_error.map(|_| "true")] aria-describedby=[theme_described.as_deref()] {
                            option value="" { (t(lang, "Tous les thèmes", "All themes")) }
                            @for theme in &taxonomy.themes {
                                option value=(theme.code) selected[theme.code == chosen_theme] {
                                    (match lang { Lang::Fr => &theme.label_fr, Lang::En => &theme.label_en })
                                }
                            }
                        }
                        @if let Some(e) = theme_error { p.field-error id=[theme_described.as_deref()] { (e.message) } }
                    }
                    div.field {
                        label for="f-typology" { (t(lang, "Type de service", "Kind of service")) }
                        select #f-typology name="typology" aria-invalid=[typology_error.map(|_| "true")] aria-describedby=[typology_described.as_deref()] {
                            option value="" { (t(lang, "Tous les types", "All kinds")) }
                            @for theme in &taxonomy.themes {
                                optgroup label=(match lang { Lang::Fr => &theme.label_fr, Lang::En => &theme.label_en }) {
                                    @for typology in taxonomy.typologies.iter().filter(|ty| ty.theme == theme.code && !ty.retired) {
                                        option value=(typology.code) selected[typology.code == chosen_typology] {
                                            (match lang { Lang::Fr => &typology.label_fr, Lang::En => &typology.label_en })
                                        }
                                    }
                                }
                            }
                        }
                        @if let Some(e) = typology_error { p.field-error id=[typology_described.as_deref()] { (e.message) } }
                    }
                    div.checks {
                        div.check {
                            input #f-open type="checkbox" name="open_now" value="true" checked[params.open_now.is_some()];
                            label for="f-open" { (t(lang, "Ouvert maintenant", "Open now")) }
                        }
                        div.check {
                            input #f-wheelchair type="checkbox" name="wheelchair" value="yes" checked[given(&params.wheelchair) == Some("yes")];
                            label for="f-wheelchair" { (t(lang, "Accessible en fauteuil roulant", "Wheelchair accessible")) }
                        }
                    }
                }
            }
            button.primary type="submit" { (t(lang, "Rechercher", "Search")) }
        }
    }
}

/// The count sentence of a result list, announced by screen readers when it changes.
pub fn count_sentence(total: usize, lang: Lang) -> String {
    match (lang, total) {
        (Lang::Fr, 0) => "Aucun service ne correspond à votre recherche.".into(),
        (Lang::Fr, 1) => "1 service trouvé.".into(),
        (Lang::Fr, n) => format!("{} services trouvés.", layout::number(n as i64, lang)),
        (Lang::En, 0) => "No service matches your search.".into(),
        (Lang::En, 1) => "1 service found.".into(),
        (Lang::En, n) => format!("{} services found.", layout::number(n as i64, lang)),
    }
}

/// One result: name, typology, distance, address, open state, phone, directions.
pub fn item(
    state: &AppState,
    lang: Lang,
    cached: &Cached,
    distance_m: Option<f64>,
    at: chrono::DateTime<chrono_tz::Tz>,
    embed: bool,
) -> Markup {
    let service = &cached.service;
    let c = &service.content;
    let typology = state.reference.taxonomy.typology(&c.typology);
    let typology_label = typology.map_or(c.typology.as_str(), |ty| match lang {
        Lang::Fr => ty.label_fr.as_str(),
        Lang::En => ty.label_en.as_str(),
    });
    let open = state.hours.state_at(c.opening_hours.as_deref(), at);
    let open_text = hours::describe(&open, at, lang);
    let commune = state.reference.locator.commune(&c.insee_code);
    let address = address_line(c, commune);
    let entry_href = href(lang, &format!("/services/{}", service.id));
    let directions = format!(
        "https://www.openstreetmap.org/directions?to={:.6}%2C{:.6}",
        c.location.lat, c.location.lon
    );
    html! {
        li.result data-id=(service.id) data-lon=(format!("{:.6}", c.location.lon)) data-lat=(format!("{:.6}", c.location.lat)) data-name=(c.name) {
            article {
                h3 {
                    @if embed {
                        // The entry's page is not framed: it opens beside the commune's site.
                        a href=(entry_href) target="_blank" rel="noopener" {
                            (c.name) span.visually-hidden { (t(lang, " (nouvel onglet)", " (new tab)")) }
                        }
                    } @else {
                        a href=(entry_href) { (c.name) }
                    }
                }
                p.meta {
                    span.typology { (typology_label) }
                    @if let Some(d) = distance_m {
                        " · " span.distance { (distance(d, lang)) }
                    }
                }
                @if !address.is_empty() { p.address { (address) } }
                @if let Some(text) = open_text {
                    p.open-state.open[open.open == Some(true)].closed[open.open == Some(false)] {
                        span.visually-hidden { (t(lang, "Horaires : ", "Hours: ")) }
                        (text)
                    }
                }
                ul.actions {
                    @for phone in &c.phones {
                        li { a href=(format!("tel:{}", phone.e164())) {
                            span.visually-hidden { (t(lang, "Appeler ", "Call ")) (c.name) " : " }
                            (phone.national())
                        } }
                    }
                    li { a href=(directions) rel="noreferrer" {
                        (t(lang, "Itinéraire", "Directions"))
                        span.visually-hidden { " " (t(lang, "vers", "to")) " " (c.name) " " (t(lang, "(OpenStreetMap, nouveau site)", "(OpenStreetMap, other site)")) }
                    } }
                }
                @if c.wheelchair == Wheelchair::Yes {
                    p.wheelchair { (t(lang, "Accessible en fauteuil roulant", "Wheelchair accessible")) }
                }
            }
        }
    }
}

/// « 1 place de la Mairie, 63200 Riom ».
pub fn address_line(c: &crate::services::Content, commune: Option<&Commune>) -> String {
    let city = c
        .city
        .clone()
        .or_else(|| commune.map(|m| m.name.clone()))
        .unwrap_or_default();
    let place = [c.postcode.as_deref().unwrap_or_default(), city.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    [c.street.as_deref().unwrap_or_default(), place.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// The map panel: a button that loads the map script when pressed, and the map's container.
pub fn map_panel(state: &AppState, lang: Lang) -> Markup {
    let tiles = state.web.tiles.as_ref();
    html! {
        div.map-panel {
            button.secondary.map-toggle type="button" hidden aria-expanded="false" aria-controls="carte"
                data-map-toggle data-show=(t(lang, "Afficher la carte", "Show the map")) data-hide=(t(lang, "Masquer la carte", "Hide the map")) {
                (t(lang, "Afficher la carte", "Show the map"))
            }
            div #carte.map hidden
                role="region" aria-label=(t(lang, "Carte des résultats", "Map of the results"))
                data-lang=(layout::code(lang))
                data-tiles=[tiles.map(|_| "/tuiles/{z}/{x}/{y}")]
                data-attribution=[tiles.map(|t| t.attribution.as_str())]
                data-boundaries="/api/v1/boundaries"
                data-map-script=(super::assets::url("map.js"))
                data-map-style=(super::assets::url("map.css")) {}
        }
    }
}

/// The results region: the count (a live region), the ordered list, the link to the next page.
pub fn results_region(
    state: &AppState,
    lang: Lang,
    action: &str,
    params: &PageParams,
    outcome: &Outcome,
    with_map: bool,
) -> Markup {
    let sentence = match (&outcome.results, outcome.errors.is_empty()) {
        (Some(results), _) => count_sentence(results.page.total, lang),
        (None, false) => t(
            lang,
            "La recherche n'a pas abouti : corrigez les champs signalés.",
            "The search failed: correct the fields shown.",
        )
        .to_owned(),
        (None, true) => String::new(),
    };
    let next = outcome
        .results
        .as_ref()
        .and_then(|r| r.page.next.as_ref())
        .map(|cursor| {
            let mut pairs = params.pairs();
            pairs.push(("cursor", cursor.encode()));
            format!("{action}?{}", encode_query(&pairs))
        });
    html! {
        section #resultats aria-labelledby="resultats-titre" data-live-region {
            h2 #resultats-titre { (t(lang, "Résultats", "Results")) }
            p #compte role="status" aria-live="polite" { (sentence) }
            @if !outcome.errors.is_empty() {
                div.error-summary role="alert" {
                    h3 { (t(lang, "Veuillez corriger :", "Please correct:")) }
                    ul {
                        @for e in &outcome.errors {
                            li { a href=(format!("#{}", field_id(&e.field))) { (e.message) } }
                        }
                    }
                }
            }
            @if let Some(place) = outcome.place {
                p.place { (t(lang, "Autour de ", "Around ")) strong { (place.name) } " (" (place.insee_code) ")" }
            }
            @if let Some(results) = &outcome.results {
                @if !results.page.found.is_empty() {
                    @if with_map { (map_panel(state, lang)) }
                    ol.results {
                        @for found in &results.page.found {
                            @if let Some(cached) = results.entries.get(&found.id) {
                                (item(state, lang, cached, found.distance_m, results.at, action == "/embed"))
                            }
                        }
                    }
                }
                @if let Some(next) = next {
                    p.pager { a href=(next) rel="next" { (t(lang, "Résultats suivants", "Next results")) } }
                }
            }
        }
    }
}

/// `GET /recherche`: the search page.
#[utoipa::path(get, path = "/recherche", tag = "pages", params(SearchParams),
    responses((status = 200, description = "Page de recherche (HTML)", content_type = "text/html"),
              (status = 400, description = "Paramètres invalides, signalés dans la page", content_type = "text/html")))]
pub async fn search_page(
    State(state): State<AppState>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let lang = lang_of(query.as_deref());
    let params = PageParams::from_query(query.as_deref());
    let outcome = run(&state, lang, &params, None).await?;
    let path = path_without_lang(&uri);
    let title = match given(&params.q).or(given(&params.lieu)) {
        Some(asked) if outcome.results.is_some() => {
            format!("{} « {asked} »", t(lang, "Recherche", "Search"))
        }
        _ => t(
            lang,
            "Rechercher un service public",
            "Find a public service",
        )
        .to_owned(),
    };
    let mut hidden = Vec::new();
    if lang == Lang::En {
        hidden.push(("lang", "en".to_owned()));
    }
    let setup = FormSetup {
        action: "/recherche",
        compact: false,
        hidden,
    };
    let body = html! {
        h1 { (t(lang, "Rechercher un service public", "Find a public service")) }
        (form(&state, lang, &setup, &params, &outcome.errors))
        (results_region(&state, lang, "/recherche", &params, &outcome, true))
    };
    let page = layout::page(
        &Chrome {
            lang,
            title: &title,
            path: &path,
            current: Some(Section::Search),
        },
        body,
    );
    let status = if outcome.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok((status, page).into_response())
}

/// `GET /embed`: the widget's page, framed by communes' sites.
#[utoipa::path(get, path = "/embed", tag = "pages",
    params(
        ("territory" = Option<String>, Query, description = "commune:63113, epci:246300701, departement:63…"),
        ("theme" = Option<String>, Query, description = "Un ou plusieurs thèmes, séparés par des virgules"),
        ("typology" = Option<String>, Query, description = "Une ou plusieurs typologies, séparées par des virgules"),
        ("q" = Option<String>, Query, description = "Mots recherchés au départ"),
        ("color" = Option<String>, Query, description = "Couleur d'accent, #RRGGBB"),
        ("title" = Option<String>, Query, description = "Titre affiché"),
        ("map" = Option<String>, Query, description = "1 : proposer la carte"),
        ("lang" = Option<String>, Query, description = "fr ou en"),
    ),
    responses((status = 200, description = "Widget (HTML, intégrable dans une iframe)", content_type = "text/html")))]
pub async fn embed_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let lang = lang_of(query.as_deref());
    let mut params = PageParams::from_query(query.as_deref());
    let settings = widget::EmbedSettings::parse(&state, &params, lang);
    // Several themes: the union of their typologies (the API takes one theme).
    let theme_typologies = settings.theme_typologies(&state);
    if theme_typologies.is_some() {
        params.theme = None;
    }
    let mut outcome = run(&state, lang, &params, theme_typologies).await?;
    outcome.errors.extend(
        settings
            .errors
            .iter()
            .cloned()
            .map(|e| in_language(e, lang)),
    );
    let setup = FormSetup {
        action: "/embed",
        compact: true,
        hidden: settings.hidden_fields(),
    };
    let body = html! {
        h1.embed-title { (settings.title) }
        (form(&state, lang, &setup, &params, &outcome.errors))
        (results_region(&state, lang, "/embed", &params, &outcome, settings.map))
        p.powered { a href=(href(lang, "/")) target="_blank" rel="noopener" { (t(lang, "Proximités, l'annuaire des services publics (nouvel onglet)", "Proximités, the public services directory (new tab)")) } }
    };
    let page = layout::embed_page(lang, &settings.title, &settings.theme_css_url(), body);
    Ok(page.into_response())
}
