//! The shipped units pass systemd's own checks (no running systemd needed).

use std::path::PathBuf;
use std::process::Command;

use kimchi_tests::run;
use kimchi_tests::systemd::{bookworm_252, systemd_252_root};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(repo().join("systemd"))
        .expect("systemd/ is there")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "service" || e == "socket")
        })
        .collect();
    units.sort();
    units
}

fn unit_text(unit: &str) -> String {
    std::fs::read_to_string(repo().join("systemd").join(unit)).expect("unit is readable")
}

/// `systemd-analyze security --offline=yes` overall exposure of one unit.
fn exposure(unit: &str) -> f64 {
    exposure_with(&mut Command::new("systemd-analyze"), unit)
}

fn exposure_with(analyze: &mut Command, unit: &str) -> f64 {
    let ran = run(analyze
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(repo().join("systemd").join(unit)))
    .expect_ok();
    let line = ran
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall score in:\n{}", ran.stdout));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    println!("{unit}: exposure {score}");
    score
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let units = units();
    assert!(units.len() >= 3, "{units:?}");
    let ran = run(Command::new("systemd-analyze").arg("verify").args(&units));
    assert!(ran.ok, "verify failed:\n{}{}", ran.stdout, ran.stderr);
    assert_eq!(ran.stderr.trim(), "", "verify warned");
}

#[test]
fn kimchid_service_exposure_is_at_most_2_0() {
    assert!(exposure("kimchid.service") <= 2.0);
}

#[test]
fn gateway_service_exposure_is_at_most_1_0() {
    assert!(exposure("kimchi-gateway.service") <= 1.0);
}

/// Older systemd counts what newer versions see as implied (252 scores a missing
/// `PrivateMounts=` although `ProtectSystem=` already gives a private mount table):
/// the units state it, so bookworm's own systemd-analyze agrees with the newer one.
#[test]
fn exposure_holds_under_bookworms_systemd_252() {
    let Some(analyze) = bookworm_252() else {
        println!(
            "SKIPPED: no systemd 252 under {} (run tests/fetch-systemd-252.sh)",
            systemd_252_root().display()
        );
        return;
    };
    let version = run(analyze.command().arg("--version")).expect_ok();
    assert!(
        version.stdout.starts_with("systemd 252"),
        "{}",
        version.stdout
    );
    assert!(exposure_with(&mut analyze.command(), "kimchid.service") <= 2.0);
    assert!(exposure_with(&mut analyze.command(), "kimchi-gateway.service") <= 1.0);
}

#[test]
fn kimchid_states_private_mounts_for_older_systemd() {
    assert!(
        unit_text("kimchid.service")
            .lines()
            .any(|l| l == "PrivateMounts=yes"),
        "kimchid.service must say PrivateMounts=yes"
    );
}

/// systemd stops units in the reverse order it started them: ordered after
/// libvirt-guests, kimchid (and its transient screenshot-probe guest) is gone before
/// libvirt-guests waits for running guests at shutdown.
#[test]
fn kimchid_stops_before_libvirt_guests() {
    let text = unit_text("kimchid.service");
    let after: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("After="))
        .flat_map(str::split_whitespace)
        .collect();
    for unit in [
        "libvirtd.service",
        "virtqemud.service",
        "libvirt-guests.service",
    ] {
        assert!(
            after.contains(&unit),
            "kimchid is not After={unit}: {after:?}"
        );
    }
}

/// What the unit takes back from the syscall deny list: exactly the calls kimchid's
/// libraries make (found with strace), each under a comment saying who makes it.
/// SQLite's fchown of its journal files is not here: kimchid skips it when the owner
/// is already right (tests/tests/syscalls.rs).
#[test]
fn kimchid_allows_back_only_the_syscalls_its_libraries_make_with_the_reason() {
    let text = unit_text("kimchid.service");
    let lines: Vec<&str> = text.lines().collect();
    let deny = lines
        .iter()
        .position(|l| l.starts_with("SystemCallFilter=~"))
        .expect("a deny list");
    let mut allowed = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(deny + 1) {
        let Some(calls) = line.strip_prefix("SystemCallFilter=") else {
            continue;
        };
        let reason: Vec<&str> = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with('#'))
            .copied()
            .collect();
        for call in calls.split_whitespace() {
            assert!(
                reason.iter().any(|l| l.contains(call)),
                "no comment above {line:?} says who calls {call}"
            );
            allowed.push(call);
        }
    }
    assert_eq!(allowed, ["set_mempolicy", "seccomp"]);
    assert!(text.contains("libnuma"), "the reason names libnuma");
    assert!(text.contains("QEMU"), "the reason names QEMU");
}
