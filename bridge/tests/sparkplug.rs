//! Sparkplug B end to end: an edge node made with pysparkplug (an independent implementation,
//! `examples/sparkplug_node.py`) publishes BIRTHs with aliases, DATA by alias alone, a device's
//! DEATH and rebirth with other aliases, and the node's DEATH, through Mosquitto and through
//! the embedded broker, at QoS 1. Every aggregate is checked against the node's own account of
//! what it sent; DATA whose aliases no BIRTH defines, and bytes that are not protobuf, are dead
//! letters with their reasons; DEATHs are counted as control messages. With `ask_rebirth`, a
//! node whose BIRTHs the bridge missed is asked for them (an NCMD the node decodes with
//! pysparkplug and answers), and its data are read from then on; without, nothing is sent.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use edge_bridge_core::IGNORED_REASONS;
use serde_json::Value;
use support::{read_topic, RouteBridge};

/// The documented routes, Sparkplug's among the others.
const ROUTES: &str = include_str!("../../deploy/routes-example.toml");

/// 2024-12-02T18:00:00Z.
const T0: i64 = 1_733_162_400_000;

type Window = (u64, f64, f64, f64);

/// With `births_missed`, the node starts with a DDATA its BIRTHs never defined for the bridge,
/// and the Sparkplug route has `ask_rebirth = true`: the node carries on only once the bridge's
/// rebirth request has reached it.
async fn run(external: bool, births_missed: bool) {
    let routes = if births_missed {
        ROUTES.replace(
            "raw_topic = \"raw-sparkplug\"",
            "raw_topic = \"raw-sparkplug\"\nask_rebirth = true",
        )
    } else {
        ROUTES.to_owned()
    };
    let bridge = RouteBridge::start(&routes, external, "edge-bridge-sparkplug").await;
    let (stats, port) = (bridge.stats.clone(), bridge.port);

    let python = support::examples_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sparkplug_node.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(["--port", &port.to_string(), "--rounds", "30"])
            .args(["--start-ms", &T0.to_string()])
            .args(births_missed.then_some("--births-missed"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "the Sparkplug node failed");
    let sent: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Bytes that are not protobuf, from a third-party client too.
    let garbage = support::mosquitto_pub(port)
        .args(["-t", "spBv1.0/plant/DDATA/edge1/dev0", "-m", "not protobuf"])
        .status()
        .expect("mosquitto_pub (Debian's mosquitto-clients; scripts/test.sh installs it)");
    assert!(garbage.success());
    let received = sent.len() as u64 + 1;

    let emitted = support::wait_all_in_and_closed(&stats, received).await;
    let (kafka, _mosquitto, config, _state) = bridge.stop().await;

    let by = |what: &'static str| sent.iter().filter(move |s| s["expect"] == what);
    let measured = by("measured").count();
    let unknown = by("unknown_alias").count();
    let control = by("control").count() as u64;
    assert!(
        unknown == 2 + usize::from(births_missed) && control == 2,
        "the node sends its DEATHs and stale DATA"
    );
    let asked = stats.rebirths_requested.load(Relaxed);
    if births_missed {
        assert_eq!(by("rebirth_request").count(), 1, "the node was asked");
        // At most one request per node per 30 s: more only on a very slow run.
        assert!(asked >= 1);
    } else {
        assert_eq!(
            asked, 0,
            "a bridge that only listens writes nothing to the plant"
        );
    }

    // The route's own raw topic; the configured one gets none of its records.
    assert_eq!(config.routes[4].raw_topic, "raw-sparkplug");
    let elsewhere = read_topic(
        &kafka.brokers,
        &config.kafka.raw_topic,
        0,
        Duration::from_secs(3),
    );
    assert!(
        elsewhere.is_empty(),
        "{} records in {}",
        elsewhere.len(),
        config.kafka.raw_topic
    );
    let raw = read_topic(
        &kafka.brokers,
        "raw-sparkplug",
        measured,
        Duration::from_secs(30),
    );
    let aggs = read_topic(
        &kafka.brokers,
        &config.kafka.agg_topic,
        emitted,
        Duration::from_secs(30),
    );
    let dead = read_topic(
        &kafka.brokers,
        &config.kafka.dead_letter_topic,
        unknown + 1,
        Duration::from_secs(30),
    );
    assert_eq!(
        raw.len(),
        measured,
        "one raw record per BIRTH or DATA with a measurement"
    );
    for (r, s) in raw.iter().zip(by("measured")) {
        assert_eq!(r.key, s["sensor"].as_str().unwrap());
        assert_eq!(r.headers["edge.route"], "sparkplug");
        assert_eq!(r.headers["mqtt.topic"], s["topic"].as_str().unwrap());
    }

    // What the node says it sent, windowed here.
    let mut want: BTreeMap<(String, String, i64), Window> = BTreeMap::new();
    for s in by("measured") {
        for m in s["metrics"].as_array().unwrap() {
            let (name, v, ts) = (
                m[0].as_str().unwrap(),
                m[1].as_f64().unwrap(),
                m[2].as_i64().unwrap(),
            );
            let e = want
                .entry((
                    s["sensor"].as_str().unwrap().to_owned(),
                    name.to_owned(),
                    ts - ts.rem_euclid(10_000),
                ))
                .or_insert((0, f64::INFINITY, f64::NEG_INFINITY, 0.0));
            e.0 += 1;
            e.1 = e.1.min(v);
            e.2 = e.2.max(v);
            e.3 += v;
        }
    }
    let mut got: BTreeMap<(String, String, i64), Window> = BTreeMap::new();
    for a in &aggs {
        let v: Value = serde_json::from_slice(&a.value).unwrap();
        let name = v["measurement"].as_str().unwrap().to_owned();
        let s = &v[&name];
        let prev = got.insert(
            (a.key.clone(), name, v["start"].as_i64().unwrap()),
            (
                s["count"].as_u64().unwrap(),
                s["min"].as_f64().unwrap(),
                s["max"].as_f64().unwrap(),
                s["sum"].as_f64().unwrap(),
            ),
        );
        assert!(prev.is_none(), "a window emitted twice");
    }
    assert_eq!(got, want);
    assert!(got
        .keys()
        .any(|(s, m, _)| s == "plant/edge1" && m == "Uptime"));
    assert!(
        got.values().any(|w| w.1 < 0.0),
        "signed integers read as signed"
    );

    let mut reasons: Vec<String> = dead
        .iter()
        .map(|d| d.headers["error.reason"].clone())
        .collect();
    reasons.sort();
    let mut want_reasons = vec!["not_protobuf"; 1];
    want_reasons.extend(std::iter::repeat_n("unknown_alias", unknown));
    assert_eq!(reasons, want_reasons);
    let control_i = IGNORED_REASONS
        .iter()
        .position(|r| *r == "control")
        .unwrap();
    // The bridge's own rebirth requests come back to it through its subscription: control.
    assert_eq!(
        stats.ignored_by_reason[control_i].load(Relaxed),
        control + asked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_through_mosquitto() {
    run(true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_through_the_embedded_broker() {
    run(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebirth_asked_for_through_mosquitto() {
    run(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebirth_asked_for_through_the_embedded_broker() {
    run(false, true).await;
}
