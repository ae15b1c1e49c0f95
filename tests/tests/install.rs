//! `make install` into a DESTDIR lays out what a distribution package ships, and the
//! system files it stages are the very ones the running stack uses.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kimchi_tests::{busctl, run, unique_name};

/// Every file `make install PREFIX=/usr` installs, relative to DESTDIR, sorted.
const EXPECTED_FILES: &[&str] = &[
    "etc/kimchi/gateway.conf",
    "etc/kimchi/kimchid.conf",
    "etc/pam.d/kimchi",
    "usr/lib/systemd/system/kimchi-gateway-certificate.service",
    "usr/lib/systemd/system/kimchi-gateway.service",
    "usr/lib/systemd/system/kimchi-gateway.socket",
    "usr/lib/systemd/system/kimchi-url-check.socket",
    "usr/lib/systemd/system/kimchi-url-check@.service",
    "usr/lib/systemd/system/kimchid.service",
    "usr/lib/sysusers.d/kimchi.conf",
    "usr/lib/tmpfiles.d/kimchi.conf",
    "usr/sbin/kimchi-gateway",
    "usr/sbin/kimchid",
    "usr/share/dbus-1/interfaces/org.kimchi.Kimchi1.xml",
    "usr/share/dbus-1/system-services/org.kimchi.Kimchi1.service",
    "usr/share/dbus-1/system.d/org.kimchi.Kimchi1.conf",
    "usr/share/polkit-1/actions/org.kimchi.policy",
    "usr/share/polkit-1/rules.d/50-kimchi-gateway.rules",
];

/// Executables; everything else is data.
const EXECUTABLES: &[&str] = &["usr/sbin/kimchi-gateway", "usr/sbin/kimchid"];

/// Staged files the running stack must be using as they are (it installs with PREFIX=/usr).
const LIVE_FILES: &[&str] = &[
    "usr/share/dbus-1/system.d/org.kimchi.Kimchi1.conf",
    "usr/share/dbus-1/system-services/org.kimchi.Kimchi1.service",
    "usr/share/polkit-1/actions/org.kimchi.policy",
    "usr/share/polkit-1/rules.d/50-kimchi-gateway.rules",
    "etc/pam.d/kimchi",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A staging directory, removed on drop.
struct DestDir(PathBuf);

impl Drop for DestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The profile whose binaries `make install` can copy: debug when target/debug has both.
fn profile() -> &'static str {
    let built = |profile: &str| {
        ["kimchid", "kimchi-gateway"]
            .iter()
            .all(|b| repo_root().join("target").join(profile).join(b).is_file())
    };
    if built("debug") {
        "debug"
    } else {
        assert!(
            built("release"),
            "neither target/debug nor target/release has both binaries: run make build"
        );
        "release"
    }
}

#[track_caller]
fn make_install(destdir: &Path) {
    let ran = run(Command::new("make")
        .arg("-C")
        .arg(repo_root())
        .arg("--no-print-directory")
        .arg("install")
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg("PREFIX=/usr")
        .arg(format!("PROFILE={}", profile())));
    assert!(ran.ok, "make install failed:\n{}{}", ran.stdout, ran.stderr);
}

/// Every non-directory under `root`, relative and sorted.
fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_str().expect("UTF-8 path").to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
}

#[test]
fn make_install_into_destdir_lays_out_the_expected_files() {
    let dest = DestDir(std::env::temp_dir().join(unique_name("destdir")));
    make_install(&dest.0);

    let files = files_under(&dest.0);
    assert_eq!(
        files, EXPECTED_FILES,
        "make install DESTDIR=… PREFIX=/usr installed a different set of files"
    );
    for file in &files {
        let path = dest.0.join(file);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "{file} is not a regular file");
        let want = if EXECUTABLES.contains(&file.as_str()) {
            0o100755
        } else {
            0o100644
        };
        assert_eq!(
            mode(&path),
            want,
            "{file}: mode {:o}, want {want:o}",
            mode(&path)
        );
    }

    // A second install keeps what the administrator changed in the configuration.
    let mut edited = Vec::new();
    for conf in ["etc/kimchi/kimchid.conf", "etc/kimchi/gateway.conf"] {
        let path = dest.0.join(conf);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("# edited by the administrator\n");
        std::fs::write(&path, &text).unwrap();
        edited.push((path, text));
    }
    make_install(&dest.0);
    for (path, text) in edited {
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "a second make install overwrote {}",
            path.display()
        );
    }
    assert_eq!(files_under(&dest.0), EXPECTED_FILES);
}

#[test]
fn staged_bus_policy_polkit_and_pam_files_are_the_ones_the_stack_uses() {
    let dest = DestDir(std::env::temp_dir().join(unique_name("destdir")));
    make_install(&dest.0);

    for file in LIVE_FILES {
        let staged = std::fs::read(dest.0.join(file)).unwrap();
        let live_path = Path::new("/").join(file);
        let live = std::fs::read(&live_path)
            .unwrap_or_else(|e| panic!("{}: {e} (is the stack up?)", live_path.display()));
        assert!(
            staged == live,
            "{} differs from what make install stages now: re-run tests/stack-up.sh",
            live_path.display()
        );
    }

    // polkitd knows every action the staged policy file declares.
    let policy =
        std::fs::read_to_string(dest.0.join("usr/share/polkit-1/actions/org.kimchi.policy"))
            .unwrap();
    let doc = roxmltree::Document::parse_with_options(
        &policy,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap();
    let actions: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("action"))
        .filter_map(|n| n.attribute("id"))
        .collect();
    assert!(actions.contains(&"org.kimchi.read"), "{actions:?}");
    for action in actions {
        let ran = run(Command::new("pkaction").args(["--action-id", action]));
        assert!(
            ran.ok,
            "polkitd does not know {action}: {}{}",
            ran.stdout, ran.stderr
        );
    }

    // The system bus read the staged activation file: it can start org.kimchi.Kimchi1.
    let names = busctl(&[
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "ListActivatableNames",
    ])
    .expect_ok()
    .stdout;
    assert!(
        names.contains(&format!("\"{}\"", kimchi_dbus::BUS_NAME)),
        "{} is not activatable on the system bus: {names}",
        kimchi_dbus::BUS_NAME
    );
}
