//! Review campaigns (convention: entries updated at least twice a year): the operator sets their
//! dates; each entry of a contributor is then to review, confirmed unchanged, or updated, and
//! the progress shows per organisation and overall.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{NaiveDate, Utc};
use maud::html;

use super::{page, require};
use crate::accounts::Role;
use crate::db::Store;
use crate::error::{Error, FieldError, Result};
use crate::on_engine;
use crate::services::store::{push_review_state, ReviewWindow};
use crate::services::ServiceId;
use crate::state::AppState;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
}

/// One organisation's progress in a campaign.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Progress {
    pub organisation_id: String,
    pub organisation: String,
    /// Published entries.
    pub total: i64,
    /// Confirmed or updated by a person or a script during the campaign.
    pub reviewed: i64,
    /// Changed (not only confirmed) during the campaign.
    pub updated: i64,
}

impl Progress {
    pub fn confirmed(&self) -> i64 {
        (self.reviewed - self.updated).max(0)
    }

    pub fn to_review(&self) -> i64 {
        (self.total - self.reviewed).max(0)
    }
}

pub async fn create(store: &Store, name: &str, starts_on: &str, ends_on: &str) -> Result<Campaign> {
    let mut errors = Vec::new();
    if name.trim().is_empty() {
        errors.push(FieldError::new("name", "nom manquant"));
    }
    if let Err(message) = crate::services::validate::check_text(
        name,
        crate::services::validate::MAX_NAME_CHARS,
        false,
    ) {
        errors.push(FieldError::new("name", message));
    }
    let date = |field: &str, value: &str, errors: &mut Vec<FieldError>| {
        crate::dates::parse_date(value)
            .map_err(|message| errors.push(FieldError::new(field, message)))
            .ok()
    };
    let starts = date("starts_on", starts_on, &mut errors);
    let ends = date("ends_on", ends_on, &mut errors);
    if let (Some(s), Some(e)) = (starts, ends) {
        if e < s {
            errors.push(FieldError::new("ends_on", "la fin précède le début"));
        }
    }
    let (Some(starts_on), Some(ends_on), true) = (starts, ends, errors.is_empty()) else {
        return Err(Error::Invalid(errors));
    };
    let campaign = Campaign {
        id: format!("cmp-{}", ServiceId::generate()),
        name: name.trim().to_owned(),
        starts_on,
        ends_on,
    };
    on_engine!(store, |db| {
        sqlx::query("INSERT INTO campaigns (id, name, starts_on, ends_on, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&campaign.id)
        .bind(&campaign.name)
        .bind(campaign.starts_on)
        .bind(campaign.ends_on)
        .bind(Utc::now())
        .execute(db).await.map(|r| r.rows_affected())
    })?;
    Ok(campaign)
}

pub async fn all(store: &Store) -> Result<Vec<Campaign>> {
    Ok(on_engine!(store, |db| sqlx::query_as(
        "SELECT id, name, starts_on, ends_on FROM campaigns ORDER BY starts_on DESC",
    )
    .fetch_all(db)
    .await)?)
}

/// The campaign the lists show: the one running on `today` (the latest started if several),
/// else the last one that has started.
pub async fn current(store: &Store, today: NaiveDate) -> Result<Option<Campaign>> {
    Ok(on_engine!(store, |db| sqlx::query_as(
        "SELECT id, name, starts_on, ends_on FROM campaigns WHERE starts_on <= $1
         ORDER BY CASE WHEN ends_on >= $1 THEN 0 ELSE 1 END, starts_on DESC, ends_on DESC LIMIT 1",
    )
    .bind(today)
    .fetch_optional(db)
    .await)?)
}

impl Campaign {
    pub fn window(&self) -> ReviewWindow {
        ReviewWindow::days(self.starts_on, self.ends_on)
    }
}

/// Progress of every organisation (or one) in `campaign`: its published entries, those
/// confirmed or updated during the campaign (each entry's state as the lists show it).
pub async fn progress(
    store: &Store,
    campaign: &Campaign,
    organisation: Option<&str>,
) -> Result<Vec<Progress>> {
    on_engine!(store, |db| {
        let mut q = crate::db::builder(
            db,
            "SELECT e.source_id AS organisation_id, o.name AS organisation, COUNT(*) AS total,
         SUM(CASE WHEN e.review_state <> 'to_review' THEN 1 ELSE 0 END) AS reviewed,
         SUM(CASE WHEN e.review_state = 'updated' THEN 1 ELSE 0 END) AS updated
         FROM (SELECT s.source_id, ",
        );
        push_review_state(&mut q, &campaign.window());
        q.push(" AS review_state FROM services s WHERE s.status = 'published'");
        if let Some(organisation) = organisation {
            q.push(" AND s.source_id = ")
                .push_bind(organisation.to_owned());
        }
        q.push(
            ") e JOIN organisations o ON o.id = e.source_id
         GROUP BY e.source_id, o.name ORDER BY o.name",
        );
        Ok(q.build_query_as().fetch_all(db).await?)
    })
}

fn percent(part: i64, total: i64) -> String {
    if total == 0 {
        "—".into()
    } else {
        format!("{} %", part * 100 / total)
    }
}

/// The campaigns and their progress; the operator also sets a new one here.
#[utoipa::path(get, path = "/espace/campagnes", tag = "contributors",
    responses((status = 200, description = "Campagnes de mise à jour et avancement (HTML)", content_type = "text/html")))]
pub async fn campaigns_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    render(&state, &session, &[], StatusCode::OK).await
}

async fn render(
    state: &AppState,
    session: &super::Session,
    errors: &[FieldError],
    status: StatusCode,
) -> Response {
    let campaigns = match all(&state.store).await {
        Ok(found) => found,
        Err(error) => return error.into_response(),
    };
    let mut tables = Vec::new();
    for campaign in &campaigns {
        match progress(&state.store, campaign, session.actor.organisation_id()).await {
            Ok(rows) => tables.push((campaign, rows)),
            Err(error) => return error.into_response(),
        }
    }
    let error_of = |field: &str| {
        errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.clone())
    };
    let body = html! {
        @if session.actor.role == Role::Operator {
            section aria-labelledby="nouvelle-campagne" {
                h2 #nouvelle-campagne { "Nouvelle campagne" }
                form method="post" action="/espace/campagnes" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    @for (field, label, kind) in [("name", "Nom", "text"), ("starts_on", "Premier jour", "date"), ("ends_on", "Dernier jour", "date")] {
                        p {
                            label for=(field) { (label) }
                            input id=(field) name=(field) type=(kind) required
                                aria-invalid=[error_of(field).map(|_| "true")]
                                aria-describedby=[error_of(field).map(|_| format!("{field}-erreur"))];
                            @if let Some(message) = error_of(field) { span.error id=(format!("{field}-erreur")) { (message) } }
                        }
                    }
                    p { button type="submit" { "Créer la campagne" } }
                }
            }
        }
        @if tables.is_empty() { p { "Aucune campagne." } }
        @for (campaign, rows) in &tables {
            @let total: i64 = rows.iter().map(|r| r.total).sum();
            @let reviewed: i64 = rows.iter().map(|r| r.reviewed).sum();
            section aria-labelledby=(campaign.id) {
                h2 id=(campaign.id) { (campaign.name) " — du " (campaign.starts_on.format("%d/%m/%Y")) " au " (campaign.ends_on.format("%d/%m/%Y")) }
                p { "Avancement d'ensemble : " strong { (percent(reviewed, total)) } " (" (reviewed) " fiches revues sur " (total) ")" }
                table {
                    caption { "Avancement par organisation" }
                    thead { tr {
                        th scope="col" { "Organisation" } th scope="col" { "Fiches" } th scope="col" { "Confirmées sans changement" }
                        th scope="col" { "Mises à jour" } th scope="col" { "À revoir" } th scope="col" { "Avancement" }
                    } }
                    tbody {
                        @for row in rows {
                            tr {
                                th scope="row" { (row.organisation) }
                                td { (row.total) } td { (row.confirmed()) } td { (row.updated) } td { (row.to_review()) }
                                td { (percent(row.reviewed, row.total)) }
                            }
                        }
                    }
                }
            }
        }
    };
    (
        status,
        page("Campagnes de mise à jour", Some(session), body),
    )
        .into_response()
}

/// Creates a campaign (operator only).
#[utoipa::path(post, path = "/espace/campagnes", tag = "contributors",
    request_body(content_type = "application/x-www-form-urlencoded", description = "name, starts_on, ends_on, csrf"),
    responses((status = 303, description = "Créée"), (status = 403, description = "Réservé à l'opérateur"),
        (status = 422, description = "Champs à corriger (HTML)")))]
pub async fn create_campaign(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (session, form) = match super::signed_form(&state, &headers, &body, None).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    if let Err(error) = crate::accounts::can(
        &session.actor,
        crate::accounts::Action::ManageCampaigns,
        crate::accounts::Target::Platform,
    ) {
        return super::refused_page(error, Some(&session), None);
    }
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    match create(
        &state.store,
        field("name"),
        field("starts_on"),
        field("ends_on"),
    )
    .await
    {
        Ok(_) => Redirect::to("/espace/campagnes").into_response(),
        Err(Error::Invalid(errors)) => {
            render(&state, &session, &errors, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(error) => error.into_response(),
    }
}
