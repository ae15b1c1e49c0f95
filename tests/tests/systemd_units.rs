//! The shipped units pass systemd's own checks (no running systemd needed).

use std::path::PathBuf;
use std::process::Command;

use kimchi_tests::run;

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

/// `systemd-analyze security --offline=yes` overall exposure of one unit.
fn exposure(unit: &str) -> f64 {
    let ran = run(Command::new("systemd-analyze")
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
