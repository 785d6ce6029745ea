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
