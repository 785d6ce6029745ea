//! The raw policy end to end, from Mosquitto at QoS 1 (a persistent session) to tansu: the raw
//! topic holds exactly the readings the policy sends, the aggregates count every reading, the
//! readings left out are counted by reason, and each of their MQTT messages is acknowledged (a
//! second bridge on the same session is redelivered nothing).

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use edge_bridge_core::raw_policy::{RawFilter, RawPolicy};
use edge_bridge_core::Stream;
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Message, Values};
use support::{read_topic, wait_for, Mosquitto, Running, Tansu};

const READINGS: u64 = 1_600;
const SENSORS: u32 = 8;

fn dataset(start_ms: i64) -> Dataset {
    Dataset::new(DatasetOptions {
        sensors: SENSORS,
        rate: 4.0,
        start_ms,
        seed: 21,
        values: Values::Walk,
        faults: Faults::default(),
        topic_template: "sensors/{sensor}/temperature".into(),
    })
}

/// The raw topic holds exactly these messages' readings, in this order: key, event time and
/// payload.
fn assert_raw_topic_holds<'a>(brokers: &str, messages: impl ExactSizeIterator<Item = &'a Message>) {
    let want: Vec<(String, i64, Vec<u8>)> = messages
        .map(|m| (m.sensor.clone(), m.ts_ms, m.payload.clone().into_bytes()))
        .collect();
    let raw = read_topic(
        brokers,
        "raw-temperature",
        want.len(),
        Duration::from_secs(20),
    );
    let got: Vec<(String, i64, Vec<u8>)> = raw
        .iter()
        .map(|r| (r.key.clone(), r.timestamp, r.value.clone()))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadband_sends_what_it_says_and_acknowledges_the_rest() {
    let kafka = Tansu::start();
    let mosquitto = Mosquitto::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = support::bridge_config(&kafka.brokers, state.path());
    config.mqtt.url = format!("mqtt://127.0.0.1:{}", mosquitto.port);
    config.mqtt.client_id = "edge-bridge-raw-policy".into();
    config.raw.policy = "deadband".into();
    config.raw.deadband_absolute = 0.5;
    config.raw.interval = Duration::from_secs(5);
    let policy = config.raw_policy().unwrap();
    assert!(matches!(policy, RawPolicy::Deadband { .. }));

    let bridge = Running::start(config.clone()).await;
    let stats = bridge.stats.clone();
    support::wait_subscribed(&stats).await;
    let now = support::now_ms();
    let start_ms = now - 300_000;
    let messages: Vec<_> = dataset(start_ms).take(READINGS as usize).collect();
    support::publish(
        mosquitto.port,
        dataset(start_ms),
        READINGS,
        None,
        "sim-raw-policy",
    )
    .await;
    wait_for("every reading", || {
        stats.readings_in.load(Relaxed) >= READINGS
    })
    .await;
    // The policy's own decisions, replayed independently on what was published.
    let mut filter = RawFilter::new(policy, 1_000).unwrap();
    // The value as the bridge reads it from the payload.
    let value = |payload: &str| {
        serde_json::from_str::<serde_json::Value>(payload).unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    let expected: Vec<_> = messages
        .iter()
        .filter(|m| filter.admit(&m.sensor, m.ts_ms, value(&m.payload)).is_ok())
        .collect();
    let left_out = READINGS - expected.len() as u64;
    assert!(
        left_out > READINGS / 4 && (expected.len() as u64) > READINGS / 10,
        "the deadband should leave out some readings and send others: {left_out} left out"
    );
    wait_for("the raw records", || {
        stats.stream(Stream::Raw).delivered.load(Relaxed) >= expected.len() as u64
    })
    .await;
    bridge.stop().await;

    let s = stats.snapshot();
    assert_eq!(s.thinned, left_out);
    assert_eq!(s.aggregated, READINGS, "every reading is aggregated");
    assert_eq!(s.raw.delivered, expected.len() as u64);
    assert_raw_topic_holds(&kafka.brokers, expected.into_iter());
    // Every aggregate counts every reading of its window, sent raw or not.
    let aggregates = read_topic(
        &kafka.brokers,
        "agg-temperature",
        s.aggregate.delivered as usize,
        Duration::from_secs(20),
    );
    let mut per_window: HashMap<(String, i64), u64> = HashMap::new();
    for m in &messages {
        *per_window
            .entry((m.sensor.clone(), m.ts_ms.div_euclid(10_000) * 10_000))
            .or_default() += 1;
    }
    assert!(!aggregates.is_empty());
    for a in &aggregates {
        let v: serde_json::Value = serde_json::from_slice(&a.value).unwrap();
        assert_eq!(
            v["temperature"]["count"].as_u64(),
            per_window.get(&(a.key.clone(), a.timestamp)).copied(),
            "{v}"
        );
    }

    // Every message was acknowledged: the same session gets nothing redelivered.
    let bridge = Running::start(config).await;
    let stats2 = bridge.stats.clone();
    support::wait_subscribed(&stats2).await;
    // A marker published after the reconnect arrives after any redelivery would have.
    support::publish(
        mosquitto.port,
        dataset(now),
        1,
        None,
        "sim-raw-policy-marker",
    )
    .await;
    wait_for("the marker", || stats2.readings_in.load(Relaxed) >= 1).await;
    bridge.stop().await;
    assert_eq!(
        stats2.readings_in.load(Relaxed),
        1,
        "messages of readings left out were redelivered: their acks were never sent"
    );
}

/// A daily window that does not hold `now_ms`: the hour that starts two hours later (UTC).
fn window_closed_at(now_ms: i64) -> String {
    let hour = (now_ms / 3_600_000 + 2) % 24;
    format!("{hour:02}:00-{:02}:00", (hour + 1) % 24)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_raw_waits_in_the_spool_for_its_window_and_the_aggregates_do_not() {
    let kafka = Tansu::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = support::bridge_config(&kafka.brokers, state.path());
    config.raw.policy = "deferred".into();
    config.raw.send_window = window_closed_at(support::now_ms());
    assert!(matches!(config.raw_deferral(), Ok(Some(Some(_)))));
    let port = support::port_of(&config.mqtt.listen);

    // Outside the window: readings in, aggregates out, raw records held in the spool.
    let bridge = Running::start(config.clone()).await;
    let stats = bridge.stats.clone();
    let start_ms = support::now_ms() - 300_000;
    let messages: Vec<_> = dataset(start_ms).take(READINGS as usize).collect();
    support::publish(port, dataset(start_ms), READINGS, None, "sim-deferred").await;
    let emitted = support::wait_all_in_and_closed(&stats, READINGS).await as u64;
    wait_for("the aggregates", || {
        stats.stream(Stream::Aggregate).delivered.load(Relaxed) >= emitted
    })
    .await;
    bridge.stop().await;
    let s = stats.snapshot();
    assert_eq!(
        s.raw.delivered, 0,
        "no raw record left the spool outside the window"
    );
    assert_eq!(s.raw.spooled, READINGS);
    assert_eq!(s.aggregated, READINGS);
    assert!(read_topic(&kafka.brokers, "raw-temperature", 0, Duration::from_secs(2)).is_empty());
    let aggregates = read_topic(
        &kafka.brokers,
        "agg-temperature",
        emitted as usize,
        Duration::from_secs(20),
    );
    assert_eq!(aggregates.len() as u64, emitted);

    // The next start, with no window (any time the aggregates leave the link free): the raw
    // readings of the spool go out, in the order they came.
    config.raw.send_window = String::new();
    let bridge = Running::start(config).await;
    let stats = bridge.stats.clone();
    wait_for("the deferred raw records", || {
        stats.stream(Stream::Raw).delivered.load(Relaxed) >= READINGS
    })
    .await;
    bridge.stop().await;
    assert_raw_topic_holds(&kafka.brokers, messages.iter());
}
