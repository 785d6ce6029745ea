//! Per-sensor tumbling windows in event time: the downsampling step.
//!
//! Semantics (exactly Quix Streams' default "key" closing strategy, plus an idle flush):
//! - Windows of `size` are aligned to the Unix epoch: a reading at `ts` belongs to
//!   `[start, start + size)` with `start = ts - ts mod size`.
//! - Per sensor `k`, `W_k` is the largest event time seen so far. A window closes, and is emitted,
//!   once `W_k >= end + grace`.
//! - A reading whose window has closed is late: it changes no aggregate, and the caller still
//!   sends it to the raw stream.
//! - After `idle_timeout` of wall-clock time without a reading from `k`, its open windows are
//!   closed and emitted; later readings for them are late. This is the only use of the wall
//!   clock, and it enters as an argument.
//!
//! The windower is a plain synchronous state machine: `record` + `flush_idle` + `drain`, each
//! appending closed windows to a caller's `Vec`, after the habit of Vector's aggregate transform.
//! Memory is bounded by `max_sensors` and `max_open_windows`; when a bound is hit the reading is
//! refused for aggregation with a reason (its event time still advances the sensor's watermark:
//! it is a valid observation of time, only its value is left out).

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use smol_str::SmolStr;

use thiserror::Error;

use crate::aggregate::Aggregate;

/// Window parameters, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowOptions {
    pub size_ms: i64,
    pub grace_ms: i64,
    pub idle_timeout_ms: i64,
    /// Sensors tracked at once. At the limit, sensors with no open window are forgotten first
    /// (least recently seen first); only if none can be forgotten is a new sensor refused.
    pub max_sensors: usize,
    /// Open windows over all sensors. Per sensor at most `grace / size + 2` windows are open,
    /// so this bounds memory even when a large grace is configured.
    pub max_open_windows: usize,
}

impl Default for WindowOptions {
    fn default() -> Self {
        Self {
            size_ms: 10_000,
            grace_ms: 1_000,
            idle_timeout_ms: 30_000,
            max_sensors: 100_000,
            max_open_windows: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowConfigError {
    #[error("window size must be at least 1 ms")]
    Size,
    #[error("grace must not be negative")]
    Grace,
    #[error("idle timeout must be at least 1 ms")]
    Idle,
    #[error("max sensors and max open windows must be at least 1")]
    Limits,
}

/// Why a valid reading was left out of the aggregates. The reading itself is not lost: the
/// caller still sends it to the raw stream and counts it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error(
        "{limit} sensors are tracked and none is idle enough to forget; raise window.max_sensors"
    )]
    TooManySensors { limit: usize },
    #[error("{limit} windows are open; raise window.max_open_windows or lower window.grace")]
    TooManyOpenWindows { limit: usize },
}

impl Refusal {
    /// Every code [`Refusal::reason`] returns.
    pub const REASONS: [&'static str; 2] = ["too_many_sensors", "too_many_open_windows"];

    /// A short, stable code, safe as a metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::TooManySensors { .. } => "too_many_sensors",
            Refusal::TooManyOpenWindows { .. } => "too_many_open_windows",
        }
    }
}

/// What happened to one reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Added to the open window starting at `window_start`.
    Added { window_start: i64 },
    /// Its window `[window_start, window_start + size)` had already closed.
    Late { window_start: i64 },
    /// Left out of the aggregates to stay within a memory bound.
    Refused(Refusal),
}

/// Why a window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The sensor's event time passed `end + grace`.
    Watermark,
    /// The sensor sent nothing for `idle_timeout` of wall-clock time.
    Idle,
    /// The caller drained every open window (shutdown without saved state, or tests).
    Drain,
}

/// A closed window, ready to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    /// Ids up to 23 bytes are stored inline; longer ones are shared, so cloning is cheap.
    pub sensor: SmolStr,
    pub start_ms: i64,
    pub end_ms: i64,
    pub agg: Aggregate,
    pub cause: CloseCause,
}

/// The state of one sensor.
#[derive(Debug, Clone)]
struct SensorState {
    /// `W_k`: the largest event time seen.
    watermark: i64,
    /// Windows ending at or before this were closed by an idle flush or drain; readings for
    /// them are late even though the watermark alone would still admit them.
    flushed_end: i64,
    /// Wall clock of the latest reading, for the idle flush.
    last_seen_ms: i64,
    /// Open windows by start, ascending. Usually one or two (grace < size), so they are kept
    /// inline in a sorted small vector: no tree, no separate allocation to chase.
    windows: SmallVec<[(i64, Aggregate); 2]>,
}

/// Per-sensor tumbling windows. See the module documentation for the exact semantics.
#[derive(Debug, Clone)]
pub struct Windower {
    opts: WindowOptions,
    /// Keyed by sensor id; hashbrown's default hasher (foldhash) is fast and seeded per process,
    /// so ids chosen by a hostile client cannot force collisions. SmolStr keeps typical ids
    /// inline in the table, sparing a pointer chase per lookup with thousands of sensors.
    sensors: HashMap<SmolStr, SensorState>,
    open_windows: usize,
    forgotten_sensors: u64,
    /// Counts the events after which a sensor may have no open window, and so may be
    /// forgotten: a window closing, or a new sensor refused its first window.
    quieting: u64,
    /// `quieting` when a scan for sensors to forget last found none. Until it moves, another
    /// scan would find none either: at `max_sensors` with every sensor active, each new sensor
    /// was refused after a scan of all of them (a flood of new series crawled at 9,000
    /// messages/s).
    fruitless_scan: Option<u64>,
}

impl Windower {
    pub fn new(opts: WindowOptions) -> Result<Self, WindowConfigError> {
        if opts.size_ms < 1 {
            return Err(WindowConfigError::Size);
        }
        if opts.grace_ms < 0 {
            return Err(WindowConfigError::Grace);
        }
        if opts.idle_timeout_ms < 1 {
            return Err(WindowConfigError::Idle);
        }
        if opts.max_sensors == 0 || opts.max_open_windows == 0 {
            return Err(WindowConfigError::Limits);
        }
        Ok(Self {
            opts,
            sensors: HashMap::default(),
            open_windows: 0,
            forgotten_sensors: 0,
            quieting: 0,
            fruitless_scan: None,
        })
    }

    pub fn options(&self) -> &WindowOptions {
        &self.opts
    }

    /// The start of the window holding `ts_ms`.
    pub fn window_start(&self, ts_ms: i64) -> i64 {
        ts_ms - ts_ms.rem_euclid(self.opts.size_ms)
    }

    /// Adds one reading of `sensor` at event time `ts_ms`, received at wall-clock `now_ms`.
    /// Windows it closes are appended to `out`, oldest first.
    pub fn record(
        &mut self,
        sensor: &str,
        ts_ms: i64,
        value: f64,
        now_ms: i64,
        out: &mut Vec<ClosedWindow>,
    ) -> Admission {
        let size = self.opts.size_ms;
        let grace = self.opts.grace_ms;
        let window_start = self.window_start(ts_ms);
        let window_end = window_start.saturating_add(size);

        if !self.sensors.contains_key(sensor) {
            if let Err(refusal) = self.insert_sensor(sensor, ts_ms, now_ms) {
                return Admission::Refused(refusal);
            }
        }
        let Some((key, state)) = self.sensors.get_key_value_mut(sensor) else {
            unreachable!("the sensor was inserted above");
        };
        state.last_seen_ms = now_ms;

        // `ts < end` always, so this reading never closes its own window: checking lateness
        // against the watermark before or after raising it gives the same answer.
        if window_end <= state.watermark.saturating_sub(grace) || window_end <= state.flushed_end {
            return Admission::Late { window_start };
        }

        if ts_ms > state.watermark {
            state.watermark = ts_ms;
            let closed = close_by_watermark(key, state, size, grace, out);
            self.open_windows -= closed;
            self.quieting += closed as u64;
        }

        match state
            .windows
            .binary_search_by_key(&window_start, |(s, _)| *s)
        {
            Ok(i) => state.windows[i].1.add(value),
            Err(_) if self.open_windows >= self.opts.max_open_windows => {
                self.quieting += 1;
                return Admission::Refused(Refusal::TooManyOpenWindows {
                    limit: self.opts.max_open_windows,
                });
            }
            Err(i) => {
                state
                    .windows
                    .insert(i, (window_start, Aggregate::of(value)));
                self.open_windows += 1;
            }
        }
        Admission::Added { window_start }
    }

    /// Makes room for and inserts a new sensor.
    fn insert_sensor(&mut self, sensor: &str, ts_ms: i64, now_ms: i64) -> Result<(), Refusal> {
        if self.sensors.len() >= self.opts.max_sensors {
            if self.fruitless_scan != Some(self.quieting) {
                self.forget_quiet_sensors();
            }
            if self.sensors.len() >= self.opts.max_sensors {
                self.fruitless_scan = Some(self.quieting);
                return Err(Refusal::TooManySensors {
                    limit: self.opts.max_sensors,
                });
            }
        }
        self.sensors.insert(
            SmolStr::new(sensor),
            SensorState {
                watermark: ts_ms,
                flushed_end: i64::MIN,
                last_seen_ms: now_ms,
                windows: SmallVec::new(),
            },
        );
        Ok(())
    }

    /// Forgets the least recently seen sensors that have no open window: up to a sixteenth of
    /// the limit at once, so the scan is paid rarely. A forgotten sensor that comes back starts
    /// afresh, so a reading for a window it already emitted would be aggregated again; only
    /// sensors silent the longest are chosen to make that unlikely, and each is counted.
    fn forget_quiet_sensors(&mut self) {
        let mut quiet: Vec<(i64, SmolStr)> = self
            .sensors
            .iter()
            .filter(|(_, s)| s.windows.is_empty())
            .map(|(k, s)| (s.last_seen_ms, k.clone()))
            .collect();
        let n = (self.opts.max_sensors / 16).clamp(1, quiet.len().max(1));
        if quiet.len() > n {
            quiet.select_nth_unstable_by_key(n - 1, |(seen, _)| *seen);
            quiet.truncate(n);
        }
        for (_, key) in quiet {
            self.sensors.remove(&key);
            self.forgotten_sensors += 1;
        }
    }

    /// Closes every open window of sensors silent for `idle_timeout` as of wall-clock `now_ms`.
    pub fn flush_idle(&mut self, now_ms: i64, out: &mut Vec<ClosedWindow>) {
        let idle = self.opts.idle_timeout_ms;
        for (key, state) in self.sensors.iter_mut() {
            if !state.windows.is_empty() && now_ms.saturating_sub(state.last_seen_ms) >= idle {
                let closed = close_all(key, state, self.opts.size_ms, CloseCause::Idle, out);
                self.open_windows -= closed;
                self.quieting += closed as u64;
            }
        }
    }

    /// Closes every open window of every sensor (cause [`CloseCause::Drain`]).
    pub fn drain(&mut self, out: &mut Vec<ClosedWindow>) {
        for (key, state) in self.sensors.iter_mut() {
            let closed = close_all(key, state, self.opts.size_ms, CloseCause::Drain, out);
            self.open_windows -= closed;
            self.quieting += closed as u64;
        }
    }

    /// Open windows over all sensors.
    pub fn open_windows(&self) -> usize {
        self.open_windows
    }

    /// Sensors currently tracked.
    pub fn sensors(&self) -> usize {
        self.sensors.len()
    }

    /// Sensors forgotten to stay under `max_sensors` since start.
    pub fn forgotten_sensors(&self) -> u64 {
        self.forgotten_sensors
    }
}

/// The saved state of one sensor, for carrying open windows across a restart.
///
/// Every tracked sensor is saved, also those without open windows: their watermark is what
/// keeps a reading for an already emitted window late after the restart, so a window is never
/// emitted twice with different values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorSnapshot {
    pub sensor: String,
    pub watermark: i64,
    pub flushed_end: i64,
    pub last_seen_ms: i64,
    /// Open windows as `(start_ms, aggregate)`, ascending by start.
    pub windows: Vec<(i64, Aggregate)>,
}

/// Why a saved state cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestoreError {
    #[error("saved window state was made with window size {saved_ms} ms, now {now_ms} ms; remove the state file to start afresh (its open windows are then lost)")]
    SizeChanged { saved_ms: i64, now_ms: i64 },
    #[error("saved window state is inconsistent: {0}")]
    Invalid(String),
}

/// The whole windower state: what `Windower::snapshot` saves and `Windower::restore` loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSnapshot {
    pub size_ms: i64,
    pub sensors: Vec<SensorSnapshot>,
}

impl Windower {
    /// Everything needed to continue after a restart as if there had been none.
    pub fn snapshot(&self) -> WindowSnapshot {
        let mut sensors: Vec<SensorSnapshot> = self
            .sensors
            .iter()
            .map(|(k, s)| SensorSnapshot {
                sensor: k.to_string(),
                watermark: s.watermark,
                flushed_end: s.flushed_end,
                last_seen_ms: s.last_seen_ms,
                windows: s.windows.to_vec(),
            })
            .collect();
        // A stable order makes the saved file reproducible and diffable.
        sensors.sort_unstable_by(|a, b| a.sensor.cmp(&b.sensor));
        WindowSnapshot {
            size_ms: self.opts.size_ms,
            sensors,
        }
    }

    /// Replaces the state with a saved one. Windows the saved watermark already closes (a
    /// smaller grace than before) are appended to `out`. Idleness counts from `now_ms`, the
    /// restart: while the bridge was down, a sensor's readings may have waited in an external
    /// broker's session, and judged by the time it last saw them, every sensor would look idle
    /// after a downtime longer than the idle timeout: its windows would close at once and the
    /// readings the broker then delivers would all count late.
    pub fn restore(
        &mut self,
        snap: WindowSnapshot,
        now_ms: i64,
        out: &mut Vec<ClosedWindow>,
    ) -> Result<(), RestoreError> {
        if snap.size_ms != self.opts.size_ms {
            return Err(RestoreError::SizeChanged {
                saved_ms: snap.size_ms,
                now_ms: self.opts.size_ms,
            });
        }
        let size = self.opts.size_ms;
        let mut sensors = HashMap::with_capacity(snap.sensors.len());
        let mut open = 0;
        for s in snap.sensors {
            let ordered = s.windows.windows(2).all(|w| w[0].0 < w[1].0);
            let aligned = s
                .windows
                .iter()
                .all(|(start, _)| start.rem_euclid(size) == 0);
            if !ordered || !aligned {
                return Err(RestoreError::Invalid(format!(
                    "windows of sensor {:?} are not ascending aligned starts",
                    s.sensor
                )));
            }
            let key = SmolStr::new(&s.sensor);
            let mut state = SensorState {
                watermark: s.watermark,
                flushed_end: s.flushed_end,
                // Sensors without an open window keep their time: it orders which are forgotten
                // first under max_sensors.
                last_seen_ms: if s.windows.is_empty() {
                    s.last_seen_ms
                } else {
                    now_ms
                },
                windows: s.windows.into_iter().collect(),
            };
            close_by_watermark(&key, &mut state, size, self.opts.grace_ms, out);
            open += state.windows.len();
            sensors.insert(key, state);
        }
        self.sensors = sensors;
        self.open_windows = open;
        self.fruitless_scan = None;
        Ok(())
    }
}

/// Emits the open windows of one sensor that its watermark has closed (`end + grace <= W`),
/// oldest first; returns how many.
fn close_by_watermark(
    key: &SmolStr,
    state: &mut SensorState,
    size: i64,
    grace: i64,
    out: &mut Vec<ClosedWindow>,
) -> usize {
    let w = state.watermark;
    let closable = state
        .windows
        .partition_point(|(s, _)| s.saturating_add(size).saturating_add(grace) <= w);
    out.extend(
        state
            .windows
            .drain(..closable)
            .map(|(start, agg)| ClosedWindow {
                sensor: key.clone(),
                start_ms: start,
                end_ms: start.saturating_add(size),
                agg,
                cause: CloseCause::Watermark,
            }),
    );
    closable
}

/// Emits all open windows of one sensor and marks them closed; returns how many.
fn close_all(
    key: &SmolStr,
    state: &mut SensorState,
    size: i64,
    cause: CloseCause,
    out: &mut Vec<ClosedWindow>,
) -> usize {
    let n = state.windows.len();
    if let Some((last, _)) = state.windows.last() {
        state.flushed_end = state.flushed_end.max(last.saturating_add(size));
    }
    out.extend(state.windows.drain(..).map(|(start, agg)| ClosedWindow {
        sensor: key.clone(),
        start_ms: start,
        end_ms: start.saturating_add(size),
        agg,
        cause,
    }));
    n
}

#[cfg(test)]
mod tests;
