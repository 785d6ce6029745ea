//! Devices as they connect to the embedded broker, with a third-party client (Mosquitto's
//! `mosquitto_pub`, MQTT 3.1.1 and 5):
//!
//! - a CONNECT with keep-alive 0 ("none", allowed by MQTT 3.1.1 section 3.1.2.10 and by MQTT 5)
//!   is accepted and its messages arrive; rumqttd alone closed such a client without a CONNACK;
//! - a packet over `mqtt.max_packet_size` ends that device's connection, counted in
//!   `/metrics` by reason and named in a WARN line with the limit (an MQTT 5 device is sent a
//!   DISCONNECT saying "packet too large"), while a message just under the limit, and every
//!   other device, still get through.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, http_get, wait_for_log, BridgeProcess};

const LIMIT: usize = 4096;

/// Connects with keep-alive 0 (paho-mqtt 1.6), publishes one message at QoS 1 and waits for
/// its PUBACK. Arguments: port, protocol (4 or 5), client id, payload.
const PAHO_KEEP_ALIVE_ZERO: &str = r#"
import sys
import paho.mqtt.client as mqtt
port, version, client_id, payload = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
c = mqtt.Client(client_id=client_id, protocol=protocol)
c.connect("127.0.0.1", port, keepalive=0)
c.loop_start()
info = c.publish("sensors/%s/temperature" % client_id, payload, qos=1)
info.wait_for_publish(timeout=10)
c.disconnect()
c.loop_stop()
sys.exit(0 if info.is_published() else "no PUBACK within 10 s")
"#;

/// `mosquitto_pub` to the bridge's broker, the payload on stdin (`-s`).
fn pub_(port: u16, extra: &[&str], client_id: &str, topic: &str, payload: &[u8]) -> Output {
    use std::io::Write;
    let mut child = support::mosquitto_pub(port)
        .args(["-i", client_id, "-t", topic, "-s"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub (Debian's mosquitto-clients; scripts/test.sh installs it)");
    child.stdin.take().unwrap().write_all(payload).unwrap();
    child.wait_with_output().unwrap()
}

/// A metric's value in the `/metrics` text, 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Waits until the `/metrics` series reaches `want`; fails with the page after 30 s.
fn wait_metric(http: u16, series: &str, want: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = http_get(http, "/metrics");
        if metric(&page, series) >= want {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "{series} did not reach {want}:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keep_alive_zero_is_accepted_and_oversized_packets_are_counted_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, http) = (free_port(), free_port());
    let log = dir.path().join("bridge.log");
    // Nothing listens there: what is checked here happens before Kafka.
    let kafka = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "--mqtt-listen",
        &format!("127.0.0.1:{mqtt}"),
        "--kafka-brokers",
        &kafka,
    ]
    .map(String::from)
    .into();
    let http_listen = format!("127.0.0.1:{http}");
    let state = dir.path().join("state").display().to_string();
    let limit = LIMIT.to_string();
    let mut bridge = BridgeProcess::spawn(
        &args,
        &[
            ("EDGE_BRIDGE_MQTT_LISTEN_V5", ""),
            ("EDGE_BRIDGE_HTTP_LISTEN", &http_listen),
            ("EDGE_BRIDGE_STATE_DIR", &state),
            ("EDGE_BRIDGE_MQTT_MAX_PACKET_SIZE", &limit),
        ],
        &log,
        Stdio::null(),
    );
    wait_for_log(&mut bridge.child, &log, "Bridge running");
    let reading = |v: f64| format!(r#"{{"ts": {}, "value": {v}}}"#, support::now_ms());

    // Keep-alive 0, both protocol versions, with paho (mosquitto_pub refuses -k 0):
    // connected, published, acknowledged (QoS 1).
    for (version, id) in [("4", "no-keepalive-4"), ("5", "no-keepalive-5")] {
        let out = Command::new(support::examples_python())
            .args(["-c", PAHO_KEEP_ALIVE_ZERO, &mqtt.to_string(), version, id])
            .arg(reading(21.5))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{id}: paho with keep-alive 0 failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_metric(http, "edge_bridge_readings_received_total", 2);

    // Just under the limit: the packet's remaining length is the topic (2 + its length), the
    // packet id (2) and the payload, for MQTT 3.1.1. It passes (and is a dead letter: not JSON).
    let topic = "sensors/big/temperature";
    let fits = vec![b'x'; LIMIT - 2 - topic.len() - 2];
    let out = pub_(mqtt, &[], "just-fits", topic, &fits);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_metric(http, "edge_bridge_readings_received_total", 3);

    // One byte more, from each protocol version: disconnected, counted, named.
    let over = vec![b'x'; fits.len() + 1];
    let v4 = pub_(mqtt, &[], "too-big-4", topic, &over);
    // `-d` prints the packets the client receives, the server's DISCONNECT with its reason
    // code among them.
    let v5 = pub_(mqtt, &["-V", "mqttv5", "-d"], "too-big-5", topic, &over);
    assert!(!v4.status.success() && !v5.status.success());
    let page = wait_metric(
        http,
        r#"edge_bridge_mqtt_disconnects_total{reason="packet_too_large"}"#,
        2,
    );
    // The MQTT 5 device was told why: reason code 0x95, packet too large.
    let told = String::from_utf8_lossy(&v5.stdout);
    assert!(
        told.contains("Received DISCONNECT (149)"),
        "mosquitto_pub (MQTT 5) said: {told}"
    );

    // Other devices are not affected, and the oversized messages never reached the pipeline.
    let out = pub_(
        mqtt,
        &[],
        "after",
        "sensors/after/temperature",
        reading(22.0).as_bytes(),
    );
    assert!(out.status.success());
    let page_after = wait_metric(http, "edge_bridge_readings_received_total", 4);
    assert_eq!(
        metric(&page_after, "edge_bridge_readings_received_total"),
        4,
        "{page}"
    );

    // The log names the device and the limit, at WARN.
    let text = std::fs::read_to_string(&log).unwrap();
    let warned = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("MQTT client disconnected"))
        .unwrap_or_else(|| panic!("no WARN about the disconnect:\n{text}"));
    assert!(
        warned.contains("too-big-4") && warned.contains(&format!("mqtt.max_packet_size ({LIMIT})")),
        "{warned}"
    );
    bridge.term();
}
