//! Storage volumes over REST (and D-Bus where the gateway's own checks would hide
//! kimchid's), in real dir pools: what qemu-img sees after create, resize and wipe,
//! files added by hand, and that no name, encoded path or link lets an operation
//! reach outside the pool's directory.

mod common;

use std::process::Command;

use common::{
    allocate_fully, entries, expect, image_format_and_size, keys, manager, no_options, snapshot,
    TestPool, Web, MIB, VOLUME_KEYS,
};
use kimchi_dbus::{Error as BusError, VolumeSpec};
use kimchi_tests::{lookup_vm_path, run, system_bus, unique_name, virsh, READER};
use serde_json::json;

// --- Create ------------------------------------------------------------------------

#[test]
fn qcow2_volume_is_201_and_qemu_img_agrees_on_format_and_size() {
    let web = Web::admin();
    let pool = TestPool::active("vol-qcow2", &web);
    let resp = web.post(
        &pool.volumes_uri(),
        &json!({"name": "disk.qcow2", "capacity": 64, "format": "qcow2"}),
    );
    let resp = expect(resp, 201, "create");
    assert_eq!(
        resp.header("location"),
        Some(pool.volume_uri("disk.qcow2").as_str()),
        "{resp:?}"
    );
    let doc = resp.json();
    assert_eq!(keys(&doc), VOLUME_KEYS, "{doc}");
    assert_eq!(doc["name"], "disk.qcow2");
    assert_eq!(doc["type"], "file");
    assert_eq!(doc["capacity"], 64);
    assert_eq!(doc["format"], "qcow2");
    assert_eq!(doc["path"], json!(pool.file("disk.qcow2")));
    assert!(doc["allocation"].as_u64().is_some_and(|a| a <= 64), "{doc}");
    assert_eq!(
        image_format_and_size(&pool.file("disk.qcow2")),
        ("qcow2".to_owned(), 64 * MIB)
    );
    assert_eq!(
        pool.volume(&web, "disk.qcow2"),
        doc,
        "GET shows what POST answered"
    );
}

#[test]
fn raw_volume_is_201_and_qemu_img_agrees_on_format_and_size() {
    let web = Web::admin();
    let pool = TestPool::active("vol-raw", &web);
    let doc = pool.create_volume(&web, "disk.img", 48, "raw");
    assert_eq!(keys(&doc), VOLUME_KEYS, "{doc}");
    assert_eq!(doc["format"], "raw");
    assert_eq!(doc["capacity"], 48);
    assert_eq!(
        image_format_and_size(&pool.file("disk.img")),
        ("raw".to_owned(), 48 * MIB)
    );
}

#[test]
fn volume_format_defaults_to_qcow2() {
    let web = Web::admin();
    let pool = TestPool::active("vol-default", &web);
    let resp = web.post(
        &pool.volumes_uri(),
        &json!({"name": "d", "capacity": 8, "type": "file"}),
    );
    assert_eq!(expect(resp, 201, "create").json()["format"], "qcow2");
    assert_eq!(image_format_and_size(&pool.file("d")).0, "qcow2");
}

#[test]
fn new_volumes_are_listed_and_counted() {
    let web = Web::admin();
    let pool = TestPool::active("vol-list", &web);
    pool.create_volume(&web, "a.qcow2", 8, "qcow2");
    pool.create_volume(&web, "b.img", 8, "raw");
    assert_eq!(
        pool.volume_names(&web),
        ["a.qcow2", "b.img"].map(String::from).into()
    );
    assert_eq!(pool.get(&web)["nr_volumes"], 2);
}

#[test]
fn existing_volume_name_is_409() {
    let web = Web::admin();
    let pool = TestPool::active("vol-dup", &web);
    pool.create_volume(&web, "v.img", 8, "raw");
    let resp = web.post(
        &pool.volumes_uri(),
        &json!({"name": "v.img", "capacity": 16, "format": "qcow2"}),
    );
    resp.assert_error(409);
    assert_eq!(
        image_format_and_size(&pool.file("v.img")),
        ("raw".to_owned(), 8 * MIB),
        "the existing volume is untouched"
    );
}

#[test]
fn volume_in_an_inactive_pool_is_409() {
    let web = Web::admin();
    let pool = TestPool::planned("vol-inactive");
    expect(pool.create(&web), 201, "create pool");
    let resp = web.post(
        &pool.volumes_uri(),
        &json!({"name": "v.img", "capacity": 8, "format": "raw"}),
    );
    resp.assert_error(409);
    assert!(!pool.dir.exists());
}

#[test]
fn unknown_volume_format_is_400() {
    let web = Web::admin();
    let pool = TestPool::active("vol-format", &web);
    let resp = web.post(
        &pool.volumes_uri(),
        &json!({"name": "v.vmdk", "capacity": 8, "format": "vmdk"}),
    );
    resp.assert_error(400);
    assert!(entries(&pool.dir).is_empty());
}

#[test]
fn zero_capacity_is_400() {
    let web = Web::admin();
    let pool = TestPool::active("vol-zero", &web);
    let resp = web.post(
        &pool.volumes_uri(),
        &json!({"name": "v.img", "capacity": 0, "format": "raw"}),
    );
    resp.assert_error(400);
    assert!(entries(&pool.dir).is_empty());
}

#[test]
fn reader_may_list_volumes_but_gets_403_on_create() {
    let web = Web::admin();
    let reader = Web::login(READER);
    let pool = TestPool::active("vol-reader", &web);
    expect(reader.get(&pool.volumes_uri()), 200, "reader lists");
    let resp = reader.post(
        &pool.volumes_uri(),
        &json!({"name": "v.img", "capacity": 8, "format": "raw"}),
    );
    let doc = resp.assert_error(403);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.NotAuthorized",
        "{doc}"
    );
    assert!(entries(&pool.dir).is_empty());
}

#[test]
fn unknown_volume_is_404() {
    let web = Web::admin();
    let pool = TestPool::active("vol-404", &web);
    let doc = web.get(&pool.volume_uri("nothing.img")).assert_error(404);
    assert_eq!(doc["error"], "org.kimchi.Kimchi1.Error.NotFound", "{doc}");
}

// --- Resize ------------------------------------------------------------------------------

#[test]
fn resize_grows_a_qcow2_volume() {
    let web = Web::admin();
    let pool = TestPool::active("vol-grow", &web);
    pool.create_volume(&web, "g.qcow2", 64, "qcow2");
    let resp = web.post(
        &format!("{}/resize", pool.volume_uri("g.qcow2")),
        &json!({"size": 192}),
    );
    let doc = expect(resp, 200, "resize").json();
    assert_eq!(doc["capacity"], 192, "{doc}");
    assert_eq!(
        image_format_and_size(&pool.file("g.qcow2")),
        ("qcow2".to_owned(), 192 * MIB)
    );
}

#[test]
fn resize_grows_a_raw_volume() {
    let web = Web::admin();
    let pool = TestPool::active("vol-grow-raw", &web);
    pool.create_volume(&web, "g.img", 16, "raw");
    let resp = web.post(
        &format!("{}/resize", pool.volume_uri("g.img")),
        &json!({"size": 40}),
    );
    assert_eq!(expect(resp, 200, "resize").json()["capacity"], 40);
    assert_eq!(
        image_format_and_size(&pool.file("g.img")),
        ("raw".to_owned(), 40 * MIB)
    );
}

#[test]
fn shrinking_a_qcow2_volume_is_409_and_leaves_it_alone() {
    let web = Web::admin();
    let pool = TestPool::active("vol-shrink-qcow2", &web);
    pool.create_volume(&web, "s.qcow2", 64, "qcow2");
    let resp = web.post(
        &format!("{}/resize", pool.volume_uri("s.qcow2")),
        &json!({"size": 32}),
    );
    let doc = resp.assert_error(409);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.InvalidState",
        "{doc}"
    );
    assert_eq!(
        image_format_and_size(&pool.file("s.qcow2")),
        ("qcow2".to_owned(), 64 * MIB)
    );
}

#[test]
fn shrinking_an_unused_raw_volume_is_allowed() {
    let web = Web::admin();
    let pool = TestPool::active("vol-shrink-raw", &web);
    pool.create_volume(&web, "s.img", 64, "raw");
    let resp = web.post(
        &format!("{}/resize", pool.volume_uri("s.img")),
        &json!({"size": 16}),
    );
    assert_eq!(expect(resp, 200, "shrink").json()["capacity"], 16);
    assert_eq!(
        image_format_and_size(&pool.file("s.img")),
        ("raw".to_owned(), 16 * MIB)
    );
}

/// A shut-off guest whose only disk is `disk`; undefined on drop.
struct VmWithDisk {
    name: String,
}

impl VmWithDisk {
    fn define(disk: &std::path::Path) -> VmWithDisk {
        let name = unique_name("vol-user");
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>\
             <devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>\
             <source file='{}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
            disk.display()
        );
        kimchi_tests::define_domain(&xml);
        let vm = VmWithDisk { name };
        // kimchid knows of it (and of its disk) once it can be looked up.
        lookup_vm_path(&vm.name);
        vm
    }
}

impl Drop for VmWithDisk {
    fn drop(&mut self) {
        let _ = virsh(&["undefine", &self.name]);
    }
}

#[test]
fn shrinking_a_raw_volume_a_vm_uses_is_409() {
    let web = Web::admin();
    let pool = TestPool::active("vol-shrink-used", &web);
    pool.create_volume(&web, "used.img", 64, "raw");
    let _vm = VmWithDisk::define(&pool.file("used.img"));
    let resp = web.post(
        &format!("{}/resize", pool.volume_uri("used.img")),
        &json!({"size": 16}),
    );
    let doc = resp.assert_error(409);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.InvalidState",
        "{doc}"
    );
    assert_eq!(image_format_and_size(&pool.file("used.img")).1, 64 * MIB);
}

#[test]
fn deleting_a_volume_a_vm_uses_is_409() {
    let web = Web::admin();
    let pool = TestPool::active("vol-del-used", &web);
    pool.create_volume(&web, "used.img", 8, "raw");
    let _vm = VmWithDisk::define(&pool.file("used.img"));
    web.delete(&pool.volume_uri("used.img")).assert_error(409);
    assert!(pool.file("used.img").exists());
}

// --- Wipe --------------------------------------------------------------------------------

#[test]
fn wipe_zeroes_a_raw_volume_and_answers_200() {
    let web = Web::admin();
    let pool = TestPool::active("vol-wipe", &web);
    pool.create_volume(&web, "w.img", 4, "raw");
    let data: Vec<u8> = (0..4 * MIB).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(pool.file("w.img"), &data).unwrap();
    let resp = web.action(&format!("{}/wipe", pool.volume_uri("w.img")));
    let doc = expect(resp, 200, "wipe").json();
    assert_eq!(doc["name"], "w.img", "{doc}");
    let (size, content) = snapshot(&pool.file("w.img"));
    assert_eq!(size, 4 * MIB);
    assert!(content.iter().all(|b| *b == 0), "data left after the wipe");
}

#[test]
fn wipe_keeps_a_qcow2_volume_a_usable_qcow2_image() {
    let web = Web::admin();
    let pool = TestPool::active("vol-wipe-qcow2", &web);
    pool.create_volume(&web, "w.qcow2", 32, "qcow2");
    let resp = web.action(&format!("{}/wipe", pool.volume_uri("w.qcow2")));
    let doc = expect(resp, 200, "wipe").json();
    assert_eq!(doc["format"], "qcow2", "{doc}");
    assert_eq!(doc["capacity"], 32, "{doc}");
    assert_eq!(
        image_format_and_size(&pool.file("w.qcow2")),
        ("qcow2".to_owned(), 32 * MIB)
    );
    run(Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(pool.file("w.qcow2")))
    .expect_ok();
}

#[test]
fn wipe_keeps_the_size_of_a_fully_allocated_raw_volume() {
    let web = Web::admin();
    let pool = TestPool::active("vol-wipe-full", &web);
    pool.create_volume(&web, "full.img", 512, "raw");
    // As a written disk image is; on ext4 such a file also has an extent index
    // block, so it occupies a little more than its size.
    allocate_fully(&pool.file("full.img"), 512 * MIB);
    let resp = web.action(&format!("{}/wipe", pool.volume_uri("full.img")));
    expect(resp, 200, "wipe");
    assert_eq!(
        image_format_and_size(&pool.file("full.img")),
        ("raw".to_owned(), 512 * MIB),
        "the wipe changed the volume's size"
    );
}

// --- Delete ------------------------------------------------------------------------------

#[test]
fn delete_removes_the_volume_file() {
    let web = Web::admin();
    let pool = TestPool::active("vol-del", &web);
    pool.create_volume(&web, "gone.qcow2", 8, "qcow2");
    pool.create_volume(&web, "stays.img", 8, "raw");
    assert!(pool.file("gone.qcow2").exists());
    let resp = expect(web.delete(&pool.volume_uri("gone.qcow2")), 204, "delete");
    assert!(resp.body.is_empty(), "{resp:?}");
    assert!(!pool.file("gone.qcow2").exists(), "the file is still there");
    assert!(pool.file("stays.img").exists(), "the other volume went too");
    web.get(&pool.volume_uri("gone.qcow2")).assert_error(404);
    assert_eq!(
        pool.volume_names(&web),
        ["stays.img"].map(String::from).into()
    );
}

// --- Files added by hand ------------------------------------------------------------------

#[test]
fn files_added_by_hand_appear_in_the_volume_list() {
    let web = Web::admin();
    let pool = TestPool::active("vol-by-hand", &web);
    assert!(pool.volume_names(&web).is_empty());
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(pool.file("hand.qcow2"))
        .arg("20M"))
    .expect_ok();
    std::fs::write(pool.file("notes.txt"), "not an image").unwrap();
    assert_eq!(
        pool.volume_names(&web),
        ["hand.qcow2", "notes.txt"].map(String::from).into()
    );
    let doc = pool.volume(&web, "hand.qcow2");
    assert_eq!(doc["format"], "qcow2", "{doc}");
    assert_eq!(doc["capacity"], 20, "{doc}");
    assert_eq!(pool.volume(&web, "notes.txt")["format"], "raw");
}

#[test]
fn file_added_by_hand_can_be_fetched_by_name_at_once() {
    let web = Web::admin();
    let pool = TestPool::active("vol-get-by-hand", &web);
    assert!(pool.volume_names(&web).is_empty());
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(pool.file("hand.img"))
        .arg("8M"))
    .expect_ok();
    // No volume list in between: the volume itself must be found.
    let doc = pool.volume(&web, "hand.img");
    assert_eq!(doc["capacity"], 8, "{doc}");
}

#[test]
fn file_removed_by_hand_leaves_the_volume_list() {
    let web = Web::admin();
    let pool = TestPool::active("vol-rm-by-hand", &web);
    pool.create_volume(&web, "v.img", 4, "raw");
    std::fs::remove_file(pool.file("v.img")).unwrap();
    assert!(pool.volume_names(&web).is_empty());
}

// --- Nothing outside the pool directory ---------------------------------------------------

/// The names the issue lists as path tricks, as they go into a JSON body.
const TRICK_NAMES: [&str; 7] = [
    "../x",
    "a/b",
    ".hidden",
    "..",
    "../../etc/x",
    "/tmp/x",
    "a\0b",
];

#[test]
fn volume_names_with_path_tricks_are_400_and_write_nothing() {
    let web = Web::admin();
    let pool = TestPool::active("vol-tricks", &web);
    let root_before = entries(&pool.root);
    for name in TRICK_NAMES {
        let resp = web.post(
            &pool.volumes_uri(),
            &json!({"name": name, "capacity": 1, "format": "raw"}),
        );
        resp.assert_error(400);
    }
    assert_eq!(
        entries(&pool.root),
        root_before,
        "a file appeared next to the pool"
    );
    assert!(entries(&pool.dir).is_empty(), "a file appeared in the pool");
}

#[test]
fn encoded_path_tricks_in_volume_urls_are_400_and_touch_nothing() {
    let web = Web::admin();
    let pool = TestPool::active("vol-url-tricks", &web);
    let victim = pool.root.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let before = snapshot(&victim);
    for segment in ["..%2Fvictim", "a%2Fb", "%2e%2e", "..", ".hidden", "a%00b"] {
        let uri = format!("{}/{segment}", pool.volumes_uri());
        web.delete(&uri).assert_error(400);
        web.action(&format!("{uri}/wipe")).assert_error(400);
        web.post(&format!("{uri}/resize"), &json!({"size": 8}))
            .assert_error(400);
    }
    assert_eq!(
        snapshot(&victim),
        before,
        "the file next to the pool changed"
    );
    assert_eq!(
        entries(&pool.root),
        ["pool", "victim"].map(String::from).into()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dbus_names_reaching_outside_the_pool_are_invalid_arguments() {
    let (_web, pool) = tokio::task::block_in_place(|| {
        let web = Web::admin();
        let pool = TestPool::active("vol-bus-tricks", &web);
        (web, pool)
    });
    let victim = pool.root.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let before = snapshot(&victim);
    let conn = system_bus().await;
    let manager = manager(&conn).await;
    for name in [
        "../victim",
        "../made",
        "a/b",
        ".hidden",
        "..",
        "/tmp/kimchi-e2e-x",
    ] {
        let spec = VolumeSpec {
            name: name.into(),
            capacity_mib: 1,
            allocation_mib: 0,
            format: "raw".into(),
        };
        let outcomes = [
            manager
                .create_storage_volume(&pool.name, spec, no_options())
                .await
                .map(drop),
            manager
                .resize_storage_volume(&pool.name, name, 64, no_options())
                .await
                .map(drop),
            manager
                .wipe_storage_volume(&pool.name, name, no_options())
                .await
                .map(drop),
            manager
                .delete_storage_volume(&pool.name, name, no_options())
                .await,
            manager
                .get_storage_volume(&pool.name, name, no_options())
                .await
                .map(drop),
        ];
        for (op, outcome) in ["create", "resize", "wipe", "delete", "get"]
            .iter()
            .zip(outcomes)
        {
            assert!(
                matches!(outcome, Err(BusError::InvalidArgument(_))),
                "{op} {name:?}: {outcome:?}"
            );
        }
    }
    assert_eq!(
        snapshot(&victim),
        before,
        "the file next to the pool changed"
    );
    assert_eq!(
        entries(&pool.root),
        ["pool", "victim"].map(String::from).into()
    );
    assert!(entries(&pool.dir).is_empty());
}

/// A file next to the pool directory and a link to it inside, as anyone who may
/// write to the directory (a shared or network file system) can make.
fn link_to_outside(pool: &TestPool, web: &Web) -> std::path::PathBuf {
    let victim = pool.root.join("victim.img");
    std::fs::write(&victim, vec![0x5a; MIB as usize]).unwrap();
    std::os::unix::fs::symlink(&victim, pool.file("link.img")).unwrap();
    assert!(
        pool.volume_names(web).contains("link.img"),
        "libvirt does not list the link"
    );
    victim
}

#[test]
fn resize_through_a_link_leaves_the_file_outside_the_pool_alone() {
    let web = Web::admin();
    let pool = TestPool::active("vol-link-resize", &web);
    let victim = link_to_outside(&pool, &web);
    let before = snapshot(&victim);
    let resp = web.post(
        &format!("{}/resize", pool.volume_uri("link.img")),
        &json!({"size": 8}),
    );
    assert_eq!(
        snapshot(&victim).0,
        before.0,
        "resize of link.img changed {} outside the pool (HTTP {})",
        victim.display(),
        resp.status
    );
    assert!((400..500).contains(&resp.status), "{resp:?}");
}

#[test]
fn wipe_through_a_link_leaves_the_file_outside_the_pool_alone() {
    let web = Web::admin();
    let pool = TestPool::active("vol-link-wipe", &web);
    let victim = link_to_outside(&pool, &web);
    let before = snapshot(&victim);
    let resp = web.action(&format!("{}/wipe", pool.volume_uri("link.img")));
    assert!(
        snapshot(&victim) == before,
        "wipe of link.img overwrote {} outside the pool (HTTP {})",
        victim.display(),
        resp.status
    );
    assert!((400..500).contains(&resp.status), "{resp:?}");
}

#[test]
fn delete_of_a_link_removes_the_link_not_the_file_outside() {
    let web = Web::admin();
    let pool = TestPool::active("vol-link-delete", &web);
    let victim = link_to_outside(&pool, &web);
    let before = snapshot(&victim);
    let resp = web.delete(&pool.volume_uri("link.img"));
    assert!(
        victim.exists(),
        "delete removed a file outside the pool ({resp:?})"
    );
    assert_eq!(snapshot(&victim), before);
}

/// A link in the pool directory to a file that does not exist yet, next to it.
fn dangling_link_to_outside(pool: &TestPool, name: &str) -> std::path::PathBuf {
    let target = pool.root.join(format!("outside-{name}"));
    std::os::unix::fs::symlink(&target, pool.file(name)).unwrap();
    target
}

#[test]
fn qcow2_create_over_a_dangling_link_creates_nothing_outside_the_pool() {
    let web = Web::admin();
    let pool = TestPool::active("vol-dangling-qcow2", &web);
    let target = dangling_link_to_outside(&pool, "new.qcow2");
    let resp = web.post(
        &pool.volumes_uri(),
        &json!({"name": "new.qcow2", "capacity": 8, "format": "qcow2"}),
    );
    assert!(
        !target.exists(),
        "creating new.qcow2 wrote {} outside the pool (HTTP {})",
        target.display(),
        resp.status
    );
    assert!((400..500).contains(&resp.status), "{resp:?}");
}

#[test]
fn raw_create_over_a_dangling_link_is_refused_as_a_conflict() {
    let web = Web::admin();
    let pool = TestPool::active("vol-dangling-raw", &web);
    let target = dangling_link_to_outside(&pool, "new.img");
    let resp = web.post(
        &pool.volumes_uri(),
        &json!({"name": "new.img", "capacity": 8, "format": "raw"}),
    );
    assert!(
        !target.exists(),
        "{} was created ({resp:?})",
        target.display()
    );
    resp.assert_error(409);
}
