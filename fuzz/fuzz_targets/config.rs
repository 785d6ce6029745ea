//! The configuration loader (`load.rs`, `config/`) on any file given as the configuration. See
//! `edge_bridge::fuzzing::config_file` for the properties (among them: what it accepts, written
//! back as TOML, loads to the same configuration).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edge_bridge::fuzzing::config_file(data);
});
