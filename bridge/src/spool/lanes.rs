//! The spool's lane policy: which lane a record goes to, the order in which lanes are
//! replayed, and which lanes give way when the spool is full. The storage engine
//! ([`super::Spool`]) only applies it; a new policy (raw readings deferred to idle times, say)
//! changes this file, not the engine.

use edge_bridge_core::Stream;

/// A spool lane; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    RescueAggregate,
    Aggregate,
    RescueRaw,
    Raw,
}

impl Lane {
    /// In replay order.
    pub const ALL: [Lane; 4] = [
        Lane::RescueAggregate,
        Lane::Aggregate,
        Lane::RescueRaw,
        Lane::Raw,
    ];

    /// The lanes of aggregates, replayed first: what the deferred raw policy lets through
    /// outside its window.
    pub const AGGREGATES: [Lane; 2] = [Lane::RescueAggregate, Lane::Aggregate];

    /// The lane a new record of `stream` is spooled to.
    pub fn for_stream(stream: Stream) -> Lane {
        match stream {
            Stream::Aggregate => Lane::Aggregate,
            Stream::Raw | Stream::Late | Stream::DeadLetter => Lane::Raw,
        }
    }

    /// The lane a record of `stream` taken back from the producer is spooled to.
    pub fn rescue_for(stream: Stream) -> Lane {
        match stream {
            Stream::Aggregate => Lane::RescueAggregate,
            Stream::Raw | Stream::Late | Stream::DeadLetter => Lane::RescueRaw,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::RescueAggregate => "rescue-aggregate",
            Lane::Aggregate => "aggregate",
            Lane::RescueRaw => "rescue-raw",
            Lane::Raw => "raw",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Lanes whose oldest segments are dropped to make room when the spool is full, in this order:
/// raw readings go first (those taken back from the producer before newer ones); aggregates
/// are never dropped to make room, only refused when nothing else is left.
pub const DROP_ORDER: [Lane; 2] = [Lane::RescueRaw, Lane::Raw];
