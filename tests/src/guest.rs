//! A real Linux guest for the tests that need one: Debian's cloud kernel with a busybox
//! initramfs built by `tests/guest/build.sh`. It powers off on the ACPI power button
//! (so `virsh shutdown` and `virsh reboot` work), runs udhcpc on every virtio NIC,
//! hot-plugged ones included (so libvirt's DHCP leases show its addresses), releases
//! hot-unplugged devices, and prints markers on its serial console, which libvirt
//! writes to a file the tests read.

use std::path::Path;
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use crate::{define_domain, poll, run, virsh, xml_escape};

/// Printed once per boot, when the guest answers the power button and runs DHCP:
/// count it to see a reboot.
pub const READY: &str = "kimchi-test-guest: ready";
/// Printed when the power button was pressed, just before the guest powers off.
pub const POWERING_OFF: &str = "kimchi-test-guest: powering off";

/// Where build.sh puts `vmlinuz` and `initrd.img` (a place QEMU's user may read).
const BOOT_DIR: &str = "/var/lib/libvirt/boot/kimchi-test-guest";
/// The kernel boots with 80 MiB but not with 64; this leaves room for hot-plugged
/// devices and udhcpc instances.
const MEMORY_MIB: u32 = 128;

/// Builds the guest's kernel and initramfs unless they are current, once per process
/// (build.sh caches across processes and serialises concurrent runs with a lock).
pub fn ensure_built() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/build.sh");
        let ran = run(Command::new("bash").arg(&script));
        assert!(
            ran.ok,
            "{} failed:\n{}{}",
            script.display(),
            ran.stdout,
            ran.stderr
        );
    });
}

/// The serial log libvirt writes for the guest `name`.
fn serial_log(name: &str) -> String {
    format!("/var/log/libvirt/qemu/{name}-serial.log")
}

/// Defines (does not start) the persistent domain `name` booting the test guest under
/// TCG (nested KVM does not boot Linux on the test machines), with a virtio NIC on
/// `network` if given, no disk, and its serial console logged to a file; returns that
/// file's path. A log left by an earlier guest of the same name is removed, so marker
/// counts start from zero. Each start (a new QEMU) truncates the log; a reboot (the
/// same QEMU) appends to it.
pub fn define(name: &str, network: Option<&str>) -> String {
    ensure_built();
    let log = serial_log(name);
    remove_if_present(&log);
    let nic = network
        .map(|net| {
            [
                "<interface type='network'><source network='",
                &xml_escape(net),
                "'/><model type='virtio'/></interface>",
            ]
            .concat()
        })
        .unwrap_or_default();
    let escaped_name = xml_escape(name);
    let xml = format!(
        "<domain type='qemu'>\
           <name>{escaped_name}</name>\
           <memory unit='MiB'>{MEMORY_MIB}</memory>\
           <vcpu>1</vcpu>\
           <os>\
             <type arch='x86_64' machine='pc'>hvm</type>\
             <kernel>{BOOT_DIR}/vmlinuz</kernel>\
             <initrd>{BOOT_DIR}/initrd.img</initrd>\
             <cmdline>console=ttyS0</cmdline>\
           </os>\
           <features><acpi/><apic/></features>\
           <on_poweroff>destroy</on_poweroff>\
           <on_reboot>restart</on_reboot>\
           <on_crash>destroy</on_crash>\
           <devices>\
             <serial type='file'><source path='{log}'/></serial>\
             {nic}\
             <graphics type='vnc'><listen type='none'/></graphics>\
           </devices>\
         </domain>"
    );
    define_domain(&xml);
    log
}

/// Whether `marker` occurs at least `count` times in the serial log `log` within
/// `timeout` (polled: the guest writes it whenever it gets there).
pub fn wait_for_marker(log: &str, marker: &str, count: usize, timeout: Duration) -> bool {
    poll(timeout, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        (text.matches(marker).count() >= count).then_some(())
    })
    .is_some()
}

/// Destroys the domain `name` if it runs, undefines it and removes its serial log; a
/// domain that does not exist is fine. Other failures panic, except while the thread
/// already panics (a cleanup guard must not abort the test binary).
pub fn undefine(name: &str) {
    let _ = virsh(&["destroy", name]);
    let ran = virsh(&["undefine", name]);
    let gone = ran.ok || ran.stderr.contains("failed to get domain");
    assert!(
        gone || std::thread::panicking(),
        "undefine {name}: {}",
        ran.stderr
    );
    remove_if_present(&serial_log(name));
}

fn remove_if_present(path: &str) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("remove {path}: {e}"),
        _ => {}
    }
}
