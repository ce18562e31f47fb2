//! Bulk updates of an organisation's entries from a file in the import formats, as the API and
//! the pages both run them: the permission and territory checks, the plan a dry run shows (rows
//! to create, to change field by field, unchanged, and the entries the file leaves out), and the
//! atomic apply through the import (one transaction), which the indexes then follow.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::history::{changes, Version};
use super::{store, Status};
use crate::accounts::{can, Action, Actor, Area, Target, Territory};
use crate::error::{Error, FieldError, Result};
use crate::import::{self, ImportOptions, ImportReport, Input};
use crate::state::AppState;

/// How to run an upload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// Check and plan only, write nothing.
    pub dry_run: bool,
    /// Withdraw the organisation's published entries the file leaves out.
    pub withdraw_missing: bool,
    /// Confirm the entries the file leaves unchanged (« rien n'a changé »).
    pub confirm_unchanged: bool,
}

/// A row of the file that creates an entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlannedCreation {
    pub row: u64,
    pub source_ref: String,
    pub name: String,
    pub insee_code: String,
}

/// A row of the file that changes an entry: each field's old and new value.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlannedChange {
    pub row: u64,
    pub source_ref: String,
    pub id: String,
    pub name: String,
    /// `{"field": {"old": …, "new": …}}`, as the history records it.
    #[schema(value_type = Object)]
    pub changes: Map<String, Value>,
}

/// An entry the file names, left as it is; or one it leaves out.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlannedEntry {
    /// The row naming it (none for an entry the file leaves out).
    pub row: Option<u64>,
    pub source_ref: String,
    pub id: String,
    pub name: String,
}

/// What an upload would do, in detail (a dry run's answer).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Plan {
    pub created: Vec<PlannedCreation>,
    pub changed: Vec<PlannedChange>,
    pub unchanged: Vec<PlannedEntry>,
    /// Published entries of the organisation the file does not name: withdrawn with
    /// `withdraw_missing`, kept otherwise.
    pub missing: Vec<PlannedEntry>,
}

/// The largest file an upload takes, from the API or the pages.
pub const MAX_BYTES: usize = 32 * 1024 * 1024;

/// Why an upload's body could not be read: too large (413 `file_too_large`), or else cut off.
pub fn body_error(status: axum::http::StatusCode, detail: &str) -> Error {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge {
            code: "file_too_large",
            detail: format!(
                "fichier trop gros : {} Mo au plus / file too large: {} MB at most",
                MAX_BYTES >> 20,
                MAX_BYTES >> 20
            ),
        }
    } else {
        Error::BadRequest {
            code: "invalid_body",
            detail: format!("envoi illisible / unreadable body: {detail}"),
        }
    }
}

/// The organisation an actor uploads for: its own, or the one the operator names.
pub fn organisation_of(actor: &Actor, named: Option<&str>) -> Result<String> {
    match (named, actor.organisation_id()) {
        (Some(id), _) if !id.is_empty() => Ok(id.to_owned()),
        (_, Some(own)) => Ok(own.to_owned()),
        (_, None) => Err(Error::InvalidParameters(vec![FieldError::new(
            "organisation",
            "l'opérateur indique l'organisation",
        )])),
    }
}

/// Runs an upload of `bytes` (CSV or GeoJSON, told by `file_name` and the content) for
/// `organisation_id`: the report, and the plan in a dry run. All or nothing: one wrong row
/// (or one outside the organisation's territory) and nothing is written.
pub async fn run(
    state: &AppState,
    actor: &Actor,
    organisation_id: &str,
    file_name: &str,
    bytes: Vec<u8>,
    mode: Mode,
) -> Result<(ImportReport, Option<Plan>)> {
    can(
        actor,
        Action::BulkUpsert,
        Target::Organisation(organisation_id),
    )?;
    let organisation = crate::accounts::store::organisation(&state.store, organisation_id)
        .await?
        .ok_or_else(Error::forbidden)?;
    let territory = Territory(
        organisation
            .territory
            .iter()
            .filter_map(|code| Area::parse(code).ok())
            .collect(),
    );
    let (kind, id) = actor.history_ref();
    let mut report = import::import(
        &state.store,
        &state.reference,
        Input::Bytes {
            name: file_name.into(),
            bytes,
        },
        ImportOptions {
            source: Some(organisation.name.clone()),
            dry_run: mode.dry_run,
            started_by: Some(format!("{kind}:{id}")),
            // The operator may place entries anywhere.
            territory: actor.organisation.is_some().then_some(territory),
            collect_ids: true,
            plan: mode.dry_run,
            withdraw_missing: mode.withdraw_missing,
            confirm_unchanged: mode.confirm_unchanged,
            live: Some(state.live.clone()),
            // A contributor fixes its own file from the check page, line by line: a doubtful
            // field is an error to correct there, not a flag left for later (harvests and the
            // operator's imports flag instead).
            strict: true,
            ..ImportOptions::default()
        },
    )
    .await?;
    let plan = if mode.dry_run {
        Some(plan_of(state, &mut report).await?)
    } else {
        None
    };
    Ok((report, plan))
}

/// The plan of a dry run's report: each change against the entry as stored now.
async fn plan_of(state: &AppState, report: &mut ImportReport) -> Result<Plan> {
    let rows = std::mem::take(&mut report.plan);
    let missing = std::mem::take(&mut report.missing);
    let ids: Vec<_> = rows
        .iter()
        .filter_map(|r| r.id.clone())
        .chain(missing.iter().map(|(_, id)| id.clone()))
        .collect();
    let mut stored = std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(1_000) {
        for service in store::get_many(&state.store, chunk).await? {
            stored.insert(service.id.clone(), service);
        }
    }
    let mut plan = Plan::default();
    for row in rows {
        let current = row.id.as_ref().and_then(|id| stored.get(id));
        match (current, row.write) {
            (None, Some((content, _))) => plan.created.push(PlannedCreation {
                row: row.row,
                source_ref: row.source_ref,
                name: content.name,
                insee_code: content.insee_code.to_string(),
            }),
            (Some(current), Some((content, verified_at))) => {
                let next = Version::of(
                    &content,
                    Status::Published,
                    verified_at.or(current.verified_at),
                );
                plan.changed.push(PlannedChange {
                    row: row.row,
                    source_ref: row.source_ref,
                    id: current.id.to_string(),
                    name: current.content.name.clone(),
                    changes: changes(Some(&Version::of_service(current)), &next),
                });
            }
            (current, None) => plan.unchanged.push(PlannedEntry {
                row: Some(row.row),
                source_ref: row.source_ref,
                id: row.id.map(|id| id.to_string()).unwrap_or_default(),
                name: current.map(|c| c.content.name.clone()).unwrap_or_default(),
            }),
        }
    }
    plan.missing = missing
        .into_iter()
        .map(|(source_ref, id)| PlannedEntry {
            row: None,
            name: stored
                .get(&id)
                .map(|s| s.content.name.clone())
                .unwrap_or_default(),
            source_ref,
            id: id.to_string(),
        })
        .collect();
    Ok(plan)
}
