//! The configuration: one TOML file, every key documented in `default-config.toml`, each
//! overridable by an `EDGE_BRIDGE_...` environment variable and the common ones by flags.
//!
//! The structs here are the schema (serde, unknown keys refused); [`crate::load`] layers the
//! sources; [`Config::validate`] checks everything at once so an operator sees every problem in
//! one run, and [`Config::redacted`] is what may be printed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edge_bridge_core::decode::{DecodeOptions, Decoder, SensorIdSource};
use edge_bridge_core::timestamp::EpochUnit;
use edge_bridge_core::window::{WindowOptions, Windower};
use serde::{Deserialize, Serialize};

/// The documented default configuration, printed by `print-default-config`. A test proves it
/// parses to [`Config::default`] and names every key.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../default-config.toml");

/// Stands in for a secret in anything printed.
pub const REDACTED: &str = "REDACTED";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for state that must outlive the process.
    pub state_dir: PathBuf,
    pub mqtt: MqttConfig,
    pub decode: DecodeConfig,
    pub window: WindowConfig,
    pub kafka: KafkaConfig,
    pub spool: SpoolConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/edge-bridge"),
            mqtt: MqttConfig::default(),
            decode: DecodeConfig::default(),
            window: WindowConfig::default(),
            kafka: KafkaConfig::default(),
            spool: SpoolConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Address of the embedded MQTT broker. Used when `url` is empty.
    #[serde(deserialize_with = "text")]
    pub listen: String,
    /// External broker (`mqtt://host:port` or `mqtts://host:port`); when set, no embedded
    /// broker is started.
    #[serde(deserialize_with = "text")]
    pub url: String,
    /// MQTT 5 listener of the embedded broker: an address, or `:PORT` for that port on
    /// `listen`'s host (see [`Config::listen_v5_addr`]); empty turns it off.
    #[serde(deserialize_with = "text")]
    pub listen_v5: String,
    /// rumqttd configuration file for the embedded broker; empty uses the built-in one.
    #[serde(deserialize_with = "text")]
    pub broker_config: String,
    /// Protocol towards an external broker: "3.1.1" or "5".
    #[serde(deserialize_with = "text")]
    pub protocol: String,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Subscription filter; the sensor id defaults to its `+` levels.
    #[serde(deserialize_with = "text")]
    pub topic: String,
    /// Subscription QoS (0, 1 or 2).
    pub qos: u8,
    /// Client id towards an external broker; stable so the broker keeps the session.
    #[serde(deserialize_with = "text")]
    pub client_id: String,
    /// Embedded broker: TLS listener (MQTT 3.1.1 and 5); empty turns it off.
    #[serde(deserialize_with = "text")]
    pub tls_listen: String,
    /// Embedded broker: its certificate chain and private key (PEM files).
    #[serde(deserialize_with = "text")]
    pub tls_cert: String,
    #[serde(deserialize_with = "text")]
    pub tls_key: String,
    /// Embedded broker: CA (PEM) that must have signed every TLS client's certificate; empty:
    /// no client certificates asked for.
    #[serde(deserialize_with = "text")]
    pub tls_client_ca: String,
    /// Embedded broker: Mosquitto password file (`mosquitto_passwd`); empty: no passwords.
    #[serde(deserialize_with = "text")]
    pub passwords: String,
    /// External broker: credentials (they may also be given in `url`).
    #[serde(deserialize_with = "text")]
    pub username: String,
    #[serde(deserialize_with = "text")]
    pub password: String,
    /// External `mqtts://` broker: CA (PEM) that signed its certificate; empty: system CAs.
    #[serde(deserialize_with = "text")]
    pub broker_ca: String,
    /// External `mqtts://` broker: the bridge's client certificate and key (PEM), for brokers
    /// that require one.
    #[serde(deserialize_with = "text")]
    pub client_cert: String,
    #[serde(deserialize_with = "text")]
    pub client_key: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:1883".into(),
            listen_v5: ":1884".into(),
            broker_config: String::new(),
            url: String::new(),
            protocol: "3.1.1".into(),
            keep_alive: Duration::from_secs(30),
            topic: "sensors/+/temperature".into(),
            qos: 1,
            client_id: "edge-bridge".into(),
            tls_listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_client_ca: String::new(),
            passwords: String::new(),
            username: String::new(),
            password: String::new(),
            broker_ca: String::new(),
            client_cert: String::new(),
            client_key: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// `topic` (the `+` levels of the filter), `topic-level:N` (level N, from 0), or
    /// `field:NAME` (a payload field).
    #[serde(deserialize_with = "text")]
    pub sensor_id: String,
    #[serde(deserialize_with = "text")]
    pub ts_field: String,
    #[serde(deserialize_with = "text")]
    pub value_field: String,
    /// How numeric timestamps are read: auto, seconds, millis, micros, nanos.
    pub epoch_unit: EpochUnit,
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    pub max_sensor_id_bytes: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            sensor_id: "topic".into(),
            ts_field: "ts".into(),
            value_field: "value".into(),
            epoch_unit: EpochUnit::Auto,
            max_future_skew: Duration::from_secs(3600),
            max_sensor_id_bytes: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    #[serde(with = "humantime_serde")]
    pub size: Duration,
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_sensors: usize,
    pub max_open_windows: usize,
    /// Name of the statistics object in aggregate records.
    #[serde(deserialize_with = "text")]
    pub measurement: String,
    /// How often open windows are saved to the state directory (also at every clean stop);
    /// 0s saves only at a clean stop.
    #[serde(with = "humantime_serde")]
    pub save_interval: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            size: Duration::from_secs(10),
            grace: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30),
            max_sensors: 100_000,
            max_open_windows: 1_000_000,
            measurement: "temperature".into(),
            save_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    #[serde(deserialize_with = "text")]
    pub brokers: String,
    #[serde(deserialize_with = "text")]
    pub raw_topic: String,
    #[serde(deserialize_with = "text")]
    pub agg_topic: String,
    #[serde(deserialize_with = "text")]
    pub dead_letter_topic: String,
    /// Empty: late readings go to the raw topic only.
    #[serde(deserialize_with = "text")]
    pub late_topic: String,
    pub create_topics: bool,
    /// Partitions for topics the bridge creates.
    pub topic_partitions: i32,
    #[serde(deserialize_with = "text")]
    pub compression: String,
    /// Passed to librdkafka as is, after the bridge's own settings, so it can override them.
    #[serde(deserialize_with = "option_texts")]
    pub options: BTreeMap<String, String>,
    /// At a clean stop, how long to wait for delivery reports before spooling the rest.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[serde(deserialize_with = "text")]
    pub security_protocol: String,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a sasl_* protocol).
    #[serde(deserialize_with = "text")]
    pub sasl_mechanism: String,
    #[serde(deserialize_with = "text")]
    pub sasl_username: String,
    /// Secret: redacted in everything printed.
    #[serde(deserialize_with = "text")]
    pub sasl_password: String,
    /// CA certificate file (PEM) to verify the brokers; empty: the system's CAs.
    #[serde(deserialize_with = "text")]
    pub ssl_ca_location: String,
    /// Client certificate and key files (PEM) for mutual TLS.
    #[serde(deserialize_with = "text")]
    pub ssl_certificate_location: String,
    #[serde(deserialize_with = "text")]
    pub ssl_key_location: String,
    /// Secret: the client key's passphrase, if it has one.
    #[serde(deserialize_with = "text")]
    pub ssl_key_password: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            raw_topic: "raw-temperature".into(),
            agg_topic: "agg-temperature".into(),
            dead_letter_topic: "edge-bridge-dead-letter".into(),
            late_topic: String::new(),
            create_topics: true,
            topic_partitions: 1,
            compression: "zstd".into(),
            options: BTreeMap::new(),
            shutdown_timeout: Duration::from_secs(10),
            security_protocol: "plaintext".into(),
            sasl_mechanism: "SCRAM-SHA-256".into(),
            sasl_username: String::new(),
            sasl_password: String::new(),
            ssl_ca_location: String::new(),
            ssl_certificate_location: String::new(),
            ssl_key_location: String::new(),
            ssl_key_password: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Off: records wait in memory only, and are lost if the process stops before delivery.
    pub enabled: bool,
    /// Cap on the spool's disk use, in MiB.
    pub max_mib: u64,
    /// How often spooled records are made durable (fsync); 0s after every batch.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// How long records may wait on the uplink in memory before new ones go to the spool.
    #[serde(with = "humantime_serde")]
    pub spill_after: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_mib: 128,
            fsync_interval: Duration::from_secs(1),
            spill_after: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP endpoint (/metrics, /healthz, /readyz, /status); empty: off.
    #[serde(deserialize_with = "text")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `edge_bridge=debug,info`, ...
    #[serde(deserialize_with = "text")]
    pub level: String,
    /// `human` or `json`.
    #[serde(deserialize_with = "text")]
    pub format: String,
    /// Period of the one-line INFO summary; 0s turns it off.
    #[serde(with = "humantime_serde")]
    pub summary_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info,rumqttd=warn".into(),
            format: "human".into(),
            summary_interval: Duration::from_secs(60),
        }
    }
}

/// Where the bridge reads MQTT from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttSource {
    /// The embedded broker, with its plaintext MQTT 3.1.1 listener (if any).
    Embedded(Option<SocketAddr>),
    External(url::Url),
}

impl Config {
    /// Checks every key; returns all problems, each naming its key.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if let Err(e) = self.mqtt_source() {
            errors.push(e);
        }
        if self.mqtt.qos > 2 {
            errors.push(format!("mqtt.qos: {} is not 0, 1 or 2", self.mqtt.qos));
        }
        if !["3.1.1", "5"].contains(&self.mqtt.protocol.as_str()) {
            errors.push(format!(
                "mqtt.protocol: {:?} is not \"3.1.1\" or \"5\"",
                self.mqtt.protocol
            ));
        }
        if let Err(e) = self.listen_v5_addr() {
            errors.push(e);
        }
        if self.mqtt.keep_alive < Duration::from_secs(5) {
            errors.push("mqtt.keep_alive: must be at least 5s".into());
        }
        if self.mqtt.client_id.is_empty() {
            errors.push("mqtt.client_id: must not be empty".into());
        }
        errors.extend(self.mqtt_security_problems());
        match self.decode_options() {
            Ok(opts) => {
                if let Err(e) = Decoder::new(opts) {
                    errors.push(format!("decode / mqtt.topic: {e}"));
                }
            }
            Err(e) => errors.push(e),
        }
        match self.window_options() {
            Ok(opts) => {
                if let Err(e) = Windower::new(opts) {
                    errors.push(format!("window: {e}"));
                }
            }
            Err(e) => errors.push(e),
        }
        if self.window.measurement.is_empty() {
            errors.push("window.measurement: must not be empty".into());
        }
        errors.extend(self.kafka_problems());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn kafka_problems(&self) -> Vec<String> {
        let k = &self.kafka;
        let mut errors = Vec::new();
        if k.brokers.split(',').all(|b| b.trim().is_empty()) {
            errors.push("kafka.brokers: name at least one host:port".into());
        }
        let mut topics = vec![
            ("kafka.raw_topic", &k.raw_topic),
            ("kafka.agg_topic", &k.agg_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
        ];
        if !k.late_topic.is_empty() {
            topics.push(("kafka.late_topic", &k.late_topic));
        }
        for (i, (key, name)) in topics.iter().enumerate() {
            if let Err(why) = check_topic_name(name) {
                errors.push(format!("{key}: {name:?} {why}"));
            }
            if let Some((other, _)) = topics[..i].iter().find(|(_, n)| n == name) {
                errors.push(format!("{key}: {name:?} is already used by {other}"));
            }
        }
        if k.topic_partitions < 1 {
            errors.push("kafka.topic_partitions: must be at least 1".into());
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&k.compression.as_str()) {
            errors.push(format!(
                "kafka.compression: {:?} is not one of none, gzip, snappy, lz4, zstd",
                k.compression
            ));
        }
        errors.extend(self.kafka_security_problems());
        if self.spool.enabled && self.spool.max_mib < 1 {
            errors.push("spool.max_mib: must be at least 1".into());
        }
        if self.spool.spill_after < Duration::from_millis(100) {
            errors.push("spool.spill_after: must be at least 100ms".into());
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "http.listen: {:?} is not an address like 127.0.0.1:9464 (empty turns it off)",
                self.http.listen
            ));
        }
        if !["human", "json"].contains(&self.log.format.as_str()) {
            errors.push(format!(
                "log.format: {:?} is not human or json",
                self.log.format
            ));
        }
        errors
    }

    fn kafka_security_problems(&self) -> Vec<String> {
        let k = &self.kafka;
        let mut errors = Vec::new();
        let protocols = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
        if !protocols.contains(&k.security_protocol.to_ascii_lowercase().as_str()) {
            errors.push(format!(
                "kafka.security_protocol: {:?} is not one of {}",
                k.security_protocol,
                protocols.join(", ")
            ));
        }
        if k.security_protocol.to_ascii_lowercase().starts_with("sasl") {
            let mechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
            if !mechanisms.contains(&k.sasl_mechanism.as_str()) {
                errors.push(format!(
                    "kafka.sasl_mechanism: {:?} is not one of {}",
                    k.sasl_mechanism,
                    mechanisms.join(", ")
                ));
            }
            if k.sasl_username.is_empty() || k.sasl_password.is_empty() {
                errors.push(format!(
                    "kafka.sasl_username and kafka.sasl_password: both are needed with security_protocol = {:?} (the password can come from EDGE_BRIDGE_KAFKA_SASL_PASSWORD or a file named by EDGE_BRIDGE_KAFKA_SASL_PASSWORD_FILE)",
                    k.security_protocol
                ));
            }
        }
        for (key, path) in [
            ("kafka.ssl_ca_location", &k.ssl_ca_location),
            (
                "kafka.ssl_certificate_location",
                &k.ssl_certificate_location,
            ),
            ("kafka.ssl_key_location", &k.ssl_key_location),
        ] {
            if !path.is_empty() && std::fs::File::open(path).is_err() {
                errors.push(format!("{key}: {path} does not exist or is not readable"));
            }
        }
        if k.ssl_certificate_location.is_empty() != k.ssl_key_location.is_empty() {
            errors.push("kafka.ssl_certificate_location and kafka.ssl_key_location: give both (mutual TLS) or neither".into());
        }
        errors
    }

    fn mqtt_security_problems(&self) -> Vec<String> {
        let m = &self.mqtt;
        let mut errors = Vec::new();
        let files = [
            ("mqtt.tls_cert", &m.tls_cert),
            ("mqtt.tls_key", &m.tls_key),
            ("mqtt.tls_client_ca", &m.tls_client_ca),
            ("mqtt.passwords", &m.passwords),
            ("mqtt.broker_ca", &m.broker_ca),
            ("mqtt.client_cert", &m.client_cert),
            ("mqtt.client_key", &m.client_key),
        ];
        // Whether their contents are usable is checked by `crate::mqtt::file_problems`, which
        // reads them the way the start does.
        for (key, path) in files {
            if !path.is_empty() && std::fs::File::open(path).is_err() {
                errors.push(format!("{key}: {path} does not exist or is not readable"));
            }
        }
        if m.url.is_empty() {
            errors.extend(set_where_unused(
                &[
                    ("mqtt.username", &m.username),
                    ("mqtt.password", &m.password),
                    ("mqtt.broker_ca", &m.broker_ca),
                    ("mqtt.client_cert", &m.client_cert),
                    ("mqtt.client_key", &m.client_key),
                ],
                "only used towards an external broker, and mqtt.url is empty (the embedded broker's keys are tls_listen, tls_cert, tls_key, tls_client_ca and passwords)",
            ));
            if !m.tls_listen.is_empty() {
                if m.tls_listen.parse::<SocketAddr>().is_err() {
                    errors.push(format!(
                        "mqtt.tls_listen: {:?} is not an address like 0.0.0.0:8883",
                        m.tls_listen
                    ));
                }
                if m.tls_cert.is_empty() || m.tls_key.is_empty() {
                    errors.push(
                        "mqtt.tls_cert and mqtt.tls_key: both are needed for mqtt.tls_listen"
                            .into(),
                    );
                }
            } else {
                errors.extend(set_where_unused(
                    &[
                        ("mqtt.tls_cert", &m.tls_cert),
                        ("mqtt.tls_key", &m.tls_key),
                        ("mqtt.tls_client_ca", &m.tls_client_ca),
                    ],
                    "set mqtt.tls_listen too, or the TLS listener stays off",
                ));
                if m.listen.is_empty() {
                    errors.push(
                        "mqtt.listen: empty, and no mqtt.tls_listen either: sensors could not connect"
                            .into(),
                    );
                }
            }
            if !m.tls_client_ca.is_empty() && m.passwords.is_empty() {
                let v5 = self.listen_v5_addr().ok().flatten();
                for (key, addr) in [
                    ("mqtt.listen", m.listen.parse().ok()),
                    ("mqtt.listen_v5", v5),
                ] {
                    if let Some(addr) = addr.filter(|a: &SocketAddr| !a.ip().is_loopback()) {
                        errors.push(format!(
                            "mqtt.tls_client_ca: sensors without a certificate could still connect on the plaintext listener {key} ({addr}); bind it to 127.0.0.1, empty it, or set mqtt.passwords"
                        ));
                    }
                }
            }
        } else {
            errors.extend(set_where_unused(
                &[
                    ("mqtt.tls_listen", &m.tls_listen),
                    ("mqtt.tls_cert", &m.tls_cert),
                    ("mqtt.tls_key", &m.tls_key),
                    ("mqtt.tls_client_ca", &m.tls_client_ca),
                    ("mqtt.passwords", &m.passwords),
                ],
                "only used by the embedded broker, and mqtt.url names an external one (towards it: username, password, broker_ca, client_cert, client_key)",
            ));
            if !m.url.starts_with("mqtts://") {
                errors.extend(set_where_unused(
                    &[
                        ("mqtt.broker_ca", &m.broker_ca),
                        ("mqtt.client_cert", &m.client_cert),
                        ("mqtt.client_key", &m.client_key),
                    ],
                    "TLS settings, but mqtt.url is not mqtts://",
                ));
            }
            if m.client_cert.is_empty() != m.client_key.is_empty() {
                errors.push("mqtt.client_cert and mqtt.client_key: give both or neither".into());
            }
            if !m.password.is_empty() && m.username.is_empty() {
                errors.push("mqtt.password: set mqtt.username too".into());
            }
        }
        errors
    }

    /// The embedded broker's MQTT 5 listener, `None` when `mqtt.listen_v5` is empty. A bare
    /// `:PORT` (the default, `:1884`) is that port on `mqtt.listen`'s host (0.0.0.0 when
    /// `mqtt.listen` is empty), so that `--mqtt-listen 127.0.0.1:1883` does not leave an MQTT 5
    /// port open to the network.
    pub fn listen_v5_addr(&self) -> Result<Option<SocketAddr>, String> {
        let value = &self.mqtt.listen_v5;
        if value.is_empty() {
            return Ok(None);
        }
        let bad = || {
            format!(
                "mqtt.listen_v5: {value:?} is not an address like 0.0.0.0:1884, or :1884 for that port on mqtt.listen's host (empty turns it off)"
            )
        };
        match value.strip_prefix(':') {
            Some(port) => {
                let port: u16 = port.parse().map_err(|_| bad())?;
                let host = self
                    .mqtt
                    .listen
                    .parse::<SocketAddr>()
                    .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
                Ok(Some(SocketAddr::new(host, port)))
            }
            None => value.parse().map(Some).map_err(|_| bad()),
        }
    }

    /// The MQTT source: an external broker when `mqtt.url` is set, else the embedded one
    /// (with no plaintext listener when `mqtt.listen` is empty).
    pub fn mqtt_source(&self) -> Result<MqttSource, String> {
        if self.mqtt.url.is_empty() {
            if self.mqtt.listen.is_empty() {
                return Ok(MqttSource::Embedded(None));
            }
            return self
                .mqtt
                .listen
                .parse()
                .map(|a| MqttSource::Embedded(Some(a)))
                .map_err(|e| {
                    format!(
                        "mqtt.listen: {:?} is not an address like 0.0.0.0:1883 ({e})",
                        self.mqtt.listen
                    )
                });
        }
        let url = url::Url::parse(&self.mqtt.url).map_err(|e| {
            format!(
                "mqtt.url: {} is not a URL ({e})",
                redact_url(&self.mqtt.url)
            )
        })?;
        if !["mqtt", "mqtts"].contains(&url.scheme()) {
            return Err(format!(
                "mqtt.url: scheme {:?} is not mqtt or mqtts",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("mqtt.url: names no host".into());
        }
        Ok(MqttSource::External(url))
    }

    /// The decoder's options, from `mqtt.topic` and `[decode]`.
    pub fn decode_options(&self) -> Result<DecodeOptions, String> {
        let d = &self.decode;
        let sensor_id = parse_sensor_id(&d.sensor_id)?;
        Ok(DecodeOptions {
            topic_filter: self.mqtt.topic.clone(),
            sensor_id,
            ts_field: d.ts_field.clone(),
            value_field: d.value_field.clone(),
            epoch_unit: d.epoch_unit,
            max_future_skew_ms: millis("decode.max_future_skew", d.max_future_skew)?,
            max_sensor_id_bytes: d.max_sensor_id_bytes,
        })
    }

    /// The windower's options, from `[window]`.
    pub fn window_options(&self) -> Result<WindowOptions, String> {
        let w = &self.window;
        Ok(WindowOptions {
            size_ms: millis("window.size", w.size)?,
            grace_ms: millis("window.grace", w.grace)?,
            idle_timeout_ms: millis("window.idle_timeout", w.idle_timeout)?,
            max_sensors: w.max_sensors,
            max_open_windows: w.max_open_windows,
        })
    }

    /// A copy safe to print: passwords in URLs and secret-looking librdkafka options hidden.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.mqtt.url = redact_url(&c.mqtt.url);
        for secret in [
            &mut c.kafka.sasl_password,
            &mut c.kafka.ssl_key_password,
            &mut c.mqtt.password,
        ] {
            if !secret.is_empty() {
                *secret = REDACTED.into();
            }
        }
        for (key, value) in c.kafka.options.iter_mut() {
            if is_secret_option(key) {
                *value = REDACTED.into();
            }
        }
        c
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted()).expect("the configuration is plain data")
    }
}

/// The keys among `keys` that are set, as one problem saying `why` they do not apply.
fn set_where_unused(keys: &[(&str, &String)], why: &str) -> Option<String> {
    let set: Vec<&str> = keys
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| *k)
        .collect();
    (!set.is_empty()).then(|| format!("{}: {why}", set.join(", ")))
}

/// Deserializes a string field, also accepting a number or boolean as its text: environment
/// variables carry no types, so `EDGE_BRIDGE_MQTT_CLIENT_ID=1234` must still be a string.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(match Text::deserialize(d)? {
        Text::S(s) => s,
        Text::I(n) => n.to_string(),
        Text::U(n) => n.to_string(),
        Text::F(n) => n.to_string(),
        Text::B(b) => b.to_string(),
    })
}

/// librdkafka option values: written as strings, but `linger.ms = 50` or `enable.idempotence =
/// true` in the file are accepted too.
fn option_texts<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "text")] String);
    let map = BTreeMap::<String, Wrapped>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Whole milliseconds of a duration, refusing durations finer than the core's unit.
fn millis(key: &str, d: Duration) -> Result<i64, String> {
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{key}: {d:?} is finer than a millisecond"));
    }
    i64::try_from(d.as_millis()).map_err(|_| format!("{key}: {d:?} is too long"))
}

fn parse_sensor_id(s: &str) -> Result<SensorIdSource, String> {
    let bad = || format!("decode.sensor_id: {s:?} is not `topic`, `topic-level:N` or `field:NAME`");
    if s == "topic" {
        return Ok(SensorIdSource::Wildcards);
    }
    if let Some(n) = s.strip_prefix("topic-level:") {
        return n.parse().map(SensorIdSource::TopicLevel).map_err(|_| bad());
    }
    match s.strip_prefix("field:") {
        Some(name) if !name.is_empty() => Ok(SensorIdSource::Field(name.to_owned())),
        _ => Err(bad()),
    }
}

/// Kafka's topic name rule: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
fn check_topic_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 249 {
        return Err("is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return Err("is not a valid topic name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err("may only contain letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// librdkafka options that carry secrets.
fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "sasl.oauthbearer.config",
        "ssl.key.pem",
        "ssl_key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// A URL with its password (if any) replaced.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(REDACTED));
            u.to_string()
        }
        Ok(_) => raw.to_owned(),
        // Unparseable: it might still hold `user:pass@`; hide everything before the '@'.
        Err(_) => match raw.rfind('@') {
            Some(at) => format!("{REDACTED}{}", &raw[at..]),
            None => raw.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests;

/// An empty setting means "not given".
pub(crate) fn optional(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}
