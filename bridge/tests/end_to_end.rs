//! End to end against real brokers: the simulator publishes a seeded dataset over MQTT, the
//! bridge produces to a real Kafka-API broker (tansu), and a consumer reads every topic back.
//! Checked: every raw reading arrives exactly once with its key, payload and event time; every
//! aggregate equals the one computed independently from the same dataset; every malformed
//! payload is in the dead-letter topic with its reason.
//!
//! Run with `scripts/test.sh`, which installs tansu and Mosquitto once.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_bridge::config::RecordId;
use edge_bridge::stats::Stats;
use edge_bridge::Config;
use edge_bridge_core::{record_id, IdStream, TopicHeader};
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Message, Values};
use support::{free_port, read_topic, reference, Mosquitto, Tansu};

const READINGS: u64 = 3_000;
const TIMEOUT: Duration = Duration::from_secs(60);

fn dataset(seed: u64, start_ms: i64) -> Dataset {
    Dataset::new(DatasetOptions {
        sensors: 10,
        rate: 20.0,
        start_ms,
        seed,
        values: Values::Walk,
        faults: Faults {
            out_of_order: 0.05,
            late: 0.03,
            malformed: 0.03,
            duplicate: 0.0,
        },
        topic_template: "sensors/{sensor}/temperature".into(),
    })
}

fn base_config(brokers: &str, state: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_owned();
    c.state_dir = state.to_owned();
    c.mqtt.listen = format!("127.0.0.1:{}", free_port());
    c.mqtt.listen_v5 = String::new();
    c.window.idle_timeout = Duration::from_secs(1);
    // Several bridges run at once in this process: no fixed HTTP port.
    c.http.listen = String::new();
    c
}

/// Runs the bridge with `config`, publishes `READINGS` readings to `publish_port`, stops the
/// bridge once it has seen them all, and checks every topic.
async fn publish_and_check(config: Config, publish_port: u16, seed: u64) {
    let brokers = config.kafka.brokers.clone();
    let (raw_topic, agg_topic, dlq_topic) = (
        config.kafka.raw_topic.clone(),
        config.kafka.agg_topic.clone(),
        config.kafka.dead_letter_topic.clone(),
    );
    let ids_sent = config.kafka.record_id == RecordId::Header;
    let topic_sent = config.kafka.raw_topic_header == TopicHeader::Always;
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let external = !config.mqtt.url.is_empty();
    let bridge = support::spawn_bridge(config, stats.clone(), async {
        let _ = stop_rx.await;
    })
    .await;
    if external {
        // An external broker needs the bridge's subscription in place before anything is sent.
        support::wait_subscribed(&stats).await;
    }

    let start_ms = support::now_ms() - 120_000;
    let report = support::publish(
        publish_port,
        dataset(seed, start_ms),
        READINGS,
        None,
        &format!("edge-sim-{seed}"),
    )
    .await;
    eprintln!("simulator: {report}");

    let deadline = Instant::now() + TIMEOUT;
    while stats.readings_in.load(Relaxed) < READINGS {
        assert!(
            Instant::now() < deadline,
            "the bridge saw {} of {READINGS} readings",
            stats.readings_in.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent: Vec<Message> = dataset(seed, start_ms).take(READINGS as usize).collect();
    let (good, bad, readings) = reference::split(&sent);
    let (expected, expected_late) = reference::windows(&readings, 10_000, 1_000);

    // A clean stop saves open windows rather than emitting them: let the idle flush close the
    // last ones first.
    while stats.windows_emitted.load(Relaxed) < expected.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "{} of {} windows emitted",
            stats.windows_emitted.load(Relaxed),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    bridge.await.unwrap().expect("the bridge ran without error");
    let s = stats.snapshot();
    assert_eq!(s.rejected, bad.len() as u64);
    assert_eq!(s.late, expected_late as u64);
    assert_eq!(s.raw.failed + s.aggregate.failed + s.dead_letter.failed, 0);

    // Raw: exactly once each, with key, untouched payload and event time.
    let raw = read_topic(&brokers, &raw_topic, good.len(), Duration::from_secs(20));
    assert_eq!(raw.len(), good.len(), "raw records");
    let mut want: HashMap<(String, Vec<u8>, i64), usize> = HashMap::new();
    for m in &good {
        *want
            .entry((m.sensor.clone(), m.payload.clone().into_bytes(), m.ts_ms))
            .or_default() += 1;
    }
    for r in &raw {
        let k = (r.key.clone(), r.value.clone(), r.timestamp);
        let n = want
            .get_mut(&k)
            .unwrap_or_else(|| panic!("unexpected raw record {k:?}"));
        *n -= 1;
        // By default a raw record carries no header: its topic follows from the key, and its
        // id is computed by the consumer.
        let topic = format!("sensors/{}/temperature", r.key);
        assert_eq!(
            r.headers.get("mqtt.topic"),
            topic_sent.then_some(&topic),
            "{:?}",
            r.headers
        );
        let id = record_id(IdStream::Raw, r.key.as_bytes(), r.timestamp, &r.value);
        assert_eq!(
            r.headers.get("edge.id"),
            ids_sent.then(|| format!("{id:016x}")).as_ref(),
            "{:?}",
            r.headers
        );
        assert_eq!(
            r.headers.len(),
            usize::from(topic_sent) + usize::from(ids_sent)
        );
    }
    assert!(want.values().all(|n| *n == 0));
    // Per-sensor order holds in the raw topic.
    for sensor in expected.keys().map(|(s, _)| s) {
        let got: Vec<&[u8]> = raw
            .iter()
            .filter(|r| &r.key == sensor)
            .map(|r| &r.value[..])
            .collect();
        let sent: Vec<&[u8]> = good
            .iter()
            .filter(|m| &m.sensor == sensor)
            .map(|m| m.payload.as_bytes())
            .collect();
        assert_eq!(got, sent, "order of {sensor}");
    }

    // Aggregates: equal to the independent computation, window for window.
    let agg = read_topic(
        &brokers,
        &agg_topic,
        expected.len(),
        Duration::from_secs(20),
    );
    let mut got = BTreeMap::new();
    for r in &agg {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        let t = &v["temperature"];
        let start = v["start"].as_i64().unwrap();
        assert_eq!(v["time"].as_i64().unwrap(), start + 10_000);
        assert_eq!(
            r.timestamp, start,
            "aggregate timestamp is the window start"
        );
        assert_eq!(v["sensor"].as_str().unwrap(), r.key);
        let e = reference::Expected {
            count: t["count"].as_u64().unwrap(),
            min: t["min"].as_f64().unwrap(),
            max: t["max"].as_f64().unwrap(),
            sum: t["sum"].as_f64().unwrap(),
        };
        let mean = t["mean"].as_f64().unwrap();
        assert!((mean - e.sum / e.count as f64).abs() < 1e-9);
        assert!(
            got.insert((r.key.clone(), start), e).is_none(),
            "window twice"
        );
    }
    assert_eq!(got.len(), expected.len());
    for (k, e) in &expected {
        let g = got.get(k).unwrap_or_else(|| panic!("missing window {k:?}"));
        assert_eq!((g.count, g.min, g.max), (e.count, e.min, e.max), "{k:?}");
        assert!(
            (g.sum - e.sum).abs() < 1e-6,
            "{k:?}: {} vs {}",
            g.sum,
            e.sum
        );
    }

    // Dead letters: each malformed payload, with its reason.
    let dlq = read_topic(&brokers, &dlq_topic, bad.len(), Duration::from_secs(20));
    assert_eq!(dlq.len(), bad.len());
    for r in &dlq {
        let reason = r.headers.get("error.reason").expect("reason header");
        assert!(
            edge_bridge_core::DecodeError::REASONS.contains(&reason.as_str()),
            "{reason}"
        );
        assert!(r.headers.contains_key("error.message"));
        assert!(bad.iter().any(|m| m.payload.as_bytes() == r.value));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_to_kafka() {
    let kafka = Tansu::start();
    let state = tempfile::tempdir().unwrap();
    let config = base_config(&kafka.brokers, state.path());
    let port = support::port_of(&config.mqtt.listen);
    publish_and_check(config, port, 11).await;
}

async fn through_mosquitto(protocol: &str, seed: u64) {
    let kafka = Tansu::start();
    let mosquitto = Mosquitto::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = base_config(&kafka.brokers, state.path());
    config.mqtt.url = format!("mqtt://127.0.0.1:{}", mosquitto.port);
    config.mqtt.protocol = protocol.into();
    config.mqtt.client_id = format!("edge-bridge-test-{seed}");
    if protocol == "5" {
        // The headers a consumer may ask for, on one of the runs.
        config.kafka.record_id = RecordId::Header;
        config.kafka.raw_topic_header = TopicHeader::Always;
    }
    publish_and_check(config, mosquitto.port, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_mqtt_311_to_kafka() {
    through_mosquitto("3.1.1", 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_mqtt_5_to_kafka() {
    through_mosquitto("5", 13).await;
}

/// The tutorial's own producer wrote `json.dumps(json.dumps({"ts": dt.isoformat(), "value": v}))`:
/// a JSON string holding the object, and `isoformat()` drops the microseconds when they are zero.
/// Published here with Mosquitto's own client, a third-party MQTT client, to the embedded broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_producer_payloads_are_aggregated() {
    let kafka = Tansu::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = base_config(&kafka.brokers, state.path());
    let port = support::port_of(&config.mqtt.listen);
    let port_v5 = free_port();
    config.mqtt.listen_v5 = format!("127.0.0.1:{port_v5}");
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = support::spawn_bridge(config, stats.clone(), async {
        let _ = stop_rx.await;
    })
    .await;

    let t0 = (support::now_ms() - 60_000) / 10_000 * 10_000;
    let iso = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    };
    let lines: Vec<String> = [(0, 10), (1_000, 20), (2_000, 33), (12_000, 5)]
        .iter()
        .map(|(dt, v)| {
            let inner = format!(r#"{{"ts": "{}", "value": {v}}}"#, iso(t0 + dt));
            serde_json::to_string(&inner).unwrap()
        })
        .collect();
    assert!(lines[0].starts_with(r#""{\"ts\": \""#), "{}", lines[0]);
    let mut publisher = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-l"])
        .args(["-t", "sensors/Sensor1/temperature"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian package mosquitto-clients; scripts/test.sh installs it)");
    {
        use std::io::Write;
        let mut stdin = publisher.stdin.take().unwrap();
        for l in &lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    assert!(publisher.wait().unwrap().success());
    // MQTT 5 user properties travel to Kafka headers.
    let v5 = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port_v5.to_string(),
            "-V",
            "mqttv5",
            "-q",
            "1",
        ])
        .args(["-t", "sensors/Sensor2/temperature", "-m", r#"{"value": 7}"#])
        .args(["-D", "publish", "user-property", "site", "north"])
        .status()
        .unwrap();
    assert!(v5.success());

    let deadline = Instant::now() + TIMEOUT;
    while stats.readings_in.load(Relaxed) < 5 {
        assert!(
            Instant::now() < deadline,
            "the bridge did not see the readings"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_tx.send(()).unwrap();
    bridge.await.unwrap().unwrap();
    assert_eq!(stats.rejected.load(Relaxed), 0);

    let agg = read_topic(
        &kafka.brokers,
        "agg-temperature",
        2,
        Duration::from_secs(20),
    );
    let first: serde_json::Value = serde_json::from_slice(&agg[0].value).unwrap();
    assert_eq!(agg[0].key, "Sensor1");
    assert_eq!(first["time"], t0 + 10_000);
    assert_eq!(
        first["temperature"],
        serde_json::json!({"count": 3, "min": 10, "max": 33, "mean": 21.0, "sum": 63})
    );
    // The raw topic keeps the double-encoded payload exactly as published.
    let raw = read_topic(
        &kafka.brokers,
        "raw-temperature",
        5,
        Duration::from_secs(20),
    );
    assert_eq!(raw.len(), 5);
    assert_eq!(raw[0].value, lines[0].as_bytes());
    assert_eq!(raw[0].timestamp, t0);
    let from_v5 = raw.iter().find(|r| r.key == "Sensor2").unwrap();
    assert_eq!(
        from_v5.headers.get("site").map(String::as_str),
        Some("north")
    );
    // The topic follows from the key: not sent by default.
    assert_eq!(from_v5.headers.get("mqtt.topic"), None);
}
