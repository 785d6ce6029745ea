//! The whole pure core (decode -> windows -> encode) on an arbitrary sequence of publishes
//! and idle flushes, with arbitrary topics, payloads and clock steps. It must never panic, and
//! the windows it emits may not count more readings than it aggregated.
#![no_main]

use bytes::Bytes;
use bytestring::ByteString;
use edge_bridge_core::decode::DecodeOptions;
use edge_bridge_core::window::WindowOptions;
use edge_bridge_core::{EncodeOptions, Pipeline, Routed, Stream, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let window = WindowOptions {
        max_sensors: 8,
        max_open_windows: 32,
        ..WindowOptions::default()
    };
    let mut pipeline =
        Pipeline::new(DecodeOptions::default(), window, &EncodeOptions::default(), true).expect("valid");
    let mut now: i64 = 1_733_162_400_000;
    let mut out: Vec<Routed> = Vec::new();
    let mut aggregated = 0u64;
    // Records: a control byte (clock step, flush or not), a sensor byte, then the payload up
    // to the next 0xFF byte.
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let Some((&sensor, tail)) = tail.split_first() else {
            break;
        };
        let end = tail.iter().position(|b| *b == 0xFF).unwrap_or(tail.len());
        let payload = Bytes::copy_from_slice(&tail[..end]);
        rest = tail.get(end + 1..).unwrap_or_default();
        now += i64::from(control & 0x7F) * 997;
        let topic = ByteString::from(format!("sensors/s{}/temperature", sensor % 12));
        let verdict = pipeline.ingest(&topic, payload, &[], now, &mut out);
        if matches!(verdict, Verdict::Aggregated) {
            aggregated += 1;
        }
        if control & 0x80 != 0 {
            pipeline.flush_idle(now, &mut out);
        }
    }
    pipeline.drain(&mut out);
    let counted: u64 = out
        .iter()
        .filter(|r| r.stream == Stream::Aggregate)
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.record.value).expect("JSON");
            v["temperature"]["count"].as_u64().expect("a count")
        })
        .sum();
    assert!(
        counted <= aggregated,
        "{counted} counted of {aggregated} aggregated"
    );
});
