//! Repeating log lines, written at most once per key per period with the count held back.
//! Callers with one kind of line use a single key ("").
//!
//! While the uplink is down, librdkafka reports the same connection failure every second or
//! so, through both its log and its error callbacks: written out each time, that was about 7
//! WARN lines a second, some 600,000 a day on a gateway's flash.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub struct LogThrottle {
    every: Duration,
    /// Per key: when a line was last written, and how many were held back since.
    keys: HashMap<String, (Instant, u64)>,
}

impl LogThrottle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            keys: HashMap::new(),
        }
    }

    /// Whether a line with this key is written now: `Some(held back since the last one)`, or
    /// `None` (counted) when one was written less than the period ago.
    pub fn admit(&mut self, key: &str, now: Instant) -> Option<u64> {
        match self.keys.get_mut(key) {
            Some((last, held)) if now.duration_since(*last) < self.every => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                self.keys.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_and_period_with_the_count_held_back() {
        let mut t = LogThrottle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.admit("a", at(0)), Some(0));
        assert_eq!(t.admit("b", at(1)), Some(0), "keys are independent");
        for s in 1..60 {
            assert_eq!(t.admit("a", at(s)), None);
        }
        assert_eq!(t.admit("a", at(60)), Some(59));
        assert_eq!(t.admit("a", at(61)), None);
        assert_eq!(t.admit("a", at(200)), Some(1));
        assert_eq!(t.admit("b", at(200)), Some(0));
    }
}
