//! The Linux test guest of `kimchi_tests::guest` behaves like a real one under libvirt,
//! without kimchi: it boots, takes a DHCP lease on `default`, reboots and powers off
//! on the ACPI power button, takes a lease on a NIC hot-plugged later, and releases
//! hot-unplugged NICs and disks. Other tests rely on all of this.

use std::process::Command;
use std::time::Duration;

use kimchi_tests::guest::{self, POWERING_OFF, READY};
use kimchi_tests::{poll, run, scratch_dir, unique_name, virsh};

/// TCG on a 2-core machine shared with other tests: generous.
const BOOT: Duration = Duration::from_secs(120);
const LEASE: Duration = Duration::from_secs(120);
const POWER_OFF: Duration = Duration::from_secs(60);
/// Hot-unplug completes when the guest has released the device.
const UNPLUG: Duration = Duration::from_secs(30);

/// Undefines the guest on drop, even when the test fails.
struct Guest {
    name: String,
    log: String,
}

impl Drop for Guest {
    fn drop(&mut self) {
        guest::undefine(&self.name);
    }
}

impl Guest {
    #[track_caller]
    fn wait_for(&self, marker: &str, count: usize, timeout: Duration) {
        assert!(
            guest::wait_for_marker(&self.log, marker, count, timeout),
            "{marker:?} not seen {count} times within {timeout:?}; the console:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn state(&self) -> String {
        virsh(&["domstate", &self.name])
            .expect_ok()
            .stdout
            .trim()
            .to_owned()
    }

    /// The IPv4 addresses libvirt's DHCP leases give the guest's NICs.
    fn leases(&self) -> Vec<String> {
        let ran = virsh(&["domifaddr", &self.name, "--source", "lease"]);
        ran.stdout
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.get(2) == Some(&"ipv4")).then(|| cols[3].to_owned())
            })
            .collect()
    }

    #[track_caller]
    fn wait_for_leases(&self, count: usize) -> Vec<String> {
        poll(LEASE, || {
            let leases = self.leases();
            (leases.len() >= count).then_some(leases)
        })
        .unwrap_or_else(|| {
            panic!(
                "no {count} leases within {LEASE:?}: {:?}; the console:\n{}",
                self.leases(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }

    /// The MAC addresses of the guest's NICs (`virsh domiflist`).
    fn macs(&self) -> Vec<String> {
        let ran = virsh(&["domiflist", &self.name]).expect_ok();
        ran.stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|mac| mac.matches(':').count() == 5)
            .map(str::to_owned)
            .collect()
    }

    /// The disk targets of the guest (`virsh domblklist`).
    fn disks(&self) -> Vec<String> {
        let ran = virsh(&["domblklist", &self.name]).expect_ok();
        ran.stdout
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn guest_boots_leases_reboots_hotplugs_and_powers_off() {
    let name = unique_name("guest");
    let log = guest::define(&name, Some("default"));
    let g = Guest { name, log };
    let name = g.name.as_str();

    virsh(&["start", name]).expect_ok();
    g.wait_for(READY, 1, BOOT);
    let first = g.wait_for_leases(1);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("192.168.122."), "{first:?}");

    // virsh reboot presses the power button; libvirt resets the guest once it is off.
    virsh(&["reboot", name]).expect_ok();
    g.wait_for(POWERING_OFF, 1, POWER_OFF);
    g.wait_for(READY, 2, BOOT);
    assert_eq!(g.state(), "running");

    // A NIC plugged in later gets its own lease; unplugged, it is gone.
    virsh(&[
        "attach-interface",
        name,
        "network",
        "default",
        "--model",
        "virtio",
        "--live",
    ])
    .expect_ok();
    let macs = g.macs();
    assert_eq!(macs.len(), 2, "{macs:?}");
    let both = g.wait_for_leases(2);
    assert_ne!(both[0], both[1], "{both:?}");
    virsh(&[
        "detach-interface",
        name,
        "network",
        "--mac",
        &macs[1],
        "--live",
    ])
    .expect_ok();
    let unplugged = poll(UNPLUG, || (g.macs().len() == 1).then_some(()));
    assert!(unplugged.is_some(), "still there: {:?}", g.macs());

    // The same for a disk: the guest sees it and lets it go.
    let dir = scratch_dir("guest-disk");
    let disk = dir.join("hot.img");
    run(Command::new("qemu-img")
        .args(["create", "-f", "raw"])
        .arg(&disk)
        .arg("1M"))
    .expect_ok();
    let disk = disk.to_str().expect("utf-8 path");
    virsh(&[
        "attach-disk",
        name,
        disk,
        "vdb",
        "--targetbus",
        "virtio",
        "--live",
    ])
    .expect_ok();
    g.wait_for("[vda] 2048 512-byte logical blocks", 1, UNPLUG);
    virsh(&["detach-disk", name, "vdb", "--live"]).expect_ok();
    let unplugged = poll(UNPLUG, || g.disks().is_empty().then_some(()));
    assert!(unplugged.is_some(), "still there: {:?}", g.disks());
    std::fs::remove_dir_all(&dir).unwrap();

    // virsh shutdown presses the power button too: the guest powers off.
    virsh(&["shutdown", name]).expect_ok();
    let off = poll(POWER_OFF, || (g.state() == "shut off").then_some(()));
    assert!(off.is_some(), "still {}", g.state());
    // virtlogd may still be writing the guest's last words.
    g.wait_for(POWERING_OFF, 2, Duration::from_secs(5));
}
