//! Throughput of the pure core over 10,000 sensors, in readings per second; and of routes for
//! real devices (a Zigbee2MQTT-shaped payload with 3 measurements, a Sparkplug B DDATA with 10
//! metrics by alias) in messages per second.
//!
//! `cargo bench -p edge-bridge-core --bench core` prints, per benchmark, the time for one pass
//! and the throughput in elements (readings) per second. Each pass starts from an empty
//! windower and feeds 10,000 sensors x 20 readings in the tutorial's payload shape (ISO 8601
//! times with microseconds), event time advancing 250 ms per round, so windows open and close
//! as in production rather than everything turning late after the first pass.

use std::hint::black_box;

use bytes::Bytes;
use bytestring::ByteString;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use edge_bridge_core::{
    DecodeOptions, Decoder, EncodeOptions, MeasurementSpec, NoMeasurement, PayloadFormat, Pipeline,
    RouteOptions, Router, SensorRule, WindowOptions, Windower,
};

const SENSORS: usize = 10_000;
const ROUNDS: usize = 20;
const T0_S: i64 = 1_718_000_000;

struct Publish {
    topic: ByteString,
    payload: Bytes,
}

fn iso(ms: i64) -> String {
    let d = chrono_like(ms);
    format!("{d}.{:06}", (ms % 1000) * 1000)
}

/// `YYYY-MM-DDTHH:MM:SS` without pulling chrono into the bench: 2024-06-10 is day 19884.
fn chrono_like(ms: i64) -> String {
    let secs = ms / 1000 - 19_884 * 86_400;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    assert!(h < 24, "bench data stays within 2024-06-10");
    format!("2024-06-10T{h:02}:{m:02}:{s:02}")
}

fn dataset(epoch_ms: bool) -> Vec<Publish> {
    let mut out = Vec::with_capacity(SENSORS * ROUNDS);
    for round in 0..ROUNDS {
        for s in 0..SENSORS {
            let ts = T0_S * 1000 + round as i64 * 250 + (s % 250) as i64;
            let value = (s * 7 + round * 13) % 101;
            let payload = if epoch_ms {
                format!(r#"{{"ts": {ts}, "value": {value}}}"#)
            } else {
                format!(r#"{{"ts": "{}", "value": {value}}}"#, iso(ts))
            };
            out.push(Publish {
                topic: format!("sensors/sensor-{s}/temperature").into(),
                payload: Bytes::from(payload),
            });
        }
    }
    out
}

fn window_options() -> WindowOptions {
    WindowOptions {
        max_sensors: SENSORS * 2,
        ..WindowOptions::default()
    }
}

fn bench(c: &mut Criterion) {
    let now = T0_S * 1000 + 60_000;
    let mut g = c.benchmark_group("core_10k_sensors");
    g.throughput(Throughput::Elements((SENSORS * ROUNDS) as u64));
    g.sample_size(20);

    for (name, epoch) in [("iso_ts", false), ("epoch_ms_ts", true)] {
        let data = dataset(epoch);
        let decoder = Decoder::new(DecodeOptions::default()).unwrap();

        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| {
                for p in &data {
                    black_box(decoder.decode(&p.topic, &p.payload, now).unwrap());
                }
            })
        });

        g.bench_function(format!("decode+window/{name}"), |b| {
            b.iter_batched_ref(
                || (Windower::new(window_options()).unwrap(), Vec::new()),
                |(w, closed)| {
                    for p in &data {
                        let r = decoder.decode(&p.topic, &p.payload, now).unwrap();
                        black_box(w.record(&r.sensor, r.ts_ms, r.value, now, closed));
                        closed.clear();
                    }
                },
                BatchSize::LargeInput,
            )
        });

        g.bench_function(format!("pipeline_with_encode/{name}"), |b| {
            b.iter_batched_ref(
                || {
                    let p = Pipeline::new(
                        DecodeOptions::default(),
                        window_options(),
                        &EncodeOptions::default(),
                        false,
                    )
                    .unwrap();
                    (p, Vec::new())
                },
                |(pipe, out)| {
                    for p in &data {
                        black_box(pipe.ingest(&p.topic, p.payload.clone(), &[], now, out));
                        out.clear();
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

const DEVICES: usize = 1_000;

fn route(name: &str, topics: &str, format: PayloadFormat, m: &[(&str, &str)]) -> RouteOptions {
    RouteOptions {
        name: name.into(),
        topics: vec![topics.into()],
        exclude: vec!["zigbee2mqtt/bridge/#".into()],
        sensor_id: SensorRule::Topic,
        format,
        timestamp: String::new(),
        time_zone: edge_bridge_core::route::Tz::UTC,
        epoch_unit: Default::default(),
        measurements: MeasurementSpec::Fields(
            m.iter()
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .collect(),
        ),
        no_measurement: NoMeasurement::DeadLetter,
        max_future_skew_ms: 3_600_000,
        max_sensor_id_bytes: 256,
        ask_rebirth: false,
    }
}

fn router(r: RouteOptions) -> Router {
    let p = Pipeline::for_route(r, window_options(), &EncodeOptions::default(), false).unwrap();
    Router::new(vec![("bench".into(), p)]).unwrap()
}

/// Zigbee2MQTT: 1,000 devices x 20 rounds, arrival time as event time (none in the payload).
fn zigbee_data() -> Vec<(Publish, i64)> {
    let mut out = Vec::new();
    for round in 0..ROUNDS {
        for d in 0..DEVICES {
            let t = 15.0 + ((d * 7 + round * 13) % 200) as f64 * 0.1;
            let payload = format!(
                r#"{{"battery":97,"humidity":{:.1},"linkquality":134,"pressure":{:.1},"temperature":{t:.1},"voltage":2995}}"#,
                40.0 + t,
                1013.0 - t
            );
            out.push((
                Publish {
                    topic: format!("zigbee2mqtt/room-{}/thermo-{d}", d % 20).into(),
                    payload: Bytes::from(payload),
                },
                T0_S * 1000 + round as i64 * 250,
            ));
        }
    }
    out
}

/// Sparkplug B: 10 nodes x 100 devices; their BIRTHs (names, aliases, datatypes), then 20
/// rounds of DDATA with 10 metrics each by alias alone.
fn sparkplug_data() -> (Vec<Publish>, Vec<Publish>) {
    use protobuf::Message as _;
    use sparkplug_rs::payload::metric::Value;
    use sparkplug_rs::payload::Metric;
    use sparkplug_rs::Payload;
    let metric = |name: Option<String>, alias: u64, datatype: Option<u32>, v: f64| {
        let mut m = Metric::new();
        m.name = name;
        m.alias = Some(alias);
        m.datatype = datatype;
        m.value = Some(Value::DoubleValue(v));
        m
    };
    let encode = |ts: u64, metrics: Vec<Metric>| {
        let mut p = Payload::new();
        p.timestamp = Some(ts);
        p.seq = Some(0);
        p.metrics = metrics;
        Bytes::from(p.write_to_bytes().unwrap())
    };
    let t0 = (T0_S * 1000) as u64;
    let mut births = Vec::new();
    let mut data = Vec::new();
    for d in 0..DEVICES {
        let topic = |kind: &str| -> ByteString {
            format!("spBv1.0/plant/{kind}/node-{}/dev-{d}", d % 10).into()
        };
        let metrics = (0..10u64)
            .map(|i| metric(Some(format!("Metric{i}")), i + 1, Some(10), i as f64))
            .collect();
        births.push(Publish {
            topic: topic("DBIRTH"),
            payload: encode(t0, metrics),
        });
        for round in 0..ROUNDS as u64 {
            let metrics = (0..10u64)
                .map(|i| metric(None, i + 1, None, (d as u64 + round * i) as f64 * 0.5))
                .collect();
            data.push(Publish {
                topic: topic("DDATA"),
                payload: encode(t0 + round * 250, metrics),
            });
        }
    }
    (births, data)
}

fn bench_routes(c: &mut Criterion) {
    let now = T0_S * 1000 + 60_000;
    let mut g = c.benchmark_group("routes_1k_devices");
    g.sample_size(20);

    let zigbee = zigbee_data();
    g.throughput(Throughput::Elements(zigbee.len() as u64));
    let zigbee_route = route(
        "zigbee2mqtt",
        "zigbee2mqtt/#",
        PayloadFormat::Json,
        &[
            ("temperature", "/temperature"),
            ("humidity", "/humidity"),
            ("pressure", "/pressure"),
        ],
    );
    g.bench_function("zigbee2mqtt_3_measurements/messages", |b| {
        b.iter_batched_ref(
            || (router(zigbee_route.clone()), Vec::new()),
            |(r, out)| {
                for (p, arrival) in &zigbee {
                    black_box(r.ingest(&p.topic, p.payload.clone(), &[], *arrival, out));
                    out.clear();
                }
            },
            BatchSize::LargeInput,
        )
    });

    let (births, data) = sparkplug_data();
    g.throughput(Throughput::Elements(data.len() as u64));
    let spb_route = route("sparkplug", "spBv1.0/#", PayloadFormat::SparkplugB, &[]);
    g.bench_function("sparkplug_ddata_10_metrics/messages", |b| {
        b.iter_batched_ref(
            || {
                let mut r = router(spb_route.clone());
                let mut out = Vec::new();
                for p in &births {
                    r.ingest(&p.topic, p.payload.clone(), &[], now, &mut out);
                }
                out.clear();
                (r, out)
            },
            |(r, out)| {
                for p in &data {
                    black_box(r.ingest(&p.topic, p.payload.clone(), &[], now, out));
                    out.clear();
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// New series arriving while `window.max_sensors` series all have an open window: each is
/// refused. 10,000 active sensors, 1,000 new ones per iteration.
fn bench_at_the_sensor_bound(c: &mut Criterion) {
    let mut g = c.benchmark_group("sensor_bound");
    g.throughput(Throughput::Elements(1_000));
    let mut w = Windower::new(WindowOptions {
        max_sensors: 10_000,
        ..WindowOptions::default()
    })
    .unwrap();
    let mut out = Vec::new();
    let t0 = 1_733_162_400_000;
    for k in 0..10_000 {
        w.record(&format!("s{k}"), t0, 1.0, t0, &mut out);
    }
    let new: Vec<String> = (0..1_000).map(|k| format!("new{k}")).collect();
    g.bench_function("new_series_refused_1k", |b| {
        b.iter(|| {
            for id in &new {
                black_box(w.record(id, t0, 1.0, t0, &mut out));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_routes, bench_at_the_sensor_bound);
criterion_main!(benches);
