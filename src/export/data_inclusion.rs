//! The directory as data·inclusion *structures* (schema 1.x, the national inclusion platform's
//! that feeds DORA and regional guides): `GET /api/v1/export/data-inclusion/structures.json`.
//! Every published entry whose required fields the schema can take is one structure; the others
//! are left out and counted in the `X-Left-Out` header.

use std::io::Write;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{json, Map, Value};
use sqlx::sqlite::LockedSqliteHandle;

use super::{store, Lookup, Row, Selection};
use crate::admission::PublicBase;
use crate::error::Result;
use crate::state::AppState;

/// The producer named in every record's `source` and `id`.
pub const SOURCE: &str = "proximites";

/// A name data·inclusion takes: between 3 and 150 characters.
fn acceptable_name(name: &str) -> bool {
    (3..=150).contains(&name.chars().count())
}

/// The structure of `row`, or `None` when a required field cannot be given (counted).
pub fn structure(row: &Row<'_>, base: &str) -> Option<Value> {
    let name = row.name.trim();
    if !acceptable_name(name) {
        return None;
    }
    let date = row.updated_at.get(..10)?;
    // The schema refuses a date in the future: a clock ahead of the reader's is not one.
    if date > Utc::now().date_naive().to_string().as_str() {
        return None;
    }
    let mut record = Map::new();
    let mut put = |key: &str, value: Value| {
        record.insert(key.to_owned(), value);
    };
    put("source", json!(SOURCE));
    put("id", json!(format!("{SOURCE}--{}", row.id)));
    put("nom", json!(name));
    put("date_maj", json!(date));
    put("lien_source", json!(format!("{base}/services/{}", row.id)));
    put("code_insee", json!(row.insee_code));
    put("longitude", json!(row.lon));
    put("latitude", json!(row.lat));
    let mut optional = |key: &str, value: Option<&str>| {
        if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
            record.insert(key.to_owned(), json!(v));
        }
    };
    optional("adresse", row.street);
    optional(
        "code_postal",
        row.postcode
            .filter(|p| p.len() == 5 && p.bytes().all(|b| b.is_ascii_digit())),
    );
    optional("commune", row.city);
    optional("courriel", row.email);
    optional("site_web", row.website);
    optional("horaires_accueil", row.opening_hours);
    optional(
        "description",
        row.description
            .filter(|d| (5..=10_000).contains(&d.chars().count())),
    );
    let phones: Vec<String> = serde_json::from_str(row.phones_json).unwrap_or_default();
    optional("telephone", phones.first().map(String::as_str));
    Some(Value::Object(record))
}

/// Writes every published entry of `selection` as a JSON array of structures; returns
/// (written, left out).
pub fn write_structures(
    handle: &mut LockedSqliteHandle<'_>,
    lookup: &Lookup,
    selection: &Selection,
    base: &str,
    out: &mut impl Write,
) -> anyhow::Result<(u64, u64)> {
    let (mut written, mut left_out) = (0u64, 0u64);
    out.write_all(b"[")?;
    store::scan(handle, lookup, selection, store::Order::Storage, |row| {
        match structure(row, base) {
            Some(record) => {
                if written > 0 {
                    out.write_all(b",\n")?;
                }
                serde_json::to_writer(&mut *out, &record)?;
                written += 1;
            }
            None => left_out += 1,
        }
        Ok(true)
    })?;
    out.write_all(b"]\n")?;
    Ok((written, left_out))
}

/// Every published entry as a data·inclusion structure (schema 1.x), in one JSON array.
/// Entries the schema cannot take (a name under 3 or over 150 characters) are left out; their
/// number is in `X-Left-Out`.
#[utoipa::path(get, path = "/api/v1/export/data-inclusion/structures.json", tag = "export",
    responses((status = 200, description = "Structures data·inclusion (JSON)", content_type = "application/json")))]
pub(crate) async fn structures(
    State(state): State<AppState>,
    PublicBase(base): PublicBase,
) -> Result<Response> {
    let reference = state.reference.clone();
    // Written to a file first: the connection is given back before a slow client reads.
    let temp = tempfile::NamedTempFile::new_in(std::env::temp_dir())
        .map_err(anyhow::Error::from)?
        .into_temp_path();
    let target = temp.to_path_buf();
    let (written, left_out) = store::with_connection(&state.pool, move |handle| {
        let lookup = store::lookup(handle, &reference)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&target)?);
        let counts = write_structures(handle, &lookup, &Selection::default(), &base, &mut out)?;
        out.flush()?;
        Ok(counts)
    })
    .await?;
    let path = temp.to_path_buf();
    let (body, length) = super::routes::file_body(&path, temp).await?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert("x-written", HeaderValue::from(written));
    headers.insert("x-left-out", HeaderValue::from(left_out));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(response)
}
