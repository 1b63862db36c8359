//! BUGGIFY seams (FoundationDB's): where the simulation may let other tasks run between a read
//! and the write that depends on it.

/// A seam where a multi-threaded runtime may run other tasks: between a read and the write that
/// depends on it (a store access, a handler's decision). madsim switches tasks only at an
/// `.await`, so a read-decide-write with no `.await` inside never interleaves in the simulation,
/// though it does on the services' multi-threaded runtime. Under madsim with seams switched on
/// (`set_seams`, FoundationDB's BUGGIFY), a seam waits up to [`SEAM_MAX_MS`] of simulated time
/// with chance `SEAM_CHANCE`, drawn from the simulation's seeded generator, so that other tasks
/// run in between; otherwise, and in every other build, it does nothing. (madsim's own buggify
/// switch is not used: it also delays one network message in ten by seconds.)
#[cfg(not(madsim))]
#[inline(always)]
pub async fn seam() {}

/// The longest a seam waits, in simulated milliseconds.
pub const SEAM_MAX_MS: u64 = 50;

/// The chance, in thousandths, that a switched-on seam waits.
pub const SEAM_CHANCE_PER_MILLE: u64 = 100;

#[cfg(madsim)]
thread_local! {
    static SEAMS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Switches this thread's seams on or off (a simulation's scenario says which).
#[cfg(madsim)]
pub fn set_seams(on: bool) {
    SEAMS.with(|s| s.set(on));
}

#[cfg(madsim)]
pub async fn seam() {
    use tokio::madsim::rand::random;
    if SEAMS.with(std::cell::Cell::get) && random::<u64>() % 1000 < SEAM_CHANCE_PER_MILLE {
        let ms = random::<u64>() % (SEAM_MAX_MS + 1);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}
