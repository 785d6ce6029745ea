//! Several routes, one per family of devices: each publish goes to the first route, in the
//! order configured, that claims its topic (one of its filters matches and none of its
//! exclusions does).
//!
//! Routes' filters may overlap (Zigbee2MQTT's `zigbee2mqtt/#` and Shelly's `+/events/rpc` both
//! match `zigbee2mqtt/events/rpc`). A broker may send a copy of a message per matching
//! subscription (Mosquitto does with MQTT 5), which would count a reading twice, so the bridge
//! does not subscribe to overlapping filters: it subscribes to a disjoint cover of them
//! ([`TopicFilter::disjoint_cover`]), and topics the cover brings that no route claims are
//! counted and dropped (`unrouted`).

use std::collections::BTreeMap;

use bytes::Bytes;
use bytestring::ByteString;
use thiserror::Error;

use crate::pipeline::{Pipeline, Routed, Verdict};
use crate::raw_policy::RawPolicy;
use crate::route::Claim;
use crate::topic::TopicFilter;
use crate::window::{RestoreError, WindowSnapshot};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouterError {
    #[error("no route is configured")]
    Empty,
    #[error("two routes are named {0:?}; route names must be unique")]
    SameName(String),
    #[error("route names must not be empty")]
    EmptyName,
}

/// What [`Router::restore`] could not restore.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Saved routes no longer configured (renamed or removed).
    pub unknown_routes: Vec<String>,
    /// Routes whose saved series no longer fit them (one measurement became several, or the
    /// reverse), with how many series were left out.
    pub changed_routes: Vec<(String, usize)>,
}

/// The routes, in order.
#[derive(Debug)]
pub struct Router {
    routes: Vec<(String, Pipeline)>,
    /// What to subscribe to: the routes' filters, made disjoint.
    subscriptions: Vec<String>,
}

impl Router {
    pub fn new(routes: Vec<(String, Pipeline)>) -> Result<Self, RouterError> {
        if routes.is_empty() {
            return Err(RouterError::Empty);
        }
        let mut filters = Vec::new();
        for (i, (name, p)) in routes.iter().enumerate() {
            if name.is_empty() {
                return Err(RouterError::EmptyName);
            }
            if routes[..i].iter().any(|(n, _)| n == name) {
                return Err(RouterError::SameName(name.clone()));
            }
            filters.extend(
                p.topic_filters()
                    .into_iter()
                    .map(|f| TopicFilter::parse(f).expect("validated by the route's decoder")),
            );
        }
        let subscriptions = TopicFilter::disjoint_cover(&filters)
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect();
        Ok(Self {
            routes,
            subscriptions,
        })
    }

    /// Every route's pipeline with `policy` deciding what the raw stream carries.
    pub fn with_raw_policy(
        self,
        policy: RawPolicy,
    ) -> Result<Self, crate::pipeline::PipelineConfigError> {
        let routes = self
            .routes
            .into_iter()
            .map(|(n, p)| Ok((n, p.with_raw_policy(policy.clone())?)))
            .collect::<Result<_, crate::pipeline::PipelineConfigError>>()?;
        Ok(Self {
            routes,
            subscriptions: self.subscriptions,
        })
    }

    /// The routes' names and pipelines, in order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &Pipeline)> {
        self.routes.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// The routes' topic filters, in route order.
    pub fn topic_filters(&self) -> Vec<String> {
        self.routes
            .iter()
            .flat_map(|(_, p)| p.topic_filters())
            .map(str::to_owned)
            .collect()
    }

    /// The filters to subscribe to: [`Router::topic_filters`] where they do not overlap, else
    /// a disjoint cover of them (see the module documentation).
    pub fn subscriptions(&self) -> &[String] {
        &self.subscriptions
    }

    /// Handles one publish (see [`Pipeline::ingest`]) in the first route that claims its topic.
    /// A topic that routes' filters match but their exclusions leave out is ignored as
    /// `excluded`; one no filter matches (brought by a widened subscription) as `unrouted`.
    pub fn ingest(
        &mut self,
        topic: &ByteString,
        payload: Bytes,
        user_properties: &[(String, String)],
        now_ms: i64,
        out: &mut Vec<Routed>,
    ) -> Verdict {
        // The tutorial's route alone skips the claim: its decoder matches the topic, and a
        // topic it does not match is a dead letter (`topic_mismatch`), as it always was.
        if self.routes.len() == 1 && self.routes[0].1.is_tutorial() {
            return self.routes[0]
                .1
                .ingest(topic, payload, user_properties, now_ms, out);
        }
        let mut excluded = false;
        for (_, p) in &mut self.routes {
            match p.claims(topic) {
                Claim::Yes => return p.ingest(topic, payload, user_properties, now_ms, out),
                Claim::Excluded => excluded = true,
                Claim::No => {}
            }
        }
        Verdict::Ignored(if excluded { "excluded" } else { "unrouted" })
    }

    /// MQTT messages the routes ask the bridge to publish (see [`Pipeline::take_commands`]).
    pub fn take_commands(&mut self) -> Vec<crate::sparkplug::Command> {
        self.routes
            .iter_mut()
            .flat_map(|(_, p)| p.take_commands())
            .collect()
    }

    /// Closes the windows of sensors idle as of wall-clock `now_ms`, in every route.
    pub fn flush_idle(&mut self, now_ms: i64, out: &mut Vec<Routed>) {
        for (_, p) in &mut self.routes {
            p.flush_idle(now_ms, out);
        }
    }

    /// Closes every open window of every route.
    pub fn drain(&mut self, out: &mut Vec<Routed>) {
        for (_, p) in &mut self.routes {
            p.drain(out);
        }
    }

    /// Each route's open windows, by route name.
    pub fn snapshot(&self) -> BTreeMap<String, WindowSnapshot> {
        self.routes
            .iter()
            .map(|(n, p)| (n.clone(), p.snapshot()))
            .collect()
    }

    /// Loads saved windows into the routes of the same name. Returns the names of saved
    /// routes that no longer exist (their windows are not restored).
    pub fn restore(
        &mut self,
        saved: BTreeMap<String, WindowSnapshot>,
        now_ms: i64,
        out: &mut Vec<Routed>,
    ) -> Result<Restored, (String, RestoreError)> {
        let mut restored = Restored::default();
        for (name, snap) in saved {
            match self.routes.iter_mut().find(|(n, _)| *n == name) {
                Some((_, p)) => {
                    let left_out = p
                        .restore(snap, now_ms, out)
                        .map_err(|e| (name.clone(), e))?;
                    if left_out > 0 {
                        restored.changed_routes.push((name, left_out));
                    }
                }
                None => restored.unknown_routes.push(name),
            }
        }
        Ok(restored)
    }

    /// Open windows over all routes.
    pub fn open_windows(&self) -> usize {
        self.routes
            .iter()
            .map(|(_, p)| p.windower().open_windows())
            .sum()
    }

    /// Series tracked over all routes (a sensor with several measurements counts once per
    /// measurement).
    pub fn sensors(&self) -> usize {
        self.routes
            .iter()
            .map(|(_, p)| p.windower().sensors())
            .sum()
    }

    /// Series forgotten at the memory bound, over all routes.
    pub fn forgotten_sensors(&self) -> u64 {
        self.routes
            .iter()
            .map(|(_, p)| p.windower().forgotten_sensors())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{EncodeOptions, HEADER_ROUTE};
    use crate::pipeline::Stream;
    use crate::route::{MeasurementSpec, NoMeasurement, PayloadFormat, RouteOptions, SensorRule};
    use crate::timestamp::EpochUnit;
    use crate::window::WindowOptions;
    use crate::DecodeOptions;

    const NOW: i64 = 1_733_162_460_000;

    fn route(name: &str, topics: &[&str], m: &[(&str, &str)]) -> RouteOptions {
        RouteOptions {
            name: name.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            exclude: vec!["zigbee2mqtt/bridge/#".into()],
            sensor_id: SensorRule::Topic,
            format: PayloadFormat::Json,
            timestamp: "/ts".into(),
            time_zone: chrono_tz::Tz::UTC,
            epoch_unit: EpochUnit::Auto,
            measurements: MeasurementSpec::Fields(
                m.iter()
                    .map(|(n, p)| (n.to_string(), p.to_string()))
                    .collect(),
            ),
            no_measurement: NoMeasurement::Drop,
            max_future_skew_ms: 3_600_000,
            max_sensor_id_bytes: 256,
            ask_rebirth: false,
        }
    }

    fn pipeline(r: RouteOptions) -> (String, Pipeline) {
        (
            r.name.clone(),
            Pipeline::for_route(
                r,
                WindowOptions::default(),
                &EncodeOptions::default(),
                false,
            )
            .unwrap(),
        )
    }

    fn router() -> Router {
        Router::new(vec![
            pipeline(route(
                "zigbee",
                &["zigbee2mqtt/#"],
                &[("temperature", "/temperature"), ("humidity", "/humidity")],
            )),
            pipeline(route(
                "tasmota",
                &["tele/+/SENSOR"],
                &[("temperature", "/SHT3X/Temperature")],
            )),
        ])
        .unwrap()
    }

    fn ingest(r: &mut Router, topic: &str, payload: &str, out: &mut Vec<Routed>) -> Verdict {
        r.ingest(
            &ByteString::from(topic),
            Bytes::from(payload.to_owned()),
            &[],
            NOW,
            out,
        )
    }

    /// The `edge.route` header of a record.
    fn route_of(r: &Routed) -> Option<&[u8]> {
        r.record
            .headers
            .iter()
            .find(|(k, _)| k == HEADER_ROUTE)
            .map(|(_, v)| &v[..])
    }

    fn json(rec: &Routed) -> serde_json::Value {
        serde_json::from_slice(&rec.record.value).unwrap()
    }

    #[test]
    fn each_measurement_is_a_series_with_its_own_record() {
        let mut r = router();
        let mut out = Vec::new();
        let t = "zigbee2mqtt/hall/thermo";
        for (ts, temp, hum) in [(1_733_162_400, 20, 40), (1_733_162_401, 22, 50)] {
            let v = ingest(
                &mut r,
                t,
                &format!(r#"{{"ts":{ts},"temperature":{temp},"humidity":{hum}}}"#),
                &mut out,
            );
            assert_eq!(v, Verdict::Aggregated);
        }
        // One raw record per message, naming the route.
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| o.stream == Stream::Raw));
        assert_eq!(route_of(&out[0]), Some(&b"zigbee"[..]));
        assert_eq!(&out[0].record.key[..], b"hall/thermo");
        out.clear();
        // Closes the window of both series: one aggregate each, keyed by the sensor.
        ingest(
            &mut r,
            t,
            r#"{"ts":1733162411,"temperature":1,"humidity":1}"#,
            &mut out,
        );
        let aggs: Vec<serde_json::Value> = out
            .iter()
            .filter(|o| o.stream == Stream::Aggregate)
            .inspect(|o| assert_eq!(&o.record.key[..], b"hall/thermo"))
            .map(json)
            .collect();
        assert_eq!(aggs.len(), 2);
        let by = |m: &str| aggs.iter().find(|a| a["measurement"] == m).unwrap().clone();
        assert_eq!(by("temperature")["temperature"]["count"], 2);
        assert_eq!(by("temperature")["temperature"]["mean"], 21.0);
        assert_eq!(by("humidity")["humidity"]["max"], 50);
        assert_eq!(by("humidity")["sensor"], "hall/thermo");
        assert_eq!(by("humidity")["time"], 1_733_162_410_000i64);
        assert!(by("humidity").get("temperature").is_none());
    }

    #[test]
    fn a_single_measurement_route_writes_the_tutorials_record() {
        let mut r = router();
        let mut out = Vec::new();
        ingest(
            &mut r,
            "tele/k/SENSOR",
            r#"{"ts":1733162400,"SHT3X":{"Temperature":21}}"#,
            &mut out,
        );
        ingest(
            &mut r,
            "tele/k/SENSOR",
            r#"{"ts":1733162411,"SHT3X":{"Temperature":21}}"#,
            &mut out,
        );
        let agg = out.iter().find(|o| o.stream == Stream::Aggregate).unwrap();
        assert_eq!(
            std::str::from_utf8(&agg.record.value).unwrap(),
            r#"{"time":1733162410000,"temperature":{"count":1,"min":21,"max":21,"mean":21.0,"sum":21},"start":1733162400000,"end":1733162410000,"sensor":"k"}"#
        );
    }

    #[test]
    fn exclusions_chatter_and_unclaimed_topics() {
        let mut r = router();
        let mut out = Vec::new();
        assert_eq!(
            ingest(
                &mut r,
                "zigbee2mqtt/bridge/state",
                r#"{"state":"online"}"#,
                &mut out
            ),
            Verdict::Ignored("excluded")
        );
        assert_eq!(
            ingest(
                &mut r,
                "zigbee2mqtt/button",
                r#"{"action":"single"}"#,
                &mut out
            ),
            Verdict::Ignored("no_measurement")
        );
        assert!(out.is_empty());
        assert_eq!(
            ingest(&mut r, "zigbee2mqtt/t", "{oops", &mut out),
            Verdict::Rejected("not_json")
        );
        assert_eq!(route_of(&out[0]), Some(&b"zigbee"[..]));
        out.clear();
        out.clear();
        assert_eq!(
            ingest(&mut r, "other/topic", "{}", &mut out),
            Verdict::Ignored("unrouted")
        );
        assert!(out.is_empty());
    }

    #[test]
    fn overlapping_routes_go_by_order_and_subscribe_once() {
        let mut shelly = route(
            "shelly",
            &["+/events/rpc"],
            &[("temperature", "/params/temperature:0/tC")],
        );
        shelly.timestamp = String::new();
        let mut r = Router::new(vec![
            pipeline(route(
                "zigbee",
                &["zigbee2mqtt/#"],
                &[("temperature", "/temperature")],
            )),
            pipeline(shelly),
            pipeline(route("tasmota", &["tele/+/SENSOR"], &[("t", "/t")])),
        ])
        .unwrap();
        assert_eq!(
            r.topic_filters(),
            ["zigbee2mqtt/#", "+/events/rpc", "tele/+/SENSOR"]
        );
        assert_eq!(r.subscriptions(), ["+/#"]);
        let mut out = Vec::new();
        // Both match: the first route in order takes it.
        ingest(
            &mut r,
            "zigbee2mqtt/events/rpc",
            r#"{"temperature":1}"#,
            &mut out,
        );
        assert_eq!(route_of(&out[0]), Some(&b"zigbee"[..]));
        out.clear();
        let shelly_msg = r#"{"params":{"temperature:0":{"tC":2}}}"#;
        assert_eq!(
            ingest(&mut r, "dev1/events/rpc", shelly_msg, &mut out),
            Verdict::Aggregated
        );
        assert_eq!(route_of(&out[0]), Some(&b"shelly"[..]));
        // Excluded by the first route and matched by no other.
        assert_eq!(
            ingest(&mut r, "zigbee2mqtt/bridge/state", "{}", &mut out),
            Verdict::Ignored("excluded")
        );
        // Brought by the widened subscription, taken by no route.
        assert_eq!(
            ingest(&mut r, "tele/k/STATE", "{}", &mut out),
            Verdict::Ignored("unrouted")
        );
    }

    #[test]
    fn an_exclusion_passes_the_topic_to_the_next_route() {
        let mut all = route(
            "everything-else",
            &["zigbee2mqtt/#"],
            &[("state", "/state")],
        );
        all.exclude.clear();
        let mut r = Router::new(vec![
            pipeline(route(
                "zigbee",
                &["zigbee2mqtt/#"],
                &[("temperature", "/temperature")],
            )),
            pipeline(all),
        ])
        .unwrap();
        let mut out = Vec::new();
        assert_eq!(
            ingest(&mut r, "zigbee2mqtt/bridge/x", r#"{"state":1}"#, &mut out),
            Verdict::Aggregated
        );
        assert_eq!(route_of(&out[0]), Some(&b"everything-else"[..]));
    }

    #[test]
    fn a_route_s_records_carry_its_topics() {
        use crate::pipeline::RouteTopics;
        let topics = RouteTopics {
            raw: Some("raw-zigbee".into()),
            dead_letter: Some("dlq-zigbee".into()),
            ..RouteTopics::default()
        };
        let (name, p) = pipeline(route(
            "zigbee",
            &["zigbee2mqtt/#"],
            &[("temperature", "/temperature")],
        ));
        let mut r = Router::new(vec![
            (name, p.with_topics(topics)),
            pipeline(route("tasmota", &["tele/+/SENSOR"], &[("t", "/t")])),
        ])
        .unwrap();
        let mut out = Vec::new();
        ingest(
            &mut r,
            "zigbee2mqtt/a",
            r#"{"ts":1733162400,"temperature":1}"#,
            &mut out,
        );
        ingest(
            &mut r,
            "zigbee2mqtt/a",
            r#"{"ts":1733162411,"temperature":2}"#,
            &mut out,
        );
        ingest(&mut r, "zigbee2mqtt/a", "{", &mut out);
        ingest(
            &mut r,
            "tele/k/SENSOR",
            r#"{"ts":1733162400,"t":1}"#,
            &mut out,
        );
        let got: Vec<(Stream, Option<&str>)> =
            out.iter().map(|o| (o.stream, o.topic.as_deref())).collect();
        assert_eq!(
            got,
            [
                (Stream::Raw, Some("raw-zigbee")),
                (Stream::Aggregate, None),
                (Stream::Raw, Some("raw-zigbee")),
                (Stream::DeadLetter, Some("dlq-zigbee")),
                (Stream::Raw, None),
            ]
        );
    }

    #[test]
    fn duplicate_and_empty_names_are_refused() {
        let e = Router::new(vec![
            pipeline(route("a", &["x/+"], &[("t", "/t")])),
            pipeline(route("a", &["y/+"], &[("t", "/t")])),
        ])
        .unwrap_err();
        assert_eq!(e, RouterError::SameName("a".into()));
        assert_eq!(
            Router::new(vec![pipeline(route("", &["x/+"], &[("t", "/t")]))]).unwrap_err(),
            RouterError::EmptyName
        );
        assert_eq!(Router::new(Vec::new()).unwrap_err(), RouterError::Empty);
    }

    #[test]
    fn windows_are_saved_and_restored_per_route() {
        let mut r = router();
        let mut out = Vec::new();
        ingest(
            &mut r,
            "zigbee2mqtt/t",
            r#"{"ts":1733162400,"temperature":1,"humidity":2}"#,
            &mut out,
        );
        ingest(
            &mut r,
            "tele/k/SENSOR",
            r#"{"ts":1733162400,"SHT3X":{"Temperature":3}}"#,
            &mut out,
        );
        assert_eq!((r.open_windows(), r.sensors()), (3, 3));
        let mut saved = r.snapshot();
        assert_eq!(saved.keys().collect::<Vec<_>>(), ["tasmota", "zigbee"]);
        saved.insert("gone".into(), saved["tasmota"].clone());
        let mut fresh = router();
        let restored = fresh.restore(saved.clone(), NOW, &mut out).unwrap();
        assert_eq!(
            restored,
            Restored {
                unknown_routes: vec!["gone".into()],
                changed_routes: vec![]
            }
        );
        assert_eq!(fresh.open_windows(), 3);
        out.clear();
        fresh.drain(&mut out);
        assert_eq!(out.len(), 3);

        // Saved under a route whose measurements changed: one became several (tasmota's
        // series under zigbee's name), several became one (zigbee's under tasmota's). Those
        // series are left out and counted, not emitted with a wrong name.
        let (zigbee, tasmota) = (saved["zigbee"].clone(), saved["tasmota"].clone());
        saved.insert("zigbee".into(), tasmota);
        saved.insert("tasmota".into(), zigbee);
        saved.remove("gone");
        let mut fresh = router();
        out.clear();
        let restored = fresh.restore(saved, NOW, &mut out).unwrap();
        assert_eq!(
            restored.changed_routes,
            [("tasmota".to_owned(), 2), ("zigbee".to_owned(), 1)]
        );
        assert_eq!(fresh.open_windows(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn the_tutorial_route_is_a_router_of_one() {
        let p = Pipeline::new(
            DecodeOptions::default(),
            WindowOptions::default(),
            &EncodeOptions::default(),
            false,
        )
        .unwrap();
        let mut r = Router::new(vec![("default".into(), p)]).unwrap();
        assert_eq!(r.topic_filters(), ["sensors/+/temperature"]);
        let mut out = Vec::new();
        assert_eq!(
            ingest(
                &mut r,
                "sensors/a/temperature",
                r#"{"ts":1733162400,"value":1}"#,
                &mut out
            ),
            Verdict::Aggregated
        );
        assert!(out[0].record.headers.is_empty());
        assert_eq!(
            ingest(&mut r, "other", r#"{"value":1}"#, &mut out),
            Verdict::Rejected("topic_mismatch")
        );
    }
}
