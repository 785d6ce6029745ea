//! The process's memory as an operator watches it: the resident set the kernel counts (what a
//! container's limit and the OOM killer see) and, with jemalloc, the allocator's own figures,
//! which tell memory the program holds from freed pages the allocator keeps. A resident set
//! that grows while `allocated` stays flat is the allocator, not a leak.

/// One reading of the process's memory, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// The process's resident set (`/proc/self/statm`); 0 where there is no procfs.
    pub resident: u64,
    /// The allocator's figures; `None` in builds without jemalloc.
    pub heap: Option<Heap>,
}

/// jemalloc's statistics (`stats.*`), read at one epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heap {
    /// Bytes in allocations the program (Rust and librdkafka's C) holds.
    pub allocated: u64,
    /// Bytes in pages holding those allocations: `allocated` plus the gaps between them.
    pub active: u64,
    /// Bytes of the allocator's pages in memory: `active`, its metadata, and freed pages not yet
    /// returned to the system.
    pub resident: u64,
}

/// Reads the process's memory now.
pub fn sample() -> Memory {
    Memory {
        resident: resident_set().unwrap_or(0),
        heap: heap(),
    }
}

/// The resident set from `/proc/self/statm` (its second field, in pages).
fn resident_set() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages = parse_statm_resident(&statm)?;
    // SAFETY: sysconf has no preconditions; it reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|p| pages * p)
}

fn parse_statm_resident(statm: &str) -> Option<u64> {
    statm.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(feature = "jemalloc")]
fn heap() -> Option<Heap> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // jemalloc caches its statistics; advancing the epoch refreshes them (a few microseconds,
    // once per scrape).
    epoch::advance().ok()?;
    Some(Heap {
        allocated: stats::allocated::read().ok()? as u64,
        active: stats::active::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

#[cfg(not(feature = "jemalloc"))]
fn heap() -> Option<Heap> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statm_resident_is_the_second_field() {
        assert_eq!(
            parse_statm_resident("5000 1234 300 10 0 900 0\n"),
            Some(1234)
        );
        assert_eq!(parse_statm_resident("5000"), None);
        assert_eq!(parse_statm_resident(""), None);
        assert_eq!(parse_statm_resident("5000 x"), None);
    }

    #[test]
    fn a_sample_sees_this_process_and_its_allocations() {
        let before = sample();
        assert!(before.resident > 0, "a test process has a resident set");
        #[cfg(feature = "jemalloc")]
        {
            // Whether jemalloc is this process's allocator depends on the binary; its
            // statistics answer either way, and allocated never exceeds active or resident.
            let h = before.heap.expect("jemalloc's statistics are built in");
            assert!(h.allocated <= h.active && h.active <= h.resident, "{h:?}");
        }
    }
}
