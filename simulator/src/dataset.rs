//! The readings the simulator sends: pure and deterministic for a given seed, so a test can
//! regenerate exactly what was published and compute the expected aggregates independently.

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::profile::Profile;

/// How values are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Values {
    /// A bounded random walk between 15 and 35 degrees, two decimals.
    Walk,
    /// The tutorial's uniform integers 0..=100.
    Uniform,
}

/// Rates (0.0..=1.0) of injected trouble.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Event time moved back by less than the grace period: still aggregated.
    pub out_of_order: f64,
    /// Event time moved back by 15 to 30 s: late for 10 s windows with 1 s grace.
    pub late: f64,
    /// Payload replaced by one the bridge must reject.
    pub malformed: f64,
    /// The same message published twice.
    pub duplicate: f64,
}

#[derive(Debug, Clone)]
pub struct DatasetOptions {
    pub sensors: u32,
    /// Readings per sensor per second of event time.
    pub rate: f64,
    /// Event time of the first reading, epoch ms.
    pub start_ms: i64,
    pub seed: u64,
    pub values: Values,
    pub faults: Faults,
    /// `{sensor}` is replaced by the sensor id.
    pub topic_template: String,
}

/// What kind of message a reading became.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Normal,
    OutOfOrder,
    Late,
    Malformed,
    /// A family's status message, not a reading ([`Profile::chatter`]).
    Chatter,
}

/// One message to publish (published twice when `duplicate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub sensor: String,
    pub topic: String,
    pub ts_ms: i64,
    pub value: f64,
    pub kind: Kind,
    pub duplicate: bool,
    /// The payload, for the text families (JSON or a number); empty for Sparkplug B.
    pub payload: String,
    /// Sparkplug B's protobuf payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<Vec<u8>>,
}

impl Message {
    /// The bytes published.
    pub fn bytes(&self) -> &[u8] {
        self.binary.as_deref().unwrap_or(self.payload.as_bytes())
    }
}

/// An endless, deterministic stream of messages, round-robin over the sensors.
pub struct Dataset {
    opts: DatasetOptions,
    profile: Profile,
    /// Messages due before the next reading: chatter after the reading just returned, and for
    /// Sparkplug B the births and the reading itself.
    pending: std::collections::VecDeque<Message>,
    /// Sparkplug B's births and sequence numbers.
    sparkplug: Option<crate::sparkplug::Nodes>,
    rng: ChaCha8Rng,
    /// Per sensor: the last value, for the random walk.
    last: Vec<f64>,
    n: u64,
}

impl Dataset {
    pub fn new(opts: DatasetOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let last = (0..opts.sensors)
            .map(|_| rng.random_range(18.0..30.0))
            .collect();
        Self {
            opts,
            profile: Profile::Tutorial,
            pending: Default::default(),
            sparkplug: None,
            rng,
            last,
            n: 0,
        }
    }

    /// The same readings in the topics and payloads of `profile`, with one chatter message
    /// after every [`CHATTER_EVERY`] readings.
    pub fn with_profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self.sparkplug = (profile == Profile::Sparkplug)
            .then(|| crate::sparkplug::Nodes::new(self.opts.sensors));
        self
    }

    pub fn sensor_id(k: u32) -> String {
        format!("Sensor{}", k + 1)
    }

    fn value(&mut self, k: usize) -> f64 {
        match self.opts.values {
            Values::Uniform => f64::from(self.rng.random_range(0..=100u32)),
            Values::Walk => {
                let step: f64 = self.rng.random_range(-0.5..0.5);
                let v = (self.last[k] + step).clamp(15.0, 35.0);
                let v = (v * 100.0).round() / 100.0;
                self.last[k] = v;
                v
            }
        }
    }
}

impl Iterator for Dataset {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        let sensors = u64::from(self.opts.sensors.max(1));
        let k = (self.n % sensors) as usize;
        let round = self.n / sensors;
        self.n += 1;
        let period_ms = (1000.0 / self.opts.rate).max(1.0);
        // Sensors are spread over the period so they do not all report on the same millisecond.
        let offset = (k as f64 * period_ms / sensors as f64) as i64;
        let mut ts_ms = self.opts.start_ms + (round as f64 * period_ms) as i64 + offset;
        let value = self.value(k);
        let f = self.opts.faults;
        let roll: f64 = self.rng.random();
        let kind = if roll < f.malformed {
            Kind::Malformed
        } else if roll < f.malformed + f.late {
            ts_ms -= self.rng.random_range(15_000..30_000);
            Kind::Late
        } else if roll < f.malformed + f.late + f.out_of_order {
            ts_ms -= self.rng.random_range(1..900);
            Kind::OutOfOrder
        } else {
            Kind::Normal
        };
        let duplicate = self.rng.random::<f64>() < f.duplicate;
        let sensor = Self::sensor_id(k as u32);
        let malformed = (kind == Kind::Malformed)
            .then(|| MALFORMED[self.rng.random_range(0..MALFORMED.len())].to_owned());
        let chatter = self.n % CHATTER_EVERY == 0;
        if let Some(nodes) = self.sparkplug.as_mut() {
            let message = |topic, payload: String, binary, kind| Message {
                sensor: sensor.clone(),
                topic,
                ts_ms,
                value: if kind == Kind::Chatter { 0.0 } else { value },
                kind,
                duplicate: duplicate && kind != Kind::Chatter,
                payload,
                binary,
            };
            for (topic, bytes, reading) in nodes.reading(k as u32, &sensor, ts_ms, value) {
                // A malformed reading is sent as text where its protobuf would have gone.
                let m = match (&malformed, reading) {
                    (Some(text), true) => message(topic, text.clone(), None, kind),
                    (None, true) => message(topic, String::new(), Some(bytes), kind),
                    (_, false) => message(topic, String::new(), Some(bytes), Kind::Chatter),
                };
                self.pending.push_back(m);
            }
            if chatter {
                if let Some((topic, bytes, _)) = nodes.chatter(k as u32, ts_ms) {
                    let m = message(topic, String::new(), Some(bytes), Kind::Chatter);
                    self.pending.push_back(m);
                }
            }
            return self.pending.pop_front();
        }
        let payload = malformed.unwrap_or_else(|| self.profile.payload(ts_ms, value));
        let reading = Message {
            topic: self
                .profile
                .topic(&sensor)
                .unwrap_or_else(|| self.opts.topic_template.replace("{sensor}", &sensor)),
            sensor: sensor.clone(),
            ts_ms,
            value,
            kind,
            duplicate,
            payload,
            binary: None,
        };
        if chatter {
            if let Some((topic, payload)) =
                self.profile.chatter(&sensor, ts_ms, self.n / CHATTER_EVERY)
            {
                self.pending.push_back(Message {
                    sensor,
                    topic,
                    ts_ms,
                    value: 0.0,
                    kind: Kind::Chatter,
                    duplicate: false,
                    payload,
                    binary: None,
                });
            }
        }
        Some(reading)
    }
}

/// A family's status message follows every this many readings.
pub const CHATTER_EVERY: u64 = 20;

/// Payloads the bridge must reject, one per common failure.
const MALFORMED: [&str; 4] = [
    "not json at all",
    r#"{"ts": "2024-06-10T06:13:20"}"#,
    r#"{"ts": "2024-06-10T06:13:20", "value": "hot"}"#,
    r#"{"ts": "yesterday", "value": 21.5}"#,
];

/// The tutorial's payload: `{"ts": "<isoformat()>", "value": v}`. Like Python's
/// `datetime.isoformat()`, microseconds are written only when not zero.
pub fn payload(ts_ms: i64, value: f64) -> String {
    let ts = DateTime::<Utc>::from_timestamp_millis(ts_ms)
        .expect("simulated times are in range")
        .naive_utc();
    let iso = if ts_ms % 1000 == 0 {
        ts.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        ts.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    };
    if value.fract() == 0.0 {
        format!(r#"{{"ts": "{iso}", "value": {}}}"#, value as i64)
    } else {
        format!(r#"{{"ts": "{iso}", "value": {value}}}"#)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seed: u64) -> DatasetOptions {
        DatasetOptions {
            sensors: 3,
            rate: 4.0,
            start_ms: 1_718_000_000_000,
            seed,
            values: Values::Walk,
            faults: Faults::default(),
            topic_template: "sensors/{sensor}/temperature".into(),
        }
    }

    #[test]
    fn same_seed_same_data() {
        let a: Vec<Message> = Dataset::new(opts(7)).take(50).collect();
        let b: Vec<Message> = Dataset::new(opts(7)).take(50).collect();
        let c: Vec<Message> = Dataset::new(opts(8)).take(50).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn round_robin_with_advancing_event_time() {
        let m: Vec<Message> = Dataset::new(opts(1)).take(6).collect();
        let sensors: Vec<&str> = m.iter().map(|m| m.sensor.as_str()).collect();
        assert_eq!(
            sensors,
            ["Sensor1", "Sensor2", "Sensor3", "Sensor1", "Sensor2", "Sensor3"]
        );
        assert_eq!(m[3].ts_ms - m[0].ts_ms, 250);
        assert_eq!(m[0].topic, "sensors/Sensor1/temperature");
        assert!(m.iter().all(|m| (15.0..=35.0).contains(&m.value)));
    }

    #[test]
    fn tutorial_payload_shape() {
        assert_eq!(
            payload(1_718_000_000_000, 42.0),
            r#"{"ts": "2024-06-10T06:13:20", "value": 42}"#
        );
        assert_eq!(
            payload(1_718_000_000_250, 21.5),
            r#"{"ts": "2024-06-10T06:13:20.250000", "value": 21.5}"#
        );
    }

    #[test]
    fn profiles_keep_the_readings_and_add_chatter() {
        let tutorial: Vec<Message> = Dataset::new(opts(5)).take(40).collect();
        let zigbee: Vec<Message> = Dataset::new(opts(5))
            .with_profile(Profile::Zigbee2mqtt)
            .take(42)
            .collect();
        let readings: Vec<&Message> = zigbee.iter().filter(|m| m.kind != Kind::Chatter).collect();
        assert_eq!(readings.len(), 40);
        assert_eq!(zigbee[20].kind, Kind::Chatter);
        assert_eq!(zigbee[41].kind, Kind::Chatter);
        for (t, z) in tutorial.iter().zip(readings) {
            assert_eq!((t.ts_ms, t.value, &t.sensor), (z.ts_ms, z.value, &z.sensor));
            assert_eq!(z.topic, format!("zigbee2mqtt/{}", z.sensor));
            assert_eq!(z.payload, Profile::Zigbee2mqtt.payload(z.ts_ms, z.value));
        }
    }

    #[test]
    fn faults_are_injected_at_their_rates() {
        let mut o = opts(3);
        o.faults = Faults {
            out_of_order: 0.1,
            late: 0.1,
            malformed: 0.1,
            duplicate: 0.1,
        };
        let m: Vec<Message> = Dataset::new(o).take(10_000).collect();
        let count = |k| m.iter().filter(|x| x.kind == k).count();
        for k in [Kind::OutOfOrder, Kind::Late, Kind::Malformed] {
            assert!((800..1200).contains(&count(k)), "{k:?}: {}", count(k));
        }
        let dups = m.iter().filter(|x| x.duplicate).count();
        assert!((800..1200).contains(&dups));
    }
}
