//! The history of entries: one row per change, who made it and how, each field's old and new
//! value, and the whole version before it so that any earlier version can be restored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{Closure, Content, Phone, Service, ServiceId, Status, Wheelchair};
use crate::db::{Store, Tx};
use crate::error::Result;
use crate::spatial::LonLat;
use crate::territory::InseeCode;
use crate::{in_tx, on_engine};

/// How a change reached the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Page,
    Api,
    Import,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Page => "page",
            Via::Api => "api",
            Via::Import => "import",
        }
    }
}

/// An entry's content and state at one moment, as the history keeps it (stored values: E.164
/// phones, normalised hours).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Version {
    pub typology: String,
    pub name: String,
    pub description: Option<String>,
    pub street: Option<String>,
    pub postcode: Option<String>,
    pub city: Option<String>,
    pub insee_code: String,
    pub lon: f64,
    pub lat: f64,
    pub phones: Vec<String>,
    pub email: Option<String>,
    pub website: Option<String>,
    pub opening_hours: Option<String>,
    pub closures: Vec<Closure>,
    pub wheelchair: String,
    pub wheelchair_note: Option<String>,
    /// Absent from versions written before quality flags existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<super::quality::QualityFlag>,
    pub status: Status,
    pub verified_at: Option<DateTime<Utc>>,
}

impl Version {
    pub fn of(content: &Content, status: Status, verified_at: Option<DateTime<Utc>>) -> Self {
        Version {
            typology: content.typology.clone(),
            name: content.name.clone(),
            description: content.description.clone(),
            street: content.street.clone(),
            postcode: content.postcode.clone(),
            city: content.city.clone(),
            insee_code: content.insee_code.to_string(),
            lon: content.location.lon,
            lat: content.location.lat,
            phones: content.phones.iter().map(|p| p.e164().to_owned()).collect(),
            email: content.email.clone(),
            website: content.website.clone(),
            opening_hours: content.opening_hours.clone(),
            closures: content.closures.clone(),
            wheelchair: content.wheelchair.as_str().to_owned(),
            wheelchair_note: content.wheelchair_note.clone(),
            quality: content.quality.clone(),
            status,
            verified_at,
        }
    }

    pub fn of_service(service: &Service) -> Self {
        Self::of(&service.content, service.status, service.verified_at)
    }

    /// The content this version states; stored values parse back, else the version is damaged.
    pub fn content(&self) -> anyhow::Result<Content> {
        Ok(Content {
            typology: self.typology.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            street: self.street.clone(),
            postcode: self.postcode.clone(),
            city: self.city.clone(),
            insee_code: InseeCode::parse(&self.insee_code).map_err(anyhow::Error::msg)?,
            location: LonLat::new(self.lon, self.lat),
            phones: self
                .phones
                .iter()
                .map(|p| Phone::parse(p).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()?,
            email: self.email.clone(),
            website: self.website.clone(),
            opening_hours: self.opening_hours.clone(),
            closures: self.closures.clone(),
            wheelchair: Wheelchair::from_stored(&self.wheelchair),
            wheelchair_note: self.wheelchair_note.clone(),
            quality: self.quality.clone(),
        })
    }
}

/// Each field that differs between two versions: `{"field": {"old": …, "new": …}}`.
pub fn changes(old: Option<&Version>, new: &Version) -> Map<String, Value> {
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    let old = old
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or(Value::Null);
    let mut out = Map::new();
    if let Value::Object(fields) = new {
        for (field, value) in fields {
            let before = old.get(&field).cloned().unwrap_or(Value::Null);
            if before != value {
                let mut pair = Map::new();
                pair.insert("old".into(), before);
                pair.insert("new".into(), value);
                out.insert(field, Value::Object(pair));
            }
        }
    }
    out
}

/// One change to record.
pub struct Record<'a> {
    pub service_id: &'a ServiceId,
    pub at: DateTime<Utc>,
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub via: Via,
    pub action: &'a str,
    pub previous: Option<&'a Version>,
    pub next: &'a Version,
}

/// Records a change, in the caller's transaction; returns the history row's id.
pub async fn record(tx: &mut Tx, change: Record<'_>) -> Result<String> {
    let id = ServiceId::generate().to_string();
    let changes = changes(change.previous, change.next);
    in_tx!(tx, |conn| sqlx::query(
        "INSERT INTO service_history (service_id, id, at, actor_kind, actor_id, via, action,
         changes, previous) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(change.service_id.as_str())
    .bind(&id)
    .bind(change.at)
    .bind(change.actor_kind)
    .bind(change.actor_id)
    .bind(change.via.as_str())
    .bind(change.action)
    .bind(serde_json::to_string(&changes).map_err(anyhow::Error::from)?)
    .bind(
        change
            .previous
            .map(serde_json::to_string)
            .transpose()
            .map_err(anyhow::Error::from)?,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(id)
}

/// Who made a change, as the history shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActorView {
    /// `user`, `token` or `import`.
    pub kind: String,
    pub id: String,
    /// The person's e-mail, the token's name, or the imported file's name.
    pub label: Option<String>,
}

/// One change of an entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Change {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: ActorView,
    pub via: Via,
    /// created, updated, withdrawn, restored, confirmed.
    pub action: String,
    /// Each changed field's old and new value; absent for the compact rows of a bulk import
    /// creating entries.
    #[schema(value_type = Object)]
    pub changes: Option<Value>,
    /// The whole entry before this change (restorable); absent for a creation.
    pub previous: Option<Version>,
}

#[derive(sqlx::FromRow)]
struct ChangeRecord {
    id: String,
    at: DateTime<Utc>,
    actor_kind: String,
    actor_id: String,
    via: String,
    action: String,
    changes: Option<String>,
    previous: Option<String>,
    label: Option<String>,
}

impl TryFrom<ChangeRecord> for Change {
    type Error = anyhow::Error;
    fn try_from(r: ChangeRecord) -> anyhow::Result<Self> {
        Ok(Change {
            id: r.id,
            at: r.at,
            actor: ActorView {
                kind: r.actor_kind,
                id: r.actor_id,
                label: r.label,
            },
            via: match r.via.as_str() {
                "page" => Via::Page,
                "api" => Via::Api,
                _ => Via::Import,
            },
            action: r.action,
            changes: r.changes.as_deref().map(serde_json::from_str).transpose()?,
            previous: r
                .previous
                .as_deref()
                .map(serde_json::from_str)
                .transpose()?,
        })
    }
}

const SELECT_CHANGES: &str = "SELECT h.id, h.at, h.actor_kind, h.actor_id, h.via, h.action,
    h.changes, h.previous,
    COALESCE(u.email, t.name,
        i.file_name || COALESCE(' (' || COALESCE(iu.email, it.name) || ')', '')) AS label
    FROM service_history h
    LEFT JOIN users u ON h.actor_kind = 'user' AND u.id = h.actor_id
    LEFT JOIN api_tokens t ON h.actor_kind = 'token' AND t.id = h.actor_id
    LEFT JOIN imports i ON h.actor_kind = 'import' AND i.id = h.actor_id
    LEFT JOIN users iu ON i.started_by = 'user:' || iu.id
    LEFT JOIN api_tokens it ON i.started_by = 'token:' || it.id";

/// The changes of an entry, most recent first.
pub async fn of_entry(store: &Store, id: &ServiceId) -> Result<Vec<Change>> {
    let records: Vec<ChangeRecord> = on_engine!(store, |db| sqlx::query_as(&format!(
        "{SELECT_CHANGES} WHERE h.service_id = $1 ORDER BY h.id DESC"
    ))
    .bind(id.as_str())
    .fetch_all(db)
    .await)?;
    Ok(records
        .into_iter()
        .map(Change::try_from)
        .collect::<anyhow::Result<_>>()?)
}

/// One change of an entry.
pub async fn change(
    tx: &mut Tx,
    service_id: &ServiceId,
    change_id: &str,
) -> Result<Option<Change>> {
    let record: Option<ChangeRecord> = in_tx!(tx, |conn| sqlx::query_as(&format!(
        "{SELECT_CHANGES} WHERE h.service_id = $1 AND h.id = $2"
    ))
    .bind(service_id.as_str())
    .bind(change_id)
    .fetch_optional(conn)
    .await)?;
    Ok(record.map(Change::try_from).transpose()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_each_field_with_old_and_new() {
        let content = Content {
            typology: "mairie".into(),
            name: "Mairie".into(),
            description: None,
            street: None,
            postcode: None,
            city: None,
            insee_code: InseeCode::parse("63113").unwrap(),
            location: LonLat::new(3.08, 45.77),
            phones: vec![],
            email: None,
            website: None,
            opening_hours: None,
            closures: vec![],
            wheelchair: Wheelchair::Unknown,
            wheelchair_note: None,
            quality: vec![],
        };
        let old = Version::of(&content, Status::Published, None);
        let mut new = old.clone();
        new.name = "Hôtel de ville".into();
        new.email = Some("mairie@example.fr".into());
        let diff = changes(Some(&old), &new);
        assert_eq!(diff.len(), 2);
        assert_eq!(diff["name"]["old"], "Mairie");
        assert_eq!(diff["name"]["new"], "Hôtel de ville");
        assert_eq!(diff["email"]["old"], Value::Null);
        assert_eq!(old.content().unwrap(), content);
        // A creation lists every field that has a value as new.
        let created = changes(None, &new);
        assert_eq!(created["name"]["new"], "Hôtel de ville");
        assert!(!created.contains_key("description"));
    }
}
