//! The page of one entry (`/services/{id}`): every detail, the week's hours as a table,
//! closures, accessibility, the map, the source and its date of verification, schema.org
//! JSON-LD for search engines, and the « Signaler une erreur » form.

use crate::http::Path;
use axum::extract::{Form, FromRequest, RawQuery, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Datelike, NaiveDate, TimeDelta, Utc};
use maud::{html, Markup, PreEscaped};
use serde_json::json;

use super::layout::{self, href, t, Chrome};
use super::search::{address_line, map_panel};
use super::{lang_of, path_without_lang};
use crate::error::{Error, FieldError, Result};
use crate::reports::{self, ReportForm};
use crate::search::hours::{self, clock, long_date, weekday_name, DayHours, Lang};
use crate::services::{store, Service, ServiceId, Status, Wheelchair};
use crate::state::AppState;

/// An entry not confirmed for longer than this is flagged « à vérifier » (convention: twice a year).
const STALE_AFTER_DAYS: i64 = 183;

async fn published(state: &AppState, id: &str) -> Result<Option<Service>> {
    let Some(id) = ServiceId::parse(id) else {
        return Ok(None);
    };
    Ok(store::get(&state.store, &id)
        .await?
        .filter(|s| s.status == Status::Published))
}

/// The page citizens get for an address that leads nowhere.
pub fn not_found_page(lang: Lang, path: &str) -> Response {
    let body = html! {
        h1 { (t(lang, "Page introuvable", "Page not found")) }
        p { (t(lang, "Cette fiche n'existe pas ou n'est plus publiée.", "This entry does not exist or is no longer published.")) }
        p { a href=(href(lang, "/recherche")) { (t(lang, "Rechercher un service", "Search for a service")) } }
    };
    let page = layout::page(
        &Chrome {
            lang,
            title: t(lang, "Page introuvable", "Page not found"),
            path,
            current: None,
        },
        body,
    );
    (StatusCode::NOT_FOUND, page).into_response()
}

/// The week's slots of one day, as read aloud: « 8 h 30 – 12 h, 13 h 30 – 17 h ».
fn day_text(day: &DayHours, lang: Lang) -> String {
    if day.slots.is_empty() {
        return t(lang, "fermé", "closed").to_owned();
    }
    day.slots
        .iter()
        .map(|(from, to)| format!("{} – {}", clock(*from, lang), clock(*to, lang)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The week's hours for the JSON-LD: a regular week, so a public holiday of this week is read
/// from the same weekday of the next.
fn regular_week(state: &AppState, hours: Option<&str>, monday: NaiveDate) -> Option<Vec<DayHours>> {
    let this = state.hours.week(hours, monday)?;
    let next = state.hours.week(hours, monday + TimeDelta::days(7))?;
    Some(
        this.into_iter()
            .zip(next)
            .map(|(day, later)| if day.holiday { later } else { day })
            .collect(),
    )
}

fn json_ld(state: &AppState, service: &Service, monday: NaiveDate) -> String {
    let c = &service.content;
    let typology = state.reference.taxonomy.typology(&c.typology);
    let kind = match typology.map(|ty| ty.theme.as_str()) {
        Some("services-publics") => "GovernmentOffice",
        _ => "CivicStructure",
    };
    let mut specification = Vec::new();
    if let Some(week) = regular_week(state, c.opening_hours.as_deref(), monday) {
        for (i, day) in week.iter().enumerate() {
            for (from, to) in &day.slots {
                let hhmm = |m: u32| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
                specification.push(json!({
                    "@type": "OpeningHoursSpecification",
                    "dayOfWeek": format!("https://schema.org/{}", hours::DAYS[i]),
                    "opens": hhmm(*from),
                    "closes": if *to >= 1_440 { "23:59".to_owned() } else { hhmm(*to) },
                }));
            }
        }
    }
    let special: Vec<_> = c
        .closures
        .iter()
        .map(|closure| {
            json!({
                "@type": "OpeningHoursSpecification",
                "validFrom": closure.from.to_string(),
                "validThrough": closure.to.to_string(),
                "opens": "00:00",
                "closes": "00:00",
            })
        })
        .collect();
    let mut document = json!({
        "@context": "https://schema.org",
        "@type": kind,
        "@id": format!("/services/{}", service.id),
        "name": c.name,
        "address": {
            "@type": "PostalAddress",
            "streetAddress": c.street,
            "postalCode": c.postcode,
            "addressLocality": c.city.clone().or_else(|| state.reference.locator.commune(&c.insee_code).map(|m| m.name.clone())),
            "addressCountry": "FR",
        },
        "geo": { "@type": "GeoCoordinates", "latitude": c.location.lat, "longitude": c.location.lon },
    });
    if let Some(object) = document.as_object_mut() {
        if let Some(description) = &c.description {
            object.insert("description".into(), json!(description));
        }
        if let Some(phone) = c.phones.first() {
            object.insert("telephone".into(), json!(phone.e164()));
        }
        if let Some(email) = &c.email {
            object.insert("email".into(), json!(email));
        }
        if let Some(website) = &c.website {
            object.insert("url".into(), json!(website));
        }
        if !specification.is_empty() {
            object.insert("openingHoursSpecification".into(), json!(specification));
        }
        if !special.is_empty() {
            object.insert("specialOpeningHoursSpecification".into(), json!(special));
        }
        if c.wheelchair == Wheelchair::Yes {
            object.insert(
                "amenityFeature".into(),
                json!({"@type": "LocationFeatureSpecification", "name": "wheelchairAccessible", "value": true}),
            );
        }
    }
    // `</script>` inside a string must not close the element.
    document.to_string().replace('<', "\\u003c")
}

/// What the report form shows: a fresh token, what was typed, what is wrong, or thanks.
struct ReportState<'a> {
    typed: Option<&'a ReportForm>,
    errors: &'a [FieldError],
    sent: bool,
}

fn report_form(state: &AppState, lang: Lang, service: &Service, report: &ReportState) -> Markup {
    let token = state.web.form_token.issue(reports::unix_now());
    let error = |field: &str| report.errors.iter().find(|e| e.field == field);
    let message_error = error("message");
    let email_error = error("email");
    let token_error = error("jeton").or(error("rate"));
    html! {
        section.report #signaler aria-labelledby="signaler-titre" {
            h2 #signaler-titre { (t(lang, "Signaler une erreur", "Report an error")) }
            @if report.sent {
                p.success role="status" { (t(lang, "Merci : votre signalement a été transmis à l'organisme qui tient cette fiche.", "Thank you: your report was sent to the body that keeps this entry.")) }
            }
            p { (t(lang, "Une information est fausse ou manque ? Dites-le à l'organisme qui tient cette fiche.", "Is something wrong or missing? Tell the body that keeps this entry.")) }
            @if let Some(e) = token_error { p.field-error role="alert" { (e.message) } }
            form method="post" action=(href(lang, &format!("/services/{}/signaler", service.id))) {
                input type="hidden" name="jeton" value=(token);
                div.field {
                    label for="r-message" { (t(lang, "Qu'est-ce qui est faux ? (obligatoire)", "What is wrong? (required)")) }
                    textarea #r-message name="message" rows="4" required maxlength=(reports::MAX_MESSAGE)
                        aria-invalid=[message_error.map(|_| "true")] aria-describedby=[message_error.map(|_| "r-message-erreur")] {
                        (report.typed.map(|f| f.message.as_str()).unwrap_or_default())
                    }
                    @if let Some(e) = message_error { p.field-error #r-message-erreur { (e.message) } }
                }
                div.field {
                    label for="r-email" { (t(lang, "Votre adresse électronique (facultatif, pour vous répondre)", "Your e-mail address (optional, for a reply)")) }
                    input #r-email type="email" name="email" autocomplete="email"
                        value=[report.typed.map(|f| f.email.as_str())]
                        aria-invalid=[email_error.map(|_| "true")] aria-describedby=[email_error.map(|_| "r-email-erreur")];
                    @if let Some(e) = email_error { p.field-error #r-email-erreur { (e.message) } }
                }
                // People never see this field; robots fill it in.
                div.trap aria-hidden="true" {
                    label for="r-site" { "Ne pas remplir" }
                    input #r-site type="text" name="site" tabindex="-1" autocomplete="off";
                }
                button.primary type="submit" { (t(lang, "Envoyer le signalement", "Send the report")) }
            }
        }
    }
}

fn render(
    state: &AppState,
    lang: Lang,
    path: &str,
    service: &Service,
    report: &ReportState,
) -> Markup {
    let c = &service.content;
    let now = hours::paris_now();
    let today = now.date_naive();
    let monday = today - TimeDelta::days(i64::from(today.weekday().num_days_from_monday()));
    let typology = state.reference.taxonomy.typology(&c.typology);
    let typology_label = typology.map_or(c.typology.as_str(), |ty| match lang {
        Lang::Fr => ty.label_fr.as_str(),
        Lang::En => ty.label_en.as_str(),
    });
    let commune = state.reference.locator.commune(&c.insee_code);
    let open = state.hours.state_at(c.opening_hours.as_deref(), now);
    let week = state.hours.week(c.opening_hours.as_deref(), monday);
    let stale = service
        .verified_at
        .is_none_or(|at| Utc::now() - at > TimeDelta::days(STALE_AFTER_DAYS));
    let closures: Vec<_> = c.closures.iter().filter(|cl| cl.to >= today).collect();
    let body = html! {
        script type="application/ld+json" { (PreEscaped(json_ld(state, service, monday))) }
        p.breadcrumb { a href=(href(lang, "/recherche")) { (t(lang, "← Rechercher un autre service", "← Search for another service")) } }
        h1 { (c.name) }
        p.meta { (typology_label) @if let Some(m) = commune { " · " (m.name) } }
        @if stale {
            p.stale { strong { (t(lang, "À vérifier : ", "To be checked: ")) } (t(lang, "cette fiche n'a pas été confirmée depuis plus de six mois.", "this entry has not been confirmed for more than six months.")) }
        }
        @if let Some(text) = hours::describe(&open, now, lang) {
            p.open-state.open[open.open == Some(true)].closed[open.open == Some(false)] { (text) }
        }
        @if let Some(description) = &c.description { p.description { (description) } }
        section aria-labelledby="coordonnees" {
            h2 #coordonnees { (t(lang, "Coordonnées", "Contact")) }
            dl.details {
                @let address = address_line(c, commune);
                @if !address.is_empty() { dt { (t(lang, "Adresse", "Address")) } dd { (address) } }
                @if !c.phones.is_empty() {
                    dt { (t(lang, "Téléphone", "Phone")) }
                    dd { ul.inline { @for phone in &c.phones { li { a href=(format!("tel:{}", phone.e164())) { (phone.national()) } } } } }
                }
                @if let Some(email) = &c.email { dt { (t(lang, "Courriel", "E-mail")) } dd { a href=(format!("mailto:{email}")) { (email) } } }
                @if let Some(website) = &c.website { dt { (t(lang, "Site internet", "Website")) } dd { a href=(website) rel="noreferrer" { (website) } } }
                dt { (t(lang, "Itinéraire", "Directions")) }
                dd { a href=(format!("https://www.openstreetmap.org/directions?to={:.6}%2C{:.6}", c.location.lat, c.location.lon)) rel="noreferrer" {
                    (t(lang, "Itinéraire sur OpenStreetMap", "Directions on OpenStreetMap")) } }
            }
        }
        section aria-labelledby="horaires" {
            h2 #horaires { (t(lang, "Horaires", "Opening hours")) }
            @match &week {
                Some(week) => {
                    table.hours {
                        caption { (t(lang, "Horaires de la semaine du ", "Hours for the week of ")) (long_date(monday, lang)) }
                        thead { tr { th scope="col" { (t(lang, "Jour", "Day")) } th scope="col" { (t(lang, "Horaires", "Hours")) } } }
                        tbody {
                            @for (i, day) in week.iter().enumerate() {
                                tr.today[day.date == today] {
                                    th scope="row" {
                                        (weekday_name(i, lang)) " " (day.date.day())
                                        @if day.holiday { " " span.holiday { (t(lang, "(jour férié)", "(public holiday)")) } }
                                    }
                                    td { (day_text(day, lang)) }
                                }
                            }
                        }
                    }
                    @if let Some(raw) = &c.opening_hours { p.raw-hours { (t(lang, "Horaires déclarés : ", "Declared hours: ")) code { (raw) } } }
                }
                None => { p { (t(lang, "Horaires non renseignés : appelez avant de vous déplacer.", "Hours not given: call before you go.")) } }
            }
            @if !closures.is_empty() {
                h3 { (t(lang, "Fermetures exceptionnelles", "Temporary closures")) }
                ul {
                    @for closure in closures {
                        li {
                            (t(lang, "du ", "from ")) (long_date(closure.from, lang)) (t(lang, " au ", " to ")) (long_date(closure.to, lang))
                            @if let Some(reason) = &closure.reason { " : " (reason) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="accessibilite" {
            h2 #accessibilite { (t(lang, "Accessibilité", "Accessibility")) }
            p { (match c.wheelchair {
                Wheelchair::Yes => t(lang, "Accessible en fauteuil roulant.", "Wheelchair accessible."),
                Wheelchair::Limited => t(lang, "Accès partiel en fauteuil roulant.", "Partly wheelchair accessible."),
                Wheelchair::No => t(lang, "Non accessible en fauteuil roulant.", "Not wheelchair accessible."),
                Wheelchair::Unknown => t(lang, "Accessibilité non renseignée.", "Accessibility not given."),
            }) }
            @if let Some(note) = &c.wheelchair_note { p { (note) } }
        }
        section.entry-map aria-labelledby="carte-titre" {
            h2 #carte-titre { (t(lang, "Plan", "Map")) }
            p { (t(lang, "Coordonnées : ", "Coordinates: ")) (format!("{:.5}, {:.5}", c.location.lat, c.location.lon)) }
            ol.results.single hidden {
                li.result data-id=(service.id) data-lon=(format!("{:.6}", c.location.lon)) data-lat=(format!("{:.6}", c.location.lat)) data-name=(c.name) { (c.name) }
            }
            (map_panel(state, lang))
        }
        section.source aria-labelledby="source-titre" {
            h2 #source-titre { (t(lang, "Source", "Source")) }
            p {
                (t(lang, "Fiche tenue par ", "Entry kept by ")) strong { (service.source_name) }
                @if let Some(at) = service.verified_at {
                    (t(lang, ", vérifiée le ", ", checked on ")) (long_date(at.date_naive(), lang))
                }
                (t(lang, ", mise à jour le ", ", updated on ")) (long_date(service.updated_at.date_naive(), lang)) "."
            }
        }
        (report_form(state, lang, service, report))
    };
    layout::page(
        &Chrome {
            lang,
            title: &c.name,
            path,
            current: None,
        },
        body,
    )
}

/// `GET /services/{id}`: an entry's page.
#[utoipa::path(get, path = "/services/{id}", tag = "pages",
    params(("id" = String, Path, description = "Identifiant de la fiche")),
    responses((status = 200, description = "Fiche (HTML)", content_type = "text/html"),
              (status = 307, description = "Doublon masqué : vers la fiche montrée à sa place"),
              (status = 404, description = "Fiche introuvable (HTML)", content_type = "text/html")))]
pub async fn entry_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let lang = lang_of(query.as_deref());
    let path = path_without_lang(&uri);
    let Some(service) = published(&state, &id).await? else {
        // A hidden duplicate leads to the entry shown in its place, in the same language.
        if let Some(service_id) = crate::services::ServiceId::parse(&id) {
            if let Some(shown) =
                crate::services::duplicates::shown_instead(&state.store, &service_id).await?
            {
                let target = match query.as_deref().filter(|q| !q.is_empty()) {
                    Some(q) => format!("/services/{shown}?{q}"),
                    None => format!("/services/{shown}"),
                };
                return Ok(axum::response::Redirect::temporary(&target).into_response());
            }
        }
        return Ok(not_found_page(lang, &path));
    };
    let sent = query
        .as_deref()
        .is_some_and(|q| q.contains("signalement=merci"));
    let report = ReportState {
        typed: None,
        errors: &[],
        sent,
    };
    Ok(render(&state, lang, &path, &service, &report).into_response())
}

/// `POST /services/{id}/signaler`: a citizen's report, kept for the entry's organisation.
#[utoipa::path(post, path = "/services/{id}/signaler", tag = "pages",
    params(("id" = String, Path, description = "Identifiant de la fiche")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "message, email (facultatif), jeton"),
    responses((status = 303, description = "Signalement enregistré : retour à la fiche"),
              (status = 400, description = "Champs à corriger, signalés dans la page", content_type = "text/html"),
              (status = 429, description = "Trop de signalements depuis cette adresse", content_type = "text/html")))]
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    crate::admission::ClientAddress(from): crate::admission::ClientAddress,
    request: Request,
) -> Result<Response> {
    let lang = lang_of(uri.query());
    let path = format!("/services/{id}");
    let typed = match Form::<ReportForm>::from_request(request, &state).await {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return Err(Error::BadRequest {
                code: "invalid_form",
                detail: rejection.body_text(),
            })
        }
    };
    let Some(service) = published(&state, &id).await? else {
        return Ok(not_found_page(lang, &path));
    };
    let checked = typed.parse(&state.web.form_token, reports::unix_now());
    // The report, its count against the address's hourly limit and the référent's e-mail are
    // written together: none without the others.
    let mut tx = state.store.begin().await?;
    let over_limit = match (&checked, from) {
        (Ok(_), Some(ip)) => !crate::rate_limits::take(&mut tx, &reports::report_limit(ip)).await?,
        _ => false,
    };
    match checked {
        Ok(report) if !over_limit => {
            let id = reports::store::insert(&mut tx, &service.id, &report).await?;
            crate::mail::notify_report(&mut tx, &state.public_url, &id).await?;
            tx.commit().await?;
            let back = href(lang, &format!("/services/{}?signalement=merci", service.id));
            Ok(Redirect::to(&format!("{back}#signaler")).into_response())
        }
        outcome => {
            let errors = match outcome {
                Err(Error::Invalid(errors)) => errors,
                Err(other) => return Err(other),
                Ok(_) => vec![FieldError::new(
                    "rate",
                    t(
                        lang,
                        "Trop de signalements depuis votre connexion : réessayez dans une heure.",
                        "Too many reports from your connection: try again in an hour.",
                    ),
                )],
            };
            let status = if over_limit {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::BAD_REQUEST
            };
            let report = ReportState {
                typed: Some(&typed),
                errors: &errors,
                sent: false,
            };
            let page = render(&state, lang, &path, &service, &report);
            Ok((status, [(header::CACHE_CONTROL, "no-store")], page).into_response())
        }
    }
}
