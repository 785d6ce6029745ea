//! Real firmware's payload shapes, published by a third-party client (`mosquitto_pub`), through
//! Mosquitto and through the embedded broker, to tansu: one route per family with its usual
//! chatter. Every aggregate is checked against a computation made here from the raw records
//! (their event times and payloads, read with plain JSON code, not the bridge's), the event
//! times of the families that send one are checked against the instants they stand for, and
//! every publish is accounted for: raw, dead letter (with its reason and route), or ignored
//! (by reason).

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde_json::{json, Value};
use support::{read_topic, Record, RouteBridge};

/// The documented example (README, "Pointing real sensors at it"), tested as it is.
const ROUTES: &str = include_str!("../../deploy/routes-example.toml");

/// 2024-12-02T18:00:00Z, when Berlin is at UTC+1.
const T0: i64 = 1_733_162_400_000;

/// What is published: (topic, payload) in order, and what the bridge must make of it.
struct Plan {
    messages: Vec<(String, String)>,
    /// Publishes that must become raw records.
    raw: usize,
    /// Dead letters: (route, reason).
    dead: Vec<(&'static str, &'static str)>,
    excluded: u64,
    no_measurement_dropped: u64,
    /// Event time the raw record of a payload must carry, where the payload gives one.
    event_times: BTreeMap<String, i64>,
}

fn plan() -> Plan {
    let mut m: Vec<(String, String)> = Vec::new();
    let mut event_times = BTreeMap::new();
    let mut raw = 0;
    // Zigbee2MQTT: a friendly name with a `/` in it, current and older (numbers as strings)
    // payloads, and its chatter.
    for i in 0..30 {
        let t = 18.0 + (i % 7) as f64 * 0.5;
        let h = 40 + i % 9;
        m.push((
            "zigbee2mqtt/Living Room/thermo".into(),
            json!({"battery": 100, "humidity": h, "linkquality": 120, "pressure": 1013.5 - (i % 3) as f64, "temperature": t, "voltage": 3000}).to_string(),
        ));
        m.push((
            "zigbee2mqtt/hall".into(),
            json!({"temperature": format!("{:.2}", t + 1.0), "humidity": format!("{h}")})
                .to_string(),
        ));
        raw += 2;
    }
    m.push((
        "zigbee2mqtt/bridge/state".into(),
        r#"{"state":"online"}"#.into(),
    ));
    m.push(("zigbee2mqtt/bridge/devices".into(), "[]".into()));
    m.push((
        "zigbee2mqtt/hall/availability".into(),
        r#"{"state":"online"}"#.into(),
    ));
    m.push((
        "zigbee2mqtt/button".into(),
        r#"{"action":"single","battery":90,"linkquality":60}"#.into(),
    ));
    m.push(("zigbee2mqtt/hall".into(), r#"{"temperature":"#.into()));
    // Tasmota: local time without an offset, one chip with two values, two numbered probes.
    for i in 0..25i64 {
        let utc_ms = T0 + i * 1_000;
        let local = chrono::DateTime::from_timestamp_millis(utc_ms + 3_600_000)
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let payload = json!({
            "Time": local,
            "SHT3X": {"Temperature": 21.0 + (i % 4) as f64 * 0.25, "Humidity": 45.0 + (i % 3) as f64, "DewPoint": 9.0},
            "DS18B20-1": {"Id": "0316A2794E6F", "Temperature": 19.5 + (i % 2) as f64},
            "DS18B20-2": {"Id": "0316A279AAAA", "Temperature": 20.25},
            "TempUnit": "C"
        })
        .to_string();
        event_times.insert(payload.clone(), utc_ms);
        m.push(("tele/kitchen/SENSOR".into(), payload));
        raw += 1;
    }
    m.push((
        "tele/kitchen/SENSOR".into(),
        r#"{"Time":"not a time","SHT3X":{"Temperature":21.0}}"#.into(),
    ));
    // ESPHome: text, one topic per sensor; "nan" is what it sends for a sensor without a state.
    for i in 0..20 {
        m.push((
            "esphome/livingroom/sensor/temperature/state".into(),
            format!("{:.1}", 20.0 + (i % 5) as f64 * 0.5),
        ));
        m.push((
            "esphome/livingroom/sensor/humidity/state".into(),
            format!("{}", 50 + i % 4),
        ));
        raw += 2;
    }
    m.push((
        "esphome/livingroom/sensor/humidity/state".into(),
        "nan".into(),
    ));
    // Shelly Gen2: fractional epoch seconds; a battery notification carries no measurement.
    for i in 0..20i64 {
        let ts = (T0 + 500 + i * 1_500) as f64 / 1000.0;
        let payload = json!({
            "src": "shellyplusht-08b61fcb7f3c", "dst": "shellyplusht-08b61fcb7f3c/events",
            "method": "NotifyStatus",
            "params": {"ts": ts, "temperature:0": {"id": 0, "tC": 21.5 + (i % 3) as f64, "tF": 70.7}, "humidity:0": {"id": 0, "rh": 40.5}}
        })
        .to_string();
        event_times.insert(payload.clone(), T0 + 500 + i * 1_500);
        m.push(("shellyplusht-08b61fcb7f3c/events/rpc".into(), payload));
        raw += 1;
    }
    m.push((
        "shellyplusht-08b61fcb7f3c/events/rpc".into(),
        r#"{"method":"NotifyStatus","params":{"ts":1733162460.1,"devicepower:0":{"id":0,"battery":{"V":5.9,"percent":85}}}}"#.into(),
    ));
    Plan {
        messages: m,
        raw,
        dead: vec![
            ("zigbee2mqtt", "not_json"),
            ("tasmota", "bad_timestamp"),
            ("esphome", "no_measurement"),
        ],
        excluded: 3,
        no_measurement_dropped: 2,
        event_times,
    }
}

/// Publishes with mosquitto_pub, QoS 1: one process per topic (`-l`: a message per line), so
/// each topic's messages keep their order (the order across topics does not matter here).
fn publish(port: u16, messages: &[(String, String)]) {
    let mut topics: Vec<&str> = Vec::new();
    for (t, _) in messages {
        if !topics.contains(&t.as_str()) {
            topics.push(t);
        }
    }
    for (i, topic) in topics.iter().enumerate() {
        let mut child = support::mosquitto_pub(port)
            .args(["-V", "mqttv311", "-i", &format!("family-pub-{i}")])
            .args(["-t", topic, "-l"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub (Debian's mosquitto-clients; scripts/test.sh installs it)");
        let mut stdin = child.stdin.take().unwrap();
        for (_, payload) in messages.iter().filter(|(t, _)| t == topic) {
            writeln!(stdin, "{payload}").unwrap();
        }
        drop(stdin);
        assert!(
            child.wait().unwrap().success(),
            "mosquitto_pub to {topic} failed"
        );
    }
}

/// The measurements of a raw record, read here from its payload by family.
fn measurements(route: &str, topic: &str, payload: &[u8]) -> Vec<(String, f64)> {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    if route == "esphome" {
        let name = topic.split('/').nth(3).unwrap().to_owned();
        return vec![(
            name,
            std::str::from_utf8(payload)
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
        )];
    }
    let v: Value = serde_json::from_slice(payload).unwrap();
    let mut out = Vec::new();
    let mut take = |name: &str, x: Option<&Value>| {
        if let Some(n) = x.and_then(num) {
            out.push((name.to_owned(), n));
        }
    };
    match route {
        "zigbee2mqtt" => {
            take("temperature", v.get("temperature"));
            take("humidity", v.get("humidity"));
            take("pressure", v.get("pressure"));
        }
        "tasmota" => {
            take("temperature", v.pointer("/SHT3X/Temperature"));
            take("humidity", v.pointer("/SHT3X/Humidity"));
            for (k, probe) in v.as_object().unwrap() {
                if k.starts_with("DS18B20-") {
                    take(&format!("probe_{k}"), probe.get("Temperature"));
                }
            }
        }
        "shelly" => {
            take("temperature", v.pointer("/params/temperature:0/tC"));
            take("humidity", v.pointer("/params/humidity:0/rh"));
        }
        other => panic!("unexpected route {other}"),
    }
    out
}

type Stats4 = (u64, f64, f64, f64);

fn expected_windows(raw: &[Record]) -> BTreeMap<(String, String, i64), Stats4> {
    let mut w: BTreeMap<(String, String, i64), Stats4> = BTreeMap::new();
    for r in raw {
        let route = &r.headers["edge.route"];
        let topic = r.headers.get("mqtt.topic").cloned().unwrap_or_default();
        for (name, v) in measurements(route, &topic, &r.value) {
            let start = r.timestamp - r.timestamp.rem_euclid(10_000);
            let e = w.entry((r.key.clone(), name, start)).or_insert((
                0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                0.0,
            ));
            e.0 += 1;
            e.1 = e.1.min(v);
            e.2 = e.2.max(v);
            e.3 += v;
        }
    }
    w
}

async fn run_families(external: bool) {
    let bridge = RouteBridge::start(ROUTES, external, "edge-bridge-families").await;
    let (stats, port) = (bridge.stats.clone(), bridge.port);

    let plan = plan();
    // Status chatter on topics no route takes.
    let mut messages = vec![
        (
            "tele/kitchen/STATE".to_owned(),
            r#"{"Time":"2024-12-02T19:00:00","Uptime":"0T01:00:00"}"#.to_owned(),
        ),
        ("tele/kitchen/LWT".to_owned(), "Online".to_owned()),
        ("esphome/livingroom/status".to_owned(), "online".to_owned()),
    ];
    messages.extend(plan.messages.iter().cloned());
    let publish_messages = messages.clone();
    tokio::task::spawn_blocking(move || publish(port, &publish_messages))
        .await
        .unwrap();
    // Shelly's `+/events/rpc` overlaps `zigbee2mqtt/#`: the bridge subscribes to `+/#`, so
    // the chatter above arrives too, and is counted as unrouted.
    let unsubscribed = (messages.len() - plan.messages.len()) as u64;
    let received = messages.len() as u64;
    let emitted = support::wait_all_in_and_closed(&stats, received).await;
    let (kafka, _mosquitto, config, _state) = bridge.stop().await;
    assert_eq!(stats.readings_in.load(Relaxed), received);

    let raw = read_topic(
        &kafka.brokers,
        &config.kafka.raw_topic,
        plan.raw,
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
        plan.dead.len(),
        Duration::from_secs(30),
    );
    assert_eq!(
        raw.len(),
        plan.raw,
        "one raw record per message with a measurement"
    );
    assert_eq!(aggs.len(), emitted);

    // Raw: the payload untouched, the route named, event times where the payload has one.
    let sent: std::collections::HashSet<&str> =
        plan.messages.iter().map(|(_, p)| p.as_str()).collect();
    for r in &raw {
        assert!(sent.contains(std::str::from_utf8(&r.value).unwrap()));
        if let Some(t) = plan.event_times.get(std::str::from_utf8(&r.value).unwrap()) {
            assert_eq!(
                r.timestamp,
                *t,
                "event time of {}",
                String::from_utf8_lossy(&r.value)
            );
        }
    }
    let keys: std::collections::BTreeSet<(&str, &str)> = raw
        .iter()
        .map(|r| (r.headers["edge.route"].as_str(), r.key.as_str()))
        .collect();
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        [
            ("esphome", "livingroom"),
            ("shelly", "shellyplusht-08b61fcb7f3c"),
            ("tasmota", "kitchen"),
            ("zigbee2mqtt", "Living Room/thermo"),
            ("zigbee2mqtt", "hall"),
        ]
    );

    // Aggregates: one record per (sensor, measurement, window), equal to the computation here.
    let mut got = BTreeMap::new();
    for a in &aggs {
        let v: Value = serde_json::from_slice(&a.value).unwrap();
        let name = v["measurement"]
            .as_str()
            .expect("several measurements: named")
            .to_owned();
        let s = &v[&name];
        assert_eq!(v["sensor"].as_str().unwrap(), a.key);
        assert_eq!(v["time"], v["end"]);
        assert_eq!(a.timestamp, v["start"].as_i64().unwrap());
        let count = s["count"].as_u64().unwrap();
        let sum = s["sum"].as_f64().unwrap();
        assert!((s["mean"].as_f64().unwrap() - sum / count as f64).abs() < 1e-9);
        let prev = got.insert(
            (a.key.clone(), name, v["start"].as_i64().unwrap()),
            (
                count,
                s["min"].as_f64().unwrap(),
                s["max"].as_f64().unwrap(),
                sum,
            ),
        );
        assert!(prev.is_none(), "a window emitted twice");
    }
    let want = expected_windows(&raw);
    assert_eq!(got.len(), want.len());
    for (k, (c, lo, hi, sum)) in &want {
        let g = got
            .get(k)
            .unwrap_or_else(|| panic!("no aggregate for {k:?}"));
        assert_eq!((g.0, g.1, g.2), (*c, *lo, *hi), "{k:?}");
        assert!((g.3 - sum).abs() < 1e-9, "{k:?}: sum {} != {sum}", g.3);
    }
    let measured: std::collections::BTreeSet<(&str, &str)> = want
        .keys()
        .map(|(s, m, _)| (s.as_str(), m.as_str()))
        .collect();
    assert!(measured.contains(&("kitchen", "probe_DS18B20-2")));
    assert!(measured.contains(&("livingroom", "humidity")));
    assert!(measured.contains(&("Living Room/thermo", "pressure")));
    assert!(!measured.iter().any(|(_, m)| *m == "battery"));

    // Dead letters: each with its route and reason.
    let mut reasons: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            (
                d.headers["edge.route"].clone(),
                d.headers["error.reason"].clone(),
            )
        })
        .collect();
    reasons.sort();
    let mut want_dead: Vec<(String, String)> = plan
        .dead
        .iter()
        .map(|(r, e)| (r.to_string(), e.to_string()))
        .collect();
    want_dead.sort();
    assert_eq!(reasons, want_dead);

    // Ignored, by reason; and every publish accounted for.
    let ignored = |i: usize| stats.ignored_by_reason[i].load(Relaxed);
    assert_eq!(ignored(0), plan.excluded, "excluded");
    assert_eq!(ignored(1), plan.no_measurement_dropped, "no_measurement");
    assert_eq!(ignored(2), unsubscribed, "unrouted");
    assert_eq!(
        plan.raw as u64
            + plan.dead.len() as u64
            + plan.excluded
            + plan.no_measurement_dropped
            + unsubscribed,
        received
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_families_through_mosquitto() {
    run_families(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_families_through_the_embedded_broker() {
    run_families(false).await;
}

/// The README shows the tested file, not a copy that could drift from it.
#[test]
fn the_readme_shows_the_tested_routes() {
    let readme = include_str!("../../README.md");
    let body = ROUTES
        .lines()
        .skip_while(|l| l.starts_with('#') || l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        readme.contains(&body),
        "README.md must show deploy/routes-example.toml from its first route on"
    );
}
