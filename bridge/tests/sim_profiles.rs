//! The simulator's device families (`edge-sim --profile ...`) read by the documented routes
//! (`deploy/routes-example.toml`), in the pure core: every reading of every family is
//! aggregated under its device with each of its measurements, and every chatter message is
//! dropped and counted, none is a dead letter (Sparkplug B: a device's first reading is its
//! DBIRTH, the rest DDATA by alias). This keeps the demo's profiles and the routes
//! the README shows in step.

use std::collections::BTreeMap;

use bytes::Bytes;
use edge_bridge_core::{Stream, Verdict};
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Kind, Values};
use edge_sim::profile::Profile;

const ROUTES: &str = include_str!("../../deploy/routes-example.toml");

#[test]
fn every_profile_is_read_by_its_route() {
    let families = [
        (Profile::Zigbee2mqtt, "zigbee2mqtt", 3, "excluded"),
        (Profile::Tasmota, "tasmota", 2, "unrouted"),
        (Profile::Esphome, "esphome", 1, "unrouted"),
        (Profile::Shelly, "shelly", 2, "no_measurement"),
        // Births of nodes and the nodes' status NDATA carry no measurement.
        (Profile::Sparkplug, "sparkplug", 10, "control"),
    ];
    for (profile, route, per_reading, chatter_reason) in families {
        let mut config: edge_bridge::Config = toml::from_str(ROUTES).unwrap();
        config.window.idle_timeout = std::time::Duration::from_secs(1);
        let mut router = config.router().unwrap();
        let start = 1_764_700_000_000;
        let data = Dataset::new(DatasetOptions {
            sensors: 5,
            rate: 4.0,
            start_ms: start,
            seed: 9,
            values: Values::Walk,
            faults: Faults::default(),
            topic_template: "sensors/{sensor}/temperature".into(),
        })
        .with_profile(profile);
        let mut out = Vec::new();
        let (mut readings, mut chatter) = (0u64, 0u64);
        for m in data.take(400) {
            // Arrival a second after the event time: within the skew limit, in order.
            let verdict = router.ingest(
                &m.topic.as_str().into(),
                Bytes::copy_from_slice(m.bytes()),
                &[],
                m.ts_ms + 1_000,
                &mut out,
            );
            if m.kind == Kind::Chatter {
                chatter += 1;
                let ok = verdict == Verdict::Ignored(chatter_reason)
                    || (profile == Profile::Zigbee2mqtt && verdict == Verdict::Ignored("excluded"));
                assert!(ok, "{profile:?} chatter {}: {verdict:?}", m.topic);
            } else {
                readings += 1;
                assert_eq!(
                    verdict,
                    Verdict::Aggregated,
                    "{profile:?} {} {}",
                    m.topic,
                    m.payload
                );
            }
        }
        assert!(chatter > 0, "{profile:?} sends chatter");
        router.drain(&mut out);
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in out.iter().filter(|r| r.stream == Stream::Aggregate) {
            let v: serde_json::Value = serde_json::from_slice(&r.record.value).unwrap();
            let name = v["measurement"].as_str().unwrap().to_owned();
            *counts
                .entry((v["sensor"].as_str().unwrap().to_owned(), name.clone()))
                .or_default() += v[&name]["count"].as_u64().unwrap();
        }
        assert_eq!(counts.len(), 5 * per_reading, "{profile:?}: {counts:?}");
        assert_eq!(
            counts.values().sum::<u64>(),
            readings * per_reading as u64,
            "{profile:?}"
        );
        assert!(
            out.iter().all(|r| r.stream != Stream::DeadLetter),
            "{profile:?}"
        );
        let raw_routes: Vec<&[u8]> = out
            .iter()
            .filter(|r| r.stream == Stream::Raw)
            .flat_map(|r| {
                r.record
                    .headers
                    .iter()
                    .filter(|(k, _)| k == "edge.route")
                    .map(|(_, v)| &v[..])
            })
            .collect();
        assert!(
            raw_routes.iter().all(|r| *r == route.as_bytes()),
            "{profile:?}"
        );
    }
}
