//! CPU priority of the embedded broker's network threads.
//!
//! When sensors send more than the bridge can take and the CPU is the limit, rumqttd's
//! network threads (reading and parsing publishes) and the bridge's pipeline (windowing,
//! producing) compete for the same cores. At equal priority the intake wins: it keeps
//! accepting publishes that its log later drops because the starved pipeline cannot read them
//! in time. Measured on 2 cores under a flood (`BENCH_SIM_NICE=0 scripts/bench-e2e.sh`), the
//! bridge then took in 42,000-53,000 readings/s and the broker dropped about 85 %; with the
//! network threads 10 nice steps lower it took in 141,000-146,000/s and the flood itself
//! slowed (TCP backpressure on the sensors' connections). The broker's router, which feeds the
//! bridge's link, stays at the bridge's priority.

/// Nice steps between the pipeline and the broker's network threads.
pub const BROKER_NICE_INCREMENT: i32 = 10;

/// Lowers the calling thread's CPU priority by `by` nice steps (at most to 19) and returns the
/// new nice value. On Linux the nice value belongs to each thread, and threads spawned later
/// from this one inherit it. A thread may always lower its own priority.
#[cfg(target_os = "linux")]
pub fn lower_this_thread(by: i32) -> std::io::Result<i32> {
    // SAFETY: getpriority/setpriority on the calling thread (who = 0); no memory is shared.
    unsafe {
        // getpriority returns -1 both for nice -1 and for an error: errno tells them apart.
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        if now == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let target = (now + by).min(19);
        if libc::setpriority(libc::PRIO_PROCESS, 0, target) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(target)
    }
}

/// Elsewhere the nice value is per process: lowering it would slow the pipeline too.
#[cfg(not(target_os = "linux"))]
pub fn lower_this_thread(_by: i32) -> std::io::Result<i32> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "per-thread priority is only set on Linux",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn lowers_only_the_calling_thread() {
        // SAFETY: reads the calling thread's nice value.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let before = nice();
        let (inside, spawned) = std::thread::spawn(move || {
            let set = lower_this_thread(3).unwrap();
            let spawned = std::thread::spawn(nice).join().unwrap();
            (set, spawned)
        })
        .join()
        .unwrap();
        assert_eq!(inside, (before + 3).min(19));
        assert_eq!(spawned, inside, "threads spawned later inherit it");
        assert_eq!(nice(), before, "the caller's other threads keep theirs");
    }
}
