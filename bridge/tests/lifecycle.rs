//! The bridge binary's lifecycle: on SIGTERM it stops every task it started and exits 0, with
//! its summary as the last thing it writes (no log line after it), even with a sensor still
//! connected, an HTTP client attached and the Kafka brokers unreachable.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, wait_for_log, wait_listening};

#[test]
fn sigterm_stops_every_task_and_the_summary_is_the_last_word() {
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, http) = (free_port(), free_port());
    // Nothing listens there: the probe and the producer keep failing in the background.
    let kafka = free_port();
    let log = dir.path().join("bridge.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-bridge"))
        .env("EDGE_BRIDGE_MQTT_LISTEN", format!("127.0.0.1:{mqtt}"))
        .env("EDGE_BRIDGE_MQTT_LISTEN_V5", "")
        .env("EDGE_BRIDGE_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("EDGE_BRIDGE_KAFKA_BROKERS", format!("127.0.0.1:{kafka}"))
        .env("EDGE_BRIDGE_STATE_DIR", dir.path().join("state"))
        .env("EDGE_BRIDGE_LOG_LEVEL", "debug")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    wait_listening(&mut child, ([127, 0, 0, 1], mqtt).into(), "the bridge");
    wait_for_log(&mut child, &log, "Bridge running");

    // A sensor that stays connected, and an HTTP client mid-request.
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mqtt.to_string(), "-q", "1"])
        .args(["-t", "sensors/s1/temperature", "-m", r#"{"value": 21}"#])
        .status()
        .expect("mosquitto_pub (scripts/test.sh installs it)");
    assert!(status.success());
    let mut sensor = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &mqtt.to_string(), "-t", "none"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut idle_http = TcpStream::connect(("127.0.0.1", http)).unwrap();
    idle_http.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();

    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let took = stopped.elapsed();
    let _ = sensor.kill();
    let _ = sensor.wait();
    let mut rest = Vec::new();
    let _ = idle_http.read_to_end(&mut rest);

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit status {status}:\n{text}");
    // kafka.shutdown_timeout (10 s) for the unconfirmed record, then the tasks' 2 s at most.
    assert!(
        took < Duration::from_secs(20),
        "stopped in {took:?}:\n{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let summary = lines
        .iter()
        .position(|l| l.starts_with("readings in: 1 "))
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    let after: Vec<&&str> = lines[summary..]
        .iter()
        .filter(|l| {
            [" TRACE ", " DEBUG ", " INFO ", " WARN ", " ERROR "]
                .iter()
                .any(|level| l.contains(level))
        })
        .collect();
    assert!(
        after.is_empty(),
        "log lines after the summary: {after:#?}\n{text}"
    );
}

/// Every tokio task the bridge spawned (HTTP endpoint and its sampler, broker probe, topic
/// creation retries, the external MQTT client loop) has ended once `run` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_outlives_the_bridge() {
    let mosquitto = support::Mosquitto::start();
    for external in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = edge_bridge::Config::default();
        // Unreachable: topic creation goes on retrying in the background.
        c.kafka.brokers = format!("127.0.0.1:{}", free_port());
        c.kafka.shutdown_timeout = Duration::from_millis(200);
        c.state_dir = dir.path().to_owned();
        c.http.listen = format!("127.0.0.1:{}", free_port());
        if external {
            c.mqtt.url = format!("mqtt://127.0.0.1:{}", mosquitto.port);
            c.mqtt.client_id = "edge-bridge-lifecycle".into();
        } else {
            c.mqtt.listen = format!("127.0.0.1:{}", free_port());
            c.mqtt.listen_v5 = String::new();
        }
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let stats = std::sync::Arc::new(edge_bridge::stats::Stats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let bridge = support::spawn_bridge(c, stats.clone(), async {
            let _ = stopped.await;
        })
        .await;
        if external {
            support::wait_subscribed(&stats).await;
        }
        assert!(
            metrics.num_alive_tasks() > before + 2,
            "the bridge runs tasks"
        );
        stop.send(()).unwrap();
        bridge.await.unwrap().expect("the bridge ran without error");
        wait_tasks_back_to(before, &format!("external broker {external}: the bridge")).await;
    }
}

/// Waits until the runtime has no more live tasks than `before`: a task is counted until it
/// has been dropped, and none may be left running for good. Fails naming `what` they outlived.
async fn wait_tasks_back_to(before: usize, what: &str) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = Instant::now() + Duration::from_secs(15);
    while metrics.num_alive_tasks() > before {
        assert!(
            Instant::now() < deadline,
            "{} tasks outlived {what}",
            metrics.num_alive_tasks() - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A bridge started and dropped without running (a caller that gave up) stops its tasks too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_dropped_unrun_leaves_no_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = edge_bridge::Config::default();
    c.kafka.brokers = format!("127.0.0.1:{}", free_port());
    c.kafka.create_topics = false;
    c.state_dir = dir.path().to_owned();
    c.http.listen = format!("127.0.0.1:{}", free_port());
    c.mqtt.listen = format!("127.0.0.1:{}", free_port());
    c.mqtt.listen_v5 = String::new();
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let stats = std::sync::Arc::new(edge_bridge::stats::Stats::default());
    let bridge = edge_bridge::bridge::Bridge::start(c, stats)
        .await
        .expect("the bridge starts");
    assert!(metrics.num_alive_tasks() > before, "the bridge runs tasks");
    drop(bridge);
    wait_tasks_back_to(before, "the dropped bridge").await;
}
