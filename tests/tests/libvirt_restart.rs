//! kimchid follows libvirtd across a restart: it notices the lost connection, reports
//! it (LibvirtConnected turns false), reconnects by itself and
//! serves current data again. This restarts the machine's libvirtd, so it is ignored
//! in the parallel run; `tests/run.sh` runs it alone afterwards.

use std::process::Command;
use std::time::Duration;

use kimchi_tests::{busctl, poll, run};

fn libvirt_connected() -> Option<bool> {
    let ran = busctl(&[
        "get-property",
        "org.kimchi.Kimchi1",
        "/org/kimchi/Kimchi1/Manager",
        "org.kimchi.Kimchi1.Manager",
        "LibvirtConnected",
    ]);
    match ran.stdout.trim() {
        "b true" => Some(true),
        "b false" => Some(false),
        _ => None,
    }
}

fn libvirtd_answers() -> bool {
    run(Command::new("virsh").args(["-c", "qemu:///system", "version"])).ok
}

#[test]
#[ignore = "restarts libvirtd; run alone (tests/run.sh does)"]
fn kimchid_reconnects_after_libvirtd_restarts() {
    assert_eq!(
        libvirt_connected(),
        Some(true),
        "kimchid must start connected"
    );
    run(Command::new("pkill").args(["-x", "libvirtd"])).expect_ok();
    let lost = poll(Duration::from_secs(30), || {
        (libvirt_connected() == Some(false)).then_some(())
    });
    // Bring libvirtd back whatever happened, so later tests have it.
    poll(Duration::from_secs(10), || {
        (!libvirtd_answers()).then_some(())
    });
    run(Command::new("libvirtd").arg("-d")).expect_ok();
    assert!(lost.is_some(), "kimchid never noticed libvirtd going away");
    poll(Duration::from_secs(30), || libvirtd_answers().then_some(()))
        .expect("libvirtd did not come back");
    poll(Duration::from_secs(30), || {
        (libvirt_connected() == Some(true)).then_some(())
    })
    .expect("kimchid did not reconnect to libvirt");
    let pools = busctl(&[
        "call",
        "org.kimchi.Kimchi1",
        "/org/kimchi/Kimchi1/Manager",
        "org.kimchi.Kimchi1.Manager",
        "GetStoragePool",
        "sa{sv}",
        "default",
        "0",
    ])
    .expect_ok();
    assert!(pools.stdout.contains("\"active\""), "{}", pools.stdout);
}
