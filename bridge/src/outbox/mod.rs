//! Where every record goes after the pipeline: straight to the producer while the uplink
//! keeps up, to the on-disk spool while it does not, and back from the spool when it returns.
//!
//! The rules, each of which a delivery guarantee in the README rests on:
//! - Direct while the spool is empty. Once anything is spooled, every new record is spooled
//!   too until the spool is drained, so per-sensor order holds: records in librdkafka's queue
//!   are always older than everything in the spool.
//! - The uplink counts as down when records have waited `spill_after` without a single
//!   delivery report: new records are spooled, and those in librdkafka's queue are taken back
//!   into the spool too (purged; they return as failed reports). Nothing is replayed until a
//!   delivery report or a metadata probe shows the uplink back, so the outage's aggregates go
//!   out before its raw readings. A queue that stayed full that long (a slow uplink) also
//!   starts spooling, without the purge; with the embedded broker, a queue full for
//!   250 ms does (see `EMBEDDED_QUEUE_FULL_WAIT`). librdkafka never fails a record by time
//!   (`message.timeout.ms=0`).
//! - A record the producer gives back (a fatal producer error, a purge at shutdown) goes to
//!   the spool's rescue lane, which is replayed before anything else; records replayed from
//!   the spool are removed from it only by their delivery reports.
//! - MQTT messages (external broker, QoS 1) are acknowledged in arrival order once their
//!   record is delivered or synced to the spool ([`AckQueue`]).
//!
//! When to spool, when the uplink is down and when it is back is decided by the pure
//! [`mode::Machine`]; this shell feeds it what it observes and carries out its actions. It
//! talks to the brokers only through a [`Sink`].
//! Writing to, replaying and syncing the spool is in [`spooling`].

pub mod mode;
mod spooling;
mod uplinks;

pub use spooling::{spool_dir, spool_of};
pub use uplinks::Uplinks;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use edge_bridge_core::{Routed, Stream};
use tracing::{error, info, warn};

use crate::acks::SharedAcks;
use crate::clock::wall_ms;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::log_throttle::LogThrottle;
use crate::mqtt::external::AckToken;
use crate::sink::{
    spawn_probe, ErrorClass, Event, KafkaSink, Origin, ProbeLink, SendError, Sink, SinkError,
};
use crate::spool::fs::DiskFs;
use crate::spool::{Handed, Lane, Spool};
use crate::stats::Stats;
use crate::tasks::Tasks;
use edge_bridge_core::DailyWindow;
use mode::{Action, Machine, Mode};

/// Spooled records handed to librdkafka at most at once: enough to fill the uplink, few
/// enough that memory stays small while it is down.
const REPLAY_WINDOW: i32 = 20_000;

/// Records handed out of the spool and not yet trimmed from it (a record confirmed stays
/// tracked until every one handed out before it is): at most this many, 48 bytes each.
const SPOOL_IN_FLIGHT_MAX: usize = 8 * REPLAY_WINDOW as usize;
/// With the embedded broker, how long a full producer queue may hold up the main loop before
/// new records go to the spool. That broker cannot be slowed down: while the loop waits, it
/// keeps accepting publishes into a log that holds about 1.4 s of 10,000 sensors at 4
/// readings/s (`broker-config/rumqttd.toml`), then drops them. (Waiting `spill_after`, an
/// 8 s uplink stall at that rate lost 119,000 readings to the broker.) An external broker
/// holds what the bridge has not acknowledged, so there the wait is `spool.spill_after`.
const EMBEDDED_QUEUE_FULL_WAIT: Duration = Duration::from_millis(250);
/// Spooled MQTT messages waiting for an fsync before their acks go out: sync early rather
/// than let the broker's in-flight window fill up.
const SYNC_AT_PENDING_ACKS: usize = 256;

/// How long records may wait before the outbox acts; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Records waiting this long without a delivery report take the uplink down.
    pub spill_after: Duration,
    /// How long a full producer queue may hold up the main loop before records are spooled.
    pub queue_full_wait: Duration,
    /// How often spooled records are synced to disk (their MQTT acks wait for it).
    pub fsync_every: Duration,
    /// How long a new record may wait for the last records handed out of the spool to be
    /// confirmed, so that it goes direct rather than into the spool ([`Outbox::await_drain`]).
    pub drain_wait: Duration,
    /// The longest that wait grows to after waits that ran out (a slow uplink).
    pub drain_wait_max: Duration,
}

/// The longest drain wait ([`Timing::drain_wait_max`]; the intake waits meanwhile): with an
/// external broker, which queues for the bridge; with the embedded broker, within what its
/// buffer holds (see [`EMBEDDED_QUEUE_FULL_WAIT`]), and at most once per [`DRAIN_RETRY`].
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(3);
const MAX_DRAIN_WAIT_EMBEDDED: Duration = Duration::from_secs(1);

/// After a drain wait that did not end in direct sends, how long before the next is tried.
const DRAIN_RETRY: Duration = Duration::from_secs(5);

impl Timing {
    pub fn from_config(config: &Config) -> Self {
        let drain_wait_max = if config.mqtt.url.is_empty() {
            MAX_DRAIN_WAIT_EMBEDDED
        } else {
            MAX_DRAIN_WAIT
        };
        Self {
            spill_after: config.spool.spill_after,
            // The embedded broker is the one used when mqtt.url is empty (as
            // `Config::broker` reads it; not re-validated here, the start did that).
            queue_full_wait: if config.mqtt.url.is_empty() {
                config.spool.spill_after.min(EMBEDDED_QUEUE_FULL_WAIT)
            } else {
                config.spool.spill_after
            },
            fsync_every: config.spool.fsync_interval,
            // The last records handed out of the spool are confirmed within the raw
            // producer's linger and a round trip; a longer round trip doubles the wait
            // (`Outbox::await_drain`).
            drain_wait: config
                .raw_linger()
                .map_or(drain_wait_max, |l| l + Duration::from_millis(250))
                .min(drain_wait_max),
            drain_wait_max,
        }
    }
}

pub struct Outbox<S: Sink = KafkaSink> {
    sink: S,
    events: mpsc::Receiver<Event>,
    spool: Option<Spool<DiskFs>>,
    stats: Arc<Stats>,
    /// Shared with the other cluster's outbox, if there is one.
    acks: SharedAcks<AckToken>,
    /// The cluster this outbox sends to: whose gauges it sets.
    cluster: Cluster,
    /// The streams it takes: only their delivery reports show its cluster answering.
    streams: Vec<Stream>,
    /// Where new records go, and whether the spool is replayed.
    machine: Machine,
    /// Talks to the broker probe.
    probe: ProbeLink,
    fsync_every: Duration,
    last_sync: Instant,
    /// Ack sequence numbers of spooled messages, released at the next sync.
    pending_sync: Vec<u64>,
    /// Handed out by the spool, not yet accepted by the producer.
    replay: VecDeque<Handed>,
    /// Hand out the spool again from its oldest undelivered record, at the next pump.
    rewind: bool,
    /// The sink refused a record as unusable: replace it at the next pump.
    fatal: bool,
    /// One drop warning per period.
    drops: LogThrottle,
    /// The drain wait's length now: from [`Timing::drain_wait`], doubled after each that ran
    /// out, up to `drain_wait_max`; back to its start once the spool drained.
    drain_wait: Duration,
    drain_wait_start: Duration,
    drain_wait_max: Duration,
    /// No drain wait before this, after one that did not end in direct sends.
    drain_retry_at: Option<Instant>,
    /// `raw.policy = "deferred"`: raw, late and dead-letter records always go to the spool,
    /// whose raw lanes are replayed only while no aggregate waits there, and inside this
    /// daily window if there is one.
    deferral: Option<Option<DailyWindow>>,
}

impl Outbox<KafkaSink> {
    /// The producers to `cluster`, and `spool` (see [`spooling::spool_dir`] and
    /// [`Uplinks::open`], which opens it): what a previous run left there is replayed. Starts
    /// the cluster's broker probe in `tasks`. `acks`: the MQTT acks, shared with the other
    /// cluster's outbox.
    pub fn open(
        config: &Config,
        cluster: Cluster,
        spool: Option<Spool<DiskFs>>,
        stats: Arc<Stats>,
        tasks: &Tasks,
        acks: SharedAcks<AckToken>,
    ) -> anyhow::Result<Self> {
        let raw_linger = config.raw_linger().map_err(anyhow::Error::msg)?;
        let kafka = match cluster {
            Cluster::Main => config.kafka.clone(),
            Cluster::Raw => config
                .kafka
                .raw_cluster()
                .ok_or_else(|| anyhow::anyhow!("kafka.raw_brokers is not set"))?,
        };
        let (sink, events) = KafkaSink::new(
            &kafka,
            cluster,
            raw_linger,
            crate::sink::client::Topics::for_cluster(config, cluster),
            stats.clone(),
        )?;
        // Whether the brokers answer: for /readyz, and to notice the uplink back.
        let probe = spawn_probe(sink.admin_handle(), stats.clone(), tasks);
        let deferral = config.raw_deferral().map_err(anyhow::Error::msg)?;
        let mut outbox = Self::new(
            sink,
            events,
            spool,
            probe,
            Timing::from_config(config),
            stats,
        )
        .deferring_raw(deferral);
        outbox.cluster = cluster;
        outbox.streams = cluster.streams(config.kafka.has_raw_cluster());
        outbox.acks = acks;
        outbox.update_gauges();
        Ok(outbox)
    }
}

impl<S: Sink> Outbox<S> {
    /// An outbox over `sink`, whose delivery reports arrive on `events`.
    pub fn new(
        sink: S,
        events: mpsc::Receiver<Event>,
        spool: Option<Spool<DiskFs>>,
        probe: ProbeLink,
        timing: Timing,
        stats: Arc<Stats>,
    ) -> Self {
        let machine = Machine::new(
            spool.is_some(),
            spool.as_ref().is_some_and(|s| !s.is_empty()),
            timing.spill_after,
            timing.queue_full_wait,
            Instant::now(),
        );
        // (Its gauges are set at the first pump; [`Outbox::open`] sets them for its cluster.)
        Self {
            sink,
            events,
            spool,
            stats,
            acks: SharedAcks::default(),
            cluster: Cluster::Main,
            streams: Stream::ALL.to_vec(),
            machine,
            probe,
            fsync_every: timing.fsync_every,
            last_sync: Instant::now(),
            pending_sync: Vec::new(),
            replay: VecDeque::new(),
            rewind: false,
            fatal: false,
            drops: LogThrottle::new(Duration::from_secs(10)),
            drain_wait: timing.drain_wait,
            drain_wait_start: timing.drain_wait,
            drain_wait_max: timing.drain_wait_max.max(timing.drain_wait),
            drain_retry_at: None,
            deferral: None,
        }
    }

    /// The same outbox applying the deferred raw policy ([`crate::Config::raw_deferral`]);
    /// needs a spool.
    pub fn deferring_raw(mut self, deferral: Option<Option<DailyWindow>>) -> Self {
        self.deferral = deferral.filter(|_| self.spool.is_some());
        self
    }

    /// Whether new records of `stream` wait in the spool under the deferred raw policy.
    fn defers(&self, stream: Stream) -> bool {
        self.deferral.is_some() && stream != Stream::Aggregate
    }

    /// The spool lanes that may be replayed now: all, or under the deferred raw policy the
    /// aggregates' alone outside its window.
    fn replayable_lanes(&self, now_ms: i64) -> &'static [Lane] {
        match self.deferral {
            Some(Some(window)) if !window.contains(now_ms) => &Lane::AGGREGATES,
            _ => &Lane::ALL,
        }
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Sends or spools one record. `ack`: the MQTT message this record completes, acknowledged
    /// once the record is delivered or durably spooled. `made_ms`: wall-clock ms when the
    /// bridge made the record.
    pub async fn submit(
        &mut self,
        routed: Routed,
        ack: Option<AckToken>,
        made_ms: i64,
    ) -> anyhow::Result<()> {
        self.submit_beside(routed, ack, made_ms, None).await
    }

    /// [`Outbox::submit`], pumping `other` (the other cluster's outbox) too while this one
    /// waits for room in its producer's queue: its delivery work goes on meanwhile.
    pub async fn submit_beside(
        &mut self,
        routed: Routed,
        ack: Option<AckToken>,
        made_ms: i64,
        mut other: Option<&mut Self>,
    ) -> anyhow::Result<()> {
        let carrier = ack.map(|t| self.acks.push(t));
        let origin = carrier.map_or(Origin::Direct, Origin::Carrier);
        // Taken when the queue is first found full: the common case reads no clock here.
        let mut full_since: Option<Instant> = None;
        let mut backoff = Duration::from_micros(200);
        loop {
            if self.machine.spools() && self.only_in_flight_left() {
                self.await_drain(other.as_deref_mut()).await?;
            }
            if self.machine.spools() || self.defers(routed.stream) {
                self.spool_record(Lane::for_stream(routed.stream), &routed, carrier, made_ms);
                return Ok(());
            }
            let Err(SendError { class, error }) = self.sink.try_send(&routed, origin, made_ms)
            else {
                return Ok(());
            };
            match class {
                ErrorClass::Retry | ErrorClass::TakenBack => {
                    // Queue full: wait for the uplink, up to queue_full_wait if there is a
                    // spool.
                    let since = *full_since.get_or_insert_with(Instant::now);
                    self.pump(false).await?;
                    if let Some(other) = other.as_deref_mut() {
                        other.pump(false).await?;
                    }
                    let actions = self.machine.on(
                        mode::Event::QueueFull { since },
                        Instant::now(),
                        wall_ms(),
                    );
                    if actions.is_empty() {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(100));
                    }
                    self.carry_out(actions).await?;
                }
                ErrorClass::Permanent => {
                    self.permanent_failure(routed.stream, &error, carrier);
                    return Ok(());
                }
                ErrorClass::Fatal => {
                    self.fatal = true;
                    self.pump(false).await?;
                }
            }
        }
    }

    /// Whether the replay is done but for delivery reports: the uplink is up, the spool has
    /// nothing left to hand out, and only records handed out of it await confirmation (and no
    /// drain wait failed lately). Not under the deferred raw policy, whose raw records always
    /// go through the spool.
    fn only_in_flight_left(&self) -> bool {
        let Some(spool) = self.spool.as_ref() else {
            return false;
        };
        self.machine.mode() == Mode::Spooling
            && self.deferral.is_none()
            && self.replay.is_empty()
            && spool.in_flight() > 0
            && spool.records() == spool.in_flight() as u64
            && self.drain_retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Waits, up to `drain_wait`, for the records handed out of the spool to be confirmed, so
    /// that the spool is empty and new records go direct again. Spooling the next record
    /// instead would hand it out in turn: under a steady inflow something from the spool is
    /// always awaiting its delivery report, the spool is never empty, and every record would
    /// go through the disk for as long as readings keep coming. The intake waits meanwhile
    /// (the raw producer's linger and a round trip; usually once per outage). A wait that
    /// runs out (a slower round trip, or more still out) is tried again after [`DRAIN_RETRY`],
    /// twice as long, up to the maximum. Records must not go direct sooner: taken back in a
    /// new outage, they would be replayed before the older records still out of the spool.
    async fn await_drain(&mut self, mut other: Option<&mut Self>) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.drain_wait;
        let mut backoff = Duration::from_millis(1);
        while self.only_in_flight_left() && Instant::now() < deadline {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(20));
            self.pump(false).await?;
            if let Some(other) = other.as_deref_mut() {
                other.pump(false).await?;
            }
        }
        if self.machine.spools() {
            let unconfirmed = self.spool.as_ref().map_or(0, |s| s.in_flight());
            let waited = self.drain_wait;
            self.drain_retry_at = Some(Instant::now() + DRAIN_RETRY);
            self.drain_wait = (self.drain_wait * 2).min(self.drain_wait_max);
            // At most one line per DRAIN_RETRY: says why records still go through the disk.
            info!(
                cluster = self.cluster.brokers_key(),
                unconfirmed,
                ?waited,
                next_wait = ?self.drain_wait,
                "Spool: records handed out of it still await delivery reports; new records keep going through the disk for now"
            );
        }
        Ok(())
    }

    /// Back to direct sends: the spool has nothing left.
    fn spool_drained(&mut self) {
        self.drain_retry_at = None;
        self.drain_wait = self.drain_wait_start;
        // Its capacity (a batch read from the spool) is not needed until the next outage.
        // (Under the deferred raw policy the spool drains of aggregates while raw records
        // may still wait here.)
        if self.replay.is_empty() {
            self.replay = VecDeque::new();
        }
        info!(
            cluster = self.cluster.brokers_key(),
            "Spool drained: sending directly again"
        );
    }

    /// Does the periodic work: handles delivery reports, replaces a failed producer, notices a
    /// stalled uplink, writes the spool out (syncing it when due), replays it (unless
    /// `draining`).
    pub async fn pump(&mut self, draining: bool) -> Result<(), SinkError> {
        self.handle_events();
        let fatal = self.sink.fatal_error();
        if std::mem::take(&mut self.fatal) || fatal.is_some() {
            error!(
                reason = fatal.unwrap_or_default(),
                "Kafka producer failed fatally; taking its records back and recreating it"
            );
            let actions = self
                .machine
                .on(mode::Event::ProducerFailed, Instant::now(), wall_ms());
            self.carry_out(actions).await?;
        }
        // This cluster's streams only: the other cluster's deliveries say nothing of this one.
        let delivered: u64 = self
            .streams
            .iter()
            .map(|s| self.stats.stream(*s).delivered.load(Relaxed))
            .sum();
        let observed = mode::Event::Pump {
            delivered,
            in_flight: self.sink.in_flight(),
            probe_ok_ms: *self.probe.probe_ok_ms.borrow(),
        };
        let actions = self.machine.on(observed, Instant::now(), wall_ms());
        self.carry_out(actions).await?;
        if std::mem::take(&mut self.rewind) {
            self.replay.clear();
            if let Some(s) = self.spool.as_mut() {
                s.rewind();
            }
        }
        // Written out before the replay reads: a record becomes readable only once flushed,
        // and one spooled since the last pump must be handed out at this one. (Flushed after
        // the replay, the newest records stayed unread until the next pump: under a steady
        // inflow, with a record spooled between every two pumps, something was always unread,
        // no drain wait began, and the spool never emptied while readings kept coming.)
        self.flush_spool(false);
        if !draining && self.machine.replays() {
            self.replay_spool();
        }
        self.update_gauges();
        Ok(())
    }

    /// Carries out the mode machine's decisions, in order.
    async fn carry_out(&mut self, actions: Vec<Action>) -> Result<(), SinkError> {
        for action in actions {
            match action {
                Action::StartSpooling { why, after } => warn!(
                    cluster = self.cluster.brokers_key(),
                    waiting = self.sink.in_flight(),
                    ?after,
                    "Uplink down or too slow ({why}): new records go to the disk spool until it returns"
                ),
                Action::UplinkDown => {
                    let gauges = self.stats.cluster(self.cluster);
                    gauges.uplink_down.store(1, Relaxed);
                    gauges.kafka_reachable.store(0, Relaxed);
                    self.probe.uplink_down.send_replace(true);
                }
                Action::UplinkBack => {
                    self.stats
                        .cluster(self.cluster)
                        .uplink_down
                        .store(0, Relaxed);
                    self.probe.uplink_down.send_replace(false);
                    info!(
                        cluster = self.cluster.brokers_key(),
                        spooled = self.spool.as_ref().map_or(0, |s| s.records()),
                        "Uplink back: replaying the spool, aggregates first"
                    );
                }
                Action::ReplaceProducer => {
                    self.sink.replace().await?;
                    // Records sent directly came back as failed reports and go to the rescue
                    // lanes; records replayed from the spool are still there and go again.
                    self.handle_events();
                }
                Action::Rewind => self.rewind = true,
                Action::SpoolDrained => self.spool_drained(),
            }
        }
        Ok(())
    }

    /// The next MQTT ack that may go out (of either cluster's records).
    pub fn pop_ack(&mut self) -> Option<AckToken> {
        self.acks.pop_ready()
    }

    /// At a clean stop: waits up to `timeout` for records in flight, takes back the rest into
    /// the spool, and syncs it. Returns records lost for want of a spool.
    pub async fn shutdown(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        while self.sink.in_flight() > 0 && Instant::now() < deadline {
            self.pump(true).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.pump(true).await?;
        let mut lost = 0;
        let waiting = self.sink.in_flight();
        if waiting > 0 {
            if self.spool.is_some() {
                info!(
                    records = waiting,
                    "Shutdown: the broker has not confirmed these yet; moving them to the spool"
                );
                if !self.sink.purge(Duration::from_secs(5)).await {
                    lost = self.sink.in_flight().max(0) as u64;
                }
                self.handle_events();
            } else {
                lost = waiting as u64;
                error!(
                    records = waiting,
                    "Shutdown: records not confirmed by the broker are lost (the spool is off)"
                );
            }
        }
        self.flush_spool(true);
        self.update_gauges();
        Ok(lost)
    }

    /// Acts on the delivery reports that arrived.
    fn handle_events(&mut self) {
        // Records to take back into the spool, in the order they were produced: librdkafka
        // reports a purge partition queue by partition queue, not in production order.
        let mut rescued: Vec<(u64, Routed, Option<u64>, i64)> = Vec::new();
        let mut undelivered = false;
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::Delivered(tag) => match tag.origin {
                    Origin::Carrier(seq) => self.acks.done(seq),
                    Origin::Spooled(lane, seq) => {
                        if let Some(s) = self.spool.as_mut() {
                            s.ack(lane, seq);
                        }
                    }
                    Origin::Direct => {}
                },
                Event::Failed {
                    tag,
                    class,
                    error,
                    record,
                } => {
                    if let Some(r) = self.on_failed(tag, class, &error, record) {
                        rescued.push(r);
                    }
                    undelivered |= class != ErrorClass::TakenBack
                        && class != ErrorClass::Permanent
                        && self.spool.is_some();
                }
            }
        }
        let (now, now_ms) = (Instant::now(), wall_ms());
        if undelivered {
            // Later records may still be queued behind it: they would overtake it. The
            // machine takes them all back at the next pump.
            let none = self.machine.on(mode::Event::Undelivered, now, now_ms);
            debug_assert!(none.is_empty());
        }
        if !rescued.is_empty() {
            rescued.sort_unstable_by_key(|r| r.0);
            for (_, routed, carrier, made_ms) in rescued {
                self.spool_record(Lane::rescue_for(routed.stream), &routed, carrier, made_ms);
            }
            // The rescued records are older than anything handed out from the spool: those go
            // again after them.
            for action in self.machine.on(mode::Event::Rescued, now, now_ms) {
                debug_assert_eq!(action, Action::Rewind);
                self.rewind = true;
            }
        }
    }

    /// Acts on one failed delivery report; returns the record if it must be rescued into the
    /// spool: `(seq, record, ack carrier, made_ms)`.
    fn on_failed(
        &mut self,
        tag: crate::sink::Tag,
        class: ErrorClass,
        error: &str,
        record: edge_bridge_core::OutRecord,
    ) -> Option<(u64, Routed, Option<u64>, i64)> {
        // (A fatal class here may come from a producer already replaced: whether the current
        // one is broken is asked of it, in `pump`.)
        let carrier = match tag.origin {
            Origin::Carrier(seq) => Some(seq),
            _ => None,
        };
        let taken_back = class == ErrorClass::TakenBack;
        match (class, tag.origin) {
            (ErrorClass::Permanent, Origin::Spooled(lane, seq)) => {
                if let Some(s) = self.spool.as_mut() {
                    s.ack(lane, seq);
                }
                self.permanent_failure(tag.stream, error, None);
            }
            (ErrorClass::Permanent, _) => self.permanent_failure(tag.stream, error, carrier),
            // Still in the spool: hand it out again.
            (_, Origin::Spooled(..)) => {
                if !taken_back && self.drops.admit("", Instant::now()).is_some() {
                    warn!(%error, stream = tag.stream.as_str(), "A record replayed from the spool was not delivered; it stays in the spool and goes again");
                }
                self.rewind = true;
            }
            (_, _) if self.spool.is_some() => {
                if !taken_back {
                    warn!(%error, stream = tag.stream.as_str(), "A record was not delivered; it goes to the spool and is sent again");
                }
                let routed = Routed {
                    stream: tag.stream,
                    record,
                    topic: tag.topic,
                };
                return Some((tag.seq, routed, carrier, tag.made_ms));
            }
            (_, _) => {
                self.stats.stream(tag.stream).failed.fetch_add(1, Relaxed);
                error!(stream = tag.stream.as_str(), %error, "Record not delivered and lost (the spool is off)");
                if let Some(seq) = carrier {
                    self.acks.done(seq);
                }
            }
        }
        None
    }

    fn permanent_failure(&mut self, stream: Stream, error: &str, carrier: Option<u64>) {
        self.stats.stream(stream).failed.fetch_add(1, Relaxed);
        error!(
            stream = stream.as_str(),
            topic = self.sink.topic_of(stream),
            error,
            "Record can never be delivered (the broker refuses it); dropped"
        );
        // Waiting would block every later ack of the MQTT session: the record is accounted
        // for as failed instead.
        if let Some(seq) = carrier {
            self.acks.done(seq);
        }
    }

    fn update_gauges(&self) {
        let gauges = self.stats.cluster(self.cluster);
        if let Some(s) = &self.spool {
            gauges.spool_records.store(s.records(), Relaxed);
            gauges.spool_bytes.store(s.bytes(), Relaxed);
        }
        gauges
            .producer_queue
            .store(self.sink.in_flight().max(0) as u64, Relaxed);
    }
}
