//! The contributors' side of claims: the harvested entries of their territory they may claim,
//! the claim and its release, and a claimed entry's suggestions to accept or dismiss.

use std::collections::HashSet;

use crate::http::Path;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{html, Markup};

use super::Session;
use crate::accounts::Role;
use crate::error::Result;
use crate::services::claims::{self, Claimable, Suggestions};
use crate::services::history::Via;
use crate::state::AppState;

/// Entries listed at most in « Fiches à revendiquer ».
const CLAIMABLE_SHOWN: usize = 200;

/// What the list of entries filters the claimable ones on.
pub struct ClaimableFilter {
    pub typology: Option<String>,
    pub insee_code: Option<String>,
    pub name: Option<String>,
}

/// The harvested entries of the session's territory it may claim: found in the live index by
/// territory and typology (no SQL scan of a national directory), then kept when a national
/// source signs them.
pub async fn claimable(
    state: &AppState,
    session: &Session,
    filter: &ClaimableFilter,
) -> Result<Vec<Claimable>> {
    let Some((_, territory)) = &session.actor.organisation else {
        return Ok(Vec::new());
    };
    let territory = territory.clone();
    let locator = state.reference.locator.clone();
    let index = state.live.search_index();
    let typology = filter.typology.clone();
    let commune = filter.insee_code.clone();
    let ids = tokio::task::spawn_blocking(move || {
        let communes: HashSet<&str> = locator
            .communes()
            .filter(|c| territory.contains(c))
            .map(|c| c.insee_code.as_str())
            .filter(|code| commune.as_deref().is_none_or(|wanted| wanted == *code))
            .collect();
        let typologies = typology.as_deref().map(|t| [t]);
        index
            .spatial
            .entries(typologies.as_ref().map(|t| &t[..]))
            .filter(|p| communes.contains(p.insee_code()))
            .map(|p| p.id().as_str().to_owned())
            .collect::<Vec<_>>()
    })
    .await
    .map_err(anyhow::Error::from)?;
    let mut found = claims::claimable_among(&state.store, &ids, usize::MAX).await?;
    if let Some(words) = filter.name.as_deref().map(crate::text::fold) {
        found.retain(|c| crate::text::fold(&c.name).contains(&words));
    }
    found.truncate(CLAIMABLE_SHOWN);
    Ok(found)
}

/// The section of « Mes fiches » that lists them, each with its claim button.
pub fn claimable_section(state: &AppState, session: &Session, found: &[Claimable]) -> Markup {
    let taxonomy = &state.reference.taxonomy;
    let locator = &state.reference.locator;
    html! {
        section aria-labelledby="a-revendiquer" {
            h2 #a-revendiquer { "Fiches de votre territoire à revendiquer" }
            p {
                "Ces fiches viennent des sources nationales et sont publiées. En revendiquer une, c'est la signer : "
                "la source ne la modifie plus, et ce qu'elle dit autrement vous est proposé en suggestions."
            }
            @if found.is_empty() {
                p { "Aucune fiche à revendiquer pour ces filtres." }
            } @else {
                table {
                    caption { "Fiches récoltées (" (found.len()) @if found.len() >= CLAIMABLE_SHOWN { ", les " (CLAIMABLE_SHOWN) " premières par nom" } ")" }
                    thead { tr {
                        th scope="col" { "Nom" } th scope="col" { "Typologie" } th scope="col" { "Commune" }
                        th scope="col" { "Source" } th scope="col" { "Action" }
                    } }
                    tbody {
                        @for row in found {
                            tr {
                                td { a href=(format!("/services/{}", row.id)) { (row.name) } }
                                td { (taxonomy.typology(&row.typology_code).map_or(row.typology_code.as_str(), |t| t.label_fr.as_str())) }
                                td { (crate::territory::InseeCode::parse(&row.insee_code).ok().and_then(|c| locator.commune(&c)).map_or(row.insee_code.clone(), |c| c.name.clone())) }
                                td { (row.source_name) }
                                td {
                                    form method="post" action=(format!("/espace/fiches/{}/revendiquer", row.id)) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button type="submit" aria-label=(format!("Revendiquer « {} »", row.name)) { "Revendiquer" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The origin of a claimed entry and its suggestions, on the entry's page (empty for an entry
/// nobody claimed).
pub fn entry_section(session: &Session, found: &Suggestions) -> Markup {
    let Some(claim) = &found.claim else {
        return html! {};
    };
    let id = &found.service.id;
    let current = crate::services::write::content_draft(&found.service.content);
    let pending: Vec<_> = found
        .suggestions
        .iter()
        .filter(|s| s.dismissed_at.is_none())
        .collect();
    let dismissed = found.suggestions.len() - pending.len();
    html! {
        section aria-labelledby="origine" {
            h2 #origine { "Origine de la fiche" }
            p {
                "Revendiquée le " (claim.claimed_at.format("%d/%m/%Y")) " ; récoltée de « " (claim.origin_source_name) " » (référence " (claim.origin_ref) "). "
                "Ses récoltes ne modifient plus la fiche : ce que la source dit autrement s'affiche ci-dessous."
            }
            @if let Some(dropped) = claim.dropped_at {
                p { strong { "La source ne publie plus cette fiche depuis le " (dropped.format("%d/%m/%Y")) "." } " Confirmez-la si le service existe toujours, sinon retirez-la." }
            }
            @if session.actor.role == Role::Operator {
                form method="post" action=(format!("/espace/fiches/{id}/liberer")) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" { "Libérer la fiche (la rendre à « " (claim.origin_source_name) " »)" }
                }
            }
        }
        section aria-labelledby="suggestions" {
            h2 #suggestions { "Suggestions de la source" }
            @if pending.is_empty() {
                p { "Aucune suggestion en attente." @if dismissed > 0 { " " (dismissed) " ignorée" @if dismissed > 1 { "s" } " (proposées à nouveau si la source change encore)." } }
            } @else {
                table {
                    caption { "Ce que « " (claim.origin_source_name) " » dit autrement" }
                    thead { tr {
                        th scope="col" { "Champ" } th scope="col" { "Votre fiche" } th scope="col" { "La source" }
                        th scope="col" { "Depuis le" } th scope="col" { "Action" }
                    } }
                    tbody {
                        @for s in &pending {
                            @let label = claims::field_label(&s.field);
                            tr {
                                th scope="row" { (label) }
                                td { (shown(&current, &s.field)) }
                                td { (s.value) }
                                td { (s.suggested_at.format("%d/%m/%Y")) }
                                td {
                                    form method="post" action=(format!("/espace/fiches/{id}/suggestions/{}/accepter", s.field)) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button type="submit" aria-label=(format!("Accepter la suggestion : {label}")) { "Accepter" }
                                    }
                                    form method="post" action=(format!("/espace/fiches/{id}/suggestions/{}/ignorer", s.field)) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button type="submit" aria-label=(format!("Ignorer la suggestion : {label}")) { "Ignorer" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A field of the entry as the suggestions' table shows it.
fn shown(current: &crate::services::Draft, field: &str) -> String {
    let value = claims::value_of(current, field);
    if value.is_empty() {
        "—".into()
    } else {
        value
    }
}

/// Claims the entry for the session's organisation.
#[utoipa::path(post, path = "/espace/fiches/{id}/revendiquer", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant de la fiche")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf"),
    responses((status = 303, description = "Revendiquée : vers la fiche"),
        (status = 403, description = "Hors du territoire (HTML)"), (status = 409, description = "Pas une fiche récoltée (HTML)")))]
pub async fn claim_entry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let target = id.clone();
    super::pages::simple_action(
        state,
        headers,
        id,
        body,
        async move |state: &AppState, session: &Session| {
            claims::claim(state, &session.actor, Via::Page, &target).await
        },
    )
    .await
}

/// The operator gives the entry back to the source that harvested it.
#[utoipa::path(post, path = "/espace/fiches/{id}/liberer", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant de la fiche")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf"),
    responses((status = 303, description = "Libérée"), (status = 403, description = "Réservé à l'opérateur (HTML)")))]
pub async fn release_entry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let target = id.clone();
    super::pages::simple_action(
        state,
        headers,
        id,
        body,
        async move |state: &AppState, session: &Session| {
            claims::release(state, &session.actor, Via::Page, &target).await
        },
    )
    .await
}

/// Takes the source's value for one field.
#[utoipa::path(post, path = "/espace/fiches/{id}/suggestions/{field}/accepter", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant de la fiche"), ("field" = String, Path, description = "Champ")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf"),
    responses((status = 303, description = "Acceptée : la fiche est modifiée")))]
pub async fn accept_suggestion(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, field)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let target = id.clone();
    super::pages::simple_action(
        state,
        headers,
        id,
        body,
        async move |state: &AppState, session: &Session| {
            claims::accept(state, &session.actor, Via::Page, &target, &field).await
        },
    )
    .await
}

/// Keeps the entry's own value for one field.
#[utoipa::path(post, path = "/espace/fiches/{id}/suggestions/{field}/ignorer", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant de la fiche"), ("field" = String, Path, description = "Champ")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf"),
    responses((status = 303, description = "Ignorée")))]
pub async fn dismiss_suggestion(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, field)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let target = id.clone();
    super::pages::simple_action(
        state,
        headers,
        id,
        body,
        async move |state: &AppState, session: &Session| {
            claims::dismiss(state, &session.actor, &target, &field).await
        },
    )
    .await
}
