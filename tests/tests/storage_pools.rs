//! Storage pools over REST, against real libvirt dir pools under /tmp: their life
//! (create → activate → deactivate → delete), every field of the spec, the sizes
//! statvfs sees, the refusals, the source fields of netfs and logical pools, and the
//! D-Bus signal an activation sends.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::{
    entries, expect, fs_space_mib, get_listing, keys, manager, no_options, TestPool, Web, MIB,
    POOL_KEYS,
};
use futures_util::StreamExt;
use kimchi_dbus::{PoolState, ISO_POOL, STORAGE_POOL_INTERFACE};
use kimchi_tests::{run, system_bus, virsh, LoopDevice, READER};
use serde_json::{json, Value};
use zbus::message::Type as MessageType;
use zbus::{MatchRule, MessageStream, OwnedVariant};

/// Space other processes may take or free between two looks at the file system.
const SLACK_MIB: u64 = 64;

#[track_caller]
fn assert_near(what: &str, reported: &Value, expected: u64, slack: u64) {
    let reported = reported
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is not a number: {reported}"));
    assert!(
        reported.abs_diff(expected) <= slack,
        "{what}: reported {reported} MiB, statvfs says {expected} MiB (±{slack})"
    );
}

/// The XML libvirt keeps for the pool.
#[track_caller]
fn libvirt_xml(pool: &str) -> String {
    virsh(&["pool-dumpxml", pool]).expect_ok().stdout
}

// --- Create ------------------------------------------------------------------------

#[test]
fn new_dir_pool_is_201_inactive_with_location_and_every_field() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-new");
    let resp = expect(pool.create(&web), 201, "create");
    assert_eq!(
        resp.header("location"),
        Some(pool.uri().as_str()),
        "{resp:?}"
    );
    let doc = resp.json();
    assert_eq!(keys(&doc), POOL_KEYS, "{doc}");
    assert_eq!(
        doc,
        json!({
            "name": pool.name, "state": "inactive", "path": pool.dir, "type": "dir",
            "capacity": 0, "allocated": 0, "available": 0, "nr_volumes": 0
        })
    );
    assert_eq!(pool.get(&web), doc, "GET shows what POST answered");
    assert!(!pool.dir.exists(), "defining a pool must not build it yet");
}

#[test]
fn new_pool_appears_in_the_pool_list() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-list");
    expect(pool.create(&web), 201, "create");
    let list = get_listing(&web, "/storagepools");
    let found: Vec<&Value> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter(|p| p["name"] == pool.name.as_str())
        .collect();
    assert_eq!(found.len(), 1, "{list}");
    assert_eq!(*found[0], pool.get(&web));
}

#[test]
fn default_pool_exists_and_kimchi_isos_comes_last() {
    let web = Web::admin();
    let list = get_listing(&web, "/storagepools");
    let pools = list.as_array().expect("a list");
    let default = pools
        .iter()
        .find(|p| p["name"] == "default")
        .unwrap_or_else(|| panic!("no default pool in {list}"));
    assert_eq!(keys(default), POOL_KEYS, "{default}");
    let last = pools.last().expect("at least kimchi_isos");
    assert_eq!(last["name"], ISO_POOL, "{list}");
    assert_eq!(last["type"], "kimchi-iso", "{last}");
    assert_eq!(last["state"], "active", "{last}");
    assert_eq!(keys(last), POOL_KEYS, "{last}");
}

#[test]
fn reserved_name_kimchi_isos_is_409() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-reserved");
    let body = json!({"name": ISO_POOL, "type": "dir", "path": pool.dir});
    let doc = web.post("/storagepools", &body).assert_error(409);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.AlreadyExists",
        "{doc}"
    );
    assert!(
        !virsh(&["pool-info", ISO_POOL]).ok,
        "libvirt got a kimchi_isos pool"
    );
}

#[test]
fn unknown_pool_type_is_400() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-type");
    let body = json!({"name": pool.name, "type": "zfs-magic", "path": pool.dir});
    let doc = web.post("/storagepools", &body).assert_error(400);
    assert!(
        doc["reason"].as_str().unwrap().contains("zfs-magic"),
        "{doc}"
    );
    assert!(
        !virsh(&["pool-info", &pool.name]).ok,
        "pool was defined anyway"
    );
}

#[test]
fn duplicate_pool_name_is_409() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-dup");
    expect(pool.create(&web), 201, "create");
    let other_dir = pool.root.join("other");
    let body = json!({"name": pool.name, "type": "dir", "path": other_dir});
    let doc = web.post("/storagepools", &body).assert_error(409);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.AlreadyExists",
        "{doc}"
    );
    assert_eq!(
        pool.get(&web)["path"],
        json!(pool.dir),
        "the first pool is kept"
    );
}

#[test]
fn reader_gets_403_on_pool_create() {
    let reader = Web::login(READER);
    let pool = TestPool::planned("pool-reader");
    let doc = pool.create(&reader).assert_error(403);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.NotAuthorized",
        "{doc}"
    );
    assert!(
        !virsh(&["pool-info", &pool.name]).ok,
        "pool was defined anyway"
    );
}

#[test]
fn reader_may_read_pools_but_not_activate_them() {
    let web = Web::admin();
    let reader = Web::login(READER);
    let pool = TestPool::planned("pool-reader-act");
    expect(pool.create(&web), 201, "create");
    expect(reader.get(&pool.uri()), 200, "reader GET");
    pool.activate(&reader).assert_error(403);
    assert_eq!(pool.get(&web)["state"], "inactive");
}

#[test]
fn pool_names_with_path_tricks_are_400() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-names");
    for name in ["../x", "a/b", ".hidden", "a:b", ""] {
        let body = json!({"name": name, "type": "dir", "path": pool.dir});
        let doc = web.post("/storagepools", &body).assert_error(400);
        assert_eq!(
            doc["error"], "org.kimchi.Kimchi1.Error.InvalidArgument",
            "{name:?}: {doc}"
        );
    }
    let body = json!({"name": "a\u{0}b", "type": "dir", "path": pool.dir});
    web.post("/storagepools", &body).assert_error(400);
    assert_eq!(entries(&pool.root).len(), 0, "nothing was built");
}

#[test]
fn relative_pool_path_is_400() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-relpath");
    for path in ["relative/dir", "/tmp/../etc"] {
        let body = json!({"name": pool.name, "type": "dir", "path": path});
        web.post("/storagepools", &body).assert_error(400);
    }
}

#[test]
fn unknown_pool_is_404() {
    let web = Web::admin();
    let doc = web
        .get("/storagepools/kimchi-t-no-such-pool")
        .assert_error(404);
    assert_eq!(doc["error"], "org.kimchi.Kimchi1.Error.NotFound", "{doc}");
}

// --- Activate, sizes ------------------------------------------------------------------

#[test]
fn activating_a_dir_pool_builds_its_missing_directory() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-build");
    expect(pool.create(&web), 201, "create");
    assert!(!pool.dir.exists());
    let doc = expect(pool.activate(&web), 200, "activate").json();
    assert_eq!(doc["state"], "active", "{doc}");
    assert_eq!(doc["nr_volumes"], 0, "{doc}");
    assert!(pool.dir.is_dir(), "{} was not built", pool.dir.display());
    assert_eq!(pool.get(&web)["state"], "active");
}

#[test]
fn activating_an_active_pool_is_409() {
    let web = Web::admin();
    let pool = TestPool::active("pool-twice", &web);
    let doc = pool.activate(&web).assert_error(409);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.InvalidState",
        "{doc}"
    );
}

#[test]
fn active_pool_sizes_match_statvfs_of_its_directory() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-size");
    expect(pool.create(&web), 201, "create");
    let doc = expect(pool.activate(&web), 200, "activate").json();
    let (capacity, free) = fs_space_mib(&pool.dir);
    assert_near("capacity", &doc["capacity"], capacity, 1);
    assert_near("available", &doc["available"], free, SLACK_MIB);
    assert_near("allocated", &doc["allocated"], capacity - free, SLACK_MIB);
    let sum = doc["allocated"].as_u64().unwrap() + doc["available"].as_u64().unwrap();
    assert_near("allocated + available", &json!(sum), capacity, 1);
}

#[test]
fn pool_sizes_follow_space_taken_behind_kimchis_back() {
    let web = Web::admin();
    let pool = TestPool::active("pool-grow", &web);
    let before = pool.get(&web)["available"].as_u64().unwrap();
    // 1 GiB taken by hand, far more than other processes write meanwhile.
    common::allocate_fully(&pool.file("by-hand.img"), 1024 * MIB);
    let (_, free) = fs_space_mib(&pool.dir);
    let doc = pool.get(&web);
    assert_near("available", &doc["available"], free, SLACK_MIB);
    assert!(
        doc["available"].as_u64().unwrap() + 512 < before,
        "available did not drop: {before} MiB before, now {doc}"
    );
}

#[test]
fn pool_volume_count_includes_files_added_by_hand() {
    let web = Web::admin();
    let pool = TestPool::active("pool-count", &web);
    assert_eq!(pool.get(&web)["nr_volumes"], 0);
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(pool.file("by-hand.img"))
        .arg("1M"))
    .expect_ok();
    std::fs::write(pool.file("notes.txt"), "hello").unwrap();
    // No volume list in between: the pool itself must tell.
    let doc = pool.get(&web);
    assert_eq!(doc["nr_volumes"], 2, "{doc}");
}

#[test]
fn pool_stopped_behind_kimchis_back_keeps_the_lists_readable() {
    let web = Web::admin();
    let pool = TestPool::active("pool-virsh-stop", &web);
    virsh(&["pool-destroy", &pool.name]).expect_ok();
    // kimchid has not heard of it yet; its listings must still answer.
    for uri in [
        "/storagepools".to_owned(),
        format!("/storagepools/{ISO_POOL}"),
        format!("/storagepools/{ISO_POOL}/storagevolumes"),
    ] {
        expect(web.get(&uri), 200, &uri);
    }
}

// --- Deactivate, delete ------------------------------------------------------------------

#[test]
fn deactivated_pool_reports_no_sizes_and_no_volumes() {
    let web = Web::admin();
    let pool = TestPool::active("pool-off", &web);
    pool.create_volume(&web, "v.img", 8, "raw");
    assert_eq!(pool.get(&web)["nr_volumes"], 1);
    let doc = expect(pool.deactivate(&web), 200, "deactivate").json();
    assert_eq!(
        doc,
        json!({
            "name": pool.name, "state": "inactive", "path": pool.dir, "type": "dir",
            "capacity": 0, "allocated": 0, "available": 0, "nr_volumes": 0
        })
    );
    assert_eq!(pool.get(&web), doc);
    assert!(
        pool.file("v.img").exists(),
        "deactivation must leave files alone"
    );
}

#[test]
fn deactivating_an_inactive_pool_is_409() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-off-twice");
    expect(pool.create(&web), 201, "create");
    pool.deactivate(&web).assert_error(409);
}

#[test]
fn deleting_an_active_pool_is_409_and_keeps_it() {
    let web = Web::admin();
    let pool = TestPool::active("pool-del-active", &web);
    let doc = web.delete(&pool.uri()).assert_error(409);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.InvalidState",
        "{doc}"
    );
    assert_eq!(pool.get(&web)["state"], "active");
    assert!(virsh(&["pool-info", &pool.name]).ok);
}

#[test]
fn deleting_an_inactive_pool_is_204_and_leaves_its_files() {
    let web = Web::admin();
    let pool = TestPool::active("pool-del", &web);
    pool.create_volume(&web, "keep.img", 4, "raw");
    expect(pool.deactivate(&web), 200, "deactivate");
    let resp = expect(web.delete(&pool.uri()), 204, "delete");
    assert!(resp.body.is_empty(), "{resp:?}");
    web.get(&pool.uri()).assert_error(404);
    assert!(
        !virsh(&["pool-info", &pool.name]).ok,
        "libvirt still has it"
    );
    assert!(
        pool.file("keep.img").exists(),
        "delete must not remove files"
    );
}

#[test]
fn whole_pool_life_create_activate_deactivate_delete() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-life");
    expect(pool.create(&web), 201, "create");
    expect(pool.activate(&web), 200, "activate");
    let vol = pool.create_volume(&web, "disk.qcow2", 16, "qcow2");
    assert_eq!(vol["format"], "qcow2");
    assert_eq!(pool.get(&web)["nr_volumes"], 1);
    expect(
        web.delete(&pool.volume_uri("disk.qcow2")),
        204,
        "delete volume",
    );
    assert_eq!(pool.get(&web)["nr_volumes"], 0);
    expect(pool.deactivate(&web), 200, "deactivate");
    expect(web.delete(&pool.uri()), 204, "delete");
    let list = get_listing(&web, "/storagepools");
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == pool.name.as_str()),
        "{list}"
    );
}

// --- netfs and logical: defined with their sources (nothing to mount here) -----------

#[test]
fn netfs_pool_is_defined_with_its_source_host_and_path() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-nfs");
    let body = json!({
        "name": pool.name, "type": "netfs", "path": pool.dir,
        "source": {"host": "filer.example.org", "path": "/export/vms"}
    });
    let doc = expect(web.post("/storagepools", &body), 201, "create").json();
    assert_eq!(doc["type"], "netfs", "{doc}");
    assert_eq!(doc["state"], "inactive", "{doc}");
    assert_eq!(doc["path"], json!(pool.dir), "{doc}");
    let xml = libvirt_xml(&pool.name);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.attribute("type"), Some("netfs"), "{xml}");
    let host = root.descendants().find(|n| n.has_tag_name("host"));
    assert_eq!(
        host.and_then(|h| h.attribute("name")),
        Some("filer.example.org"),
        "{xml}"
    );
    let dir = root.descendants().find(|n| n.has_tag_name("dir"));
    assert_eq!(
        dir.and_then(|d| d.attribute("path")),
        Some("/export/vms"),
        "{xml}"
    );
}

#[test]
fn netfs_pool_without_source_host_is_400() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-nfs-bad");
    let body = json!({
        "name": pool.name, "type": "netfs", "path": pool.dir,
        "source": {"path": "/export/vms"}
    });
    web.post("/storagepools", &body).assert_error(400);
    assert!(!virsh(&["pool-info", &pool.name]).ok);
}

#[test]
fn logical_pool_is_defined_with_its_source_devices() {
    let web = Web::admin();
    let pool = TestPool::planned("pool-lvm");
    // A device must exist to be named (a missing one is 400: hostile_storage.rs).
    let loop_device = LoopDevice::new("lvm-dev", "16M");
    let device = loop_device.path.as_str();
    let body = json!({
        "name": pool.name, "type": "logical", "source": {"devices": [device]}
    });
    let doc = expect(web.post("/storagepools", &body), 201, "create").json();
    assert_eq!(doc["type"], "logical", "{doc}");
    assert_eq!(doc["state"], "inactive", "{doc}");
    let xml = libvirt_xml(&pool.name);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let devices: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("device"))
        .filter_map(|n| n.attribute("path"))
        .collect();
    assert_eq!(devices, [device], "{xml}");
}

// --- D-Bus -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn rest_activation_emits_properties_changed_with_the_pool_state() {
    let (web, pool) = tokio::task::block_in_place(|| {
        let web = Web::admin();
        let pool = TestPool::planned("pool-signal");
        expect(pool.create(&web), 201, "create");
        (web, pool)
    });
    let conn = system_bus().await;
    let info = manager(&conn)
        .await
        .get_storage_pool(&pool.name, no_options())
        .await
        .expect("GetStoragePool");
    assert_eq!(info.state, PoolState::Inactive);
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path(info.path.as_str())
        .build()
        .unwrap();
    let mut signals = MessageStream::for_match_rule(rule, &conn, None)
        .await
        .unwrap();

    tokio::task::block_in_place(|| expect(pool.activate(&web), 200, "activate"));

    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = signals.next().await {
            let msg = msg.unwrap();
            let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                msg.body().deserialize().unwrap();
            let state = changed
                .get("State")
                .and_then(|v| String::try_from(v.clone()).ok());
            if iface == STORAGE_POOL_INTERFACE && state.as_deref() == Some("active") {
                return;
            }
        }
        panic!("signal stream ended");
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no PropertiesChanged State=active on {} within 5 s",
            info.path
        )
    });
}
