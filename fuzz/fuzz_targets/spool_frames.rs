//! The spool's frame reader (`spool/frame.rs`): on any bytes, as a damaged segment file holds
//! them, and on frames the spool's writer made, read whole and cut where a crash would cut
//! them. See `edge_bridge::fuzzing::{spool_scan, spool_round_trip}` for the properties.
#![no_main]

use arbitrary::Arbitrary;
use edge_bridge_fuzz::Record;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Input {
    Bytes {
        expected_seq: Option<u64>,
        data: Vec<u8>,
    },
    Written {
        records: Vec<Record>,
        first_seq: u64,
        cut: usize,
    },
}

fuzz_target!(|input: Input| {
    match input {
        Input::Bytes { expected_seq, data } => {
            edge_bridge::fuzzing::spool_scan(&data, expected_seq)
        }
        Input::Written {
            records,
            first_seq,
            cut,
        } => {
            let records: Vec<_> = records.into_iter().map(Record::routed_made).collect();
            edge_bridge::fuzzing::spool_round_trip(&records, first_seq, cut)
        }
    }
});
