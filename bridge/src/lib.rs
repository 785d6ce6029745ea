//! The edge bridge: MQTT in, per-sensor window aggregates computed on the gateway, raw and
//! aggregated streams out to a Kafka-API cluster (Redpanda).
//!
//! The pure work (decode, window, encode) lives in `edge_bridge_core`; this crate is the shell
//! around it: configuration, MQTT intake, the main loop and the Kafka sink.

pub mod acks;
pub mod bridge;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod load;
pub mod log_throttle;
pub mod memory;
pub mod metrics;
pub mod mqtt;
pub mod outbox;
pub mod run;
pub mod sink;
pub mod spool;
pub mod state;
pub mod stats;
pub mod tasks;

pub use config::Config;
