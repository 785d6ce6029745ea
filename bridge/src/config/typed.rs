//! What the pure core and the MQTT side are given: the configuration's strings and numbers
//! read into their types, each error naming its key.

use std::time::Duration;

use edge_bridge_core::decode::{DecodeOptions, SensorIdSource};
use edge_bridge_core::raw_policy::RawFilter;
use edge_bridge_core::window::WindowOptions;
use edge_bridge_core::{EncodeOptions, RawPolicy};

use super::{Config, RecordId};

impl Config {
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

    /// The encoder's options, from `window.measurement`, `kafka.record_id` and
    /// `kafka.raw_topic_header`.
    pub fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            measurement: self.window.measurement.clone(),
            id_header: self.kafka.record_id == RecordId::Header,
            topic_header: self.kafka.raw_topic_header,
        }
    }

    /// The raw stream producer's batching time: `kafka.raw_linger`, whose `auto` depends on
    /// whether acknowledgements wait on it (see [`super::RAW_LINGER_EXTERNAL`]). It must stay
    /// well under `spool.spill_after`: records waiting that long without a delivery report
    /// mean the uplink is down, and a raw batch that lingers so long would look like it.
    pub fn raw_linger(&self) -> Result<Duration, String> {
        let text = self.kafka.raw_linger.trim();
        let linger = if text == "auto" {
            let linger = if self.mqtt.url.is_empty() {
                super::RAW_LINGER_EMBEDDED
            } else {
                super::RAW_LINGER_EXTERNAL
            };
            let quarter = (self.spool.spill_after / 4).as_millis() as u64;
            linger.min(Duration::from_millis(quarter))
        } else {
            humantime::parse_duration(text).map_err(|e| {
                format!("kafka.raw_linger: {text:?} is not auto or a duration like 500ms: {e}")
            })?
        };
        if linger > Duration::from_secs(900) {
            return Err(
                "kafka.raw_linger: at most 900s (librdkafka's limit); a few hundred ms is usual"
                    .into(),
            );
        }
        if linger * 2 > self.spool.spill_after {
            return Err(format!(
                "kafka.raw_linger: {} is more than half of spool.spill_after ({}): the uplink would look down while a batch lingers; shorten it or raise spool.spill_after",
                humantime::format_duration(linger),
                humantime::format_duration(self.spool.spill_after)
            ));
        }
        millis("kafka.raw_linger", linger)?;
        Ok(linger)
    }

    /// The raw stream's policy, from `[raw]`.
    pub fn raw_policy(&self) -> Result<RawPolicy, String> {
        let r = &self.raw;
        let interval_ms = millis("raw.interval", r.interval)?;
        let policy = match r.policy.as_str() {
            "all" => RawPolicy::All,
            "deadband" => RawPolicy::Deadband {
                absolute: r.deadband_absolute,
                relative: r.deadband_relative,
                max_interval_ms: interval_ms,
            },
            "sample" => RawPolicy::Sample { interval_ms },
            other => {
                return Err(format!(
                    "raw.policy: {other:?} is not all, deadband or sample"
                ))
            }
        };
        RawFilter::new(policy.clone(), 1).map_err(|e| {
            format!("raw ({} policy): {e}; see raw.deadband_absolute, raw.deadband_relative and raw.interval", r.policy)
        })?;
        Ok(policy)
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
