//! MQTT acknowledgements in arrival order, each released only when its message is safe.
//!
//! MQTT requires QoS 1 acks in the order the messages arrived, but records are confirmed by
//! Kafka in any order across partitions. Each message takes a sequence number on arrival; it
//! is marked done when its record is delivered or durably spooled; acks go out for the longest
//! done prefix.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct AckQueue<T> {
    /// Sequence number of `items[0]`.
    base: u64,
    items: VecDeque<(T, bool)>,
}

impl<T> Default for AckQueue<T> {
    fn default() -> Self {
        Self {
            base: 0,
            items: VecDeque::new(),
        }
    }
}

impl<T> AckQueue<T> {
    /// Registers a message; returns its sequence number.
    pub fn push(&mut self, token: T) -> u64 {
        self.items.push_back((token, false));
        self.base + self.items.len() as u64 - 1
    }

    /// Marks message `seq` safe. Unknown or already released numbers are ignored.
    pub fn done(&mut self, seq: u64) {
        if let Some(i) = seq.checked_sub(self.base) {
            if let Some(item) = self.items.get_mut(i as usize) {
                item.1 = true;
            }
        }
    }

    /// The next ack that may go out.
    pub fn pop_ready(&mut self) -> Option<T> {
        if self.items.front().is_some_and(|(_, done)| *done) {
            self.base += 1;
            return self.items.pop_front().map(|(t, _)| t);
        }
        None
    }

    /// Messages not yet acknowledged.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// One [`AckQueue`] shared by the outboxes of both clusters (`kafka.raw_brokers`): a message's
/// record may go to either, and its ack must still leave in arrival order. Only the main
/// loop touches it, so the lock is never contended.
#[derive(Debug)]
pub struct SharedAcks<T>(Arc<Mutex<AckQueue<T>>>);

impl<T> Clone for SharedAcks<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for SharedAcks<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T> SharedAcks<T> {
    fn queue(&self) -> std::sync::MutexGuard<'_, AckQueue<T>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See [`AckQueue::push`].
    pub fn push(&self, token: T) -> u64 {
        self.queue().push(token)
    }

    /// See [`AckQueue::done`].
    pub fn done(&self, seq: u64) {
        self.queue().done(seq)
    }

    /// See [`AckQueue::pop_ready`].
    pub fn pop_ready(&self) -> Option<T> {
        self.queue().pop_ready()
    }

    pub fn len(&self) -> usize {
        self.queue().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn releases_in_arrival_order_only() {
        let mut q = AckQueue::default();
        let a = q.push('a');
        let b = q.push('b');
        let c = q.push('c');
        q.done(c);
        q.done(b);
        assert_eq!(q.pop_ready(), None, "a is not safe yet");
        q.done(a);
        assert_eq!(q.pop_ready(), Some('a'));
        assert_eq!(q.pop_ready(), Some('b'));
        assert_eq!(q.pop_ready(), Some('c'));
        assert!(q.is_empty());
        q.done(a); // late duplicate report: ignored
        let d = q.push('d');
        assert_eq!(d, 3);
        assert_eq!(q.pop_ready(), None);
    }

    proptest! {
        /// Whatever order messages become safe in, acks come out in arrival order, each once,
        /// and none before its message is safe.
        #[test]
        fn any_completion_order(order in Just((0..50u64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut q = AckQueue::default();
            for i in 0..50u64 { q.push(i); }
            let mut safe = std::collections::BTreeSet::new();
            let mut out = Vec::new();
            for s in order {
                q.done(s);
                safe.insert(s);
                while let Some(t) = q.pop_ready() {
                    prop_assert!(safe.contains(&t));
                    out.push(t);
                }
            }
            prop_assert_eq!(out, (0..50).collect::<Vec<_>>());
        }
    }
}
