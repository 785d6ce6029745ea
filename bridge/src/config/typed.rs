//! What the pure core and the MQTT side are given: the configuration's strings and numbers
//! read into their types, each error naming its key.

use std::time::Duration;

use edge_bridge_core::decode::{DecodeOptions, SensorIdSource};
use edge_bridge_core::raw_policy::{DailyWindow, RawFilter};
use edge_bridge_core::window::WindowOptions;
use edge_bridge_core::{
    EncodeOptions, MeasurementSpec, NoMeasurement, PayloadFormat, Pipeline, RawPolicy,
    RouteOptions, RouteTopics, Router, SensorRule, Stream, TopicName,
};

use super::{Config, RawConfig, RecordId, RouteConfig};

/// The name of the one route a configuration without `[[routes]]` has (saved windows are kept
/// under it).
pub const DEFAULT_ROUTE: &str = "default";

impl Config {
    /// Every route's pipeline, in order: the `[[routes]]`, or the tutorial's one route from
    /// `mqtt.topic`, `[decode]` and `window.measurement`. Each error names its key. The raw
    /// policy is not applied here ([`Config::raw_policy`], [`Router::with_raw_policy`]).
    pub fn router(&self) -> Result<Router, Vec<String>> {
        let route_late = !self.kafka.late_topic.is_empty();
        let encode = self.encode_options();
        let window = self.window_options().map_err(|e| vec![e])?;
        let mut pipelines = Vec::new();
        let mut errors = Vec::new();
        if self.routes.is_empty() {
            let decode = self.decode_options().map_err(|e| vec![e])?;
            match Pipeline::new(decode, window, &encode, route_late) {
                Ok(p) => pipelines.push((DEFAULT_ROUTE.to_owned(), p)),
                Err(e) => errors.push(format!("decode / mqtt.topic: {e}")),
            }
        }
        errors.extend(self.tutorial_keys_beside_routes());
        for (i, r) in self.routes.iter().enumerate() {
            let built = self.route_options(i, r).and_then(|(opts, window)| {
                Pipeline::for_route(opts, window, &encode, route_late)
                    .map_err(|e| vec![format!("routes[{i}]: {e}")])
            });
            match built {
                Ok(p) => pipelines.push((r.name.clone(), p.with_topics(route_topics(r)))),
                Err(e) => errors.extend(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Router::new(pipelines).map_err(|e| vec![format!("routes: {e}")])
    }

    /// Every topic a route names for itself for one of `streams`, once each, in route order.
    pub fn route_topic_names(&self, streams: &[Stream]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for r in &self.routes {
            for (stream, t) in [
                (Stream::Raw, &r.raw_topic),
                (Stream::Aggregate, &r.agg_topic),
                (Stream::DeadLetter, &r.dead_letter_topic),
                (Stream::Late, &r.late_topic),
            ] {
                if streams.contains(&stream) && !t.is_empty() && !names.contains(t) {
                    names.push(t.clone());
                }
            }
        }
        names
    }

    /// The effective routes, one line each, in the order a publish tries them: what
    /// `check-config` shows below the configuration.
    pub fn routes_summary(&self) -> Vec<String> {
        let w = &self.window;
        let dur = |d: Duration| humantime::format_duration(d).to_string();
        if self.routes.is_empty() {
            let d = &self.decode;
            return vec![format!(
                "{DEFAULT_ROUTE}: topics {:?}; sensor id {}; json {{{:?}: time, {:?}: value}}; measurement {:?}; windows {} + grace {}",
                self.mqtt.topic, d.sensor_id, d.ts_field, d.value_field, w.measurement, dur(w.size), dur(w.grace)
            )];
        }
        self.routes
            .iter()
            .map(|r| {
                let what = if r.format == "text" {
                    format!("text, measurement {:?}", r.measurement)
                } else if r.format == "sparkplug-b" {
                    let asks = if r.ask_rebirth {
                        "asks nodes for a rebirth on an unknown alias"
                    } else {
                        "never writes to the nodes"
                    };
                    format!("sparkplug-b, the numeric metrics of each node and device; {asks}")
                } else {
                    let m: Vec<String> = r
                        .measurements
                        .iter()
                        .map(|(n, p)| format!("{n} = {p:?}"))
                        .collect();
                    let ts = if r.timestamp.is_empty() {
                        "arrival time".to_owned()
                    } else {
                        format!("time {:?} ({})", r.timestamp, r.time_zone)
                    };
                    format!("json, {ts}, measurements {}", m.join(", "))
                };
                let exclude = if r.exclude.is_empty() {
                    String::new()
                } else {
                    format!(" except {:?}", r.exclude)
                };
                format!(
                    "{}: topics {:?}{exclude}; sensor id {}; {what}; no measurement: {}; windows {} + grace {}",
                    r.name,
                    r.topics,
                    r.sensor_id,
                    r.no_measurement,
                    dur(r.window_size.unwrap_or(w.size)),
                    dur(r.window_grace.unwrap_or(w.grace)),
                )
            })
            .collect()
    }

    /// The tutorial's route keys do nothing once `[[routes]]` are given: say so rather than
    /// let an operator believe they apply.
    fn tutorial_keys_beside_routes(&self) -> Vec<String> {
        if self.routes.is_empty() {
            return Vec::new();
        }
        let (defaults, d) = (Config::default(), &self.decode);
        let set = [
            ("mqtt.topic", self.mqtt.topic != defaults.mqtt.topic),
            ("decode.sensor_id", d.sensor_id != defaults.decode.sensor_id),
            ("decode.ts_field", d.ts_field != defaults.decode.ts_field),
            (
                "decode.value_field",
                d.value_field != defaults.decode.value_field,
            ),
            (
                "window.measurement",
                self.window.measurement != defaults.window.measurement,
            ),
        ];
        set.iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| format!("{key}: applies to the tutorial's single route only, and [[routes]] are given; put it in a route (topics, sensor_id, timestamp, measurements)"))
            .collect()
    }

    /// One `[[routes]]` entry read into the core's options and its windows' options.
    fn route_options(
        &self,
        i: usize,
        r: &RouteConfig,
    ) -> Result<(RouteOptions, WindowOptions), Vec<String>> {
        let key = |k: &str| format!("routes[{i}] ({:?}).{k}", r.name);
        let mut errors = Vec::new();
        let sensor_id = match r.sensor_id.as_str() {
            "topic" => Some(SensorRule::Topic),
            s => match (s.strip_prefix("topic-level:"), s.strip_prefix("field:")) {
                (Some(n), _) => n.parse().ok().map(SensorRule::TopicLevel),
                (_, Some(p)) if !p.is_empty() => Some(SensorRule::Field(p.to_owned())),
                _ => None,
            },
        };
        let format = match r.format.as_str() {
            "json" => Some(PayloadFormat::Json),
            "text" => Some(PayloadFormat::Text),
            "sparkplug-b" => Some(PayloadFormat::SparkplugB),
            _ => None,
        };
        let measurements = match format {
            Some(PayloadFormat::Text) => {
                if !r.measurements.is_empty() {
                    errors.push(format!("{}: format \"text\" takes one `measurement` (a name or topic-level:N), not `measurements`", key("measurements")));
                }
                match r.measurement.strip_prefix("topic-level:") {
                    Some(n) => n.parse().ok().map(MeasurementSpec::TopicLevel),
                    None if r.measurement.is_empty() => {
                        errors.push(format!(
                            "{}: format \"text\" needs the measurement's name, or topic-level:N",
                            key("measurement")
                        ));
                        None
                    }
                    None => Some(MeasurementSpec::Named(r.measurement.clone())),
                }
            }
            _ => {
                if !r.measurement.is_empty() {
                    errors.push(format!(
                        "{}: format \"json\" takes `measurements = {{ NAME = \"/json/pointer\" }}`",
                        key("measurement")
                    ));
                }
                Some(MeasurementSpec::Fields(
                    r.measurements
                        .iter()
                        .map(|(n, p)| (n.clone(), p.clone()))
                        .collect(),
                ))
            }
        };
        let no_measurement = match r.no_measurement.as_str() {
            "dead-letter" => Some(NoMeasurement::DeadLetter),
            "drop" => Some(NoMeasurement::Drop),
            _ => None,
        };
        let time_zone = r.time_zone.parse::<edge_bridge_core::route::Tz>().ok();
        if sensor_id.is_none() {
            errors.push(format!(
                "{}: {:?} is not topic, topic-level:N or field:/json/pointer",
                key("sensor_id"),
                r.sensor_id
            ));
        }
        if format.is_none() {
            errors.push(format!(
                "{}: {:?} is not json or text",
                key("format"),
                r.format
            ));
        }
        if no_measurement.is_none() {
            errors.push(format!(
                "{}: {:?} is not dead-letter or drop",
                key("no_measurement"),
                r.no_measurement
            ));
        }
        if time_zone.is_none() {
            errors.push(format!(
                "{}: {:?} is not an IANA time zone name such as Europe/Berlin or UTC",
                key("time_zone"),
                r.time_zone
            ));
        }
        let mut window = self.window_options().map_err(|e| vec![e])?;
        if let Some(size) = r.window_size {
            window.size_ms = millis(&key("window_size"), size).map_err(|e| vec![e])?;
        }
        if let Some(grace) = r.window_grace {
            window.grace_ms = millis(&key("window_grace"), grace).map_err(|e| vec![e])?;
        }
        let (
            Some(sensor_id),
            Some(format),
            Some(measurements),
            Some(no_measurement),
            Some(time_zone),
        ) = (sensor_id, format, measurements, no_measurement, time_zone)
        else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let opts = RouteOptions {
            name: r.name.clone(),
            topics: r.topics.clone(),
            exclude: r.exclude.clone(),
            sensor_id,
            format,
            timestamp: r.timestamp.clone(),
            time_zone,
            epoch_unit: r.epoch_unit,
            measurements,
            no_measurement,
            max_future_skew_ms: millis("decode.max_future_skew", self.decode.max_future_skew)
                .map_err(|e| vec![e])?,
            max_sensor_id_bytes: self.decode.max_sensor_id_bytes,
            ask_rebirth: r.ask_rebirth,
        };
        Ok((opts, window))
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
        self.raw_deferral()?;
        let policy = match r.policy.as_str() {
            // Deferral is the outbox's: every reading is sent, later.
            "all" | "deferred" => RawPolicy::All,
            "deadband" => RawPolicy::Deadband {
                absolute: r.deadband_absolute,
                relative: r.deadband_relative,
                max_interval_ms: interval_ms,
            },
            "sample" => RawPolicy::Sample { interval_ms },
            other => {
                return Err(format!(
                    "raw.policy: {other:?} is not all, deadband, sample or deferred"
                ))
            }
        };
        RawFilter::new(policy.clone(), 1).map_err(|e| {
            format!("raw ({} policy): {e}; see raw.deadband_absolute, raw.deadband_relative and raw.interval", r.policy)
        })?;
        Ok(policy)
    }

    /// With `raw.policy = "deferred"`: raw, late and dead-letter records wait in the spool and
    /// are sent only while no aggregate waits there, and inside `raw.send_window` if one is
    /// set (`Some(None)`: any time). `None` for the other policies.
    pub fn raw_deferral(&self) -> Result<Option<Option<DailyWindow>>, String> {
        let r = &self.raw;
        if r.policy != "deferred" {
            if !r.send_window.is_empty() || r.time_zone != RawConfig::default().time_zone {
                return Err(format!(
                    "raw.send_window, raw.time_zone: only for raw.policy = \"deferred\" (it is {:?})",
                    r.policy
                ));
            }
            return Ok(None);
        }
        if !self.spool.enabled {
            return Err("raw.policy = \"deferred\": raw records wait in the spool, so spool.enabled must be true".into());
        }
        let zone = r
            .time_zone
            .parse::<edge_bridge_core::route::Tz>()
            .map_err(|_| {
                format!(
                    "raw.time_zone: {:?} is not an IANA zone name like \"Europe/Berlin\"",
                    r.time_zone
                )
            })?;
        if r.send_window.is_empty() {
            return Ok(Some(None));
        }
        DailyWindow::parse(&r.send_window, zone)
            .map(|w| Some(Some(w)))
            .map_err(|e| format!("raw.send_window: {e}"))
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

/// A route's own topics, as the core takes them.
fn route_topics(r: &RouteConfig) -> RouteTopics {
    let own = |t: &String| (!t.is_empty()).then(|| TopicName::from(t.as_str()));
    RouteTopics {
        raw: own(&r.raw_topic),
        aggregate: own(&r.agg_topic),
        dead_letter: own(&r.dead_letter_topic),
        late: own(&r.late_topic),
    }
}
