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
//! Every record carries a stable id (`edge.id`): a hash of its stream, key, timestamp and value.
//! A record sent twice (after a crash, a spool replay or an MQTT redelivery) carries the same id
//! both times, so a consumer removes duplicates by remembering recent ids per key.

use std::borrow::Cow;

use bytes::Bytes;
use bytestring::ByteString;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::decode::{DecodeError, Reading};
use crate::window::ClosedWindow;

/// Header holding the MQTT topic a record came from.
pub const HEADER_MQTT_TOPIC: &str = "mqtt.topic";
/// Every record: a stable id, 16 hex digits (see the module documentation).
pub const HEADER_RECORD_ID: &str = "edge.id";
/// Dead letters: the short reason code (`not_json`, `bad_timestamp`, ...).
pub const HEADER_ERROR_REASON: &str = "error.reason";
/// Dead letters: the full message, saying what to fix.
pub const HEADER_ERROR_MESSAGE: &str = "error.message";
/// Late records: the start (epoch ms) of the closed window the reading belonged to.
pub const HEADER_LATE_WINDOW: &str = "late.window_start";

/// Header names the bridge writes itself. An MQTT 5 user property with one of these names is
/// renamed with [`USER_PROPERTY_PREFIX`], so that a sensor cannot forge a record id or a topic
/// and consumers that read the first header with a name get the bridge's.
const RESERVED_HEADERS: [&str; 5] = [
    HEADER_MQTT_TOPIC,
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

/// Encodes records; holds the measurement name used in aggregate values.
#[derive(Debug, Clone)]
pub struct Encoder {
    measurement: String,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new("temperature")
    }
}

impl Encoder {
    pub fn new(measurement: impl Into<String>) -> Self {
        Self {
            measurement: measurement.into(),
        }
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
        let mut headers = Vec::with_capacity(2 + user_properties.len());
        headers.push((
            Cow::Borrowed(HEADER_MQTT_TOPIC),
            mqtt_topic.as_bytes().clone(),
        ));
        headers.extend(user_properties.iter().map(|(k, v)| {
            let name = if RESERVED_HEADERS.contains(&k.as_str()) {
                format!("{USER_PROPERTY_PREFIX}{k}")
            } else {
                k.clone()
            };
            (Cow::Owned(name), Bytes::copy_from_slice(v.as_bytes()))
        }));
        let key = shared_slice(&reading.sensor, [mqtt_topic.as_bytes(), &payload]);
        headers.push(id_header(b'r', &key, reading.ts_ms, &payload));
        OutRecord {
            key,
            value: payload,
            timestamp_ms: reading.ts_ms,
            headers,
        }
    }

    /// A raw record routed to the late topic: the raw record plus the closed window's start.
    pub fn late(&self, raw: &OutRecord, window_start_ms: i64) -> OutRecord {
        let mut late = raw.clone();
        let id = id_header(b'l', &late.key, late.timestamp_ms, &late.value);
        match late.headers.iter_mut().find(|(k, _)| k == HEADER_RECORD_ID) {
            Some(h) => *h = id,
            None => late.headers.push(id),
        }
        late.headers.push((
            Cow::Borrowed(HEADER_LATE_WINDOW),
            Bytes::from(window_start_ms.to_string()),
        ));
        late
    }

    /// The aggregate record of a closed window.
    pub fn aggregate(&self, w: &ClosedWindow) -> OutRecord {
        let value = serde_json::to_vec(&AggregateValue {
            w,
            measurement: &self.measurement,
        })
        .expect("serializing numbers and strings to a Vec cannot fail");
        let key = Bytes::copy_from_slice(w.sensor.as_bytes());
        let value = Bytes::from(value);
        let headers = vec![id_header(b'a', &key, w.start_ms, &value)];
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
        let id = id_header(b'd', &key, arrival_ms, &payload);
        OutRecord {
            key,
            value: payload,
            timestamp_ms: arrival_ms,
            headers: vec![
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
                id,
            ],
        }
    }
}

/// The `edge.id` header: xxh3 (stable across versions and platforms, unlike std's hasher)
/// over a stream tag, the key, the timestamp and the value, with length prefixes so that no
/// two different records hash the same input.
fn id_header(stream: u8, key: &[u8], timestamp_ms: i64, value: &[u8]) -> (HeaderName, Bytes) {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&[stream]);
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(&timestamp_ms.to_le_bytes());
    h.update(value);
    let digest = h.digest();
    let mut hex = [0u8; 16];
    for (i, digit) in hex.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(digest >> (60 - 4 * i) & 0xf) as usize];
    }
    (
        Cow::Borrowed(HEADER_RECORD_ID),
        Bytes::copy_from_slice(&hex),
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
    measurement: &'a str,
}

impl Serialize for AggregateValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let w = self.w;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("time", &w.end_ms)?;
        m.serialize_entry(self.measurement, &Stats(w))?;
        m.serialize_entry("start", &w.start_ms)?;
        m.serialize_entry("end", &w.end_ms)?;
        m.serialize_entry("sensor", &*w.sensor)?;
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

    #[test]
    fn raw_keeps_payload_and_carries_topic_and_properties() {
        let r = Reading {
            sensor: Cow::Borrowed("s1"),
            ts_ms: 42,
            value: 1.0,
            ts_from_payload: true,
        };
        let payload = Bytes::from_static(br#"{"ts": 42, "value": 1}"#);
        let rec = Encoder::default().raw(
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
        let late = Encoder::default().late(&rec, 0);
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
        let rec = Encoder::default().raw(
            &r,
            &ByteString::from_static("sensors/s1/temperature"),
            Bytes::from_static(br#"{"value": 1}"#),
            &props,
        );
        let late = Encoder::default().late(&rec, 0);
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
        let e = Encoder::default();
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
        let rec = Encoder::new("humidity").aggregate(&window(Aggregate {
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
