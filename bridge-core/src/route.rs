//! A route: the topics one family of devices publishes on, and how to read their payloads.
//!
//! The tutorial's single topic filter and `{"ts", "value"}` payload are read by
//! [`crate::Decoder`], tuned for that one shape. A route reads what real firmware sends:
//! several topic filters with exclusions, JSON payloads with nested fields and patterned keys
//! ([`crate::field_path`]), plain-text numbers, local times in a time zone, and several
//! measurements per payload. Each (sensor, measurement) is a series of its own: its own
//! windows and watermark ([`series_key`]).

use std::borrow::Cow;

/// IANA time zones, for [`RouteOptions::time_zone`].
pub use chrono_tz::Tz;
use serde_json::Value;
use smallvec::SmallVec;
use smol_str::SmolStr;
use thiserror::Error;

use crate::decode::{self, DecodeError};
use crate::field_path::{self, FieldPath, PathError};
use crate::timestamp::{self, EpochUnit};
use crate::topic::{self, FilterError, TopicFilter};

/// Where a route's sensor id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SensorRule {
    /// The levels the matching filter's `+` and `#` matched, joined with `/` (a Zigbee2MQTT
    /// friendly name may itself hold `/`).
    Topic,
    /// One topic level, counted from 0.
    TopicLevel(usize),
    /// A payload field (string or integer), by JSON Pointer.
    Field(String),
}

/// How a payload is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// A JSON object; measurements are fields addressed by path.
    Json,
    /// The whole payload is one number as text (ESPHome, Home Assistant statestream, Shelly
    /// Gen1); surrounding whitespace allowed. The event time is the arrival time.
    Text,
    /// Sparkplug B protobuf ([`crate::sparkplug`]): sensor, measurements and event times come
    /// from the namespace and the metrics, so the route names none of them.
    SparkplugB,
}

/// What the route's measurements are called and where their numbers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeasurementSpec {
    /// JSON: (name, path) pairs. A path with a key pattern (`/DS18B20-*/Temperature`) gives one
    /// measurement per matching key, and its name must hold `{key}`, which becomes the key.
    Fields(Vec<(String, String)>),
    /// Text: one measurement with this name.
    Named(String),
    /// Text: one measurement named by this topic level (ESPHome's `<node>/sensor/<name>/state`).
    TopicLevel(usize),
}

/// What happens to a payload that holds none of the route's measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoMeasurement {
    /// A dead letter, reason `no_measurement`.
    #[default]
    DeadLetter,
    /// Counted and dropped (a device's status messages under the same topics).
    Drop,
}

/// A route's reading rules. Built by the binary from its `[[routes]]` configuration.
#[derive(Debug, Clone)]
pub struct RouteOptions {
    pub name: String,
    pub topics: Vec<String>,
    /// Topics matched by one of these are not the route's (they still arrive, because a
    /// subscription cannot exclude; they are counted and dropped).
    pub exclude: Vec<String>,
    pub sensor_id: SensorRule,
    pub format: PayloadFormat,
    /// JSON Pointer of the event time; empty: the arrival time.
    pub timestamp: String,
    /// The zone of timestamps written without an offset.
    pub time_zone: Tz,
    pub epoch_unit: EpochUnit,
    pub measurements: MeasurementSpec,
    pub no_measurement: NoMeasurement,
    pub max_future_skew_ms: i64,
    pub max_sensor_id_bytes: usize,
    /// `sparkplug-b` only: ask a node whose DATA uses an alias no BIRTH defined to send its
    /// BIRTH messages again (NCMD `Node Control/Rebirth`). Off by default: a bridge that only
    /// listens must not write to the plant.
    pub ask_rebirth: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteConfigError {
    #[error("route {route:?}: {error}")]
    Filter { route: String, error: FilterError },
    #[error("route {route:?}: {error}")]
    Path { route: String, error: PathError },
    #[error("route {0:?} has no topics")]
    NoTopics(String),
    #[error("route {0:?} takes the sensor id from the topic's wildcards, but its filter {1:?} has no `+` or `#`; set sensor_id to topic-level:N or field:/path")]
    NoWildcard(String, String),
    #[error("route {0:?} has no measurements; name at least one (measurements = {{ temperature = \"/temperature\" }})")]
    NoMeasurements(String),
    #[error("route {0:?}: measurement {1:?} reads a key pattern, so its name must hold `{{key}}` (each matching key is a series of its own)")]
    PatternWithoutKey(String, String),
    #[error("route {0:?}: measurement {1:?} has `{{key}}` in its name, but its path has no key pattern (a level with `*`)")]
    KeyWithoutPattern(String, String),
    #[error("route {0:?}: measurement name {1:?} is empty, holds a NUL character, or is one of the aggregate record's own fields (time, start, end, sensor, measurement)")]
    BadName(String, String),
    #[error("route {0:?}: format `text` takes one measurement (measurement = \"NAME\" or \"topic-level:N\"), format `json` takes field paths (measurements = {{ NAME = \"/path\" }})")]
    FormatMismatch(String),
    #[error(
        "route {0:?}: format `text` has no timestamp field; its event time is the arrival time"
    )]
    TextTimestamp(String),
    #[error("route {0:?}: format `sparkplug-b` takes its sensor ids (group/node[/device]), measurements (metric names) and event times from Sparkplug itself; leave sensor_id, timestamp, measurements and measurement unset")]
    SparkplugFields(String),
    #[error("route {0:?}: ask_rebirth is for format `sparkplug-b` (it asks Sparkplug edge nodes for their BIRTH)")]
    RebirthNotSparkplug(String),
    #[error("max future skew must not be negative")]
    NegativeSkew,
}

/// The separator between sensor and measurement in a series key: MQTT topics cannot hold NUL,
/// and the decoder refuses sensor ids and measurement names with one.
pub const SERIES_SEPARATOR: char = '\0';

/// The key of one series in the windows: the sensor id alone where a route has one fixed
/// measurement (so the tutorial's saved windows stay valid), else `sensor NUL measurement`.
pub fn series_key(sensor: &str, measurement: Option<&str>) -> SmolStr {
    match measurement {
        None => SmolStr::new(sensor),
        Some(m) => {
            let mut s = String::with_capacity(sensor.len() + 1 + m.len());
            s.push_str(sensor);
            s.push(SERIES_SEPARATOR);
            s.push_str(m);
            SmolStr::from(s)
        }
    }
}

/// The sensor and measurement of a series key (the measurement `None` for a plain sensor id).
pub fn split_series(key: &str) -> (&str, Option<&str>) {
    match key.split_once(SERIES_SEPARATOR) {
        Some((sensor, m)) => (sensor, Some(m)),
        None => (key, None),
    }
}

/// Whether a route takes a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Yes,
    /// Matched by one of its filters and one of its exclusions.
    Excluded,
    No,
}

/// One decoded payload: a sensor, an event time, and its measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured<'a> {
    pub sensor: Cow<'a, str>,
    pub ts_ms: i64,
    pub ts_from_payload: bool,
    /// (measurement name, value), in the payload's order; never empty.
    pub values: SmallVec<[(SmolStr, f64); 4]>,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    path: FieldPath,
}

/// Reads the payloads of one route.
#[derive(Debug, Clone)]
pub struct RouteDecoder {
    opts: RouteOptions,
    filters: Vec<TopicFilter>,
    exclude: Vec<TopicFilter>,
    timestamp: Option<FieldPath>,
    sensor_field: Option<FieldPath>,
    fields: Vec<Field>,
}

impl RouteDecoder {
    pub fn new(opts: RouteOptions) -> Result<Self, RouteConfigError> {
        let route = opts.name.clone();
        let filter = |t: &String| {
            TopicFilter::parse(t).map_err(|error| RouteConfigError::Filter {
                route: route.clone(),
                error,
            })
        };
        let path = |p: &str| {
            FieldPath::parse(p).map_err(|error| RouteConfigError::Path {
                route: route.clone(),
                error,
            })
        };
        let filters = opts
            .topics
            .iter()
            .map(filter)
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = opts
            .exclude
            .iter()
            .map(filter)
            .collect::<Result<Vec<_>, _>>()?;
        if filters.is_empty() {
            return Err(RouteConfigError::NoTopics(route));
        }
        if opts.sensor_id == SensorRule::Topic && opts.format != PayloadFormat::SparkplugB {
            if let Some(f) = filters
                .iter()
                .find(|f| f.single_wildcards() == 0 && !f.has_rest())
            {
                return Err(RouteConfigError::NoWildcard(route, f.as_str().to_owned()));
            }
        }
        let sensor_field = match &opts.sensor_id {
            SensorRule::Field(p) => Some(path(p)?),
            _ => None,
        };
        if opts.ask_rebirth && opts.format != PayloadFormat::SparkplugB {
            return Err(RouteConfigError::RebirthNotSparkplug(route));
        }
        if opts.format == PayloadFormat::SparkplugB {
            let unset = opts.sensor_id == SensorRule::Topic
                && opts.timestamp.is_empty()
                && opts.measurements == MeasurementSpec::Fields(Vec::new());
            if !unset {
                return Err(RouteConfigError::SparkplugFields(route));
            }
        }
        let timestamp = match (opts.format, opts.timestamp.is_empty()) {
            (_, true) => None,
            (PayloadFormat::SparkplugB, false) => unreachable!("checked above"),
            (PayloadFormat::Text, false) => return Err(RouteConfigError::TextTimestamp(route)),
            (PayloadFormat::Json, false) => Some(path(&opts.timestamp)?),
        };
        let mut fields = Vec::new();
        match (&opts.measurements, opts.format) {
            (MeasurementSpec::Fields(list), PayloadFormat::Json) => {
                if list.is_empty() {
                    return Err(RouteConfigError::NoMeasurements(route));
                }
                for (name, p) in list {
                    check_name(&route, name)?;
                    let p = path(p)?;
                    match (p.has_pattern(), name.contains("{key}")) {
                        (true, false) => {
                            return Err(RouteConfigError::PatternWithoutKey(route, name.clone()))
                        }
                        (false, true) => {
                            return Err(RouteConfigError::KeyWithoutPattern(route, name.clone()))
                        }
                        _ => {}
                    }
                    fields.push(Field {
                        name: name.clone(),
                        path: p,
                    });
                }
            }
            (MeasurementSpec::Named(name), PayloadFormat::Text) => check_name(&route, name)?,
            (MeasurementSpec::TopicLevel(_), PayloadFormat::Text) => {}
            (MeasurementSpec::Fields(list), PayloadFormat::SparkplugB) if list.is_empty() => {}
            _ => return Err(RouteConfigError::FormatMismatch(route)),
        }
        if opts.max_future_skew_ms < 0 {
            return Err(RouteConfigError::NegativeSkew);
        }
        Ok(Self {
            opts,
            filters,
            exclude,
            timestamp,
            sensor_field,
            fields,
        })
    }

    pub fn options(&self) -> &RouteOptions {
        &self.opts
    }

    pub fn filters(&self) -> &[TopicFilter] {
        &self.filters
    }

    /// Whether every series of this route is named by its sensor id alone: one fixed
    /// measurement name.
    pub fn single_measurement(&self) -> Option<&str> {
        match &self.opts.measurements {
            MeasurementSpec::Named(n) => Some(n),
            MeasurementSpec::Fields(list)
                if list.len() == 1 && !self.fields[0].path.has_pattern() =>
            {
                Some(&list[0].0)
            }
            _ => None,
        }
    }

    /// Whether this route takes `topic`.
    pub fn claims(&self, topic: &str) -> Claim {
        if !self.filters.iter().any(|f| f.matches(topic)) {
            Claim::No
        } else if self.exclude.iter().any(|f| f.matches(topic)) {
            Claim::Excluded
        } else {
            Claim::Yes
        }
    }

    /// Decodes one publish of a topic this route claims. `arrival_ms` is the gateway's clock.
    pub fn decode<'a>(
        &self,
        topic: &'a str,
        payload: &[u8],
        arrival_ms: i64,
    ) -> Result<Measured<'a>, DecodeError> {
        let (sensor, ts, values) = match self.opts.format {
            PayloadFormat::Json => self.decode_json(topic, payload)?,
            PayloadFormat::Text => self.decode_text(topic, payload)?,
            PayloadFormat::SparkplugB => {
                unreachable!("Sparkplug B payloads are read by crate::sparkplug")
            }
        };
        let (ts_ms, ts_from_payload) = match ts {
            Some(ms) => (ms, true),
            None => (arrival_ms, false),
        };
        decode::check_future_skew(ts_ms, arrival_ms, self.opts.max_future_skew_ms)?;
        decode::check_sensor_id_len(&sensor, self.opts.max_sensor_id_bytes)?;
        if sensor.contains(SERIES_SEPARATOR) {
            return Err(DecodeError::BadSensorId("it holds a NUL character".into()));
        }
        Ok(Measured {
            sensor,
            ts_ms,
            ts_from_payload,
            values,
        })
    }

    fn topic_sensor<'a>(&self, topic: &'a str) -> Result<Cow<'a, str>, DecodeError> {
        match &self.opts.sensor_id {
            SensorRule::Topic => self
                .filters
                .iter()
                .find_map(|f| f.wildcard_levels(topic))
                .ok_or_else(|| {
                    DecodeError::MissingSensorId(format!(
                        "a wildcard level of topic {topic:?} is empty"
                    ))
                }),
            SensorRule::TopicLevel(i) => {
                topic::level(topic, *i).map(Cow::Borrowed).ok_or_else(|| {
                    DecodeError::MissingSensorId(format!("topic {topic:?} has no level {i}"))
                })
            }
            SensorRule::Field(_) => unreachable!("read from the payload"),
        }
    }

    #[allow(clippy::type_complexity)]
    fn decode_json<'a>(
        &self,
        topic: &'a str,
        payload: &[u8],
    ) -> Result<(Cow<'a, str>, Option<i64>, SmallVec<[(SmolStr, f64); 4]>), DecodeError> {
        let root: Value = serde_json::from_slice(payload).map_err(|e| {
            if payload.is_empty() {
                DecodeError::NotJson("the payload is empty".into())
            } else {
                DecodeError::NotJson(e.to_string())
            }
        })?;
        if !root.is_object() {
            return Err(DecodeError::NotObject(kind(&root)));
        }
        let mut values = SmallVec::new();
        let mut bad_name = None;
        for field in &self.fields {
            field.path.each(&root, &mut |key, v| {
                if let Some(n) = field_path::number(v) {
                    let name = if field.path.has_pattern() {
                        SmolStr::from(field.name.replace("{key}", key))
                    } else {
                        SmolStr::new(&field.name)
                    };
                    if !usable_name(&name) {
                        bad_name = Some(name);
                        return false;
                    }
                    values.push((name, n));
                }
                true
            });
        }
        if let Some(name) = bad_name {
            return Err(DecodeError::BadMeasurementName(name.to_string()));
        }
        if values.is_empty() {
            let paths: Vec<&str> = self.fields.iter().map(|f| f.path.as_str()).collect();
            return Err(DecodeError::NoMeasurement(format!(
                "none of {} holds a number",
                paths.join(", ")
            )));
        }
        let ts = match &self.timestamp {
            None => None,
            Some(p) => match p.get(&root) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(timestamp::parse_text_in(
                    s,
                    self.opts.epoch_unit,
                    self.opts.time_zone,
                )?),
                Some(Value::Number(n)) => Some(match n.as_i64() {
                    Some(i) => timestamp::from_epoch_i64(i, self.opts.epoch_unit)?,
                    None => timestamp::from_epoch_f64(
                        n.as_f64().unwrap_or(f64::NAN),
                        self.opts.epoch_unit,
                    )?,
                }),
                Some(other) => {
                    return Err(DecodeError::TimestampType {
                        field: p.as_str().to_owned(),
                        got: kind(other),
                    })
                }
            },
        };
        let sensor = match &self.sensor_field {
            None => self.topic_sensor(topic)?,
            Some(p) => Cow::Owned(match p.get(&root) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                None => {
                    return Err(DecodeError::MissingSensorId(format!(
                        "payload has no `{}` field",
                        p.as_str()
                    )))
                }
                Some(other) => {
                    return Err(DecodeError::BadSensorId(format!(
                        "field `{}` is {}, not a non-empty string or integer",
                        p.as_str(),
                        kind(other)
                    )))
                }
            }),
        };
        Ok((sensor, ts, values))
    }

    #[allow(clippy::type_complexity)]
    fn decode_text<'a>(
        &self,
        topic: &'a str,
        payload: &[u8],
    ) -> Result<(Cow<'a, str>, Option<i64>, SmallVec<[(SmolStr, f64); 4]>), DecodeError> {
        let sensor = self.topic_sensor(topic)?;
        let name = match &self.opts.measurements {
            MeasurementSpec::Named(n) => SmolStr::new(n),
            MeasurementSpec::TopicLevel(i) => {
                SmolStr::new(topic::level(topic, *i).ok_or_else(|| {
                    DecodeError::NoMeasurement(format!(
                        "topic {topic:?} has no level {i} to name the measurement"
                    ))
                })?)
            }
            MeasurementSpec::Fields(_) => unreachable!("checked by RouteDecoder::new"),
        };
        let text = std::str::from_utf8(payload)
            .map_err(|_| DecodeError::NoMeasurement("the payload is not UTF-8 text".into()))?;
        let value = field_path::text_number(text).ok_or_else(|| {
            let shown: String = text.chars().take(40).collect();
            DecodeError::NoMeasurement(format!("the payload {shown:?} is not a number"))
        })?;
        Ok((sensor, None, SmallVec::from_iter([(name, value)])))
    }
}

/// Field names of the aggregate record besides the statistics object.
const RECORD_FIELDS: [&str; 5] = ["time", "start", "end", "sensor", "measurement"];

/// Whether `name` can name a measurement: the statistics object's key in an aggregate record
/// must not be empty, collide with the record's own fields, or hold the series separator.
pub fn usable_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(SERIES_SEPARATOR) && !RECORD_FIELDS.contains(&name)
}

fn check_name(route: &str, name: &str) -> Result<(), RouteConfigError> {
    if !usable_name(name) {
        return Err(RouteConfigError::BadName(route.to_owned(), name.to_owned()));
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
