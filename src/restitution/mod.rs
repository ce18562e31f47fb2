//! Restitution and withdrawal (convention art. 6): an organisation takes back all its data as one
//! ZIP (entries as the import's CSV and as GeoJSON, their history, its settings), and when it
//! leaves, every entry it signs is unpublished in one recorded operation the operator can undo.

use std::io::Write;

use crate::db::Tx;
use crate::http::Path;
use crate::{in_tx, on_engine};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use crate::accounts::auth::ApiActor;
use crate::accounts::{can, store as accounts, Action, Actor, Target};
use crate::error::{Error, Problem, Result};
use crate::import::formats::PROJECT_COLUMNS;
use crate::services::turn::{Author, WriteTurn};
use crate::services::{history, Service, ServiceId, Status};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/organisations/{id}/export", get(export))
        .route("/api/v1/organisations/{id}/withdraw", post(withdraw))
        .route(
            "/api/v1/organisations/withdrawals/{operation}/undo",
            post(undo),
        )
}

/// The organisation's entries to give back: those published, and those its withdrawal
/// unpublished (an entry it withdrew itself earlier stays out).
async fn entries_of(state: &AppState, organisation: &str) -> Result<Vec<Service>> {
    let mut ids: Vec<ServiceId> = on_engine!(&state.store, |db| sqlx::query_as::<_, (String,)>(
        "SELECT id FROM services WHERE source_id = $1 AND status = 'published' ORDER BY id",
    )
    .bind(organisation)
    .fetch_all(db)
    .await)?
    .into_iter()
    .filter_map(|(id,)| ServiceId::parse(&id))
    .collect();
    let active: Vec<(String,)> = on_engine!(&state.store, |db| sqlx::query_as(
        "SELECT entries FROM organisation_withdrawals
         WHERE organisation_id = $1 AND undone_at IS NULL",
    )
    .bind(organisation)
    .fetch_all(db)
    .await)?;
    for (entries,) in active {
        let listed: Vec<String> = serde_json::from_str(&entries).map_err(anyhow::Error::from)?;
        ids.extend(listed.iter().filter_map(|id| ServiceId::parse(id)));
    }
    let mut services = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1_000) {
        services.extend(crate::services::store::get_many(&state.store, chunk).await?);
    }
    services.sort_by(|a, b| a.source_ref.cmp(&b.source_ref));
    Ok(services)
}

/// The entries in the project's CSV, as `proximites import` reads them back.
fn entries_csv(services: &[Service]) -> Result<Vec<u8>> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = PROJECT_COLUMNS.to_vec();
    header.extend(["wheelchair_note", "verified_at"]);
    out.write_record(&header).map_err(anyhow::Error::from)?;
    for s in services {
        let c = &s.content;
        let phones = c
            .phones
            .iter()
            .map(|p| p.e164().to_owned())
            .collect::<Vec<_>>()
            .join(";");
        out.write_record([
            s.source_ref.as_str(),
            &c.typology,
            &c.name,
            c.street.as_deref().unwrap_or_default(),
            c.postcode.as_deref().unwrap_or_default(),
            c.city.as_deref().unwrap_or_default(),
            c.insee_code.as_str(),
            &c.location.lon.to_string(),
            &c.location.lat.to_string(),
            &phones,
            c.email.as_deref().unwrap_or_default(),
            c.website.as_deref().unwrap_or_default(),
            c.opening_hours.as_deref().unwrap_or_default(),
            c.wheelchair.as_str(),
            c.description.as_deref().unwrap_or_default(),
            c.wheelchair_note.as_deref().unwrap_or_default(),
            &s.verified_at.map(|v| v.to_rfc3339()).unwrap_or_default(),
        ])
        .map_err(anyhow::Error::from)?;
    }
    Ok(out.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)
}

/// The entries as a GeoJSON FeatureCollection (every stored field, closures included).
fn entries_geojson(services: &[Service]) -> serde_json::Value {
    let features: Vec<serde_json::Value> = services
        .iter()
        .map(|s| {
            let version = history::Version::of_service(s);
            let mut properties = serde_json::to_value(&version).unwrap_or_default();
            if let serde_json::Value::Object(map) = &mut properties {
                map.insert("id".into(), s.id.to_string().into());
                map.insert("source_ref".into(), s.source_ref.clone().into());
            }
            serde_json::json!({
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [s.content.location.lon, s.content.location.lat]},
                "properties": properties,
            })
        })
        .collect();
    serde_json::json!({"type": "FeatureCollection", "features": features})
}

/// The organisation's ZIP: `entries.csv`, `entries.geojson`, `history.json`, `organisation.json`.
pub async fn export_zip(
    state: &AppState,
    organisation: &accounts::Organisation,
) -> Result<Vec<u8>> {
    let services = entries_of(state, &organisation.id).await?;
    let mut histories = serde_json::Map::new();
    for service in &services {
        let changes = history::of_entry(&state.store, &service.id).await?;
        histories.insert(
            service.id.to_string(),
            serde_json::to_value(changes).map_err(anyhow::Error::from)?,
        );
    }
    let csv = entries_csv(&services)?;
    let geojson =
        serde_json::to_vec_pretty(&entries_geojson(&services)).map_err(anyhow::Error::from)?;
    let history = serde_json::to_vec_pretty(&histories).map_err(anyhow::Error::from)?;
    let settings = serde_json::to_vec_pretty(organisation).map_err(anyhow::Error::from)?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in [
            ("entries.csv", &csv),
            ("entries.geojson", &geojson),
            ("history.json", &history),
            ("organisation.json", &settings),
        ] {
            zip.start_file(name, options)?;
            zip.write_all(bytes)?;
        }
        Ok(zip.finish()?.into_inner())
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(Error::from)
}

async fn organisation_for(
    actor: &Actor,
    state: &AppState,
    id: &str,
    action: Action,
) -> Result<accounts::Organisation> {
    can(actor, action, Target::Organisation(id))?;
    accounts::organisation(&state.store, id)
        .await?
        .ok_or_else(|| {
            if actor.role == crate::accounts::Role::Operator {
                Error::not_found("organisation", id)
            } else {
                Error::forbidden()
            }
        })
}

/// All of the organisation's data as one ZIP: its entries (published, or unpublished by its
/// withdrawal) in the project's CSV (`proximites import` reads it back) and as GeoJSON, their
/// history as JSON, and its settings.
#[utoipa::path(get, path = "/api/v1/organisations/{id}/export", tag = "contributors",
    params(("id" = String, Path, description = "Organisation id")),
    security(("bearer" = [])),
    responses((status = 200, description = "ZIP", content_type = "application/zip"),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn export(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
) -> Result<Response> {
    let organisation = organisation_for(&actor, &state, &id, Action::ExportOrganisation).await?;
    let bytes = export_zip(&state, &organisation).await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"proximites-{id}.zip\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// A withdrawal, as recorded.
#[derive(Serialize, ToSchema)]
pub struct Withdrawal {
    pub id: String,
    pub organisation_id: String,
    /// Entries unpublished (or published again, for an undo).
    pub entries: usize,
}

/// Unpublishes every entry the organisation signs and refuses its people and tokens, in one
/// transaction recorded as one operation (and in each entry's history). Operator only.
pub async fn withdraw_organisation(
    state: &AppState,
    actor: &Actor,
    id: &str,
) -> Result<Withdrawal> {
    organisation_for(actor, state, id, Action::WithdrawOrganisation).await?;
    let mut turn = WriteTurn::begin(&state.store, Some(&state.live)).await?;
    let ids: Vec<(String,)> = in_tx!(turn.conn(), |conn| sqlx::query_as(
        "SELECT id FROM services WHERE source_id = $1 AND status = 'published' ORDER BY id",
    )
    .bind(id)
    .fetch_all(conn)
    .await)?;
    let ids: Vec<ServiceId> = ids
        .into_iter()
        .filter_map(|(i,)| ServiceId::parse(&i))
        .collect();
    let now = Utc::now();
    let (actor_kind, actor_id) = actor.history_ref();
    for service_id in &ids {
        let current = crate::services::store::get_in(turn.conn(), service_id)
            .await?
            .ok_or_else(|| Error::not_found("fiche", service_id.as_str()))?;
        set_status(
            turn.conn(),
            &current,
            Status::Withdrawn,
            "withdrawn",
            actor,
            now,
        )
        .await?;
    }
    let operation = format!("wdr-{}", ServiceId::generate());
    in_tx!(turn.conn(), |conn| {
        sqlx::query(
        "INSERT INTO organisation_withdrawals (id, organisation_id, at, actor_kind, actor_id, entries)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&operation)
    .bind(id)
    .bind(now)
    .bind(actor_kind)
    .bind(actor_id)
    .bind(serde_json::to_string(&ids.iter().map(ServiceId::as_str).collect::<Vec<_>>()).map_err(anyhow::Error::from)?)
    .execute(conn).await.map(|r| r.rows_affected())
    })?;
    in_tx!(turn.conn(), |conn| sqlx::query(
        "UPDATE organisations SET withdrawn_at = $1 WHERE id = $2"
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    turn.commit().await?;
    Ok(Withdrawal {
        id: operation,
        organisation_id: id.to_owned(),
        entries: ids.len(),
    })
}

/// Undoes a withdrawal: the entries it unpublished are published again (those still withdrawn),
/// the organisation's people and tokens work again. Operator only.
pub async fn undo_withdrawal(
    state: &AppState,
    actor: &Actor,
    operation: &str,
) -> Result<Withdrawal> {
    can(actor, Action::WithdrawOrganisation, Target::Platform)?;
    let mut turn = WriteTurn::begin(&state.store, Some(&state.live)).await?;
    let row: Option<(String, String)> = in_tx!(turn.conn(), |conn| {
        sqlx::query_as(
        "SELECT organisation_id, entries FROM organisation_withdrawals WHERE id = $1 AND undone_at IS NULL",
    )
    .bind(operation)
    .fetch_optional(conn).await
    })?;
    let (organisation, entries) =
        row.ok_or_else(|| Error::not_found("retrait en cours", operation))?;
    let listed: Vec<String> = serde_json::from_str(&entries).map_err(anyhow::Error::from)?;
    let ids: Vec<ServiceId> = listed.iter().filter_map(|i| ServiceId::parse(i)).collect();
    let now = Utc::now();
    let mut restored = Vec::new();
    for service_id in &ids {
        let Some(current) = crate::services::store::get_in(turn.conn(), service_id).await? else {
            continue;
        };
        if current.status != Status::Withdrawn {
            continue;
        }
        set_status(
            turn.conn(),
            &current,
            Status::Published,
            "restored",
            actor,
            now,
        )
        .await?;
        restored.push(service_id.clone());
    }
    in_tx!(turn.conn(), |conn| sqlx::query(
        "UPDATE organisation_withdrawals SET undone_at = $1 WHERE id = $2"
    )
    .bind(now)
    .bind(operation)
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    in_tx!(turn.conn(), |conn| sqlx::query(
        "UPDATE organisations SET withdrawn_at = NULL WHERE id = $1"
    )
    .bind(&organisation)
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    turn.commit().await?;
    Ok(Withdrawal {
        id: operation.to_owned(),
        organisation_id: organisation,
        entries: restored.len(),
    })
}

/// The organisation leaves (convention art. 6): every entry it signs is unpublished at once,
/// nothing of it stays on any page, API answer or widget; its people and tokens are refused.
/// One operation, undoable by the operator. Operator only.
#[utoipa::path(post, path = "/api/v1/organisations/{id}/withdraw", tag = "contributors",
    params(("id" = String, Path, description = "Organisation id")),
    security(("bearer" = [])),
    responses((status = 200, body = Withdrawal), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn withdraw(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
) -> Result<Json<Withdrawal>> {
    Ok(Json(withdraw_organisation(&state, &actor, &id).await?))
}

/// Undoes an organisation's withdrawal. Operator only.
#[utoipa::path(post, path = "/api/v1/organisations/withdrawals/{operation}/undo", tag = "contributors",
    params(("operation" = String, Path, description = "The withdrawal's id")),
    security(("bearer" = [])),
    responses((status = 200, body = Withdrawal), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
async fn undo(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(operation): Path<String>,
) -> Result<Json<Withdrawal>> {
    Ok(Json(undo_withdrawal(&state, &actor, &operation).await?))
}

/// Gives an entry `status` as one recorded change (`action` in its history, made through the
/// API by `actor`): the withdrawal and its undoing differ only in these.
async fn set_status(
    tx: &mut Tx,
    current: &Service,
    status: Status,
    action: &'static str,
    actor: &Actor,
    now: chrono::DateTime<Utc>,
) -> Result<()> {
    let (kind, id) = actor.history_ref();
    let author = Author {
        kind,
        id,
        via: history::Via::Api,
    };
    crate::services::turn::set_status(tx, current, status, &author, action, now).await?;
    Ok(())
}
