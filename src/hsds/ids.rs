//! HSDS identifiers: stable UUIDs derived from Proximités' ids. An entry's or organisation's
//! 80-bit id is carried whole in a UUIDv8 (RFC 9562, custom layout) with a kind, so a UUID read
//! from a URL leads back to the row without a lookup table; the parts HSDS nests (phones,
//! schedules, addresses, taxonomy terms) get name-based UUIDv5s, stable but one-way.

use uuid::Uuid;

use crate::services::ID_ALPHABET;

/// The 16 bits every Proximités UUIDv8 starts its payload with ("Px").
const MARKER: u128 = 0x5078;
const ID_CHARS: usize = 16;
const ID_BITS: u32 = 80;

/// What a reversible UUID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Service = 1,
    Organization = 2,
    Location = 3,
    ServiceAtLocation = 4,
    Address = 5,
}

/// The namespace of the name-based UUIDs (itself a UUIDv5 of the project's name in the URL
/// namespace).
fn namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://proximites.fr/hsds")
}

/// A stable UUID for `name` (a nested part, a taxonomy term).
pub fn named(name: &str) -> Uuid {
    Uuid::new_v5(&namespace(), name.as_bytes())
}

/// The 80 bits of a 16-character id of the id alphabet.
fn id_bits(id: &str) -> Option<u128> {
    if id.len() != ID_CHARS {
        return None;
    }
    id.bytes().try_fold(0u128, |bits, b| {
        let digit = ID_ALPHABET.iter().position(|&a| a == b)?;
        Some(bits << 5 | digit as u128)
    })
}

fn id_text(mut bits: u128) -> String {
    let mut chars = [0u8; ID_CHARS];
    for c in chars.iter_mut().rev() {
        *c = ID_ALPHABET[(bits & 31) as usize];
        bits >>= 5;
    }
    String::from_utf8_lossy(&chars).into_owned()
}

/// The 122 free bits of a UUIDv8 laid out around its version and variant bits.
fn v8(payload: u128) -> Uuid {
    let c = payload & ((1 << 62) - 1);
    let b = (payload >> 62) & 0xfff;
    let a = payload >> 74;
    Uuid::from_u128(a << 80 | 8 << 76 | b << 64 | 0b10 << 62 | c)
}

fn payload(uuid: &Uuid) -> Option<u128> {
    let raw = uuid.as_u128();
    if (raw >> 76) & 0xf != 8 || (raw >> 62) & 0b11 != 0b10 {
        return None;
    }
    let c = raw & ((1 << 62) - 1);
    let b = (raw >> 64) & 0xfff;
    let a = raw >> 80;
    Some(a << 74 | b << 62 | c)
}

/// The UUID of `kind` for an entry id (16 characters); a name-based one for any other id.
pub fn of_entry(kind: Kind, id: &str) -> Uuid {
    match id_bits(id) {
        Some(bits) => v8(MARKER << 106 | (kind as u128) << 98 | bits),
        None => named(&format!("{}:{id}", kind as u8)),
    }
}

/// The UUID of an organisation (`org-` and 16 characters).
pub fn of_organisation(id: &str) -> Uuid {
    match id.strip_prefix("org-") {
        Some(rest) if id_bits(rest).is_some() => of_entry(Kind::Organization, rest),
        _ => named(&format!("organisation:{id}")),
    }
}

/// The entry id a UUID of `kind` carries.
pub fn entry_id(uuid: &Uuid, kind: Kind) -> Option<String> {
    let payload = payload(uuid)?;
    if payload >> 106 != MARKER || (payload >> 98) & 0xff != kind as u128 {
        return None;
    }
    if (payload >> ID_BITS) & ((1 << 18) - 1) != 0 {
        return None;
    }
    Some(id_text(payload & ((1 << ID_BITS) - 1)))
}

/// The organisation id a UUID carries.
pub fn organisation_id(uuid: &Uuid) -> Option<String> {
    entry_id(uuid, Kind::Organization).map(|id| format!("org-{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_come_back_and_kinds_stay_apart() {
        let id = "01m92ka6wd8mpmeb";
        let service = of_entry(Kind::Service, id);
        assert_eq!(service.get_version_num(), 8);
        assert_eq!(entry_id(&service, Kind::Service).as_deref(), Some(id));
        assert_eq!(entry_id(&service, Kind::Location), None);
        assert_ne!(service, of_entry(Kind::Location, id));
        let organisation = of_organisation(&format!("org-{id}"));
        assert_eq!(
            organisation_id(&organisation).as_deref(),
            Some("org-01m92ka6wd8mpmeb")
        );
        // Someone else's UUIDs name nothing here.
        let foreign = Uuid::parse_str("ac148810-d857-441c-9679-408f346de14b").unwrap();
        assert_eq!(entry_id(&foreign, Kind::Service), None);
        assert_eq!(named("typology:mairie"), named("typology:mairie"));
    }

    proptest! {
        #[test]
        fn every_entry_id_round_trips(chars in proptest::collection::vec(0usize..32, 16)) {
            let id: String = chars.iter().map(|&i| ID_ALPHABET[i] as char).collect();
            let uuid = of_entry(Kind::Service, &id);
            prop_assert_eq!(entry_id(&uuid, Kind::Service), Some(id));
            let text = uuid.hyphenated().to_string();
            prop_assert_eq!(Uuid::parse_str(&text).unwrap(), uuid);
        }
    }
}
