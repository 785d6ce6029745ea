//! Bytes on the wire between the producer and the Kafka brokers: what a metered uplink bills,
//! not the key and value bytes of the records. librdkafka counts, per broker connection, the
//! bytes it writes to and reads from the socket (`txbytes`, `rxbytes` in its statistics):
//! Kafka protocol framing, record batch headers, compression and request retries included;
//! TLS record overhead and TCP/IP headers not. Its statistics arrive every
//! [`STATISTICS_INTERVAL_MS`]; each producer counts from zero, so what this meter adds to the
//! bridge's counters is the growth since the producer's previous report.

use std::sync::Mutex;

use rdkafka::statistics::Statistics;

/// How often librdkafka reports its statistics, hence how fresh the wire counters are.
pub const STATISTICS_INTERVAL_MS: u32 = 1_000;

/// Bytes written to and read from the brokers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WireBytes {
    pub sent: u64,
    pub received: u64,
}

/// One producer's running totals, as of its last statistics report.
#[derive(Debug, Default)]
pub struct WireMeter {
    last: Mutex<WireBytes>,
}

impl WireMeter {
    /// The bytes moved since the previous report of the same producer.
    pub fn observe(&self, stats: &Statistics) -> WireBytes {
        let now = totals(stats);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let grown = growth(*last, now);
        *last = now;
        grown
    }
}

/// Sums over the producer's broker connections (bootstrap connections included: their
/// metadata requests cross the uplink too).
pub fn totals(stats: &Statistics) -> WireBytes {
    stats
        .brokers
        .values()
        .fold(WireBytes::default(), |acc, b| WireBytes {
            sent: acc.sent + b.txbytes,
            received: acc.received + b.rxbytes,
        })
}

/// The producer's request round-trip time in the last statistics interval, in microseconds:
/// the largest of its brokers' mean round trips (librdkafka's `rtt` window), from request sent
/// to response read. 0 when no request was answered in the interval. A broker that slows down
/// shows here before the records waiting for their reports pile up.
pub fn round_trip_us(stats: &Statistics) -> u64 {
    stats
        .brokers
        .values()
        .filter_map(|b| b.rtt.as_ref())
        .filter(|w| w.cnt > 0)
        .map(|w| u64::try_from(w.avg).unwrap_or(0))
        .max()
        .unwrap_or(0)
}

/// What grew from `last` to `now`. A broker librdkafka forgot (decommissioned) takes its
/// bytes out of the total: the total then shrinks, and nothing is added until it grows again
/// (what the forgotten broker moved was counted while it was known).
fn growth(last: WireBytes, now: WireBytes) -> WireBytes {
    WireBytes {
        sent: now.sent.saturating_sub(last.sent),
        received: now.received.saturating_sub(last.received),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(brokers: &[(&str, u64, u64)]) -> Statistics {
        let mut s = Statistics::default();
        for (name, tx, rx) in brokers {
            let broker = rdkafka::statistics::Broker {
                txbytes: *tx,
                rxbytes: *rx,
                ..Default::default()
            };
            s.brokers.insert(name.to_string(), broker);
        }
        s
    }

    #[test]
    fn sums_every_connection_and_adds_only_growth() {
        let meter = WireMeter::default();
        let first = meter.observe(&stats(&[("boot", 100, 50), ("b1", 1_000, 200)]));
        assert_eq!(
            first,
            WireBytes {
                sent: 1_100,
                received: 250
            }
        );
        let second = meter.observe(&stats(&[("boot", 100, 50), ("b1", 1_600, 260)]));
        assert_eq!(
            second,
            WireBytes {
                sent: 600,
                received: 60
            }
        );
        // The bootstrap connection forgotten: nothing added until the total grows again.
        let third = meter.observe(&stats(&[("b1", 1_650, 270)]));
        assert_eq!(third, WireBytes::default());
        let fourth = meter.observe(&stats(&[("b1", 1_700, 280)]));
        assert_eq!(
            fourth,
            WireBytes {
                sent: 50,
                received: 10
            }
        );
    }

    #[test]
    fn round_trip_is_the_slowest_answering_broker() {
        let window = |avg, cnt| rdkafka::statistics::Window {
            avg,
            cnt,
            ..Default::default()
        };
        let mut s = stats(&[("boot", 0, 0), ("b1", 0, 0), ("b2", 0, 0)]);
        assert_eq!(round_trip_us(&s), 0, "no window yet");
        s.brokers.get_mut("b1").unwrap().rtt = Some(window(1_500, 10));
        s.brokers.get_mut("b2").unwrap().rtt = Some(window(40_000, 3));
        // A broker with no answer in the interval (cnt 0) is not counted, whatever its mean.
        s.brokers.get_mut("boot").unwrap().rtt = Some(window(900_000, 0));
        assert_eq!(round_trip_us(&s), 40_000);
        s.brokers.get_mut("b2").unwrap().rtt = Some(window(40_000, 0));
        assert_eq!(round_trip_us(&s), 1_500);
    }
}
