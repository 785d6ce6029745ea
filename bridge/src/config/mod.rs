//! The configuration: one TOML file, every key documented in `default-config.toml`, each
//! overridable by an `EDGE_BRIDGE_...` environment variable and the common ones by flags.
//!
//! The structs here are the schema (serde, unknown keys refused); [`crate::load`] layers the
//! sources. Beside them: `validate` checks everything at once so an operator sees every
//! problem in one run; `broker` reads `[mqtt]` into the embedded or the external broker, each
//! with only its own settings; `typed` reads the rest into what the core takes; `redact` is
//! what may be printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use edge_bridge_core::timestamp::EpochUnit;
use edge_bridge_core::TopicHeader;
use serde::{Deserialize, Serialize};

/// The documented default configuration, printed by `print-default-config`. A test proves it
/// parses to [`Config::default`] and names every key.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../default-config.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for state that must outlive the process.
    pub state_dir: PathBuf,
    pub mqtt: MqttConfig,
    pub decode: DecodeConfig,
    pub window: WindowConfig,
    pub kafka: KafkaConfig,
    pub raw: RawConfig,
    pub spool: SpoolConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    /// Routes for devices that do not speak the tutorial's dialect (`[[routes]]`). Empty: one
    /// route from `mqtt.topic`, `[decode]` and `window.measurement`, the tutorial's.
    pub routes: Vec<RouteConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/edge-bridge"),
            mqtt: MqttConfig::default(),
            decode: DecodeConfig::default(),
            window: WindowConfig::default(),
            kafka: KafkaConfig::default(),
            raw: RawConfig::default(),
            spool: SpoolConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            routes: Vec::new(),
        }
    }
}

/// One `[[routes]]` entry: a family of devices (see [`edge_bridge_core::route`]). Keys not
/// given take the defaults below; skew, sensor id length, windows' idle timeout and memory
/// bounds come from `[decode]` and `[window]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Named in the `edge.route` header, in logs and in the saved windows.
    pub name: String,
    /// Topic filters of this route (they may overlap other routes'; the first route claims).
    pub topics: Vec<String>,
    /// Filters of topics under `topics` that are not this route's (counted and dropped).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `topic` (the `+` and `#` levels), `topic-level:N`, or `field:/json/pointer`.
    #[serde(default = "route_sensor_id")]
    pub sensor_id: String,
    /// `json` or `text`.
    #[serde(default = "route_format")]
    pub format: String,
    /// JSON Pointer of the event time; empty: the arrival time.
    #[serde(default)]
    pub timestamp: String,
    /// IANA zone of timestamps without an offset (`Europe/Berlin`).
    #[serde(default = "route_time_zone")]
    pub time_zone: String,
    #[serde(default)]
    pub epoch_unit: EpochUnit,
    /// json: measurement name -> JSON Pointer (a name with `{key}` for a path with `*`).
    #[serde(default)]
    pub measurements: BTreeMap<String, String>,
    /// text: the measurement's name, or `topic-level:N`.
    #[serde(default)]
    pub measurement: String,
    /// A payload with none of the measurements: `dead-letter` or `drop` (counted).
    #[serde(default = "route_no_measurement")]
    pub no_measurement: String,
    /// This route's Kafka topics; empty: `kafka.raw_topic`, `kafka.agg_topic`,
    /// `kafka.dead_letter_topic` and `kafka.late_topic`. A late topic of its own turns the
    /// route's late copies on.
    #[serde(default)]
    pub raw_topic: String,
    #[serde(default)]
    pub agg_topic: String,
    #[serde(default)]
    pub dead_letter_topic: String,
    #[serde(default)]
    pub late_topic: String,
    /// This route's window size and grace; absent: `window.size` and `window.grace`.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub window_size: Option<Duration>,
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub window_grace: Option<Duration>,
    /// `sparkplug-b`: ask a node whose DATA uses an unknown alias for its BIRTH (an NCMD).
    #[serde(default)]
    pub ask_rebirth: bool,
}

/// Every key of a `[[routes]]` entry, for the unknown-key check (a test holds it to
/// [`RouteConfig`]).
pub const ROUTE_KEYS: [&str; 18] = [
    "name",
    "topics",
    "exclude",
    "sensor_id",
    "format",
    "timestamp",
    "time_zone",
    "epoch_unit",
    "measurements",
    "measurement",
    "no_measurement",
    "raw_topic",
    "agg_topic",
    "dead_letter_topic",
    "late_topic",
    "window_size",
    "window_grace",
    "ask_rebirth",
];

fn route_sensor_id() -> String {
    "topic".into()
}
fn route_format() -> String {
    "json".into()
}
fn route_time_zone() -> String {
    "UTC".into()
}
fn route_no_measurement() -> String {
    "dead-letter".into()
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
    /// `listen`'s host (see [`listen_v5_addr`]); empty turns it off.
    #[serde(deserialize_with = "text")]
    pub listen_v5: String,
    /// rumqttd configuration file for the embedded broker; empty uses the built-in one.
    #[serde(deserialize_with = "text")]
    pub broker_config: String,
    /// Embedded broker: the largest packet a client may send (remaining length, bytes).
    pub max_packet_size: u64,
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
            max_packet_size: 65536,
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

/// Whether records carry their id ([`edge_bridge_core::record_id`]) in a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordId {
    /// Not sent: consumers compute it from the record.
    Derived,
    /// Sent as the `edge.id` header on every record.
    Header,
}

/// The raw producer's batching time with the embedded broker, which acknowledges publishes on
/// receipt, so nothing waits on it. Measured at the tutorial's shape (1,000 sensors x 4
/// readings/s): BENCHMARKS.md, "Upstream bytes on the wire".
pub const RAW_LINGER_EMBEDDED: Duration = Duration::from_millis(500);
/// With an external broker, a QoS 1 message is acknowledged once its raw record is delivered:
/// the broker's in-flight window per client divided by this bounds the rate taken in
/// (Mosquitto at 1,000 in flight: 50,000 messages/s at 20 ms, 2,000/s at 500 ms).
pub const RAW_LINGER_EXTERNAL: Duration = Duration::from_millis(20);
/// The raw producer's default zstd level.
pub const RAW_COMPRESSION_LEVEL: i32 = 6;

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
    /// How long the raw stream's producer batches records (the aggregates' waits 20 ms): a
    /// duration, or `auto` ([`Config::raw_linger`]).
    #[serde(deserialize_with = "text")]
    pub raw_linger: String,
    /// The raw stream's compression level (-1: the codec's default; zstd and lz4 up to 12,
    /// gzip 9: librdkafka's range).
    pub raw_compression_level: i32,
    /// Passed to the raw stream's producer only, over `options`.
    #[serde(deserialize_with = "option_texts")]
    pub raw_options: BTreeMap<String, String>,
    /// `derived`: records carry no id header, consumers compute it (README, "Record ids");
    /// `header`: every record carries it as `edge.id`.
    pub record_id: RecordId,
    /// `auto`: raw records carry `mqtt.topic` only when it does not follow from the key;
    /// `always`: on every raw record.
    pub raw_topic_header: TopicHeader,
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
    /// Bootstrap servers of a second cluster for the per-reading streams (raw, late, dead
    /// letters); empty: everything goes to `brokers`. See [`KafkaConfig::raw_cluster`].
    #[serde(deserialize_with = "text")]
    pub raw_brokers: String,
    /// The second cluster's security settings, as the ones above; nothing is inherited from
    /// them (the cloud cluster's credentials never go to the site's broker).
    #[serde(deserialize_with = "text")]
    pub raw_security_protocol: String,
    #[serde(deserialize_with = "text")]
    pub raw_sasl_mechanism: String,
    #[serde(deserialize_with = "text")]
    pub raw_sasl_username: String,
    /// Secret.
    #[serde(deserialize_with = "text")]
    pub raw_sasl_password: String,
    #[serde(deserialize_with = "text")]
    pub raw_ssl_ca_location: String,
    #[serde(deserialize_with = "text")]
    pub raw_ssl_certificate_location: String,
    #[serde(deserialize_with = "text")]
    pub raw_ssl_key_location: String,
    /// Secret.
    #[serde(deserialize_with = "text")]
    pub raw_ssl_key_password: String,
}

impl KafkaConfig {
    /// Whether a second cluster takes the per-reading streams (`raw_brokers` is set).
    pub fn has_raw_cluster(&self) -> bool {
        !self.raw_brokers.is_empty()
    }

    /// The settings of the cluster that takes the per-reading streams when `raw_brokers` is
    /// set: these settings with the second cluster's brokers and security in place of the
    /// first's. `None`: one cluster takes everything.
    pub fn raw_cluster(&self) -> Option<KafkaConfig> {
        if !self.has_raw_cluster() {
            return None;
        }
        Some(KafkaConfig {
            brokers: self.raw_brokers.clone(),
            security_protocol: self.raw_security_protocol.clone(),
            sasl_mechanism: self.raw_sasl_mechanism.clone(),
            sasl_username: self.raw_sasl_username.clone(),
            sasl_password: self.raw_sasl_password.clone(),
            ssl_ca_location: self.raw_ssl_ca_location.clone(),
            ssl_certificate_location: self.raw_ssl_certificate_location.clone(),
            ssl_key_location: self.raw_ssl_key_location.clone(),
            ssl_key_password: self.raw_ssl_key_password.clone(),
            raw_brokers: String::new(),
            ..self.clone()
        })
    }
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
            raw_linger: "auto".into(),
            raw_compression_level: RAW_COMPRESSION_LEVEL,
            raw_options: BTreeMap::new(),
            record_id: RecordId::Derived,
            raw_topic_header: TopicHeader::Auto,
            shutdown_timeout: Duration::from_secs(10),
            security_protocol: "plaintext".into(),
            sasl_mechanism: "SCRAM-SHA-256".into(),
            sasl_username: String::new(),
            sasl_password: String::new(),
            ssl_ca_location: String::new(),
            ssl_certificate_location: String::new(),
            ssl_key_location: String::new(),
            ssl_key_password: String::new(),
            raw_brokers: String::new(),
            raw_security_protocol: "plaintext".into(),
            raw_sasl_mechanism: "SCRAM-SHA-256".into(),
            raw_sasl_username: String::new(),
            raw_sasl_password: String::new(),
            raw_ssl_ca_location: String::new(),
            raw_ssl_certificate_location: String::new(),
            raw_ssl_key_location: String::new(),
            raw_ssl_key_password: String::new(),
        }
    }
}

/// Which readings the raw stream carries ([`edge_bridge_core::raw_policy`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `all`, `deadband` or `sample`.
    #[serde(deserialize_with = "text")]
    pub policy: String,
    /// deadband: the longest event time between two readings sent; sample: the slice.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// deadband: sent when the value moved more than this from the last one sent (0: off).
    pub deadband_absolute: f64,
    /// deadband: sent when the value moved more than this fraction of the last one sent.
    pub deadband_relative: f64,
    /// deferred: the daily window raw records are sent in (`22:00-06:00`); empty: any time
    /// the aggregates leave the link free.
    #[serde(deserialize_with = "text")]
    pub send_window: String,
    /// deferred: the IANA zone `send_window` is read in.
    #[serde(deserialize_with = "text")]
    pub time_zone: String,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            policy: "all".into(),
            interval: Duration::from_secs(60),
            deadband_absolute: 0.0,
            deadband_relative: 0.0,
            send_window: String::new(),
            time_zone: "UTC".into(),
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

mod broker;
mod redact;
mod typed;
mod validate;

pub use broker::{
    listen_v5_addr, Broker, ClientTls, EmbeddedBroker, ExternalBroker, Protocol, Qos, TlsListener,
};
pub use redact::{redact_url, REDACTED};
pub use typed::DEFAULT_ROUTE;

#[cfg(test)]
mod tests;
