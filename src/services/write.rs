//! The write paths of entries for contributors: create, update, withdraw, restore, confirm.
//! Each one checks the permission rules, validates like an import, writes the entry and its
//! history in one transaction, then brings the search indexes up to the committed data.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::history::{self, Version, Via};
use super::turn::{set_version, Author, WriteTurn};
use super::{store, Closure, Content, Draft, Service, ServiceId, Status, Validator};
use crate::accounts::{can, Action, Actor, Role, Target};
use crate::db::{Store, Tx};
use crate::error::{Error, FieldError, Result};
use crate::import::Reference;
use crate::in_tx;
use crate::search::live::LiveIndexes;
use crate::state::AppState;

/// The entry's version tag for `If-Match`: it changes with every write to the entry (content,
/// status, confirmation), so a write based on an older read is refused.
pub fn etag(service: &Service) -> String {
    let mut h = Sha256::new();
    h.update(service.content.digest().as_bytes());
    h.update(service.status.as_str().as_bytes());
    h.update(
        service
            .verified_at
            .map(|v| v.to_rfc3339())
            .unwrap_or_default(),
    );
    h.update(service.updated_at.to_rfc3339().as_bytes());
    format!("\"{}\"", hex::encode(&h.finalize()[..12]))
}

/// What the write paths of entries need, and only that: the database, the reference they
/// validate against, and the live indexes their writes reach. Made from the server's state.
#[derive(Clone, Copy)]
pub struct Entries<'a> {
    pub store: &'a Store,
    pub reference: &'a Reference,
    pub live: &'a Arc<LiveIndexes>,
}

impl<'a> From<&'a AppState> for Entries<'a> {
    fn from(state: &'a AppState) -> Self {
        Entries {
            store: &state.store,
            reference: &state.reference,
            live: &state.live,
        }
    }
}

/// The fields a contributor may send, as the project's CSV names them.
const FIELDS: [&str; 16] = [
    "typology",
    "name",
    "description",
    "address",
    "postcode",
    "city",
    "insee_code",
    "lon",
    "lat",
    "phone",
    "email",
    "website",
    "opening_hours",
    "wheelchair",
    "wheelchair_note",
    "closures",
];

/// The entry as a draft, every field as text: what a change is applied to.
pub fn draft_of(service: &Service) -> Draft {
    Draft {
        source_ref: service.source_ref.clone(),
        ..content_draft(&service.content)
    }
}

/// The content as a draft, every field as text.
pub(crate) fn content_draft(c: &Content) -> Draft {
    Draft {
        typology: c.typology.clone(),
        name: c.name.clone(),
        address: c.street.clone().unwrap_or_default(),
        postcode: c.postcode.clone().unwrap_or_default(),
        city: c.city.clone().unwrap_or_default(),
        insee_code: c.insee_code.to_string(),
        lon: c.location.lon.to_string(),
        lat: c.location.lat.to_string(),
        phone: c
            .phones
            .iter()
            .map(|p| p.e164().to_owned())
            .collect::<Vec<_>>()
            .join(";"),
        email: c.email.clone().unwrap_or_default(),
        website: c.website.clone().unwrap_or_default(),
        opening_hours: c.opening_hours.clone().unwrap_or_default(),
        wheelchair: c.wheelchair.as_str().to_owned(),
        wheelchair_note: c.wheelchair_note.clone().unwrap_or_default(),
        description: c.description.clone().unwrap_or_default(),
        ..Draft::default()
    }
}

/// Sets the sent `fields` on `draft`; returns the closures when sent. Unknown fields and values
/// of the wrong type are errors, each named.
pub fn apply_fields(
    draft: &mut Draft,
    fields: &Map<String, Value>,
    extra: &[&str],
) -> Result<Option<Vec<Closure>>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut closures = None;
    let moved = fields.contains_key("lon") || fields.contains_key("lat");
    if moved && !fields.contains_key("insee_code") {
        // A moved point finds its commune again, unless the change says which.
        draft.insee_code.clear();
    }
    for (field, value) in fields {
        if extra.contains(&field.as_str()) {
            continue;
        }
        if field == "closures" {
            match serde_json::from_value::<Option<Vec<Closure>>>(value.clone()) {
                Ok(list) => closures = Some(list.unwrap_or_default()),
                Err(e) => errors.push(FieldError::new(
                    "closures",
                    format!("liste attendue de {{\"from\": date, \"to\": date, \"reason\": texte}} : {e}"),
                )),
            }
            continue;
        }
        let text = match value {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Array(items) if field == "phone" => {
                let parts: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
                match parts {
                    Some(parts) => parts.join(";"),
                    None => {
                        errors.push(FieldError::new(
                            "phone",
                            "liste de numéros (textes) attendue",
                        ));
                        continue;
                    }
                }
            }
            _ => {
                errors.push(FieldError::new(field, "texte ou nombre attendu"));
                continue;
            }
        };
        let slot = match draft
            .field_mut(field)
            .filter(|_| FIELDS.contains(&field.as_str()))
        {
            Some(slot) => slot,
            None => {
                let other = field.as_str();
                errors.push(FieldError::new(
                    other,
                    format!(
                        "champ inconnu ; champs admis : {}",
                        FIELDS
                            .iter()
                            .chain(extra)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
                continue;
            }
        };
        *slot = text;
    }
    if errors.is_empty() {
        Ok(closures)
    } else {
        Err(errors)
    }
}

/// Validated content of `draft` with `closures` (kept from `previous` when not sent).
fn validate(
    state: Entries<'_>,
    draft: &Draft,
    closures: Option<Vec<Closure>>,
    previous: Option<&Content>,
) -> Result<Content> {
    let mut validator = Validator::new(&state.reference.taxonomy, &state.reference.locator);
    let mut content = validator
        .content(draft, previous.is_some())
        .map_err(Error::Invalid)?;
    if let Some(previous) = previous.filter(|p| !p.quality.is_empty()) {
        // A person's write settles the doubts about the fields it changes, not the others.
        let before = content_draft(previous);
        content.quality = crate::services::quality::kept_after_edit(&previous.quality, |field| {
            before.field(field) == draft.field(field)
        });
    }
    content.closures = match (closures, previous) {
        (Some(sent), _) => sent,
        (None, Some(previous)) => previous.closures.clone(),
        (None, None) => Vec::new(),
    };
    crate::services::validate::check_closures(&content.closures)
        .map_err(|message| Error::invalid("closures", message))?;
    Ok(content)
}

/// The entry `id` for `actor`: an entry that does not exist and one of another organisation
/// get the same 403 (the operator, who may see everything, gets a 404 for a missing one).
pub(crate) async fn entry_for(
    tx: &mut Tx,
    actor: &Actor,
    id: &str,
    action: Action,
) -> Result<Service> {
    let found = match ServiceId::parse(id) {
        Some(service_id) => store::get_in(tx, &service_id).await?,
        None => None,
    };
    match found {
        Some(service) => {
            can(
                actor,
                Action::ReadEntry,
                Target::Entry {
                    organisation: &service.source_id,
                    commune: None,
                },
            )?;
            if matches!(action, Action::WithdrawEntry | Action::ConfirmEntry) {
                can(
                    actor,
                    action,
                    Target::Entry {
                        organisation: &service.source_id,
                        commune: None,
                    },
                )?;
            }
            Ok(service)
        }
        None if actor.role == Role::Operator => Err(Error::not_found("fiche", id)),
        None => Err(Error::forbidden()),
    }
}

fn check_etag(service: &Service, if_match: Option<&str>) -> Result<()> {
    let Some(sent) = if_match else {
        return Err(Error::PreconditionRequired {
            code: "if_match_required",
            detail: "en-tête If-Match requis : l'ETag de la fiche lue (GET /api/v1/services/{id}) / If-Match required".into(),
        });
    };
    let current = etag(service);
    if sent
        .split(',')
        .map(str::trim)
        .any(|tag| tag == current || tag == "*")
    {
        Ok(())
    } else {
        Err(Error::PreconditionFailed {
            code: "stale_etag",
            detail: "la fiche a été modifiée depuis votre lecture : relisez-la et refaites votre changement / the entry changed since you read it".into(),
        })
    }
}

/// A new entry's input: its fields, and for whom (the operator says which organisation).
pub struct NewEntry {
    pub fields: Map<String, Value>,
}

/// The committed result of a write: the entry as stored and its history row.
pub struct Written {
    pub service: Service,
    pub change_id: Option<String>,
}

/// The write turn of a change by a contributor, on the server's live indexes.
async fn open(state: Entries<'_>) -> Result<WriteTurn> {
    WriteTurn::begin(state.store, Some(state.live)).await
}

pub async fn create(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    via: Via,
    new: NewEntry,
) -> Result<Written> {
    let state: Entries<'_> = state.into();
    let organisation = match new.fields.get("organisation_id") {
        Some(Value::String(id)) => id.clone(),
        Some(_) => {
            return Err(Error::invalid(
                "organisation_id",
                "identifiant (texte) attendu",
            ))
        }
        None => actor.organisation_id().map(str::to_owned).ok_or_else(|| {
            Error::invalid(
                "organisation_id",
                "l'opérateur indique l'organisation de la fiche",
            )
        })?,
    };
    let mut draft = Draft::default();
    let closures = apply_fields(&mut draft, &new.fields, &["organisation_id", "source_ref"])
        .map_err(Error::Invalid)?;
    let content = validate(state, &draft, closures, None)?;
    let commune = state.reference.locator.commune(&content.insee_code);
    can(
        actor,
        Action::CreateEntry,
        Target::Entry {
            organisation: &organisation,
            commune,
        },
    )?;
    let id = ServiceId::generate();
    let source_ref = match new.fields.get("source_ref") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::String(_) | Value::Null) | None => id.to_string(),
        Some(_) => return Err(Error::invalid("source_ref", "texte attendu")),
    };
    let mut turn = open(state).await?;
    let known: Option<(String,)> = in_tx!(turn.conn(), |conn| sqlx::query_as(
        "SELECT id FROM organisations WHERE id = $1"
    )
    .bind(&organisation)
    .fetch_optional(conn)
    .await)?;
    if known.is_none() {
        return Err(Error::invalid(
            "organisation_id",
            format!("organisation inconnue « {organisation} »"),
        ));
    }
    let now = Utc::now();
    let inserted = store::insert(turn.conn(), &id, &organisation, &source_ref, &content, now).await;
    match inserted {
        Err(Error::Database(sqlx::Error::Database(e))) if e.is_unique_violation() => {
            return Err(Error::invalid(
                "source_ref",
                format!("« {source_ref} » : une fiche de l'organisation a déjà cette référence"),
            ))
        }
        other => other?,
    }
    let (actor_kind, actor_id) = actor.history_ref();
    // A person (or a script) creating an entry states it is right today.
    let next = Version::of(&content, Status::Published, Some(now));
    let change_id = history::record(
        turn.conn(),
        history::Record {
            service_id: &id,
            at: now,
            actor_kind,
            actor_id,
            via,
            action: "created",
            previous: None,
            next: &next,
        },
    )
    .await?;
    turn.commit().await?;
    written(state, &id, Some(change_id)).await
}

pub(crate) async fn written(
    state: Entries<'_>,
    id: &ServiceId,
    change_id: Option<String>,
) -> Result<Written> {
    let service = store::get(state.store, id)
        .await?
        .ok_or_else(|| Error::not_found("fiche", id.as_str()))?;
    Ok(Written { service, change_id })
}

/// The common end of a change: writes `content`/`status`/`verified_at` over the entry and
/// records it. Nothing is written when nothing changes.
#[allow(clippy::too_many_arguments)]
async fn change(
    state: Entries<'_>,
    mut turn: WriteTurn,
    actor: &Actor,
    via: Via,
    current: &Service,
    content: &Content,
    status: Status,
    verified_at: Option<DateTime<Utc>>,
    action: &str,
) -> Result<Written> {
    let (kind, id) = actor.history_ref();
    let author = Author { kind, id, via };
    let changed = set_version(
        turn.conn(),
        current,
        content,
        status,
        verified_at,
        &author,
        action,
        Utc::now(),
    )
    .await?;
    let Some(change_id) = changed else {
        turn.rollback().await?;
        return Ok(Written {
            service: current.clone(),
            change_id: None,
        });
    };
    super::claims::settle(turn.conn(), &current.id, content).await?;
    turn.commit().await?;
    written(state, &current.id, Some(change_id)).await
}

/// Changes the fields sent, provided the entry is still as read (`if_match`).
pub async fn update(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    via: Via,
    id: &str,
    if_match: Option<&str>,
    fields: &Map<String, Value>,
) -> Result<Written> {
    let state: Entries<'_> = state.into();
    let mut turn = open(state).await?;
    let current = entry_for(turn.conn(), actor, id, Action::UpdateEntry).await?;
    check_etag(&current, if_match)?;
    let mut draft = draft_of(&current);
    let closures = apply_fields(&mut draft, fields, &[]).map_err(Error::Invalid)?;
    let content = validate(state, &draft, closures, Some(&current.content))?;
    can(
        actor,
        Action::UpdateEntry,
        Target::Entry {
            organisation: &current.source_id,
            commune: state.reference.locator.commune(&content.insee_code),
        },
    )?;
    // A change made by a person is also a confirmation that the entry is right.
    let verified_at = if content != current.content {
        Some(Utc::now())
    } else {
        current.verified_at
    };
    change(
        state,
        turn,
        actor,
        via,
        &current,
        &content,
        current.status,
        verified_at,
        "updated",
    )
    .await
}

/// Unpublishes the entry (it stays, with its history, and can be restored).
pub async fn withdraw(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    via: Via,
    id: &str,
    if_match: Option<&str>,
) -> Result<Written> {
    let state: Entries<'_> = state.into();
    let mut turn = open(state).await?;
    let current = entry_for(turn.conn(), actor, id, Action::WithdrawEntry).await?;
    if if_match.is_some() {
        check_etag(&current, if_match)?;
    }
    let content = current.content.clone();
    change(
        state,
        turn,
        actor,
        via,
        &current,
        &content,
        Status::Withdrawn,
        current.verified_at,
        "withdrawn",
    )
    .await
}

/// « Rien n'a changé » : the entry is confirmed as it is, today.
pub async fn confirm(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    via: Via,
    id: &str,
) -> Result<Written> {
    let state: Entries<'_> = state.into();
    let mut turn = open(state).await?;
    let current = entry_for(turn.conn(), actor, id, Action::ConfirmEntry).await?;
    let mut content = current.content.clone();
    // Confirming an entry its source dropped says the service still exists.
    content
        .quality
        .retain(|flag| flag.code != super::quality::QualityCode::DroppedBySource);
    change(
        state,
        turn,
        actor,
        via,
        &current,
        &content,
        current.status,
        Some(Utc::now()),
        "confirmed",
    )
    .await
}

/// Puts back the entry as it was before the change `change_id` (content and status).
pub async fn restore(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    via: Via,
    id: &str,
    change_id: &str,
) -> Result<Written> {
    let state: Entries<'_> = state.into();
    let mut turn = open(state).await?;
    let current = entry_for(turn.conn(), actor, id, Action::RestoreEntry).await?;
    let earlier = history::change(turn.conn(), &current.id, change_id)
        .await?
        .ok_or_else(|| Error::not_found("changement", change_id))?;
    let Some(version) = earlier.previous else {
        return Err(Error::Conflict {
            code: "nothing_to_restore",
            detail: "ce changement est la création de la fiche : il n'y a pas de version antérieure (retirez la fiche pour la dépublier)".into(),
        });
    };
    let content = version.content()?;
    can(
        actor,
        Action::RestoreEntry,
        Target::Entry {
            organisation: &current.source_id,
            commune: state.reference.locator.commune(&content.insee_code),
        },
    )?;
    change(
        state,
        turn,
        actor,
        via,
        &current,
        &content,
        version.status,
        version.verified_at,
        "restored",
    )
    .await
}

/// The history of an entry the actor may read.
pub async fn history_of(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    id: &str,
) -> Result<(Service, Vec<history::Change>)> {
    let state: Entries<'_> = state.into();
    let mut tx = state.store.begin().await?;
    let service = entry_for(&mut tx, actor, id, Action::ReadEntry).await?;
    tx.commit().await?;
    let changes = history::of_entry(state.store, &service.id).await?;
    Ok((service, changes))
}
