//! The `systemd-analyze` binaries the unit tests judge the units with: the machine's,
//! and bookworm's own 252 when `tests/fetch-systemd-252.sh` has unpacked it (versions
//! differ in what they score and in what their system call groups hold).

use std::path::PathBuf;
use std::process::Command;

/// One `systemd-analyze` binary and the libraries it runs with.
pub struct SystemdAnalyze {
    program: PathBuf,
    library_path: Option<PathBuf>,
}

impl SystemdAnalyze {
    /// A fresh command running this binary.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        if let Some(path) = &self.library_path {
            cmd.env("LD_LIBRARY_PATH", path);
        }
        cmd
    }
}

/// Where `tests/fetch-systemd-252.sh` unpacks bookworm's own systemd-analyze.
pub fn systemd_252_root() -> PathBuf {
    std::env::var_os("KIMCHI_SYSTEMD_252")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target")
                .join("systemd-252")
        })
}

/// bookworm's systemd 252, run from its unpacked packages with their own
/// libsystemd-shared, when `tests/fetch-systemd-252.sh` has fetched it.
pub fn bookworm_252() -> Option<SystemdAnalyze> {
    let root = systemd_252_root();
    let program = root.join("usr/bin/systemd-analyze");
    program.exists().then(|| SystemdAnalyze {
        program,
        library_path: Some(root.join("usr/lib/x86_64-linux-gnu/systemd")),
    })
}

/// The machine's `systemd-analyze`, then 252's when it is there.
pub fn every_systemd_analyze() -> Vec<SystemdAnalyze> {
    let machine = SystemdAnalyze {
        program: "systemd-analyze".into(),
        library_path: None,
    };
    std::iter::once(machine).chain(bookworm_252()).collect()
}
