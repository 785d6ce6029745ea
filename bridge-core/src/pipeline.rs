//! One MQTT publish in, routed records out: decode -> window -> encode, still pure.
//!
//! This is the whole per-message work of the bridge; the async shell only feeds it publishes
//! and clock ticks and hands the records to the sink.

use bytes::Bytes;
use bytestring::ByteString;

use crate::decode::{DecodeConfigError, DecodeError, DecodeOptions, Decoder};
use crate::encode::{EncodeOptions, Encoder, OutRecord};
use crate::raw_policy::{RawFilter, RawPolicy, RawPolicyError};
use crate::route::{
    self, Claim, NoMeasurement, PayloadFormat, RouteConfigError, RouteDecoder, RouteOptions,
};
use crate::sparkplug::{Outcome, SparkplugDecoder};
use crate::window::{
    Admission, ClosedWindow, RestoreError, WindowConfigError, WindowOptions, WindowSnapshot,
    Windower,
};

/// Which output stream a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Raw,
    Aggregate,
    DeadLetter,
    Late,
}

impl Stream {
    pub const ALL: [Stream; 4] = [
        Stream::Raw,
        Stream::Aggregate,
        Stream::DeadLetter,
        Stream::Late,
    ];

    /// A short, stable name, safe as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Raw => "raw",
            Stream::Aggregate => "aggregate",
            Stream::DeadLetter => "dead_letter",
            Stream::Late => "late",
        }
    }
}

/// A record and the stream it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub stream: Stream,
    pub record: OutRecord,
    /// The Kafka topic, where a route has its own for this stream; `None`: the stream's
    /// configured topic (`kafka.raw_topic`, ...).
    pub topic: Option<TopicName>,
}

/// A topic name shared by every record a route sends to it.
pub type TopicName = std::sync::Arc<str>;

/// A route's own Kafka topics, stream by stream (`None`: the stream's configured topic).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTopics {
    pub raw: Option<TopicName>,
    pub aggregate: Option<TopicName>,
    pub dead_letter: Option<TopicName>,
    pub late: Option<TopicName>,
}

impl RouteTopics {
    /// The topic of `stream`'s records from this route.
    pub fn of(&self, stream: Stream) -> Option<TopicName> {
        match stream {
            Stream::Raw => self.raw.clone(),
            Stream::Aggregate => self.aggregate.clone(),
            Stream::DeadLetter => self.dead_letter.clone(),
            // A late copy goes to the route's late topic, else where its raw records go.
            Stream::Late => self.late.clone().or_else(|| self.raw.clone()),
        }
    }
}

/// What became of one publish, for counting. Every publish gets exactly one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Decoded and added to a window.
    Aggregated,
    /// Decoded and added to a window, and left out of the raw stream by the raw policy
    /// (reason: [`crate::raw_policy::DEADBAND`] or [`crate::raw_policy::SAMPLE`]).
    Thinned(&'static str),
    /// Decoded, but its window had closed: raw only (and the late stream if enabled).
    Late,
    /// Decoded, but left out of the aggregates by a memory bound (reason code): raw only.
    Refused(&'static str),
    /// Not decodable (reason code): dead-letter only.
    Rejected(&'static str),
    /// Counted and dropped by the routes' rules, with no record: `excluded` (an exclusion
    /// matched its topic), `no_measurement` (the route drops payloads without one), or
    /// `unrouted` (brought by a subscription widened to keep overlapping routes' filters from
    /// delivering a message twice, and claimed by no route).
    Ignored(&'static str),
}

/// Reasons of [`Verdict::Ignored`] (`control`: a Sparkplug B DEATH, command or host STATE,
/// or a BIRTH or DATA without a numeric metric).
pub const IGNORED_REASONS: [&str; 4] = ["excluded", "no_measurement", "unrouted", "control"];

/// Entries a reused buffer of closed windows (or of the records made from them) keeps room for
/// between calls. A reading closes one or two windows; an idle flush or a restore closes every
/// sensor's at once (10,000 in the soak), and a buffer kept at that size would hold megabytes
/// until the next such burst.
pub const BURST_KEEP: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PipelineConfigError {
    #[error("decode configuration: {0}")]
    Decode(#[from] DecodeConfigError),
    #[error("window configuration: {0}")]
    Window(#[from] WindowConfigError),
    #[error("raw policy: {0}")]
    RawPolicy(#[from] RawPolicyError),
    #[error("{0}")]
    Route(#[from] RouteConfigError),
}

/// How a pipeline reads payloads.
#[derive(Debug)]
enum Reader {
    /// The tutorial's topic filter and `{"ts", "value"}` payloads, on the fast path.
    Tutorial(Decoder),
    /// A configured route; `single` is its one fixed measurement name, if it has one.
    Route {
        decoder: Box<RouteDecoder>,
        single: bool,
        /// A `sparkplug-b` route's alias tables (the decoder then only matches topics).
        sparkplug: Option<Box<SparkplugDecoder>>,
    },
}

/// Decoder, windower and encoder wired together.
#[derive(Debug)]
pub struct Pipeline {
    reader: Reader,
    windower: Windower,
    encoder: Encoder,
    raw_filter: RawFilter,
    /// Whether late readings are also copied to the late stream.
    route_late: bool,
    /// Reused buffer for windows closed by one call, so the hot path does not allocate it.
    closed: Vec<ClosedWindow>,
    /// This route's own topics (none for the tutorial's pipeline).
    topics: RouteTopics,
}

impl Pipeline {
    pub fn new(
        decode: DecodeOptions,
        window: WindowOptions,
        encode: &EncodeOptions,
        route_late: bool,
    ) -> Result<Self, PipelineConfigError> {
        let decoder = Decoder::new(decode)?;
        Ok(Self {
            encoder: Encoder::new(encode, decoder.topic_follows_from_sensor()),
            reader: Reader::Tutorial(decoder),
            raw_filter: RawFilter::new(RawPolicy::All, window.max_sensors)?,
            windower: Windower::new(window)?,
            route_late,
            closed: Vec::new(),
            topics: RouteTopics::default(),
        })
    }

    /// The pipeline of a configured route. `encode.measurement` is not used: the route names
    /// its measurements.
    pub fn for_route(
        route: RouteOptions,
        window: WindowOptions,
        encode: &EncodeOptions,
        route_late: bool,
    ) -> Result<Self, PipelineConfigError> {
        let decoder = RouteDecoder::new(route)?;
        let single = decoder.single_measurement().map(str::to_owned);
        let opts = decoder.options();
        // The topic follows from the key only where the key is one filter's `+` levels.
        let follows = opts.sensor_id == route::SensorRule::Topic
            && decoder.filters().len() == 1
            && !decoder.filters()[0].has_rest();
        let encoder = Encoder::for_route(encode, follows, &opts.name, single.as_deref());
        let sparkplug = (opts.format == PayloadFormat::SparkplugB).then(|| {
            let d = SparkplugDecoder::new(
                window.max_sensors,
                opts.max_future_skew_ms,
                opts.max_sensor_id_bytes,
            );
            Box::new(if opts.ask_rebirth {
                d.asking_rebirth()
            } else {
                d
            })
        });
        Ok(Self {
            encoder,
            reader: Reader::Route {
                decoder: Box::new(decoder),
                single: single.is_some(),
                sparkplug,
            },
            raw_filter: RawFilter::new(RawPolicy::All, window.max_sensors)?,
            windower: Windower::new(window)?,
            route_late,
            closed: Vec::new(),
            topics: RouteTopics::default(),
        })
    }

    /// MQTT messages the route asks the bridge to publish (Sparkplug B rebirth requests, with
    /// `ask_rebirth`), taken once; due only after a [`Verdict::Rejected`] `unknown_alias`.
    pub fn take_commands(&mut self) -> Vec<crate::sparkplug::Command> {
        match &mut self.reader {
            Reader::Route {
                sparkplug: Some(spb),
                ..
            } => spb.take_commands(),
            _ => Vec::new(),
        }
    }

    /// The same pipeline sending its records to `topics` where given; a late topic of its own
    /// turns its late copies on.
    pub fn with_topics(mut self, topics: RouteTopics) -> Self {
        self.route_late |= topics.late.is_some();
        self.topics = topics;
        self
    }

    /// This pipeline's own topics.
    pub fn topics(&self) -> &RouteTopics {
        &self.topics
    }

    /// Whether this pipeline takes `topic`.
    pub fn claims(&self, topic: &str) -> Claim {
        match &self.reader {
            Reader::Tutorial(d) => {
                if d.filter().matches(topic) {
                    Claim::Yes
                } else {
                    Claim::No
                }
            }
            Reader::Route { decoder, .. } => decoder.claims(topic),
        }
    }

    /// The topic filters to subscribe to.
    pub fn topic_filters(&self) -> Vec<&str> {
        match &self.reader {
            Reader::Tutorial(d) => vec![d.filter().as_str()],
            Reader::Route { decoder, .. } => decoder.filters().iter().map(|f| f.as_str()).collect(),
        }
    }

    /// Whether this is the tutorial's pipeline (not a configured route).
    pub fn is_tutorial(&self) -> bool {
        matches!(self.reader, Reader::Tutorial(_))
    }

    /// The same pipeline with `policy` deciding which aggregated readings the raw stream
    /// carries (every one by default); it remembers at most `window.max_sensors` sensors.
    pub fn with_raw_policy(mut self, policy: RawPolicy) -> Result<Self, PipelineConfigError> {
        self.raw_filter = RawFilter::new(policy, self.windower.options().max_sensors)?;
        Ok(self)
    }

    pub fn windower(&self) -> &Windower {
        &self.windower
    }

    /// Handles one publish received at wall-clock `now_ms`. Records go to `out` in the order
    /// they must be produced: aggregates the reading closed, then its raw (and late) record.
    /// The raw record shares `topic`'s and `payload`'s buffers rather than copying them.
    /// A configured route's pipeline takes only topics it [claims](Pipeline::claims) (its
    /// exclusions are not matched again here); [`crate::Router`] sees to that.
    pub fn ingest(
        &mut self,
        topic: &ByteString,
        payload: Bytes,
        user_properties: &[(String, String)],
        now_ms: i64,
        out: &mut Vec<Routed>,
    ) -> Verdict {
        let decoder = match &self.reader {
            Reader::Tutorial(d) => d,
            Reader::Route { .. } => {
                return self.ingest_route(topic, payload, user_properties, now_ms, out)
            }
        };
        let reading = match decoder.decode(topic, &payload, now_ms) {
            Ok(r) => r,
            Err(e) => return self.reject(topic, payload, now_ms, &e, out),
        };
        let admission = self.windower.record(
            &reading.sensor,
            reading.ts_ms,
            reading.value,
            now_ms,
            &mut self.closed,
        );
        self.emit_closed(out);
        if matches!(admission, Admission::Added { .. }) {
            // Only a reading an aggregate reflects may be left out of the raw stream.
            if let Err(reason) =
                self.raw_filter
                    .admit(&reading.sensor, reading.ts_ms, reading.value)
            {
                return Verdict::Thinned(reason);
            }
        }
        let raw = self
            .encoder
            .raw(&reading, topic, payload.clone(), user_properties);
        let verdict = match admission {
            Admission::Added { .. } => Verdict::Aggregated,
            Admission::Late { window_start } => {
                if self.route_late {
                    out.push(Routed {
                        stream: Stream::Late,
                        record: self.encoder.late(&raw, window_start),
                        topic: self.topics.of(Stream::Late),
                    });
                }
                Verdict::Late
            }
            Admission::Refused(r) => Verdict::Refused(r.reason()),
        };
        out.push(Routed {
            stream: Stream::Raw,
            record: raw,
            topic: self.topics.of(Stream::Raw),
        });
        verdict
    }

    /// The dead letter of a publish that could not be decoded.
    fn reject(
        &self,
        topic: &ByteString,
        payload: Bytes,
        now_ms: i64,
        e: &DecodeError,
        out: &mut Vec<Routed>,
    ) -> Verdict {
        out.push(Routed {
            stream: Stream::DeadLetter,
            record: self.encoder.dead_letter(topic, payload, now_ms, e),
            topic: self.topics.of(Stream::DeadLetter),
        });
        Verdict::Rejected(e.reason())
    }

    /// [`Pipeline::ingest`] for a configured route: each measurement is added to its own
    /// series; the message is one raw record, left out only when the raw policy leaves out
    /// every one of its measurements. The topic is one the route claims ([`Router::ingest`]
    /// asks [`Pipeline::claims`] first, exclusions included).
    ///
    /// [`Router::ingest`]: crate::Router::ingest
    fn ingest_route(
        &mut self,
        topic: &ByteString,
        payload: Bytes,
        user_properties: &[(String, String)],
        now_ms: i64,
        out: &mut Vec<Routed>,
    ) -> Verdict {
        let Reader::Route {
            decoder,
            single,
            sparkplug,
        } = &mut self.reader
        else {
            unreachable!("called for routes only")
        };
        let single = *single;
        let decoded = match sparkplug {
            Some(spb) => match spb.decode(topic, &payload, now_ms) {
                Ok(Outcome::Control) => return Verdict::Ignored("control"),
                Ok(Outcome::Measured {
                    sensor,
                    ts_ms,
                    values,
                    ..
                }) => Ok((
                    std::borrow::Cow::Owned(sensor),
                    ts_ms,
                    smallvec::SmallVec::<[_; 4]>::from_vec(values),
                )),
                Err(e) => Err(e),
            },
            None => decoder.decode(topic, &payload, now_ms).map(|m| {
                let values = m
                    .values
                    .into_iter()
                    .map(|(name, value)| (name, value, m.ts_ms))
                    .collect::<smallvec::SmallVec<[_; 4]>>();
                (m.sensor, m.ts_ms, values)
            }),
        };
        let (sensor, ts_ms, values) = match decoded {
            Ok(d) => d,
            Err(DecodeError::NoMeasurement(_))
                if decoder.options().no_measurement == NoMeasurement::Drop =>
            {
                return Verdict::Ignored("no_measurement")
            }
            Err(e) => return self.reject(topic, payload, now_ms, &e, out),
        };
        let (mut added, mut sent, mut thinned) = (false, false, None);
        let (mut late_start, mut refused) = (None, None);
        for (name, value, value_ts) in &values {
            let key = route::series_key(&sensor, (!single).then_some(name.as_str()));
            match self
                .windower
                .record(&key, *value_ts, *value, now_ms, &mut self.closed)
            {
                Admission::Added { .. } => {
                    added = true;
                    match self.raw_filter.admit(&key, *value_ts, *value) {
                        Ok(()) => sent = true,
                        Err(reason) => thinned = Some(reason),
                    }
                }
                Admission::Late { window_start } => {
                    late_start.get_or_insert(window_start);
                }
                Admission::Refused(r) => {
                    refused.get_or_insert(r.reason());
                }
            }
        }
        self.emit_closed(out);
        if let (Some(reason), false, None, None) = (thinned, sent, late_start, refused) {
            return Verdict::Thinned(reason);
        }
        let raw = self
            .encoder
            .raw_of(&sensor, ts_ms, topic, payload.clone(), user_properties);
        if let (Some(window_start), true) = (late_start, self.route_late) {
            out.push(Routed {
                stream: Stream::Late,
                record: self.encoder.late(&raw, window_start),
                topic: self.topics.of(Stream::Late),
            });
        }
        out.push(Routed {
            stream: Stream::Raw,
            record: raw,
            topic: self.topics.of(Stream::Raw),
        });
        match (added, late_start, refused) {
            (true, _, _) => Verdict::Aggregated,
            (false, Some(_), _) => Verdict::Late,
            (false, None, Some(reason)) => Verdict::Refused(reason),
            (false, None, None) => unreachable!("a decoded payload has a measurement"),
        }
    }

    /// Closes the windows of sensors idle as of wall-clock `now_ms`.
    pub fn flush_idle(&mut self, now_ms: i64, out: &mut Vec<Routed>) {
        self.windower.flush_idle(now_ms, &mut self.closed);
        self.emit_closed(out);
    }

    /// The open windows and per-sensor watermarks, to save across a restart.
    pub fn snapshot(&self) -> WindowSnapshot {
        self.windower.snapshot()
    }

    /// Loads saved window state; windows it already closes are emitted to `out`. Idleness
    /// counts from wall-clock `now_ms` (see [`Windower::restore`]).
    /// Restores saved windows; returns how many saved series were left out because they no
    /// longer fit the route: a route that went from one measurement to several (its saved
    /// keys name no measurement), or back (they name one). Emitted anyway, they would carry a
    /// wrong measurement name, or a sensor id with the measurement in it.
    pub fn restore(
        &mut self,
        mut snap: WindowSnapshot,
        now_ms: i64,
        out: &mut Vec<Routed>,
    ) -> Result<usize, RestoreError> {
        let saved = snap.sensors.len();
        // The tutorial's sensor ids are kept whatever they hold (a payload field may hold a
        // NUL); a route's never hold one (`BadSensorId`), so there it marks a measurement.
        if let Reader::Route { single, .. } = self.reader {
            snap.sensors
                .retain(|s| s.sensor.contains(route::SERIES_SEPARATOR) != single);
        }
        let left_out = saved - snap.sensors.len();
        self.windower.restore(snap, now_ms, &mut self.closed)?;
        self.emit_closed(out);
        Ok(left_out)
    }

    /// Closes every open window.
    pub fn drain(&mut self, out: &mut Vec<Routed>) {
        self.windower.drain(&mut self.closed);
        self.emit_closed(out);
    }

    fn emit_closed(&mut self, out: &mut Vec<Routed>) {
        for w in self.closed.drain(..) {
            out.push(Routed {
                stream: Stream::Aggregate,
                record: self.encoder.aggregate(&w),
                topic: self.topics.of(Stream::Aggregate),
            });
        }
        self.closed.shrink_to(BURST_KEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(route_late: bool) -> Pipeline {
        Pipeline::new(
            DecodeOptions::default(),
            WindowOptions::default(),
            &EncodeOptions::default(),
            route_late,
        )
        .unwrap()
    }

    fn ingest(p: &mut Pipeline, payload: &'static str, out: &mut Vec<Routed>) -> Verdict {
        p.ingest(
            &ByteString::from_static("sensors/a/temperature"),
            Bytes::from_static(payload.as_bytes()),
            &[],
            1_718_000_100_000,
            out,
        )
    }

    fn streams(out: &[Routed]) -> Vec<Stream> {
        out.iter().map(|r| r.stream).collect()
    }

    #[test]
    fn routes_each_verdict() {
        let mut p = pipeline(true);
        let mut out = Vec::new();
        assert_eq!(
            ingest(&mut p, r#"{"ts":1718000000,"value":1}"#, &mut out),
            Verdict::Aggregated
        );
        assert_eq!(streams(&out), [Stream::Raw]);
        out.clear();
        // Closes [..00, ..10) and goes to the raw stream after the aggregate.
        assert_eq!(
            ingest(&mut p, r#"{"ts":1718000011,"value":2}"#, &mut out),
            Verdict::Aggregated
        );
        assert_eq!(streams(&out), [Stream::Aggregate, Stream::Raw]);
        out.clear();
        assert_eq!(
            ingest(&mut p, r#"{"ts":1718000001,"value":3}"#, &mut out),
            Verdict::Late
        );
        assert_eq!(streams(&out), [Stream::Late, Stream::Raw]);
        out.clear();
        assert_eq!(
            ingest(&mut p, r#"{"value":"x"}"#, &mut out),
            Verdict::Rejected("value_not_number")
        );
        assert_eq!(streams(&out), [Stream::DeadLetter]);
    }

    #[test]
    fn the_raw_policy_thins_the_raw_stream_but_not_the_aggregates() {
        let mut p = pipeline(false)
            .with_raw_policy(RawPolicy::Sample {
                interval_ms: 60_000,
            })
            .unwrap();
        let mut out = Vec::new();
        let verdicts: Vec<Verdict> = [
            r#"{"ts":1718000000,"value":1}"#,
            r#"{"ts":1718000001,"value":2}"#,
            r#"{"ts":1718000011,"value":3}"#,
            // Late: in no aggregate, so sent whatever the policy.
            r#"{"ts":1718000002,"value":4}"#,
        ]
        .iter()
        .map(|payload| ingest(&mut p, payload, &mut out))
        .collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Aggregated,
                Verdict::Thinned("sample"),
                Verdict::Thinned("sample"),
                Verdict::Late
            ]
        );
        assert_eq!(streams(&out), [Stream::Raw, Stream::Aggregate, Stream::Raw]);
        let agg: serde_json::Value = serde_json::from_slice(&out[1].record.value).unwrap();
        assert_eq!(agg["temperature"]["count"], 2);
    }

    #[test]
    fn late_stream_is_optional() {
        let mut p = pipeline(false);
        let mut out = Vec::new();
        ingest(&mut p, r#"{"ts":1718000011,"value":2}"#, &mut out);
        out.clear();
        assert_eq!(
            ingest(&mut p, r#"{"ts":1718000001,"value":3}"#, &mut out),
            Verdict::Late
        );
        assert_eq!(streams(&out), [Stream::Raw]);
    }

    #[test]
    fn a_burst_of_closed_windows_leaves_no_burst_sized_buffer() {
        let mut p = pipeline(false);
        let mut out = Vec::new();
        for k in 0..1_000 {
            let topic = ByteString::from(format!("sensors/s{k}/temperature"));
            let payload = Bytes::from_static(br#"{"ts":1718000000,"value":1}"#);
            p.ingest(&topic, payload, &[], 1_718_000_100_000, &mut out);
        }
        out.clear();
        p.flush_idle(1_718_000_100_000 + 30_000, &mut out);
        assert_eq!(out.len(), 1_000);
        assert!(p.closed.capacity() <= BURST_KEEP, "{}", p.closed.capacity());
    }

    #[test]
    fn flush_and_drain_emit_aggregates() {
        let mut p = pipeline(false);
        let mut out = Vec::new();
        ingest(&mut p, r#"{"ts":1718000000,"value":1}"#, &mut out);
        out.clear();
        p.flush_idle(1_718_000_100_000 + 29_999, &mut out);
        assert!(out.is_empty());
        p.flush_idle(1_718_000_100_000 + 30_000, &mut out);
        assert_eq!(streams(&out), [Stream::Aggregate]);
        out.clear();
        ingest(&mut p, r#"{"ts":1718000020,"value":1}"#, &mut out);
        out.clear();
        p.drain(&mut out);
        assert_eq!(streams(&out), [Stream::Aggregate]);
    }
}
