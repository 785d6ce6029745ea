//! What the fuzz targets share: an arbitrary record as the spool stores it.

use arbitrary::Arbitrary;
use bytes::Bytes;
use edge_bridge_core::{OutRecord, Routed, Stream};

#[derive(Debug, Arbitrary)]
pub struct Record {
    stream: u8,
    timestamp_ms: i64,
    made_ms: i64,
    key: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    value: Vec<u8>,
    /// A route's own topic (Kafka allows at most 249 characters; longer ones become none).
    topic: Option<String>,
}

impl Record {
    /// The routed record and its made-at time.
    pub fn routed_made(self) -> (Routed, i64) {
        let stream = match self.stream % 4 {
            0 => Stream::Raw,
            1 => Stream::Aggregate,
            2 => Stream::DeadLetter,
            _ => Stream::Late,
        };
        let routed = Routed {
            stream,
            record: OutRecord {
                key: Bytes::from(self.key),
                value: Bytes::from(self.value),
                timestamp_ms: self.timestamp_ms,
                headers: self
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.into(), Bytes::from(v)))
                    .collect(),
            },
            topic: self.topic.filter(|t| t.len() <= 249).map(Into::into),
        };
        (routed, self.made_ms)
    }
}
