//! Which filters the external broker's session holds, across restarts of the bridge.
//!
//! With a persistent session, a broker keeps the bridge's subscriptions while it is away and
//! says so at the next connect (`session_present`). Subscribing again to a filter it holds is
//! not free: the broker re-sends the filter's retained messages, which would be taken as new
//! readings. So the bridge records the filters it subscribed in `state_dir`, and at a connect
//! to a kept session subscribes only the filters the routes gained since, and unsubscribes
//! those they lost. Without a record (a first start with this file), it subscribes to all.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spool::fs::{DiskFs, Fs};

const FILE: &str = "mqtt-subscriptions.json";

/// What to ask of the broker after a connect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
}

/// The subscriptions to make after a connect: every filter when the broker has no session
/// for the bridge, or none is on record; else the difference between the record and `filters`.
pub fn plan(session_present: bool, recorded: Option<&[String]>, filters: &[String]) -> Plan {
    match (session_present, recorded) {
        (true, Some(held)) => Plan {
            subscribe: filters
                .iter()
                .filter(|f| !held.contains(f))
                .cloned()
                .collect(),
            unsubscribe: held
                .iter()
                .filter(|f| !filters.contains(f))
                .cloned()
                .collect(),
        },
        _ => Plan {
            subscribe: filters.to_vec(),
            unsubscribe: Vec::new(),
        },
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    /// The session's client id and broker: another one is another session.
    client_id: String,
    broker: String,
    filters: Vec<String>,
}

/// The record of one session (client id at a broker) in `state_dir`.
#[derive(Debug, Clone)]
pub struct Record {
    path: PathBuf,
    client_id: String,
    broker: String,
}

impl Record {
    pub fn new(state_dir: &Path, client_id: &str, broker: &str) -> Self {
        Self {
            path: state_dir.join(FILE),
            client_id: client_id.to_owned(),
            broker: broker.to_owned(),
        }
    }

    /// The filters on record for this session, if any.
    pub fn load(&self) -> Option<Vec<String>> {
        let data = std::fs::read(&self.path).ok()?;
        let saved: Saved = serde_json::from_slice(&data).ok()?;
        (saved.client_id == self.client_id && saved.broker == self.broker).then_some(saved.filters)
    }

    /// Records `filters` as what the session holds.
    pub fn save(&self, filters: &[String]) -> std::io::Result<()> {
        let saved = Saved {
            client_id: self.client_id.clone(),
            broker: self.broker.clone(),
            filters: filters.to_vec(),
        };
        let data = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
        DiskFs.write_atomic(&self.path, &data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_kept_session_gets_only_the_difference() {
        let now = v(&["zigbee2mqtt/#", "tele/+/SENSOR"]);
        assert_eq!(
            plan(false, Some(&now), &now).subscribe,
            now,
            "a new session: all"
        );
        assert_eq!(
            plan(true, None, &now).subscribe,
            now,
            "nothing on record: all"
        );
        assert_eq!(
            plan(true, Some(&now), &now),
            Plan::default(),
            "unchanged: nothing"
        );
        let before = v(&["sensors/+/temperature", "tele/+/SENSOR"]);
        assert_eq!(
            plan(true, Some(&before), &now),
            Plan {
                subscribe: v(&["zigbee2mqtt/#"]),
                unsubscribe: v(&["sensors/+/temperature"]),
            }
        );
    }

    #[test]
    fn the_record_belongs_to_one_session() {
        let dir = tempfile::tempdir().unwrap();
        let r = Record::new(dir.path(), "edge-bridge", "mqtt://broker:1883");
        assert_eq!(r.load(), None);
        r.save(&v(&["a/+"])).unwrap();
        assert_eq!(r.load(), Some(v(&["a/+"])));
        assert_eq!(
            Record::new(dir.path(), "other", "mqtt://broker:1883").load(),
            None
        );
        assert_eq!(
            Record::new(dir.path(), "edge-bridge", "mqtt://other:1883").load(),
            None
        );
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert_eq!(r.load(), None);
    }
}
