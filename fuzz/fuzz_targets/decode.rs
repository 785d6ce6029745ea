//! The payload decoder on arbitrary publishes: any topic, any payload bytes, each of the
//! sensor-id sources and epoch units. It must never panic, and what it accepts must hold the
//! decoder's own guarantees: a sensor id within the configured length, and an event time no
//! further ahead of the arrival time than the future-skew guard allows.
#![no_main]

use edge_bridge_core::decode::{DecodeOptions, Decoder, SensorIdSource};
use edge_bridge_core::timestamp::EpochUnit;
use libfuzzer_sys::fuzz_target;

const ARRIVAL_MS: i64 = 1_733_162_400_000;

fuzz_target!(|data: &[u8]| {
    // Byte 0 picks the options; up to the first 0 byte after it is the topic; the rest is the
    // payload.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let Ok(topic) = std::str::from_utf8(&rest[..split]) else {
        return;
    };
    let payload = rest.get(split + 1..).unwrap_or_default();
    let opts = DecodeOptions {
        sensor_id: match pick % 3 {
            0 => SensorIdSource::Wildcards,
            1 => SensorIdSource::TopicLevel(1),
            _ => SensorIdSource::Field("device".into()),
        },
        epoch_unit: match (pick / 3) % 5 {
            0 => EpochUnit::Auto,
            1 => EpochUnit::Seconds,
            2 => EpochUnit::Millis,
            3 => EpochUnit::Micros,
            _ => EpochUnit::Nanos,
        },
        max_sensor_id_bytes: 64,
        ..DecodeOptions::default()
    };
    let skew = opts.max_future_skew_ms;
    let decoder = Decoder::new(opts).expect("valid options");
    if let Ok(r) = decoder.decode(topic, payload, ARRIVAL_MS) {
        assert!(
            r.sensor.len() <= 64,
            "sensor id of {} bytes",
            r.sensor.len()
        );
        assert!(!r.sensor.is_empty(), "empty sensor id");
        assert!(
            r.ts_ms <= ARRIVAL_MS + skew,
            "ts {} past the skew guard",
            r.ts_ms
        );
        assert!(r.ts_from_payload || r.ts_ms == ARRIVAL_MS);
    }
});
