//! glibc's allocator, held to a daemon's footprint. By default every thread that
//! allocates while another holds the lock gets an arena of its own (up to eight per
//! core), and the libvirt calls that hop between blocking threads leave freed memory
//! scattered over all of them; nor does glibc give memory freed inside a heap back to
//! the system. So: one arena (kimchid allocates little, and rarely from two threads
//! at once), and what is free is returned now and then.

use std::time::Duration;

/// Arenas for the whole process: the async workers and the blocking pool share it.
const ARENAS: libc::c_int = 1;
/// How often free memory goes back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Call first thing, before threads allocate.
pub fn limit_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; it has no memory effects.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    if ok == 0 {
        eprintln!("kimchid: mallopt(M_ARENA_MAX) refused; the allocator keeps its defaults");
    }
}

/// Returns free memory to the system every [`TRIM_EVERY`] for as long as kimchid runs.
pub async fn trim_periodically() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    loop {
        every.tick().await;
        // SAFETY: malloc_trim only releases free pages; no live allocation moves.
        unsafe { libc::malloc_trim(0) };
    }
}
