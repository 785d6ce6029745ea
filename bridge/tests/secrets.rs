//! No secret given to the bridge appears in any log line (at the most verbose level), in
//! `check-config` output, or in any HTTP response. Secrets come from a file
//! (`EDGE_BRIDGE_..._FILE`), from environment variables, from the configuration file, and
//! inside the MQTT URL.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{free_port, wait_listening, Mosquitto, Tansu};

const SASL_PASSWORD: &str = "pw-sasl-7f3a9e";
const KEY_PASSWORD: &str = "pw-key-c0ffee";
const MQTT_PASSWORD: &str = "pw-mqtt-19bd2";
const OPTION_SECRET: &str = "pw-option-5151";
const MQTT_FIELD_PASSWORD: &str = "pw-mqtt-field-77aa";

fn assert_clean(what: &str, text: &str) {
    for secret in [
        SASL_PASSWORD,
        KEY_PASSWORD,
        MQTT_PASSWORD,
        OPTION_SECRET,
        MQTT_FIELD_PASSWORD,
    ] {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret}:\n{text}"
        );
    }
}

#[test]
fn no_secret_in_logs_check_config_or_http() {
    let kafka = Tansu::start();
    let mosquitto = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("sasl-password");
    std::fs::write(&pw_file, format!("{SASL_PASSWORD}\n")).unwrap();
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nusername = \"edge\"\npassword = \"{MQTT_FIELD_PASSWORD}\"\n[kafka]\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"edge\"\n[kafka.options]\n\"sasl.password\" = \"{OPTION_SECRET}\"\n"
        ),
    )
    .unwrap();
    let http = free_port();
    let env = |c: &mut Command| {
        c.env("EDGE_BRIDGE_KAFKA_SASL_PASSWORD_FILE", &pw_file)
            .env("EDGE_BRIDGE_KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD)
            .env(
                "EDGE_BRIDGE_MQTT_URL",
                format!("mqtt://edge:{MQTT_PASSWORD}@127.0.0.1:{}", mosquitto.port),
            )
            .env("EDGE_BRIDGE_KAFKA_BROKERS", &kafka.brokers)
            .env("EDGE_BRIDGE_STATE_DIR", dir.path().join("state"))
            .env("EDGE_BRIDGE_HTTP_LISTEN", format!("127.0.0.1:{http}"))
            .env("EDGE_BRIDGE_LOG_LEVEL", "trace")
            .env("EDGE_BRIDGE_KAFKA_CREATE_TOPICS", "false");
    };
    let bin = env!("CARGO_BIN_EXE_edge-bridge");

    let mut check = Command::new(bin);
    check.arg("check-config").arg(&config);
    env(&mut check);
    let out = check.output().unwrap();
    let shown =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check-config failed:\n{shown}");
    assert!(shown.contains("REDACTED"), "{shown}");
    assert_clean("check-config", &shown);

    let mut run = Command::new(bin);
    run.arg("--config").arg(&config);
    env(&mut run);
    // Logs to a file, not a pipe: nobody reads a pipe until the end, and a full one would
    // block the bridge's logging (trace level here) and with it the HTTP requests below.
    let log = dir.path().join("bridge.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = run
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    wait_listening(&mut child, ([127, 0, 0, 1], http).into(), "the bridge");
    // Let it connect to Mosquitto and try the brokers (the SASL handshake fails: tansu here
    // speaks no SASL, which makes librdkafka log about it).
    std::thread::sleep(Duration::from_secs(4));
    for path in ["/metrics", "/status", "/status.json", "/readyz", "/healthz"] {
        assert_clean(path, &support::http_get(http, path));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("Connected to MQTT broker"),
        "the run got far enough:\n{logs}"
    );
    assert!(logs.lines().count() > 20, "trace logging was on");
    assert_clean("the logs", &logs);
}
