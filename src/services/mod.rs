//! Directory entries ("fiches"): their model, validation, storage and read API.

pub mod api;
pub mod bulk;
pub mod cache;
pub mod claims;
pub mod copy;
pub mod duplicates;
pub mod history;
pub mod hours;
pub mod phone;
pub mod quality;
pub mod routes;
pub mod store;
pub mod turn;
pub mod upload;
pub mod validate;
pub mod write;

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::spatial::LonLat;
use crate::territory::InseeCode;
pub use phone::Phone;
pub use validate::{Draft, Validator};

/// An entry's identifier: 16 lowercase base-32 characters, URL-safe, never reused. The first ten
/// encode the creation millisecond and the last six a counter started at random each millisecond
/// (as ULIDs do): ids sort by creation, and a bulk import appends to the primary-key index
/// instead of writing all over it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceId(pub(crate) String);

pub const ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const ID_LEN: usize = 16;

impl ServiceId {
    pub fn generate() -> Self {
        static LAST: std::sync::Mutex<(u64, u64)> = std::sync::Mutex::new((0, 0));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (ms, counter) = {
            let mut last = LAST
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if now_ms > last.0 {
                *last = (now_ms, rand::thread_rng().gen_range(0..1 << 29));
            } else if last.1 + 1 >= 1 << 30 {
                *last = (last.0 + 1, rand::thread_rng().gen_range(0..1 << 29));
            } else {
                last.1 += 1;
            }
            *last
        };
        let mut id = String::with_capacity(ID_LEN);
        for shift in (0..10).rev() {
            id.push(ID_ALPHABET[((ms >> (shift * 5)) & 31) as usize] as char);
        }
        for shift in (0..6).rev() {
            id.push(ID_ALPHABET[((counter >> (shift * 5)) & 31) as usize] as char);
        }
        Self(id)
    }

    /// An id read from a URL: only the shape is checked, existence is the store's business.
    pub fn parse(value: &str) -> Option<Self> {
        (value.len() == ID_LEN && value.bytes().all(|b| ID_ALPHABET.contains(&b)))
            .then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Wheelchair {
    Yes,
    Limited,
    No,
    #[default]
    Unknown,
}

impl Wheelchair {
    pub fn parse(value: &str) -> Result<Self, String> {
        match crate::text::fold(value).as_str() {
            "" | "unknown" | "inconnu" | "inconnue" | "nc" => Ok(Self::Unknown),
            "yes" | "oui" | "true" | "1" => Ok(Self::Yes),
            "limited" | "limite" | "partiel" | "partielle" | "partial" => Ok(Self::Limited),
            "no" | "non" | "false" | "0" => Ok(Self::No),
            _ => Err(format!("« {value} » : valeurs admises yes, limited, no, unknown (ou oui, partiel, non, inconnu)")),
        }
    }

    /// The value as stored (`as_str`), without the folding `parse` does for people's input;
    /// anything else is read as `parse` reads it.
    pub fn from_stored(value: &str) -> Self {
        match value {
            "yes" => Self::Yes,
            "limited" => Self::Limited,
            "no" => Self::No,
            "unknown" => Self::Unknown,
            other => Self::parse(other).unwrap_or_default(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::Limited => "limited",
            Self::No => "no",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Draft,
    Published,
    Withdrawn,
    /// The same service as another entry, shown in its place (see `duplicates`): kept,
    /// hidden from citizens.
    Duplicate,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
            Self::Withdrawn => "withdrawn",
            Self::Duplicate => "duplicate",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "draft" => Some(Self::Draft),
            "published" => Some(Self::Published),
            "withdrawn" => Some(Self::Withdrawn),
            "duplicate" => Some(Self::Duplicate),
            _ => None,
        }
    }
}

/// A dated temporary closure (works, holidays of the staff…), both days included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Closure {
    pub from: NaiveDate,
    pub to: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The validated content of an entry: everything its source states about the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub typology: String,
    pub name: String,
    pub description: Option<String>,
    pub street: Option<String>,
    pub postcode: Option<String>,
    pub city: Option<String>,
    pub insee_code: InseeCode,
    pub location: LonLat,
    pub phones: Vec<Phone>,
    pub email: Option<String>,
    pub website: Option<String>,
    pub opening_hours: Option<String>,
    pub closures: Vec<Closure>,
    pub wheelchair: Wheelchair,
    pub wheelchair_note: Option<String>,
    /// What is doubtful in the entry (empty for a clean one).
    pub quality: Vec<quality::QualityFlag>,
}

impl Content {
    /// A stable digest of the content, to tell an update from an unchanged row on re-import.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |value: &str| {
            h.update(value.as_bytes());
            h.update([0x1f]);
        };
        field(&self.typology);
        field(&self.name);
        field(self.description.as_deref().unwrap_or(""));
        field(self.street.as_deref().unwrap_or(""));
        field(self.postcode.as_deref().unwrap_or(""));
        field(self.city.as_deref().unwrap_or(""));
        field(self.insee_code.as_str());
        field(&format!(
            "{:.7},{:.7}",
            self.location.lon, self.location.lat
        ));
        for phone in &self.phones {
            field(phone.e164());
        }
        field("|");
        field(self.email.as_deref().unwrap_or(""));
        field(self.website.as_deref().unwrap_or(""));
        field(self.opening_hours.as_deref().unwrap_or(""));
        field(&serde_json::to_string(&self.closures).unwrap_or_default());
        field(self.wheelchair.as_str());
        field(self.wheelchair_note.as_deref().unwrap_or(""));
        // Only when there are some: the digests of clean entries stay those of earlier releases.
        if !self.quality.is_empty() {
            field(&serde_json::to_string(&self.quality).unwrap_or_default());
        }
        // 64 bits: the digest is only ever compared with the same entry's previous one.
        hex::encode(&h.finalize()[..8])
    }
}

/// A stored entry with its bookkeeping.
#[derive(Debug, Clone)]
pub struct Service {
    pub id: ServiceId,
    pub content: Content,
    pub source_id: String,
    pub source_name: String,
    pub source_ref: String,
    pub status: Status,
    pub verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_url_safe_and_parse_back() {
        let id = ServiceId::generate();
        assert_eq!(id.as_str().len(), 16);
        assert_eq!(ServiceId::parse(id.as_str()), Some(id.clone()));
        let later: Vec<ServiceId> = (0..10_000).map(|_| ServiceId::generate()).collect();
        assert!(
            later.windows(2).all(|w| w[0].as_str() < w[1].as_str()),
            "ids sort by creation"
        );
        assert!(id.as_str() < later[0].as_str());
        assert_eq!(ServiceId::parse("../etc/passwd"), None);
    }

    #[test]
    fn wheelchair_values() {
        assert_eq!(Wheelchair::parse("Oui").unwrap(), Wheelchair::Yes);
        assert_eq!(Wheelchair::parse("limité").unwrap(), Wheelchair::Limited);
        assert_eq!(Wheelchair::parse("").unwrap(), Wheelchair::Unknown);
        assert!(Wheelchair::parse("maybe").is_err());
    }
}
