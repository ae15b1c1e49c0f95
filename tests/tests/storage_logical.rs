//! A `logical` (LVM) pool on a loop device: defined with its source device, built
//! into a volume group on activation, and gone again after delete. (Creating logical
//! volumes needs device-mapper, which these machines' kernels do not offer, so the
//! test stops at the pool.)

use std::path::PathBuf;
use std::process::Command;

use kimchi_tests::{manager_call, run, unique_name};

/// A loop device over a sparse file, plus the pool and volume group made on it;
/// all removed on drop.
struct LoopPool {
    name: String,
    image: PathBuf,
    device: String,
}

impl LoopPool {
    fn new() -> LoopPool {
        let name = unique_name("kvg").replace('-', "_");
        let image = std::env::temp_dir().join(format!("{name}.img"));
        run(Command::new("truncate").args(["-s", "128M"]).arg(&image)).expect_ok();
        let device = run(Command::new("losetup").args(["-f", "--show"]).arg(&image))
            .expect_ok()
            .stdout
            .trim()
            .to_owned();
        LoopPool {
            name,
            image,
            device,
        }
    }
}

impl Drop for LoopPool {
    fn drop(&mut self) {
        manager_call("DeactivateStoragePool", "sa{sv}", &[&self.name, "0"]);
        manager_call("DeleteStoragePool", "sa{sv}", &[&self.name, "0"]);
        let _ = run(Command::new("vgremove").args(["-f", &self.name]));
        let _ = run(Command::new("pvremove").args(["-ff", "-y", &self.device]));
        let _ = run(Command::new("losetup").args(["-d", &self.device]));
        let _ = std::fs::remove_file(&self.image);
    }
}

#[test]
fn logical_pool_builds_a_volume_group_on_its_device() {
    let pool = LoopPool::new();
    let created = manager_call(
        "CreateStoragePool",
        "(sssssas)a{sv}",
        &[&pool.name, "logical", "", "", "", "1", &pool.device, "0"],
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
            .any(|l| l.contains(&pool.name) && l.contains(&pool.device)),
        "volume group not built on {}: {vgs}",
        pool.device
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
