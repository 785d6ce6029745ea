//! Where each stream's records go: one [`Outbox`] per Kafka-API cluster. Without
//! `kafka.raw_brokers` there is one, which takes every stream. With it, the per-reading
//! streams (raw, late, dead letters) go to the second cluster's outbox, with its own
//! producers, spool and mode machine, so that an outage of either cluster spools only its own
//! records and never holds back the other's. The MQTT acks are shared: a message's ack leaves
//! in arrival order once its record is safe, whichever cluster took it.

use std::sync::Arc;
use std::time::Duration;

use edge_bridge_core::{Routed, Stream};

use super::Outbox;
use crate::acks::SharedAcks;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::mqtt::external::AckToken;
use crate::sink::{Sink, SinkError, TopicAdmin};
use crate::stats::Stats;
use crate::tasks::Tasks;

pub struct Uplinks {
    main: Outbox,
    /// The second cluster's, with `kafka.raw_brokers`.
    raw: Option<Outbox>,
    acks: SharedAcks<AckToken>,
}

impl Uplinks {
    /// Opens the outbox of each configured cluster (see [`Outbox::open`]).
    pub fn open(config: &Config, stats: Arc<Stats>, tasks: &Tasks) -> anyhow::Result<Self> {
        let acks = SharedAcks::default();
        let split = config.kafka.raw_cluster().is_some();
        stats.set_split(split);
        let main = Outbox::open(config, Cluster::Main, stats.clone(), tasks, acks.clone())?;
        let raw = if split {
            Some(Outbox::open(
                config,
                Cluster::Raw,
                stats,
                tasks,
                acks.clone(),
            )?)
        } else {
            None
        };
        Ok(Self { main, raw, acks })
    }

    fn outbox_of(&mut self, stream: Stream) -> &mut Outbox {
        match &mut self.raw {
            Some(raw) if Cluster::of(stream, true) == Cluster::Raw => raw,
            _ => &mut self.main,
        }
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
        self.outbox_of(routed.stream)
            .submit(routed, ack, made_ms)
            .await
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
