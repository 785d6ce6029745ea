//! The embedded broker under a flood faster than the bridge: every reading is either taken in
//! or counted as dropped by the broker, and the link keeps forwarding afterwards. (The router
//! pauses a link whose buffer is full until the link asks for more; a request lost when the
//! main loop's select! dropped the read once left the link paused for good, so that no
//! reading reached Kafka again.)

mod support;

use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_bridge::stats::Stats;
use edge_bridge::Config;
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Values};
use support::{free_port, Tansu};

const CLIENTS: u64 = 4;
const PER_CLIENT: u64 = 100_000;
const FLOOD: u64 = CLIENTS * PER_CLIENT;

/// The nice value of this process's thread named `name`, from /proc.
fn thread_nice(name: &str) -> Option<i32> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim_end() != name {
            return None;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the parenthesised name start at field 3 (state); nice is field 19.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(16)?
            .parse()
            .ok()
    })
}

fn start_ms() -> i64 {
    let now = support::now_ms();
    now - 3_600_000
}

fn dataset(sensors: u32, seed: u64) -> Dataset {
    Dataset::new(DatasetOptions {
        sensors,
        rate: 4.0,
        start_ms: start_ms(),
        seed,
        values: Values::Walk,
        faults: Faults::default(),
        topic_template: "sensors/{sensor}/temperature".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_keeps_forwarding_after_a_flood() {
    let kafka = Tansu::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.kafka.brokers = kafka.brokers.clone();
    config.state_dir = state.path().to_owned();
    config.http.listen = String::new();
    let port = free_port();
    config.mqtt.listen = format!("127.0.0.1:{port}");
    config.mqtt.listen_v5 = String::new();
    config.window.max_sensors = 20_000;
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = support::spawn_bridge(config, stats.clone(), async {
        let _ = stop_rx.await;
    })
    .await;
    // The broker's network thread yields to the pipeline: it runs 10 nice steps lower than
    // this test's threads (the router, which feeds the bridge, does not).
    assert_eq!(
        thread_nice("v4-1"),
        Some((thread_nice("router-0").unwrap() + 10).min(19))
    );

    // QoS 0, as fast as the broker reads, from Mosquitto's own fast client: the bridge (a
    // debug build here) falls behind and is paused, often.
    let lines: String = (0..PER_CLIENT)
        .map(|i| {
            format!(
                "{{\"ts\": {}, \"value\": {}}}\n",
                start_ms() + i as i64,
                i % 50
            )
        })
        .collect();
    let file = state.path().join("flood.jsonl");
    std::fs::write(&file, lines).unwrap();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "0", "-l"])
                .args([
                    "-i",
                    &format!("flood-{c}"),
                    "-t",
                    &format!("sensors/f{c}/temperature"),
                ])
                .stdin(std::fs::File::open(&file).unwrap())
                .spawn()
                .expect("mosquitto_pub (Debian's mosquitto-clients; scripts/test.sh installs it)")
        })
        .collect();
    for mut c in clients {
        assert!(c.wait().unwrap().success());
    }
    let accounted = || stats.readings_in.load(Relaxed) + stats.broker_dropped.load(Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while accounted() < FLOOD {
        assert!(
            Instant::now() < deadline,
            "the link stalled: {} readings in, {} dropped by the broker, of {FLOOD}",
            stats.readings_in.load(Relaxed),
            stats.broker_dropped.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accounted(), FLOOD, "nothing extra, nothing unaccounted");
    eprintln!(
        "flood: {} readings in, {} dropped by the broker (counted)",
        stats.readings_in.load(Relaxed),
        stats.broker_dropped.load(Relaxed)
    );

    // And the link still forwards what comes after.
    let before = stats.readings_in.load(Relaxed);
    support::publish(port, dataset(5, 2), 500, Some(500.0), "after").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.readings_in.load(Relaxed) < before + 500 {
        assert!(
            Instant::now() < deadline,
            "after the flood only {} of 500 readings came through",
            stats.readings_in.load(Relaxed) - before
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    bridge.await.unwrap().expect("the bridge ran without error");
}
