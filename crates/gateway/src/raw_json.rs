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
pub struct RawObject<'a>(pub Vec<ReadField<'a>>);

/// One field of a [`RawObject`]: its name (borrowed from the body unless it has escapes) and its
/// value's JSON text.
pub type ReadField<'a> = (Cow<'a, str>, &'a RawValue);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields: Vec<ReadField<'de>> = Vec::with_capacity(16);
                while let Some((JsonStr(key), value)) = map.next_entry()? {
                    if let Some(repeated) = fields.iter().position(|(existing, _)| *existing == key)
                    {
                        fields.remove(repeated);
                    }
                    fields.push((key, value));
                }
                Ok(RawObject(fields))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A JSON string (a field name or a value), borrowed from the body unless it has escapes.
/// (`Cow<str>`'s own `Deserialize` always copies.)
pub struct JsonStr<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for JsonStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = JsonStr<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// The text of a JSON string value; `None` when `value` is not a string.
pub fn string_value(value: &RawValue) -> Option<Cow<'_, str>> {
    if !value.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<JsonStr<'_>>(value.get())
        .ok()
        .map(|text| text.0)
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
    write_string(out, name);
    out.push(b':');
}

/// Appends `text` as a JSON string. Field names and ids rarely need escaping, so they are
/// copied as they are when they do not.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    if needs_escape(text) {
        // Serializing a string into a vector cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
        return;
    }
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// `text` as a JSON string.
pub fn json_string(text: &str) -> String {
    if needs_escape(text) {
        return serde_json::to_string(text).unwrap_or_default();
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    quoted.push_str(text);
    quoted.push('"');
    quoted
}

/// Whether JSON needs an escape for one of `text`'s characters: quote, backslash and controls
/// (serde_json escapes nothing else).
fn needs_escape(text: &str) -> bool {
    // A fold without an early exit, which the compiler vectorizes: ids and names are short.
    text.bytes().fold(false, |found, byte| {
        found | (byte == b'"') | (byte == b'\\') | (byte < 0x20)
    })
}

/// Appends `"name":` for a field read by [`RawObject`]. A borrowed name had no escape sequence
/// in its body, and JSON strings hold no raw quote, backslash or control character, so it is
/// written back as it was, unchecked.
pub fn write_read_name(out: &mut Vec<u8>, field: &ReadField<'_>) {
    match &field.0 {
        Cow::Borrowed(text) => {
            out.reserve(text.len() + 3);
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\":");
        }
        Cow::Owned(text) => write_name(out, text),
    }
}

/// Appends `"name":value` for a field read by [`RawObject`]; see [`write_read_name`].
pub fn write_read_field(out: &mut Vec<u8>, field: &ReadField<'_>) {
    write_read_name(out, field);
    out.extend_from_slice(field.1.get().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn strings_are_written_as_serde_json_writes_them(text in any::<String>()) {
            let mut ours = Vec::new();
            write_string(&mut ours, &text);
            prop_assert_eq!(ours, serde_json::to_vec(&text).expect("encodable"));
            prop_assert_eq!(json_string(&text), serde_json::to_string(&text).expect("encodable"));
        }
    }

    #[test]
    fn read_names_are_written_back_as_they_were_read() {
        let body = br#"{"plain":1,"we\u0069rd":2,"quo\"te":3}"#;
        let object = RawObject::parse(body).expect("an object");
        let mut out = vec![b'{'];
        for (position, field) in object.0.iter().enumerate() {
            if position > 0 {
                out.push(b',');
            }
            write_read_field(&mut out, field);
        }
        out.push(b'}');
        assert_eq!(out, br#"{"plain":1,"weird":2,"quo\"te":3}"#);
    }

    #[test]
    fn names_with_quotes_backslashes_or_controls_are_escaped() {
        let mut out = Vec::new();
        write_name(&mut out, "a\"b\\c\nd");
        assert_eq!(out, br#""a\"b\\c\nd":"#);
    }
}
