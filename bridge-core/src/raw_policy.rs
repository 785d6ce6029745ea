//! Which readings the raw stream carries, for uplinks metered by the byte.
//!
//! The aggregates reflect every reading whatever the policy: only a reading that was added to a
//! window can be left out of the raw stream (a late or refused reading is in no aggregate, so
//! it is always sent). Decisions use event time, so a replay of the same readings decides the
//! same way; the last reading sent per sensor is kept in memory only, so after a restart each
//! sensor's first reading is sent. At most `max_sensors` are remembered: when full, sensors
//! quiet for longer than the interval are forgotten, and a reading of a sensor that still finds
//! no room is sent.
//!
//! - [`RawPolicy::All`]: every reading.
//! - [`RawPolicy::Deadband`]: report by exception, as process historians do: a reading is sent
//!   when its value differs from the last one sent for its sensor by more than an absolute or a
//!   relative threshold, or when `max_interval_ms` of event time has passed since that one.
//! - [`RawPolicy::Sample`]: the first reading of each sensor in each `interval_ms` slice of
//!   event time (slices aligned to the epoch, as windows are); a reading out of order, in a
//!   slice before the last one sent, is left out, so that no slice is sent twice.

use std::collections::HashMap;

/// See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub enum RawPolicy {
    All,
    Deadband {
        /// Sent when `|value - last| > absolute` (0: this test is off).
        absolute: f64,
        /// Sent when `|value - last| > relative * |last|` (0: this test is off).
        relative: f64,
        max_interval_ms: i64,
    },
    Sample {
        interval_ms: i64,
    },
}

/// Why a reading was left out of the raw stream: a metrics label.
pub const DEADBAND: &str = "deadband";
/// See [`DEADBAND`].
pub const SAMPLE: &str = "sample";
/// Every reason a reading is left out of the raw stream.
pub const REASONS: [&str; 2] = [DEADBAND, SAMPLE];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RawPolicyError {
    #[error("the deadband needs a threshold: set an absolute or a relative one above 0")]
    NoThreshold,
    #[error("thresholds must be finite and not negative")]
    BadThreshold,
    #[error("the interval must be at least 1 ms")]
    BadInterval,
}

/// The last reading sent for a sensor.
#[derive(Debug, Clone, Copy)]
struct Sent {
    ts_ms: i64,
    value: f64,
}

/// Applies a [`RawPolicy`], remembering per sensor what it needs.
#[derive(Debug)]
pub struct RawFilter {
    policy: RawPolicy,
    last: HashMap<Box<str>, Sent>,
    /// Sensors remembered at most; a reading of a sensor beyond it is sent (never lost).
    max_sensors: usize,
}

impl RawFilter {
    pub fn new(policy: RawPolicy, max_sensors: usize) -> Result<Self, RawPolicyError> {
        match policy {
            RawPolicy::All => {}
            RawPolicy::Deadband {
                absolute,
                relative,
                max_interval_ms,
            } => {
                if !(absolute.is_finite() && relative.is_finite())
                    || absolute < 0.0
                    || relative < 0.0
                {
                    return Err(RawPolicyError::BadThreshold);
                }
                if absolute == 0.0 && relative == 0.0 {
                    return Err(RawPolicyError::NoThreshold);
                }
                if max_interval_ms < 1 {
                    return Err(RawPolicyError::BadInterval);
                }
            }
            RawPolicy::Sample { interval_ms } => {
                if interval_ms < 1 {
                    return Err(RawPolicyError::BadInterval);
                }
            }
        }
        Ok(Self {
            policy,
            last: HashMap::new(),
            max_sensors,
        })
    }

    /// Whether the raw stream carries this reading: `Ok(())`, or the reason it is left out.
    pub fn admit(&mut self, sensor: &str, ts_ms: i64, value: f64) -> Result<(), &'static str> {
        let (skip_reason, send) = match self.policy {
            RawPolicy::All => return Ok(()),
            RawPolicy::Deadband {
                absolute,
                relative,
                max_interval_ms,
            } => (
                DEADBAND,
                self.last.get(sensor).is_none_or(|last| {
                    let change = (value - last.value).abs();
                    (absolute > 0.0 && change > absolute)
                        || (relative > 0.0 && change > relative * last.value.abs())
                        || ts_ms.saturating_sub(last.ts_ms) >= max_interval_ms
                }),
            ),
            RawPolicy::Sample { interval_ms } => (
                SAMPLE,
                self.last.get(sensor).is_none_or(|last| {
                    ts_ms.div_euclid(interval_ms) > last.ts_ms.div_euclid(interval_ms)
                }),
            ),
        };
        if !send {
            return Err(skip_reason);
        }
        if self.last.len() >= self.max_sensors && !self.last.contains_key(sensor) {
            self.forget_before(ts_ms);
        }
        let remembered = self.last.len();
        match self.last.get_mut(sensor) {
            // The heartbeat counts from the newest event time sent, whatever the order.
            Some(last) => {
                *last = Sent {
                    ts_ms: ts_ms.max(last.ts_ms),
                    value,
                }
            }
            None if remembered < self.max_sensors => {
                self.last.insert(sensor.into(), Sent { ts_ms, value });
            }
            // Nothing remembered: the next reading is sent too.
            None => {}
        }
        Ok(())
    }

    /// Forgets the sensors whose last reading sent is more than the policy's interval before
    /// `ts_ms` (sensors gone quiet, as the windower forgets them). A sensor's next reading that
    /// far on is sent anyway, so this changes no decision, except for a sensor whose clock lags
    /// the others by more than the interval: it gets one more reading sent.
    fn forget_before(&mut self, ts_ms: i64) {
        let interval = match self.policy {
            RawPolicy::All => return,
            RawPolicy::Deadband {
                max_interval_ms, ..
            } => max_interval_ms,
            RawPolicy::Sample { interval_ms } => interval_ms,
        };
        let horizon = ts_ms.saturating_sub(interval);
        self.last.retain(|_, last| last.ts_ms >= horizon);
    }
}

/// A daily time window in a zone, such as an uplink's off-peak hours: `22:00-06:00` runs past
/// midnight. The deferred raw policy sends raw records only inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    /// Minutes after local midnight: the window holds `start <= t < end`, or, when it runs past
    /// midnight (`end < start`), `t >= start || t < end`.
    start_min: u32,
    end_min: u32,
    zone: chrono_tz::Tz,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DailyWindowError {
    #[error("{0:?} is not a daily window like \"22:00-06:00\" (HH:MM-HH:MM, 24-hour clock)")]
    Syntax(String),
    #[error("{0:?} starts and ends at the same time; leave it empty for any time of day")]
    Empty(String),
}

impl DailyWindow {
    /// Parses `HH:MM-HH:MM`, read in `zone`.
    pub fn parse(text: &str, zone: chrono_tz::Tz) -> Result<Self, DailyWindowError> {
        let syntax = || DailyWindowError::Syntax(text.to_owned());
        let minutes = |hm: &str| -> Option<u32> {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && hm.trim().len() == 5).then_some(h * 60 + m)
        };
        let (a, b) = text.split_once('-').ok_or_else(syntax)?;
        let (start_min, end_min) = (
            minutes(a).ok_or_else(syntax)?,
            minutes(b).ok_or_else(syntax)?,
        );
        if start_min == end_min {
            return Err(DailyWindowError::Empty(text.to_owned()));
        }
        Ok(Self {
            start_min,
            end_min,
            zone,
        })
    }

    /// Whether the wall-clock instant `now_ms` falls inside the window, on the local clock of
    /// its zone (at a daylight-saving change the local clock jumps, and the window with it).
    pub fn contains(&self, now_ms: i64) -> bool {
        use chrono::{TimeZone, Timelike};
        let Some(local) = self.zone.timestamp_millis_opt(now_ms).single() else {
            return false;
        };
        let t = local.hour() * 60 + local.minute();
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&t)
        } else {
            t >= self.start_min || t < self.end_min
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One reading per sensor per 10 s, remembering at most `max_sensors`.
    fn sample_10s(max_sensors: usize) -> RawFilter {
        RawFilter::new(
            RawPolicy::Sample {
                interval_ms: 10_000,
            },
            max_sensors,
        )
        .unwrap()
    }

    fn admitted(f: &mut RawFilter, readings: &[(&str, i64, f64)]) -> Vec<bool> {
        readings
            .iter()
            .map(|(s, ts, v)| f.admit(s, *ts, *v).is_ok())
            .collect()
    }

    #[test]
    fn all_sends_everything() {
        let mut f = RawFilter::new(RawPolicy::All, 10).unwrap();
        assert_eq!(
            admitted(&mut f, &[("a", 0, 1.0), ("a", 0, 1.0)]),
            [true, true]
        );
    }

    #[test]
    fn deadband_sends_changes_beyond_the_threshold_and_a_heartbeat() {
        let policy = RawPolicy::Deadband {
            absolute: 0.5,
            relative: 0.0,
            max_interval_ms: 10_000,
        };
        let mut f = RawFilter::new(policy, 10).unwrap();
        let got = admitted(
            &mut f,
            &[
                ("a", 0, 20.0),      // first: sent
                ("a", 1_000, 20.4),  // within 0.5 of 20.0
                ("a", 2_000, 20.5),  // exactly 0.5: not more than
                ("a", 3_000, 20.51), // more than 0.5 from 20.0: sent
                ("a", 4_000, 20.2),  // 0.31 from 20.51
                ("b", 4_000, 20.2),  // another sensor: its own first
                ("a", 13_000, 20.3), // 10 s after the last sent: heartbeat
                ("a", 14_000, 19.7), // 0.6 below 20.3: sent
            ],
        );
        assert_eq!(got, [true, false, false, true, false, true, true, true]);
    }

    #[test]
    fn relative_deadband_scales_with_the_value() {
        let policy = RawPolicy::Deadband {
            absolute: 0.0,
            relative: 0.01,
            max_interval_ms: 60_000,
        };
        let mut f = RawFilter::new(policy, 10).unwrap();
        let got = admitted(
            &mut f,
            &[
                ("a", 0, 1000.0),
                ("a", 1, 1009.0),
                ("a", 2, 1011.0),
                ("b", 0, -50.0),
                ("b", 1, -50.6),
            ],
        );
        assert_eq!(got, [true, false, true, true, true]);
    }

    #[test]
    fn sample_sends_the_first_reading_of_each_slice() {
        let mut f = sample_10s(10);
        let got = admitted(
            &mut f,
            &[
                ("a", 5_000, 1.0),
                ("a", 9_999, 1.0),
                ("a", 10_000, 1.0),
                ("a", 19_000, 1.0),
                ("a", 8_000, 1.0), // out of order, an earlier slice: already sent
                ("a", 20_000, 1.0),
                ("b", -1, 1.0), // before the epoch
                ("b", 0, 1.0),  // the next slice
            ],
        );
        assert_eq!(got, [true, false, true, false, false, true, true, true]);
    }

    #[test]
    fn quiet_sensors_are_forgotten_to_make_room() {
        let mut f = sample_10s(1);
        let got = admitted(
            &mut f,
            &[
                ("a", 0, 1.0),
                ("b", 25_000, 1.0), // a's last is over 10 s before: forgotten, b remembered
                ("b", 26_000, 1.0), // so b is thinned
                ("a", 27_000, 1.0), // a is new again, and b is recent: a is not remembered
                ("a", 28_000, 1.0), // so a is sent again
            ],
        );
        assert_eq!(got, [true, true, false, true, true]);
    }

    #[test]
    fn sensors_beyond_the_bound_are_always_sent() {
        let mut f = sample_10s(1);
        let got = admitted(
            &mut f,
            &[("a", 0, 1.0), ("b", 0, 1.0), ("b", 1, 1.0), ("a", 1, 1.0)],
        );
        assert_eq!(got, [true, true, true, false]);
    }

    #[test]
    fn bad_policies_are_refused() {
        let deadband = |absolute, relative, max_interval_ms| RawPolicy::Deadband {
            absolute,
            relative,
            max_interval_ms,
        };
        for (p, e) in [
            (deadband(0.0, 0.0, 1), RawPolicyError::NoThreshold),
            (deadband(-1.0, 0.0, 1), RawPolicyError::BadThreshold),
            (deadband(f64::NAN, 0.0, 1), RawPolicyError::BadThreshold),
            (deadband(1.0, 0.0, 0), RawPolicyError::BadInterval),
            (
                RawPolicy::Sample { interval_ms: 0 },
                RawPolicyError::BadInterval,
            ),
        ] {
            assert_eq!(RawFilter::new(p, 1).unwrap_err(), e);
        }
    }

    #[test]
    fn daily_windows_in_a_zone_and_past_midnight() {
        // 2024-12-02T21:30:00Z: 22:30 in Berlin (UTC+1 in winter).
        let t = 1_733_175_000_000;
        let hour = 3_600_000;
        let night = DailyWindow::parse("22:00-06:00", chrono_tz::Europe::Berlin).unwrap();
        assert!(night.contains(t));
        assert!(night.contains(t + 7 * hour), "05:30 the next morning");
        assert!(!night.contains(t + 8 * hour), "06:30");
        assert!(!night.contains(t - hour), "21:30");
        let utc = DailyWindow::parse("22:00-06:00", chrono_tz::UTC).unwrap();
        assert!(!utc.contains(t), "21:30 UTC");
        let day = DailyWindow::parse("09:00-17:30", chrono_tz::UTC).unwrap();
        assert!(day.contains(t - 5 * hour), "16:30");
        assert!(!day.contains(t - 4 * hour), "17:30 is the end, outside");
        for bad in [
            "22-06",
            "22:00",
            "25:00-06:00",
            "22:00-06:60",
            "2:00-06:00",
            "",
        ] {
            assert!(
                matches!(
                    DailyWindow::parse(bad, chrono_tz::UTC),
                    Err(DailyWindowError::Syntax(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            DailyWindow::parse("06:00-06:00", chrono_tz::UTC),
            Err(DailyWindowError::Empty("06:00-06:00".into()))
        );
    }
}
