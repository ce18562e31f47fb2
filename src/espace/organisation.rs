//! The organisation's pages: its commitments (Annexe 2) against its entries, the queue of
//! citizen reports on its entries, and the restitution download.

use std::collections::HashMap;

use crate::http::Path;
use crate::on_engine;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::{form_fields, page, require, Session};
use crate::accounts::{can, store as accounts, Action, Area, Role, Target, Territory};
use crate::error::Error;
use crate::reports::store as reports;
use crate::state::AppState;

fn refused(error: Error, session: &Session) -> Response {
    super::refused_page(error, Some(session), None)
}

/// The organisations the session may see: its own, or every one for the operator.
async fn visible(
    state: &AppState,
    session: &Session,
) -> crate::error::Result<Vec<accounts::Organisation>> {
    match session.actor.organisation_id() {
        Some(id) => Ok(accounts::organisation(&state.store, id)
            .await?
            .into_iter()
            .collect()),
        None => {
            let ids: Vec<(String,)> = on_engine!(&state.store, |db| sqlx::query_as(
                "SELECT id FROM organisations WHERE typologies <> '[]' ORDER BY name",
            )
            .fetch_all(db)
            .await)?;
            let mut out = Vec::new();
            for (id,) in ids {
                out.extend(accounts::organisation(&state.store, &id).await?);
            }
            Ok(out)
        }
    }
}

/// For each organisation: each committed typology, how many of its published entries are in
/// its territory, and the communes of the territory with none.
#[utoipa::path(get, path = "/espace/engagements", tag = "contributors",
    responses((status = 200, description = "Tableau des engagements (HTML)", content_type = "text/html")))]
pub async fn commitments(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let organisations = match visible(&state, &session).await {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let locator = &state.reference.locator;
    let taxonomy = &state.reference.taxonomy;
    let mut sections = Vec::new();
    for organisation in &organisations {
        let territory = Territory(
            organisation
                .territory
                .iter()
                .filter_map(|c| Area::parse(c).ok())
                .collect(),
        );
        let communes: Vec<_> = locator
            .communes()
            .filter(|c| territory.contains(c))
            .collect();
        // What citizens see, whichever source signs it: a commune's town hall harvested from
        // the Annuaire counts for the commune that committed to town halls.
        let counts: Vec<(String, String, i64, i64)> = if organisation.typologies.is_empty() {
            Vec::new()
        } else {
            let rows = on_engine!(&state.store, |db| {
                let mut q = crate::db::builder(
                    db,
                    "SELECT typology_code, insee_code, COUNT(*),
                 SUM(CASE WHEN source_id = ",
                );
                q.push_bind(&organisation.id)
                .push(" THEN 0 ELSE 1 END) FROM services WHERE status = 'published' AND typology_code IN (");
                let mut list = q.separated(", ");
                for code in &organisation.typologies {
                    list.push_bind(code);
                }
                q.push(") GROUP BY typology_code, insee_code");
                q.build_query_as().fetch_all(db).await
            });
            match rows {
                Ok(rows) => rows,
                Err(error) => return Error::from(error).into_response(),
            }
        };
        let mut by_typology: HashMap<&str, HashMap<&str, (i64, i64)>> = HashMap::new();
        for (typology, insee, n, others) in &counts {
            by_typology
                .entry(typology)
                .or_default()
                .insert(insee, (*n, *others));
        }
        let rows: Vec<_> = organisation
            .typologies
            .iter()
            .map(|code| {
                let found = by_typology.get(code.as_str());
                let (inside, others) = communes
                    .iter()
                    .filter_map(|c| found.and_then(|f| f.get(c.insee_code.as_str())))
                    .fold((0, 0), |(n, o), (cn, co)| (n + cn, o + co));
                let missing: Vec<&str> = communes
                    .iter()
                    .filter(|c| found.is_none_or(|f| !f.contains_key(c.insee_code.as_str())))
                    .map(|c| c.name.as_str())
                    .collect();
                (
                    code,
                    taxonomy
                        .typology(code)
                        .map_or(code.as_str(), |t| t.label_fr.as_str()),
                    inside,
                    others,
                    missing,
                )
            })
            .collect();
        sections.push((organisation, communes.len(), rows));
    }
    let body = html! {
        @if sections.is_empty() {
            p { "Aucune organisation n'a déclaré de typologies (Annexe 2)." }
        }
        @for (organisation, communes, rows) in &sections {
            section aria-labelledby=(format!("org-{}", organisation.id)) {
                h2 id=(format!("org-{}", organisation.id)) { (organisation.name) }
                p { "Territoire : " (organisation.territory.join(", ")) " (" (communes) " communes)" }
                @if rows.is_empty() {
                    p { "Pas de typologie déclarée." }
                } @else {
                    table {
                        caption { "Typologies engagées : fiches publiées sur le territoire, telles que les citoyens les voient" }
                        thead { tr { th scope="col" { "Typologie" } th scope="col" { "Fiches" } th scope="col" { "dont d'autres sources" } th scope="col" { "Communes sans fiche" } } }
                        tbody {
                            @for (code, label, inside, others, missing) in rows {
                                tr {
                                    th scope="row" { (label) " " span.hint { "(" (code) ")" } }
                                    td { (inside) }
                                    td { (others) }
                                    td {
                                        @if missing.is_empty() { "aucune" }
                                        @else {
                                            details {
                                                summary { (missing.len()) " commune" @if missing.len() > 1 { "s" } }
                                                p { (missing.join(", ")) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if session.actor.role != Role::Operator {
                    p {
                        "Les fiches récoltées des sources nationales sur votre territoire se revendiquent depuis "
                        a href="/espace#a-revendiquer" { "Mes fiches" }
                        " : vous les signez alors, et la source ne les modifie plus."
                    }
                    p { a href="/espace/organisation/export" download { "Télécharger toutes nos données (ZIP : fiches CSV et GeoJSON, historique, paramètres)" } }
                }
            }
        }
    };
    page("Engagements", Some(&session), body).into_response()
}

const STATUS_LABELS: [(&str, &str); 4] = [
    ("new", "Nouveau"),
    ("in_progress", "En cours"),
    ("fixed", "Corrigé"),
    ("rejected", "Rejeté"),
];

fn status_label(status: &str) -> &str {
    STATUS_LABELS
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(status, |(_, l)| l)
}

/// The citizen reports on the organisation's entries (every one's for the operator).
#[utoipa::path(get, path = "/espace/signalements", tag = "contributors",
    params(("statut" = Option<String>, Query, description = "new, in_progress, fixed, rejected")),
    responses((status = 200, description = "File des signalements (HTML)", content_type = "text/html")))]
pub async fn report_queue(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let query = query.map(|q| form_fields(q.as_bytes())).unwrap_or_default();
    let status = query
        .get("statut")
        .filter(|s| reports::STATUSES.contains(&s.as_str()))
        .cloned();
    let queue = match reports::queue(
        &state.store,
        session.actor.organisation_id(),
        status.as_deref(),
    )
    .await
    {
        Ok(queue) => queue,
        Err(error) => return error.into_response(),
    };
    let body = html! {
        form method="get" action="/espace/signalements" {
            p {
                label for="statut" { "Statut" }
                select #statut name="statut" {
                    option value="" { "Tous" }
                    @for (value, label) in STATUS_LABELS {
                        option value=(value) selected[status.as_deref() == Some(value)] { (label) }
                    }
                }
                " "
                button type="submit" { "Filtrer" }
            }
        }
        p role="status" { (queue.len()) " signalement" @if queue.len() > 1 { "s" } }
        @if !queue.is_empty() {
            table {
                caption { "Signalements des citoyens, du plus récent au plus ancien" }
                thead { tr {
                    th scope="col" { "Reçu le" } th scope="col" { "Fiche" } th scope="col" { "Message" }
                    th scope="col" { "Contact" } th scope="col" { "Statut" }
                } }
                tbody {
                    @for report in &queue {
                        tr {
                            td { (report.created_at.with_timezone(&chrono_tz::Europe::Paris).format("%d/%m/%Y %H:%M")) }
                            td { a href=(format!("/espace/fiches/{}", report.service_id)) { (report.service_name) } }
                            td { (report.message) }
                            td { (report.email.clone().unwrap_or_else(|| "—".into())) }
                            td {
                                form method="post" action=(format!("/espace/signalements/{}", report.id)) {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    label for=(format!("statut-{}", report.id)) class="visually-hidden" { "Statut du signalement sur " (report.service_name) }
                                    select id=(format!("statut-{}", report.id)) name="statut" {
                                        @for (value, label) in STATUS_LABELS {
                                            option value=(value) selected[report.status == value] { (label) }
                                        }
                                    }
                                    " "
                                    button type="submit" { "Enregistrer" }
                                    span.hint { " (actuel : " (status_label(&report.status)) ")" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Signalements", Some(&session), body).into_response()
}

/// Moves a report along new → in progress → fixed | rejected.
#[utoipa::path(post, path = "/espace/signalements/{id}", tag = "contributors",
    params(("id" = String, Path, description = "Identifiant du signalement")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "statut, csrf"),
    responses((status = 303, description = "Statut enregistré"), (status = 403, description = "Signalement d'une autre organisation, ou inexistant")))]
pub async fn set_report_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (session, form) = match super::signed_form(&state, &headers, &body, None).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    let status = form.get("statut").map(String::as_str).unwrap_or_default();
    if !reports::STATUSES.contains(&status) {
        return refused(
            Error::invalid("statut", "new, in_progress, fixed ou rejected"),
            &session,
        );
    }
    let organisation = match reports::organisation_of(&state.store, &id).await {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let allowed = organisation
        .as_deref()
        .map_or(Err(Error::forbidden()), |organisation| {
            can(
                &session.actor,
                Action::ConfirmEntry,
                Target::Entry {
                    organisation,
                    commune: None,
                },
            )
        });
    if let Err(error) = allowed {
        return refused(error, &session);
    }
    if let Err(error) = reports::set_status(&state.store, &id, status).await {
        return error.into_response();
    }
    Redirect::to("/espace/signalements").into_response()
}

/// The session's organisation's restitution ZIP (the same as the API's export).
#[utoipa::path(get, path = "/espace/organisation/export", tag = "contributors",
    responses((status = 200, description = "ZIP", content_type = "application/zip")))]
pub async fn export(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let Some(id) = session.actor.organisation_id() else {
        return refused(
            Error::invalid(
                "organisation",
                "l'opérateur exporte par l'API, organisation par organisation",
            ),
            &session,
        );
    };
    if let Err(error) = can(
        &session.actor,
        Action::ExportOrganisation,
        Target::Organisation(id),
    ) {
        return refused(error, &session);
    }
    let organisation = match accounts::organisation(&state.store, id).await {
        Ok(Some(organisation)) => organisation,
        Ok(None) => return refused(Error::forbidden(), &session),
        Err(error) => return error.into_response(),
    };
    match crate::restitution::export_zip(&state, &organisation).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/zip".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"proximites-{id}.zip\""),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}
