//! The organisation's people and scripts (`/espace/equipe`): who can edit its entries, the
//! invitations pending and the form its admin (or the operator) invites with — the link goes by
//! e-mail through the outbox, never onto the page —, and its API tokens: created (the secret
//! shown once), listed with their last use, revoked.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::{check_csrf, form_fields, page, require, Session};
use crate::accounts::{can, store as accounts, Action, Role, Target};
use crate::error::{Error, FieldError, Result};
use crate::state::AppState;

/// The people of the organisation and the invitation form.
#[utoipa::path(get, path = "/espace/equipe", tag = "contributors",
    responses((status = 200, description = "Personnes de l'organisation et invitations (HTML)", content_type = "text/html")))]
pub async fn team_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    render(&state, &session, &[], None, StatusCode::OK)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// What the page reports of the action just done.
enum Done<'a> {
    Invited(&'a str),
    /// A token created: (its name, the secret, shown this once).
    TokenCreated(&'a str, &'a str),
}

fn day(at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&chrono_tz::Europe::Paris)
        .format("%d/%m/%Y %H:%M")
        .to_string()
}

async fn render(
    state: &AppState,
    session: &Session,
    errors: &[FieldError],
    done: Option<Done<'_>>,
    status: StatusCode,
) -> Result<Response> {
    let organisations = match session.actor.organisation_id() {
        Some(own) => accounts::organisation(&state.store, own)
            .await?
            .map(|o| vec![(o.id, o.name)])
            .unwrap_or_default(),
        None => accounts::organisation_names(&state.store).await?,
    };
    let mut teams = Vec::new();
    for (id, name) in &organisations {
        let manages = can(
            &session.actor,
            Action::ManageOrganisation,
            Target::Organisation(id),
        )
        .is_ok();
        let tokens = if manages {
            accounts::tokens(&state.store, id).await?
        } else {
            Vec::new()
        };
        teams.push((
            id,
            name,
            accounts::team(&state.store, id).await?,
            manages,
            tokens,
        ));
    }
    let may_invite = organisations.first().is_some_and(|(id, _)| {
        can(
            &session.actor,
            Action::ManageOrganisation,
            Target::Organisation(id),
        )
        .is_ok()
    });
    let error_of = |field: &str| {
        errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.clone())
    };
    let body = html! {
        @match &done {
            Some(Done::Invited(email)) => {
                p role="status" { "Invitation envoyée à " strong { (email) } " : le lien part par courriel." }
            }
            Some(Done::TokenCreated(name, secret)) => {
                div role="status" {
                    p { "Jeton « " (name) " » créé. Copiez-le maintenant : il ne sera plus jamais affiché (seule son empreinte est gardée)." }
                    p {
                        label for="jeton-cree" { "Jeton (en-tête Authorization: Bearer …)" }
                        input #jeton-cree type="text" readonly value=(secret) size="60";
                    }
                }
            }
            None => {}
        }
        @if may_invite {
            section aria-labelledby="inviter" {
                h2 #inviter { "Inviter une personne" }
                @let invitation_errors: Vec<_> = errors.iter().filter(|e| e.field == "email" || e.field == "organisation").collect();
                @if !invitation_errors.is_empty() {
                    div role="alert" {
                        p { "L'invitation n'est pas partie :" }
                        ul { @for e in invitation_errors { li { a href=(format!("#{}", e.field)) { (e.message) } } } }
                    }
                }
                form method="post" action="/espace/equipe" novalidate {
                    input type="hidden" name="csrf" value=(session.csrf);
                    @if session.actor.role == Role::Operator {
                        (super::organisation_select(&organisations, error_of("organisation").as_deref()))
                    }
                    p {
                        label for="email" { "Adresse électronique" }
                        input #email name="email" type="email" autocomplete="off" required
                            aria-invalid=[error_of("email").map(|_| "true")]
                            aria-describedby=[error_of("email").map(|_| "email-erreur")];
                        @if let Some(m) = error_of("email") { span.error #email-erreur { (m) } }
                    }
                    fieldset {
                        legend { "Rôle" }
                        p {
                            input #role-editor type="radio" name="role" value="editor" checked;
                            label for="role-editor" { "Contributrice ou contributeur (modifie les fiches)" }
                        }
                        p {
                            input #role-admin type="radio" name="role" value="admin";
                            label for="role-admin" { "Administratrice ou administrateur (invite aussi)" }
                        }
                    }
                    p { button type="submit" { "Envoyer l'invitation" } }
                }
            }
        }
        @for (id, name, people, manages, tokens) in &teams {
            section aria-labelledby=(format!("equipe-{id}")) {
                h2 id=(format!("equipe-{id}")) { (name) }
                @if people.is_empty() { p { "Personne pour l'instant." } }
                @else {
                    table {
                        caption { "Personnes et invitations" }
                        thead { tr { th scope="col" { "Adresse" } th scope="col" { "Rôle" } th scope="col" { "État" } } }
                        tbody {
                            @for (email, role, accepted) in people {
                                tr {
                                    th scope="row" { (email) }
                                    td { @if role == "admin" { "administration" } @else { "contribution" } }
                                    td { @if *accepted { "compte actif" } @else { "invitation en attente" } }
                                }
                            }
                        }
                    }
                }
                @if *manages {
                    h3 id=(format!("jetons-{id}")) { "Jetons d'API (scripts)" }
                    @if tokens.is_empty() { p { "Aucun jeton." } }
                    @else {
                        table aria-labelledby=(format!("jetons-{id}")) {
                            thead { tr {
                                th scope="col" { "Nom" } th scope="col" { "Créé le" }
                                th scope="col" { "Dernier usage" } th scope="col" { "État" }
                            } }
                            tbody {
                                @for token in tokens {
                                    tr {
                                        th scope="row" { (token.name) }
                                        td { (day(token.created_at)) }
                                        td { (token.last_used_at.map(day).unwrap_or_else(|| "jamais".into())) }
                                        td {
                                            @if let Some(at) = token.revoked_at { "révoqué le " (day(at)) }
                                            @else {
                                                form method="post" action=(format!("/espace/equipe/jetons/{}/revoquer", token.id)) {
                                                    input type="hidden" name="csrf" value=(session.csrf);
                                                    input type="hidden" name="organisation" value=(id);
                                                    button type="submit" aria-label=(format!("Révoquer le jeton « {} »", token.name)) { "Révoquer" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    form method="post" action="/espace/equipe/jetons" novalidate {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="organisation" value=(id);
                        @let field = format!("jeton-nom-{id}");
                        @let message = error_of(&field);
                        p {
                            label for=(field) { "Nom d'un nouveau jeton (à quoi il sert)" }
                            input id=(field) name="name" type="text" required
                                aria-invalid=[message.as_ref().map(|_| "true")]
                                aria-describedby=[message.as_ref().map(|_| format!("{field}-erreur"))];
                            @if let Some(m) = &message { span.error role="alert" id=(format!("{field}-erreur")) { (m) } }
                        }
                        p { button type="submit" { "Créer un jeton" } }
                    }
                }
            }
        }
    };
    Ok((status, page("Équipe", Some(session), body)).into_response())
}

/// Invites a person to the organisation; the link goes out by e-mail with the invitation, in
/// one transaction.
#[utoipa::path(post, path = "/espace/equipe", tag = "contributors",
    request_body(content_type = "application/x-www-form-urlencoded", description = "email, role (admin|editor), organisation (operator), csrf"),
    responses((status = 200, description = "Invitation envoyée (HTML)", content_type = "text/html"),
        (status = 403, description = "Réservé à l'administration de l'organisation"),
        (status = 422, description = "Champs à corriger (HTML)")))]
pub async fn invite(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let form = form_fields(&body);
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let organisation = match managed(&session, &form) {
        Ok(organisation) => organisation,
        Err(error) => return refused(error, &session),
    };
    let role = match field("role") {
        "admin" => Role::Admin,
        _ => Role::Editor,
    };
    match invite_by_mail(&state, &organisation, field("email"), role).await {
        Ok(email) => {
            render(
                &state,
                &session,
                &[],
                Some(Done::Invited(&email)),
                StatusCode::OK,
            )
            .await
        }
        Err(Error::Invalid(errors)) => {
            render(
                &state,
                &session,
                &errors,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(Error::NotFound { .. }) => {
            let errors = [FieldError::new("organisation", "organisation inconnue")];
            render(
                &state,
                &session,
                &errors,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(error) => Err(error),
    }
    .unwrap_or_else(IntoResponse::into_response)
}

/// The invitation and its e-mail, written together; the address as it was recorded.
async fn invite_by_mail(
    state: &AppState,
    organisation: &str,
    email: &str,
    role: Role,
) -> Result<String> {
    let name = accounts::organisation(&state.store, organisation)
        .await?
        .ok_or_else(|| Error::not_found("organisation", organisation))?
        .name;
    let email =
        crate::services::validate::check_email(email).map_err(|m| Error::invalid("email", m))?;
    let mut tx = state.store.begin_writing().await?;
    let secret = accounts::invite_in(&mut tx, organisation, &email, role).await?;
    crate::mail::invitation(&mut tx, &state.public_url, &email, &name, role, &secret).await?;
    tx.commit().await?;
    Ok(email)
}

/// The session's organisation, or the one the operator's form names, if the session may manage it.
fn managed(session: &Session, form: &std::collections::HashMap<String, String>) -> Result<String> {
    check_csrf(session, form)?;
    let organisation = session
        .actor
        .organisation_id()
        .or(form.get("organisation").map(String::as_str))
        .unwrap_or_default()
        .to_owned();
    can(
        &session.actor,
        Action::ManageOrganisation,
        Target::Organisation(&organisation),
    )?;
    Ok(organisation)
}

fn refused(error: Error, session: &Session) -> Response {
    super::refused_page(error, Some(session), None)
}

/// Creates an API token for the organisation and shows it, once.
#[utoipa::path(post, path = "/espace/equipe/jetons", tag = "contributors",
    request_body(content_type = "application/x-www-form-urlencoded", description = "name, organisation (operator), csrf"),
    responses((status = 200, description = "Le jeton, affiché une fois (HTML)", content_type = "text/html"),
        (status = 403, description = "Réservé à l'administration de l'organisation"),
        (status = 422, description = "Nom manquant (HTML)")))]
pub async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let form = form_fields(&body);
    let organisation = match managed(&session, &form) {
        Ok(organisation) => organisation,
        Err(error) => return refused(error, &session),
    };
    let name = form.get("name").map(String::as_str).unwrap_or_default();
    match accounts::create_token(&state.store, &organisation, name).await {
        Ok((_, secret)) => {
            let done = Done::TokenCreated(name.trim(), &secret);
            render(&state, &session, &[], Some(done), StatusCode::OK).await
        }
        Err(Error::Invalid(_)) => {
            let errors = [FieldError::new(
                format!("jeton-nom-{organisation}"),
                "donnez un nom au jeton (à quoi il sert)",
            )];
            render(
                &state,
                &session,
                &errors,
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(error) => Err(error),
    }
    .unwrap_or_else(|error| refused(error, &session))
}

/// Revokes an API token of the organisation: its scripts are refused from then on.
#[utoipa::path(post, path = "/espace/equipe/jetons/{id}/revoquer", tag = "contributors",
    params(("id" = String, Path, description = "The token's id (not the secret)")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "organisation (operator), csrf"),
    responses((status = 303, description = "Révoqué"),
        (status = 403, description = "Jeton d'une autre organisation, inconnu, ou réservé à l'administration")))]
pub async fn revoke_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let form = form_fields(&body);
    let organisation = match managed(&session, &form) {
        Ok(organisation) => organisation,
        Err(error) => return refused(error, &session),
    };
    match accounts::revoke_token(&state.store, &organisation, &id).await {
        Ok(true) => axum::response::Redirect::to("/espace/equipe").into_response(),
        // Another organisation's token and an unknown one: the same refusal.
        Ok(false) => refused(Error::forbidden(), &session),
        Err(error) => refused(error, &session),
    }
}
