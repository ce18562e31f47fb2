//! The handlers of the contributors' pages.

use std::collections::HashMap;

use crate::http::Path;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use maud::{html, Markup};
use serde_json::{Map, Value};

use super::{
    anonymous_token, check_anonymous_token, check_csrf, form_fields, page, require, session_cookie,
    Session,
};
use crate::accounts::{store as accounts, Role};
use crate::error::{Error, FieldError};
use crate::reports::unix_now;
use crate::search::hours::{clock, weekday_name, Lang};
use crate::services::history::Via;
use crate::services::quality::QualityCode;
use crate::services::write::{self, draft_of};
use crate::services::{store, Draft, Service, Status};
use crate::state::AppState;

/// Entries not confirmed for this long are « à vérifier » (publicly flagged too).
const STALE_DAYS: i64 = 183;

const BACK: Option<(&str, &str)> = Some(("/espace", "Retour à mes fiches"));

/// An error as a page: the problem's words, in the frame, with its status.
pub(super) fn error_page(error: Error, session: Option<&Session>) -> Response {
    super::refused_page(error, session, BACK)
}

fn see_other(path: &str) -> Response {
    Redirect::to(path).into_response()
}

/// Login form.
#[utoipa::path(get, path = "/espace/connexion", tag = "contributors",
    responses((status = 200, description = "Formulaire de connexion (HTML)", content_type = "text/html")))]
pub async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    login_page(&state, &headers, "", None, StatusCode::OK)
}

/// The login form, its token bound to a new cookie.
fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let (cookie, purpose) = super::login_binding(headers);
    let body = html! {
        @if let Some(error) = error {
            p.error role="alert" #erreur { (error) }
        }
        form method="post" action="/espace/connexion" {
            input type="hidden" name="csrf" value=(anonymous_token(state, &purpose, unix_now()));
            p {
                label for="email" { "Adresse e-mail" }
                input #email type="email" name="email" autocomplete="username" required value=(email)
                    aria-describedby=[error.map(|_| "erreur")];
            }
            p {
                label for="password" { "Mot de passe" }
                input #password type="password" name="password" autocomplete="current-password" required;
            }
            p { button type="submit" { "Se connecter" } }
        }
    };
    let mut response = (status, page("Connexion", None, body)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// Checks the password (argon2id), rate-limited per address and account; opens a new session.
#[utoipa::path(post, path = "/espace/connexion", tag = "contributors",
    request_body(content_type = "application/x-www-form-urlencoded", description = "email, password, csrf"),
    responses((status = 303, description = "Connecté : cookie de session (HttpOnly, SameSite=Lax, Path=/espace)"),
        (status = 401, description = "Identifiants refusés (HTML)"), (status = 429, description = "Trop d'essais (HTML)")))]
pub async fn login(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form_fields(&body);
    let purpose = super::sent_login_purpose(&headers).unwrap_or_default();
    if purpose.is_empty() || check_anonymous_token(&state, &purpose, &form, unix_now()).is_err() {
        return login_page(
            &state,
            &headers,
            form.get("email").map(String::as_str).unwrap_or_default(),
            Some("Formulaire expiré ou venu d'ailleurs : saisissez de nouveau vos identifiants."),
            StatusCode::FORBIDDEN,
        );
    }
    let email = form.get("email").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let from = state
        .admission
        .proxies
        .client_address(crate::admission::peer(&extensions), &headers);
    let limits = crate::accounts::login_limits(from, &email);
    let allowed = match crate::rate_limits::within(&state.store, &limits).await {
        Ok(allowed) => allowed,
        Err(error) => return error.into_response(),
    };
    if !allowed {
        return login_page(
            &state,
            &headers,
            &email,
            Some("Trop d'essais : attendez un quart d'heure avant de réessayer."),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let actor = match accounts::check_login(&state.store, &email, &password).await {
        Ok(actor) => actor,
        Err(error) => return error.into_response(),
    };
    let Some(actor) = actor else {
        if let Err(error) = crate::rate_limits::record(&state.store, &limits).await {
            return error.into_response();
        }
        return login_page(
            &state,
            &headers,
            &email,
            Some("Adresse e-mail ou mot de passe incorrect."),
            StatusCode::UNAUTHORIZED,
        );
    };
    let crate::accounts::ActorKind::User { id, .. } = &actor.kind else {
        return error_page(Error::forbidden(), None);
    };
    match accounts::open_session(&state.store, id).await {
        Ok((secret, _)) => {
            let mut response = see_other("/espace");
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&headers, Some(&secret)));
            response
        }
        Err(error) => error.into_response(),
    }
}

/// Ends the session.
#[utoipa::path(post, path = "/espace/deconnexion", tag = "contributors",
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf"),
    responses((status = 303, description = "Déconnecté")))]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    if let Err(error) = check_csrf(&session, &form_fields(&body)) {
        return error_page(error, Some(&session));
    }
    if let Some(secret) = super::cookie_value(&headers, super::SESSION_COOKIE) {
        if let Err(error) = accounts::close_session(&state.store, secret).await {
            return error.into_response();
        }
    }
    let mut response = see_other("/espace/connexion");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&headers, None));
    response
}

/// The invitation's page: choose a password.
#[utoipa::path(get, path = "/espace/invitation/{secret}", tag = "contributors",
    params(("secret" = String, Path, description = "Le secret du lien d'invitation")),
    responses((status = 200, description = "Choix du mot de passe (HTML)", content_type = "text/html"),
        (status = 403, description = "Invitation inconnue, expirée ou utilisée (HTML)")))]
pub async fn invitation_form(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    headers: HeaderMap,
) -> Response {
    invitation_page(&state, &secret, &headers, None, StatusCode::OK).await
}

async fn invitation_page(
    state: &AppState,
    secret: &str,
    headers: &HeaderMap,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let invitation =
        match accounts::pending_invitation(&state.store, secret).await {
            Ok(Some(invitation)) => invitation,
            Ok(None) => return error_page(
                Error::Forbidden {
                    code: "invitation_invalid",
                    detail:
                        "Invitation inconnue, expirée ou déjà utilisée : demandez-en une nouvelle."
                            .into(),
                },
                None,
            ),
            Err(error) => return error.into_response(),
        };
    let organisation = accounts::organisation(&state.store, &invitation.organisation_id)
        .await
        .ok()
        .flatten()
        .map(|o| o.name)
        .unwrap_or_default();
    let invited = html! {
        p {
            "Vous êtes invité·e à contribuer pour " strong { (organisation) }
            " en tant que " (if invitation.role == "admin" { "administrateur·rice (référent·e)" } else { "rédacteur·rice" })
            ", avec l'adresse " strong { (invitation.email) } "."
        }
    };
    match accounts::has_account(&state.store, &invitation.email).await {
        Ok(false) => {}
        Ok(true) => {
            return existing_account_page(state, secret, headers, &invitation, invited).await
        }
        Err(error) => return error.into_response(),
    }
    let body = html! {
        (invited)
        form method="post" action=(format!("/espace/invitation/{secret}")) {
            input type="hidden" name="csrf" value=(anonymous_token(state, "invitation", unix_now()));
            p {
                label for="password" { "Choisissez un mot de passe" }
                span.hint #password-aide { " (12 caractères au moins)" }
                input #password type="password" name="password" autocomplete="new-password" required minlength="12"
                    aria-describedby=(if error.is_some() { "password-aide password-erreur" } else { "password-aide" })
                    aria-invalid=[error.map(|_| "true")];
                @if let Some(error) = error {
                    span.error #password-erreur { (error) }
                }
            }
            p {
                label for="confirmation" { "Confirmez le mot de passe" }
                input #confirmation type="password" name="confirmation" autocomplete="new-password" required;
            }
            p { button type="submit" { "Créer mon accès" } }
        }
    };
    (status, page("Invitation", None, body)).into_response()
}

/// The invitation of an address that already has an account: its holder confirms it signed
/// in; nobody else can, and an operator's account is never moved.
async fn existing_account_page(
    state: &AppState,
    secret: &str,
    headers: &HeaderMap,
    invitation: &accounts::Invitation,
    invited: maud::Markup,
) -> Response {
    let session = match super::session(state, headers).await {
        Ok(session) => session,
        Err(error) => return error.into_response(),
    };
    let holder = session.as_ref().filter(|s| {
        matches!(&s.actor.kind, crate::accounts::ActorKind::User { email, .. } if *email == invitation.email)
    });
    let body = match holder {
        Some(session) if session.actor.role == Role::Operator => html! {
            (invited)
            p role="alert" {
                "Votre compte est celui d'un opérateur de la plateforme : il voit déjà toutes les "
                "organisations et ne rejoint pas l'une d'elles. Demandez une invitation pour une "
                "autre adresse si vous devez contribuer pour celle-ci."
            }
        },
        Some(session) => {
            let current = match &session.actor.organisation {
                Some((id, _)) => accounts::organisation(&state.store, id)
                    .await
                    .ok()
                    .flatten()
                    .map(|o| o.name),
                None => None,
            };
            html! {
                (invited)
                p {
                    "Votre compte existe déjà"
                    @if let Some(current) = &current { " (pour " strong { (current) } ")" }
                    ". En confirmant, il rejoint cette organisation avec ce rôle"
                    @if current.is_some() { " et quitte la précédente" }
                    "."
                }
                form method="post" action=(format!("/espace/invitation/{secret}/confirmer")) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    p { button type="submit" { "Confirmer et rejoindre l'organisation" } }
                }
            }
        }
        None => html! {
            (invited)
            p {
                "Un compte existe déjà pour cette adresse. "
                a href="/espace/connexion" { "Connectez-vous avec ce compte" }
                ", puis rouvrez le lien de l'invitation pour la confirmer."
            }
        },
    };
    page("Invitation", session.as_ref(), body).into_response()
}

/// An existing account joins the organisation of an invitation to its address, confirmed by
/// its holder signed in.
#[utoipa::path(post, path = "/espace/invitation/{secret}/confirmer", tag = "contributors",
    params(("secret" = String, Path, description = "Le secret du lien d'invitation")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf (de la session)"),
    responses((status = 303, description = "Compte rattaché à l'organisation"),
        (status = 403, description = "Invitation pour un autre compte, compte d'opérateur ou formulaire expiré (HTML)")))]
pub async fn join_by_invitation(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (session, _) = match super::signed_form(&state, &headers, &body, BACK).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let crate::accounts::ActorKind::User { id, .. } = &session.actor.kind else {
        return error_page(Error::forbidden(), Some(&session));
    };
    match accounts::join_by_invitation(&state.store, &secret, id).await {
        Ok(()) => see_other("/espace"),
        Err(error) => error_page(error, Some(&session)),
    }
}

/// Accepts the invitation: the account is created with the chosen password, and signed in.
#[utoipa::path(post, path = "/espace/invitation/{secret}", tag = "contributors",
    params(("secret" = String, Path, description = "Le secret du lien d'invitation")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "password, confirmation, csrf"),
    responses((status = 303, description = "Compte créé, connecté"), (status = 422, description = "Mot de passe refusé (HTML)")))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = form_fields(&body);
    if let Err(error) = check_anonymous_token(&state, "invitation", &form, unix_now()) {
        return error_page(error, None);
    }
    let password = form.get("password").cloned().unwrap_or_default();
    if form.get("confirmation") != Some(&password) {
        return invitation_page(
            &state,
            &secret,
            &headers,
            Some("les deux mots de passe diffèrent"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    if let Err(message) = crate::accounts::check_password(&password) {
        return invitation_page(
            &state,
            &secret,
            &headers,
            Some(&message),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let user = match accounts::accept_invitation(&state.store, &secret, &password).await {
        Ok(user) => user,
        Err(error) => return error_page(error, None),
    };
    match accounts::open_session(&state.store, &user).await {
        Ok((secret, _)) => {
            let mut response = see_other("/espace");
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&headers, Some(&secret)));
            response
        }
        Err(error) => error.into_response(),
    }
}

fn query_fields(query: Option<&str>) -> HashMap<String, String> {
    query.map(|q| form_fields(q.as_bytes())).unwrap_or_default()
}

fn non_empty(value: Option<&String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The organisation's entries (every entry for the operator), with filters.
#[utoipa::path(get, path = "/espace", tag = "contributors",
    params(("etat" = Option<String>, Query, description = "a_verifier, publiees, retirees"),
        ("typologie" = Option<String>, Query, description = "Code de typologie"),
        ("commune" = Option<String>, Query, description = "Code INSEE"),
        ("nom" = Option<String>, Query, description = "Mots du nom"),
        ("campagne" = Option<String>, Query, description = "État dans la campagne en cours : a_revoir, confirmee, mise_a_jour"),
        ("qualite" = Option<String>, Query, description = "À vérifier : `signalee` (toute donnée douteuse) ou un code de signalement (position_outside_commune, phone_unreadable…)")),
    responses((status = 200, description = "Mes fiches (HTML)", content_type = "text/html"),
        (status = 303, description = "Pas de session : vers la connexion")))]
pub async fn entries(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let query = query_fields(query.as_deref());
    let campaign = match super::campaigns::current(&state.store, Utc::now().date_naive()).await {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let review_state = non_empty(query.get("campagne")).and_then(|v| {
        REVIEW_STATES
            .iter()
            .find(|(param, _, _)| *param == v)
            .map(|(_, state, _)| (*state).to_owned())
    });
    let filter = store::ListFilter {
        organisation: session.actor.organisation_id().map(str::to_owned),
        state: non_empty(query.get("etat")),
        typology: non_empty(query.get("typologie")),
        insee_code: non_empty(query.get("commune")),
        name: non_empty(query.get("nom")),
        review: campaign.as_ref().map(|c| c.window()),
        review_state: campaign.as_ref().and(review_state),
        flagged: non_empty(query.get("qualite")).and_then(|v| match v.as_str() {
            "signalee" => Some(None),
            code => QualityCode::parse(code).map(Some),
        }),
    };
    let back = match query_string(&query) {
        q if q.is_empty() => "/espace".to_owned(),
        q => format!("/espace?{q}"),
    };
    let stale_before = Utc::now() - Duration::days(STALE_DAYS);
    let (listed, total) = match store::list(&state.store, &filter, stale_before, 200).await {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let claimable = if session.actor.role == Role::Operator {
        None
    } else {
        let wanted = super::claims::ClaimableFilter {
            typology: filter.typology.clone(),
            insee_code: filter.insee_code.clone(),
            name: filter.name.clone(),
        };
        match super::claims::claimable(&state, &session, &wanted).await {
            Ok(found) => Some(found),
            Err(error) => return error.into_response(),
        }
    };
    let taxonomy = &state.reference.taxonomy;
    let locator = &state.reference.locator;
    let states = [
        ("", "Toutes"),
        ("a_verifier", "À confirmer (non confirmées depuis 6 mois)"),
        ("publiees", "Publiées"),
        ("retirees", "Retirées"),
    ];
    let body = html! {
        form method="get" action="/espace" role="search" aria-label="Filtrer mes fiches" {
            p {
                label for="etat" { "État" }
                select #etat name="etat" {
                    @for (value, label) in states {
                        option value=(value) selected[filter.state.as_deref().unwrap_or("") == value] { (label) }
                    }
                }
            }
            p {
                label for="qualite" { "Qualité des données" }
                select #qualite name="qualite" {
                    option value="" { "Toutes les fiches" }
                    option value="signalee" selected[filter.flagged == Some(None)] { "À vérifier : toute donnée douteuse" }
                    @for code in QualityCode::ALL {
                        option value=(code.as_str()) selected[filter.flagged == Some(Some(code))] { "À vérifier : " (code.label().to_lowercase()) }
                    }
                }
            }
            p {
                label for="typologie" { "Typologie" }
                select #typologie name="typologie" {
                    option value="" { "Toutes" }
                    @for t in &taxonomy.typologies {
                        option value=(t.code) selected[filter.typology.as_deref() == Some(t.code.as_str())] { (t.label_fr) }
                    }
                }
            }
            p {
                label for="commune" { "Commune (code INSEE)" }
                input #commune name="commune" inputmode="numeric" value=(filter.insee_code.clone().unwrap_or_default());
            }
            p {
                label for="nom" { "Nom" }
                input #nom name="nom" value=(filter.name.clone().unwrap_or_default());
            }
            @if let Some(campaign) = &campaign {
                p {
                    label for="campagne" { "Campagne « " (campaign.name) " »" }
                    select #campagne name="campagne" {
                        option value="" { "Tous les états" }
                        @for (param, state, label) in REVIEW_STATES {
                            option value=(param) selected[filter.review_state.as_deref() == Some(state)] { (label) }
                        }
                    }
                }
            }
            p { button type="submit" { "Filtrer" } }
        }
        @if let Some(campaign) = &campaign {
            p {
                "Campagne de mise à jour « " (campaign.name) " » : du " (campaign.starts_on.format("%d/%m/%Y"))
                " au " (campaign.ends_on.format("%d/%m/%Y")) ". "
                a href="/espace/campagnes" { "Avancement" }
            }
        }
        p role="status" { (total) " fiche" @if total > 1 { "s" } @if total > 200 { " (les 200 premières par nom)" } }
        @if !listed.is_empty() {
            table {
                caption { "Fiches" }
                thead { tr {
                    th scope="col" { "Nom" } th scope="col" { "Typologie" } th scope="col" { "Commune" }
                    th scope="col" { "État" } th scope="col" { "À vérifier" } th scope="col" { "Confirmée le" }
                    @if campaign.is_some() { th scope="col" { "Campagne" } }
                    @if session.actor.role == Role::Operator { th scope="col" { "Organisation" } }
                    th scope="col" { "Action" }
                } }
                tbody {
                    @for row in &listed {
                        tr {
                            td { a href=(format!("/espace/fiches/{}", row.id)) { (row.name) } }
                            td { (taxonomy.typology(&row.typology_code).map_or(row.typology_code.as_str(), |t| t.label_fr.as_str())) }
                            td { (crate::territory::InseeCode::parse(&row.insee_code).ok().and_then(|c| locator.commune(&c)).map_or(row.insee_code.clone(), |c| c.name.clone())) }
                            td {
                                @if row.status == "withdrawn" { "Retirée" }
                                @else if row.status == "duplicate" { "Masquée : doublon d'une fiche d'une autre source" }
                                @else if row.verified_at.is_none_or(|v| v < stale_before) { strong { "À confirmer" } }
                                @else { "À jour" }
                            }
                            td {
                                @let flags = crate::services::quality::from_stored(row.quality.as_deref());
                                @if flags.is_empty() { "—" }
                                @else {
                                    ul {
                                        @for flag in &flags { li { (flag.code.label()) } }
                                    }
                                }
                            }
                            td { (row.verified_at.map(|v| v.format("%d/%m/%Y").to_string()).unwrap_or_else(|| "jamais".into())) }
                            @if campaign.is_some() {
                                td {
                                    @if row.status == "withdrawn" { "—" }
                                    @else {
                                        @match row.review_state.as_deref() {
                                            Some("updated") => "Mise à jour",
                                            Some("confirmed") => "Confirmée sans changement",
                                            _ => strong { "À revoir" },
                                        }
                                    }
                                }
                            }
                            @if session.actor.role == Role::Operator { td { (row.source_name) } }
                            td {
                                @if row.status != "withdrawn" {
                                    form method="post" action=(format!("/espace/fiches/{}/confirmer", row.id)) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="retour" value=(back);
                                        button type="submit" aria-label=(format!("Rien n'a changé : confirmer « {} »", row.name)) { "Rien n'a changé" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(found) = &claimable {
            (super::claims::claimable_section(&state, &session, found))
        }
    };
    page("Mes fiches", Some(&session), body).into_response()
}

/// The campaign states the list filters on: (query value, stored state, label).
const REVIEW_STATES: [(&str, &str, &str); 3] = [
    ("a_revoir", "to_review", "À revoir"),
    ("confirmee", "confirmed", "Confirmée sans changement"),
    ("mise_a_jour", "updated", "Mise à jour"),
];

/// The list's query again (sorted, for a stable link back after an action).
fn query_string(query: &HashMap<String, String>) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort();
    crate::web::encode_query(&pairs)
}

/// Where to go after an action: the list the form came from, when it is one of these pages.
///
/// No control character either: the redirect's header cannot hold one, and the action is
/// committed by then (issue 17).
fn back_to(form: &HashMap<String, String>) -> Option<&str> {
    form.get("retour").map(String::as_str).filter(|p| {
        (*p == "/espace" || p.starts_with("/espace?"))
            && !p.contains('\\')
            && !p.chars().any(char::is_control)
    })
}

#[cfg(test)]
mod back_to_tests {
    use super::*;

    proptest::proptest! {
        /// Whatever closures are typed, they are read or refused by line, and those read pass
        /// the closures' one check or are refused by it — never a panic (a year past chrono's
        /// range used to overflow the check's own arithmetic).
        #[test]
        fn typed_closures_never_panic(
            text in "([+-]?[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}( [+-]?[0-9]{1,6}-[0-9]{2}-[0-9]{2})?( \\PC{0,8})?\n){0,3}|\\PC{0,30}"
        ) {
            if let Ok(closures) = parse_closures(&text) {
                let _ = crate::services::validate::check_closures(&closures);
            }
        }

        /// Whatever `retour` says, what is kept makes a valid redirect.
        #[test]
        fn kept_targets_make_valid_redirects(tail in "\\PC{0,12}|[\\x00-\\x7f]{0,12}") {
            let form = HashMap::from([("retour".to_owned(), format!("/espace?{tail}"))]);
            if let Some(target) = back_to(&form) {
                proptest::prop_assert!(axum::http::HeaderValue::try_from(target).is_ok());
            }
        }
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in [
            "/espace?a\tb",
            "/espace?\u{1}",
            "/espace?\u{7f}",
            "/espace?a\r\nSet-Cookie: x",
        ] {
            let form = HashMap::from([("retour".to_owned(), bad.to_owned())]);
            assert_eq!(back_to(&form), None, "{bad:?}");
        }
        let form = HashMap::from([("retour".to_owned(), "/espace?page=2".to_owned())]);
        assert_eq!(back_to(&form), Some("/espace?page=2"));
    }
}

/// The editable fields of the form: (name, label, hint).
const FORM_FIELDS: [(&str, &str, &str); 14] = [
    ("name", "Nom", ""),
    ("description", "Description", ""),
    ("address", "Adresse (numéro et voie)", ""),
    ("postcode", "Code postal", ""),
    ("city", "Ville", ""),
    (
        "insee_code",
        "Code INSEE de la commune",
        "laissez vide : la commune est trouvée depuis le point",
    ),
    ("lon", "Longitude", "degrés décimaux, par exemple 3.0870"),
    ("lat", "Latitude", "degrés décimaux, par exemple 45.7772"),
    ("phone", "Téléphone", "plusieurs numéros séparés par « ; »"),
    ("email", "E-mail", ""),
    ("website", "Site web", ""),
    (
        "opening_hours",
        "Horaires (format OpenStreetMap)",
        "par exemple Mo-Fr 08:30-12:00,13:30-17:00; Sa 09:00-12:00; PH off",
    ),
    (
        "wheelchair",
        "Accessibilité en fauteuil roulant",
        "yes, limited, no ou unknown",
    ),
    ("wheelchair_note", "Précisions sur l'accessibilité", ""),
];

fn draft_value<'a>(draft: &'a Draft, field: &str) -> &'a str {
    draft.field(field).map_or("", String::as_str)
}

/// The entry form, with each error next to its field and a summary linking to them.
#[allow(clippy::too_many_arguments)]
fn entry_form(
    state: &AppState,
    session: &Session,
    action: &str,
    values: &Draft,
    closures_text: &str,
    etag: Option<&str>,
    errors: &[FieldError],
    notice: Option<&str>,
) -> Markup {
    let error_of = |field: &str| {
        errors
            .iter()
            .filter(|e| e.field == field)
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join(" ; ")
    };
    let described = |field: &str, hint: &str| {
        let mut ids = Vec::new();
        if !hint.is_empty() {
            ids.push(format!("{field}-aide"));
        }
        if !error_of(field).is_empty() {
            ids.push(format!("{field}-erreur"));
        }
        (!ids.is_empty()).then(|| ids.join(" "))
    };
    html! {
        @if let Some(notice) = notice {
            p.notice role="alert" { (notice) }
        }
        @if !errors.is_empty() {
            div.error-summary role="alert" aria-labelledby="erreurs-titre" {
                h2 #erreurs-titre { "La fiche n'est pas enregistrée : " (errors.len()) " champ" @if errors.len() > 1 { "s" } " à corriger" }
                ul {
                    @for e in errors {
                        li { a href=(format!("#{}", e.field)) { (e.field) " : " (e.message) } }
                    }
                }
            }
        }
        form method="post" action=(action) novalidate {
            input type="hidden" name="csrf" value=(session.csrf);
            @if let Some(etag) = etag {
                input type="hidden" name="etag" value=(etag);
            }
            @if session.actor.role == Role::Operator && etag.is_none() {
                p {
                    label for="organisation_id" { "Organisation (identifiant)" }
                    input #organisation_id name="organisation_id" required;
                }
            }
            p {
                label for="typology" { "Typologie" }
                select #typology name="typology" aria-invalid=[(!error_of("typology").is_empty()).then_some("true")]
                    aria-describedby=[described("typology", "")] {
                    option value="" { "— choisir —" }
                    @for t in &state.reference.taxonomy.typologies {
                        option value=(t.code) selected[values.typology == t.code] { (t.label_fr) }
                    }
                }
                @let message = error_of("typology");
                @if !message.is_empty() { span.error #typology-erreur { (message) } }
            }
            @for (field, label, hint) in FORM_FIELDS {
                p {
                    label for=(field) { (label) }
                    @if !hint.is_empty() { span.hint id=(format!("{field}-aide")) { " (" (hint) ")" } }
                    @if field == "description" {
                        textarea id=(field) name=(field) rows="3" aria-describedby=[described(field, hint)]
                            aria-invalid=[(!error_of(field).is_empty()).then_some("true")] { (draft_value(values, field)) }
                    } @else {
                        input id=(field) name=(field) value=(draft_value(values, field))
                            aria-describedby=[described(field, hint)]
                            aria-invalid=[(!error_of(field).is_empty()).then_some("true")];
                    }
                    @let message = error_of(field);
                    @if !message.is_empty() { span.error id=(format!("{field}-erreur")) { (message) } }
                }
                @if field == "lat" {
                    (placement_map(state))
                }
                @if field == "opening_hours" {
                    (hours_editor())
                }
            }
            p {
                label for="closures" { "Fermetures datées" }
                span.hint #closures-aide { " (une par ligne : AAAA-MM-JJ AAAA-MM-JJ motif)" }
                textarea #closures name="closures" rows="3" aria-describedby=(if error_of("closures").is_empty() { "closures-aide" } else { "closures-aide closures-erreur" })
                    aria-invalid=[(!error_of("closures").is_empty()).then_some("true")] { (closures_text) }
                @let message = error_of("closures");
                @if !message.is_empty() { span.error #closures-erreur { (message) } }
            }
            p { button type="submit" { "Enregistrer" } }
        }
    }
}

/// The map on which to place or drag the point (shown by `espace.js`), and where the commune
/// found from it is announced.
fn placement_map(state: &AppState) -> Markup {
    let tiles = state.web.tiles.as_ref();
    html! {
        div #carte-fiche.map hidden role="region" aria-label="Carte : cliquez ou déplacez le repère pour placer le service"
            data-tiles=[tiles.map(|_| "/tuiles/{z}/{x}/{y}")]
            data-attribution=[tiles.map(|t| t.attribution.as_str())] {}
        p #commune-trouvee aria-live="polite" {}
    }
}

/// The opening-hours editor (shown by `espace.js`): days × two slots and public holidays,
/// written into the `opening_hours` field, with the server's preview.
fn hours_editor() -> Markup {
    html! {
        div #editeur-horaires hidden {
            fieldset {
                legend { "Éditeur d'horaires" }
                table {
                    caption { "Créneaux par jour (laissez vides les jours de fermeture)" }
                    thead { tr {
                        th scope="col" { "Jour" } th scope="col" { "Matin, de" } th scope="col" { "Matin, à" }
                        th scope="col" { "Après-midi, de" } th scope="col" { "Après-midi, à" }
                    } }
                    tbody {}
                }
                p {
                    input #feries-fermes type="checkbox" checked;
                    label for="feries-fermes" { "Fermé les jours fériés" }
                }
                p { button type="button" data-write-hours { "Écrire ces horaires dans le champ" } }
            }
        }
        div #apercu-horaires-direct aria-live="polite" {}
    }
}

/// Closures typed one per line: `AAAA-MM-JJ AAAA-MM-JJ motif` (the second date optional).
fn parse_closures(text: &str) -> Result<Vec<crate::services::Closure>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(n, line)| {
            let mut parts = line.splitn(3, ' ');
            let date = |value: Option<&str>| value.and_then(|v| crate::dates::parse_date(v).ok());
            let from = date(parts.next()).ok_or_else(|| {
                format!(
                    "ligne {} : la ligne commence par une date AAAA-MM-JJ",
                    n + 1
                )
            })?;
            let rest: Vec<&str> = parts.collect();
            let (to, reason) = match rest.first().and_then(|v| date(Some(v))) {
                Some(to) => (to, rest.get(1).map(|r| r.to_string())),
                None => (from, (!rest.is_empty()).then(|| rest.join(" "))),
            };
            Ok(crate::services::Closure { from, to, reason })
        })
        .collect()
}

fn closures_text(closures: &[crate::services::Closure]) -> String {
    closures
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                c.from,
                c.to,
                c.reason
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The form fields of a submitted entry form, as the write paths take them.
fn submitted(form: &HashMap<String, String>) -> (Draft, Map<String, Value>) {
    let mut fields = Map::new();
    let mut draft = Draft::default();
    for field in std::iter::once("typology").chain(FORM_FIELDS.iter().map(|(f, _, _)| *f)) {
        let value = form.get(field).cloned().unwrap_or_default();
        fields.insert(field.to_owned(), Value::String(value));
    }
    let _ = write::apply_fields(&mut draft, &fields, &[]);
    if let Some(organisation) = non_empty(form.get("organisation_id")) {
        fields.insert("organisation_id".into(), Value::String(organisation));
    }
    // Closures the validation of the write paths checks; unreadable lines become a field error
    // there (a value that is not a list).
    let typed = form.get("closures").map(String::as_str).unwrap_or_default();
    fields.insert(
        "closures".into(),
        match parse_closures(typed) {
            Ok(list) => serde_json::to_value(list).unwrap_or(Value::Null),
            Err(message) => Value::String(message),
        },
    );
    (draft, fields)
}

/// The form of a new entry.
#[utoipa::path(get, path = "/espace/fiches/nouvelle", tag = "contributors",
    responses((status = 200, description = "Formulaire de création (HTML)", content_type = "text/html")))]
pub async fn new_entry_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let form = entry_form(
        &state,
        &session,
        "/espace/fiches/nouvelle",
        &Draft::default(),
        "",
        None,
        &[],
        None,
    );
    page("Nouvelle fiche", Some(&session), form).into_response()
}

/// Creates the entry (inside the organisation's territory).
#[utoipa::path(post, path = "/espace/fiches/nouvelle", tag = "contributors",
    request_body(content_type = "application/x-www-form-urlencoded", description = "Les champs de la fiche, csrf"),
    responses((status = 303, description = "Créée : vers sa page"), (status = 422, description = "Champs à corriger (HTML)")))]
pub async fn create_entry(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (session, form) = match super::signed_form(&state, &headers, &body, BACK).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let (draft, fields) = submitted(&form);
    match write::create(
        &state,
        &session.actor,
        Via::Page,
        write::NewEntry { fields },
    )
    .await
    {
        Ok(written) => see_other(&format!(
            "/espace/fiches/{}?enregistree=1",
            written.service.id
        )),
        Err(Error::Invalid(errors)) => {
            let body = entry_form(
                &state,
                &session,
                "/espace/fiches/nouvelle",
                &draft,
                form.get("closures").map(String::as_str).unwrap_or_default(),
                None,
                &errors,
                None,
            );
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                page("Nouvelle fiche", Some(&session), body),
            )
                .into_response()
        }
        Err(error) => error_page(error, Some(&session)),
    }
}

/// The entry `id` as its editors see it, or the page that says no.
async fn readable(
    state: &AppState,
    session: &Session,
    id: &str,
) -> Result<(Service, Vec<crate::services::history::Change>), Response> {
    write::history_of(state, &session.actor, id)
        .await
        .map_err(|error| error_page(error, Some(session)))
}

/// The claim section of the entry's page (empty for an entry nobody claimed).
async fn claim_section(state: &AppState, session: &Session, id: &str) -> Markup {
    match crate::services::claims::suggestions_of(state, &session.actor, id).await {
        Ok(found) => super::claims::entry_section(session, &found),
        Err(error) => {
            tracing::warn!(%error, "claim of an entry not read");
            html! {}
        }
    }
}

/// The week of the entry's hours and whether it is open now: the preview of what citizens see.
fn hours_preview(state: &AppState, hours: Option<&str>, heading: &str) -> Markup {
    let now = crate::search::hours::paris_now();
    let today = now.date_naive();
    let monday = today
        - Duration::days(i64::from(
            chrono::Datelike::weekday(&today).num_days_from_monday(),
        ));
    let open = state.hours.state_at(hours, now);
    html! {
        section aria-labelledby=(heading) {
            h2 id=(heading) { "Aperçu des horaires" @if heading != "apercu-horaires" { " saisis" } @else { " enregistrés" } }
            @match (hours, crate::search::hours::describe(&open, now, Lang::Fr)) {
                (None, _) => p { "Pas d'horaires indiqués." },
                (Some(_), Some(text)) => p { "Ouvert maintenant ? " strong { (text) } },
                (Some(_), None) => p { "Horaires indiqués mais non interprétables." },
            }
            @if let Some(week) = state.hours.week(hours, monday) {
                table {
                    caption { "Cette semaine" }
                    tbody {
                        @for (i, day) in week.iter().enumerate() {
                            tr {
                                th scope="row" { (weekday_name(i, Lang::Fr)) }
                                td {
                                    @if day.slots.is_empty() { "fermé" }
                                    @else { (day.slots.iter().map(|(from, to)| format!("{} – {}", clock(*from, Lang::Fr), clock(*to, Lang::Fr))).collect::<Vec<_>>().join(", ")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn entry_actions(session: &Session, service: &Service) -> Markup {
    let id = &service.id;
    html! {
        section aria-labelledby="actions" {
            h2 #actions { "Actions" }
            ul {
                li { a href=(format!("/espace/fiches/{id}/historique")) { "Historique des changements" } }
                @if service.status == Status::Published {
                    li { a href=(format!("/services/{id}")) { "Voir la fiche publique" } }
                }
            }
            @if service.status == Status::Published {
                form method="post" action=(format!("/espace/fiches/{id}/confirmer")) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Rien n'a changé : confirmer la fiche" }
                }
                form method="post" action=(format!("/espace/fiches/{id}/retirer")) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Retirer la fiche (dépublier)" }
                }
            } @else {
                p { "Cette fiche est retirée : restaurez une version depuis l'historique pour la republier." }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn edit_page(
    state: &AppState,
    session: &Session,
    service: &Service,
    values: &Draft,
    closures: &str,
    errors: &[FieldError],
    notice: Option<&str>,
    claim: &Markup,
) -> Markup {
    let commune = state
        .reference
        .locator
        .commune(&service.content.insee_code)
        .map_or_else(String::new, |c| c.name.clone());
    let body = html! {
        p {
            "Commune : " strong { (commune) } " · organisation : " (service.source_name)
            " · état : " (match service.status { Status::Published => "publiée", Status::Withdrawn => "retirée", Status::Draft => "brouillon", Status::Duplicate => "masquée : doublon d'une autre fiche" })
            " · confirmée le : " (service.verified_at.map(|v| v.format("%d/%m/%Y").to_string()).unwrap_or_else(|| "jamais".into()))
        }
        @if !service.content.quality.is_empty() {
            section aria-labelledby="a-verifier" {
                h2 #a-verifier { "À vérifier" }
                p { "La source a donné ces informations douteuses ; corriger le champ concerné retire le signalement." }
                ul {
                    @for flag in &service.content.quality {
                        li {
                            strong { (flag.code.label()) } " : " (flag.message)
                            @if let Some(value) = &flag.value { " (texte de la source : « " (value) " »)" }
                        }
                    }
                }
            }
        }
        (claim)
        (entry_form(state, session, &format!("/espace/fiches/{}", service.id), values, closures, Some(&write::etag(service)), errors, notice))
        (hours_preview(state, service.content.opening_hours.as_deref(), "apercu-horaires"))
        (entry_actions(session, service))
    };
    page(
        &format!("Fiche « {} »", service.content.name),
        Some(session),
        body,
    )
}

/// The edit form of an entry.
#[utoipa::path(get, path = "/espace/fiches/{id}", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant de la fiche")),
    responses((status = 200, description = "Formulaire de la fiche (HTML)", content_type = "text/html"),
        (status = 403, description = "Fiche d'une autre organisation, ou inexistante (HTML)")))]
pub async fn edit_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let (service, _) = match readable(&state, &session, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let notice = query_fields(query.as_deref())
        .contains_key("enregistree")
        .then_some("Fiche enregistrée.");
    let mut values = draft_of(&service);
    values.insee_code.clear();
    let closures = closures_text(&service.content.closures);
    let claim = claim_section(&state, &session, &id).await;
    edit_page(
        &state,
        &session,
        &service,
        &values,
        &closures,
        &[],
        notice,
        &claim,
    )
    .into_response()
}

/// Saves the form: a change of the entry as it was when the form was shown (its ETag); when
/// someone else saved it meanwhile, nothing is written and the form says so, with the values
/// typed still in it.
#[utoipa::path(post, path = "/espace/fiches/{id}", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant de la fiche")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "Les champs de la fiche, etag, csrf"),
    responses((status = 303, description = "Enregistrée"), (status = 409, description = "Modifiée entre-temps par quelqu'un d'autre (HTML)"),
        (status = 422, description = "Champs à corriger (HTML)")))]
pub async fn save_entry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (session, form) = match super::signed_form(&state, &headers, &body, BACK).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let (draft, mut fields) = submitted(&form);
    if draft.insee_code.trim().is_empty() {
        // The commune is found again from the point.
        fields.remove("insee_code");
    }
    let etag = form.get("etag").map(String::as_str);
    let typed_closures = form.get("closures").map(String::as_str).unwrap_or_default();
    match write::update(&state, &session.actor, Via::Page, &id, etag, &fields).await {
        Ok(_) => see_other(&format!("/espace/fiches/{id}?enregistree=1")),
        Err(Error::Invalid(errors)) => match readable(&state, &session, &id).await {
            Ok((service, _)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                edit_page(
                    &state,
                    &session,
                    &service,
                    &draft,
                    typed_closures,
                    &errors,
                    None,
                    &claim_section(&state, &session, &id).await,
                ),
            )
                .into_response(),
            Err(response) => response,
        },
        Err(Error::PreconditionFailed { .. }) => match readable(&state, &session, &id).await {
            Ok((service, _)) => {
                let current = draft_of(&service);
                let differing: Vec<&str> = std::iter::once("typology")
                    .chain(FORM_FIELDS.iter().map(|(f, _, _)| *f))
                    .filter(|f| {
                        *f != "insee_code" && draft_value(&current, f) != draft_value(&draft, f)
                    })
                    .collect();
                let notice = format!(
                    "Quelqu'un a enregistré cette fiche pendant que vous la modifiiez : rien n'est écrit. Vos valeurs sont ci-dessous ; elles diffèrent de la version enregistrée pour : {}. Vérifiez-les puis enregistrez à nouveau.",
                    differing.join(", ")
                );
                (
                    StatusCode::CONFLICT,
                    edit_page(
                        &state,
                        &session,
                        &service,
                        &draft,
                        typed_closures,
                        &[],
                        Some(&notice),
                        &claim_section(&state, &session, &id).await,
                    ),
                )
                    .into_response()
            }
            Err(response) => response,
        },
        Err(error) => error_page(error, Some(&session)),
    }
}

/// Runs `act` for a signed form of the session, then goes back to the list the form came from,
/// or to the entry's page.
pub(super) async fn simple_action<T>(
    state: AppState,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    act: impl AsyncFnOnce(&AppState, &Session) -> crate::error::Result<T>,
) -> Response {
    let (session, form) = match super::signed_form(&state, &headers, &body, BACK).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    match act(&state, &session).await {
        Ok(_) => match back_to(&form) {
            Some(list) => see_other(list),
            None => see_other(&format!("/espace/fiches/{id}?enregistree=1")),
        },
        Err(error) => error_page(error, Some(&session)),
    }
}

/// « Rien n'a changé » : confirms the entry.
#[utoipa::path(post, path = "/espace/fiches/{id}/confirmer", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant de la fiche")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf"),
    responses((status = 303, description = "Confirmée")))]
pub async fn confirm_entry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let target = id.clone();
    simple_action(
        state,
        headers,
        id,
        body,
        async move |state: &AppState, session: &Session| {
            write::confirm(state, &session.actor, Via::Page, &target).await
        },
    )
    .await
}

/// Withdraws the entry.
#[utoipa::path(post, path = "/espace/fiches/{id}/retirer", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant de la fiche")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf"),
    responses((status = 303, description = "Retirée")))]
pub async fn withdraw_entry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let target = id.clone();
    simple_action(
        state,
        headers,
        id,
        body,
        async move |state: &AppState, session: &Session| {
            write::withdraw(state, &session.actor, Via::Page, &target, None).await
        },
    )
    .await
}

/// Restores the version before a change.
#[utoipa::path(post, path = "/espace/fiches/{id}/historique/{change}/restaurer", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant de la fiche"), ("change" = String, Path, description = "Identifiant du changement")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf"),
    responses((status = 303, description = "Restaurée")))]
pub async fn restore_entry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, change)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let target = id.clone();
    simple_action(
        state,
        headers,
        id,
        body,
        async move |state: &AppState, session: &Session| {
            write::restore(state, &session.actor, Via::Page, &target, &change).await
        },
    )
    .await
}

fn shown(value: &Value) -> String {
    match value {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every change of the entry, with a button to restore the version before each.
#[utoipa::path(get, path = "/espace/fiches/{id}/historique", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant de la fiche")),
    responses((status = 200, description = "Historique (HTML)", content_type = "text/html")))]
pub async fn history_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let (service, changes) = match readable(&state, &session, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let body = html! {
        p { a href=(format!("/espace/fiches/{id}")) { "Retour à la fiche « " (service.content.name) " »" } }
        table {
            caption { "Changements, du plus récent au plus ancien" }
            thead { tr {
                th scope="col" { "Date" } th scope="col" { "Par" } th scope="col" { "Comment" }
                th scope="col" { "Changement" } th scope="col" { "Champs (avant → après)" } th scope="col" { "Restaurer" }
            } }
            tbody {
                @for change in &changes {
                    tr {
                        td { (change.at.with_timezone(&chrono_tz::Europe::Paris).format("%d/%m/%Y %H:%M")) }
                        td { (change.actor.label.clone().unwrap_or_else(|| change.actor.id.clone())) }
                        td { (match change.via { Via::Page => "page", Via::Api => "API", Via::Import => "import" }) }
                        td { (match change.action.as_str() { "created" => "création", "updated" => "modification", "withdrawn" => "retrait", "restored" => "restauration", "confirmed" => "confirmation", "claimed" => "revendication", "released" => "libération", "dropped_by_source" => "plus publiée par la source", "listed_again" => "publiée à nouveau par la source", "hidden_as_duplicate" => "masquée (doublon)", "shown_again" => "affichée à nouveau", other => other }) }
                        td {
                            @if let Some(Value::Object(fields)) = &change.changes {
                                ul {
                                    @for (field, pair) in fields {
                                        li { (field) " : " (shown(&pair["old"])) " → " (shown(&pair["new"])) }
                                    }
                                }
                            }
                        }
                        td {
                            @if change.previous.is_some() {
                                form method="post" action=(format!("/espace/fiches/{id}/historique/{}/restaurer", change.id)) {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    button type="submit" aria-label=(format!("Restaurer la version d'avant le changement du {}", change.at.with_timezone(&chrono_tz::Europe::Paris).format("%d/%m/%Y %H:%M"))) { "Restaurer la version d'avant" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        &format!("Historique de « {} »", service.content.name),
        Some(&session),
        body,
    )
    .into_response()
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct PointParams {
    lon: f64,
    lat: f64,
}

/// The commune at a point, for the form's map.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CommuneAt {
    pub insee_code: String,
    pub name: String,
}

/// The commune at a point (the map of the entry form asks as the point moves).
#[utoipa::path(get, path = "/espace/commune", tag = "contributors", params(PointParams),
    responses((status = 200, body = CommuneAt), (status = 404, body = crate::error::Problem),
        (status = 401, body = crate::error::Problem)))]
pub async fn commune_at(
    State(state): State<AppState>,
    headers: HeaderMap,
    crate::http::Query(point): crate::http::Query<PointParams>,
) -> Response {
    match super::session(&state, &headers).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Error::Unauthorized {
                code: "authentication_required",
                detail: "session requise".into(),
            }
            .into_response()
        }
        Err(error) => return error.into_response(),
    }
    use crate::territory::locator::Located;
    match state
        .reference
        .locator
        .locate(crate::spatial::LonLat::new(point.lon, point.lat))
    {
        Located::Inside(c) | Located::Approximately(c) => axum::Json(CommuneAt {
            insee_code: c.insee_code.to_string(),
            name: c.name.clone(),
        })
        .into_response(),
        Located::Nowhere => {
            Error::not_found("commune au point", format!("{},{}", point.lon, point.lat))
                .into_response()
        }
    }
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct HoursParams {
    /// OSM `opening_hours`.
    oh: String,
}

/// The preview of hours being typed: normalised value, « ouvert maintenant ? », the week (an
/// HTML fragment for the form).
#[utoipa::path(get, path = "/espace/horaires", tag = "contributors", params(HoursParams),
    responses((status = 200, description = "Aperçu (fragment HTML)", content_type = "text/html")))]
pub async fn hours_fragment(
    State(state): State<AppState>,
    headers: HeaderMap,
    crate::http::Query(params): crate::http::Query<HoursParams>,
) -> Response {
    match super::session(&state, &headers).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Error::Unauthorized {
                code: "authentication_required",
                detail: "session requise".into(),
            }
            .into_response()
        }
        Err(error) => return error.into_response(),
    }
    let fragment = if params.oh.trim().is_empty() {
        html! { p { "Pas d'horaires indiqués." } }
    } else {
        match crate::services::hours::normalize(&params.oh) {
            Ok(normalized) => html! {
                p { "Horaires compris : " code { (normalized) } }
                (hours_preview(&state, Some(&normalized), "apercu-horaires-saisis"))
            },
            Err(message) => html! { p.error { "Horaires non compris : " (message) } },
        }
    };
    fragment.into_response()
}
