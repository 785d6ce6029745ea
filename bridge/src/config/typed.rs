//! What the pure core and the MQTT side are given: the configuration's strings and numbers
//! read into their types, each error naming its key.

use std::net::SocketAddr;
use std::time::Duration;

use edge_bridge_core::decode::{DecodeOptions, SensorIdSource};
use edge_bridge_core::window::WindowOptions;

use super::{redact_url, Config};

/// Where the bridge reads MQTT from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttSource {
    /// The embedded broker, with its plaintext MQTT 3.1.1 listener (if any).
    Embedded(Option<SocketAddr>),
    External(url::Url),
}

impl Config {
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
}

/// Whole milliseconds of a duration, refusing durations finer than the core's unit.
pub(super) fn millis(key: &str, d: Duration) -> Result<i64, String> {
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{key}: {d:?} is finer than a millisecond"));
    }
    i64::try_from(d.as_millis()).map_err(|_| format!("{key}: {d:?} is too long"))
}

pub(super) fn parse_sensor_id(s: &str) -> Result<SensorIdSource, String> {
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
