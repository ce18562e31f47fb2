//! SQL of the entries and of the organisations that source them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, SqliteConnection};

use super::{Closure, Content, Phone, Service, ServiceId, Status, Wheelchair};
use crate::db::{Db, Pool};
use crate::error::Result;
use crate::spatial::LonLat;
use crate::territory::InseeCode;

/// Rows per multi-row upsert: 24 parameters each, under SQLite's 32,766.
pub const UPSERT_CHUNK: usize = 1_000;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Organisation {
    pub id: String,
    pub name: String,
}

/// The organisation called `name`, created (kind `other`) when it does not exist yet.
pub async fn organisation_named(conn: &mut SqliteConnection, name: &str) -> Result<Organisation> {
    if let Some(found) =
        sqlx::query_as::<_, Organisation>("SELECT id, name FROM organisations WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
    {
        return Ok(found);
    }
    let organisation = Organisation {
        id: format!("org-{}", ServiceId::generate()),
        name: name.to_owned(),
    };
    sqlx::query(
        "INSERT INTO organisations (id, name, kind, created_at) VALUES ($1, $2, 'other', $3)",
    )
    .bind(&organisation.id)
    .bind(&organisation.name)
    .bind(Utc::now())
    .execute(&mut *conn)
    .await?;
    Ok(organisation)
}

/// What the database already holds for one source_ref.
#[derive(Debug, Clone)]
pub struct Known {
    pub id: ServiceId,
    pub digest: String,
    pub published: bool,
}

/// Every entry of a source, by source_ref: lets an import classify rows without a query per row.
pub async fn known_for_source(pool: &Pool, source_id: &str) -> Result<HashMap<String, Known>> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT source_ref, id, content_hash, status FROM services WHERE source_id = $1",
    )
    .bind(source_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(source_ref, id, digest, status)| {
            (
                source_ref,
                Known {
                    id: ServiceId(id),
                    digest,
                    published: status == "published",
                },
            )
        })
        .collect())
}

/// One entry to create or update, keyed by (source, source_ref).
#[derive(Debug, Clone)]
pub struct Upsert {
    pub id: ServiceId,
    pub source_ref: String,
    pub digest: String,
    pub content: Content,
    pub verified_at: Option<DateTime<Utc>>,
}

fn phones_json(phones: &[Phone]) -> String {
    serde_json::to_string(&phones.iter().map(Phone::e164).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

/// Creates or updates published entries of one source. An update keeps the entry's id, creation
/// date and, unless the row brings a newer one, its verification date.
pub async fn upsert(
    conn: &mut SqliteConnection,
    source_id: &str,
    rows: &[Upsert],
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in rows.chunks(UPSERT_CHUNK) {
        let mut q = QueryBuilder::<Db>::new(
            "INSERT INTO services (id, typology_code, name, description, street, postcode, city, insee_code,
             lon, lat, phones, email, website, opening_hours, closures, wheelchair, wheelchair_note,
             source_id, source_ref, status, verified_at, created_at, updated_at, content_hash) ",
        );
        q.push_values(chunk, |mut b, row| {
            let c = &row.content;
            b.push_bind(row.id.as_str())
                .push_bind(&c.typology)
                .push_bind(&c.name)
                .push_bind(&c.description)
                .push_bind(&c.street)
                .push_bind(&c.postcode)
                .push_bind(&c.city)
                .push_bind(c.insee_code.as_str())
                .push_bind(c.location.lon)
                .push_bind(c.location.lat)
                .push_bind(phones_json(&c.phones))
                .push_bind(&c.email)
                .push_bind(&c.website)
                .push_bind(&c.opening_hours)
                .push_bind(serde_json::to_string(&c.closures).unwrap_or_else(|_| "[]".into()))
                .push_bind(c.wheelchair.as_str())
                .push_bind(&c.wheelchair_note)
                .push_bind(source_id)
                .push_bind(&row.source_ref)
                .push_bind(Status::Published.as_str())
                .push_bind(row.verified_at)
                .push_bind(now)
                .push_bind(now)
                .push_bind(&row.digest);
        });
        q.push(
            " ON CONFLICT (source_id, source_ref) DO UPDATE SET typology_code = excluded.typology_code,
              name = excluded.name, description = excluded.description, street = excluded.street,
              postcode = excluded.postcode, city = excluded.city, insee_code = excluded.insee_code,
              lon = excluded.lon, lat = excluded.lat, phones = excluded.phones, email = excluded.email,
              website = excluded.website, opening_hours = excluded.opening_hours,
              closures = excluded.closures, wheelchair = excluded.wheelchair,
              wheelchair_note = excluded.wheelchair_note, status = excluded.status,
              verified_at = COALESCE(excluded.verified_at, services.verified_at),
              updated_at = excluded.updated_at, content_hash = excluded.content_hash",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ServiceRecord {
    id: String,
    typology_code: String,
    name: String,
    description: Option<String>,
    street: Option<String>,
    postcode: Option<String>,
    city: Option<String>,
    insee_code: String,
    lon: f64,
    lat: f64,
    phones: String,
    email: Option<String>,
    website: Option<String>,
    opening_hours: Option<String>,
    closures: String,
    wheelchair: String,
    wheelchair_note: Option<String>,
    source_id: String,
    source_name: String,
    source_ref: String,
    status: String,
    verified_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ServiceRecord> for Service {
    type Error = anyhow::Error;
    fn try_from(r: ServiceRecord) -> anyhow::Result<Self> {
        let phones: Vec<String> = serde_json::from_str(&r.phones)?;
        let closures: Vec<Closure> = serde_json::from_str(&r.closures)?;
        Ok(Service {
            id: ServiceId(r.id),
            content: Content {
                typology: r.typology_code,
                name: r.name,
                description: r.description,
                street: r.street,
                postcode: r.postcode,
                city: r.city,
                insee_code: InseeCode::parse(&r.insee_code).map_err(anyhow::Error::msg)?,
                location: LonLat::new(r.lon, r.lat),
                phones: phones
                    .iter()
                    .map(|p| Phone::parse(p).map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?,
                email: r.email,
                website: r.website,
                opening_hours: r.opening_hours,
                closures,
                wheelchair: Wheelchair::parse(&r.wheelchair).map_err(anyhow::Error::msg)?,
                wheelchair_note: r.wheelchair_note,
            },
            source_id: r.source_id,
            source_name: r.source_name,
            source_ref: r.source_ref,
            status: Status::parse(&r.status)
                .ok_or_else(|| anyhow::anyhow!("statut inconnu {}", r.status))?,
            verified_at: r.verified_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub async fn get(pool: &Pool, id: &ServiceId) -> Result<Option<Service>> {
    let record: Option<ServiceRecord> = sqlx::query_as(
        "SELECT s.*, o.name AS source_name FROM services s
         JOIN organisations o ON o.id = s.source_id WHERE s.id = $1",
    )
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(record.map(Service::try_from).transpose()?)
}

pub async fn count(pool: &Pool) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM services")
        .fetch_one(pool)
        .await?;
    Ok(n)
}

pub async fn published_in_commune(pool: &Pool, code: &InseeCode) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM services WHERE insee_code = $1 AND status = 'published'",
    )
    .bind(code.as_str())
    .fetch_one(pool)
    .await?;
    Ok(n)
}
