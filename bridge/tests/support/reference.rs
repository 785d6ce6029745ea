//! The expected aggregates of a dataset, computed from the window definition in DESIGN.md and
//! nothing of the bridge: per sensor in arrival order, a reading is late iff its window's end
//! is at or before (largest event time so far, itself included) - grace; every other window is
//! emitted once (by watermark or, at the end, by the idle flush).

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
}

/// `(sensor, ts_ms, value)` in arrival order -> ((sensor, window start) -> aggregate, late).
pub fn windows(
    readings: &[(String, i64, f64)],
    size: i64,
    grace: i64,
) -> (BTreeMap<(String, i64), Expected>, usize) {
    let mut watermark: BTreeMap<&str, i64> = BTreeMap::new();
    let mut out: BTreeMap<(String, i64), Expected> = BTreeMap::new();
    let mut late = 0;
    for (sensor, ts, v) in readings {
        let w = watermark.entry(sensor).or_insert(*ts);
        *w = (*w).max(*ts);
        let start = ts - ts.rem_euclid(size);
        if start + size <= *w - grace {
            late += 1;
            continue;
        }
        out.entry((sensor.clone(), start))
            .and_modify(|e| {
                e.count += 1;
                e.min = e.min.min(*v);
                e.max = e.max.max(*v);
                e.sum += v;
            })
            .or_insert(Expected {
                count: 1,
                min: *v,
                max: *v,
                sum: *v,
            });
    }
    (out, late)
}

/// A sent dataset split into decodable and malformed messages, and the decodable ones as
/// `(sensor, ts_ms, value)` readings in arrival order, ready for [`windows`].
pub type Split<'a> = (
    Vec<&'a edge_sim::dataset::Message>,
    Vec<&'a edge_sim::dataset::Message>,
    Vec<(String, i64, f64)>,
);

pub fn split(sent: &[edge_sim::dataset::Message]) -> Split<'_> {
    let (good, bad): (Vec<_>, Vec<_>) = sent
        .iter()
        .partition(|m| m.kind != edge_sim::dataset::Kind::Malformed);
    let readings = good
        .iter()
        .map(|m| (m.sensor.clone(), m.ts_ms, m.value))
        .collect();
    (good, bad, readings)
}

/// Checks the aggregate records read back against [`windows`] of the readings `sent` (10 s
/// windows, 1 s grace: the defaults): every window present with its count, min and max, and a
/// window repeated by a replay only with the same values.
pub fn check_aggregates(records: &[super::Record], sent: &[edge_sim::dataset::Message]) {
    let readings: Vec<(String, i64, f64)> = sent
        .iter()
        .map(|m| (m.sensor.clone(), m.ts_ms, m.value))
        .collect();
    let (expected, _) = windows(&readings, 10_000, 1_000);
    let mut got = BTreeMap::new();
    for r in records {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        let t = &v["temperature"];
        let key = (r.key.clone(), v["start"].as_i64().unwrap());
        assert_eq!(r.timestamp, key.1, "Kafka timestamp of window {key:?}");
        let agg = (
            t["count"].as_u64().unwrap(),
            t["min"].as_f64().unwrap(),
            t["max"].as_f64().unwrap(),
        );
        // A replay may repeat an aggregate, but never with other values.
        if let Some(prev) = got.insert(key.clone(), agg) {
            assert_eq!(
                prev, agg,
                "window {key:?} emitted twice with different values"
            );
        }
    }
    assert_eq!(got.len(), expected.len(), "aggregates");
    for (k, e) in &expected {
        let g = got.get(k).unwrap_or_else(|| panic!("missing window {k:?}"));
        assert_eq!(*g, (e.count, e.min, e.max), "window {k:?}");
    }
}

/// Per-sensor order: for each of `sensors` sensors, its readings in `raw` (first copies only)
/// are the ones it sent, in the order it sent them.
pub fn check_order(raw: &[super::Record], sent: &[edge_sim::dataset::Message], sensors: u32) {
    for k in 0..sensors {
        let sensor = edge_sim::dataset::Dataset::sensor_id(k);
        let mut seen = std::collections::HashSet::new();
        let got: Vec<&[u8]> = raw
            .iter()
            .filter(|r| r.key == sensor && seen.insert(r.value.clone()))
            .map(|r| &r.value[..])
            .collect();
        let want: Vec<&[u8]> = sent
            .iter()
            .filter(|m| m.sensor == sensor)
            .map(|m| m.payload.as_bytes())
            .collect();
        assert!(got == want, "order of {sensor}");
    }
}
