//! The documented routes (`deploy/routes-example.toml`: Zigbee2MQTT, Tasmota, ESPHome, Shelly,
//! Sparkplug B) on an arbitrary sequence of publishes to each family's topics, with arbitrary
//! payloads and clock steps: JSON field paths, key patterns, numeric strings, text numbers,
//! local times in a zone, protobuf and alias tables. It must never panic, and every aggregate
//! must be a JSON object that names its measurement and counts at least one reading.
#![no_main]

use bytes::Bytes;
use bytestring::ByteString;
use edge_bridge_core::{Routed, Stream};
use libfuzzer_sys::fuzz_target;

const TOPICS: [&str; 12] = [
    "zigbee2mqtt/Living Room/thermo",
    "zigbee2mqtt/bridge/state",
    "zigbee2mqtt/hall/availability",
    "tele/kitchen/SENSOR",
    "tele/kitchen/STATE",
    "esphome/node/sensor/temperature/state",
    "dev1/events/rpc",
    "spBv1.0/plant/NBIRTH/edge1",
    "spBv1.0/plant/NDATA/edge1",
    "spBv1.0/plant/DBIRTH/edge1/dev0",
    "spBv1.0/plant/DDATA/edge1/dev0",
    "spBv1.0/plant/DDEATH/edge1/dev0",
];

fuzz_target!(|data: &[u8]| {
    let mut config: edge_bridge::Config =
        toml::from_str(include_str!("../../deploy/routes-example.toml")).expect("the example");
    config.window.max_sensors = 16;
    config.window.max_open_windows = 64;
    let mut router = config.router().expect("valid routes");
    let mut now: i64 = 1_733_162_400_000;
    let mut out: Vec<Routed> = Vec::new();
    // Records: a control byte (clock step, flush or not), a topic byte, then the payload up
    // to the next 0xFF byte (protobuf payloads hold 0xFF rarely enough).
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let Some((&topic, tail)) = tail.split_first() else {
            break;
        };
        let end = tail.iter().position(|b| *b == 0xFF).unwrap_or(tail.len());
        let payload = Bytes::copy_from_slice(&tail[..end]);
        rest = tail.get(end + 1..).unwrap_or_default();
        now += i64::from(control & 0x7F) * 997;
        let topic = ByteString::from(TOPICS[usize::from(topic) % TOPICS.len()]);
        router.ingest(&topic, payload, &[], now, &mut out);
        if control & 0x80 != 0 {
            router.flush_idle(now, &mut out);
        }
    }
    router.drain(&mut out);
    for r in out.iter().filter(|r| r.stream == Stream::Aggregate) {
        let v: serde_json::Value = serde_json::from_slice(&r.record.value).expect("JSON");
        let name = v["measurement"].as_str().expect("a measurement name");
        assert!(v[name]["count"].as_u64().expect("a count") >= 1);
    }
});
