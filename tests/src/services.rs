//! The shared stack's daemons as the tests that stop, kill or freeze them see them:
//! kimchid on the system bus (brought back by D-Bus activation, as under systemd)
//! and the machine's libvirtd. Those tests run alone (`#[ignore]`, `tests/run.sh`
//! runs them one at a time afterwards).

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{busctl, poll, run};

/// kimchid's `LibvirtConnected`, or `None` when kimchid does not answer.
pub fn libvirt_connected() -> Option<bool> {
    let ran = busctl(&[
        "get-property",
        kimchi_dbus::BUS_NAME,
        kimchi_dbus::MANAGER_PATH,
        kimchi_dbus::MANAGER_INTERFACE,
        "LibvirtConnected",
    ]);
    match ran.stdout.trim() {
        "b true" => Some(true),
        "b false" => Some(false),
        _ => None,
    }
}

pub fn libvirtd_answers() -> bool {
    run(Command::new("virsh").args(["-c", "qemu:///system", "version"])).ok
}

/// The pid owning kimchid's bus name, if any (asking does not activate kimchid).
pub fn kimchid_pid() -> Option<u32> {
    let ran = busctl(&[
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetConnectionUnixProcessID",
        "s",
        kimchi_dbus::BUS_NAME,
    ]);
    ran.stdout.trim().strip_prefix("u ")?.parse().ok()
}

/// `kill -9` of kimchid; returns once its bus name is free.
#[track_caller]
pub fn kill_kimchid() {
    let pid = kimchid_pid().expect("kimchid runs");
    run(Command::new("kill").args(["-KILL", &pid.to_string()])).expect_ok();
    poll(Duration::from_secs(10), || {
        kimchid_pid().is_none().then_some(())
    })
    .expect("kimchid's bus name stays owned after kill -9");
}

/// Starts kimchid the way a client's call does when it is not running (D-Bus
/// activation), and waits until it is connected to libvirt.
#[track_caller]
pub fn activate_kimchid() {
    busctl(&[
        "call",
        kimchi_dbus::BUS_NAME,
        kimchi_dbus::MANAGER_PATH,
        "org.freedesktop.DBus.Peer",
        "Ping",
    ]);
    poll(Duration::from_secs(60), || {
        (libvirt_connected() == Some(true)).then_some(())
    })
    .expect("kimchid did not come back connected to libvirt");
}

/// Sends libvirtd `signal` (`TERM`, `KILL`); returns once it no longer answers.
#[track_caller]
pub fn stop_libvirtd(signal: &str) {
    run(Command::new("pkill").args([&format!("-{signal}"), "-x", "libvirtd"])).expect_ok();
    poll(Duration::from_secs(10), || {
        (!libvirtd_answers()).then_some(())
    });
}

/// Starts libvirtd again and waits until kimchid is connected to it.
#[track_caller]
pub fn start_libvirtd() {
    // Left by a killed libvirtd (tests/stack-up.sh starts it the same way).
    let _ = std::fs::remove_file("/run/libvirtd.pid");
    run(Command::new("libvirtd").arg("-d")).expect_ok();
    poll(Duration::from_secs(30), || libvirtd_answers().then_some(()))
        .expect("libvirtd did not come back");
    poll(Duration::from_secs(30), || {
        (libvirt_connected() == Some(true)).then_some(())
    })
    .expect("kimchid did not reconnect to libvirt");
}

/// libvirtd's pid.
#[track_caller]
pub fn libvirtd_pid() -> Pid {
    let ran = run(Command::new("pgrep").args(["-x", "libvirtd"])).expect_ok();
    let pid = ran
        .stdout
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok());
    Pid::from_raw(pid.unwrap_or_else(|| panic!("no libvirtd pid in {:?}", ran.stdout)))
}

/// libvirtd stopped (SIGSTOP) until dropped: the calls sent to it wait, the work
/// it runs in other processes (qemu-img) goes on.
pub struct FrozenLibvirtd(Pid);

/// Stops libvirtd `pid` at once (a signal, no process to start).
#[track_caller]
pub fn freeze_libvirtd(pid: Pid) -> FrozenLibvirtd {
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP libvirtd");
    FrozenLibvirtd(pid)
}

impl Drop for FrozenLibvirtd {
    fn drop(&mut self) {
        // Gone already when it was killed meanwhile.
        let _ = kill(self.0, Signal::SIGCONT);
    }
}
