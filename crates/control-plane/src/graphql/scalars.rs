//! Custom scalars of the management schema, named as the SDK's documents name them.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// `IdOrKey`: a UUID or a key, as a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdOrKey(pub String);

#[Scalar(name = "IdOrKey")]
impl ScalarType for IdOrKey {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(text) if !text.trim().is_empty() => Ok(IdOrKey(text)),
            Value::String(_) => Err(InputValueError::custom("an id or key must not be empty")),
            other => Err(InputValueError::expected_type(other)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

impl IdOrKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `Timestamp`: milliseconds since the epoch (an integer wider than GraphQL's `Int`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub i64);

#[Scalar(name = "Timestamp")]
impl ScalarType for Timestamp {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(number) => number.as_i64().map(Timestamp).ok_or_else(|| {
                InputValueError::custom("a timestamp is an integer of milliseconds")
            }),
            Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
                .map(|datetime| Timestamp(datetime.timestamp_millis()))
                .map_err(|_| InputValueError::custom("a timestamp is milliseconds or RFC 3339")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

/// `InputDatetime`: milliseconds or an RFC 3339 string (time range filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputDatetime(pub i64);

#[Scalar(name = "InputDatetime")]
impl ScalarType for InputDatetime {
    fn parse(value: Value) -> InputValueResult<Self> {
        <Timestamp as ScalarType>::parse(value)
            .map(|timestamp| InputDatetime(timestamp.0))
            .map_err(|error| error.propagate())
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}
