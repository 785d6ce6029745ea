//! Golden test: the tutorial's payloads (plain and double-encoded JSON, `isoformat()` times with
//! and without microseconds) in order, out of order within grace, and late beyond grace. The
//! expected aggregate records in `fixtures/tutorial-expected.jsonl` were worked out by hand from
//! the window rules (10 s windows, 1 s grace); they are what the tutorial's Quix Streams
//! processor emits for the same readings, plus our `sum`, `start`, `end` and `sensor` fields.

use bytes::Bytes;
use edge_bridge_core::{
    DecodeOptions, EncodeOptions, Pipeline, Routed, Stream, Verdict, WindowOptions,
};
use serde_json::{json, Value};

/// Wall clock during the run: a minute after the readings, well within the future-skew limit.
const NOW: i64 = 1_718_000_060_000;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn as_json(r: &Routed) -> Value {
    json!({
        "key": std::str::from_utf8(&r.record.key).unwrap(),
        "timestamp": r.record.timestamp_ms,
        "value": serde_json::from_slice::<Value>(&r.record.value).unwrap(),
    })
}

#[test]
fn tutorial_readings_give_hand_computed_aggregates() {
    let mut p = Pipeline::new(
        DecodeOptions::default(),
        WindowOptions::default(),
        &EncodeOptions::default(),
        false,
    )
    .unwrap();
    let mut out = Vec::new();
    let mut verdicts = Vec::new();
    let input = fixture("tutorial-readings.tsv");
    for line in input.lines() {
        let (topic, payload) = line.split_once('\t').unwrap();
        let payload = Bytes::copy_from_slice(payload.as_bytes());
        verdicts.push(p.ingest(&topic.into(), payload, &[], NOW, &mut out));
    }

    let late = verdicts.iter().filter(|v| **v == Verdict::Late).count();
    assert_eq!(
        late, 3,
        "06:13:20.5 of Sensor2, 06:13:28 and 06:13:39 of Sensor1"
    );
    assert!(verdicts
        .iter()
        .all(|v| matches!(v, Verdict::Aggregated | Verdict::Late)));

    // Every reading, late or not, is in the raw stream with its payload untouched.
    let raw: Vec<&Routed> = out.iter().filter(|r| r.stream == Stream::Raw).collect();
    assert_eq!(raw.len(), input.lines().count());
    for (r, line) in raw.iter().zip(input.lines()) {
        assert_eq!(r.record.value, line.split_once('\t').unwrap().1.as_bytes());
    }

    let got: Vec<Value> = out
        .iter()
        .filter(|r| r.stream == Stream::Aggregate)
        .map(as_json)
        .collect();
    let expected: Vec<Value> = fixture("tutorial-expected.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, expected);

    // The tutorial's processor never emits the last windows; our idle flush does, once the
    // sensors have been silent for the idle timeout.
    out.clear();
    p.flush_idle(NOW + 29_999, &mut out);
    assert!(out.is_empty());
    p.flush_idle(NOW + 30_000, &mut out);
    let mut flushed: Vec<Value> = out.iter().map(as_json).collect();
    flushed.sort_by_key(|v| v["key"].as_str().unwrap().to_owned());
    assert_eq!(
        flushed,
        vec![
            json!({"key": "Sensor1", "timestamp": 1718000020000_i64, "value": {"time": 1718000030000_i64,
                "temperature": {"count": 1, "min": 90, "max": 90, "mean": 90.0, "sum": 90},
                "start": 1718000020000_i64, "end": 1718000030000_i64, "sensor": "Sensor1"}}),
            json!({"key": "Sensor2", "timestamp": 1718000020000_i64, "value": {"time": 1718000030000_i64,
                "temperature": {"count": 1, "min": 6, "max": 6, "mean": 6.0, "sum": 6},
                "start": 1718000020000_i64, "end": 1718000030000_i64, "sensor": "Sensor2"}}),
        ]
    );
}
