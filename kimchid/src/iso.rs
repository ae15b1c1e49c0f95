//! Identifies an ISO 9660 image by its content, not by its file name: a user can
//! upload anything as `foo.iso`, and the volume id is what the osinfo database
//! keys installation media on. Only the few sectors that matter are read, and the
//! file is opened as every user-named file is (`user_file`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::user_file::{self, UserFileError};

/// Logical sector size of a CD-ROM; volume descriptors always use it.
const SECTOR: u64 = 2048;
/// The system area (sectors 0..16) is reserved; descriptors start here.
const FIRST_DESCRIPTOR: u64 = 16;
/// Real images carry a handful of descriptors; the cap keeps a garbage file that
/// happens to start like an ISO from making us read it sector by sector.
const MAX_DESCRIPTORS: u64 = 64;
const STANDARD_ID: &[u8] = b"CD001";
const TYPE_BOOT_RECORD: u8 = 0;
const TYPE_PRIMARY: u8 = 1;
const TYPE_TERMINATOR: u8 = 255;
const EL_TORITO_ID: &[u8] = b"EL TORITO SPECIFICATION";
/// Boot indicator of a catalog entry that the firmware may boot.
const BOOTABLE: u8 = 0x88;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoInfo {
    /// Volume identifier without its space padding, e.g. "Ubuntu-Server 22.04.1 LTS amd64".
    pub volume_id: String,
    /// The El Torito default entry is marked bootable.
    pub bootable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// The path is no file to read (missing, a FIFO, …) or did not answer in time.
    #[error("{0}")]
    File(#[from] UserFileError),
    #[error("cannot be read: {0}")]
    Io(#[from] io::Error),
    /// Holds the reason; the message reads "not an ISO 9660 image: <reason>".
    #[error("not an ISO 9660 image: {0}")]
    NotIso(String),
}

/// Reads the volume id and El Torito bootability of the image at `path`, on this
/// thread (for a caller already on the blocking pool).
pub fn probe(path: &Path) -> Result<IsoInfo, IsoError> {
    probe_file(user_file::open(path)?)
}

/// `probe` on the blocking pool, within `user_file::READ_TIMEOUT`.
pub async fn probe_bounded(path: &Path) -> Result<IsoInfo, IsoError> {
    user_file::read(path, probe_file).await?
}

fn probe_file(mut file: File) -> Result<IsoInfo, IsoError> {
    let file = &mut file;
    // Seeking to the end also works for block devices, whose metadata length is 0.
    let len = file.seek(SeekFrom::End(0))?;

    let pvd = read_sector(file, FIRST_DESCRIPTOR)?
        .ok_or_else(|| not_iso("file too short for a primary volume descriptor"))?;
    if pvd[0] != TYPE_PRIMARY || &pvd[1..6] != STANDARD_ID || pvd[6] != 1 {
        return Err(not_iso("no primary volume descriptor"));
    }

    // The descriptor declares the volume size; a shorter file is a broken download
    // or upload that would fail half-way through an installation.
    let blocks = u64::from(u32::from_le_bytes([pvd[80], pvd[81], pvd[82], pvd[83]]));
    let block_size = u64::from(u16::from_le_bytes([pvd[128], pvd[129]]));
    let expected = blocks * block_size;
    if len < expected {
        return Err(not_iso(format!(
            "image is truncated ({len} of {expected} bytes)"
        )));
    }

    let volume_id = String::from_utf8_lossy(&pvd[40..72])
        .trim_end_matches([' ', '\0'])
        .to_string();
    let bootable = match find_boot_catalog(file)? {
        Some(lba) => catalog_is_bootable(file, lba)?,
        None => false,
    };
    Ok(IsoInfo {
        volume_id,
        bootable,
    })
}

fn not_iso(reason: impl Into<String>) -> IsoError {
    IsoError::NotIso(reason.into())
}

/// Reads one 2048-byte sector; `None` when the file ends before it.
fn read_sector(file: &mut File, lba: u64) -> Result<Option<[u8; SECTOR as usize]>, IsoError> {
    let mut buf = [0u8; SECTOR as usize];
    let Some(offset) = lba.checked_mul(SECTOR) else {
        return Ok(None);
    };
    file.seek(SeekFrom::Start(offset))?;
    match file.read_exact(&mut buf) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Walks the volume descriptor set for an El Torito boot record and returns the
/// sector of its boot catalog.
fn find_boot_catalog(file: &mut File) -> Result<Option<u32>, IsoError> {
    for lba in FIRST_DESCRIPTOR..FIRST_DESCRIPTOR + MAX_DESCRIPTORS {
        let Some(vd) = read_sector(file, lba)? else {
            return Ok(None);
        };
        // Anything that is not a descriptor means the set ended without a terminator.
        if &vd[1..6] != STANDARD_ID || vd[0] == TYPE_TERMINATOR {
            return Ok(None);
        }
        if vd[0] == TYPE_BOOT_RECORD && vd[7..30] == *EL_TORITO_ID {
            return Ok(Some(u32::from_le_bytes([vd[71], vd[72], vd[73], vd[74]])));
        }
    }
    Ok(None)
}

/// Checks the catalog's validation entry, then the boot indicator of the default entry.
fn catalog_is_bootable(file: &mut File, lba: u32) -> Result<bool, IsoError> {
    let Some(catalog) = read_sector(file, u64::from(lba))? else {
        return Ok(false);
    };
    let validation = &catalog[..32];
    // The 16 little-endian words of the validation entry sum to zero.
    let sum = validation.chunks_exact(2).fold(0u16, |acc, w| {
        acc.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    let valid = validation[0] == 1 && validation[30..32] == [0x55, 0xAA] && sum == 0;
    Ok(valid && catalog[32] == BOOTABLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory per test, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("kimchid-iso-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Builds an image with xorriso from a tree holding a text file and a 4 KiB
    /// boot image; `extra` adds mkisofs options.
    fn make_iso(dir: &Path, volume_id: &str, extra: &[&str]) -> PathBuf {
        let tree = dir.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("README.txt"), "hello\n").unwrap();
        std::fs::write(tree.join("boot.img"), [0u8; 4096]).unwrap();
        let iso = dir.join("image.iso");
        let out = Command::new("xorriso")
            .args(["-as", "mkisofs", "-V", volume_id, "-o"])
            .arg(&iso)
            .args(extra)
            .arg(&tree)
            .output()
            .expect("xorriso must be installed to run these tests");
        assert!(
            out.status.success(),
            "xorriso failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        iso
    }

    /// An image xorriso made that boots through El Torito, without emulation.
    fn make_bootable_iso(dir: &Path, volume_id: &str) -> PathBuf {
        let opts = ["-b", "boot.img", "-no-emul-boot", "-boot-load-size", "4"];
        make_iso(dir, volume_id, &opts)
    }

    fn info(volume_id: &str, bootable: bool) -> IsoInfo {
        IsoInfo {
            volume_id: volume_id.into(),
            bootable,
        }
    }

    /// Probing `path` fails with `NotIso(reason)`, exactly.
    #[track_caller]
    fn assert_not_iso(path: &Path, reason: &str) {
        match probe(path) {
            Err(IsoError::NotIso(r)) => assert_eq!(r, reason, "{}", path.display()),
            other => panic!(
                "expected NotIso({reason:?}) for {}, got {other:?}",
                path.display()
            ),
        }
    }

    #[test]
    fn plain_image() {
        let tmp = TempDir::new("plain");
        let iso = make_iso(&tmp.0, "Ubuntu-Server 22.04.1 LTS amd64", &[]);
        let expected = info("Ubuntu-Server 22.04.1 LTS amd64", false);
        assert_eq!(probe(&iso).unwrap(), expected);
    }

    #[test]
    fn el_torito_image() {
        let tmp = TempDir::new("boot");
        let iso = make_bootable_iso(&tmp.0, "BOOT ME");
        assert_eq!(probe(&iso).unwrap(), info("BOOT ME", true));
    }

    #[test]
    fn broken_catalog_is_not_bootable() {
        let tmp = TempDir::new("badcat");
        let iso = make_bootable_iso(&tmp.0, "BOOT ME");
        // Flip a byte of the validation entry so its checksum no longer adds up.
        let mut bytes = std::fs::read(&iso).unwrap();
        let record = 17 * SECTOR as usize;
        assert_eq!(&bytes[record + 7..record + 30], EL_TORITO_ID);
        let lba = u32::from_le_bytes(bytes[record + 71..record + 75].try_into().unwrap());
        bytes[lba as usize * SECTOR as usize + 4] ^= 0xFF;
        std::fs::write(&iso, bytes).unwrap();
        assert_eq!(probe(&iso).unwrap(), info("BOOT ME", false));
    }

    #[test]
    fn text_file_is_not_iso() {
        let tmp = TempDir::new("text");
        let path = tmp.0.join("notes.iso");
        std::fs::write(&path, "just some text, named like an image\n".repeat(2000)).unwrap();
        assert_not_iso(&path, "no primary volume descriptor");
    }

    #[test]
    fn empty_file_is_not_iso() {
        let tmp = TempDir::new("empty");
        let path = tmp.0.join("empty.iso");
        std::fs::write(&path, b"").unwrap();
        assert_not_iso(&path, "file too short for a primary volume descriptor");
    }

    #[test]
    fn truncated_image_is_not_iso() {
        let tmp = TempDir::new("trunc");
        let iso = make_iso(&tmp.0, "Ubuntu-Server 22.04.1 LTS amd64", &[]);
        let bytes = std::fs::read(&iso).unwrap();
        let cut = tmp.0.join("cut.iso");
        std::fs::write(&cut, &bytes[..40000]).unwrap();
        let whole = bytes.len();
        assert_not_iso(
            &cut,
            &format!("image is truncated (40000 of {whole} bytes)"),
        );
    }

    #[test]
    fn missing_file_does_not_exist() {
        let tmp = TempDir::new("missing");
        match probe(&tmp.0.join("nope.iso")) {
            Err(e @ IsoError::File(UserFileError::NotFound)) => {
                assert_eq!(e.to_string(), "does not exist")
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bounded_probe_reads_the_image() {
        let tmp = TempDir::new("bounded");
        let iso = make_bootable_iso(&tmp.0, "BOOT ME");
        assert_eq!(probe_bounded(&iso).await.unwrap(), info("BOOT ME", true));
    }
}
