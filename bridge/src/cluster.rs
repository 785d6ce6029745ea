//! Which Kafka-API cluster a stream goes to. With `kafka.raw_brokers` set, the per-reading
//! streams (raw, late, dead letters) go to a second cluster (the site's broker, say) while
//! the aggregates go to the first (the cloud's): each has its own producer, spool, outage
//! detection and gauges, so that an outage of one never holds back the other.

use edge_bridge_core::Stream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cluster {
    /// `kafka.brokers`: the aggregates, and every stream while there is no second cluster.
    Main = 0,
    /// `kafka.raw_brokers`: raw, late and dead-letter records.
    Raw = 1,
}

impl Cluster {
    pub const ALL: [Cluster; 2] = [Cluster::Main, Cluster::Raw];

    /// The cluster `stream` goes to, with (`split`) or without a second cluster.
    pub fn of(stream: Stream, split: bool) -> Cluster {
        if split && stream != Stream::Aggregate {
            Cluster::Raw
        } else {
            Cluster::Main
        }
    }

    /// The streams this cluster takes.
    pub fn streams(self, split: bool) -> Vec<Stream> {
        Stream::ALL
            .into_iter()
            .filter(|s| Cluster::of(*s, split) == self)
            .collect()
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// A metrics label, and the name in logs and on the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Cluster::Main => "main",
            Cluster::Raw => "raw",
        }
    }

    /// The configuration key of its brokers, for messages to the operator.
    pub fn brokers_key(self) -> &'static str {
        match self {
            Cluster::Main => "kafka.brokers",
            Cluster::Raw => "kafka.raw_brokers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_reading_streams_go_to_the_second_cluster_and_aggregates_stay() {
        for s in Stream::ALL {
            assert_eq!(Cluster::of(s, false), Cluster::Main);
        }
        assert_eq!(Cluster::Main.streams(false), Stream::ALL.to_vec());
        assert!(Cluster::Raw.streams(false).is_empty());
        assert_eq!(Cluster::Main.streams(true), vec![Stream::Aggregate]);
        let raw = Cluster::Raw.streams(true);
        assert_eq!(raw.len(), 3);
        assert!(!raw.contains(&Stream::Aggregate));
    }
}
