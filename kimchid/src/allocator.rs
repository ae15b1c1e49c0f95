//! glibc's allocator, held to a daemon's footprint. By default every thread that
//! allocates while another holds the lock gets an arena of its own (up to eight per
//! core), and the libvirt calls that hop between blocking threads leave freed memory
//! scattered over all of them; nor does glibc give memory freed inside a heap back to
//! the system, and after the first large block is freed it serves large blocks (a
//! listing of every guest, a volume list) from the heap too, where they leave holes.
//! So: one arena (kimchid allocates little, and rarely from two threads at once),
//! large blocks always mapped on their own, and what is free returned now and then.

use std::time::Duration;

/// Arenas for the whole process: the async workers and the blocking pool share it.
const ARENAS: libc::c_int = 1;
/// Blocks at least this large are mapped on their own and unmapped when freed (glibc's
/// initial threshold, held: by default it rises with the largest block freed).
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
/// How often free memory goes back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Call first thing, before threads allocate.
pub fn configure() {
    for (parameter, name, value) in [
        (libc::M_ARENA_MAX, "M_ARENA_MAX", ARENAS),
        (libc::M_MMAP_THRESHOLD, "M_MMAP_THRESHOLD", MMAP_THRESHOLD),
    ] {
        // SAFETY: mallopt only sets an allocator parameter; it has no memory effects.
        if unsafe { libc::mallopt(parameter, value) } == 0 {
            eprintln!("kimchid: mallopt({name}) refused; the allocator keeps its default");
        }
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
