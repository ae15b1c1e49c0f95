//! Crash safety on the real stack: `kill -9` of kimchid, or of libvirtd, in the
//! middle of a VM creation, a volume creation and a wipe leaves nothing half-made
//! once the killed daemon is back — no disk of a VM that does not exist, no volume
//! a creation never reported, no half-zeroed image — and the interrupted task is
//! reported failed, with what was undone. kimchid comes back the way it does under
//! systemd when a client calls (D-Bus activation); libvirtd is started again.
//!
//! "In the middle": libvirtd is frozen (SIGSTOP) the moment kimchid writes the
//! operation down in its state directory — its task starts right after —, and the
//! kill comes only once the task is seen still running.
//!
//! These kill the shared stack's daemons, so they are ignored in the parallel run;
//! `tests/run.sh` runs them alone afterwards.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{entries, expect, qemu_img_info, TemplateNames, TestPool, Web, MIB};
use kimchi_tests::services::{
    activate_kimchid, freeze_libvirtd, kill_kimchid, libvirtd_pid, start_libvirtd, stop_libvirtd,
};
use kimchi_tests::{poll, run, unique_name, virsh, Request};
use serde_json::{json, Value};

/// How many times an operation is started before giving up on catching it running.
const ATTEMPTS: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Victim {
    Kimchid,
    Libvirtd,
}

/// Where the shared kimchid writes down its operations (its state directory).
const IN_FLIGHT: &str = "/var/lib/kimchi/in-flight";

/// The operation records in kimchid's journal now.
fn records() -> BTreeSet<String> {
    entries(Path::new(IN_FLIGHT))
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect()
}

/// Sends `request` with `Prefer: respond-async`; libvirtd is frozen the moment
/// kimchid writes the operation down, let go until `begun` shows the operation's
/// work on disk, and frozen again. If the task still runs then, `victim` is killed
/// and brought back. The task's URI, or `None` when it had ended too soon.
fn kill_during(
    web: &Web,
    request: Request,
    begun: &dyn Fn() -> bool,
    victim: Victim,
) -> Option<String> {
    let libvirtd = libvirtd_pid();
    let before = records();
    let sent = std::thread::spawn(move || request.header("Prefer", "respond-async").send());
    let written = poll_fast(|| records() != before);
    drop(freeze_libvirtd(libvirtd));
    let on_disk = poll_fast(begun);
    let frozen = freeze_libvirtd(libvirtd);
    let resp = expect(sent.join().expect("request thread"), 202, "start the task");
    assert!(written, "kimchid wrote no operation record: {resp:?}");
    assert!(on_disk, "the operation never showed on disk: {resp:?}");
    let uri = resp.header("location").expect("Location").to_owned();
    let now = expect(web.get(&uri), 200, "get the task").json();
    if now["status"] != "running" {
        return None;
    }
    match victim {
        Victim::Kimchid => {
            kill_kimchid();
            drop(frozen);
            activate_kimchid();
        }
        Victim::Libvirtd => {
            stop_libvirtd("KILL");
            drop(frozen);
            start_libvirtd();
        }
    }
    Some(uri)
}

/// Whether `ready` turned true within 30 s, looking every 100 µs.
fn poll_fast(ready: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    false
}

/// Starts what `request` makes until a kill lands while its task runs; `forget`
/// removes what an attempt that ended too soon made. The task's URI.
fn kill_while_running(
    web: &Web,
    request: impl Fn(&Web) -> Request,
    begun: impl Fn() -> bool,
    victim: Victim,
    forget: impl Fn(&Web),
) -> String {
    for _ in 0..ATTEMPTS {
        if let Some(uri) = kill_during(web, request(web), &begun, victim) {
            return uri;
        }
        forget(web);
    }
    panic!("the task ended before libvirtd froze, {ATTEMPTS} times");
}

/// The task once it no longer runs (a task kimchid takes over after a restart runs
/// until its operation is undone).
fn ended_task(web: &Web, uri: &str) -> Value {
    let mut last = Value::Null;
    poll(Duration::from_secs(120), || {
        last = expect(web.get(uri), 200, "get the task").json();
        (last["status"] != "running").then_some(())
    })
    .unwrap_or_else(|| panic!("task still running after 120 s: {last}"));
    last
}

/// The session to use after `victim` came back: kimchid keeps sessions in memory.
fn after(victim: Victim, web: Web) -> Web {
    match victim {
        Victim::Kimchid => Web::admin(),
        Victim::Libvirtd => web,
    }
}

/// The task failed, saying why (the kill, or libvirt's error when libvirtd went)
/// and, last, what was undone.
#[track_caller]
fn assert_failed_by(task: &Value, victim: Victim, undone: &str) {
    eprintln!("after killing {victim:?}: {task}");
    assert_eq!(task["status"], "failed", "{task}");
    let message = task["message"].as_str().expect("message");
    let why = match victim {
        Victim::Kimchid => "kimchid stopped before this task ended; ",
        Victim::Libvirtd => "libvirt: ",
    };
    assert!(
        message.starts_with(why) && message.ends_with(undone),
        "{task}"
    );
}

/// The file's first four bytes.
fn first_bytes(path: &Path) -> Option<[u8; 4]> {
    let mut bytes = [0; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .ok()?;
    Some(bytes)
}

/// `bytes` of random data in a raw file: a copy of it takes a while.
fn random_file(path: &Path, bytes: u64) {
    run(Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(path).expect("create the file")))
    .expect_ok();
}

// --- VM creation ---------------------------------------------------------------------

fn vm_creation(victim: Victim) {
    let web = Web::admin();
    let pool = TestPool::active(&format!("crash-vm-{victim:?}").to_lowercase(), &web);
    // The template copies this volume: the copy is the slow part of the creation.
    random_file(&pool.file("base.img"), 256 * MIB);
    assert!(pool.volume_names(&web).contains("base.img"));
    let template = TemplateNames::one("crash-vm");
    let body = json!({
        "name": template.name(), "memory": 128,
        "disks": [{"index": 0, "volume": "base.img"}]
    });
    expect(web.post("/templates", &body), 201, "create the template");
    let template_before = expect(web.get(&template.uri()), 200, "get the template").json();
    let vm = unique_name("crash-vm");
    let create = |web: &Web| {
        web.request("POST", "/vms").json(&json!({
            "name": vm, "template": template.uri(), "storagepool": pool.uri()
        }))
    };
    let forget = |web: &Web| {
        expect(web.delete(&format!("/vms/{vm}")), 204, "delete the VM");
    };
    let disk = pool.file(&format!("{vm}-0.img"));
    let uri = kill_while_running(&web, create, || disk.exists(), victim, forget);

    let web = after(victim, web);
    let task = ended_task(&web, &uri);
    assert_failed_by(&task, victim, &format!("removed its disk '{vm}-0.img'"));
    assert_eq!(task["target_uri"], format!("/vms/{vm}"), "{task}");
    web.get(&format!("/vms/{vm}")).assert_error(404);
    assert!(!virsh(&["dominfo", &vm]).ok, "libvirt still has VM {vm}");
    assert_eq!(
        entries(&pool.dir),
        ["base.img".to_owned()].into(),
        "files left in the pool: {task}"
    );
    assert_eq!(
        pool.volume_names(&web),
        ["base.img".to_owned()].into(),
        "{task}"
    );
    assert_eq!(
        expect(web.get(&template.uri()), 200, "get the template").json(),
        template_before,
        "the template is intact"
    );
    // The name and the disk's name are free again.
    let again = create(&web).send();
    expect(again, 201, "create the VM again");
    forget(&web);
}

#[test]
#[ignore = "kills kimchid; run alone (tests/run.sh does)"]
fn vm_creation_cut_by_killing_kimchid_leaves_neither_vm_nor_disk() {
    vm_creation(Victim::Kimchid);
}

#[test]
#[ignore = "kills libvirtd; run alone (tests/run.sh does)"]
fn vm_creation_cut_by_killing_libvirtd_leaves_neither_vm_nor_disk() {
    vm_creation(Victim::Libvirtd);
}

// --- Volume creation -----------------------------------------------------------------

fn volume_creation(victim: Victim) {
    let web = Web::admin();
    let pool = TestPool::active(&format!("crash-vol-{victim:?}").to_lowercase(), &web);
    let create = |web: &Web| {
        web.request("POST", &pool.volumes_uri())
            .json(&json!({"name": "new.img", "capacity": 512, "allocation": 512, "format": "raw"}))
    };
    let forget = |web: &Web| {
        expect(
            web.delete(&pool.volume_uri("new.img")),
            204,
            "delete the volume",
        );
    };
    let file = pool.file("new.img");
    let uri = kill_while_running(&web, create, || file.exists(), victim, forget);

    let web = after(victim, web);
    let task = ended_task(&web, &uri);
    assert_failed_by(&task, victim, "removed the volume 'new.img'");
    assert_eq!(task["target_uri"], pool.volume_uri("new.img"), "{task}");
    assert!(
        entries(&pool.dir).is_empty(),
        "files left in the pool: {task}"
    );
    assert!(pool.volume_names(&web).is_empty(), "{task}");
    assert_eq!(pool.get(&web)["nr_volumes"], 0);
    let again = create(&web).send();
    expect(again, 201, "create the volume again");
}

#[test]
#[ignore = "kills kimchid; run alone (tests/run.sh does)"]
fn volume_creation_cut_by_killing_kimchid_leaves_no_volume() {
    volume_creation(Victim::Kimchid);
}

#[test]
#[ignore = "kills libvirtd; run alone (tests/run.sh does)"]
fn volume_creation_cut_by_killing_libvirtd_leaves_no_volume() {
    volume_creation(Victim::Libvirtd);
}

// --- Wipe ------------------------------------------------------------------------------

fn wipe(victim: Victim) {
    let web = Web::admin();
    let pool = TestPool::active(&format!("crash-wipe-{victim:?}").to_lowercase(), &web);
    let data = pool.root.join("data.raw");
    random_file(&data, 256 * MIB);
    let image = pool.file("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1"])
        .arg(&data)
        .arg(&image))
    .expect_ok();
    run(Command::new("qemu-img")
        .args(["resize", "-q", "-f", "qcow2"])
        .arg(&image)
        .arg("1G"))
    .expect_ok();
    assert!(pool.volume_names(&web).contains("disk.qcow2"));
    let wipe = |web: &Web| web.request("POST", &format!("{}/wipe", pool.volume_uri("disk.qcow2")));
    // libvirt zeroes from the start: the qcow2 magic goes first.
    let zeroed = || first_bytes(&image).is_some_and(|b| &b != b"QFI\xfb");
    let uri = kill_while_running(&web, wipe, zeroed, victim, |_| {});

    let web = after(victim, web);
    let task = ended_task(&web, &uri);
    // Whatever libvirtd had zeroed, the wipe was done again whole.
    assert_failed_by(
        &task,
        victim,
        "wiped the volume 'disk.qcow2' again from the start",
    );
    // An empty image of the same format and size, as a finished wipe leaves it.
    let info = qemu_img_info(&image);
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(info["virtual-size"], 1 << 30, "{info}");
    let map = run(Command::new("qemu-img")
        .args(["map", "--output=json", "-f", "qcow2"])
        .arg(&image))
    .expect_ok();
    let extents: Value = serde_json::from_str(&map.stdout).expect("qemu-img map JSON");
    assert!(
        extents
            .as_array()
            .expect("extents")
            .iter()
            .all(|e| e["data"] == false),
        "data left in the wiped image: {extents}"
    );
    let doc = pool.volume(&web, "disk.qcow2");
    assert_eq!(
        (doc["format"].clone(), doc["capacity"].clone()),
        (json!("qcow2"), json!(1024))
    );
}

#[test]
#[ignore = "kills kimchid; run alone (tests/run.sh does)"]
fn wipe_cut_by_killing_kimchid_leaves_an_empty_image_of_the_same_format_and_size() {
    wipe(Victim::Kimchid);
}

#[test]
#[ignore = "kills libvirtd; run alone (tests/run.sh does)"]
fn wipe_cut_by_killing_libvirtd_leaves_an_empty_image_of_the_same_format_and_size() {
    wipe(Victim::Libvirtd);
}
