//! Device families: the topics and payload shapes each one publishes, with its usual chatter,
//! so that the demo, the tests and the benchmarks can exercise a route per family (see the
//! bridge's `deploy/routes-example.toml`).
//!
//! Every family derives its other measurements from the reading's temperature, so a test can
//! recompute each payload from a [`crate::dataset::Message`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A family of devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The tutorial's `sensors/<id>/temperature` with `{"ts", "value"}`.
    #[default]
    Tutorial,
    /// `zigbee2mqtt/<name>`: temperature, humidity and pressure in one object, no timestamp;
    /// chatter: `bridge/state`, `<name>/availability`.
    Zigbee2mqtt,
    /// `tele/<device>/SENSOR`: an SHT3X object, `Time` in Europe/Berlin local time without an
    /// offset; chatter: `STATE` and `LWT`.
    Tasmota,
    /// `esphome/<node>/sensor/temperature/state`: the value as text; chatter: `status`.
    Esphome,
    /// `<device>/events/rpc`: JSON-RPC NotifyStatus with fractional epoch seconds; chatter:
    /// battery notifications without a measurement.
    Shelly,
    /// Sparkplug B: each sensor a device of an edge node, BIRTH before DATA, ten metrics per
    /// DDATA by alias (protobuf); chatter: NDATA with a boolean. Stateful (births, `seq`), so
    /// its messages come from [`crate::sparkplug::Nodes`], not from the functions below.
    Sparkplug,
}

/// The zone Tasmota's `Time` is written in (the bridge's example route reads it so).
pub const TASMOTA_ZONE: chrono_tz::Tz = chrono_tz::Europe::Berlin;

/// Humidity derived from temperature, one decimal.
pub fn humidity(t: f64) -> f64 {
    ((45.0 + (t - 25.0) * 1.5) * 10.0).round() / 10.0
}

/// Pressure derived from temperature, one decimal.
pub fn pressure(t: f64) -> f64 {
    ((1013.2 - (t - 25.0) * 0.5) * 10.0).round() / 10.0
}

impl Profile {
    /// The topic a reading of `sensor` is published on; `None` for the tutorial, whose topic
    /// comes from `--topic-template`.
    pub fn topic(self, sensor: &str) -> Option<String> {
        match self {
            Profile::Tutorial | Profile::Sparkplug => None,
            Profile::Zigbee2mqtt => Some(format!("zigbee2mqtt/{sensor}")),
            Profile::Tasmota => Some(format!("tele/{sensor}/SENSOR")),
            Profile::Esphome => Some(format!("esphome/{sensor}/sensor/temperature/state")),
            Profile::Shelly => Some(format!("{sensor}/events/rpc")),
        }
    }

    /// The payload of a reading of temperature `t` at event time `ts_ms` (empty for Sparkplug
    /// B, whose payloads are protobuf).
    pub fn payload(self, ts_ms: i64, t: f64) -> String {
        match self {
            Profile::Tutorial => crate::dataset::payload(ts_ms, t),
            Profile::Sparkplug => String::new(),
            Profile::Zigbee2mqtt => serde_json::json!({
                "battery": 97, "humidity": humidity(t), "linkquality": 134,
                "pressure": pressure(t), "temperature": t, "voltage": 2995
            })
            .to_string(),
            Profile::Tasmota => serde_json::json!({
                "Time": local_time(ts_ms),
                "SHT3X": {"Temperature": t, "Humidity": humidity(t), "DewPoint": ((t - 12.0) * 10.0).round() / 10.0},
                "TempUnit": "C"
            })
            .to_string(),
            Profile::Esphome => format!("{t:.2}"),
            Profile::Shelly => serde_json::json!({
                "src": "shellyplusht", "dst": "shellyplusht/events", "method": "NotifyStatus",
                "params": {
                    "ts": ts_ms as f64 / 1000.0,
                    "temperature:0": {"id": 0, "tC": t, "tF": ((t * 1.8 + 32.0) * 10.0).round() / 10.0},
                    "humidity:0": {"id": 0, "rh": humidity(t)}
                }
            })
            .to_string(),
        }
    }

    /// A status message the family sends beside its readings (none for the tutorial).
    pub fn chatter(self, sensor: &str, ts_ms: i64, n: u64) -> Option<(String, String)> {
        let pick = n % 2 == 0;
        Some(match self {
            Profile::Tutorial | Profile::Sparkplug => return None,
            Profile::Zigbee2mqtt if pick => {
                ("zigbee2mqtt/bridge/state".into(), r#"{"state":"online"}"#.into())
            }
            Profile::Zigbee2mqtt => (
                format!("zigbee2mqtt/{sensor}/availability"),
                r#"{"state":"online"}"#.into(),
            ),
            Profile::Tasmota if pick => (
                format!("tele/{sensor}/STATE"),
                format!(r#"{{"Time":"{}","Uptime":"0T00:10:00","Heap":25,"POWER":"ON"}}"#, local_time(ts_ms)),
            ),
            Profile::Tasmota => (format!("tele/{sensor}/LWT"), "Online".into()),
            Profile::Esphome => (format!("esphome/{sensor}/status"), "online".into()),
            Profile::Shelly => (
                format!("{sensor}/events/rpc"),
                serde_json::json!({
                    "src": "shellyplusht", "method": "NotifyStatus",
                    "params": {"ts": ts_ms as f64 / 1000.0, "devicepower:0": {"id": 0, "battery": {"V": 5.9, "percent": 85}}}
                })
                .to_string(),
            ),
        })
    }
}

/// `ts_ms` as Tasmota writes it: local time in [`TASMOTA_ZONE`], seconds, no offset.
fn local_time(ts_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ts_ms)
        .expect("simulated times are in range")
        .with_timezone(&TASMOTA_ZONE)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_has_its_shape() {
        let ts = 1_733_162_400_000; // 18:00 UTC, 19:00 in Berlin
        let v: serde_json::Value =
            serde_json::from_str(&Profile::Tasmota.payload(ts, 21.5)).unwrap();
        assert_eq!(v["Time"], "2024-12-02T19:00:00");
        assert_eq!(v["SHT3X"]["Temperature"], 21.5);
        let v: serde_json::Value =
            serde_json::from_str(&Profile::Zigbee2mqtt.payload(ts, 21.5)).unwrap();
        assert_eq!(
            (v["temperature"].as_f64(), v["humidity"].as_f64()),
            (Some(21.5), Some(39.8))
        );
        assert_eq!(v["pressure"], 1015.0);
        assert_eq!(Profile::Esphome.payload(ts, 21.5), "21.50");
        let v: serde_json::Value =
            serde_json::from_str(&Profile::Shelly.payload(ts + 520, 21.5)).unwrap();
        assert_eq!(v["params"]["ts"], 1_733_162_400.52);
        assert_eq!(Profile::Shelly.topic("d1").unwrap(), "d1/events/rpc");
        assert!(Profile::Tutorial.chatter("s", ts, 0).is_none());
        assert_eq!(
            Profile::Zigbee2mqtt.chatter("s", ts, 1).unwrap().0,
            "zigbee2mqtt/s/availability"
        );
    }
}
