//! Routes change between restarts while Mosquitto keeps the bridge's session: the bridge
//! subscribes the filters the routes gained and unsubscribes those they lost, without
//! subscribing again to what the session holds (which would re-send its retained messages as
//! new readings).

mod support;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use edge_bridge::stats::Stats;
use support::{Mosquitto, Tansu};

const ZIGBEE: &str = r#"
[[routes]]
name = "zigbee2mqtt"
topics = ["zigbee2mqtt/#"]
measurements = { temperature = "/temperature" }
"#;

const TASMOTA: &str = r#"
[[routes]]
name = "tasmota"
topics = ["tele/+/SENSOR"]
measurements = { temperature = "/SHT3X/Temperature" }
"#;

fn pub_(port: u16, topic: &str, payload: &str, retain: bool) {
    let mut cmd = support::mosquitto_pub(port);
    cmd.args(["-t", topic, "-m", payload]);
    if retain {
        cmd.arg("-r");
    }
    assert!(cmd
        .status()
        .expect("mosquitto_pub (Debian's mosquitto-clients; scripts/test.sh installs it)")
        .success());
}

/// One run of the bridge on `routes`, with the same client id and state directory each time;
/// `during` publishes while it runs, and the run ends once one publish was aggregated.
async fn run(
    kafka: &Tansu,
    mosquitto: &Mosquitto,
    state: &std::path::Path,
    routes: &str,
    during: impl FnOnce(u16) + Send + 'static,
) -> Arc<Stats> {
    let mut config = support::bridge_config(&kafka.brokers, state);
    config.routes = toml::from_str::<edge_bridge::Config>(routes)
        .unwrap()
        .routes;
    config.mqtt.url = format!("mqtt://127.0.0.1:{}", mosquitto.port);
    config.mqtt.client_id = "edge-bridge-session".into();
    let bridge = support::Running::start(config).await;
    let stats = bridge.stats.clone();
    support::wait_subscribed(&stats).await;
    let port = mosquitto.port;
    tokio::task::spawn_blocking(move || during(port))
        .await
        .unwrap();
    support::wait_for("one publish aggregated", || {
        stats.aggregated.load(Relaxed) >= 1
    })
    .await;
    bridge.stop().await;
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_follows_the_routes() {
    let kafka = Tansu::start();
    let mosquitto = Mosquitto::start();
    let state = tempfile::tempdir().unwrap();
    // Run 1: Zigbee2MQTT only; a retained message, as Zigbee2MQTT can publish device states.
    run(&kafka, &mosquitto, state.path(), ZIGBEE, |port| {
        pub_(port, "zigbee2mqtt/hall", r#"{"temperature":20}"#, true);
    })
    .await;
    // Run 2: Tasmota added. Its message arrives; the retained Zigbee2MQTT message is not sent
    // again (the session's subscription to zigbee2mqtt/# was not made again).
    let both = format!("{ZIGBEE}{TASMOTA}");
    run(&kafka, &mosquitto, state.path(), &both, |port| {
        pub_(
            port,
            "tele/kitchen/SENSOR",
            r#"{"SHT3X":{"Temperature":21}}"#,
            false,
        );
    })
    .await;
    // Run 3: Zigbee2MQTT removed. A Zigbee2MQTT message published before a Tasmota one would
    // arrive first if the session still held zigbee2mqtt/#.
    let last = run(&kafka, &mosquitto, state.path(), TASMOTA, |port| {
        pub_(port, "zigbee2mqtt/hall", r#"{"temperature":22}"#, false);
        pub_(
            port,
            "tele/kitchen/SENSOR",
            r#"{"SHT3X":{"Temperature":23}}"#,
            false,
        );
    })
    .await;
    assert_eq!(
        last.readings_in.load(Relaxed),
        1,
        "zigbee2mqtt/# was unsubscribed"
    );

    // Exactly one raw record per publish a route took: no retained message twice.
    let raw = support::read_topic(
        &kafka.brokers,
        "raw-temperature",
        3,
        Duration::from_secs(30),
    );
    let got: Vec<(&str, &str)> = raw
        .iter()
        .map(|r| (r.key.as_str(), std::str::from_utf8(&r.value).unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("hall", r#"{"temperature":20}"#),
            ("kitchen", r#"{"SHT3X":{"Temperature":21}}"#),
            ("kitchen", r#"{"SHT3X":{"Temperature":23}}"#),
        ]
    );
}
