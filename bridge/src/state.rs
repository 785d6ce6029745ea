//! Open windows saved across restarts: `state_dir/windows.json`, replaced atomically.
//!
//! Saved at every clean stop (the open windows are then not emitted) and every
//! `window.save_interval`; loaded at start. JSON because it is small (about 100 bytes per
//! sensor) and an operator can read it.

use std::io;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use edge_bridge_core::WindowSnapshot;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::DEFAULT_ROUTE;
use crate::spool::fs::{DiskFs, Fs};

const FILE: &str = "windows.json";
/// Version 2 keeps each route's windows under its name. Version 1 (one route, before routes
/// existed) is read as the windows of the route without `[[routes]]`.
const VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    version: u32,
    /// Written by a clean stop (false: a periodic save, the process may have died after it).
    clean: bool,
    saved_at_ms: i64,
    /// Version 1's windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    windows: Option<WindowSnapshot>,
    /// Version 2: by route name.
    #[serde(default)]
    routes: BTreeMap<String, WindowSnapshot>,
}

/// A loaded state file.
#[derive(Debug)]
pub struct Loaded {
    /// Open windows by route name.
    pub routes: BTreeMap<String, WindowSnapshot>,
    pub clean: bool,
    pub saved_at_ms: i64,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

pub fn save(
    state_dir: &Path,
    routes: BTreeMap<String, WindowSnapshot>,
    clean: bool,
    now_ms: i64,
) -> io::Result<()> {
    let saved = Saved {
        version: VERSION,
        clean,
        saved_at_ms: now_ms,
        windows: None,
        routes,
    };
    let data = serde_json::to_vec(&saved).map_err(io::Error::other)?;
    DiskFs.write_atomic(&path(state_dir), &data)
}

/// The saved state, if any. A file that cannot be read as one is set aside (renamed with a
/// `.bad` suffix, so an operator can look at it) and the bridge starts with no open windows.
pub fn load(state_dir: &Path) -> io::Result<Option<Loaded>> {
    let p = path(state_dir);
    let data = match std::fs::read(&p) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice::<Saved>(&data) {
        Ok(s) if s.version == VERSION => Ok(Some(Loaded {
            routes: s.routes,
            clean: s.clean,
            saved_at_ms: s.saved_at_ms,
        })),
        Ok(Saved {
            version: 1,
            windows: Some(windows),
            clean,
            saved_at_ms,
            ..
        }) => Ok(Some(Loaded {
            routes: BTreeMap::from([(DEFAULT_ROUTE.to_owned(), windows)]),
            clean,
            saved_at_ms,
        })),
        Ok(s) => {
            set_aside(&p, &format!("unknown version {}", s.version))?;
            Ok(None)
        }
        Err(e) => {
            set_aside(&p, &e.to_string())?;
            Ok(None)
        }
    }
}

fn set_aside(p: &Path, why: &str) -> io::Result<()> {
    let bad = p.with_extension("json.bad");
    warn!(file = %p.display(), moved_to = %bad.display(), why, "Saved window state is unreadable; starting without it (its open windows are lost)");
    std::fs::rename(p, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_bridge_core::{WindowOptions, Windower};

    #[test]
    fn round_trips_and_sets_aside_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let mut w = Windower::new(WindowOptions::default()).unwrap();
        w.record("s", 1_718_000_001_000, 2.5, 0, &mut Vec::new());
        let routes = BTreeMap::from([("zigbee".to_owned(), w.snapshot())]);
        save(dir.path(), routes.clone(), true, 42).unwrap();
        let l = load(dir.path()).unwrap().unwrap();
        assert!(l.clean);
        assert_eq!(l.saved_at_ms, 42);
        assert_eq!(l.routes, routes);
        std::fs::write(path(dir.path()), b"{not json").unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        assert!(dir.path().join("windows.json.bad").exists());
    }

    /// A file saved before routes existed: its windows are the default route's.
    #[test]
    fn reads_version_1_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Windower::new(WindowOptions::default()).unwrap();
        w.record("s", 1_718_000_001_000, 2.5, 0, &mut Vec::new());
        let v1 = serde_json::json!({
            "version": 1, "clean": false, "saved_at_ms": 7, "windows": w.snapshot()
        });
        std::fs::write(path(dir.path()), serde_json::to_vec(&v1).unwrap()).unwrap();
        let l = load(dir.path()).unwrap().unwrap();
        assert_eq!((l.clean, l.saved_at_ms), (false, 7));
        assert_eq!(
            l.routes,
            BTreeMap::from([(DEFAULT_ROUTE.to_owned(), w.snapshot())])
        );
        // A version that is neither is set aside, not guessed at.
        std::fs::write(
            path(dir.path()),
            br#"{"version":3,"clean":true,"saved_at_ms":1}"#,
        )
        .unwrap();
        assert!(load(dir.path()).unwrap().is_none());
    }
}
