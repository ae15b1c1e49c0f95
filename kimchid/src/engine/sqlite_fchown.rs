//! SQLite, run as root, gives every journal, WAL and shared-memory file it opens the
//! owner of its database with fchown(2), even when that owner is already right, as it
//! always is in kimchid's state directory. kimchid.service refuses fchown (seccomp):
//! SQLite's fchown goes through a check that makes the call only for a real change.

use std::ffi::c_int;
use std::sync::Once;

use rusqlite::ffi;

/// SQLite's name for the call in its unix VFS's system call table.
const FCHOWN: &std::ffi::CStr = c"fchown";

/// Routes SQLite's fchown through `fchown_if_needed`. Runs once, before the first
/// database is opened (SQLite's system call table may not change under open files).
pub fn skip_needless_fchown() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let replacement: unsafe extern "C" fn(c_int, libc::uid_t, libc::gid_t) -> c_int =
            fchown_if_needed;
        // SAFETY: SQLite keeps system calls as untyped pointers and calls this one back
        // with fchown's signature, which `fchown_if_needed` has.
        let pointer: ffi::sqlite3_syscall_ptr = Some(unsafe {
            std::mem::transmute::<
                unsafe extern "C" fn(c_int, libc::uid_t, libc::gid_t) -> c_int,
                unsafe extern "C" fn(),
            >(replacement)
        });
        // SAFETY: the default VFS lives as long as the process; no database is open yet.
        let replaced = unsafe {
            let vfs = ffi::sqlite3_vfs_find(std::ptr::null());
            match vfs.as_ref().and_then(|v| v.xSetSystemCall) {
                Some(set) => set(vfs, FCHOWN.as_ptr(), pointer) == ffi::SQLITE_OK,
                None => false,
            }
        };
        if !replaced {
            tracing::warn!("SQLite's fchown could not be replaced: it may be refused at start");
        }
    });
}

/// fchown(2) unless `fd` already has that owner and group.
unsafe extern "C" fn fchown_if_needed(fd: c_int, uid: libc::uid_t, gid: libc::gid_t) -> c_int {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the whole struct when it returns 0.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } == 0 {
        let stat = unsafe { stat.assume_init() };
        if stat.st_uid == uid && stat.st_gid == gid {
            return 0;
        }
    }
    // SAFETY: plain system call on the caller's descriptor.
    unsafe { libc::fchown(fd, uid, gid) }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn sqlite_calls_the_check_instead_of_fchown() {
        skip_needless_fchown();
        // SAFETY: reads the default VFS's table entry.
        let installed = unsafe {
            let vfs = ffi::sqlite3_vfs_find(std::ptr::null());
            let get = (*vfs)
                .xGetSystemCall
                .expect("unix VFS has a system call table");
            get(vfs, FCHOWN.as_ptr())
        };
        assert_eq!(
            installed.map(|f| f as usize),
            Some(fchown_if_needed as *const () as usize),
            "SQLite still calls fchown directly"
        );
    }

    #[test]
    fn the_check_changes_only_what_differs() {
        let dir = std::env::temp_dir().join(format!("kimchid-fchown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::File::create(dir.join("f")).unwrap();
        let meta = file.metadata().unwrap();
        // SAFETY: the descriptor is open for the call.
        let same = unsafe { fchown_if_needed(file.as_raw_fd(), meta.uid(), meta.gid()) };
        assert_eq!(same, 0);
        if meta.uid() == 0 {
            // As root the check passes a real change through.
            let changed = unsafe { fchown_if_needed(file.as_raw_fd(), 0, meta.gid() + 1) };
            assert_eq!(changed, 0);
            assert_eq!(file.metadata().unwrap().gid(), meta.gid() + 1);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
