//! The bridge's count of bytes on the wire to Kafka (`edge_bridge_uplink_sent_bytes`, from
//! librdkafka's per-connection statistics) against a proxy on the uplink that counts every
//! byte it carries: within 2 % of it, and never more. The proxy also carries what the bridge
//! does not meter (its topic admin and broker probe, a few hundred bytes), so the bridge's
//! figure is the smaller.

mod support;

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_bridge::stats::Stats;
use edge_bridge_core::Stream;
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Values};
use support::proxy::Proxy;
use support::{free_port, publish, Tansu};

const READINGS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wire_bytes_the_bridge_reports_are_what_the_link_carried() {
    let proxy_port = free_port();
    let kafka = Tansu::start_advertising(Some(proxy_port));
    let proxy = Proxy::start(proxy_port, kafka.direct);
    let state = tempfile::tempdir().unwrap();
    let config = support::bridge_config(&kafka.brokers, state.path());
    let port = support::port_of(&config.mqtt.listen);
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = support::spawn_bridge(config, stats.clone(), async {
        let _ = stop_rx.await;
    })
    .await;
    let now = support::now_ms();
    let data = Dataset::new(DatasetOptions {
        sensors: 100,
        rate: 4.0,
        start_ms: now - 60_000,
        seed: 3,
        values: Values::Walk,
        faults: Faults::default(),
        topic_template: "sensors/{sensor}/temperature".into(),
    });
    publish(port, data, READINGS, None, "sim-bytes").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.stream(Stream::Raw).delivered.load(Relaxed) < READINGS {
        assert!(Instant::now() < deadline, "raw records not all delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The count is refreshed by librdkafka's statistics, every second: wait until it stands
    // still, with nothing left to send.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let now = stats.snapshot().wire_sent_bytes;
        if now == last && now > 0 {
            break;
        }
        last = now;
        assert!(Instant::now() < deadline, "the wire count kept moving");
    }
    let proxied = proxy.upstream_bytes.load(SeqCst);
    let s = stats.snapshot();
    eprintln!(
        "uplink: bridge counted {} bytes sent, the proxy carried {proxied}; {:.2} wire bytes per reading for {:.2} MQTT payload bytes per reading",
        s.wire_sent_bytes,
        s.wire_sent_bytes as f64 / READINGS as f64,
        s.bytes_in as f64 / READINGS as f64
    );
    assert!(
        s.wire_sent_bytes <= proxied,
        "the bridge counted {} bytes sent, more than the {proxied} the link carried",
        s.wire_sent_bytes
    );
    assert!(
        (proxied - s.wire_sent_bytes) as f64 <= proxied as f64 * 0.02,
        "the bridge counted {} bytes sent, the link carried {proxied}",
        s.wire_sent_bytes
    );
    assert!(s.wire_received_bytes > 0);
    stop_tx.send(()).unwrap();
    bridge.await.unwrap().expect("the bridge ran without error");
}
