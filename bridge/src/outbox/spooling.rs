//! The outbox's side of the spool: opening it, writing records to it, replaying it to the
//! sink, and syncing it (after which the MQTT acks of the records in it go out).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use edge_bridge_core::{Routed, Stream};
use tracing::{error, info, warn};

use super::mode::{self, Action};
use super::{Outbox, REPLAY_WINDOW, SPOOL_IN_FLIGHT_MAX, SYNC_AT_PENDING_ACKS};
use crate::clock::wall_ms;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::sink::{ErrorClass, Origin, SendError, Sink};
use crate::spool::fs::DiskFs;
use crate::spool::{Lane, Spool, SpoolOptions};
use crate::stats::Stats;

/// Where a cluster's spool lives: `state_dir/spool` for the main cluster (where it always
/// was), `state_dir/spool-raw` for the second (`kafka.raw_brokers`).
pub fn spool_dir(config: &Config, cluster: Cluster) -> std::path::PathBuf {
    config.state_dir.join(match cluster {
        Cluster::Main => "spool",
        Cluster::Raw => "spool-raw",
    })
}

/// The spool of `cluster` if `spool.enabled`, opened (see [`open_spool`]).
pub fn spool_of(
    config: &Config,
    cluster: Cluster,
    stats: &Stats,
) -> anyhow::Result<Option<Spool<DiskFs>>> {
    config
        .spool
        .enabled
        .then(|| open_spool(config, cluster, stats))
        .transpose()
}

/// Opens the spool of `cluster`, recovering what a previous run left there.
pub(super) fn open_spool(
    config: &Config,
    cluster: Cluster,
    stats: &Stats,
) -> anyhow::Result<Spool<DiskFs>> {
    let dir = spool_dir(config, cluster);
    let opts = SpoolOptions {
        max_bytes: config.spool.max_mib.saturating_mul(1 << 20),
    };
    let (spool, rec) = Spool::open(DiskFs, &dir, opts).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the spool in {}: {e}; check that state_dir is writable by the bridge",
            dir.display()
        )
    })?;
    let waiting: u64 = rec.records.iter().sum();
    if rec.damaged > 0 {
        warn!(
            cluster = cluster.brokers_key(),
            damaged = rec.damaged,
            "Spool: skipped damaged records (torn by a power cut or corrupted on disk); they are lost"
        );
    }
    if waiting > 0 {
        info!(
            cluster = cluster.brokers_key(),
            records = waiting,
            aggregates = rec.records[crate::stats::index(Stream::Aggregate)],
            bytes = rec.bytes,
            "Spool: records from the previous run wait for delivery; aggregates go first"
        );
    }
    stats.spool_damaged.fetch_add(rec.damaged, Relaxed);
    stats
        .cluster(cluster)
        .spool_capacity_bytes
        .store(spool.capacity(), Relaxed);
    Ok(spool)
}

impl<S: Sink> Outbox<S> {
    pub(super) fn spool_record(
        &mut self,
        lane: Lane,
        routed: &Routed,
        carrier: Option<u64>,
        made_ms: i64,
    ) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let result = spool.append(lane, routed, made_ms);
        let counters = self.stats.stream(routed.stream);
        match result {
            Ok(a) => {
                if let Some(e) = &a.error {
                    error!(
                        error = e,
                        stream = routed.stream.as_str(),
                        "Cannot write to the spool; record dropped. Check the state_dir disk"
                    );
                }
                if a.stored {
                    counters.spooled.fetch_add(1, Relaxed);
                    if let Some(seq) = carrier {
                        self.pending_sync.push(seq);
                    }
                } else if let Some(seq) = carrier {
                    self.acks.done(seq);
                }
                if a.dropped.iter().any(|n| *n > 0) {
                    for s in Stream::ALL {
                        let n = a.dropped[crate::stats::index(s)];
                        self.stats.stream(s).dropped.fetch_add(n, Relaxed);
                    }
                    if self.drops.admit("", Instant::now()).is_some() {
                        let s = self.stats.snapshot();
                        warn!(
                            raw_dropped = s.raw.dropped,
                            aggregates_dropped = s.aggregate.dropped,
                            dead_letters_dropped = s.dead_letter.dropped,
                            "Spool full: dropping the oldest raw readings to keep aggregates; raise spool.max_mib to keep more"
                        );
                    }
                }
            }
            Err(e) => {
                counters.dropped.fetch_add(1, Relaxed);
                if self.drops.admit("", Instant::now()).is_some() {
                    error!(error = %e, stream = routed.stream.as_str(), "Cannot write to the spool; record dropped. Check the state_dir disk");
                }
                if let Some(seq) = carrier {
                    self.acks.done(seq);
                }
            }
        }
    }

    pub(super) fn replay_spool(&mut self) {
        let lanes = self.replayable_lanes(wall_ms());
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        // Also bounded by what the spool tracks as handed out: records confirmed behind one
        // whose report lags (another partition's batch) stay tracked until it is confirmed.
        while self.sink.in_flight() < REPLAY_WINDOW && spool.in_flight() < SPOOL_IN_FLIGHT_MAX {
            if self.replay.is_empty() {
                let mut batch = Vec::new();
                let room = SPOOL_IN_FLIGHT_MAX - spool.in_flight();
                match spool.next_batch_from(lanes, room.min(1024), &mut batch) {
                    Ok(damaged) if damaged > 0 => {
                        self.stats.spool_damaged.fetch_add(damaged, Relaxed);
                        warn!(damaged, "Spool: skipped damaged records; they are lost");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        error!(error = %e, "Cannot read the spool; retrying");
                        break;
                    }
                }
                if batch.is_empty() {
                    break;
                }
                self.replay.extend(batch);
            }
            let h = self.replay.front().expect("filled above");
            match self
                .sink
                .try_send(&h.routed, Origin::Spooled(h.lane, h.seq), h.made_ms)
            {
                Ok(()) => {
                    self.replay.pop_front();
                }
                Err(SendError {
                    class: ErrorClass::Retry | ErrorClass::TakenBack,
                    ..
                }) => break,
                Err(SendError {
                    class: ErrorClass::Permanent,
                    error,
                }) => {
                    let h = self.replay.pop_front().expect("front exists");
                    spool.ack(h.lane, h.seq);
                    self.stats
                        .stream(h.routed.stream)
                        .failed
                        .fetch_add(1, Relaxed);
                    error!(stream = h.routed.stream.as_str(), %error, "Spooled record can never be delivered; dropped");
                }
                Err(SendError {
                    class: ErrorClass::Fatal,
                    ..
                }) => {
                    self.fatal = true;
                    break;
                }
            }
        }
        // Back to direct sends once the spool is empty (the uplink is up: replay ran); under
        // the deferred raw policy, once no aggregate waits there (raw records always do).
        let drained = if self.deferral.is_some() {
            spool.is_empty_in(&Lane::AGGREGATES)
                && self
                    .replay
                    .iter()
                    .all(|h| !Lane::AGGREGATES.contains(&h.lane))
        } else {
            spool.is_empty() && self.replay.is_empty()
        };
        if drained {
            let actions = self
                .machine
                .on(mode::Event::SpoolEmpty, Instant::now(), wall_ms());
            for action in actions {
                debug_assert_eq!(action, Action::SpoolDrained);
                self.spool_drained();
            }
        }
    }

    /// Writes spooled records to the OS; syncs them to disk when due (or `force`), and then
    /// releases the acks of the MQTT messages they carry.
    pub(super) fn flush_spool(&mut self, force: bool) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        if let Err(e) = spool.flush() {
            for s in Stream::ALL {
                let n = e.lost[crate::stats::index(s)];
                self.stats.stream(s).dropped.fetch_add(n, Relaxed);
            }
            error!(error = %e.error, lost = e.lost.iter().sum::<u64>(), "Cannot write to the spool; records lost. Check the state_dir disk");
        }
        let due = force
            || self.last_sync.elapsed() >= self.fsync_every
            || self.pending_sync.len() >= SYNC_AT_PENDING_ACKS;
        if !due {
            return;
        }
        match spool.sync() {
            Ok(()) => {
                self.last_sync = Instant::now();
                for seq in self.pending_sync.drain(..) {
                    self.acks.done(seq);
                }
            }
            Err(e) => error!(error = %e, "Cannot sync the spool to disk; retrying"),
        }
    }
}
