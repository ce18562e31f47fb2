//! Streaming reads of the national sources' JSON: a list of records, bare or under one key of an
//! object (`{"service": […]}`, `{"items": […]}`), each handed over as it is read, never the whole
//! file in memory; and what a source held that no typology takes.

use std::collections::BTreeMap;
use std::io::Read;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::formats::FileError;
use crate::error::FieldError;

/// Records of a source whose type or network no typology takes, by it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Unmapped {
    pub records: u64,
    pub by_type: BTreeMap<String, u64>,
}

impl Unmapped {
    pub fn count(&mut self, kind: &str) {
        self.records += 1;
        *self.by_type.entry(kind.to_owned()).or_default() += 1;
    }
}

/// Where a file's list of records is, and what the file should be.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    /// The key of the list in the document's object.
    pub key: &'a str,
    /// A key the object must give this text when it holds it (GeoJSON's `type`).
    pub kind: Option<(&'a str, &'a str)>,
    /// Whether the document may be the list itself.
    pub bare_list: bool,
    /// Whether the object must hold the list (else an object without it holds no record).
    pub key_required: bool,
    /// What the file should be, said when it is not: « GeoJSON illisible (FeatureCollection
    /// attendue) ».
    pub unreadable: &'a str,
}

/// Hands each record of `reader` to `each` with its index (from 1: the « line » reports give)
/// until it returns false; the list is where `layout` says.
pub fn each_record<R: DeserializeOwned>(
    reader: impl Read,
    layout: Layout<'_>,
    each: impl FnMut(u64, R) -> bool,
) -> Result<(), FileError> {
    let mut deserializer =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 16, reader));
    let mut sink = Sink {
        each,
        count: 0,
        stopped: false,
        record: PhantomData,
    };
    TopSeed {
        sink: &mut sink,
        layout,
    }
    .deserialize(&mut deserializer)
    .map_err(|e| {
        let message = if e.is_data() || e.is_syntax() || e.is_eof() {
            format!("{} : {e}", layout.unreadable)
        } else {
            format!("lecture impossible : {e}")
        };
        FileError(FieldError::new("file", message).at_row(sink.count + 1))
    })
}

struct Sink<F, R> {
    each: F,
    count: u64,
    stopped: bool,
    record: PhantomData<fn(R)>,
}

impl<R, F: FnMut(u64, R) -> bool> Sink<F, R> {
    fn record(&mut self, value: R) {
        self.count += 1;
        if !self.stopped {
            self.stopped = !(self.each)(self.count, value);
        }
    }
}

struct TopSeed<'s, 'l, F, R> {
    sink: &'s mut Sink<F, R>,
    layout: Layout<'l>,
}

impl<'de, R: DeserializeOwned, F: FnMut(u64, R) -> bool> DeserializeSeed<'de>
    for TopSeed<'_, '_, F, R>
{
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.layout.bare_list {
            deserializer.deserialize_any(self)
        } else {
            deserializer.deserialize_map(self)
        }
    }
}

impl<'de, R: DeserializeOwned, F: FnMut(u64, R) -> bool> Visitor<'de> for TopSeed<'_, '_, F, R> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "un objet qui porte « {} »", self.layout.key)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.layout.key {
                found = true;
                map.next_value_seed(RecordsSeed {
                    sink: &mut *self.sink,
                })?;
            } else if let Some((kind_key, kind)) = self.layout.kind.filter(|(k, _)| *k == key) {
                if map.next_value::<String>()? != kind {
                    return Err(serde::de::Error::custom(format!(
                        "« {kind_key} » doit valoir « {kind} »"
                    )));
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !found && self.layout.key_required {
            return Err(serde::de::Error::custom(format!(
                "clé « {} » absente",
                self.layout.key
            )));
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        RecordsSeed { sink: self.sink }.visit_seq(seq)
    }
}

struct RecordsSeed<'s, F, R> {
    sink: &'s mut Sink<F, R>,
}

impl<'de, R: DeserializeOwned, F: FnMut(u64, R) -> bool> DeserializeSeed<'de>
    for RecordsSeed<'_, F, R>
{
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, R: DeserializeOwned, F: FnMut(u64, R) -> bool> Visitor<'de> for RecordsSeed<'_, F, R> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("une liste d'enregistrements")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(record) = seq.next_element::<R>()? {
            self.sink.record(record);
        }
        Ok(())
    }
}
