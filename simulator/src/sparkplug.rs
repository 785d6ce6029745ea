//! `--profile sparkplug`: each simulated sensor is a Sparkplug B device (spBv1.0) under an edge
//! node, [`DEVICES_PER_NODE`] devices per node, in group [`GROUP`].
//!
//! A node's first message is its NBIRTH (bdSeq, `Node Control/Rebirth`, and a boolean
//! `Status/Running` by alias); a device's first reading is its DBIRTH, which names its
//! [`METRICS`] with their aliases and datatypes and carries the reading's values; every later
//! reading is a DDATA of the ten metrics by alias only, as Sparkplug nodes send them. The
//! chatter is an NDATA of `Status/Running`, which holds no measurement. `seq` runs 0..=255 per
//! node over all its messages, as the specification asks.

use protobuf::Message as _;
use sparkplug_rs::payload::metric::Value;
use sparkplug_rs::payload::Metric;
use sparkplug_rs::Payload;

/// The Sparkplug group of every simulated node.
pub const GROUP: &str = "edge-sim";
/// Devices under one edge node.
pub const DEVICES_PER_NODE: u32 = 100;

/// Sparkplug B datatypes used here (`DataType` in sparkplug_b.proto).
const INT32: u32 = 3;
const INT64: u32 = 4;
const FLOAT: u32 = 9;
const DOUBLE: u32 = 10;
const BOOLEAN: u32 = 11;

/// A device's metrics, aliases 1 to 10 in this order, each with its datatype.
pub const METRICS: [(&str, u32); 10] = [
    ("temperature", DOUBLE),
    ("humidity", FLOAT),
    ("pressure", DOUBLE),
    ("battery", INT32),
    ("rssi", INT32),
    ("probe_1", DOUBLE),
    ("probe_2", DOUBLE),
    ("probe_3", DOUBLE),
    ("probe_4", DOUBLE),
    ("probe_5", DOUBLE),
];

/// The node metric of the chatter.
const RUNNING_ALIAS: u64 = 100;

/// What each of [`METRICS`] reads when the temperature is `t`, as the bridge reads it back
/// (the humidity through an f32).
pub fn values(t: f64) -> [f64; 10] {
    let probe = |i: f64| ((t + i / 10.0) * 100.0).round() / 100.0;
    [
        t,
        f64::from(crate::profile::humidity(t) as f32),
        crate::profile::pressure(t),
        97.0,
        -67.0,
        probe(1.0),
        probe(2.0),
        probe(3.0),
        probe(4.0),
        probe(5.0),
    ]
}

/// The node a sensor's device belongs to.
pub fn node_of(k: u32) -> String {
    format!("node-{}", k / DEVICES_PER_NODE)
}

/// The topic of a message of `kind` (NBIRTH, DDATA, ...) from a node or one of its devices.
pub fn topic(kind: &str, node: &str, device: Option<&str>) -> String {
    match device {
        Some(d) => format!("spBv1.0/{GROUP}/{kind}/{node}/{d}"),
        None => format!("spBv1.0/{GROUP}/{kind}/{node}"),
    }
}

/// One message to publish: topic, protobuf bytes, and whether it carries a reading.
pub type Out = (String, Vec<u8>, bool);

/// Who has been born, and each node's `seq`.
#[derive(Debug)]
pub struct Nodes {
    device_born: Vec<bool>,
    node_seq: Vec<Option<u8>>,
}

impl Nodes {
    pub fn new(sensors: u32) -> Self {
        Nodes {
            device_born: vec![false; sensors as usize],
            node_seq: vec![None; sensors.div_ceil(DEVICES_PER_NODE) as usize],
        }
    }

    /// The messages for a reading of temperature `t` by sensor `k` at `ts_ms`: the births it
    /// needs first, then the reading itself (a DBIRTH the first time, else a DDATA).
    pub fn reading(&mut self, k: u32, device: &str, ts_ms: i64, t: f64) -> Vec<Out> {
        let node = node_of(k);
        let n = (k / DEVICES_PER_NODE) as usize;
        let mut out = Vec::with_capacity(3);
        if self.node_seq[n].is_none() {
            let metrics = vec![
                metric(Some("bdSeq"), None, INT64, Value::LongValue(0)),
                metric(
                    Some("Node Control/Rebirth"),
                    None,
                    BOOLEAN,
                    Value::BooleanValue(false),
                ),
                metric(
                    Some("Status/Running"),
                    Some(RUNNING_ALIAS),
                    BOOLEAN,
                    Value::BooleanValue(true),
                ),
            ];
            out.push((
                topic("NBIRTH", &node, None),
                self.payload(n, ts_ms, metrics),
                false,
            ));
        }
        let born = std::mem::replace(&mut self.device_born[k as usize], true);
        let metrics = METRICS
            .iter()
            .zip(values(t))
            .enumerate()
            .map(|(i, ((name, datatype), v))| {
                let value = match *datatype {
                    FLOAT => Value::FloatValue(v as f32),
                    INT32 => Value::IntValue(v as i32 as u32),
                    _ => Value::DoubleValue(v),
                };
                let alias = Some(i as u64 + 1);
                if born {
                    let mut m = metric(None, alias, *datatype, value);
                    // DATA leaves the datatype to the BIRTH, as nodes do to save bytes.
                    m.datatype = None;
                    m
                } else {
                    metric(Some(name), alias, *datatype, value)
                }
            })
            .collect();
        let kind = if born { "DDATA" } else { "DBIRTH" };
        out.push((
            topic(kind, &node, Some(device)),
            self.payload(n, ts_ms, metrics),
            true,
        ));
        out
    }

    /// The node's status chatter: an NDATA with no measurement.
    pub fn chatter(&mut self, k: u32, ts_ms: i64) -> Option<Out> {
        let n = (k / DEVICES_PER_NODE) as usize;
        self.node_seq[n]?;
        let mut running = metric(
            None,
            Some(RUNNING_ALIAS),
            BOOLEAN,
            Value::BooleanValue(true),
        );
        running.datatype = None;
        let payload = self.payload(n, ts_ms, vec![running]);
        Some((topic("NDATA", &node_of(k), None), payload, false))
    }

    fn payload(&mut self, node: usize, ts_ms: i64, metrics: Vec<Metric>) -> Vec<u8> {
        // NBIRTH has seq 0; each message after it the next, 255 wrapping to 0.
        let seq = self.node_seq[node].map_or(0, |s| s.wrapping_add(1));
        self.node_seq[node] = Some(seq);
        let mut p = Payload::new();
        p.timestamp = Some(ts_ms as u64);
        p.seq = Some(u64::from(seq));
        p.metrics = metrics;
        p.write_to_bytes()
            .expect("a payload built here always encodes")
    }
}

fn metric(name: Option<&str>, alias: Option<u64>, datatype: u32, value: Value) -> Metric {
    let mut m = Metric::new();
    m.name = name.map(str::to_owned);
    m.alias = alias;
    m.datatype = Some(datatype);
    m.value = Some(value);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Payload {
        Payload::parse_from_bytes(bytes).unwrap()
    }

    #[test]
    fn births_come_first_and_data_uses_aliases() {
        let mut nodes = Nodes::new(150);
        let first = nodes.reading(0, "Sensor1", 1_000, 21.5);
        let topics: Vec<&str> = first.iter().map(|(t, _, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "spBv1.0/edge-sim/NBIRTH/node-0",
                "spBv1.0/edge-sim/DBIRTH/node-0/Sensor1"
            ]
        );
        let birth = parse(&first[1].1);
        assert_eq!(birth.metrics.len(), 10);
        assert_eq!(birth.metrics[0].name.as_deref(), Some("temperature"));
        assert_eq!(birth.seq, Some(1));
        // A second device of the same node: no NBIRTH again; one of the next node: its own.
        assert_eq!(nodes.reading(1, "Sensor2", 1_000, 20.0).len(), 1);
        assert_eq!(nodes.reading(100, "Sensor101", 1_000, 20.0).len(), 2);
        let data = nodes.reading(0, "Sensor1", 1_250, 21.75);
        assert_eq!(data[0].0, "spBv1.0/edge-sim/DDATA/node-0/Sensor1");
        let p = parse(&data[0].1);
        assert!(p
            .metrics
            .iter()
            .all(|m| m.name.is_none() && m.alias.is_some()));
        assert_eq!(p.timestamp, Some(1_250));
        assert_eq!(p.seq, Some(3));
        let chatter = nodes.chatter(0, 1_300).unwrap();
        assert_eq!(chatter.0, "spBv1.0/edge-sim/NDATA/node-0");
        assert!(!chatter.2);
    }

    #[test]
    fn seq_wraps_after_255() {
        let mut nodes = Nodes::new(1);
        for _ in 0..300 {
            nodes.reading(0, "Sensor1", 0, 20.0);
        }
        let p = parse(&nodes.reading(0, "Sensor1", 0, 20.0)[0].1);
        // NBIRTH 0, then 301 more messages: 301 mod 256.
        assert_eq!(p.seq, Some(301 % 256));
    }
}
