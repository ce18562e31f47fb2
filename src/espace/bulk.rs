//! Bulk updates from the pages (`/espace/import`): a CSV (import format) or GeoJSON upload is
//! checked first, showing what it would create, change field by field, leave unchanged, and
//! which of the organisation's entries it leaves out; "Appliquer" then applies the very bytes
//! checked, in one transaction, through the same code as the bulk API.

use crate::http::Path;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use maud::{html, Markup};
use serde_json::Value;

use super::{check_csrf, page, require, Session};
use crate::accounts::{store as accounts, ActorKind, Role};
use crate::db::Store;
use crate::error::{Error, FieldError, Result};
use crate::import::ImportReport;
use crate::services::upload::{self, Mode, Plan};
use crate::services::ServiceId;
use crate::state::AppState;
use crate::{in_tx, on_engine};

/// The largest file the page takes (the bulk API takes the same), with room for the form.
pub const MAX_UPLOAD: usize = upload::MAX_BYTES + 64 * 1024;

/// How long a checked file waits for its "Appliquer".
const PENDING_HOURS: i64 = 24;
/// Checked files kept per person: a newer one pushes the oldest out, so that nobody can fill
/// the database with files never applied (at most this many times `upload::MAX_BYTES` each).
pub const PENDING_PER_PERSON: i64 = 3;

const BACK: Option<(&str, &str)> = Some(("/espace/import", "Revenir à la mise à jour en masse"));

fn refused(error: Error, session: &Session) -> Response {
    super::refused_page(error, Some(session), BACK)
}

fn user_id(session: &Session) -> &str {
    match &session.actor.kind {
        ActorKind::User { id, .. } | ActorKind::Token { id, .. } => id,
    }
}

/// The upload form; `errors` are the form's own (file missing, unreadable, too large).
async fn form(state: &AppState, session: &Session, errors: &[FieldError]) -> Result<Markup> {
    let organisations = match session.actor.organisation_id() {
        Some(_) => Vec::new(),
        None => accounts::organisation_names(&state.store).await?,
    };
    let error_of = |field: &str| {
        errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.clone())
    };
    Ok(html! {
        p {
            "Envoyez un fichier CSV au format d'import (colonnes " code { "source_ref" } ", "
            code { "typology" } ", " code { "name" } "…) ou GeoJSON. Rien n'est écrit avant "
            "« Appliquer » : le fichier est d'abord vérifié et ce qu'il changerait vous est montré."
        }
        form method="post" action="/espace/import" enctype="multipart/form-data" novalidate {
            input type="hidden" name="csrf" value=(session.csrf);
            @if !organisations.is_empty() {
                (super::organisation_select(&organisations, error_of("organisation").as_deref()))
            }
            p {
                label for="fichier" { "Fichier (CSV ou GeoJSON)" }
                input #fichier name="fichier" type="file" required
                    accept=".csv,.geojson,.json,text/csv,application/geo+json"
                    aria-invalid=[error_of("file").map(|_| "true")]
                    aria-describedby=(if error_of("file").is_some() { "fichier-aide fichier-erreur" } else { "fichier-aide" });
                span.hint #fichier-aide { "32 Mo au plus ; les lignes sont reconnues par leur source_ref." }
                @if let Some(m) = error_of("file") { span.error #fichier-erreur { (m) } }
            }
            p { button type="submit" { "Vérifier le fichier" } }
        }
    })
}

/// The upload form.
#[utoipa::path(get, path = "/espace/import", tag = "contributors",
    responses((status = 200, description = "Formulaire de mise à jour en masse (HTML)", content_type = "text/html")))]
pub async fn upload_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    match form(&state, &session, &[]).await {
        Ok(body) => page("Mise à jour en masse", Some(&session), body).into_response(),
        Err(error) => refused(error, &session),
    }
}

/// The fields of the upload form.
#[derive(Default)]
struct Upload {
    csrf: String,
    organisation: Option<String>,
    file_name: String,
    bytes: Vec<u8>,
}

async fn read_upload(mut multipart: Multipart) -> std::result::Result<Upload, FieldError> {
    let mut upload = Upload::default();
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        let problem = crate::error::Problem::from(&upload::body_error(e.status(), &e.body_text()));
        FieldError::new("file", problem.detail)
    };
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        match field.name().unwrap_or_default() {
            "csrf" => upload.csrf = field.text().await.map_err(unreadable)?,
            "organisation" => upload.organisation = Some(field.text().await.map_err(unreadable)?),
            "fichier" => {
                upload.file_name = field.file_name().unwrap_or("envoi.csv").to_owned();
                upload.bytes = field.bytes().await.map_err(unreadable)?.to_vec();
            }
            _ => {}
        }
    }
    Ok(upload)
}

/// Checks an uploaded file and shows what it would do; keeps it for "Appliquer".
#[utoipa::path(post, path = "/espace/import", tag = "contributors",
    request_body(content_type = "multipart/form-data", description = "fichier (CSV or GeoJSON), organisation (operator), csrf"),
    responses((status = 200, description = "Ce que le fichier changerait (HTML)", content_type = "text/html"),
        (status = 403, description = "Organisation d'autrui ou formulaire expiré"),
        (status = 422, description = "Lignes ou champs à corriger, montrés ligne par ligne (HTML)")))]
pub async fn check_upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let session = match require(&state, &headers).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let multipart = match multipart {
        Ok(multipart) => multipart,
        Err(rejection) => {
            return refused(
                Error::BadRequest {
                    code: "invalid_form",
                    detail: format!("formulaire illisible : {}", rejection.body_text()),
                },
                &session,
            )
        }
    };
    let upload = match read_upload(multipart).await {
        Ok(upload) => upload,
        Err(error) => return form_again(&state, &session, vec![error]).await,
    };
    let mut csrf = std::collections::HashMap::new();
    csrf.insert("csrf".to_owned(), upload.csrf.clone());
    if let Err(error) = check_csrf(&session, &csrf) {
        return refused(error, &session);
    }
    let organisation = match upload::organisation_of(&session.actor, upload.organisation.as_deref())
    {
        Ok(id) => id,
        Err(Error::InvalidParameters(errors)) => return form_again(&state, &session, errors).await,
        Err(error) => return refused(error, &session),
    };
    if upload.bytes.is_empty() {
        let error = FieldError::new("file", "choisissez un fichier non vide");
        return form_again(&state, &session, vec![error]).await;
    }
    let checked = upload::run(
        &state,
        &session.actor,
        &organisation,
        &upload.file_name,
        upload.bytes.clone(),
        Mode {
            dry_run: true,
            ..Mode::default()
        },
    )
    .await;
    let (report, plan) = match checked {
        Ok((report, Some(plan))) => (report, plan),
        Ok((_, None)) => {
            return Error::from(anyhow::anyhow!("dry run without a plan")).into_response()
        }
        Err(error) => return refused(error, &session),
    };
    let pending = if report.rejected == 0 {
        match keep(&state, &session, &organisation, &upload).await {
            Ok(id) => Some(id),
            Err(error) => return refused(error, &session),
        }
    } else {
        None
    };
    let status = if report.rejected > 0 {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = plan_page(
        &session,
        &upload.file_name,
        &report,
        &plan,
        pending.as_deref(),
    );
    (
        status,
        page("Vérification du fichier", Some(&session), body),
    )
        .into_response()
}

async fn form_again(state: &AppState, session: &Session, errors: Vec<FieldError>) -> Response {
    match form(state, session, &errors).await {
        Ok(body) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            page("Mise à jour en masse", Some(session), body),
        )
            .into_response(),
        Err(error) => refused(error, session),
    }
}

/// Keeps the checked file for its "Appliquer" (and clears those never applied).
async fn keep(
    state: &AppState,
    session: &Session,
    organisation: &str,
    upload: &Upload,
) -> Result<String> {
    keep_plan(
        &state.store,
        organisation,
        user_id(session),
        &upload.file_name,
        &upload.bytes,
    )
    .await
}

/// Keeps a checked file of `user` for `organisation` until its "Appliquer", whichever instance
/// receives that: its id. Files older than [`PENDING_HOURS`] go, and a person keeps their
/// [`PENDING_PER_PERSON`] latest.
pub async fn keep_plan(
    store: &Store,
    organisation: &str,
    user: &str,
    file_name: &str,
    bytes: &[u8],
) -> Result<String> {
    let id = format!("upl-{}", ServiceId::generate());
    let now = Utc::now();
    let mut tx = store.begin().await?;
    in_tx!(&mut tx, |conn| {
        sqlx::query("DELETE FROM pending_uploads WHERE created_at < $1")
            .bind(now - Duration::hours(PENDING_HOURS))
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO pending_uploads (id, organisation_id, user_id, file_name, content, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(organisation)
        .bind(user)
        .bind(file_name)
        .bind(bytes)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "DELETE FROM pending_uploads WHERE user_id = $1 AND id NOT IN
             (SELECT id FROM pending_uploads WHERE user_id = $1
              ORDER BY created_at DESC, id DESC LIMIT $2)",
        )
        .bind(user)
        .bind(PENDING_PER_PERSON)
        .execute(&mut *conn)
        .await?;
    });
    tx.commit().await?;
    Ok(id)
}

/// The file `user` kept under `id`: organisation, file name, bytes. None for another person's,
/// an applied or an unknown one alike.
pub async fn kept_plan(store: &Store, id: &str, user: &str) -> Result<Option<KeptPlan>> {
    Ok(on_engine!(store, |db| {
        sqlx::query_as(
        "SELECT organisation_id, file_name, content FROM pending_uploads WHERE id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user)
    .fetch_optional(db)
    .await?
    }))
}

/// A kept file: organisation, file name, bytes.
pub type KeptPlan = (String, String, Vec<u8>);

/// Forgets a kept file once applied.
pub async fn forget_plan(store: &Store, id: &str) -> Result<()> {
    on_engine!(store, |db| sqlx::query(
        "DELETE FROM pending_uploads WHERE id = $1"
    )
    .bind(id)
    .execute(db)
    .await
    .map(drop)?);
    Ok(())
}

fn shown(value: &Value) -> String {
    match value {
        Value::Null => "—".into(),
        Value::String(s) if s.is_empty() => "—".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "—".into(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ; "),
        other => other.to_string(),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n > 1 { many } else { one })
}

/// What the file would do, and the "Appliquer" form when nothing is wrong.
fn plan_page(
    session: &Session,
    file_name: &str,
    report: &ImportReport,
    plan: &Plan,
    pending: Option<&str>,
) -> Markup {
    let mut by_row: Vec<(Option<u64>, Vec<&FieldError>)> = Vec::new();
    for error in &report.errors {
        match by_row.iter_mut().find(|(row, _)| *row == error.row) {
            Some((_, errors)) => errors.push(error),
            None => by_row.push((error.row, vec![error])),
        }
    }
    let anchor =
        |row: Option<u64>| row.map_or_else(|| "fichier".to_owned(), |r| format!("ligne-{r}"));
    html! {
        p { "Fichier : " strong { (file_name) } " — " (plural(report.rows as usize, "ligne", "lignes")) "." }
        @if !by_row.is_empty() {
            div role="alert" aria-labelledby="refus" {
                h2 #refus { "Le fichier n'est pas appliqué : " (plural(by_row.len(), "ligne à corriger", "lignes à corriger")) }
                p { "Rien n'est écrit tant qu'une ligne est fausse. Corrigez le fichier puis envoyez-le à nouveau." }
                ul {
                    @for (row, errors) in &by_row {
                        li { a href=(format!("#{}", anchor(*row))) {
                            @if let Some(r) = row { "Ligne " (r) } @else { "Fichier" }
                            " : " (errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join(" ; "))
                        } }
                    }
                }
            }
            table {
                caption { "Lignes refusées" }
                thead { tr { th scope="col" { "Ligne" } th scope="col" { "Champ" } th scope="col" { "Erreur" } } }
                tbody {
                    @for (row, errors) in &by_row {
                        @for (i, error) in errors.iter().enumerate() {
                            tr id=[(i == 0).then(|| anchor(*row))] {
                                @if i == 0 {
                                    th scope="row" rowspan=(errors.len()) {
                                        @if let Some(r) = row { "Ligne " (r) } @else { "Fichier" }
                                    }
                                }
                                td { code { (error.field) } }
                                td { (error.message) }
                            }
                        }
                    }
                }
            }
            p { a href="/espace/import" { "Envoyer un fichier corrigé" } }
        }
        h2 #resume { "Ce que le fichier changerait" }
        ul aria-labelledby="resume" {
            li { a href="#creations" { (plural(plan.created.len(), "fiche à créer", "fiches à créer")) } }
            li { a href="#modifications" { (plural(plan.changed.len(), "fiche à modifier", "fiches à modifier")) } }
            li { a href="#inchangees" { (plural(plan.unchanged.len(), "fiche inchangée", "fiches inchangées")) } }
            li { a href="#absentes" { (plural(plan.missing.len(), "fiche publiée absente du fichier", "fiches publiées absentes du fichier")) } }
        }
        @if let Some(pending) = pending {
            form method="post" action=(format!("/espace/import/{pending}/appliquer")) {
                input type="hidden" name="csrf" value=(session.csrf);
                @if !plan.missing.is_empty() {
                    p {
                        input #retirer type="checkbox" name="retirer" value="1" aria-describedby="retirer-aide";
                        label for="retirer" { "Retirer aussi " (plural(plan.missing.len(), "la fiche absente", "les fiches absentes")) " du fichier" }
                        br;
                        span.hint #retirer-aide { "Elles ne sont plus publiées ; l'historique permet de les rétablir." }
                    }
                }
                @if !plan.unchanged.is_empty() {
                    p {
                        input #confirmer type="checkbox" name="confirmer" value="1" aria-describedby="confirmer-aide";
                        label for="confirmer" { "Confirmer aussi " (plural(plan.unchanged.len(), "la fiche inchangée", "les fiches inchangées")) " (rien n'a changé)" }
                        br;
                        span.hint #confirmer-aide { "Elles comptent alors comme vérifiées aujourd'hui, pour la campagne en cours aussi." }
                    }
                }
                p { button type="submit" { "Appliquer" } " " a href="/espace/import" { "Annuler" } }
            }
        }
        section aria-labelledby="creations" {
            h2 #creations { "À créer (" (plan.created.len()) ")" }
            @if !plan.created.is_empty() {
                table {
                    caption { "Fiches à créer" }
                    thead { tr { th scope="col" { "Ligne" } th scope="col" { "source_ref" } th scope="col" { "Nom" } th scope="col" { "Commune (INSEE)" } } }
                    tbody { @for c in &plan.created { tr { th scope="row" { (c.row) } td { (c.source_ref) } td { (c.name) } td { (c.insee_code) } } } }
                }
            }
        }
        section aria-labelledby="modifications" {
            h2 #modifications { "À modifier (" (plan.changed.len()) ")" }
            @if !plan.changed.is_empty() {
                table {
                    caption { "Fiches à modifier, champ par champ" }
                    thead { tr { th scope="col" { "Fiche" } th scope="col" { "Champ" } th scope="col" { "Avant" } th scope="col" { "Après" } } }
                    tbody {
                        @for c in &plan.changed {
                            @for (i, (field, pair)) in c.changes.iter().enumerate() {
                                tr {
                                    @if i == 0 {
                                        th scope="row" rowspan=(c.changes.len()) {
                                            a href=(format!("/espace/fiches/{}", c.id)) { (c.name) }
                                            br; span.hint { "ligne " (c.row) ", " (c.source_ref) }
                                        }
                                    }
                                    td { code { (field) } }
                                    td { del { (shown(&pair["old"])) } }
                                    td { ins { (shown(&pair["new"])) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="inchangees" {
            h2 #inchangees { "Inchangées (" (plan.unchanged.len()) ")" }
            @if !plan.unchanged.is_empty() {
                details {
                    summary { "Voir " (plural(plan.unchanged.len(), "fiche inchangée", "fiches inchangées")) }
                    ul { @for u in &plan.unchanged { li { a href=(format!("/espace/fiches/{}", u.id)) { (u.name) } " (" (u.source_ref) ")" } } }
                }
            }
        }
        section aria-labelledby="absentes" {
            h2 #absentes { "Publiées mais absentes du fichier (" (plan.missing.len()) ")" }
            @if !plan.missing.is_empty() {
                p { "Elles restent publiées, sauf si vous cochez « Retirer aussi » avant d'appliquer." }
                ul { @for m in &plan.missing { li { a href=(format!("/espace/fiches/{}", m.id)) { (m.name) } " (" (m.source_ref) ")" } } }
            }
        }
    }
}

/// Applies a checked file, as checked, in one transaction.
#[utoipa::path(post, path = "/espace/import/{upload}/appliquer", tag = "contributors",
    params(("upload" = String, Path, description = "The checked upload")),
    request_body(content_type = "application/x-www-form-urlencoded", description = "csrf, retirer (1: withdraw the entries left out)"),
    responses((status = 200, description = "Appliqué (HTML)", content_type = "text/html"),
        (status = 403, description = "Envoi d'autrui, inconnu ou formulaire expiré"),
        (status = 422, description = "Le fichier ne passe plus (HTML)")))]
pub async fn apply_upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pending): Path<String>,
    body: Bytes,
) -> Response {
    let (session, form) = match super::signed_form(&state, &headers, &body, BACK).await {
        Ok(signed) => signed,
        Err(response) => return response,
    };
    // Another person's upload, an applied one and an unknown one get the same refusal.
    let kept = match kept_plan(&state.store, &pending, user_id(&session)).await {
        Ok(kept) => kept,
        Err(error) => return error.into_response(),
    };
    let Some((organisation, file_name, bytes)) = kept else {
        return refused(Error::forbidden(), &session);
    };
    let withdraw_missing = form.get("retirer").is_some_and(|v| v == "1");
    let confirm_unchanged = form.get("confirmer").is_some_and(|v| v == "1");
    let applied = upload::run(
        &state,
        &session.actor,
        &organisation,
        &file_name,
        bytes,
        Mode {
            dry_run: false,
            withdraw_missing,
            confirm_unchanged,
        },
    )
    .await;
    let report = match applied {
        Ok((report, _)) => report,
        Err(error) => return refused(error, &session),
    };
    if report.committed {
        if let Err(error) = forget_plan(&state.store, &pending).await {
            return error.into_response();
        }
    }
    let body = html! {
        @if report.committed {
            p role="status" {
                "Mise à jour appliquée : " (plural(report.created as usize, "fiche créée", "fiches créées")) ", "
                (plural(report.updated as usize, "modifiée", "modifiées")) ", "
                (plural(report.unchanged as usize, "inchangée", "inchangées")) ", "
                (plural(report.withdrawn as usize, "retirée", "retirées")) ", "
                (plural(report.confirmed as usize, "confirmée", "confirmées")) "."
            }
            p { "Chaque fiche touchée garde la trace de cette mise à jour dans son historique (import « " (file_name) " »)." }
        } @else {
            div role="alert" {
                p { "Le fichier n'est pas appliqué : les données ont changé depuis la vérification et des lignes ne passent plus. Rien n'est écrit." }
                ul { @for e in &report.errors { li { @if let Some(r) = e.row { "Ligne " (r) " : " } (e.message) } } }
            }
        }
        p { a href="/espace" { "Retour à mes fiches" } " · " a href="/espace/import" { "Autre mise à jour en masse" } }
    };
    let status = if report.committed {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let title = if session.actor.role == Role::Operator {
        "Mise à jour en masse (opérateur)"
    } else {
        "Mise à jour en masse"
    };
    (status, page(title, Some(&session), body)).into_response()
}
