//! The pure core of the edge bridge: no IO, no clock reads, no async.
//!
//! Data flow: payload bytes -> [`decode`] -> [`Reading`] -> [`window`] -> [`encode`] records.
//! Time enters only as arguments (arrival time for decoding, wall-clock time for idle flushes),
//! which keeps every function here deterministic and exhaustively testable.

pub mod decode;
pub mod timestamp;
pub mod topic;

pub use decode::{DecodeError, DecodeOptions, Decoder, Reading, SensorIdSource};
pub mod aggregate;
pub mod window;

pub use aggregate::Aggregate;
pub use window::{
    Admission, CloseCause, ClosedWindow, Refusal, RestoreError, WindowOptions, WindowSnapshot,
    Windower,
};
pub mod encode;

pub use encode::{record_id, EncodeOptions, Encoder, IdStream, OutRecord, TopicHeader};
pub mod pipeline;
pub mod raw_policy;

pub use raw_policy::{DailyWindow, RawPolicy};

pub use pipeline::{
    Pipeline, RouteTopics, Routed, Stream, TopicName, Verdict, BURST_KEEP, IGNORED_REASONS,
};
pub mod field_path;
pub mod route;
pub mod router;
pub mod sparkplug;

pub use route::{MeasurementSpec, NoMeasurement, PayloadFormat, RouteOptions, SensorRule};
pub use router::{Restored, Router, RouterError};
