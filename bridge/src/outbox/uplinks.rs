//! Where each stream's records go: one [`Outbox`] per Kafka-API cluster. Without
//! `kafka.raw_brokers` there is one, which takes every stream. With it, the per-reading
//! streams (raw, late, dead letters) go to the second cluster's outbox, with its own
//! producers, spool and mode machine, so that an outage of either cluster spools only its own
//! records and never holds back the other's. The MQTT acks are shared: a message's ack leaves
//! in arrival order once its record is safe, whichever cluster took it.

use std::sync::Arc;
use std::time::Duration;

use edge_bridge_core::Routed;

use tracing::info;

use super::{spool_dir, spool_of, Outbox};
use crate::acks::SharedAcks;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::mqtt::external::AckToken;
use crate::sink::{Sink, SinkError, TopicAdmin};
use crate::spool::fs::DiskFs;
use crate::spool::{Lane, Spool};
use crate::stats::Stats;
use crate::tasks::Tasks;

pub struct Uplinks {
    main: Outbox,
    /// The second cluster's, with `kafka.raw_brokers`.
    raw: Option<Outbox>,
    acks: SharedAcks<AckToken>,
}

/// The spool lanes of the per-reading streams.
const RAW_LANES: [Lane; 2] = [Lane::RescueRaw, Lane::Raw];

/// Moves what `from` holds in `lanes` to `to`, the spool of `cluster`, saying so.
fn relocate(
    from: &mut Spool<DiskFs>,
    to: &mut Spool<DiskFs>,
    lanes: &[Lane],
    cluster: Cluster,
) -> anyhow::Result<()> {
    if from.is_empty_in(lanes) {
        return Ok(());
    }
    let (moved, damaged) = from.move_to(to, lanes).map_err(|e| {
        anyhow::anyhow!("cannot move the spooled records of the other cluster layout to {}'s spool: {e}; check the state_dir disk", cluster.brokers_key())
    })?;
    info!(
        moved,
        damaged,
        to = cluster.brokers_key(),
        "Spool: records spooled before kafka.raw_brokers changed now wait in the spool of the cluster that takes their stream"
    );
    Ok(())
}

impl Uplinks {
    /// Opens each configured cluster's spool and outbox (see [`Outbox::open`]). Records a
    /// previous run spooled for the other layout (`kafka.raw_brokers` set or unset since) are
    /// first moved to the spool of the cluster that now takes their stream.
    pub fn open(config: &Config, stats: Arc<Stats>, tasks: &Tasks) -> anyhow::Result<Self> {
        let acks = SharedAcks::default();
        let split = config.kafka.has_raw_cluster();
        stats.set_split(split);
        let spool = |cluster| spool_of(config, cluster, &stats);
        let mut main_spool = spool(Cluster::Main)?;
        let mut raw_spool = if split { spool(Cluster::Raw)? } else { None };
        if let Some(main) = main_spool.as_mut() {
            match raw_spool.as_mut() {
                Some(raw) => relocate(main, raw, &RAW_LANES, Cluster::Raw)?,
                None if spool_dir(config, Cluster::Raw).is_dir() => {
                    if let Some(mut old) = spool(Cluster::Raw)? {
                        relocate(&mut old, main, &Lane::ALL, Cluster::Main)?;
                    }
                }
                None => {}
            }
        }
        let main = Outbox::open(
            config,
            Cluster::Main,
            main_spool,
            stats.clone(),
            tasks,
            acks.clone(),
        )?;
        let raw = if split {
            Some(Outbox::open(
                config,
                Cluster::Raw,
                raw_spool,
                stats,
                tasks,
                acks.clone(),
            )?)
        } else {
            None
        };
        Ok(Self { main, raw, acks })
    }

    fn outboxes(&mut self) -> impl Iterator<Item = &mut Outbox> {
        std::iter::once(&mut self.main).chain(self.raw.as_mut())
    }

    /// Sends or spools one record, through its cluster's outbox ([`Outbox::submit`]).
    pub async fn submit(
        &mut self,
        routed: Routed,
        ack: Option<AckToken>,
        made_ms: i64,
    ) -> anyhow::Result<()> {
        // The other cluster's outbox is pumped while this one waits for room.
        match (&mut self.main, &mut self.raw) {
            (main, Some(raw)) if Cluster::of(routed.stream, true) == Cluster::Raw => {
                raw.submit_beside(routed, ack, made_ms, Some(main)).await
            }
            (main, raw) => main.submit_beside(routed, ack, made_ms, raw.as_mut()).await,
        }
    }

    /// An MQTT message that made no record (its reading was left out of the raw stream and
    /// closed no window): its ack goes out in arrival order, as soon as those before it.
    pub fn nothing_to_send(&mut self, ack: AckToken) {
        let seq = self.acks.push(ack);
        self.acks.done(seq);
    }

    /// Each outbox's periodic work ([`Outbox::pump`]).
    pub async fn pump(&mut self, draining: bool) -> Result<(), SinkError> {
        for outbox in self.outboxes() {
            outbox.pump(draining).await?;
        }
        Ok(())
    }

    /// The next MQTT ack that may go out.
    pub fn pop_ack(&mut self) -> Option<AckToken> {
        self.acks.pop_ready()
    }

    /// MQTT messages whose acks wait for their record to be delivered or synced.
    pub fn unacked(&self) -> usize {
        self.acks.len()
    }

    /// Records handed to the producers of every cluster and not yet reported on.
    pub fn in_flight(&self) -> i32 {
        let raw = self.raw.as_ref().map_or(0, |o| o.sink().in_flight());
        self.main.sink().in_flight() + raw
    }

    /// What creates each cluster's topics.
    pub fn topic_admins(&self) -> Vec<TopicAdmin> {
        std::iter::once(&self.main)
            .chain(self.raw.as_ref())
            .map(|o| o.sink().admin_handle())
            .collect()
    }

    /// At a clean stop, each outbox's ([`Outbox::shutdown`]), at the same time: a cluster that
    /// is down does not take the other's time. Returns records lost for want of a spool.
    pub async fn shutdown(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        match &mut self.raw {
            None => self.main.shutdown(timeout).await,
            Some(raw) => {
                let (main, raw) = tokio::join!(self.main.shutdown(timeout), raw.shutdown(timeout));
                Ok(main? + raw?)
            }
        }
    }
}
