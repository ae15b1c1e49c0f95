//! Files that callers name (a template's or a drive's ISO image). The path may be a
//! FIFO, a terminal, a device whose open has side effects, or sit on a hung NFS
//! mount: it is opened without blocking or taking a controlling terminal, only a
//! regular file or a block device is read, and the open and read run on the
//! blocking pool under a time bound. A job past its bound keeps its thread (a hung
//! open cannot be interrupted) but frees the request; at most `MAX_JOBS` such jobs
//! exist at once, so stuck ones cannot use up the blocking pool.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::Semaphore;

/// How long reading a user-named file may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Reads of user-named files running (or stuck) at once.
const MAX_JOBS: usize = 16;

static JOBS: Semaphore = Semaphore::const_new(MAX_JOBS);

/// Why a user-named file was not read; the messages follow the path they are about.
#[derive(Debug, thiserror::Error)]
pub enum UserFileError {
    #[error("does not exist")]
    NotFound,
    #[error("is not a regular file or block device")]
    NotRegular,
    /// kimchid.service keeps no CAP_DAC_READ_SEARCH: root reads only what the file's
    /// and its directories' permissions let root read.
    #[error(
        "cannot be read: permission denied (kimchid overrides no file permissions: the \
         file and its directories must be readable by root as their owner or group, or by all)"
    )]
    NotReadable,
    #[error("cannot be read: {0}")]
    Io(io::Error),
    #[error("did not answer within {} s", .0.as_secs())]
    TimedOut(Duration),
    /// Every job slot is taken by reads still waiting on their storage.
    #[error("cannot be read now: {MAX_JOBS} reads of files are still waiting on their storage; try again later")]
    Overloaded,
}

impl From<io::Error> for UserFileError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => UserFileError::NotFound,
            io::ErrorKind::PermissionDenied => UserFileError::NotReadable,
            _ => UserFileError::Io(e),
        }
    }
}

/// Opens `path` for reading if it is a regular file or a block device. The type is
/// looked at before the open (which could have side effects on other devices) and
/// again on the open file, which is what is read even if the path changed between.
/// Blocks only where the file system itself does (a hung mount).
pub fn open(path: &Path) -> Result<File, UserFileError> {
    check_type(&std::fs::metadata(path)?)?;
    // O_NONBLOCK: a FIFO's open would wait for a writer. It changes nothing for the
    // regular files and block devices that are read. std adds O_CLOEXEC.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    check_type(&file.metadata()?)?;
    Ok(file)
}

fn check_type(meta: &std::fs::Metadata) -> Result<(), UserFileError> {
    let kind = meta.file_type();
    if kind.is_file() || kind.is_block_device() {
        Ok(())
    } else {
        Err(UserFileError::NotRegular)
    }
}

/// Opens `path` as `open` does and hands the file to `read`, on the blocking pool,
/// answering within `READ_TIMEOUT`.
pub async fn read<T: Send + 'static>(
    path: &Path,
    read: impl FnOnce(File) -> T + Send + 'static,
) -> Result<T, UserFileError> {
    read_within(path, READ_TIMEOUT, read).await
}

async fn read_within<T: Send + 'static>(
    path: &Path,
    bound: Duration,
    read: impl FnOnce(File) -> T + Send + 'static,
) -> Result<T, UserFileError> {
    let permit = JOBS.try_acquire().map_err(|_| UserFileError::Overloaded)?;
    let path: PathBuf = path.to_owned();
    let job = tokio::task::spawn_blocking(move || {
        // Held until the job really ends, even after the request gave up on it.
        let _permit = permit;
        open(&path).map(read)
    });
    match tokio::time::timeout(bound, job).await {
        Ok(Ok(result)) => result,
        Ok(Err(failed)) => Err(UserFileError::Io(io::Error::other(format!(
            "the read failed: {failed}"
        )))),
        Err(_) => Err(UserFileError::TimedOut(bound)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Instant;

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    fn contents(mut file: File) -> String {
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text
    }

    #[track_caller]
    fn assert_refused(result: Result<String, UserFileError>, expected: &str) {
        match result {
            Err(e) => assert_eq!(e.to_string(), expected),
            Ok(text) => panic!("expected {expected:?}, read {text:?}"),
        }
    }

    #[tokio::test]
    async fn a_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.iso");
        std::fs::write(&path, "content").unwrap();
        assert_eq!(read(&path, contents).await.unwrap(), "content");
    }

    #[tokio::test]
    async fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.iso");
        mkfifo(&fifo);
        let started = Instant::now();
        let refused = read(&fifo, contents).await;
        println!("FIFO refused in {:?}", started.elapsed());
        assert_refused(refused, "is not a regular file or block device");
    }

    #[tokio::test]
    async fn a_symlink_to_a_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (fifo, link) = (dir.path().join("fifo"), dir.path().join("link.iso"));
        mkfifo(&fifo);
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert_refused(
            read(&link, contents).await,
            "is not a regular file or block device",
        );
    }

    #[tokio::test]
    async fn directories_and_character_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for path in [dir.path(), Path::new("/dev/null")] {
            assert_refused(
                read(path, contents).await,
                "is not a regular file or block device",
            );
        }
    }

    #[tokio::test]
    async fn a_missing_file_does_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        assert_refused(
            read(&dir.path().join("nothing"), contents).await,
            "does not exist",
        );
    }

    /// Takes CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of this thread's effective
    /// capabilities, as kimchid.service runs root without them (capset(2) changes only
    /// the calling thread).
    fn drop_dac_capabilities_of_this_thread() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Default, Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        const DAC: u32 = (1 << 1) | (1 << 2);
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: header and two data structs as capget/capset(2) take for version 3.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
                0
            );
            data[0].effective &= !DAC;
            assert_eq!(
                libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
                0
            );
        }
    }

    #[test]
    fn a_file_root_may_not_read_by_its_permissions_is_refused_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private.iso");
        std::fs::write(&path, "content").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .unwrap();
        drop_dac_capabilities_of_this_thread();
        match open(&path) {
            Err(e) => assert_eq!(
                e.to_string(),
                "cannot be read: permission denied (kimchid overrides no file permissions: the \
                 file and its directories must be readable by root as their owner or group, or \
                 by all)"
            ),
            Ok(_) => panic!("read a file of mode 000 without CAP_DAC_OVERRIDE"),
        }
    }

    #[tokio::test]
    async fn a_read_past_its_bound_frees_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slow.iso");
        std::fs::write(&path, "content").unwrap();
        let slow = |file: File| {
            std::thread::sleep(Duration::from_secs(3));
            contents(file)
        };
        let started = Instant::now();
        let refused = read_within(&path, Duration::from_secs(1), slow).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_refused(refused, "did not answer within 1 s");
    }
}
