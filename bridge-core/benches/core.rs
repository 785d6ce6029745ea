//! Throughput of the pure core over 10,000 sensors, in readings per second.
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
use edge_bridge_core::{DecodeOptions, Decoder, EncodeOptions, Pipeline, WindowOptions, Windower};

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

criterion_group!(benches, bench);
criterion_main!(benches);
