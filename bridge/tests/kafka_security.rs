//! The Kafka side over TLS as a managed cluster asks for it: the cluster's CA and a client
//! certificate (mutual TLS). TLS, with client certificates required, is terminated in front of
//! tansu by [`support::tls_proxy`], with certificates made at test time. The bridge produces a
//! known dataset and a consumer with the same settings reads it back; a missing client
//! certificate and an untrusted broker certificate are logged at ERROR naming the keys to fix.
//!
//! SASL (SCRAM) against a broker that requires it is in `kafka_sasl.rs`: tansu 0.6 offers no
//! usable mechanism.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_bridge::stats::Stats;
use edge_bridge::Config;
use edge_bridge_core::Stream;
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Values};
use support::pki::Pki;
use support::tls_proxy::TlsProxy;
use support::{free_port, read_topic_with, Tansu};

const READINGS: u64 = 200;

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The cluster: tansu behind TLS that requires a client certificate.
struct Cluster {
    kafka: Tansu,
    _proxy: TlsProxy,
    pki: Pki,
}

impl Cluster {
    fn start() -> Cluster {
        let pki = Pki::new();
        let port = free_port();
        let kafka = Tansu::start_advertising(Some(port));
        let tls = edge_bridge::mqtt::tls::server_config(
            &path(&pki.server_cert),
            &path(&pki.server_key),
            Some(&path(&pki.ca)),
        )
        .unwrap();
        // Listening once started.
        let proxy = TlsProxy::start(port, kafka.direct, tls);
        Cluster {
            kafka,
            _proxy: proxy,
            pki,
        }
    }

    /// librdkafka settings for a client of this cluster.
    fn client(&self) -> Vec<(&'static str, String)> {
        vec![
            ("security.protocol", "SSL".into()),
            ("ssl.ca.location", path(&self.pki.ca)),
            ("ssl.certificate.location", path(&self.pki.client_cert)),
            ("ssl.key.location", path(&self.pki.client_key)),
        ]
    }

    fn bridge_config(&self, state: &Path) -> Config {
        let mut c = support::bridge_config(&self.kafka.brokers, state);
        let k = &mut c.kafka;
        k.security_protocol = "ssl".into();
        k.ssl_ca_location = path(&self.pki.ca);
        k.ssl_certificate_location = path(&self.pki.client_cert);
        k.ssl_key_location = path(&self.pki.client_key);
        c
    }
}

fn dataset() -> Dataset {
    let now = support::now_ms();
    Dataset::new(DatasetOptions {
        sensors: 4,
        rate: 10.0,
        start_ms: now - 60_000,
        seed: 7,
        values: Values::Walk,
        faults: Faults::default(),
        topic_template: "sensors/{sensor}/temperature".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_cluster_ca_and_a_client_certificate() {
    let cluster = Cluster::start();
    let state = tempfile::tempdir().unwrap();
    let config = cluster.bridge_config(state.path());
    config.validate().expect("valid configuration");
    let port = support::port_of(&config.mqtt.listen);
    let raw_topic = config.kafka.raw_topic.clone();
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = support::spawn_bridge(config, stats.clone(), async {
        let _ = stop_rx.await;
    })
    .await;
    support::publish(port, dataset(), READINGS, None, "sim").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.stream(Stream::Raw).delivered.load(Relaxed) < READINGS {
        assert!(
            Instant::now() < deadline,
            "{} of {READINGS} raw records delivered",
            stats.stream(Stream::Raw).delivered.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(()).unwrap();
    bridge.await.unwrap().expect("the bridge ran without error");
    let settings = cluster.client();
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let raw = read_topic_with(
        &cluster.kafka.brokers,
        &raw_topic,
        READINGS as usize,
        Duration::from_secs(30),
        &settings,
    );
    assert_eq!(raw.len() as u64, READINGS, "raw records read back over TLS");
}

/// Runs the bridge binary against the cluster with some settings changed; returns its logs.
fn bridge_logs(cluster: &Cluster, changes: &[(&str, &str)]) -> String {
    let state = tempfile::tempdir().unwrap();
    let p = &cluster.pki;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-bridge"));
    cmd.env(
        "EDGE_BRIDGE_MQTT_LISTEN",
        format!("127.0.0.1:{}", free_port()),
    )
    .env("EDGE_BRIDGE_MQTT_LISTEN_V5", "")
    .env("EDGE_BRIDGE_HTTP_LISTEN", "")
    .env("EDGE_BRIDGE_STATE_DIR", state.path())
    .env("EDGE_BRIDGE_KAFKA_BROKERS", &cluster.kafka.brokers)
    .env("EDGE_BRIDGE_KAFKA_SECURITY_PROTOCOL", "ssl")
    .env("EDGE_BRIDGE_KAFKA_SSL_CA_LOCATION", &p.ca)
    .env("EDGE_BRIDGE_KAFKA_SSL_CERTIFICATE_LOCATION", &p.client_cert)
    .env("EDGE_BRIDGE_KAFKA_SSL_KEY_LOCATION", &p.client_key)
    .envs(changes.iter().copied());
    support::logs_of_a_run(cmd, Duration::from_secs(6))
}

#[test]
fn refused_certificates_name_the_keys_to_fix() {
    let cluster = Cluster::start();
    let no_cert = [
        ("EDGE_BRIDGE_KAFKA_SSL_CERTIFICATE_LOCATION", ""),
        ("EDGE_BRIDGE_KAFKA_SSL_KEY_LOCATION", ""),
    ];
    let logs = bridge_logs(&cluster, &no_cert);
    assert!(
        logs.contains("Kafka refused the bridge: the brokers want a client certificate they trust; check kafka.ssl_certificate_location"),
        "{logs}"
    );
    let rogue = path(&cluster.pki.rogue_ca);
    let logs = bridge_logs(&cluster, &[("EDGE_BRIDGE_KAFKA_SSL_CA_LOCATION", &rogue)]);
    assert!(
        logs.contains("Kafka refused the bridge: the brokers' certificate is not signed by kafka.ssl_ca_location"),
        "{logs}"
    );
}
