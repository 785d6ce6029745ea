//! Property tests over random multi-sensor streams with random disorder.
//!
//! The windower is checked against a brute-force reference written here from the definition in
//! DESIGN.md, not from the implementation: per sensor, a reading is late iff its window's end is
//! at or before (largest event time up to and including it) - grace; the aggregate of a window
//! is over its non-late readings; a window closes during the stream iff the sensor's final
//! watermark reached end + grace, and the rest close at the final drain.
//!
//! Values are multiples of 0.25 of small magnitude, so every sum is exact in f64 and results
//! can be compared to the bit whatever the order of addition.

use std::collections::BTreeMap;

use bytes::Bytes;
use edge_bridge_core::{
    Aggregate, CloseCause, ClosedWindow, DecodeOptions, EncodeOptions, OutRecord, Pipeline,
    RawPolicy, Routed, Stream, Verdict, WindowOptions, Windower,
};
use proptest::prelude::*;

const T0: i64 = 1_718_000_000_000;
const SIZE: i64 = 10_000;
const GRACE: i64 = 1_000;

type Sensor = String;
/// (sensor, window start) -> aggregate, plus whether it closed before the final drain.
type Windows = BTreeMap<(Sensor, i64), (Aggregate, bool)>;

fn options() -> WindowOptions {
    WindowOptions {
        size_ms: SIZE,
        grace_ms: GRACE,
        idle_timeout_ms: i64::MAX / 4,
        max_sensors: 1_000,
        max_open_windows: 100_000,
    }
}

/// Per-sensor reading sequences: event times advance 250 ms per reading with jitter reaching
/// 15 s into the past (late or out of order) and 2 s into the future. Times are multiples of
/// 250 ms so that readings land exactly on window bounds and on `end + grace` often.
fn sensor_streams() -> impl Strategy<Value = Vec<Vec<(i64, f64)>>> {
    let reading = (-60i64..8, -400i32..400, 0u8..10);
    prop::collection::vec(prop::collection::vec(reading, 0..80), 1..7).prop_map(|sensors| {
        sensors
            .into_iter()
            .enumerate()
            .map(|(k, rs)| {
                rs.into_iter()
                    .enumerate()
                    .map(|(i, (jitter, v, big_jump))| {
                        // An occasional jump of several windows, as after a sensor reboot.
                        let jump = if big_jump == 0 { 3 * SIZE } else { 0 };
                        let ts = T0 + (k as i64 + i as i64 + jitter) * 250 + jump;
                        (ts.max(0), v as f64 * 0.25)
                    })
                    .collect()
            })
            .collect()
    })
}

/// Interleaves per-sensor sequences, keeping each sensor's own order, by a random schedule.
fn interleave(streams: &[Vec<(i64, f64)>], schedule: &[usize]) -> Vec<(Sensor, i64, f64)> {
    let mut next = vec![0usize; streams.len()];
    let mut out = Vec::new();
    let total: usize = streams.iter().map(Vec::len).sum();
    let mut pick = schedule.iter().cycle();
    while out.len() < total {
        let live: Vec<usize> = (0..streams.len())
            .filter(|&k| next[k] < streams[k].len())
            .collect();
        let k = live[pick.next().copied().unwrap_or(0) % live.len()];
        let (ts, v) = streams[k][next[k]];
        next[k] += 1;
        out.push((format!("sensor-{k}"), ts, v));
    }
    out
}

fn start_of(ts: i64) -> i64 {
    ts - ts.rem_euclid(SIZE)
}

/// The brute-force reference: returns the windows and the number of late readings.
fn reference(readings: &[(Sensor, i64, f64)]) -> (Windows, usize) {
    let mut by_sensor: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for (s, ts, v) in readings {
        by_sensor.entry(s).or_default().push((*ts, *v));
    }
    let mut windows = Windows::new();
    let mut late = 0;
    for (sensor, rs) in by_sensor {
        let final_w = rs.iter().map(|r| r.0).max().unwrap();
        for (i, &(ts, v)) in rs.iter().enumerate() {
            let w = rs[..=i].iter().map(|r| r.0).max().unwrap();
            let start = start_of(ts);
            if start + SIZE <= w - GRACE {
                late += 1;
                continue;
            }
            let closed_early = final_w >= start + SIZE + GRACE;
            windows
                .entry((sensor.to_owned(), start))
                .and_modify(|(a, _)| a.add(v))
                .or_insert((Aggregate::of(v), closed_early));
        }
    }
    (windows, late)
}

/// Runs the windower over the readings, then drains it.
fn run(readings: &[(Sensor, i64, f64)]) -> (Vec<ClosedWindow>, usize) {
    let mut w = Windower::new(options()).unwrap();
    let mut out = Vec::new();
    let mut late = 0;
    for (s, ts, v) in readings {
        match w.record(s, *ts, *v, 0, &mut out) {
            edge_bridge_core::Admission::Added { .. } => {}
            edge_bridge_core::Admission::Late { .. } => late += 1,
            edge_bridge_core::Admission::Refused(r) => panic!("refused: {r}"),
        }
    }
    w.drain(&mut out);
    assert_eq!(w.open_windows(), 0);
    (out, late)
}

/// Like `run`, but the windower is saved (through JSON, as the bridge stores it) and a fresh
/// one restored from it after each reading index in `restarts`.
fn run_with_restarts(
    readings: &[(Sensor, i64, f64)],
    restarts: &[usize],
) -> (Vec<ClosedWindow>, usize) {
    let mut w = Windower::new(options()).unwrap();
    let mut out = Vec::new();
    let mut late = 0;
    for (i, (s, ts, v)) in readings.iter().enumerate() {
        if restarts.contains(&i) {
            let json = serde_json::to_vec(&w.snapshot()).unwrap();
            w = Windower::new(options()).unwrap();
            w.restore(serde_json::from_slice(&json).unwrap(), 0, &mut out)
                .unwrap();
        }
        if let edge_bridge_core::Admission::Late { .. } = w.record(s, *ts, *v, 0, &mut out) {
            late += 1;
        }
    }
    w.drain(&mut out);
    (out, late)
}

fn as_map(closed: &[ClosedWindow]) -> Windows {
    let mut m = Windows::new();
    for c in closed {
        let prev = m.insert(
            (c.sensor.to_string(), c.start_ms),
            (c.agg, c.cause == CloseCause::Watermark),
        );
        assert!(
            prev.is_none(),
            "window {} {} emitted twice",
            c.sensor,
            c.start_ms
        );
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn agrees_with_brute_force_reference(streams in sensor_streams(), schedule in prop::collection::vec(0usize..100, 1..50)) {
        let readings = interleave(&streams, &schedule);
        let (closed, late) = run(&readings);
        let (expected, expected_late) = reference(&readings);
        prop_assert_eq!(late, expected_late);
        prop_assert_eq!(as_map(&closed), expected);
    }

    /// A restart anywhere, any number of times, changes no aggregate and no late verdict.
    #[test]
    fn restarts_change_nothing(
        streams in sensor_streams(),
        schedule in prop::collection::vec(0usize..100, 1..50),
        restarts in prop::collection::vec(0usize..300, 0..5),
    ) {
        let readings = interleave(&streams, &schedule);
        let (plain, late) = run(&readings);
        let (restarted, late_r) = run_with_restarts(&readings, &restarts);
        prop_assert_eq!(late, late_r);
        prop_assert_eq!(as_map(&plain), as_map(&restarted));
    }

    #[test]
    fn windows_close_in_order_per_sensor(streams in sensor_streams(), schedule in prop::collection::vec(0usize..100, 1..50)) {
        let (closed, _) = run(&interleave(&streams, &schedule));
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        for c in closed.iter().filter(|c| c.cause == CloseCause::Watermark) {
            if let Some(prev) = last.insert(&c.sensor, c.start_ms) {
                prop_assert!(prev < c.start_ms, "{} closed {} after {}", c.sensor, c.start_ms, prev);
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_interleaving(
        streams in sensor_streams(),
        a in prop::collection::vec(0usize..100, 1..50),
        b in prop::collection::vec(0usize..100, 1..50),
    ) {
        let (x, late_x) = run(&interleave(&streams, &a));
        let (y, late_y) = run(&interleave(&streams, &b));
        prop_assert_eq!(late_x, late_y);
        prop_assert_eq!(as_map(&x), as_map(&y));
    }

    #[test]
    fn every_window_is_internally_consistent(streams in sensor_streams(), schedule in prop::collection::vec(0usize..100, 1..50)) {
        let (closed, _) = run(&interleave(&streams, &schedule));
        for c in &closed {
            let a = c.agg;
            prop_assert!(a.count >= 1);
            prop_assert!(a.min <= a.mean() && a.mean() <= a.max, "{:?}", a);
            prop_assert_eq!(a.sum / a.count as f64, a.mean());
            prop_assert_eq!(c.end_ms - c.start_ms, SIZE);
            prop_assert_eq!(c.start_ms.rem_euclid(SIZE), 0);
        }
    }

    /// Through the whole pipeline, with undecodable payloads mixed in: every publish has one
    /// verdict, and aggregated + late + rejected = publishes in, also counted from the records.
    #[test]
    fn every_publish_is_accounted_for(
        streams in sensor_streams(),
        schedule in prop::collection::vec(0usize..100, 1..50),
        garbage in prop::collection::vec((0usize..400, 0u8..4), 0..30),
    ) {
        let readings = interleave(&streams, &schedule);
        let mut payloads: Vec<(String, Vec<u8>)> = readings
            .iter()
            .map(|(s, ts, v)| {
                (format!("sensors/{s}/temperature"), format!(r#"{{"ts":{ts},"value":{v}}}"#).into_bytes())
            })
            .collect();
        for (at, kind) in &garbage {
            let bad: &[u8] = match kind {
                0 => b"not json",
                1 => br#"{"ts":1718000000}"#,
                2 => br#"{"value":"hot"}"#,
                _ => br#"{"ts":"tomorrow","value":1}"#,
            };
            let at = at % (payloads.len() + 1);
            payloads.insert(at, ("sensors/x/temperature".into(), bad.to_vec()));
        }

        let mut p = Pipeline::new(DecodeOptions::default(), options(), &EncodeOptions::default(), true).unwrap();
        let mut out = Vec::new();
        let (mut aggregated, mut late, mut rejected) = (0u64, 0u64, 0u64);
        for (topic, payload) in &payloads {
            match p.ingest(&topic.as_str().into(), Bytes::from(payload.clone()), &[], T0 + 60_000, &mut out) {
                Verdict::Aggregated => aggregated += 1,
                Verdict::Late => late += 1,
                Verdict::Rejected(_) => rejected += 1,
                Verdict::Refused(r) => prop_assert!(false, "refused: {}", r),
                Verdict::Thinned(r) => prop_assert!(false, "thinned: {}", r),
                Verdict::Ignored(r) => prop_assert!(false, "ignored: {}", r),
            }
        }
        p.drain(&mut out);
        prop_assert_eq!(aggregated + late + rejected, payloads.len() as u64);
        prop_assert_eq!(rejected, garbage.len() as u64);

        let count = |s: Stream| out.iter().filter(|r| r.stream == s).count() as u64;
        let window_total: u64 = out
            .iter()
            .filter(|r| r.stream == Stream::Aggregate)
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.record.value).unwrap();
                v["temperature"]["count"].as_u64().unwrap()
            })
            .sum();
        prop_assert_eq!(window_total, aggregated);
        prop_assert_eq!(count(Stream::Raw), aggregated + late);
        prop_assert_eq!(count(Stream::Late), late);
        prop_assert_eq!(count(Stream::DeadLetter), rejected);
    }

    /// Whatever the raw policy, the aggregates are those of every reading: the policy only
    /// leaves aggregated readings out of the raw stream, and every reading left out is counted.
    #[test]
    fn the_raw_policy_never_changes_the_aggregates(
        streams in sensor_streams(),
        schedule in prop::collection::vec(0usize..100, 1..50),
        policy in prop_oneof![
            (0.0f64..50.0, 0.0f64..0.5, 1i64..30_000).prop_filter("a threshold", |(a, r, _)| *a > 0.0 || *r > 0.0).prop_map(|(absolute, relative, max_interval_ms)| RawPolicy::Deadband { absolute, relative, max_interval_ms }),
            (1i64..30_000).prop_map(|interval_ms| RawPolicy::Sample { interval_ms }),
        ],
    ) {
        let readings = interleave(&streams, &schedule);
        let run = |policy: RawPolicy| {
            let mut p = Pipeline::new(DecodeOptions::default(), options(), &EncodeOptions::default(), false)
                .unwrap()
                .with_raw_policy(policy)
                .unwrap();
            let (mut out, mut verdicts) = (Vec::new(), Vec::new());
            for (s, ts, v) in &readings {
                let payload = format!(r#"{{"ts":{ts},"value":{v}}}"#);
                verdicts.push(p.ingest(&format!("sensors/{s}/temperature").into(), Bytes::from(payload), &[], T0 + 60_000, &mut out));
            }
            p.drain(&mut out);
            (out, verdicts)
        };
        let (all, all_verdicts) = run(RawPolicy::All);
        let (thinned, verdicts) = run(policy);
        let of = |out: &[Routed], s: Stream| -> Vec<OutRecord> {
            out.iter().filter(|r| r.stream == s).map(|r| r.record.clone()).collect()
        };
        // The windows drained at the end come in the order of a hash map's: compare as sets.
        let sorted = |mut v: Vec<OutRecord>| {
            v.sort_by(|a, b| (&a.key, a.timestamp_ms).cmp(&(&b.key, b.timestamp_ms)));
            v
        };
        prop_assert_eq!(
            sorted(of(&thinned, Stream::Aggregate)),
            sorted(of(&all, Stream::Aggregate))
        );
        let left_out = verdicts.iter().filter(|v| matches!(v, Verdict::Thinned(_))).count();
        prop_assert_eq!(of(&thinned, Stream::Raw).len() + left_out, of(&all, Stream::Raw).len());
        for (v, a) in verdicts.iter().zip(&all_verdicts) {
            match v {
                Verdict::Thinned(_) => prop_assert_eq!(*a, Verdict::Aggregated),
                other => prop_assert_eq!(other, a),
            }
        }
        // What is sent is a subsequence of the full raw stream, in the same order.
        let full = of(&all, Stream::Raw);
        let mut rest = full.iter();
        for r in of(&thinned, Stream::Raw) {
            prop_assert!(rest.any(|f| *f == r), "raw record out of order or invented");
        }
    }
}

/// A route with three measurements per payload; each payload carries a random subset of them
/// (one as a numeric string), so the series of one device advance differently.
fn three_measurement_router() -> edge_bridge_core::Router {
    use edge_bridge_core::{
        timestamp::EpochUnit, MeasurementSpec, NoMeasurement, PayloadFormat, RouteOptions, Router,
        SensorRule,
    };
    let route = RouteOptions {
        name: "devices".into(),
        topics: vec!["dev/+".into()],
        exclude: Vec::new(),
        sensor_id: SensorRule::Topic,
        format: PayloadFormat::Json,
        timestamp: "/ts".into(),
        time_zone: chrono_tz::Tz::UTC,
        epoch_unit: EpochUnit::Millis,
        measurements: MeasurementSpec::Fields(vec![
            ("a".into(), "/a".into()),
            ("b".into(), "/m/b".into()),
            ("c".into(), "/c".into()),
        ]),
        no_measurement: NoMeasurement::DeadLetter,
        max_future_skew_ms: i64::MAX / 4,
        max_sensor_id_bytes: 256,
        ask_rebirth: false,
    };
    let p = Pipeline::for_route(route, options(), &EncodeOptions::default(), false).unwrap();
    Router::new(vec![("devices".into(), p)]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Several measurements per payload: every (device, measurement) series agrees with the
    /// brute-force reference run on that series alone, so series are independent of each
    /// other, and the counts add up to every measurement sent.
    #[test]
    fn several_measurements_per_payload_are_independent_series(
        streams in sensor_streams(),
        schedule in prop::collection::vec(0usize..100, 1..50),
        present in prop::collection::vec(1u8..8, 1..40),
    ) {
        let readings = interleave(&streams, &schedule);
        let mut router = three_measurement_router();
        let mut out = Vec::new();
        let mut flat = Vec::new();
        let mut sent = 0u64;
        for (i, (sensor, ts, v)) in readings.iter().enumerate() {
            let mask = present[i % present.len()];
            let mut obj = serde_json::Map::new();
            obj.insert("ts".into(), (*ts).into());
            obj.insert("label".into(), "not a measurement".into());
            for (bit, name) in [(1u8, "a"), (2, "b"), (4, "c")] {
                if mask & bit == 0 {
                    continue;
                }
                // Distinct values per measurement, all exact multiples of 0.25.
                let value = v + f64::from(bit) * 100.0;
                match name {
                    "b" => { obj.insert("m".into(), serde_json::json!({ "b": value })); }
                    "c" => { obj.insert("c".into(), value.to_string().into()); }
                    _ => { obj.insert("a".into(), value.into()); }
                }
                flat.push((format!("{sensor}\0{name}"), *ts, value));
                sent += 1;
            }
            let topic = format!("dev/{sensor}");
            let payload = serde_json::to_vec(&obj).unwrap();
            let verdict = router.ingest(&topic.as_str().into(), Bytes::from(payload), &[], T0, &mut out);
            prop_assert!(matches!(verdict, Verdict::Aggregated | Verdict::Late), "{:?}", verdict);
        }
        router.drain(&mut out);
        prop_assert_eq!(router.open_windows(), 0);

        let (expected, late) = reference(&flat);
        let mut got = BTreeMap::new();
        let mut counted = 0u64;
        for r in out.iter().filter(|r| r.stream == Stream::Aggregate) {
            let v: serde_json::Value = serde_json::from_slice(&r.record.value).unwrap();
            let m = v["measurement"].as_str().unwrap().to_owned();
            prop_assert_eq!(v["sensor"].as_str().unwrap().as_bytes(), &r.record.key[..]);
            let stats = &v[&m];
            let count = stats["count"].as_u64().unwrap();
            counted += count;
            let key = (format!("{}\0{m}", v["sensor"].as_str().unwrap()), v["start"].as_i64().unwrap());
            let prev = got.insert(key, (count, stats["min"].as_f64().unwrap(), stats["max"].as_f64().unwrap(), stats["sum"].as_f64().unwrap()));
            prop_assert!(prev.is_none(), "a window emitted twice");
        }
        let want: BTreeMap<_, _> = expected
            .iter()
            .map(|(k, (a, _))| (k.clone(), (a.count, a.min, a.max, a.sum)))
            .collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(counted + late as u64, sent);
    }
}
