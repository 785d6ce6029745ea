//! `edge-sim`: stand-in sensor firmware. [`dataset`] decides what to send (pure, seeded), in
//! the shapes of a family of devices ([`profile`]);
//! [`publish`] sends it over MQTT at a pace or as fast as the broker takes it.

pub mod dataset;
pub mod profile;
pub mod publish;
pub mod sparkplug;
