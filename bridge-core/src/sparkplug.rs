//! Sparkplug B (spBv1.0): the industrial convention for MQTT edge nodes. Protobuf payloads
//! (Eclipse Tahu's `sparkplug_b.proto`, decoded by the `sparkplug-rs` crate) on topics
//! `spBv1.0/<group>/<message type>/<edge node>[/<device>]`.
//!
//! BIRTH messages name a node's or device's metrics, with their aliases and datatypes; DATA
//! messages may then give a metric by alias alone, so the bridge keeps each node's and device's
//! alias table from its last BIRTH, forgets it at its DEATH (and a node's BIRTH or DEATH starts
//! a new session for its devices too). The sensor id is `group/node[/device]`, each metric is
//! a measurement named by its metric name, and its event time is the metric's timestamp, else
//! the payload's, else the arrival time. Numeric datatypes are aggregated; booleans, strings,
//! datasets, templates, nulls and the control metrics (`bdSeq`, `Node Control/...`,
//! `Device Control/...`, `Properties/...`) are not.

use hashbrown::HashMap;
use protobuf::Message as _;
use smol_str::SmolStr;
use sparkplug_rs::payload::metric::Value as PbValue;
use sparkplug_rs::Payload;

use crate::decode::{self, DecodeError};
use crate::timestamp::{self, EpochUnit};

/// The topic namespace's first level.
pub const NAMESPACE: &str = "spBv1.0";

/// What a Sparkplug message became.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Measurements of `sensor`: (metric name, value, event time), in the payload's order,
    /// and the payload's own event time (for the raw record). Never empty.
    Measured {
        sensor: String,
        ts_ms: i64,
        ts_from_payload: bool,
        values: Vec<(SmolStr, f64, i64)>,
    },
    /// A DEATH, a command, a host's STATE, or a BIRTH/DATA without a numeric metric: counted,
    /// no record.
    Control,
}

/// Message types of the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Birth,
    Death,
    Data,
    Command,
}

/// One metric's definition from a BIRTH.
#[derive(Debug, Clone)]
struct Defined {
    name: SmolStr,
    datatype: u32,
}

/// A node's or a device's metrics since its BIRTH.
#[derive(Debug, Default, Clone)]
struct Table {
    by_alias: HashMap<u64, Defined>,
    datatype_by_name: HashMap<SmolStr, u32>,
}

/// The alias tables of every node and device seen, and the limits a payload must keep.
#[derive(Debug, Clone)]
pub struct SparkplugDecoder {
    /// Key: `group/node` for a node, `group/node/device` for a device.
    tables: HashMap<String, Table>,
    max_tables: usize,
    max_future_skew_ms: i64,
    max_sensor_id_bytes: usize,
    /// With `ask_rebirth`: the rebirth requests due and when each node was last asked.
    rebirths: Option<Rebirths>,
}

/// The shortest time between two rebirth requests to one node: a node sends DATA while its
/// rebirth is on its way, and each of those would otherwise ask again.
pub const REBIRTH_INTERVAL_MS: i64 = 30_000;

/// An MQTT message for the bridge to publish: topic and payload.
pub type Command = (String, Vec<u8>);

/// Rebirth requests (NCMD `Node Control/Rebirth`) for nodes whose DATA used an alias no BIRTH
/// defined: at most one per node per [`REBIRTH_INTERVAL_MS`].
#[derive(Debug, Clone, Default)]
struct Rebirths {
    /// `group/node` -> when it was last asked (arrival clock).
    asked: HashMap<String, i64>,
    due: Vec<Command>,
}

impl Rebirths {
    fn ask(&mut self, group: &str, node: &str, now_ms: i64, max: usize) {
        let key = format!("{group}/{node}");
        if self
            .asked
            .get(&key)
            .is_some_and(|t| now_ms - t < REBIRTH_INTERVAL_MS)
        {
            return;
        }
        if self.asked.len() >= max {
            self.asked.retain(|_, t| now_ms - *t < REBIRTH_INTERVAL_MS);
            if self.asked.len() >= max {
                return;
            }
        }
        self.asked.insert(key, now_ms);
        self.due.push(rebirth_request(group, node, now_ms));
    }
}

/// The NCMD that asks an edge node to send its BIRTH messages again (Sparkplug B 3.0,
/// "Node Control/Rebirth": a Boolean metric set to true), timestamped `now_ms`.
pub fn rebirth_request(group: &str, node: &str, now_ms: i64) -> Command {
    let mut metric = sparkplug_rs::payload::Metric::new();
    metric.name = Some("Node Control/Rebirth".to_owned());
    metric.timestamp = Some(now_ms.max(0) as u64);
    metric.datatype = Some(BOOLEAN);
    metric.value = Some(PbValue::BooleanValue(true));
    let mut payload = Payload::new();
    payload.timestamp = Some(now_ms.max(0) as u64);
    payload.metrics = vec![metric];
    let bytes = payload
        .write_to_bytes()
        .expect("a payload of one boolean metric always encodes");
    (format!("{NAMESPACE}/{group}/NCMD/{node}"), bytes)
}

// Sparkplug B datatypes (sparkplug_b.proto, DataType).
const INT8: u32 = 1;
const INT16: u32 = 2;
const INT32: u32 = 3;
const INT64: u32 = 4;
const UINT8: u32 = 5;
const UINT16: u32 = 6;
const UINT32: u32 = 7;
const UINT64: u32 = 8;
const FLOAT: u32 = 9;
const DOUBLE: u32 = 10;
const BOOLEAN: u32 = 11;

impl SparkplugDecoder {
    /// At most `max_tables` nodes and devices are remembered (a BIRTH beyond that is still
    /// read, but its aliases are not kept, and the DATA that use them are dead letters).
    pub fn new(max_tables: usize, max_future_skew_ms: i64, max_sensor_id_bytes: usize) -> Self {
        Self {
            tables: HashMap::new(),
            max_tables,
            max_future_skew_ms,
            max_sensor_id_bytes,
            rebirths: None,
        }
    }

    /// The same decoder asking a node for its BIRTH messages again (see
    /// [`SparkplugDecoder::take_commands`]) when its DATA uses an alias that no BIRTH defined.
    pub fn asking_rebirth(mut self) -> Self {
        self.rebirths = Some(Rebirths::default());
        self
    }

    /// The rebirth requests due, to publish; empties the list.
    pub fn take_commands(&mut self) -> Vec<Command> {
        self.rebirths
            .as_mut()
            .map(|r| std::mem::take(&mut r.due))
            .unwrap_or_default()
    }

    /// Nodes and devices whose BIRTH is remembered.
    pub fn known(&self) -> usize {
        self.tables.len()
    }

    /// Reads one publish. `arrival_ms` is the gateway's clock.
    pub fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        arrival_ms: i64,
    ) -> Result<Outcome, DecodeError> {
        let levels: Vec<&str> = topic.split('/').collect();
        let bad_topic = |why: &str| DecodeError::TopicMismatch {
            topic: topic.to_owned(),
            filter: format!("{NAMESPACE}/<group>/<message type>/<edge node>[/<device>] ({why})"),
        };
        // A host application's STATE (spBv1.0/STATE/<host>, or Sparkplug 2's STATE/<host>).
        if levels.get(1) == Some(&"STATE") || levels.first() == Some(&"STATE") {
            return Ok(Outcome::Control);
        }
        if levels.first() != Some(&NAMESPACE) || !(4..=5).contains(&levels.len()) {
            return Err(bad_topic("not a Sparkplug B topic"));
        }
        if levels.iter().any(|l| l.is_empty()) {
            return Err(bad_topic("an empty level"));
        }
        let (group, kind_text, node) = (levels[1], levels[2], levels[3]);
        let device = levels.get(4).copied();
        let kind = match (kind_text, device.is_some()) {
            ("NBIRTH", false) | ("DBIRTH", true) => Kind::Birth,
            ("NDEATH", false) | ("DDEATH", true) => Kind::Death,
            ("NDATA", false) | ("DDATA", true) => Kind::Data,
            ("NCMD", false) | ("DCMD", true) => Kind::Command,
            _ => {
                return Err(bad_topic(
                    "unknown message type, or a device level where it does not belong",
                ))
            }
        };
        let key = match device {
            Some(d) => format!("{group}/{node}/{d}"),
            None => format!("{group}/{node}"),
        };
        match kind {
            Kind::Command => return Ok(Outcome::Control),
            Kind::Death => {
                self.forget(&key, device.is_none());
                return Ok(Outcome::Control);
            }
            Kind::Birth | Kind::Data => {}
        }
        let parsed = Payload::parse_from_bytes(payload)
            .map_err(|e| DecodeError::NotProtobuf(e.to_string()))?;
        decode::check_sensor_id_len(&key, self.max_sensor_id_bytes)?;
        let unit = EpochUnit::Millis;
        let (ts_ms, ts_from_payload) = match parsed.timestamp {
            Some(t) => (timestamp::from_epoch_i64(clamp(t), unit)?, true),
            None => (arrival_ms, false),
        };
        if kind == Kind::Birth {
            // A node's BIRTH starts a new session for the node and each of its devices.
            self.forget(&key, device.is_none());
            let mut table = Table::default();
            for m in &parsed.metrics {
                if let (Some(name), Some(datatype)) = (m.name.as_deref(), m.datatype) {
                    let name = SmolStr::new(name);
                    if let Some(alias) = m.alias {
                        table.by_alias.insert(
                            alias,
                            Defined {
                                name: name.clone(),
                                datatype,
                            },
                        );
                    }
                    table.datatype_by_name.insert(name, datatype);
                }
            }
            if self.tables.len() < self.max_tables {
                self.tables.insert(key.clone(), table);
            }
        }
        let table = self.tables.get(&key);
        let mut values: Vec<(SmolStr, f64, i64)> = Vec::new();
        for m in &parsed.metrics {
            let defined = m.alias.and_then(|a| table?.by_alias.get(&a));
            let name = match (m.name.as_deref(), defined) {
                (Some(n), _) => SmolStr::new(n),
                (None, Some(d)) => d.name.clone(),
                (None, None) => {
                    let why = if table.is_none() && self.tables.len() >= self.max_tables {
                        format!(
                            "{} nodes and devices are remembered already (window.max_sensors)",
                            self.max_tables
                        )
                    } else if let Some(r) = self.rebirths.as_mut() {
                        r.ask(group, node, arrival_ms, self.max_tables);
                        "no BIRTH seen since the bridge started defines it; the node was asked for a rebirth (NCMD Node Control/Rebirth, at most every 30 s)".to_owned()
                    } else {
                        "no BIRTH seen since the bridge started defines it; the node's next BIRTH will (a rebirth request is not sent: ask_rebirth is off)".to_owned()
                    };
                    return Err(DecodeError::UnknownAlias(format!(
                        "metric alias {} of {key}: {why}",
                        m.alias.map_or("(none)".to_owned(), |a| a.to_string())
                    )));
                }
            };
            if is_control(&name) || m.is_null == Some(true) {
                continue;
            }
            if !crate::route::usable_name(&name) {
                return Err(DecodeError::BadMeasurementName(name.to_string()));
            }
            let datatype = m
                .datatype
                .or(defined.map(|d| d.datatype))
                .or_else(|| table?.datatype_by_name.get(&name).copied());
            let Some(value) = number(m.value.as_ref(), datatype) else {
                continue;
            };
            let metric_ts = match m.timestamp {
                Some(t) => timestamp::from_epoch_i64(clamp(t), unit)?,
                None => ts_ms,
            };
            values.push((name, value, metric_ts));
        }
        for (_, _, t) in &values {
            decode::check_future_skew(*t, arrival_ms, self.max_future_skew_ms)?;
        }
        if values.is_empty() {
            return Ok(Outcome::Control);
        }
        Ok(Outcome::Measured {
            sensor: key,
            ts_ms,
            ts_from_payload,
            values,
        })
    }

    /// Forgets `key`'s table, and for a node its devices' too.
    fn forget(&mut self, key: &str, node: bool) {
        self.tables.remove(key);
        if node {
            let prefix = format!("{key}/");
            self.tables.retain(|k, _| !k.starts_with(&prefix));
        }
    }
}

/// Control metrics that are numbers but not measurements.
fn is_control(name: &str) -> bool {
    name == "bdSeq"
        || name.starts_with("Node Control/")
        || name.starts_with("Device Control/")
        || name.starts_with("Properties/")
}

/// A timestamp beyond i64 is out of range either way.
fn clamp(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The number a metric's value stands for under `datatype`. Signed integers are stored as
/// their two's complement in the unsigned fields. Without a known datatype, integers are read
/// as signed (a temperature below zero is more common than a counter above 2^31).
fn number(value: Option<&PbValue>, datatype: Option<u32>) -> Option<f64> {
    let n = match (value?, datatype) {
        (PbValue::IntValue(v), Some(INT8)) => f64::from(*v as i8),
        (PbValue::IntValue(v), Some(INT16)) => f64::from(*v as i16),
        (PbValue::IntValue(v), Some(INT32) | None) => f64::from(*v as i32),
        (PbValue::IntValue(v), Some(UINT8 | UINT16 | UINT32)) => f64::from(*v),
        (PbValue::LongValue(v), Some(INT64) | None) => *v as i64 as f64,
        (PbValue::LongValue(v), Some(UINT64 | UINT32)) => *v as f64,
        (PbValue::FloatValue(v), Some(FLOAT) | None) => f64::from(*v),
        (PbValue::DoubleValue(v), Some(DOUBLE) | None) => *v,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

#[cfg(test)]
mod tests;
