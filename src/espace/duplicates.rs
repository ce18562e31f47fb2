//! The operator's page of duplicates across sources: each group's shown entry and those hidden
//! in its place, with the decisions that every later detection follows (separate, show this
//! one, merge two entries the detection does not see).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use super::{page, require, Session};
use crate::accounts::Role;
use crate::error::Error;
use crate::services::duplicates::{self, Decision, Member, Pass};
use crate::state::AppState;

/// Groups listed at most.
const GROUPS_SHOWN: usize = 200;

const BACK: Option<(&str, &str)> = Some(("/espace/doublons", "Retour aux doublons"));

/// The page that says no to anyone but the operator.
fn refused(session: &Session) -> Option<Response> {
    (session.actor.role != Role::Operator)
        .then(|| super::pages::error_page(Error::forbidden(), Some(session)))
}

fn member_cells(state: &AppState, member: &Member) -> Markup {
    let taxonomy = &state.reference.taxonomy;
    let locator = &state.reference.locator;
    html! {
        td { a href=(format!("/espace/fiches/{}", member.id)) { (member.name) } }
        td { (taxonomy.typology(&member.typology_code).map_or(member.typology_code.as_str(), |t| t.label_fr.as_str())) }
        td { (crate::territory::InseeCode::parse(&member.insee_code).ok().and_then(|c| locator.commune(&c)).map_or(member.insee_code.clone(), |c| c.name.clone())) }
        td { (member.source_name) }
    }
}

fn decision_form(
    session: &Session,
    decision: &str,
    a: &str,
    b: &str,
    label: &str,
    described: &str,
) -> Markup {
    html! {
        form method="post" action="/espace/doublons/decision" {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="decision" value=(decision);
            input type="hidden" name="a" value=(a);
            input type="hidden" name="b" value=(b);
            button type="submit" aria-label=(described) { (label) }
        }
    }
}

/// The groups of duplicates, for the operator.
#[utoipa::path(get, path = "/espace/doublons", tag = "contributors",
    responses((status = 200, description = "Doublons entre sources (HTML, opérateur)", content_type = "text/html"),
        (status = 403, description = "Réservé à l'opérateur (HTML)")))]
pub async fn groups_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    if let Some(response) = refused(&session) {
        return response;
    }
    let (groups, total) = match duplicates::groups(&state.store, GROUPS_SHOWN).await {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let precedence = match duplicates::Precedence::load(&state.store).await {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let notice = query.as_deref().and_then(|q| {
        let fields = super::form_fields(q.as_bytes());
        let count = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        fields.contains_key("groupes").then(|| {
            format!(
                "Détection faite : {} groupes, {} fiches masquées ({} nouvelles), {} affichées à nouveau.",
                count("groupes"),
                count("masquees"),
                count("nouvelles"),
                count("affichees")
            )
        })
    });
    let body = html! {
        p {
            "Une même offre donnée par deux sources (même typologie à moins de 150 m, noms semblables) forme un groupe : "
            "une seule fiche est montrée aux citoyens — celle d'un contributeur d'abord, puis selon l'ordre des sources ("
            (precedence.to_text()) ") — et les autres sont masquées et gardées. Vos décisions valent pour toutes les détections suivantes."
        }
        @if let Some(notice) = &notice { p role="status" { (notice) } }
        form method="post" action="/espace/doublons/detection" {
            input type="hidden" name="csrf" value=(session.csrf);
            button type="submit" { "Relancer la détection" }
        }
        p role="status" { (total) " groupe" @if total > 1 { "s" } @if total as usize > GROUPS_SHOWN { " (les " (GROUPS_SHOWN) " premiers par nom)" } }
        @for (n, group) in groups.iter().enumerate() {
            section aria-labelledby=(format!("groupe-{n}")) {
                h2 id=(format!("groupe-{n}")) { (group.shown.name) }
                table {
                    caption { "Fiches du groupe" }
                    thead { tr {
                        th scope="col" { "Rôle" } th scope="col" { "Nom" } th scope="col" { "Typologie" }
                        th scope="col" { "Commune" } th scope="col" { "Source" } th scope="col" { "Décision" }
                    } }
                    tbody {
                        tr {
                            td { strong { "Montrée" } }
                            (member_cells(&state, &group.shown))
                            td { "—" }
                        }
                        @for hidden in &group.hidden {
                            tr {
                                td { "Masquée" }
                                (member_cells(&state, hidden))
                                td {
                                    (decision_form(&session, "afficher", &hidden.id, &hidden.id, "Montrer celle-ci",
                                        &format!("Montrer « {} » ({}) à la place", hidden.name, hidden.source_name)))
                                    (decision_form(&session, "separer", &hidden.id, &group.shown.id, "Séparer",
                                        &format!("Séparer « {} » ({}) : ce n'est pas la même offre", hidden.name, hidden.source_name)))
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="fusionner" {
            h2 #fusionner { "Fusionner deux fiches" }
            p { "Pour deux fiches de la même offre que la détection ne rapproche pas (noms trop différents, points éloignés)." }
            form method="post" action="/espace/doublons/decision" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="decision" value="fusionner";
                p { label for="fusion-a" { "Identifiant de la première fiche" } input #fusion-a name="a" required; }
                p { label for="fusion-b" { "Identifiant de la seconde fiche" } input #fusion-b name="b" required; }
                p { button type="submit" { "Fusionner" } }
            }
        }
    };
    page("Doublons entre sources", Some(&session), body).into_response()
}

fn after(pass: &Pass) -> Response {
    Redirect::to(&format!(
        "/espace/doublons?groupes={}&masquees={}&nouvelles={}&affichees={}",
        pass.groups, pass.hidden, pass.newly_hidden, pass.shown_again
    ))
    .into_response()
}

/// Records the operator's decision on two entries, then detects again.
#[utoipa::path(post, path = "/espace/doublons/decision", tag = "contributors",
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf, decision (separer, fusionner, afficher), a, b"),
    responses((status = 303, description = "Décidé : vers la liste"), (status = 403, description = "Réservé à l'opérateur (HTML)"),
        (status = 404, description = "Fiche inconnue (HTML)"), (status = 422, description = "Décision inconnue (HTML)")))]
pub async fn decide(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (session, form) = match super::signed_form(&state, &headers, &body, BACK).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    if let Some(response) = refused(&session) {
        return response;
    }
    let field = |name: &str| {
        form.get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let decision = match field("decision").as_str() {
        "separer" => Decision::Separate,
        "fusionner" => Decision::Merge,
        "afficher" => Decision::Prefer,
        _ => {
            return super::pages::error_page(
                Error::invalid(
                    "decision",
                    "décisions admises : separer, fusionner, afficher",
                ),
                Some(&session),
            )
        }
    };
    let (kind, id) = session.actor.history_ref();
    match duplicates::decide(
        &state.store,
        &state.reference.taxonomy,
        Some(&state.live),
        &format!("{kind}:{id}"),
        decision,
        &field("a"),
        &field("b"),
    )
    .await
    {
        Ok(pass) => after(&pass),
        Err(error) => super::pages::error_page(error, Some(&session)),
    }
}

/// Runs the detection now.
#[utoipa::path(post, path = "/espace/doublons/detection", tag = "contributors",
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf"),
    responses((status = 303, description = "Détection faite : vers la liste"), (status = 403, description = "Réservé à l'opérateur (HTML)")))]
pub async fn detect(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let (session, _) = match super::signed_form(&state, &headers, &body, BACK).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    if let Some(response) = refused(&session) {
        return response;
    }
    match duplicates::refresh(&state.store, &state.reference.taxonomy, Some(&state.live)).await {
        Ok(pass) => after(&pass),
        Err(error) => super::pages::error_page(error, Some(&session)),
    }
}
