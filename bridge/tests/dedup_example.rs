//! The consumer-side example, `examples/dedup.py`, run with its own clients (confluent-kafka and
//! xxhash from PyPI; scripts/tools.sh installs them) against what the bridge wrote: the ids it
//! computes from each record are the `edge.id` headers the bridge sent, and it passes on each
//! reading once when the sensors sent everything twice (as an MQTT redelivery or a spool
//! replay would).

mod support;

use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_bridge::config::RecordId;
use edge_bridge::stats::Stats;
use edge_bridge_core::Stream;
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Values};
use support::Tansu;

const READINGS: u64 = 2_000;

fn dataset(start_ms: i64) -> Dataset {
    Dataset::new(DatasetOptions {
        sensors: 20,
        rate: 4.0,
        start_ms,
        seed: 11,
        values: Values::Walk,
        faults: Faults::default(),
        topic_template: "sensors/{sensor}/temperature".into(),
    })
}

/// Runs the example on `topic`; its counts line (stderr).
fn dedup(brokers: &str, topic: &str, stream: &str) -> String {
    let python = support::examples_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/dedup.py");
    let out = Command::new(python)
        .args([
            script,
            "--brokers",
            brokers,
            "--topic",
            topic,
            "--stream",
            stream,
        ])
        .args(["--check", "--quiet", "--exit-at-end"])
        .output()
        .expect("running examples/dedup.py");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dedup.py failed: {stderr}");
    stderr.lines().last().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_computes_the_bridge_s_ids_and_drops_every_copy() {
    let kafka = Tansu::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = support::bridge_config(&kafka.brokers, state.path());
    config.kafka.record_id = RecordId::Header;
    let port = support::port_of(&config.mqtt.listen);
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = support::spawn_bridge(config, stats.clone(), async {
        let _ = stop_rx.await;
    })
    .await;
    let now = support::now_ms();
    // The same readings twice: every raw record twice, byte for byte.
    for copy in ["first", "second"] {
        support::publish(port, dataset(now - 120_000), READINGS, None, copy).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.stream(Stream::Raw).delivered.load(Relaxed) < 2 * READINGS {
        assert!(Instant::now() < deadline, "raw records not all delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    bridge.await.unwrap().unwrap();

    assert_eq!(
        dedup(&kafka.brokers, "raw-temperature", "raw"),
        format!(
            "records={} unique={READINGS} duplicates={READINGS} ids_checked={}",
            2 * READINGS,
            2 * READINGS
        )
    );
    let aggregates = stats.stream(Stream::Aggregate).delivered.load(Relaxed);
    assert!(aggregates > 0);
    assert_eq!(
        dedup(&kafka.brokers, "agg-temperature", "aggregate"),
        format!("records={aggregates} unique={aggregates} duplicates=0 ids_checked={aggregates}")
    );
}
