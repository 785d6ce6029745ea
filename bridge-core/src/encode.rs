//! Readings and closed windows -> Kafka records, exactly as the record contract says.
//!
//! - Raw: key = sensor id, value = the original payload bytes (untouched, so consumers written
//!   for the tutorial keep working), timestamp = event time, headers = the MQTT topic and any
//!   MQTT 5 user properties.
//! - Aggregate: key = sensor id, value = `{"time": end, "<measurement>": {count, min, max, mean,
//!   sum}, "start", "end", "sensor"}`, timestamp = window start. The value depends only on the
//!   window, so a replay produces byte-identical duplicates.
//! - Dead letter: key = MQTT topic, value = the original payload, timestamp = arrival time,
//!   headers = topic, reason code and message.
//!
//! Every record has a stable id, [`record_id`]: a hash of its stream, key, timestamp and value.
//! A record sent twice (after a crash, a spool replay or an MQTT redelivery) has the same id
//! both times, so a consumer removes duplicates by remembering recent ids per key. A consumer
//! computes the id from the record itself, so by default it is not sent: on a metered uplink a
//! 16-hex-digit header is most of a raw record's bytes after compression. With
//! [`EncodeOptions::id_header`] every record carries it as the `edge.id` header.
//!
//! The raw record's `mqtt.topic` header is left out where the topic follows from the key (see
//! [`TopicHeader::Auto`]), for the same reason.

use std::borrow::Cow;

use bytes::Bytes;
use bytestring::ByteString;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::decode::{DecodeError, Reading};
use crate::window::ClosedWindow;

/// Header holding the MQTT topic a record came from.
pub const HEADER_MQTT_TOPIC: &str = "mqtt.topic";
/// A record's stable id, 16 hex digits, when [`EncodeOptions::id_header`] is on (see the module
/// documentation and [`record_id`]).
pub const HEADER_RECORD_ID: &str = "edge.id";
/// Dead letters: the short reason code (`not_json`, `bad_timestamp`, ...).
pub const HEADER_ERROR_REASON: &str = "error.reason";
/// Dead letters: the full message, saying what to fix.
pub const HEADER_ERROR_MESSAGE: &str = "error.message";
/// Late records: the start (epoch ms) of the closed window the reading belonged to.
pub const HEADER_LATE_WINDOW: &str = "late.window_start";
/// Raw, late and dead-letter records of a configured route (`[[routes]]`): the route's name.
pub const HEADER_ROUTE: &str = "edge.route";

/// Header names the bridge writes itself. An MQTT 5 user property with one of these names is
/// renamed with [`USER_PROPERTY_PREFIX`], so that a sensor cannot forge a record id or a topic
/// and consumers that read the first header with a name get the bridge's.
const RESERVED_HEADERS: [&str; 6] = [
    HEADER_MQTT_TOPIC,
    HEADER_ROUTE,
    HEADER_RECORD_ID,
    HEADER_ERROR_REASON,
    HEADER_ERROR_MESSAGE,
    HEADER_LATE_WINDOW,
];
/// Prefix given to a user property named like one of the bridge's own headers.
pub const USER_PROPERTY_PREFIX: &str = "mqtt.user.";

/// A record ready for a Kafka producer (or the spool). Topic selection is the sink's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub key: Bytes,
    pub value: Bytes,
    /// Kafka message timestamp, epoch milliseconds (CreateTime).
    pub timestamp_ms: i64,
    pub headers: Vec<(HeaderName, Bytes)>,
}

/// A header name: the contract's own names are static, so a record costs no allocation for
/// them; names from MQTT 5 user properties or read back from the spool are owned.
pub type HeaderName = Cow<'static, str>;

/// When a raw record carries its MQTT topic in the `mqtt.topic` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicHeader {
    /// Only when the topic does not follow from the record's key: the sensor id is not made of
    /// the filter's `+` levels, or the filter has a `#` (see
    /// [`crate::topic::TopicFilter::topic_of`]).
    #[default]
    Auto,
    /// On every raw record.
    Always,
}

/// What goes into records besides what the contract fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Name of the statistics object in aggregate values.
    pub measurement: String,
    /// Every record carries its id ([`record_id`]) in the `edge.id` header.
    pub id_header: bool,
    pub topic_header: TopicHeader,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            measurement: "temperature".into(),
            id_header: false,
            topic_header: TopicHeader::Auto,
        }
    }
}

/// Encodes records.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// The statistics object's name; `None`: each series key names its measurement
    /// ([`crate::route::series_key`]), and aggregate values say which in `"measurement"`.
    measurement: Option<String>,
    id_header: bool,
    /// Whether raw records carry `mqtt.topic` ([`TopicHeader`] resolved for the decoder).
    topic_header: bool,
    /// The `edge.route` header of a configured route's raw, late and dead-letter records.
    route: Option<Bytes>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new(&EncodeOptions::default(), false)
    }
}

impl Encoder {
    /// `topic_follows_from_key`: whether the decoder's sensor ids give back the MQTT topic
    /// ([`crate::Decoder::topic_follows_from_sensor`]), for [`TopicHeader::Auto`].
    pub fn new(options: &EncodeOptions, topic_follows_from_key: bool) -> Self {
        Self {
            measurement: Some(options.measurement.clone()),
            id_header: options.id_header,
            topic_header: match options.topic_header {
                TopicHeader::Always => true,
                TopicHeader::Auto => !topic_follows_from_key,
            },
            route: None,
        }
    }

    /// The encoder of a configured route: its records name it in `edge.route`, and with
    /// `measurement` `None` its series keys name their measurements.
    pub fn for_route(
        options: &EncodeOptions,
        topic_follows_from_key: bool,
        route: &str,
        measurement: Option<&str>,
    ) -> Self {
        let mut e = Self::new(options, topic_follows_from_key);
        e.measurement = measurement.map(str::to_owned);
        e.route = Some(Bytes::copy_from_slice(route.as_bytes()));
        e
    }

    /// The raw record of a decoded reading. `payload` is the MQTT payload as received, and
    /// `reading` was decoded from it and `mqtt_topic`.
    ///
    /// This runs once per reading, so it shares rather than copies: the key is a slice of the
    /// topic (or payload) it was read from, and the topic header shares the topic's buffer.
    pub fn raw(
        &self,
        reading: &Reading<'_>,
        mqtt_topic: &ByteString,
        payload: Bytes,
        user_properties: &[(String, String)],
    ) -> OutRecord {
        self.raw_of(
            &reading.sensor,
            reading.ts_ms,
            mqtt_topic,
            payload,
            user_properties,
        )
    }

    /// The raw record of one MQTT message from `sensor` at event time `ts_ms`: one record
    /// however many measurements its payload held.
    pub fn raw_of(
        &self,
        sensor: &str,
        ts_ms: i64,
        mqtt_topic: &ByteString,
        payload: Bytes,
        user_properties: &[(String, String)],
    ) -> OutRecord {
        let mut headers = Vec::with_capacity(
            usize::from(self.topic_header)
                + usize::from(self.id_header)
                + usize::from(self.route.is_some())
                + user_properties.len(),
        );
        if self.topic_header {
            headers.push((
                Cow::Borrowed(HEADER_MQTT_TOPIC),
                mqtt_topic.as_bytes().clone(),
            ));
        }
        if let Some(route) = &self.route {
            headers.push((Cow::Borrowed(HEADER_ROUTE), route.clone()));
        }
        headers.extend(user_properties.iter().map(|(k, v)| {
            let name = if RESERVED_HEADERS.contains(&k.as_str()) {
                format!("{USER_PROPERTY_PREFIX}{k}")
            } else {
                k.clone()
            };
            (Cow::Owned(name), Bytes::copy_from_slice(v.as_bytes()))
        }));
        let key = shared_slice(sensor, [mqtt_topic.as_bytes(), &payload]);
        if self.id_header {
            headers.push(id_header(IdStream::Raw, &key, ts_ms, &payload));
        }
        OutRecord {
            key,
            value: payload,
            timestamp_ms: ts_ms,
            headers,
        }
    }

    /// A raw record routed to the late topic: the raw record plus the closed window's start.
    pub fn late(&self, raw: &OutRecord, window_start_ms: i64) -> OutRecord {
        let mut late = raw.clone();
        if let Some(h) = late.headers.iter_mut().find(|(k, _)| k == HEADER_RECORD_ID) {
            *h = id_header(IdStream::Late, &raw.key, raw.timestamp_ms, &raw.value);
        }
        late.headers.push((
            Cow::Borrowed(HEADER_LATE_WINDOW),
            Bytes::from(window_start_ms.to_string()),
        ));
        late
    }

    /// The aggregate record of a closed window.
    pub fn aggregate(&self, w: &ClosedWindow) -> OutRecord {
        let (sensor, from_key) = match &self.measurement {
            Some(m) => (&*w.sensor, MeasurementName::Fixed(m)),
            None => match crate::route::split_series(&w.sensor) {
                (sensor, Some(m)) => (sensor, MeasurementName::Named(m)),
                // Not written by this encoder's route; keep the record readable.
                (sensor, None) => (sensor, MeasurementName::Named("value")),
            },
        };
        let value = serde_json::to_vec(&AggregateValue {
            w,
            sensor,
            measurement: from_key,
        })
        .expect("serializing numbers and strings to a Vec cannot fail");
        let key = Bytes::copy_from_slice(sensor.as_bytes());
        let value = Bytes::from(value);
        let mut headers = Vec::new();
        if self.id_header {
            headers.push(id_header(IdStream::Aggregate, &key, w.start_ms, &value));
        }
        OutRecord {
            key,
            value,
            timestamp_ms: w.start_ms,
            headers,
        }
    }

    /// The dead-letter record of a payload that could not be decoded.
    pub fn dead_letter(
        &self,
        mqtt_topic: &str,
        payload: Bytes,
        arrival_ms: i64,
        error: &DecodeError,
    ) -> OutRecord {
        let key = Bytes::copy_from_slice(mqtt_topic.as_bytes());
        let id = self
            .id_header
            .then(|| id_header(IdStream::DeadLetter, &key, arrival_ms, &payload));
        let mut headers = Vec::with_capacity(4);
        headers.extend([
            (
                Cow::Borrowed(HEADER_MQTT_TOPIC),
                Bytes::copy_from_slice(mqtt_topic.as_bytes()),
            ),
            (
                Cow::Borrowed(HEADER_ERROR_REASON),
                Bytes::from(error.reason()),
            ),
            (
                Cow::Borrowed(HEADER_ERROR_MESSAGE),
                Bytes::from(error.to_string()),
            ),
        ]);
        headers.extend(id);
        if let Some(route) = &self.route {
            headers.push((Cow::Borrowed(HEADER_ROUTE), route.clone()));
        }
        OutRecord {
            key,
            value: payload,
            timestamp_ms: arrival_ms,
            headers,
        }
    }
}

/// Which stream a record id is computed for: the same reading has one id in the raw stream
/// and another in the late stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdStream {
    /// A raw record (without a `late.window_start` header).
    Raw = b'r' as isize,
    Aggregate = b'a' as isize,
    DeadLetter = b'd' as isize,
    /// A record with a `late.window_start` header, in the late topic or the raw topic.
    Late = b'l' as isize,
}

/// A record's stable id: XXH3-64 (seed 0; stable across versions and platforms, unlike std's
/// hasher, and in every language's xxhash library) over
/// `tag (1 byte) || key length (u64, little-endian) || key || timestamp ms (i64,
/// little-endian) || value`, where the tag is `r`, `a`, `d` or `l` ([`IdStream`]). The key's
/// length prefix keeps two different records from hashing the same input. Consumers compute it
/// from the record (see `examples/dedup.py`); the README's record contract gives the same
/// function.
pub fn record_id(stream: IdStream, key: &[u8], timestamp_ms: i64, value: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&[stream as u8]);
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(&timestamp_ms.to_le_bytes());
    h.update(value);
    h.digest()
}

/// The `edge.id` header: [`record_id`] as 16 lower-case hex digits.
fn id_header(stream: IdStream, key: &[u8], timestamp_ms: i64, value: &[u8]) -> (HeaderName, Bytes) {
    let digest = record_id(stream, key, timestamp_ms, value);
    (
        Cow::Borrowed(HEADER_RECORD_ID),
        Bytes::from(format!("{digest:016x}")),
    )
}

/// `s` as a slice of whichever of `buffers` it points into (no copy), or else a copy.
fn shared_slice(s: &str, buffers: [&Bytes; 2]) -> Bytes {
    let (p, len) = (s.as_ptr() as usize, s.len());
    for b in buffers {
        let start = b.as_ptr() as usize;
        if p >= start && p + len <= start + b.len() {
            return b.slice_ref(s.as_bytes());
        }
    }
    Bytes::copy_from_slice(s.as_bytes())
}

/// `{"time", "<measurement>": {...}, "start", "end", "sensor"}`; the tutorial's two fields first.
struct AggregateValue<'a> {
    w: &'a ClosedWindow,
    sensor: &'a str,
    measurement: MeasurementName<'a>,
}

/// The statistics object's name: fixed for the route (the tutorial's record, unchanged), or the
/// series' own, which the record then also gives as `"measurement"`.
enum MeasurementName<'a> {
    Fixed(&'a str),
    Named(&'a str),
}

impl Serialize for AggregateValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let w = self.w;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("time", &w.end_ms)?;
        let name = match self.measurement {
            MeasurementName::Fixed(n) | MeasurementName::Named(n) => n,
        };
        m.serialize_entry(name, &Stats(w))?;
        m.serialize_entry("start", &w.start_ms)?;
        m.serialize_entry("end", &w.end_ms)?;
        m.serialize_entry("sensor", self.sensor)?;
        if let MeasurementName::Named(n) = self.measurement {
            m.serialize_entry("measurement", n)?;
        }
        m.end()
    }
}

struct Stats<'a>(&'a ClosedWindow);

impl Serialize for Stats<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = &self.0.agg;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("count", &a.count)?;
        m.serialize_entry("min", &Num(a.min))?;
        m.serialize_entry("max", &Num(a.max))?;
        m.serialize_entry("mean", &a.mean())?;
        m.serialize_entry("sum", &Num(a.sum))?;
        m.end()
    }
}

/// A number written as an integer when it is one (as the tutorial's integer readings gave
/// `"min": 12`), else as a float. Mean is always a float, as Python's division made it.
struct Num(f64);

/// Integers up to 2^53 are exact in f64; beyond that, write the float.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0.abs() <= EXACT_INT {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregate;
    use crate::window::CloseCause;
    use std::borrow::Cow;

    fn window(agg: Aggregate) -> ClosedWindow {
        ClosedWindow {
            sensor: "Sensor1".into(),
            start_ms: 1_718_000_000_000,
            end_ms: 1_718_000_010_000,
            agg,
            cause: CloseCause::Watermark,
        }
    }

    /// An encoder that sends record ids, and the topic on every raw record.
    fn with_ids() -> Encoder {
        let options = EncodeOptions {
            id_header: true,
            ..EncodeOptions::default()
        };
        Encoder::new(&options, false)
    }

    #[test]
    fn raw_keeps_payload_and_carries_topic_and_properties() {
        let r = Reading {
            sensor: Cow::Borrowed("s1"),
            ts_ms: 42,
            value: 1.0,
            ts_from_payload: true,
        };
        let payload = Bytes::from_static(br#"{"ts": 42, "value": 1}"#);
        let rec = with_ids().raw(
            &r,
            &ByteString::from_static("sensors/s1/temperature"),
            payload.clone(),
            &[("site".into(), "north".into())],
        );
        assert_eq!(rec.key, "s1");
        assert_eq!(rec.value, payload);
        assert_eq!(rec.timestamp_ms, 42);
        assert_eq!(
            rec.headers[..2],
            [
                ("mqtt.topic".into(), Bytes::from("sensors/s1/temperature")),
                ("site".into(), Bytes::from("north")),
            ]
        );
        assert_eq!(rec.headers[2].0, HEADER_RECORD_ID);
        let late = with_ids().late(&rec, 0);
        assert_eq!(late.headers.last().unwrap().0, HEADER_LATE_WINDOW);
        assert_eq!(late.value, rec.value);
        assert_ne!(id(&late), id(&rec), "the late copy is another record");
    }

    #[test]
    fn user_properties_cannot_pose_as_the_bridge_s_own_headers() {
        let r = Reading {
            sensor: Cow::Borrowed("s1"),
            ts_ms: 42,
            value: 1.0,
            ts_from_payload: true,
        };
        let props: Vec<(String, String)> = RESERVED_HEADERS
            .iter()
            .map(|h| (h.to_string(), "forged".to_string()))
            .chain([("edge.id.x".into(), "kept".into())])
            .collect();
        let rec = with_ids().raw(
            &r,
            &ByteString::from_static("sensors/s1/temperature"),
            Bytes::from_static(br#"{"value": 1}"#),
            &props,
        );
        let late = with_ids().late(&rec, 0);
        for rec in [&rec, &late] {
            for h in RESERVED_HEADERS {
                assert!(
                    rec.headers
                        .iter()
                        .filter(|(k, _)| k == h)
                        .all(|(_, v)| v != "forged"),
                    "{h} forged in {:?}",
                    rec.headers
                );
                let renamed = format!("mqtt.user.{h}");
                assert!(rec
                    .headers
                    .iter()
                    .any(|(k, v)| *k == renamed && v == "forged"));
            }
            assert!(rec
                .headers
                .iter()
                .any(|(k, v)| k == "edge.id.x" && v == "kept"));
        }
        assert_eq!(
            rec.headers
                .iter()
                .filter(|(k, _)| k == HEADER_RECORD_ID)
                .count(),
            1
        );
        assert_ne!(id(&late), id(&rec), "the late copy has its own id");
    }

    #[test]
    fn raw_key_shares_the_buffer_it_was_read_from() {
        let topic = ByteString::from(String::from("sensors/s1/temperature"));
        let payload = Bytes::from(r#"{"sensor": "s2", "value": 1}"#);
        let reading = |sensor| Reading {
            sensor,
            ts_ms: 42,
            value: 1.0,
            ts_from_payload: true,
        };
        let within = |inner: &Bytes, outer: &[u8]| {
            let (p, o) = (inner.as_ptr() as usize, outer.as_ptr() as usize);
            p >= o && p + inner.len() <= o + outer.len()
        };
        let e = Encoder::default();
        let from_topic = e.raw(
            &reading(Cow::Borrowed(&topic[8..10])),
            &topic,
            payload.clone(),
            &[],
        );
        assert_eq!(from_topic.key, "s1");
        assert!(within(&from_topic.key, topic.as_bytes()));
        assert!(within(&from_topic.headers[0].1, topic.as_bytes()));
        let in_payload = std::str::from_utf8(&payload[12..14]).unwrap();
        let from_payload = e.raw(
            &reading(Cow::Borrowed(in_payload)),
            &topic,
            payload.clone(),
            &[],
        );
        assert_eq!(from_payload.key, "s2");
        assert!(within(&from_payload.key, &payload));
        // An id built by the decoder (joined wildcard levels) is copied.
        let joined = e.raw(
            &reading(Cow::Owned("a/b".into())),
            &topic,
            payload.clone(),
            &[],
        );
        assert_eq!(joined.key, "a/b");
        assert!(!within(&joined.key, topic.as_bytes()) && !within(&joined.key, &payload));
    }

    fn id(rec: &OutRecord) -> &Bytes {
        &rec.headers
            .iter()
            .find(|(k, _)| k == HEADER_RECORD_ID)
            .unwrap()
            .1
    }

    #[test]
    fn record_ids_are_stable_and_tell_records_apart() {
        let e = with_ids();
        let a = e.aggregate(&window(Aggregate::of(1.0)));
        // Fixed value: the id must not change between versions or platforms, or consumers
        // deduplicating across a bridge upgrade would see a replay as new records.
        assert_eq!(id(&a), &Bytes::from("0eb9c020d1a64955"));
        assert_eq!(id(&a), id(&e.aggregate(&window(Aggregate::of(1.0)))));
        assert_ne!(id(&a), id(&e.aggregate(&window(Aggregate::of(2.0)))));
        let err = DecodeError::MissingValue("value".into());
        let d1 = e.dead_letter("t", Bytes::from("{}"), 7, &err);
        let d2 = e.dead_letter("t", Bytes::from("{}"), 8, &err);
        assert_ne!(id(&d1), id(&d2));
        // The header is the function consumers compute, in hex.
        let computed = record_id(IdStream::Aggregate, &a.key, a.timestamp_ms, &a.value);
        assert_eq!(id(&a), &Bytes::from(format!("{computed:016x}")));
        let computed = record_id(IdStream::DeadLetter, &d1.key, d1.timestamp_ms, &d1.value);
        assert_eq!(id(&d1), &Bytes::from(format!("{computed:016x}")));
    }

    #[test]
    fn by_default_no_record_carries_an_id_and_the_topic_only_where_it_says_something() {
        let r = Reading {
            sensor: Cow::Borrowed("s1"),
            ts_ms: 42,
            value: 1.0,
            ts_from_payload: true,
        };
        let topic = ByteString::from_static("sensors/s1/temperature");
        let payload = Bytes::from_static(br#"{"value": 1}"#);
        let names = |rec: &OutRecord| -> Vec<String> {
            rec.headers.iter().map(|(k, _)| k.to_string()).collect()
        };
        let lean = Encoder::new(&EncodeOptions::default(), true);
        let raw = lean.raw(&r, &topic, payload.clone(), &[("site".into(), "n".into())]);
        assert_eq!(names(&raw), ["site"]);
        assert!(lean
            .raw(&r, &topic, payload.clone(), &[])
            .headers
            .is_empty());
        assert_eq!(names(&lean.late(&raw, 0)), ["site", HEADER_LATE_WINDOW]);
        assert!(lean
            .aggregate(&window(Aggregate::of(1.0)))
            .headers
            .is_empty());
        let err = DecodeError::MissingValue("value".into());
        assert_eq!(
            names(&lean.dead_letter("t", payload.clone(), 7, &err)),
            [HEADER_MQTT_TOPIC, HEADER_ERROR_REASON, HEADER_ERROR_MESSAGE]
        );
        // The topic does not follow from the key: it is sent.
        let auto = Encoder::new(&EncodeOptions::default(), false);
        assert_eq!(
            names(&auto.raw(&r, &topic, payload.clone(), &[])),
            [HEADER_MQTT_TOPIC]
        );
        let always = EncodeOptions {
            topic_header: TopicHeader::Always,
            ..EncodeOptions::default()
        };
        assert_eq!(
            names(&Encoder::new(&always, true).raw(&r, &topic, payload, &[])),
            [HEADER_MQTT_TOPIC]
        );
    }

    #[test]
    fn aggregate_value_matches_the_contract() {
        let rec = Encoder::default().aggregate(&window(Aggregate {
            count: 4,
            min: 12.0,
            max: 80.0,
            sum: 182.0,
        }));
        assert_eq!(rec.key, "Sensor1");
        assert_eq!(rec.timestamp_ms, 1_718_000_000_000);
        assert_eq!(
            std::str::from_utf8(&rec.value).unwrap(),
            r#"{"time":1718000010000,"temperature":{"count":4,"min":12,"max":80,"mean":45.5,"sum":182},"start":1718000000000,"end":1718000010000,"sensor":"Sensor1"}"#
        );
    }

    #[test]
    fn aggregate_keeps_fractions_and_the_measurement_name() {
        let humidity = EncodeOptions {
            measurement: "humidity".into(),
            ..EncodeOptions::default()
        };
        let rec = Encoder::new(&humidity, false).aggregate(&window(Aggregate {
            count: 2,
            min: 20.5,
            max: 21.0,
            sum: 41.5,
        }));
        let v: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
        assert_eq!(v["humidity"]["min"], 20.5);
        assert_eq!(v["humidity"]["max"], 21);
        assert_eq!(v["humidity"]["mean"], 20.75);
        assert!(v.get("temperature").is_none());
    }

    #[test]
    fn aggregate_is_deterministic_whatever_closed_it() {
        let agg = Aggregate::of(1.0);
        let mut idle = window(agg);
        idle.cause = CloseCause::Idle;
        let e = Encoder::default();
        assert_eq!(e.aggregate(&window(agg)), e.aggregate(&idle));
    }

    #[test]
    fn dead_letter_names_the_reason() {
        let err = DecodeError::MissingValue("value".into());
        let rec =
            Encoder::default().dead_letter("sensors/x/temperature", Bytes::from("{}"), 7, &err);
        assert_eq!(rec.key, "sensors/x/temperature");
        assert_eq!(rec.value, "{}");
        assert_eq!(rec.timestamp_ms, 7);
        assert_eq!(
            rec.headers[1],
            ("error.reason".into(), Bytes::from("missing_value"))
        );
        assert_eq!(
            rec.headers[2].1,
            Bytes::from("payload has no `value` field")
        );
    }
}
