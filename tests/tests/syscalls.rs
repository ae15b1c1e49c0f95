//! The system calls a unit's seccomp filter refuses are ones its programs never make:
//! kimchid, started on a private bus and a fresh state directory, and the QEMU
//! block-driver probe it runs, against kimchid.service; `kimchid check-url` and the
//! curl it runs, against kimchi-url-check@.service. Each is traced with strace for
//! every call the filter refuses (outside its allow list, or taken out of it and not
//! put back).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kimchi_tests::daemons::{kimchid_bin, PrivateBus, Reaped};
use kimchi_tests::systemd::{every_systemd_analyze, SystemdAnalyze};
use kimchi_tests::{poll, run, unique_name};

const KIMCHID: &str = "kimchid.service";
const URL_CHECK: &str = "kimchi-url-check@.service";

fn unit(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(name);
    std::fs::read_to_string(path).expect("the unit is readable")
}

/// The calls the unit's filter refuses under any systemd at hand (the machine's, and
/// bookworm's 252 once fetched: their groups differ — 254's `@default` holds
/// `@sandbox`, 252's does not).
fn refused(unit: &str) -> BTreeSet<String> {
    every_systemd_analyze()
        .iter()
        .flat_map(|analyze| refused_by(analyze, unit))
        .collect()
}

/// The calls one systemd's filter refuses: every call it knows (`@known`) but those
/// the unit's `SystemCallFilter=` lines permit, read in order as systemd does (an
/// allow list, calls taken out of it with `~`, calls put back).
fn refused_by(analyze: &SystemdAnalyze, name: &str) -> BTreeSet<String> {
    let mut permitted: Option<BTreeSet<String>> = None;
    for value in unit(name)
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
            assert!(!deny, "{name}'s filter starts with an allow list");
            BTreeSet::new()
        });
        if deny {
            set.retain(|c| !calls.contains(c));
        } else {
            set.extend(calls);
        }
    }
    let permitted = permitted.unwrap_or_else(|| panic!("{name} has a system call filter"));
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

/// strace, following forks, writing to `trace` each call of `filter` (the calls a
/// unit refuses, from `traceable(&refused(unit))`) that the command after it makes.
fn traced(filter: &str, trace: &Path) -> Command {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o"])
        .arg(trace)
        .args(["-e", &format!("trace={filter}")]);
    cmd
}

/// Only refused calls are traced: any call in the trace is one the unit refuses.
#[track_caller]
fn assert_none_refused(trace: &Path, who: &str, unit: &str) {
    let made = calls_in(trace);
    let log = std::fs::read_to_string(trace).unwrap_or_default();
    assert!(
        made.is_empty(),
        "{who} makes {made:?}, which {unit} refuses:\n{log}"
    );
}

#[test]
fn kimchid_makes_no_call_its_unit_refuses() {
    let filter = traceable(&refused(KIMCHID)).join(",");
    let dir = std::env::temp_dir().join(unique_name("syscalls"));
    std::fs::create_dir_all(&dir).unwrap();
    let bus = PrivateBus::start(&dir);
    let trace = dir.join("trace");
    let log = dir.join("kimchid.log");
    // Twice: the first start creates the database and its WAL files, the second opens them.
    for start in ["first", "second"] {
        let strace = Reaped(
            traced(&filter, &trace)
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
        assert_none_refused(&trace, &format!("kimchid ({start} start)"), KIMCHID);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// kimchid runs the emulator libvirt names to list its block drivers
/// (kimchid/src/libvirt/probe.rs); the unit's filter applies to it too.
#[test]
fn the_qemu_probe_makes_no_call_kimchids_unit_refuses() {
    let filter = traceable(&refused(KIMCHID)).join(",");
    let dir = std::env::temp_dir().join(unique_name("syscalls-qemu"));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace");
    run(traced(&filter, &trace).args([
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
    assert_none_refused(&trace, "the QEMU probe", KIMCHID);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP server on 127.0.0.1 that answers one request with 200; its address.
fn one_answer_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    });
    address.to_string()
}

/// `kimchid check-url` serves one connection, given as its standard input and output
/// the way kimchi-url-check.socket's Accept=yes does, and runs curl for a server that
/// answers: neither makes a call kimchi-url-check@.service refuses.
#[test]
fn the_url_check_helper_and_its_curl_make_no_call_their_unit_refuses() {
    let filter = traceable(&refused(URL_CHECK)).join(",");
    let dir = std::env::temp_dir().join(unique_name("syscalls-url-check"));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace");
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    let theirs: std::os::fd::OwnedFd = theirs.into();
    let mut helper = Reaped(
        traced(&filter, &trace)
            .arg(kimchid_bin())
            .arg("check-url")
            .stdin(Stdio::from(theirs.try_clone().unwrap()))
            .stdout(Stdio::from(theirs))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run strace"),
    );
    let url = format!("http://{}/install.iso", one_answer_server());
    writeln!(ours, "{}", serde_json::json!({ "url": url })).unwrap();
    let mut answer = String::new();
    ours.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "{\"outcome\":\"answers\"}\n");
    let ended = poll(Duration::from_secs(30), || helper.0.try_wait().unwrap());
    assert!(ended.is_some_and(|s| s.success()), "{ended:?}");
    assert_none_refused(&trace, "kimchid check-url (and curl)", URL_CHECK);
    let _ = std::fs::remove_dir_all(&dir);
}
