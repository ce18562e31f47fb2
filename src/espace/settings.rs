//! The organisations' settings (`/espace/organisations…`): the operator lists them, creates one
//! and changes its convention (name, kind, SIREN, territory, référent, dates, committed
//! typologies); an organisation's admin changes its référent and reads the rest.

use std::collections::HashMap;

use crate::http::Path;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use maud::{html, Markup};

use super::{check_csrf, form_fields, page, require, Session};
use crate::accounts::store::{self as accounts, NewOrganisation, Organisation};
use crate::accounts::{can, Action, Area, Target, Territory, ORGANISATION_KINDS};
use crate::error::{Error, FieldError, Result};
use crate::state::AppState;

const KIND_LABELS: [(&str, &str); 7] = [
    ("commune", "Commune"),
    ("epci", "Intercommunalité (EPCI)"),
    ("departement", "Département"),
    ("region", "Région"),
    ("state", "Service de l'État"),
    ("association", "Association"),
    ("other", "Autre"),
];

const BACK: Option<(&str, &str)> = Some(("/espace/organisations", "Retour aux organisations"));

fn refused(error: Error, session: &Session) -> Response {
    super::refused_page(error, Some(session), BACK)
}

/// The organisations the session sees: every one for the operator, its own otherwise.
#[utoipa::path(get, path = "/espace/organisations", tag = "contributors",
    responses((status = 200, description = "Organisations (HTML)", content_type = "text/html")))]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let listed = match session.actor.organisation_id() {
        Some(own) => accounts::organisation(&state.store, own)
            .await
            .map(|o| o.map(|o| vec![(o.id, o.name)]).unwrap_or_default()),
        None => accounts::organisation_names(&state.store).await,
    };
    let listed = match listed {
        Ok(found) => found,
        Err(error) => return refused(error, &session),
    };
    let operator = can(&session.actor, Action::CreateOrganisation, Target::Platform).is_ok();
    let body = html! {
        @if operator { p { a href="/espace/organisations/nouvelle" { "Nouvelle organisation" } } }
        @if listed.is_empty() { p { "Aucune organisation." } }
        ul { @for (id, name) in &listed { li { a href=(format!("/espace/organisations/{id}")) { (name) } } } }
    };
    page("Organisations", Some(&session), body).into_response()
}

/// A submitted form's value, trimmed; none when empty.
fn value(form: &HashMap<String, String>, field: &str) -> Option<String> {
    form.get(field)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The convention as the operator's form states it, with every field that cannot be read.
fn parse(state: &AppState, form: &HashMap<String, String>) -> (NewOrganisation, Vec<FieldError>) {
    let mut errors = Vec::new();
    let list = |field: &str| -> Vec<String> {
        value(form, field)
            .unwrap_or_default()
            .split([',', ' ', '\n', ';'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut areas = Vec::new();
    for code in list("territory") {
        match Area::parse(&code) {
            Ok(area) => areas.push(area),
            Err(message) => errors.push(FieldError::new("territory", message)),
        }
    }
    let mut date = |field: &str| -> Option<NaiveDate> {
        let text = value(form, field)?;
        crate::dates::parse_date(&text)
            .map_err(|message| errors.push(FieldError::new(field, message)))
            .ok()
    };
    let (convention_start, convention_end) = (date("convention_start"), date("convention_end"));
    let new = NewOrganisation {
        name: value(form, "name").unwrap_or_default(),
        kind: value(form, "kind").unwrap_or_default(),
        siren: value(form, "siren"),
        territory: Territory(areas),
        typologies: list("typologies"),
        referent_name: value(form, "referent_name"),
        referent_email: value(form, "referent_email"),
        referent_phone: value(form, "referent_phone"),
        convention_start,
        convention_end,
    };
    errors.extend(new.check_reference(&state.reference));
    if let Err(Error::Invalid(more)) = new.check() {
        errors.extend(more);
    }
    (new, errors)
}

/// The form: every field for the operator; the référent's only for the organisation's admin.
fn form(
    session: &Session,
    action: &str,
    current: &HashMap<String, String>,
    errors: &[FieldError],
    convention: bool,
) -> Markup {
    let error_of = |field: &str| {
        let messages: Vec<&str> = errors
            .iter()
            .filter(|e| e.field == field)
            .map(|e| e.message.as_str())
            .collect();
        (!messages.is_empty()).then(|| messages.join(" ; "))
    };
    let shown = |field: &str| current.get(field).cloned().unwrap_or_default();
    let field = |name: &str, label: &str, kind: &str, hint: &str, editable: bool| {
        let message = error_of(name);
        let hint_id = format!("{name}-aide");
        let error_id = format!("{name}-erreur");
        let described: Vec<&str> = [
            (!hint.is_empty()).then_some(hint_id.as_str()),
            message.as_ref().map(|_| error_id.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        html! {
            p {
                label for=(name) { (label) }
                input id=(name) name=(name) type=(kind) value=(shown(name)) readonly[!editable]
                    aria-invalid=[message.as_ref().map(|_| "true")]
                    aria-describedby=[(!described.is_empty()).then(|| described.join(" "))];
                @if !hint.is_empty() { span.hint id=(hint_id) { (hint) } }
                @if let Some(m) = &message { span.error id=(error_id) { (m) } }
            }
        }
    };
    html! {
        @if !errors.is_empty() {
            div role="alert" {
                p { "Rien n'est enregistré : " (errors.len()) " champ" @if errors.len() > 1 { "s" } " à corriger." }
                ul { @for e in errors { li { a href=(format!("#{}", e.field)) { (e.message) } } } }
            }
        }
        form method="post" action=(action) novalidate {
            input type="hidden" name="csrf" value=(session.csrf);
            fieldset {
                legend { "Convention" }
                (field("name", "Nom", "text", "", convention))
                p {
                    label for="kind" { "Nature" }
                    @if convention {
                        select #kind name="kind" aria-invalid=[error_of("kind").map(|_| "true")]
                            aria-describedby=[error_of("kind").map(|_| "kind-erreur")] {
                            @for (kind, label) in KIND_LABELS {
                                option value=(kind) selected[shown("kind") == kind] { (label) }
                            }
                        }
                        @if let Some(m) = error_of("kind") { span.error #kind-erreur { (m) } }
                    } @else {
                        input #kind type="text" readonly value=(KIND_LABELS.iter().find(|(k, _)| *k == shown("kind")).map_or(shown("kind"), |(_, l)| (*l).to_owned()));
                    }
                }
                (field("siren", "SIREN", "text", "9 chiffres", convention))
                (field("territory", "Territoire", "text", "codes séparés par des virgules : commune:63113, epci:246300701, departement:63", convention))
                (field("convention_start", "Début de la convention", "date", "", convention))
                (field("convention_end", "Fin de la convention", "date", "", convention))
                (field("typologies", "Typologies engagées (Annexe 2)", "text", "codes séparés par des virgules, par exemple mairie, bibliotheque", convention))
            }
            fieldset {
                legend { "Référent" }
                (field("referent_name", "Nom", "text", "", true))
                (field("referent_email", "Adresse électronique", "email", "les courriels des campagnes et des signalements y partent", true))
                (field("referent_phone", "Téléphone", "tel", "", true))
            }
            p { button type="submit" { "Enregistrer" } }
        }
    }
}

fn values_of(organisation: &Organisation) -> HashMap<String, String> {
    let mut v = HashMap::new();
    v.insert("name".into(), organisation.name.clone());
    v.insert("kind".into(), organisation.kind.clone());
    v.insert(
        "siren".into(),
        organisation.siren.clone().unwrap_or_default(),
    );
    v.insert("territory".into(), organisation.territory.join(", "));
    v.insert("typologies".into(), organisation.typologies.join(", "));
    for (field, date) in [
        ("convention_start", organisation.convention_start),
        ("convention_end", organisation.convention_end),
    ] {
        v.insert(
            field.into(),
            date.map(|d| d.to_string()).unwrap_or_default(),
        );
    }
    v.insert(
        "referent_name".into(),
        organisation.referent_name.clone().unwrap_or_default(),
    );
    v.insert(
        "referent_email".into(),
        organisation.referent_email.clone().unwrap_or_default(),
    );
    v.insert(
        "referent_phone".into(),
        organisation.referent_phone.clone().unwrap_or_default(),
    );
    v
}

/// The new organisation form (operator).
#[utoipa::path(get, path = "/espace/organisations/nouvelle", tag = "contributors",
    responses((status = 200, description = "Formulaire (HTML)", content_type = "text/html"),
        (status = 403, description = "Réservé à l'opérateur")))]
pub async fn new_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    if let Err(error) = can(&session.actor, Action::CreateOrganisation, Target::Platform) {
        return refused(error, &session);
    }
    let mut values = HashMap::new();
    values.insert("kind".to_owned(), ORGANISATION_KINDS[0].to_owned());
    let body = form(
        &session,
        "/espace/organisations/nouvelle",
        &values,
        &[],
        true,
    );
    page("Nouvelle organisation", Some(&session), body).into_response()
}

/// Creates an organisation (operator).
#[utoipa::path(post, path = "/espace/organisations/nouvelle", tag = "contributors",
    request_body(content_type = "application/x-www-form-urlencoded", description = "name, kind, siren, territory, convention_start, convention_end, typologies, referent_name, referent_email, referent_phone, csrf"),
    responses((status = 303, description = "Créée"), (status = 403, description = "Réservé à l'opérateur"),
        (status = 409, description = "Nom déjà pris (HTML)"), (status = 422, description = "Champs à corriger (HTML)")))]
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let submitted = form_fields(&body);
    let allowed = check_csrf(&session, &submitted)
        .and_then(|()| can(&session.actor, Action::CreateOrganisation, Target::Platform));
    if let Err(error) = allowed {
        return refused(error, &session);
    }
    let (new, mut errors) = parse(&state, &submitted);
    if errors.is_empty() {
        match accounts::create_organisation(&state.store, &new).await {
            Ok(created) => {
                return Redirect::to(&format!(
                    "/espace/organisations/{}?enregistree=1",
                    created.id
                ))
                .into_response()
            }
            Err(Error::Conflict { detail, .. }) => errors.push(FieldError::new("name", detail)),
            Err(Error::Invalid(more)) => errors.extend(more),
            Err(error) => return refused(error, &session),
        }
    }
    let body = form(
        &session,
        "/espace/organisations/nouvelle",
        &submitted,
        &errors,
        true,
    );
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        page("Nouvelle organisation", Some(&session), body),
    )
        .into_response()
}

/// The organisation `id`, if the session may read its settings (its own, or the operator).
async fn readable(state: &AppState, session: &Session, id: &str) -> Result<Organisation> {
    can(
        &session.actor,
        Action::ExportOrganisation,
        Target::Organisation(id),
    )?;
    accounts::organisation(&state.store, id)
        .await?
        .ok_or_else(Error::forbidden)
}

/// An organisation's settings.
#[utoipa::path(get, path = "/espace/organisations/{id}", tag = "contributors",
    params(("id" = String, Path, description = "L'organisation")),
    responses((status = 200, description = "Paramètres de l'organisation (HTML)", content_type = "text/html"),
        (status = 403, description = "Organisation d'autrui ou inconnue")))]
pub async fn settings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let organisation = match readable(&state, &session, &id).await {
        Ok(found) => found,
        Err(error) => return refused(error, &session),
    };
    let saved = query.is_some_and(|q| q.contains("enregistree=1"));
    render(
        &session,
        &organisation,
        &values_of(&organisation),
        &[],
        saved,
        StatusCode::OK,
    )
}

fn render(
    session: &Session,
    organisation: &Organisation,
    values: &HashMap<String, String>,
    errors: &[FieldError],
    saved: bool,
    status: StatusCode,
) -> Response {
    let convention = can(
        &session.actor,
        Action::SetConvention,
        Target::Organisation(&organisation.id),
    )
    .is_ok();
    let referent = can(
        &session.actor,
        Action::ManageOrganisation,
        Target::Organisation(&organisation.id),
    )
    .is_ok();
    let body = html! {
        @if saved { p role="status" { "Enregistré." } }
        @if referent {
            (form(session, &format!("/espace/organisations/{}", organisation.id), values, errors, convention))
        } @else {
            dl {
                dt { "Territoire" } dd { (organisation.territory.join(", ")) }
                dt { "Typologies engagées" } dd { (organisation.typologies.join(", ")) }
                dt { "Référent" } dd { (organisation.referent_name.clone().unwrap_or_default()) " " (organisation.referent_email.clone().unwrap_or_default()) }
            }
        }
    };
    (status, page(&organisation.name, Some(session), body)).into_response()
}

/// Saves an organisation's settings: all of them for the operator, the référent for its admin.
#[utoipa::path(post, path = "/espace/organisations/{id}", tag = "contributors",
    params(("id" = String, Path, description = "L'organisation")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "the form's fields, csrf"),
    responses((status = 303, description = "Enregistré"), (status = 403, description = "Non autorisé"),
        (status = 422, description = "Champs à corriger (HTML)")))]
pub async fn save(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let submitted = form_fields(&body);
    let allowed = check_csrf(&session, &submitted).and_then(|()| {
        can(
            &session.actor,
            Action::ManageOrganisation,
            Target::Organisation(&id),
        )
    });
    if let Err(error) = allowed {
        return refused(error, &session);
    }
    let organisation = match readable(&state, &session, &id).await {
        Ok(found) => found,
        Err(error) => return refused(error, &session),
    };
    let convention = can(
        &session.actor,
        Action::SetConvention,
        Target::Organisation(&id),
    )
    .is_ok();
    let outcome = if convention {
        let (new, mut errors) = parse(&state, &submitted);
        if errors.is_empty() {
            match accounts::update_organisation(&state.store, &id, &new).await {
                Ok(_) => Ok(()),
                Err(Error::Conflict { detail, .. }) => {
                    errors.push(FieldError::new("name", detail));
                    Err(errors)
                }
                Err(Error::Invalid(more)) => Err(more),
                Err(error) => return refused(error, &session),
            }
        } else {
            Err(errors)
        }
    } else {
        let referent = |field: &str| value(&submitted, field);
        match accounts::update_referent(
            &state.store,
            &id,
            referent("referent_name").as_deref(),
            referent("referent_email").as_deref(),
            referent("referent_phone").as_deref(),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(Error::Invalid(errors)) => Err(errors),
            Err(error) => return refused(error, &session),
        }
    };
    match outcome {
        Ok(()) => {
            Redirect::to(&format!("/espace/organisations/{id}?enregistree=1")).into_response()
        }
        Err(errors) => {
            // What was typed, over what is stored for the fields this person cannot change.
            let mut values = values_of(&organisation);
            for (field, typed) in &submitted {
                if convention || field.starts_with("referent_") {
                    values.insert(field.clone(), typed.clone());
                }
            }
            render(
                &session,
                &organisation,
                &values,
                &errors,
                false,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
    }
}
