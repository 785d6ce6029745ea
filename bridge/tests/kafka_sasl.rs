//! SASL against a real Kafka-API broker: nisshi (tansu's successor on crates.io) with SCRAM
//! users made through its own CLI, then required (`--authentication`). For SCRAM-SHA-256 and
//! SCRAM-SHA-512: the bridge binary with a wrong password is refused, says at ERROR which keys to
//! check, and keeps what it received; nothing reaches the broker. Restarted with the right
//! password on the same state directory, it delivers every reading and every aggregate, read
//! back by a consumer that logs in the same way.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_bridge::stats::Stats;
use edge_bridge::Config;
use edge_bridge_core::Stream;
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Message, Values};
use support::{
    free_port, publish, read_topic_with, reference, wait_for_log, wait_listening, BridgeProcess,
    Nisshi,
};

const READINGS: u64 = 200;
const USER: &str = "edge-gateway";
const PASSWORD: &str = "correct horse battery staple";
const REFUSED: &str = "Kafka refused the bridge: the brokers refused the credentials; check kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password";

fn dataset(start_ms: i64) -> Dataset {
    Dataset::new(DatasetOptions {
        sensors: 4,
        rate: 10.0,
        start_ms,
        seed: 11,
        values: Values::Walk,
        faults: Faults::default(),
        topic_template: "sensors/{sensor}/temperature".into(),
    })
}

/// The bridge's settings for this cluster, as environment variables (the binary) ...
fn env(
    kafka: &Nisshi,
    mechanism: &str,
    password: &str,
    mqtt: u16,
    state: &Path,
) -> Vec<(String, String)> {
    [
        ("EDGE_BRIDGE_MQTT_LISTEN", format!("127.0.0.1:{mqtt}")),
        ("EDGE_BRIDGE_MQTT_LISTEN_V5", String::new()),
        ("EDGE_BRIDGE_HTTP_LISTEN", String::new()),
        ("EDGE_BRIDGE_STATE_DIR", state.display().to_string()),
        ("EDGE_BRIDGE_WINDOW_IDLE_TIMEOUT", "1s".into()),
        ("EDGE_BRIDGE_SPOOL_SPILL_AFTER", "1s".into()),
        ("EDGE_BRIDGE_KAFKA_SHUTDOWN_TIMEOUT", "3s".into()),
        ("EDGE_BRIDGE_KAFKA_BROKERS", kafka.brokers.clone()),
        (
            "EDGE_BRIDGE_KAFKA_SECURITY_PROTOCOL",
            "sasl_plaintext".into(),
        ),
        ("EDGE_BRIDGE_KAFKA_SASL_MECHANISM", mechanism.into()),
        ("EDGE_BRIDGE_KAFKA_SASL_USERNAME", USER.into()),
        ("EDGE_BRIDGE_KAFKA_SASL_PASSWORD", password.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// ... and as a configuration (the bridge in this process).
fn config(kafka: &Nisshi, mechanism: &str, password: &str, state: &Path) -> Config {
    let mut c = support::bridge_config(&kafka.brokers, state);
    let k = &mut c.kafka;
    k.security_protocol = "sasl_plaintext".into();
    k.sasl_mechanism = mechanism.into();
    k.sasl_username = USER.into();
    k.sasl_password = password.into();
    c
}

/// What a consumer of this cluster logs in with.
fn consumer(mechanism: &str) -> [(&'static str, &str); 4] {
    [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", mechanism),
        ("sasl.username", USER),
        ("sasl.password", PASSWORD),
    ]
}

async fn refused_then_delivered(mechanism: &str, cli_mechanism: &str) {
    let kafka = Nisshi::start_with_users(&[(USER, PASSWORD, cli_mechanism)]);
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("bridge.log");
    let start_ms = support::now_ms() - 60_000;
    let sent: Vec<Message> = dataset(start_ms).take(READINGS as usize).collect();

    // A wrong password: refused with the keys to check, the readings kept in the spool.
    let mqtt = free_port();
    let wrong = env(&kafka, mechanism, "not the password", mqtt, state.path());
    let wrong: Vec<(&str, &str)> = wrong
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut bridge = BridgeProcess::spawn(&[], &wrong, &log, Stdio::null());
    wait_listening(
        &mut bridge.child,
        ([127, 0, 0, 1], mqtt).into(),
        "the bridge",
    );
    publish(mqtt, dataset(start_ms), READINGS, None, "sim-refused").await;
    wait_for_log(&mut bridge.child, &log, REFUSED);
    bridge.term();
    let settings = consumer(mechanism);
    let raw_topic = Config::default().kafka.raw_topic;
    let leaked = read_topic_with(
        &kafka.brokers,
        &raw_topic,
        0,
        Duration::from_secs(5),
        &settings,
    );
    assert!(
        leaked.is_empty(),
        "{} raw records got past a wrong password",
        leaked.len()
    );

    // The right password on the same state directory: everything arrives.
    let config = config(&kafka, mechanism, PASSWORD, state.path());
    config.validate().expect("valid configuration");
    let agg_topic = config.kafka.agg_topic.clone();
    let (expected, _) = reference::windows(
        &sent
            .iter()
            .map(|m| (m.sensor.clone(), m.ts_ms, m.value))
            .collect::<Vec<_>>(),
        10_000,
        1_000,
    );
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = support::spawn_bridge(config, stats.clone(), async {
        let _ = stop_rx.await;
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let raw = stats.stream(Stream::Raw).delivered.load(Relaxed);
        let agg = stats.stream(Stream::Aggregate).delivered.load(Relaxed);
        if raw >= READINGS && agg >= expected.len() as u64 && stats.snapshot().spool_records == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "with the right password, {raw} of {READINGS} raw records and {agg} of {} aggregates delivered: {}",
            expected.len(),
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    task.await.unwrap().expect("the bridge ran without error");
    let s = stats.snapshot();
    assert_eq!(
        s.raw.failed + s.raw.dropped + s.aggregate.failed + s.aggregate.dropped,
        0,
        "{s}"
    );

    let raw = read_topic_with(
        &kafka.brokers,
        &raw_topic,
        READINGS as usize,
        Duration::from_secs(30),
        &settings,
    );
    let mut got: Vec<(String, Vec<u8>)> = raw
        .iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect();
    let mut want: Vec<(String, Vec<u8>)> = sent
        .iter()
        .map(|m| (m.sensor.clone(), m.payload.clone().into_bytes()))
        .collect();
    got.sort();
    got.dedup();
    want.sort();
    assert_eq!(got, want, "raw readings read back over SASL");
    let agg = read_topic_with(
        &kafka.brokers,
        &agg_topic,
        expected.len(),
        Duration::from_secs(30),
        &settings,
    );
    reference::check_aggregates(&agg, &sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_256_refuses_a_wrong_password_and_loses_nothing() {
    refused_then_delivered("SCRAM-SHA-256", "scram256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_sha_512_refuses_a_wrong_password_and_loses_nothing() {
    refused_then_delivered("SCRAM-SHA-512", "scram512").await;
}
