//! Store-and-forward as a mode machine: where new records go and when the spool is replayed,
//! decided from what the shell observed and the time it passes in. No IO, no clock reads, no
//! async; the shell ([`super::Outbox`]) carries out the [`Action`]s.
//!
//! ```text
//!            queue full for queue_full_wait,          records stalled spill_after,
//!            records taken back into the spool        or a failure that lets records overtake
//!   Direct ------------------------------------> Spooling ----------------------------> Down
//!     ^                                             |  ^                                  |
//!     +---------------- spool drained --------------+  +--- a delivery report, or a ------+
//!                                                          broker probe after going down
//! ```
//! (`Direct` also goes straight to `Down` when records stall.) While `Down`, nothing is
//! replayed: what librdkafka held was taken back into the spool, so that no raw reading of the
//! outage overtakes its aggregates. Without a spool the machine stays `Direct`: records wait in
//! librdkafka's queue, however long the outage.

use std::time::{Duration, Instant};

/// After the uplink comes back, how much longer than `spill_after` the first delivery report
/// may take before the uplink counts as down again.
pub const RECOVERY_GRACE: Duration = Duration::from_secs(10);

/// Where new records go, and whether the spool is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Straight to the producer (the spool is empty).
    Direct,
    /// To the spool, which is replayed: per-sensor order holds because everything in
    /// librdkafka's queue is older than everything in the spool.
    Spooling,
    /// To the spool, which waits: the uplink went down at this wall-clock ms.
    Down { since_ms: i64 },
}

/// What the shell observed; the input of [`Machine::on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The periodic pump: records delivered so far (all streams), records in the producer,
    /// and the wall-clock ms at which the last successful broker probe started.
    Pump {
        delivered: u64,
        in_flight: i32,
        probe_ok_ms: i64,
    },
    /// The producer's queue has been full since `since`.
    QueueFull { since: Instant },
    /// A delivery failed in a way that may let later records overtake it (not a record taken
    /// back on purpose).
    Undelivered,
    /// Records that came back from the producer were written to the spool's rescue lanes.
    Rescued,
    /// The producer reported a fatal error.
    ProducerFailed,
    /// The spool and the records handed out from it are all delivered.
    SpoolEmpty,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// New records go to the spool from now on (log why, and after how long).
    StartSpooling { why: &'static str, after: Duration },
    /// The uplink counts as down from now on (publish it; stop replaying).
    UplinkDown,
    /// The uplink is back (publish it; replay, aggregates first).
    UplinkBack,
    /// Take every record back from the producer (they return as failed reports, to be
    /// spooled) and start a fresh one.
    ReplaceProducer,
    /// Hand out the spool again from its oldest undelivered record: records taken back are
    /// older than those already handed out.
    Rewind,
    /// Back to direct sends (log it).
    SpoolDrained,
}

/// The store-and-forward policy of [`super::Outbox`].
#[derive(Debug, Clone)]
pub struct Machine {
    mode: Mode,
    /// Without a spool there is nowhere to go: always [`Mode::Direct`].
    has_spool: bool,
    spill_after: Duration,
    queue_full_wait: Duration,
    /// Delivered records at the last progress check, and when that number last moved (in the
    /// future during [`RECOVERY_GRACE`]).
    progress: (u64, Instant),
    /// A failure may let later records overtake an undelivered one: take everything back at
    /// the next pump, as when the uplink goes down.
    force_down: bool,
}

impl Machine {
    /// `spool_waiting`: the spool holds records of a previous run, to be sent first.
    pub fn new(
        has_spool: bool,
        spool_waiting: bool,
        spill_after: Duration,
        queue_full_wait: Duration,
        now: Instant,
    ) -> Self {
        Self {
            mode: if has_spool && spool_waiting {
                Mode::Spooling
            } else {
                Mode::Direct
            },
            has_spool,
            spill_after,
            queue_full_wait,
            progress: (0, now),
            force_down: false,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// New records go to the spool.
    pub fn spools(&self) -> bool {
        self.mode != Mode::Direct
    }

    /// The spool may be replayed (the uplink is not down).
    pub fn replays(&self) -> bool {
        !matches!(self.mode, Mode::Down { .. })
    }

    /// Feeds one observation; returns what to do, in order. `now` orders the progress checks,
    /// `now_ms` (wall clock) dates an outage for the broker probe.
    pub fn on(&mut self, event: Event, now: Instant, now_ms: i64) -> Vec<Action> {
        match event {
            Event::Pump {
                delivered,
                in_flight,
                probe_ok_ms,
            } => self.pump(delivered, in_flight, probe_ok_ms, now, now_ms),
            Event::QueueFull { since } => {
                if self.has_spool && now.saturating_duration_since(since) >= self.queue_full_wait {
                    self.spool_from_now("the producer queue stayed full", self.queue_full_wait)
                } else {
                    Vec::new()
                }
            }
            Event::Undelivered => {
                // While down, failures are what down means, and nothing is queued to overtake.
                if self.has_spool && self.replays() {
                    self.force_down = true;
                }
                Vec::new()
            }
            Event::Rescued => {
                // Silently: this happens at every clean stop too (records taken back into the
                // spool), and a failure that caused it was logged where it was seen.
                if self.has_spool && self.mode == Mode::Direct {
                    self.mode = Mode::Spooling;
                }
                vec![Action::Rewind]
            }
            Event::ProducerFailed => vec![Action::ReplaceProducer, Action::Rewind],
            Event::SpoolEmpty => {
                if self.mode == Mode::Spooling {
                    self.mode = Mode::Direct;
                    vec![Action::SpoolDrained]
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn spool_from_now(&mut self, why: &'static str, after: Duration) -> Vec<Action> {
        if self.has_spool && self.mode == Mode::Direct {
            self.mode = Mode::Spooling;
            vec![Action::StartSpooling { why, after }]
        } else {
            Vec::new()
        }
    }

    /// Notices the uplink going down (records waited `spill_after` without a delivery report,
    /// or a failure let records overtake) and coming back (a delivery report, or a broker
    /// probe that started after it went down).
    fn pump(
        &mut self,
        delivered: u64,
        in_flight: i32,
        probe_ok_ms: i64,
        now: Instant,
        now_ms: i64,
    ) -> Vec<Action> {
        let moved = delivered != self.progress.0;
        if in_flight == 0 || moved {
            self.progress = (delivered, now);
        }
        if let Mode::Down { since_ms } = self.mode {
            self.force_down = false;
            if moved || probe_ok_ms > since_ms {
                self.mode = Mode::Spooling;
                // A fresh producer needs several round trips (connect, metadata, producer id)
                // before its first delivery report: give it that much longer before judging
                // the uplink again, or a slow link would flap between down and up.
                self.progress = (delivered, now + RECOVERY_GRACE);
                return vec![Action::UplinkBack];
            }
            return Vec::new();
        }
        let stalled =
            in_flight > 0 && now.saturating_duration_since(self.progress.1) >= self.spill_after;
        if !self.has_spool || !(stalled || self.force_down) {
            return Vec::new();
        }
        self.force_down = false;
        let mut actions = self.spool_from_now("no delivery report", self.spill_after);
        self.mode = Mode::Down { since_ms: now_ms };
        actions.extend([Action::UplinkDown, Action::ReplaceProducer, Action::Rewind]);
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPILL: Duration = Duration::from_secs(5);
    const QUEUE_WAIT: Duration = Duration::from_millis(250);

    fn machine(t0: Instant) -> Machine {
        Machine::new(true, false, SPILL, QUEUE_WAIT, t0)
    }

    fn pump(delivered: u64, in_flight: i32, probe_ok_ms: i64) -> Event {
        Event::Pump {
            delivered,
            in_flight,
            probe_ok_ms,
        }
    }

    const DOWN: [Action; 4] = [
        Action::StartSpooling {
            why: "no delivery report",
            after: SPILL,
        },
        Action::UplinkDown,
        Action::ReplaceProducer,
        Action::Rewind,
    ];

    #[test]
    fn starts_direct_or_spooling_what_a_previous_run_left() {
        let t0 = Instant::now();
        assert_eq!(machine(t0).mode(), Mode::Direct);
        let m = Machine::new(true, true, SPILL, QUEUE_WAIT, t0);
        assert_eq!(m.mode(), Mode::Spooling);
        assert!(m.spools() && m.replays());
        // Without a spool, leftovers cannot exist and nothing spools.
        assert_eq!(
            Machine::new(false, true, SPILL, QUEUE_WAIT, t0).mode(),
            Mode::Direct
        );
    }

    #[test]
    fn records_delivered_in_time_keep_it_direct() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        for i in 1..100u64 {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(m.on(pump(i, 10, 0), now, 0), vec![]);
        }
        assert_eq!(m.mode(), Mode::Direct);
    }

    #[test]
    fn an_idle_producer_is_not_a_stall() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        assert_eq!(m.on(pump(0, 0, 0), t0 + SPILL * 10, 0), vec![]);
        // Records arrive after a long quiet spell: the clock starts when they do.
        assert_eq!(m.on(pump(0, 5, 0), t0 + SPILL * 10 + SPILL / 2, 0), vec![]);
        assert_eq!(m.mode(), Mode::Direct);
    }

    #[test]
    fn records_stalled_for_spill_after_take_the_uplink_down() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        assert_eq!(m.on(pump(3, 5, 0), t0, 1_000), vec![]);
        assert_eq!(
            m.on(pump(3, 5, 0), t0 + SPILL - Duration::from_millis(1), 1_000),
            vec![]
        );
        assert_eq!(m.on(pump(3, 5, 0), t0 + SPILL, 7_000), DOWN.to_vec());
        assert_eq!(m.mode(), Mode::Down { since_ms: 7_000 });
        assert!(m.spools() && !m.replays());
    }

    #[test]
    fn down_from_spooling_does_not_log_spooling_again() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        m.on(Event::Rescued, t0, 0);
        assert_eq!(m.mode(), Mode::Spooling);
        assert_eq!(
            m.on(pump(0, 5, 0), t0 + SPILL, 9),
            vec![Action::UplinkDown, Action::ReplaceProducer, Action::Rewind]
        );
        assert_eq!(m.mode(), Mode::Down { since_ms: 9 });
    }

    /// Takes `m` down at `t0 + SPILL`, wall-clock ms 7,000, with 3 records delivered.
    fn down(m: &mut Machine, t0: Instant) {
        m.on(pump(3, 5, 0), t0, 1_000);
        assert_eq!(m.on(pump(3, 5, 0), t0 + SPILL, 7_000), DOWN.to_vec());
    }

    #[test]
    fn a_delivery_report_brings_it_back_and_grants_a_grace() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        down(&mut m, t0);
        let t1 = t0 + SPILL * 3;
        // Still nothing: stays down, whatever the time.
        assert_eq!(m.on(pump(3, 5, 0), t1, 9_000), vec![]);
        assert_eq!(m.on(pump(4, 5, 0), t1, 9_000), vec![Action::UplinkBack]);
        assert_eq!(m.mode(), Mode::Spooling);
        assert!(m.replays());
        // The fresh producer gets spill_after plus the grace before its first report.
        let quiet = t1 + SPILL + RECOVERY_GRACE - Duration::from_millis(1);
        assert_eq!(m.on(pump(4, 5, 0), quiet, 9_500), vec![]);
        assert_eq!(
            m.on(pump(4, 5, 0), t1 + SPILL + RECOVERY_GRACE, 9_600),
            vec![Action::UplinkDown, Action::ReplaceProducer, Action::Rewind]
        );
    }

    #[test]
    fn only_a_probe_that_started_after_the_outage_brings_it_back() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        down(&mut m, t0);
        assert_eq!(m.on(pump(3, 0, 7_000), t0 + SPILL, 7_100), vec![]);
        assert_eq!(m.on(pump(3, 0, 6_500), t0 + SPILL, 7_100), vec![]);
        assert_eq!(
            m.on(pump(3, 0, 7_001), t0 + SPILL, 7_200),
            vec![Action::UplinkBack]
        );
    }

    #[test]
    fn a_failure_that_lets_records_overtake_takes_everything_back() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        assert_eq!(m.on(Event::Undelivered, t0, 0), vec![]);
        assert_eq!(m.on(pump(0, 5, 0), t0, 42), DOWN.to_vec());
        // Once down, the next pump does not act on it again.
        assert_eq!(m.on(pump(0, 5, 0), t0, 43), vec![]);
    }

    #[test]
    fn failures_while_down_are_what_down_means() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        m.on(pump(0, 5, 0), t0 + SPILL, 1);
        m.on(Event::Undelivered, t0 + SPILL, 2);
        assert_eq!(m.on(pump(1, 5, 0), t0 + SPILL, 3), vec![Action::UplinkBack]);
        // Not carried over into the recovered state.
        assert_eq!(m.on(pump(1, 5, 0), t0 + SPILL, 4), vec![]);
    }

    #[test]
    fn a_full_queue_spools_after_its_wait_without_taking_the_uplink_down() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        let full = Event::QueueFull { since: t0 };
        assert_eq!(
            m.on(full, t0 + QUEUE_WAIT - Duration::from_millis(1), 0),
            vec![]
        );
        assert_eq!(
            m.on(full, t0 + QUEUE_WAIT, 0),
            vec![Action::StartSpooling {
                why: "the producer queue stayed full",
                after: QUEUE_WAIT
            }]
        );
        assert_eq!(m.mode(), Mode::Spooling);
        assert!(m.replays());
        assert_eq!(m.on(full, t0 + QUEUE_WAIT * 2, 0), vec![]);
    }

    #[test]
    fn rescued_records_spool_and_rewind() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        assert_eq!(m.on(Event::Rescued, t0, 0), vec![Action::Rewind]);
        assert_eq!(m.mode(), Mode::Spooling);
        assert_eq!(m.on(Event::Rescued, t0, 0), vec![Action::Rewind]);
        // Rescued while down: stays down.
        m.on(pump(0, 1, 0), t0 + SPILL, 5);
        assert_eq!(m.on(Event::Rescued, t0 + SPILL, 6), vec![Action::Rewind]);
        assert_eq!(m.mode(), Mode::Down { since_ms: 5 });
    }

    #[test]
    fn a_fatal_producer_is_replaced_in_any_mode() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        let replace = vec![Action::ReplaceProducer, Action::Rewind];
        assert_eq!(m.on(Event::ProducerFailed, t0, 0), replace);
        assert_eq!(m.mode(), Mode::Direct);
        m.on(pump(0, 1, 0), t0 + SPILL, 5);
        assert_eq!(m.on(Event::ProducerFailed, t0 + SPILL, 6), replace);
        assert_eq!(m.mode(), Mode::Down { since_ms: 5 });
    }

    #[test]
    fn a_drained_spool_returns_to_direct_only_while_the_uplink_is_up() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        assert_eq!(m.on(Event::SpoolEmpty, t0, 0), vec![]);
        m.on(Event::Rescued, t0, 0);
        assert_eq!(m.on(Event::SpoolEmpty, t0, 0), vec![Action::SpoolDrained]);
        assert_eq!(m.mode(), Mode::Direct);
        m.on(pump(0, 1, 0), t0 + SPILL, 5);
        assert_eq!(m.on(Event::SpoolEmpty, t0 + SPILL, 6), vec![]);
        assert_eq!(m.mode(), Mode::Down { since_ms: 5 });
    }

    #[test]
    fn without_a_spool_nothing_changes_the_mode() {
        let t0 = Instant::now();
        let mut m = Machine::new(false, false, SPILL, QUEUE_WAIT, t0);
        let events = [
            pump(0, 5, 0),
            Event::QueueFull { since: t0 },
            Event::Undelivered,
            Event::Rescued,
            Event::SpoolEmpty,
        ];
        for e in events {
            let actions = m.on(e, t0 + SPILL * 4, 0);
            assert!(
                actions.iter().all(|a| *a == Action::Rewind),
                "{e:?}: {actions:?}"
            );
            assert_eq!(m.mode(), Mode::Direct, "{e:?}");
        }
        assert_eq!(m.on(pump(0, 5, 0), t0 + SPILL * 9, 0), vec![]);
    }
}
