//! Claims and suggestions: an organisation signs an entry that a national source harvested;
//! from then on the harvest leaves its fields alone and records what the source says
//! differently as suggestions, which the organisation accepts or dismisses field by field. The
//! operator can release a claim, which gives the entry back to its source.

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::history::{self, Version, Via};
use super::quality::{QualityCode, QualityFlag};
use super::turn::{set_version, Author, WriteTurn};
use super::write::{self, content_draft, Entries, Written};
use super::{store, Content, Draft, Service, ServiceId, Status};
use crate::accounts::{can, Action, Actor, Role, Target};
use crate::db::{Store, Tx};
use crate::error::{Error, Result};
use crate::import::National;
use crate::{in_tx, on_engine};

/// The fields a source can suggest, as the project's CSV names them (`position` is the point,
/// `lon,lat`), with their French labels. The commune follows the point.
pub const SUGGESTED_FIELDS: [(&str, &str); 13] = [
    ("typology", "Typologie"),
    ("name", "Nom"),
    ("description", "Description"),
    ("address", "Adresse"),
    ("postcode", "Code postal"),
    ("city", "Ville"),
    ("position", "Position (longitude, latitude)"),
    ("phone", "Téléphone"),
    ("email", "Courriel"),
    ("website", "Site web"),
    ("opening_hours", "Horaires"),
    ("wheelchair", "Accessibilité en fauteuil"),
    ("wheelchair_note", "Précisions sur l'accessibilité"),
];

/// Points closer than this are the same place: a source's rounding is not a suggestion.
const SAME_PLACE_M: f64 = 10.0;

pub fn field_label(field: &str) -> &str {
    SUGGESTED_FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(field, |(_, label)| label)
}

/// Where a claimed entry came from.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Claim {
    /// The organisation that signs the entry now.
    pub organisation_id: String,
    /// The national source that harvested it, and the record's identifier there.
    pub origin_source_id: String,
    pub origin_source_name: String,
    pub origin_ref: String,
    pub claimed_at: DateTime<Utc>,
    /// Who claimed it (`user:ID`, `token:ID`).
    pub claimed_by: String,
    /// When the source stopped listing the record (the entry is flagged, not withdrawn).
    pub dropped_at: Option<DateTime<Utc>>,
}

/// What the source says differently about one field of a claimed entry.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Suggestion {
    /// The field, as the project's CSV names it (`position`: `lon,lat`).
    pub field: String,
    /// The source's value, as the project's CSV writes it.
    pub value: String,
    pub suggested_at: DateTime<Utc>,
    /// Set once the organisation dismissed it; the source saying something else again makes a
    /// new suggestion.
    pub dismissed_at: Option<DateTime<Utc>>,
}

/// The field `field` of an entry (as text, see [`content_draft`]): what a suggestion compares.
pub fn value_of(draft: &Draft, field: &str) -> String {
    match field {
        "position" => format!("{},{}", draft.lon, draft.lat),
        "wheelchair" if draft.wheelchair == "unknown" => String::new(),
        other => draft.field(other).cloned().unwrap_or_default(),
    }
}

/// Whether the entry `draft` already says `value` for `field`.
fn agrees(draft: &Draft, field: &str, value: &str) -> bool {
    if field == "position" {
        let point = |text: &str| {
            let (lon, lat) = text.split_once(',')?;
            Some(crate::spatial::LonLat {
                lon: lon.trim().parse().ok()?,
                lat: lat.trim().parse().ok()?,
            })
        };
        return match (point(&value_of(draft, field)), point(value)) {
            (Some(a), Some(b)) => a.distance_m(b) < SAME_PLACE_M,
            _ => false,
        };
    }
    value_of(draft, field) == value
}

/// What the source's record `source` suggests to the claimed entry `current`: each field the
/// source gives a value for, differently. A source that says nothing about a field suggests
/// nothing (it does not ask to empty it), and a point the source placed by default (at the
/// commune's centre, flagged) is no suggestion either.
pub fn proposals(current: &Content, source: &Content) -> Vec<(String, String)> {
    let now = content_draft(current);
    let theirs = content_draft(source);
    let placed_by_default = source.quality.iter().any(|flag| {
        matches!(
            flag.code,
            QualityCode::PositionOutsideCommune
                | QualityCode::PositionOutsideFrance
                | QualityCode::PositionMissing
        )
    });
    SUGGESTED_FIELDS
        .iter()
        .map(|(field, _)| *field)
        .filter(|field| !(*field == "position" && placed_by_default))
        .filter_map(|field| {
            let value = value_of(&theirs, field);
            (!value.is_empty() && !agrees(&now, field, &value)).then(|| (field.to_owned(), value))
        })
        .collect()
}

/// A claimed entry as a harvest of its source sees it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: ServiceId,
    pub content: Content,
    /// The suggestions stored, (field, value).
    pub suggested: Vec<(String, String)>,
    pub dropped: bool,
    /// The line of the file being harvested that names it (0: none yet).
    pub seen_at: u64,
}

/// The entries claimed from the source `source_id`, by the record's identifier there.
pub async fn claimed_from(store: &Store, source_id: &str) -> Result<HashMap<String, Claimed>> {
    let rows: Vec<(String, String, Option<DateTime<Utc>>)> =
        on_engine!(store, |db| sqlx::query_as(
            "SELECT origin_ref, service_id, dropped_at FROM claims WHERE origin_source_id = $1",
        )
        .bind(source_id)
        .fetch_all(db)
        .await)?;
    let mut claimed = HashMap::default();
    for (origin_ref, id, dropped_at) in rows {
        let id = ServiceId(id);
        let Some(service) = store::get(store, &id).await? else {
            continue;
        };
        let suggested: Vec<(String, String)> = on_engine!(store, |db| sqlx::query_as(
            "SELECT field, value FROM suggestions WHERE service_id = $1"
        )
        .bind(id.as_str())
        .fetch_all(db)
        .await)?;
        claimed.insert(
            origin_ref,
            Claimed {
                id,
                content: service.content,
                suggested,
                dropped: dropped_at.is_some(),
                seen_at: 0,
            },
        );
    }
    Ok(claimed)
}

/// Makes the stored suggestions of `id` those of `proposed`, in the caller's transaction: a
/// suggestion the source repeats keeps its date and its dismissal, a new value is a new
/// suggestion, and what the source no longer says differently goes.
pub async fn set_suggestions(
    tx: &mut Tx,
    id: &ServiceId,
    proposed: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<()> {
    let stored: Vec<(String, String)> = in_tx!(tx, |conn| sqlx::query_as(
        "SELECT field, value FROM suggestions WHERE service_id = $1"
    )
    .bind(id.as_str())
    .fetch_all(conn)
    .await)?;
    for (field, value) in &stored {
        if !proposed.iter().any(|(f, v)| f == field && v == value) {
            in_tx!(tx, |conn| sqlx::query(
                "DELETE FROM suggestions WHERE service_id = $1 AND field = $2"
            )
            .bind(id.as_str())
            .bind(field)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()))?;
        }
    }
    for (field, value) in proposed {
        if !stored.iter().any(|(f, v)| f == field && v == value) {
            in_tx!(tx, |conn| {
                sqlx::query(
                "INSERT INTO suggestions (service_id, field, value, suggested_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(id.as_str())
            .bind(field)
            .bind(value)
            .bind(now)
            .execute(conn).await.map(|r| r.rows_affected())
            })?;
        }
    }
    Ok(())
}

/// Removes the suggestions of `id` that its content now agrees with (accepted, or typed by a
/// person), in the caller's transaction: done by every write of an entry's content.
pub async fn settle(tx: &mut Tx, id: &ServiceId, content: &Content) -> Result<()> {
    let stored: Vec<(String, String)> = in_tx!(tx, |conn| sqlx::query_as(
        "SELECT field, value FROM suggestions WHERE service_id = $1"
    )
    .bind(id.as_str())
    .fetch_all(conn)
    .await)?;
    let now = content_draft(content);
    for (field, value) in stored {
        if agrees(&now, &field, &value) {
            in_tx!(tx, |conn| sqlx::query(
                "DELETE FROM suggestions WHERE service_id = $1 AND field = $2"
            )
            .bind(id.as_str())
            .bind(&field)
            .execute(conn)
            .await
            .map(|r| r.rows_affected()))?;
        }
    }
    Ok(())
}

/// The flag a claimed entry gets when its source stops listing it.
fn dropped_flag(source: &str, on: DateTime<Utc>) -> QualityFlag {
    QualityFlag::new(
        QualityCode::DroppedBySource,
        "source_ref",
        format!(
            "« {source} » ne publie plus cette fiche (récolte du {}) : vérifiez que le service existe encore, puis confirmez la fiche ou retirez-la",
            on.format("%d/%m/%Y")
        ),
    )
}

/// Flags (`dropped`) or clears the flag of a claimed entry whose source stopped (or started
/// again) listing it, in a harvest's transaction, recorded in the history as the harvest's
/// doing. The entry stays published: its organisation answers for it.
pub async fn set_dropped(
    tx: &mut Tx,
    id: &ServiceId,
    source: &str,
    dropped: bool,
    import_id: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let Some(current) = store::get_in(tx, id).await? else {
        return Ok(());
    };
    let mut content = current.content.clone();
    content
        .quality
        .retain(|flag| flag.code != QualityCode::DroppedBySource);
    if dropped {
        content.quality.push(dropped_flag(source, at));
    }
    let author = Author {
        kind: "import",
        id: import_id,
        via: Via::Import,
    };
    let action = if dropped {
        "dropped_by_source"
    } else {
        "listed_again"
    };
    set_version(
        tx,
        &current,
        &content,
        current.status,
        current.verified_at,
        &author,
        action,
        at,
    )
    .await?;
    in_tx!(tx, |conn| sqlx::query(
        "UPDATE claims SET dropped_at = $2 WHERE service_id = $1"
    )
    .bind(id.as_str())
    .bind(dropped.then_some(at))
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The claim on `id`, if any.
pub async fn claim_of(tx: &mut Tx, id: &ServiceId) -> Result<Option<Claim>> {
    Ok(in_tx!(tx, |conn| sqlx::query_as(
        "SELECT c.organisation_id, c.origin_source_id, o.name AS origin_source_name, c.origin_ref,
                c.claimed_at, c.claimed_by, c.dropped_at
         FROM claims c JOIN organisations o ON o.id = c.origin_source_id
         WHERE c.service_id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(conn)
    .await)?)
}

/// Whether `source_name` is a national source, whose entries organisations may claim.
pub fn is_national(source_name: &str) -> bool {
    National::ALL.iter().any(|n| n.source() == source_name)
}

fn actor_ref(actor: &Actor) -> String {
    let (kind, id) = actor.history_ref();
    format!("{kind}:{id}")
}

/// The organisation `actor` claims for: its own; the operator signs nothing.
fn claiming_organisation(actor: &Actor) -> Result<&str> {
    actor.organisation_id().ok_or_else(|| Error::Conflict {
        code: "claim_needs_organisation",
        detail: "seule une organisation contributrice revendique une fiche ; l'opérateur peut la modifier directement / only a contributing organisation claims an entry".into(),
    })
}

/// The entry `id`, read in the turn; 404 when there is none.
async fn entry(tx: &mut Tx, id: &str) -> Result<Service> {
    let found = match ServiceId::parse(id) {
        Some(service_id) => store::get_in(tx, &service_id).await?,
        None => None,
    };
    found.ok_or_else(|| Error::not_found("fiche", id))
}

/// The organisation of `actor` claims the harvested entry `id` of its territory: it signs the
/// entry from now on, and the harvest of the source no longer overwrites it.
pub async fn claim(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    via: Via,
    id: &str,
) -> Result<Written> {
    let state: Entries<'_> = state.into();
    let organisation = claiming_organisation(actor)?.to_owned();
    let mut turn = WriteTurn::begin(state.store, Some(state.live)).await?;
    let current = entry(turn.conn(), id).await?;
    if current.source_id == organisation {
        return Err(Error::Conflict {
            code: "already_claimed",
            detail: "votre organisation signe déjà cette fiche / your organisation already signs this entry".into(),
        });
    }
    if current.status != Status::Published || !is_national(&current.source_name) {
        return Err(Error::Conflict {
            code: "not_claimable",
            detail: format!(
                "cette fiche est signée par « {} » : seule une fiche publiée récoltée d'une source nationale peut être revendiquée / only a published entry harvested from a national source can be claimed",
                current.source_name
            ),
        });
    }
    can(
        actor,
        Action::CreateEntry,
        Target::Entry {
            organisation: &organisation,
            commune: state.reference.locator.commune(&current.content.insee_code),
        },
    )?;
    let now = Utc::now();
    store::reassign(
        turn.conn(),
        &current.id,
        &organisation,
        current.id.as_str(),
        now,
    )
    .await?;
    in_tx!(turn.conn(), |conn| {
        sqlx::query(
        "INSERT INTO claims (service_id, organisation_id, origin_source_id, origin_ref, claimed_at, claimed_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(current.id.as_str())
    .bind(&organisation)
    .bind(&current.source_id)
    .bind(&current.source_ref)
    .bind(now)
    .bind(actor_ref(actor))
    .execute(conn).await.map(|r| r.rows_affected())
    })?;
    let change_id = record_signature(turn.conn(), actor, via, &current, "claimed", now).await?;
    turn.commit().await?;
    write::written(state, &current.id, change_id).await
}

/// The operator gives a claimed entry back to the source that harvested it: its next harvest
/// writes the source's values over it again. Its suggestions go.
pub async fn release(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    via: Via,
    id: &str,
) -> Result<Written> {
    let state: Entries<'_> = state.into();
    if actor.role != Role::Operator {
        return Err(Error::forbidden());
    }
    let mut turn = WriteTurn::begin(state.store, Some(state.live)).await?;
    let current = entry(turn.conn(), id).await?;
    let Some(claim) = claim_of(turn.conn(), &current.id).await? else {
        return Err(Error::Conflict {
            code: "not_claimed",
            detail:
                "cette fiche n'est revendiquée par aucune organisation / this entry is not claimed"
                    .into(),
        });
    };
    let now = Utc::now();
    store::reassign(
        turn.conn(),
        &current.id,
        &claim.origin_source_id,
        &claim.origin_ref,
        now,
    )
    .await?;
    for table in ["suggestions", "claims"] {
        in_tx!(turn.conn(), |conn| sqlx::query(&format!(
            "DELETE FROM {table} WHERE service_id = $1"
        ))
        .bind(current.id.as_str())
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    }
    let change_id = record_signature(turn.conn(), actor, via, &current, "released", now).await?;
    turn.commit().await?;
    write::written(state, &current.id, change_id).await
}

/// Records a change of who signs the entry (its content stays) in its history.
async fn record_signature(
    tx: &mut Tx,
    actor: &Actor,
    via: Via,
    current: &Service,
    action: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    let (actor_kind, actor_id) = actor.history_ref();
    let version = Version::of_service(current);
    let change_id = history::record(
        tx,
        history::Record {
            service_id: &current.id,
            at: now,
            actor_kind,
            actor_id,
            via,
            action,
            previous: Some(&version),
            next: &version,
        },
    )
    .await?;
    Ok(Some(change_id))
}

/// A claimed entry's origin and its suggestions, for whoever may read the entry.
pub struct Suggestions {
    pub service: Service,
    pub claim: Option<Claim>,
    /// Pending first, then dismissed; by field order.
    pub suggestions: Vec<Suggestion>,
}

pub async fn suggestions_of(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    id: &str,
) -> Result<Suggestions> {
    let state: Entries<'_> = state.into();
    let mut tx = state.store.begin().await?;
    let service = write::entry_for(&mut tx, actor, id, Action::ReadEntry).await?;
    let claim = claim_of(&mut tx, &service.id).await?;
    let mut suggestions: Vec<Suggestion> = in_tx!(&mut tx, |conn| {
        sqlx::query_as(
        "SELECT field, value, suggested_at, dismissed_at FROM suggestions WHERE service_id = $1",
    )
    .bind(service.id.as_str())
    .fetch_all(conn).await
    })?;
    let order = |field: &str| SUGGESTED_FIELDS.iter().position(|(f, _)| *f == field);
    suggestions.sort_by_key(|s| (s.dismissed_at.is_some(), order(&s.field)));
    Ok(Suggestions {
        service,
        claim,
        suggestions,
    })
}

/// The organisation takes the source's value for `field`: a change of the entry like any
/// other (in its history), after which the suggestion is settled.
pub async fn accept(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    via: Via,
    id: &str,
    field: &str,
) -> Result<Written> {
    let state: Entries<'_> = state.into();
    let found = suggestions_of(state, actor, id).await?;
    let Some(suggestion) = found.suggestions.iter().find(|s| s.field == field) else {
        return Err(Error::not_found("suggestion", field));
    };
    let mut fields = Map::new();
    match suggestion
        .value
        .split_once(',')
        .filter(|_| field == "position")
    {
        Some((lon, lat)) => {
            fields.insert("lon".into(), Value::String(lon.to_owned()));
            fields.insert("lat".into(), Value::String(lat.to_owned()));
        }
        None => {
            fields.insert(field.to_owned(), Value::String(suggestion.value.clone()));
        }
    }
    let tag = write::etag(&found.service);
    let written = write::update(state, actor, via, id, Some(&tag), &fields).await?;
    if written.change_id.is_none() {
        // Nothing to change: the entry already said it, so the suggestion had no object.
        on_engine!(&state.store, |db| sqlx::query(
            "DELETE FROM suggestions WHERE service_id = $1 AND field = $2"
        )
        .bind(found.service.id.as_str())
        .bind(field)
        .execute(db)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(written)
}

/// The organisation keeps its own value for `field`: the suggestion is dismissed until the
/// source says something else.
pub async fn dismiss(
    state: impl Into<Entries<'_>>,
    actor: &Actor,
    id: &str,
    field: &str,
) -> Result<()> {
    let state: Entries<'_> = state.into();
    let found = suggestions_of(state, actor, id).await?;
    can(
        actor,
        Action::UpdateEntry,
        Target::Entry {
            organisation: &found.service.source_id,
            commune: state
                .reference
                .locator
                .commune(&found.service.content.insee_code),
        },
    )?;
    let done = on_engine!(&state.store, |db| {
        sqlx::query(
        "UPDATE suggestions SET dismissed_at = $3 WHERE service_id = $1 AND field = $2 AND dismissed_at IS NULL",
    )
    .bind(found.service.id.as_str())
    .bind(field)
    .bind(Utc::now())
    .execute(db).await.map(|r| r.rows_affected())
    })?;
    if done == 0 && !found.suggestions.iter().any(|s| s.field == field) {
        return Err(Error::not_found("suggestion", field));
    }
    Ok(())
}

/// A harvested entry an organisation may claim, as its lists show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimable {
    pub id: String,
    pub name: String,
    pub typology_code: String,
    pub insee_code: String,
    pub source_name: String,
}

/// The published entries of national sources in `communes` among `ids` (found in the live
/// index by territory and typology): at most `limit`, by name.
pub async fn claimable_among(
    store: &Store,
    ids: &[String],
    limit: usize,
) -> Result<Vec<Claimable>> {
    let national: Vec<&str> = National::ALL.iter().map(|n| n.source()).collect();
    let mut found = Vec::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<Claimable> = on_engine!(store, |db| {
            let mut q = crate::db::builder(
                db,
                "SELECT s.id, s.name, s.typology_code, s.insee_code, o.name AS source_name
             FROM services s JOIN organisations o ON o.id = s.source_id
             WHERE s.status = 'published' AND o.name IN (",
            );
            let mut names = q.separated(", ");
            for name in &national {
                names.push_bind(*name);
            }
            q.push(") AND s.id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            q.push(")");
            q.build_query_as().fetch_all(db).await?
        });
        found.extend(rows);
    }
    found.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    found.truncate(limit);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(name: &str, phone: &str, lon: f64) -> Content {
        Content {
            typology: "mairie".into(),
            name: name.into(),
            description: None,
            street: None,
            postcode: None,
            city: None,
            insee_code: crate::territory::InseeCode::parse("63113").unwrap(),
            location: crate::spatial::LonLat { lon, lat: 45.77 },
            phones: crate::services::Phone::parse(phone).into_iter().collect(),
            email: None,
            website: None,
            opening_hours: None,
            closures: Vec::new(),
            wheelchair: crate::services::Wheelchair::Unknown,
            wheelchair_note: None,
            quality: Vec::new(),
        }
    }

    #[test]
    fn a_source_suggests_what_it_says_differently_and_nothing_it_leaves_out() {
        let mine = content("Mairie de Clermont-Ferrand", "+33473421001", 3.0800);
        let same = content("Mairie de Clermont-Ferrand", "+33473421001", 3.08005);
        assert!(
            proposals(&mine, &same).is_empty(),
            "4 m apart is the same place"
        );
        let theirs = content("Hôtel de ville", "", 3.09);
        let proposed = proposals(&mine, &theirs);
        let fields: Vec<&str> = proposed.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["name", "position"]);
        assert_eq!(proposed[0].1, "Hôtel de ville");
        let mut settled = mine.clone();
        settled.name = "Hôtel de ville".into();
        assert!(agrees(&content_draft(&settled), "name", "Hôtel de ville"));
    }
}
