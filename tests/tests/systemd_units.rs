//! The shipped units pass systemd's own checks (no running systemd needed).

use std::path::PathBuf;
use std::process::Command;

use kimchi_tests::run;
use kimchi_tests::systemd::{bookworm_252, every_systemd_analyze, systemd_252_root};

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
    score
}

/// The unit's exposure is at most `bound` under every systemd-analyze at hand: the
/// machine's and bookworm's own 252 (older systemd counts what newer versions see as
/// implied, such as `PrivateMounts=` under `ProtectSystem=`).
#[track_caller]
fn assert_exposure_at_most(unit: &str, bound: f64) {
    for analyze in every_systemd_analyze() {
        let version = run(analyze.command().arg("--version")).expect_ok().stdout;
        let version = version.lines().next().unwrap_or_default().to_owned();
        let score = exposure_with(&mut analyze.command(), unit);
        println!("{unit}: exposure {score} under {version}");
        assert!(score <= bound, "{unit}: {score} > {bound} under {version}");
    }
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
fn kimchid_service_exposure_is_at_most_1_5() {
    assert_exposure_at_most("kimchid.service", 1.5);
}

#[test]
fn gateway_service_exposure_is_at_most_1_0() {
    assert_exposure_at_most("kimchi-gateway.service", 1.0);
}

/// The URL check keeps the network (0.5 for PrivateNetwork=, 0.3 for AF_INET, 0.2 for
/// IPAddressDeny=: what it exists for) and scores 1.2 with it; 1.5 leaves room for
/// nothing else.
#[test]
fn url_check_service_exposure_is_at_most_1_5() {
    assert_exposure_at_most("kimchi-url-check@.service", 1.5);
}

/// The exposure tests judge with bookworm's own 252 too, when it is there.
#[test]
fn the_fetched_systemd_analyze_is_bookworms_252() {
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
    assert_eq!(every_systemd_analyze().len(), 2);
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

/// The values of every `key=` line of `unit`, in order.
fn values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit_text(unit)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

/// kimchid has no IP: no Internet socket can be made, and the cgroup drops any IP
/// packet besides; the URL check it needed IP for is the socket-activated service's.
/// Root without CAP_DAC_READ_SEARCH: only PAM's audit capability is left.
#[test]
fn kimchid_has_no_ip_and_only_the_audit_capability() {
    let families = values("kimchid.service", "RestrictAddressFamilies");
    assert_eq!(families, ["AF_UNIX AF_NETLINK"]);
    assert_eq!(values("kimchid.service", "IPAddressDeny"), ["any"]);
    assert_eq!(
        values("kimchid.service", "CapabilityBoundingSet"),
        ["CAP_AUDIT_WRITE"]
    );
    let wants = values("kimchid.service", "Wants").join(" ");
    let after = values("kimchid.service", "After").join(" ");
    for (what, list) in [("Wants", &wants), ("After", &after)] {
        assert!(
            list.split_whitespace()
                .any(|u| u == "kimchi-url-check.socket"),
            "kimchid.service is not {what}=kimchi-url-check.socket: {list}"
        );
    }
    assert_eq!(
        values("kimchid.service", "Also"),
        ["kimchi-url-check.socket"]
    );
}

/// The URL check's socket is where kimchid looks by default, root may connect to it
/// and nobody else, and each connection gets a service of its own.
#[test]
fn the_url_check_socket_is_root_only_and_where_kimchid_looks() {
    let conf = std::fs::read_to_string(repo().join("kimchid/kimchid.conf")).unwrap();
    let default = conf
        .lines()
        .find_map(|l| l.strip_prefix("#url_check_socket = "))
        .expect("kimchid.conf documents url_check_socket");
    let socket = "kimchi-url-check.socket";
    assert_eq!(values(socket, "ListenStream"), [default.trim_matches('"')]);
    assert_eq!(values(socket, "SocketUser"), ["root"]);
    assert_eq!(values(socket, "SocketGroup"), ["root"]);
    assert_eq!(values(socket, "SocketMode"), ["0600"]);
    assert_eq!(values(socket, "Accept"), ["yes"]);
}

/// The URL check runs as a user of its own with no capabilities, the connection as
/// its standard input and output, and IP plus AF_UNIX (name resolution) only.
#[test]
fn the_url_check_service_is_unprivileged_with_ip_only() {
    let unit = "kimchi-url-check@.service";
    assert_eq!(values(unit, "ExecStart"), ["/usr/sbin/kimchid check-url"]);
    assert_eq!(values(unit, "StandardInput"), ["socket"]);
    assert_eq!(values(unit, "StandardOutput"), ["socket"]);
    assert_eq!(values(unit, "DynamicUser"), ["yes"]);
    assert_eq!(values(unit, "CapabilityBoundingSet"), [""]);
    assert_eq!(values(unit, "NoNewPrivileges"), ["yes"]);
    assert_eq!(
        values(unit, "RestrictAddressFamilies"),
        ["AF_UNIX AF_INET AF_INET6"]
    );
    assert!(
        !values(unit, "RuntimeMaxSec").is_empty(),
        "no RuntimeMaxSec="
    );
}

/// What a unit takes back from the syscall deny list: exactly the calls its
/// program's libraries make (found with strace), each under a comment saying who
/// makes it. SQLite's fchown of its journal files is not in kimchid's: kimchid skips it
/// when the owner is already right (tests/tests/syscalls.rs).
#[test]
fn units_allow_back_only_the_syscalls_their_libraries_make_with_the_reason() {
    for (unit, expected, named) in [
        (
            "kimchid.service",
            &["set_mempolicy", "seccomp"][..],
            &["libnuma", "QEMU"][..],
        ),
        (
            "kimchi-url-check@.service",
            &["set_mempolicy"][..],
            &["libnuma"][..],
        ),
    ] {
        let text = unit_text(unit);
        let lines: Vec<&str> = text.lines().collect();
        let deny = lines
            .iter()
            .position(|l| l.starts_with("SystemCallFilter=~"))
            .unwrap_or_else(|| panic!("{unit}: a deny list"));
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
                    "{unit}: no comment above {line:?} says who calls {call}"
                );
                allowed.push(call);
            }
        }
        assert_eq!(allowed, expected, "{unit}");
        for who in named {
            assert!(text.contains(who), "{unit}: the reason names {who}");
        }
    }
}
