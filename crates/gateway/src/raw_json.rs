//! A JSON object read one level deep: its fields in order, each value left as its JSON text.
//!
//! The gateway edits a few top-level fields of the bodies it relays (the request's `model`, the
//! response's `session_id`, each choice's `completion_id`) and passes the rest through. Reading
//! them this way scans the text once and allocates only the field list, where a parse into
//! [`serde_json::Value`] builds a tree that must then be encoded again.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON object's fields in order, each value left as its JSON text. A repeated field keeps
/// its last value, as a parse into [`Value`] would.
pub struct RawObject<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(16);
                while let Some((FieldName(key), value)) = map.next_entry()? {
                    fields.retain(|(existing, _)| *existing != key);
                    fields.push((key, value));
                }
                Ok(RawObject(fields))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A field name, borrowed from the body unless it has escapes.
struct FieldName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'a> RawObject<'a> {
    pub fn parse(json: &'a [u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(json)
    }

    pub fn parse_str(json: &'a str) -> serde_json::Result<Self> {
        serde_json::from_str(json)
    }

    pub fn get(&self, field: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, value)| *value)
    }
}

/// Appends `"name":` to `out`.
pub fn write_name(out: &mut Vec<u8>, name: &str) {
    // Serializing a string into a vector cannot fail.
    let _ = serde_json::to_writer(&mut *out, name);
    out.push(b':');
}

/// Appends `"name":value` to `out`, `value` being JSON text.
pub fn write_raw_field(out: &mut Vec<u8>, name: &str, value: &str) {
    write_name(out, name);
    out.extend_from_slice(value.as_bytes());
}
