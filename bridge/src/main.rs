//! `edge-bridge`: parses the command line and hands over to the library.

// jemalloc, also for librdkafka's C allocations (unprefixed symbols). Each record is allocated
// on the main loop's thread and freed on librdkafka's threads; glibc's malloc answered that
// pattern with a locked arena on every call, a fifth of the main loop's time. jemalloc cut the
// bridge's CPU per reading by about a quarter (BENCHMARKS.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: two arenas (the bridge has a handful of busy
/// threads, and more arenas only hold more idle memory), and freed pages returned to the system
/// within a quarter of a second, so that RSS follows the load down. librdkafka allocates and
/// frees every record, so the freed pages waiting out the decay are a few MB at any time, more
/// or less with the timing of batches: with a second's decay they varied from 3.6 to 8 MiB,
/// enough to fail the soak's 10 % bound on a 24 MiB process; a quarter of a second keeps them
/// under 5 MiB at no measurable CPU cost (BENCHMARKS.md). Without `background_thread` jemalloc
/// purges an arena only when a thread allocates in it: an arena whose threads went quiet
/// (librdkafka's, after a spool replay) kept its freed pages for good, and RSS stepped up after
/// each outage (the hour soak, BENCHMARKS.md). Allocations of 4 MiB and more get extents of
/// their own, returned to the system as soon as they are freed: librdkafka creates and frees a
/// zstd context of about 6.5 MB for every batch it compresses, and under the decay alone its
/// pages were kept or not depending on when the next batch came, so the resident set flipped
/// between two levels 6 MB apart from one second to the next. `MALLOC_CONF` in the environment
/// overrides.
#[cfg(feature = "jemalloc")]
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static malloc_conf: Option<&'static u8> = Some(
    &b"narenas:2,dirty_decay_ms:250,muzzy_decay_ms:0,background_thread:true,oversize_threshold:4194304\0"[0],
);

fn main() -> std::process::ExitCode {
    edge_bridge::cli::main()
}
