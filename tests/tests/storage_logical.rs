//! A `logical` (LVM) pool on a loop device: defined with its source device, built
//! into a volume group on activation, and gone again after delete. (Creating logical
//! volumes needs device-mapper, which these machines' kernels do not offer, so the
//! test stops at the pool.)

use std::process::Command;

use kimchi_tests::{manager_call, run, unique_name, LoopDevice};

/// A loop device and the pool and volume group made on it; all removed on drop
/// (the pool and group first, then the device).
struct LoopPool {
    name: String,
    device: LoopDevice,
}

impl LoopPool {
    fn new() -> LoopPool {
        LoopPool {
            name: unique_name("kvg").replace('-', "_"),
            device: LoopDevice::new("kvg", "128M"),
        }
    }
}

impl Drop for LoopPool {
    fn drop(&mut self) {
        manager_call("DeactivateStoragePool", "sa{sv}", &[&self.name, "0"]);
        manager_call("DeleteStoragePool", "sa{sv}", &[&self.name, "0"]);
        let _ = run(Command::new("vgremove").args(["-f", &self.name]));
        let _ = run(Command::new("pvremove").args(["-ff", "-y", &self.device.path]));
    }
}

#[test]
fn logical_pool_builds_a_volume_group_on_its_device() {
    let pool = LoopPool::new();
    let created = manager_call(
        "CreateStoragePool",
        "(sssssas)a{sv}",
        &[
            &pool.name,
            "logical",
            "",
            "",
            "",
            "1",
            &pool.device.path,
            "0",
        ],
    )
    .expect_ok();
    assert!(
        created.stdout.contains("\"inactive\""),
        "{}",
        created.stdout
    );

    let active = manager_call("ActivateStoragePool", "sa{sv}", &[&pool.name, "0"]).expect_ok();
    assert!(active.stdout.contains("\"active\""), "{}", active.stdout);
    assert!(
        active.stdout.contains(&format!("\"/dev/{}\"", pool.name)),
        "{}",
        active.stdout
    );
    let vgs = run(Command::new("vgs").args(["--noheadings", "-o", "vg_name,pv_name"]))
        .expect_ok()
        .stdout;
    assert!(
        vgs.lines()
            .any(|l| l.contains(&pool.name) && l.contains(&pool.device.path)),
        "volume group not built on {}: {vgs}",
        pool.device.path
    );

    manager_call("DeactivateStoragePool", "sa{sv}", &[&pool.name, "0"]).expect_ok();
    manager_call("DeleteStoragePool", "sa{sv}", &[&pool.name, "0"]).expect_ok();
    let gone = manager_call("GetStoragePool", "sa{sv}", &[&pool.name, "0"]);
    assert!(!gone.ok, "pool still there: {}", gone.stdout);
}

#[test]
fn logical_pool_without_devices_is_refused() {
    let name = unique_name("kvg").replace('-', "_");
    let ran = manager_call(
        "CreateStoragePool",
        "(sssssas)a{sv}",
        &[&name, "logical", "", "", "", "0", "0"],
    );
    assert!(!ran.ok);
    assert!(ran.stderr.contains("source device"), "{}", ran.stderr);
}
