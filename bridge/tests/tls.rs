//! TLS and passwords on both MQTT sides, with certificates made at test time.
//!
//! Embedded broker: sensors (the simulator, and Mosquitto's own `mosquitto_pub` over MQTT 5)
//! connect over TLS with a username and password and their readings reach Kafka; a wrong
//! password, an untrusted server certificate, plaintext on the TLS port, missing credentials
//! and a client that never speaks are each refused with a clear error on both sides, counted
//! by reason, while a good client keeps publishing throughout. Mutual TLS: only certificates
//! signed by the configured CA get in.
//!
//! External broker: Mosquitto with TLS, a client certificate requirement and a password file;
//! the bridge reads from it with `mqtts://`, its CA, its client certificate and a password, and
//! says what to fix when the password or the CA is wrong.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use edge_bridge::stats::{MqttRefusal, Stats};
use edge_bridge::Config;
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Values};
use edge_sim::publish::{Report, Security};
use support::pki::Pki;
use support::{free_port, read_topic, wait_for, Mosquitto, Tansu};

const USER: &str = "sensor-gw";
const PASSWORD: &str = "correct horse battery";

fn dataset(seed: u64) -> Dataset {
    Dataset::new(DatasetOptions {
        sensors: 5,
        rate: 10.0,
        start_ms: support::now_ms() - 60_000,
        seed,
        values: Values::Walk,
        faults: Faults::default(),
        topic_template: "sensors/{sensor}/temperature".into(),
    })
}

/// The simulator with this test's dataset.
fn simulate(
    url: &str,
    security: Security,
    count: u64,
    rate: Option<f64>,
    client_id: &str,
) -> impl std::future::Future<Output = anyhow::Result<Report>> + Send + 'static {
    support::simulate(url, dataset(count), security, count, rate, client_id)
}

fn creds(password: &str, ca: Option<&Path>) -> Security {
    Security {
        username: Some(USER.into()),
        password: Some(password.into()),
        ca_file: ca.map(Path::to_owned),
        client_cert: None,
    }
}

fn refused(stats: &Stats, r: MqttRefusal) -> u64 {
    stats.mqtt_refused[r as usize].load(Relaxed)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn embedded_config(kafka: &Tansu, state: &Path, pki: &Pki) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = kafka.brokers.clone();
    c.state_dir = state.to_owned();
    c.http.listen = String::new();
    c.mqtt.listen = format!("127.0.0.1:{}", free_port());
    c.mqtt.listen_v5 = String::new();
    c.mqtt.tls_listen = format!("127.0.0.1:{}", free_port());
    c.mqtt.tls_cert = path(&pki.server_cert);
    c.mqtt.tls_key = path(&pki.server_key);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_over_tls_with_passwords() {
    let kafka = Tansu::start();
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let mut config = embedded_config(&kafka, state.path(), &pki);
    config.mqtt.passwords = path(&pki.password_file(&[(USER, PASSWORD), ("other", "x")]));
    config.validate().expect("valid configuration");
    let (plain, tls) = (
        support::port_of(&config.mqtt.listen),
        support::port_of(&config.mqtt.tls_listen),
    );
    let raw_topic = config.kafka.raw_topic.clone();

    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = support::spawn_bridge(config, stats.clone(), async {
        let _ = stop_rx.await;
    })
    .await;
    let tls_url = format!("mqtts://localhost:{tls}");

    // A client that connects and never speaks: rumqttd's own TLS listener would wait for it
    // before accepting anyone else.
    let _silent = std::net::TcpStream::connect(("127.0.0.1", tls)).unwrap();

    // A good client publishes for the whole test, paced, while the bad ones are refused.
    let good = tokio::spawn(simulate(
        &tls_url,
        creds(PASSWORD, Some(&pki.ca)),
        300,
        Some(100.0),
        "good-sensor",
    ));

    let e = simulate(&tls_url, creds("wrong", Some(&pki.ca)), 5, None, "bad-pw")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("BadUserNamePassword") && e.contains("--password"),
        "{e}"
    );
    wait_for("the credentials refusal", || {
        refused(&stats, MqttRefusal::Credentials) == 1
    })
    .await;

    let e = simulate(
        &tls_url,
        creds(PASSWORD, Some(&pki.rogue_ca)),
        5,
        None,
        "bad-ca",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("UnknownIssuer") && e.contains("--ca-file"),
        "{e}"
    );
    wait_for("the handshake refusal", || {
        refused(&stats, MqttRefusal::Handshake) == 1
    })
    .await;

    let plaintext_to_tls = format!("mqtt://127.0.0.1:{tls}");
    let e = simulate(&plaintext_to_tls, creds(PASSWORD, None), 5, None, "no-tls")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("NotAuthorized") && e.contains("mqtts://"), "{e}");
    assert_eq!(refused(&stats, MqttRefusal::PlaintextOnTls), 1);

    // The plaintext listener on loopback asks for a password too.
    let plain_url = format!("mqtt://127.0.0.1:{plain}");
    let e = simulate(&plain_url, Security::default(), 5, None, "anonymous")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("NotAuthorized"), "{e}");
    assert_eq!(refused(&stats, MqttRefusal::Credentials), 2);
    let over_plain = simulate(&plain_url, creds(PASSWORD, None), 100, None, "local")
        .await
        .expect("a local client with the password");

    // A third-party client, MQTT 5, over TLS: the gate reads the version from CONNECT.
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &tls.to_string(),
            "-V",
            "mqttv5",
            "-q",
            "1",
        ])
        .args(["--cafile", &path(&pki.ca), "-u", USER, "-P", PASSWORD])
        .args(["-t", "sensors/m5/temperature"])
        .args([
            "-m",
            &format!("{{\"ts\": {}, \"value\": 21.5}}", support::now_ms()),
        ])
        .output()
        .expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let good = good
        .await
        .unwrap()
        .expect("the good client was served throughout");
    assert_eq!(good.readings, 300);
    let total = 300 + over_plain.readings + 1;
    wait_for("every reading in the bridge", || {
        stats.readings_in.load(Relaxed) == total
    })
    .await;
    assert_eq!(refused(&stats, MqttRefusal::Credentials), 2);
    assert_eq!(refused(&stats, MqttRefusal::Handshake), 1);
    // The silent client is cut off after 10 s, having held up no one.
    wait_for("the silent client's refusal", || {
        refused(&stats, MqttRefusal::NoConnect) == 1
    })
    .await;
    stop_tx.send(()).unwrap();
    bridge.await.unwrap().expect("the bridge ran without error");
    let raw = read_topic(
        &kafka.brokers,
        &raw_topic,
        total as usize,
        Duration::from_secs(20),
    );
    assert_eq!(raw.len() as u64, total, "every reading reached Kafka once");
    assert!(raw.iter().any(|r| r.key == "m5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_with_client_certificates() {
    let kafka = Tansu::start();
    let pki = Pki::new();
    let state = tempfile::tempdir().unwrap();
    let mut config = embedded_config(&kafka, state.path(), &pki);
    config.mqtt.tls_client_ca = path(&pki.ca);
    // Plaintext off: sensors must come over TLS with a certificate.
    config.mqtt.listen = String::new();
    config.validate().expect("valid configuration");
    let tls = support::port_of(&config.mqtt.tls_listen);
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = support::spawn_bridge(config, stats.clone(), async {
        let _ = stop_rx.await;
    })
    .await;
    let url = format!("mqtts://localhost:{tls}");
    let with_cert = |cert: &Path, key: &Path| Security {
        ca_file: Some(pki.ca.clone()),
        client_cert: Some((cert.to_owned(), key.to_owned())),
        ..Security::default()
    };

    let ok = simulate(
        &url,
        with_cert(&pki.client_cert, &pki.client_key),
        50,
        None,
        "c1",
    )
    .await
    .expect("a client with a certificate the CA signed");
    assert_eq!(ok.readings, 50);

    let no_cert = Security {
        ca_file: Some(pki.ca.clone()),
        ..Security::default()
    };
    let e = simulate(&url, no_cert, 5, None, "c2")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("CertificateRequired"), "{e}");
    let e = simulate(
        &url,
        with_cert(&pki.rogue_client_cert, &pki.rogue_client_key),
        5,
        None,
        "c3",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("MQTT connection failed"), "{e}");
    wait_for("two handshake refusals", || {
        refused(&stats, MqttRefusal::Handshake) == 2
    })
    .await;
    wait_for("the good client's readings", || {
        stats.readings_in.load(Relaxed) == 50
    })
    .await;
    stop_tx.send(()).unwrap();
    bridge.await.unwrap().expect("the bridge ran without error");
}

/// Mosquitto with TLS, client certificates required and a password file.
fn secured_mosquitto(pki: &Pki) -> Mosquitto {
    let passwords = pki.password_file(&[(USER, PASSWORD)]);
    Mosquitto::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\npassword_file {}\nallow_anonymous false\n",
        path(&pki.ca),
        path(&pki.server_cert),
        path(&pki.server_key),
        path(&passwords),
    ))
}

fn external_config(kafka: &Tansu, state: &Path, pki: &Pki, port: u16) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = kafka.brokers.clone();
    c.state_dir = state.to_owned();
    c.http.listen = String::new();
    c.mqtt.url = format!("mqtts://localhost:{port}");
    c.mqtt.username = USER.into();
    c.mqtt.password = PASSWORD.into();
    c.mqtt.broker_ca = path(&pki.ca);
    c.mqtt.client_cert = path(&pki.client_cert);
    c.mqtt.client_key = path(&pki.client_key);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_broker_over_tls_with_password_and_client_certificate() {
    let kafka = Tansu::start();
    let pki = Pki::new();
    let mosquitto = secured_mosquitto(&pki);
    let state = tempfile::tempdir().unwrap();
    let config = external_config(&kafka, state.path(), &pki, mosquitto.port);
    config.validate().expect("valid configuration");
    let raw_topic = config.kafka.raw_topic.clone();
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = support::spawn_bridge(config, stats.clone(), async {
        let _ = stop_rx.await;
    })
    .await;
    wait_for("the bridge's subscription", || {
        stats.mqtt_subscribed.load(Relaxed) == 1
    })
    .await;
    let sensors = Security {
        client_cert: Some((pki.client_cert.clone(), pki.client_key.clone())),
        ..creds(PASSWORD, Some(&pki.ca))
    };
    let url = format!("mqtts://localhost:{}", mosquitto.port);
    let report = simulate(&url, sensors, 400, None, "sensors")
        .await
        .expect("the simulator publishes to Mosquitto over TLS");
    wait_for("every reading in the bridge", || {
        stats.readings_in.load(Relaxed) == report.readings
    })
    .await;
    stop_tx.send(()).unwrap();
    bridge.await.unwrap().expect("the bridge ran without error");
    let raw = read_topic(&kafka.brokers, &raw_topic, 400, Duration::from_secs(20));
    assert_eq!(raw.len(), 400);
}

/// Runs the bridge binary against `mosquitto` with one setting changed, and returns what it
/// logged in a few seconds.
fn bridge_logs(
    kafka: &Tansu,
    pki: &Pki,
    mosquitto: &Mosquitto,
    changes: &[(&str, &str)],
) -> String {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-bridge"));
    cmd.env(
        "EDGE_BRIDGE_MQTT_URL",
        format!("mqtts://localhost:{}", mosquitto.port),
    )
    .env("EDGE_BRIDGE_MQTT_USERNAME", USER)
    .env("EDGE_BRIDGE_MQTT_PASSWORD", PASSWORD)
    .env("EDGE_BRIDGE_MQTT_BROKER_CA", &pki.ca)
    .env("EDGE_BRIDGE_MQTT_CLIENT_CERT", &pki.client_cert)
    .env("EDGE_BRIDGE_MQTT_CLIENT_KEY", &pki.client_key)
    .env("EDGE_BRIDGE_KAFKA_BROKERS", &kafka.brokers)
    .env("EDGE_BRIDGE_STATE_DIR", state.path())
    .env("EDGE_BRIDGE_HTTP_LISTEN", "")
    .envs(changes.iter().copied());
    support::logs_of_a_run(cmd, Duration::from_secs(4))
}

#[test]
fn external_broker_refusals_say_what_to_fix() {
    let kafka = Tansu::start();
    let pki = Pki::new();
    let mosquitto = secured_mosquitto(&pki);

    let logs = bridge_logs(
        &kafka,
        &pki,
        &mosquitto,
        &[("EDGE_BRIDGE_MQTT_PASSWORD", "wrong")],
    );
    assert!(
        logs.contains("MQTT broker refused the bridge") && logs.contains("mqtt.password"),
        "{logs}"
    );
    assert!(!logs.contains("Connected to MQTT broker"), "{logs}");

    let rogue = path(&pki.rogue_ca);
    let logs = bridge_logs(
        &kafka,
        &pki,
        &mosquitto,
        &[("EDGE_BRIDGE_MQTT_BROKER_CA", &rogue)],
    );
    assert!(logs.contains("mqtt.broker_ca"), "{logs}");
    assert!(!logs.contains("Connected to MQTT broker"), "{logs}");

    // Without the client certificate Mosquitto refuses the handshake.
    let no_cert = [
        ("EDGE_BRIDGE_MQTT_CLIENT_CERT", ""),
        ("EDGE_BRIDGE_MQTT_CLIENT_KEY", ""),
    ];
    let logs = bridge_logs(&kafka, &pki, &mosquitto, &no_cert);
    assert!(
        logs.contains("MQTT broker refused the bridge") && logs.contains("mqtt.client_cert"),
        "{logs}"
    );
}
