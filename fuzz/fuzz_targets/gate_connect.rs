//! The gate's CONNECT parser (`mqtt/gate.rs`) on the first bytes any client sends, before it
//! is authenticated: byte 0 is how many bytes arrive per read, the rest is what arrives. See
//! `edge_bridge::fuzzing::gate_connect` for the properties checked (among them: the broker
//! reads the same client id and credentials the gate checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    edge_bridge::fuzzing::gate_connect(rest, usize::from(chunk));
});
