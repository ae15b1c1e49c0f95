//! The system calls kimchid.service's seccomp filter refuses are ones kimchid never
//! makes: kimchid, started on a private bus and a fresh state directory, and the QEMU
//! block-driver probe it runs are traced with strace for every call the filter
//! refuses (outside its allow list, or taken out of it and not put back).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kimchi_tests::daemons::{kimchid_bin, PrivateBus, Reaped};
use kimchi_tests::systemd::{every_systemd_analyze, SystemdAnalyze};
use kimchi_tests::{poll, run, unique_name};

fn unit() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd/kimchid.service");
    std::fs::read_to_string(path).expect("kimchid.service is readable")
}

/// The calls kimchid.service's filter refuses under any systemd at hand (the
/// machine's, and bookworm's 252 once fetched: their groups differ — 254's `@default`
/// holds `@sandbox`, 252's does not).
fn refused() -> BTreeSet<String> {
    every_systemd_analyze()
        .iter()
        .flat_map(refused_by)
        .collect()
}

/// The calls one systemd's filter refuses: every call it knows (`@known`) but those
/// the unit's `SystemCallFilter=` lines permit, read in order as systemd does (an
/// allow list, calls taken out of it with `~`, calls put back).
fn refused_by(analyze: &SystemdAnalyze) -> BTreeSet<String> {
    let mut permitted: Option<BTreeSet<String>> = None;
    for value in unit()
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (deny, items) = match value.strip_prefix('~') {
            Some(items) => (true, items),
            None => (false, value),
        };
        let calls: BTreeSet<String> = items
            .split_whitespace()
            .flat_map(|item| expand(analyze, item))
            .collect();
        let set = permitted.get_or_insert_with(|| {
            assert!(!deny, "kimchid.service's filter starts with an allow list");
            BTreeSet::new()
        });
        if deny {
            set.retain(|c| !calls.contains(c));
        } else {
            set.extend(calls);
        }
    }
    let permitted = permitted.expect("kimchid.service has a system call filter");
    expand(analyze, "@known")
        .difference(&permitted)
        .cloned()
        .collect()
}

/// A call, or the calls of a group and of the groups it includes.
fn expand(analyze: &SystemdAnalyze, item: &str) -> BTreeSet<String> {
    if !item.starts_with('@') {
        return BTreeSet::from([item.to_owned()]);
    }
    let ran = run(analyze.command().args(["syscall-filter", item])).expect_ok();
    let mut calls = BTreeSet::new();
    for line in ran.stdout.lines().skip(1).map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            calls.extend(expand(analyze, line));
        } else {
            calls.insert(line.to_owned());
        }
    }
    calls
}

/// The calls strace knows on this machine (it refuses a filter naming others, such
/// as 32-bit-only ones).
fn traceable(calls: &BTreeSet<String>) -> Vec<String> {
    calls
        .iter()
        .filter(|c| run(Command::new("strace").args(["-e", &format!("trace={c}"), "true"])).ok)
        .cloned()
        .collect()
}

/// The names of the calls in an strace log (`-f`: lines start with the pid).
fn calls_in(trace: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|call| call.split_once('(').map(|(name, _)| name.to_owned()))
        .collect()
}

/// Only refused calls are traced: any call in the trace is one the unit refuses.
#[track_caller]
fn assert_none_refused(made: &BTreeSet<String>, who: &str, log: &str) {
    assert!(
        made.is_empty(),
        "{who} makes {made:?}, which kimchid.service refuses:\n{log}"
    );
}

#[test]
fn kimchid_makes_no_call_its_unit_refuses() {
    let filter = traceable(&refused()).join(",");
    let dir = std::env::temp_dir().join(unique_name("syscalls"));
    std::fs::create_dir_all(&dir).unwrap();
    let bus = PrivateBus::start(&dir);
    let trace = dir.join("trace");
    let log = dir.join("kimchid.log");
    // Twice: the first start creates the database and its WAL files, the second opens them.
    for start in ["first", "second"] {
        let strace = Reaped(
            Command::new("strace")
                .args(["-f", "-qq", "-o"])
                .arg(&trace)
                .args(["-e", &format!("trace={filter}")])
                .arg(kimchid_bin())
                .args(["--config", "/nonexistent/kimchid.conf"])
                .args(["--libvirt-uri", "test:///default"])
                .arg("--state-dir")
                .arg(dir.join("state"))
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("run strace"),
        );
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        // Serving comes after the templates database is open.
        let serving = poll(Duration::from_secs(60), || {
            text().contains("serving org.kimchi.Kimchi1").then_some(())
        });
        assert!(serving.is_some(), "kimchid did not start:\n{}", text());
        // The daemon is strace's child: stop it as systemd would.
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.0.id())).unwrap();
        let kimchid = children.split_whitespace().next().expect("kimchid runs");
        run(Command::new("kill").args(["-TERM", kimchid])).expect_ok();
        let mut strace = strace;
        let stopped = poll(Duration::from_secs(30), || strace.0.try_wait().unwrap());
        assert!(stopped.is_some(), "kimchid did not stop:\n{}", text());
        assert!(text().contains("stopping"), "{}", text());
        let made = calls_in(&trace);
        let trace_text = std::fs::read_to_string(&trace).unwrap_or_default();
        assert_none_refused(&made, &format!("kimchid ({start} start)"), &trace_text);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// kimchid runs the emulator libvirt names to list its block drivers
/// (kimchid/src/libvirt/probe.rs); the unit's filter applies to it too.
#[test]
fn the_qemu_probe_makes_no_call_kimchids_unit_refuses() {
    let filter = traceable(&refused()).join(",");
    let dir = std::env::temp_dir().join(unique_name("syscalls-qemu"));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace");
    run(Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args(["-e", &format!("trace={filter}")])
        .args([
            "qemu-system-x86_64",
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-drive",
            "format=help",
        ]))
    .expect_ok();
    let trace_text = std::fs::read_to_string(&trace).unwrap_or_default();
    assert_none_refused(&calls_in(&trace), "the QEMU probe", &trace_text);
    let _ = std::fs::remove_dir_all(&dir);
}
