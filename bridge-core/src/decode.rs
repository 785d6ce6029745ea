//! Payload bytes -> [`Reading`]: the first step of the data flow, pure and allocation-light.
//!
//! A payload is a JSON object with a timestamp field (default `ts`) and a value field (default
//! `value`); other fields are ignored (they still travel in the raw record, which keeps the
//! original bytes). The tutorial's producer JSON-encoded its payload twice, so a JSON string that
//! holds such an object is accepted too (one level deep).
//!
//! The object is walked with a `DeserializeSeed` that knows the configured field names, so no
//! `serde_json::Value` tree is built and the sensor id borrows from the topic or payload.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use thiserror::Error;

use crate::timestamp::{self, EpochUnit, TimestampError};
use crate::topic::{self, FilterError, TopicFilter};

/// One decoded sensor reading. Borrows from the MQTT topic or payload where it can.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading<'a> {
    pub sensor: Cow<'a, str>,
    /// Event time, Unix epoch milliseconds (the arrival time when the payload had none).
    pub ts_ms: i64,
    pub value: f64,
    /// False when `ts_ms` is the arrival time because the payload carried no timestamp.
    pub ts_from_payload: bool,
}

/// Where the sensor id of a reading comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SensorIdSource {
    /// The levels matched by the filter's `+` wildcards, joined with `/`.
    Wildcards,
    /// One topic level, counted from 0.
    TopicLevel(usize),
    /// A payload field (string or integer).
    Field(String),
}

/// What the decoder needs to know. Built by the binary from its configuration.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// The subscription filter; the sensor id is read from the topic by it.
    pub topic_filter: String,
    pub sensor_id: SensorIdSource,
    pub ts_field: String,
    pub value_field: String,
    pub epoch_unit: EpochUnit,
    /// A timestamp further than this ahead of the arrival time is refused: one reading from a
    /// sensor with a wrong clock would otherwise close every open window of that sensor.
    pub max_future_skew_ms: i64,
    /// Longest sensor id accepted, in bytes. Ids become Kafka keys and window-state keys.
    pub max_sensor_id_bytes: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            topic_filter: "sensors/+/temperature".into(),
            sensor_id: SensorIdSource::Wildcards,
            ts_field: "ts".into(),
            value_field: "value".into(),
            epoch_unit: EpochUnit::Auto,
            max_future_skew_ms: 3_600_000,
            max_sensor_id_bytes: 256,
        }
    }
}

/// Why the decoder cannot be built from its options.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeConfigError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("the sensor id comes from the topic's `+` levels, but topic filter {0:?} has none; set a sensor id topic level or payload field")]
    NoWildcard(String),
    #[error("field names must not be empty")]
    EmptyField,
    #[error(
        "the timestamp, value and sensor id fields must have different names (`{0}` is used twice)"
    )]
    SameField(String),
    #[error("max future skew must not be negative")]
    NegativeSkew,
}

/// Why a payload was rejected. Each variant has a short, stable [`DecodeError::reason`] code for
/// metrics labels and dead-letter headers; the text says what to fix.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DecodeError {
    #[error("topic {topic:?} does not match the subscription filter {filter:?}")]
    TopicMismatch { topic: String, filter: String },
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("payload is JSON but {0}, not an object with a `value` field")]
    NotObject(&'static str),
    #[error("payload has no `{0}` field")]
    MissingValue(String),
    #[error("field `{field}` is {got}, not a number")]
    ValueNotNumber { field: String, got: &'static str },
    #[error("field `{0}` is not a finite number (NaN and infinity cannot be aggregated)")]
    ValueNotFinite(String),
    #[error("field `{field}` is {got}, not a timestamp")]
    TimestampType { field: String, got: &'static str },
    #[error(transparent)]
    BadTimestamp(#[from] TimestampError),
    #[error("timestamp {ts_ms} ms is {ahead_ms} ms ahead of the gateway clock, more than the allowed {limit_ms} ms; fix the sensor's clock or raise the skew limit")]
    FutureTimestamp {
        ts_ms: i64,
        ahead_ms: i64,
        limit_ms: i64,
    },
    #[error("no sensor id: {0}")]
    MissingSensorId(String),
    #[error("bad sensor id: {0}")]
    BadSensorId(String),
    #[error("no measurement: {0}")]
    NoMeasurement(String),
    #[error("payload is not a Sparkplug B protobuf payload: {0}")]
    NotProtobuf(String),
    #[error("unknown Sparkplug B alias: {0}")]
    UnknownAlias(String),
    #[error("measurement name {0:?} is empty, holds a NUL character, or is one of the aggregate record's own fields (time, start, end, sensor, measurement); rename it at the device")]
    BadMeasurementName(String),
}

impl DecodeError {
    /// A short, stable code: a bounded set, safe as a metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TopicMismatch { .. } => "topic_mismatch",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::NotObject(_) => "not_object",
            DecodeError::MissingValue(_) => "missing_value",
            DecodeError::ValueNotNumber { .. } => "value_not_number",
            DecodeError::ValueNotFinite(_) => "value_not_finite",
            DecodeError::TimestampType { .. } | DecodeError::BadTimestamp(_) => "bad_timestamp",
            DecodeError::FutureTimestamp { .. } => "future_timestamp",
            DecodeError::MissingSensorId(_) => "missing_sensor_id",
            DecodeError::BadSensorId(_) => "bad_sensor_id",
            DecodeError::NoMeasurement(_) => "no_measurement",
            DecodeError::NotProtobuf(_) => "not_protobuf",
            DecodeError::UnknownAlias(_) => "unknown_alias",
            DecodeError::BadMeasurementName(_) => "bad_measurement_name",
        }
    }

    /// Every reason code, for pre-registering metrics.
    pub const REASONS: [&'static str; 14] = [
        "topic_mismatch",
        "not_json",
        "not_object",
        "missing_value",
        "value_not_number",
        "value_not_finite",
        "bad_timestamp",
        "future_timestamp",
        "missing_sensor_id",
        "bad_sensor_id",
        "no_measurement",
        "not_protobuf",
        "unknown_alias",
        "bad_measurement_name",
    ];
}

/// Refuses an event time more than `limit_ms` ahead of `arrival_ms`, the gateway's clock: one
/// reading from a sensor with a wrong clock would otherwise close every open window of it.
pub(crate) fn check_future_skew(
    ts_ms: i64,
    arrival_ms: i64,
    limit_ms: i64,
) -> Result<(), DecodeError> {
    let ahead_ms = ts_ms.saturating_sub(arrival_ms);
    if ahead_ms > limit_ms {
        return Err(DecodeError::FutureTimestamp {
            ts_ms,
            ahead_ms,
            limit_ms,
        });
    }
    Ok(())
}

/// Refuses a sensor id longer than `max_bytes`: ids become Kafka keys and window-state keys.
pub(crate) fn check_sensor_id_len(sensor: &str, max_bytes: usize) -> Result<(), DecodeError> {
    if sensor.len() > max_bytes {
        return Err(DecodeError::BadSensorId(format!(
            "{} bytes long, more than the allowed {max_bytes}",
            sensor.len()
        )));
    }
    Ok(())
}

/// Turns MQTT publishes into readings. Cheap to share; holds only the parsed options.
#[derive(Debug, Clone)]
pub struct Decoder {
    filter: TopicFilter,
    opts: DecodeOptions,
}

impl Decoder {
    pub fn new(opts: DecodeOptions) -> Result<Self, DecodeConfigError> {
        let filter = TopicFilter::parse(&opts.topic_filter)?;
        if opts.sensor_id == SensorIdSource::Wildcards && filter.single_wildcards() == 0 {
            return Err(DecodeConfigError::NoWildcard(opts.topic_filter.clone()));
        }
        let mut names = vec![&opts.ts_field, &opts.value_field];
        if let SensorIdSource::Field(f) = &opts.sensor_id {
            names.push(f);
        }
        if names.iter().any(|n| n.is_empty()) {
            return Err(DecodeConfigError::EmptyField);
        }
        for (i, a) in names.iter().enumerate() {
            if names[i + 1..].contains(a) {
                return Err(DecodeConfigError::SameField((*a).clone()));
            }
        }
        if opts.max_future_skew_ms < 0 {
            return Err(DecodeConfigError::NegativeSkew);
        }
        Ok(Self { filter, opts })
    }

    pub fn options(&self) -> &DecodeOptions {
        &self.opts
    }

    pub fn filter(&self) -> &TopicFilter {
        &self.filter
    }

    /// Whether a reading's topic follows from its sensor id ([`TopicFilter::topic_of`]): the id
    /// is made of the filter's `+` levels (there is one at least: [`Decoder::new`] checks) and
    /// the filter has no `#`.
    pub fn topic_follows_from_sensor(&self) -> bool {
        self.opts.sensor_id == SensorIdSource::Wildcards && !self.filter.has_rest()
    }

    /// Decodes one publish. `arrival_ms` is the gateway's wall clock when it arrived: the event
    /// time of a payload without one, and the reference for the future-skew guard.
    pub fn decode<'a>(
        &self,
        topic: &'a str,
        payload: &'a [u8],
        arrival_ms: i64,
    ) -> Result<Reading<'a>, DecodeError> {
        let mismatch = || DecodeError::TopicMismatch {
            topic: topic.to_owned(),
            filter: self.filter.as_str().to_owned(),
        };
        // With the default id source, matching and extracting the id is one pass.
        let wildcard_id = match self.opts.sensor_id {
            SensorIdSource::Wildcards => self.filter.wildcard_id(topic),
            _ => None,
        };
        if wildcard_id.is_none() && !self.filter.matches(topic) {
            return Err(mismatch());
        }
        let fields = self.parse_fields(payload)?;

        let value = match fields.value {
            None => return Err(DecodeError::MissingValue(self.opts.value_field.clone())),
            Some(Err(got)) => {
                return Err(DecodeError::ValueNotNumber {
                    field: self.opts.value_field.clone(),
                    got,
                })
            }
            Some(Ok(v)) if !v.is_finite() => {
                return Err(DecodeError::ValueNotFinite(self.opts.value_field.clone()))
            }
            Some(Ok(v)) => v,
        };

        let unit = self.opts.epoch_unit;
        let (ts_ms, ts_from_payload) = match fields.ts {
            None | Some(TsRaw::Null) => (arrival_ms, false),
            Some(TsRaw::Text(t)) => (timestamp::parse_text(&t, unit)?, true),
            Some(TsRaw::Int(n)) => (timestamp::from_epoch_i64(n, unit)?, true),
            Some(TsRaw::Float(n)) => (timestamp::from_epoch_f64(n, unit)?, true),
            Some(TsRaw::Wrong(got)) => {
                return Err(DecodeError::TimestampType {
                    field: self.opts.ts_field.clone(),
                    got,
                })
            }
        };
        check_future_skew(ts_ms, arrival_ms, self.opts.max_future_skew_ms)?;

        let sensor = match &self.opts.sensor_id {
            SensorIdSource::Wildcards => wildcard_id.ok_or_else(|| {
                DecodeError::MissingSensorId(format!("a `+` level of topic {topic:?} is empty"))
            })?,
            SensorIdSource::TopicLevel(i) => {
                Cow::Borrowed(topic::level(topic, *i).ok_or_else(|| {
                    DecodeError::MissingSensorId(format!("topic {topic:?} has no level {i}"))
                })?)
            }
            SensorIdSource::Field(name) => match fields.sensor {
                None => {
                    return Err(DecodeError::MissingSensorId(format!(
                        "payload has no `{name}` field"
                    )))
                }
                Some(Err(got)) => {
                    return Err(DecodeError::BadSensorId(format!(
                        "field `{name}` is {got}, not a string or integer"
                    )))
                }
                Some(Ok(s)) if s.is_empty() => {
                    return Err(DecodeError::MissingSensorId(format!(
                        "field `{name}` is empty"
                    )))
                }
                Some(Ok(s)) => s,
            },
        };
        check_sensor_id_len(&sensor, self.opts.max_sensor_id_bytes)?;

        Ok(Reading {
            sensor,
            ts_ms,
            value,
            ts_from_payload,
        })
    }

    fn parse_fields<'a>(&self, payload: &'a [u8]) -> Result<Fields<'a>, DecodeError> {
        let seed = PayloadSeed {
            opts: &self.opts,
            nested: false,
        };
        let mut de = serde_json::Deserializer::from_slice(payload);
        let parsed = seed.deserialize(&mut de).and_then(|f| de.end().map(|()| f));
        parsed.map_err(|e| classify_json_error(e, payload, &self.opts.value_field))
    }
}

/// Turns a parse failure into the reason an operator can act on.
fn classify_json_error(e: serde_json::Error, payload: &[u8], value_field: &str) -> DecodeError {
    let text = e.to_string();
    // Python's json.dumps writes NaN and Infinity, which are not JSON; serde_json reports
    // numbers beyond f64 as "out of range". Both mean a value that cannot be aggregated.
    let non_finite =
        |p: &[u8]| p.windows(3).any(|w| w == b"NaN") || p.windows(8).any(|w| w == b"Infinity");
    if text.contains("number out of range") || (e.is_syntax() && non_finite(payload)) {
        return DecodeError::ValueNotFinite(value_field.to_owned());
    }
    if let Some(kind) = text.strip_prefix(NOT_OBJECT_PREFIX) {
        let kind = NOT_OBJECT_KINDS
            .iter()
            .find(|k| kind.starts_with(**k))
            .copied()
            .unwrap_or("another JSON type");
        return DecodeError::NotObject(kind);
    }
    if payload.is_empty() {
        return DecodeError::NotJson("the payload is empty".into());
    }
    DecodeError::NotJson(text)
}

const NOT_OBJECT_PREFIX: &str = "not an object: ";
const NOT_OBJECT_KINDS: [&str; 7] = [
    "an array",
    "a number",
    "a boolean",
    "null",
    "a string that holds no JSON object",
    "a JSON string nested twice",
    "another JSON type",
];

/// The fields found in a payload. `Err(kind)` keeps a wrong-typed field for the error message.
#[derive(Default)]
struct Fields<'a> {
    ts: Option<TsRaw<'a>>,
    value: Option<Result<f64, &'static str>>,
    sensor: Option<Result<Cow<'a, str>, &'static str>>,
}

impl Fields<'_> {
    fn into_owned(self) -> Fields<'static> {
        Fields {
            ts: self.ts.map(|t| match t {
                TsRaw::Text(s) => TsRaw::Text(Cow::Owned(s.into_owned())),
                TsRaw::Int(n) => TsRaw::Int(n),
                TsRaw::Float(n) => TsRaw::Float(n),
                TsRaw::Null => TsRaw::Null,
                TsRaw::Wrong(w) => TsRaw::Wrong(w),
            }),
            value: self.value,
            sensor: self.sensor.map(|s| s.map(|c| Cow::Owned(c.into_owned()))),
        }
    }
}

enum TsRaw<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Null,
    Wrong(&'static str),
}

/// Deserializes the top level: an object, or a string holding one (the tutorial's format).
struct PayloadSeed<'o> {
    opts: &'o DecodeOptions,
    nested: bool,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed<'_> {
    type Value = Fields<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn not_object<E: de::Error>(kind: &str) -> E {
    E::custom(format_args!("{NOT_OBJECT_PREFIX}{kind}"))
}

impl<'de> Visitor<'de> for PayloadSeed<'_> {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        let sensor_field = match &self.opts.sensor_id {
            SensorIdSource::Field(f) => Some(f.as_str()),
            _ => None,
        };
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            let key = key.0;
            if key == self.opts.value_field {
                fields.value = Some(map.next_value::<NumberField>()?.0);
            } else if key == self.opts.ts_field {
                fields.ts = Some(map.next_value::<TsField<'de>>()?.0);
            } else if Some(&*key) == sensor_field {
                fields.sensor = Some(map.next_value::<IdField<'de>>()?.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(fields)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        if self.nested {
            return Err(not_object("a JSON string nested twice"));
        }
        let inner = PayloadSeed {
            opts: self.opts,
            nested: true,
        };
        let mut de = serde_json::Deserializer::from_str(s);
        match inner
            .deserialize(&mut de)
            .and_then(|f| de.end().map(|()| f))
        {
            Ok(fields) => Ok(fields.into_owned()),
            Err(e) if e.to_string().starts_with(NOT_OBJECT_PREFIX) => Err(E::custom(e)),
            Err(_) if !s.trim_start().starts_with(['{', '"']) => {
                Err(not_object("a string that holds no JSON object"))
            }
            Err(e) => Err(E::custom(format_args!("inside the JSON string: {e}"))),
        }
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(not_object("an array"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(not_object("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(not_object("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(not_object("a number"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(not_object("a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(not_object("null"))
    }
}

/// A string that borrows from the input when it has no escapes.
struct CowStr<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Names a JSON value's type for error messages, consuming it.
fn kind_of_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<&'static str, A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok("an object")
}
fn kind_of_seq<'de, A: de::SeqAccess<'de>>(mut seq: A) -> Result<&'static str, A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok("an array")
}

/// Generates the `Visitor` methods that turn JSON types a field does not accept into
/// `Err(kind)` values, so a wrong type becomes a precise rejection, not a parse error.
macro_rules! wrong_types {
    ($wrap:expr; $($method:ident($($arg:ty)?) => $kind:literal),* $(,)?) => {
        $(fn $method<E: de::Error>(self $(, _: $arg)?) -> Result<Self::Value, E> {
            Ok($wrap(Err($kind)))
        })*
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            kind_of_map(map).map(|k| $wrap(Err(k)))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            kind_of_seq(seq).map(|k| $wrap(Err(k)))
        }
    };
}

/// The value field: any JSON number, else the name of the type found.
struct NumberField(Result<f64, &'static str>);

impl<'de> de::Deserialize<'de> for NumberField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NumberField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Ok(NumberField(Ok(n as f64)))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(NumberField(Ok(n as f64)))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
                Ok(NumberField(Ok(n)))
            }
            wrong_types!(NumberField; visit_str(&str) => "a string", visit_bool(bool) => "a boolean",
                visit_unit() => "null");
        }
        d.deserialize_any(V)
    }
}

/// The timestamp field: text, an epoch number, or null (treated as absent).
struct TsField<'de>(TsRaw<'de>);

impl<'de> de::Deserialize<'de> for TsField<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TsField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a timestamp")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(TsField(TsRaw::Text(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(TsField(TsRaw::Text(Cow::Owned(s.to_owned()))))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Ok(TsField(TsRaw::Int(n)))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(TsField(match i64::try_from(n) {
                    Ok(n) => TsRaw::Int(n),
                    Err(_) => TsRaw::Float(n as f64),
                }))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
                Ok(TsField(TsRaw::Float(n)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(TsField(TsRaw::Null))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(TsField(TsRaw::Wrong("a boolean")))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                kind_of_map(map).map(|k| TsField(TsRaw::Wrong(k)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                kind_of_seq(seq).map(|k| TsField(TsRaw::Wrong(k)))
            }
        }
        d.deserialize_any(V)
    }
}

/// The sensor id field: a string, or an integer written in decimal.
struct IdField<'de>(Result<Cow<'de, str>, &'static str>);

impl<'de> de::Deserialize<'de> for IdField<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sensor id")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(IdField(Ok(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(IdField(Ok(Cow::Owned(s.to_owned()))))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Ok(IdField(Ok(Cow::Owned(n.to_string()))))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(IdField(Ok(Cow::Owned(n.to_string()))))
            }
            wrong_types!(IdField; visit_f64(f64) => "a fractional number",
                visit_bool(bool) => "a boolean", visit_unit() => "null");
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests;
