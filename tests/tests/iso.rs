//! ISO images: identified by what they contain (volume id, El Torito boot catalog),
//! never by their file name, and gathered from every active pool into the read-only
//! `kimchi_isos` view as `<pool>:<file>`. The images are built here with xorriso.

mod common;

use common::{expect, get_listing, keys, TestPool, Web, ISO_VOLUME_KEYS};
use kimchi_dbus::ISO_POOL;
use kimchi_tests::{write_iso, DATA_VOLUME_ID, UBUNTU_VOLUME_ID};
use serde_json::{json, Value};

/// `kimchi_isos`' name for the image `file` of `pool`.
fn iso_name(pool: &TestPool, file: &str) -> String {
    format!("{}:{file}", pool.name)
}

/// The entries of `GET /storagepools/kimchi_isos/storagevolumes` that come from
/// `pool` (other tests' pools may hold images too).
#[track_caller]
fn isos_of(web: &Web, pool: &TestPool) -> Vec<Value> {
    let uri = format!("/storagepools/{ISO_POOL}/storagevolumes");
    let list = get_listing(web, &uri);
    let prefix = format!("{}:", pool.name);
    let mut mine: Vec<Value> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .filter(|v| v["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
        .cloned()
        .collect();
    mine.sort_by_key(|v| v["name"].as_str().unwrap_or_default().to_owned());
    mine
}

/// The volume's document once libvirt has listed the image (which a GET by name
/// alone does not make it do: see
/// `storage_volumes::file_added_by_hand_can_be_fetched_by_name_at_once`).
#[track_caller]
fn identified(web: &Web, pool: &TestPool, file: &str) -> Value {
    assert!(pool.volume_names(web).contains(file), "{file} not listed");
    pool.volume(web, file)
}

#[test]
fn bootable_ubuntu_image_is_identified_by_content_not_by_its_name() {
    let web = Web::admin();
    let pool = TestPool::active("iso-ubuntu", &web);
    write_iso(UBUNTU_VOLUME_ID, true, &pool.file("fedora-39-x86_64.iso"));
    let doc = identified(&web, &pool, "fedora-39-x86_64.iso");
    assert_eq!(keys(&doc), ISO_VOLUME_KEYS, "{doc}");
    assert_eq!(doc["format"], "iso", "{doc}");
    assert_eq!(doc["os_distro"], "ubuntu", "{doc}");
    assert_eq!(doc["os_version"], "22.04", "{doc}");
    assert_eq!(doc["bootable"], true, "{doc}");
}

#[test]
fn plain_data_image_is_unknown_and_not_bootable_whatever_its_name() {
    let web = Web::admin();
    let pool = TestPool::active("iso-data", &web);
    write_iso(
        DATA_VOLUME_ID,
        false,
        &pool.file("ubuntu-22.04.1-live-server-amd64.iso"),
    );
    let doc = identified(&web, &pool, "ubuntu-22.04.1-live-server-amd64.iso");
    assert_eq!(keys(&doc), ISO_VOLUME_KEYS, "{doc}");
    assert_eq!(doc["format"], "iso", "{doc}");
    assert_eq!(doc["os_distro"], "unknown", "{doc}");
    assert_eq!(doc["os_version"], "unknown", "{doc}");
    assert_eq!(doc["bootable"], false, "{doc}");
}

#[test]
fn truncated_bootable_image_is_not_bootable() {
    let web = Web::admin();
    let pool = TestPool::active("iso-truncated", &web);
    let iso = pool.file("broken.iso");
    write_iso(UBUNTU_VOLUME_ID, true, &iso);
    // Keep the volume descriptors (sectors 16 and 17), lose the rest, as a broken
    // download would.
    let file = std::fs::OpenOptions::new().write(true).open(&iso).unwrap();
    file.set_len(20 * 2048).unwrap();
    let doc = identified(&web, &pool, "broken.iso");
    assert_eq!(doc["bootable"], false, "{doc}");
}

#[test]
fn file_named_iso_without_iso_content_is_no_iso() {
    let web = Web::admin();
    let pool = TestPool::active("iso-fake", &web);
    std::fs::write(pool.file("fake.iso"), vec![0x41u8; 64 * 1024]).unwrap();
    let doc = identified(&web, &pool, "fake.iso");
    assert_ne!(doc["format"], "iso", "{doc}");
    assert!(doc.get("bootable").is_none(), "{doc}");
    assert!(isos_of(&web, &pool).is_empty());
}

#[test]
fn kimchi_isos_lists_the_images_of_active_pools_as_pool_colon_file() {
    let web = Web::admin();
    let pool = TestPool::active("iso-view", &web);
    write_iso(UBUNTU_VOLUME_ID, true, &pool.file("fedora.iso"));
    write_iso(DATA_VOLUME_ID, false, &pool.file("data.iso"));
    pool.create_volume(&web, "disk.qcow2", 8, "qcow2");
    let isos = isos_of(&web, &pool);
    let names: Vec<&str> = isos.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [iso_name(&pool, "data.iso"), iso_name(&pool, "fedora.iso")],
        "{isos:?}"
    );
    let ubuntu = &isos[1];
    assert_eq!(keys(ubuntu), ISO_VOLUME_KEYS, "{ubuntu}");
    assert_eq!(ubuntu["path"], json!(pool.file("fedora.iso")), "{ubuntu}");
    assert_eq!(ubuntu["os_distro"], "ubuntu", "{ubuntu}");
    assert_eq!(ubuntu["bootable"], true, "{ubuntu}");
    assert_eq!(isos[0]["bootable"], false, "{}", isos[0]);

    // Each is also served on its own.
    let uri = format!(
        "/storagepools/{ISO_POOL}/storagevolumes/{}",
        iso_name(&pool, "fedora.iso")
    );
    assert_eq!(get_listing(&web, &uri), *ubuntu);
}

#[test]
fn same_file_name_in_two_pools_gives_two_kimchi_isos_entries() {
    let web = Web::admin();
    let first = TestPool::active("iso-twin-a", &web);
    let second = TestPool::active("iso-twin-b", &web);
    write_iso(UBUNTU_VOLUME_ID, true, &first.file("same.iso"));
    write_iso(DATA_VOLUME_ID, false, &second.file("same.iso"));
    let a = isos_of(&web, &first);
    let b = isos_of(&web, &second);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(a[0]["name"], iso_name(&first, "same.iso").as_str());
    assert_eq!(b[0]["name"], iso_name(&second, "same.iso").as_str());
    assert_eq!(a[0]["bootable"], true);
    assert_eq!(b[0]["bootable"], false);
}

#[test]
fn images_of_a_deactivated_pool_leave_kimchi_isos() {
    let web = Web::admin();
    let pool = TestPool::active("iso-off", &web);
    write_iso(DATA_VOLUME_ID, false, &pool.file("data.iso"));
    assert_eq!(isos_of(&web, &pool).len(), 1);
    expect(pool.deactivate(&web), 200, "deactivate");
    assert!(isos_of(&web, &pool).is_empty());
}

#[test]
fn kimchi_isos_counts_its_images() {
    let web = Web::admin();
    let pool = TestPool::active("iso-count", &web);
    write_iso(DATA_VOLUME_ID, false, &pool.file("one.iso"));
    write_iso(DATA_VOLUME_ID, false, &pool.file("two.iso"));
    let uri = format!("/storagepools/{ISO_POOL}");
    // Other tests add and remove images meanwhile: compare one list with the count
    // taken right after, until they agree.
    let agreed = kimchi_tests::poll(std::time::Duration::from_secs(10), || {
        let list_uri = format!("{uri}/storagevolumes");
        let listed = get_listing(&web, &list_uri);
        let doc = get_listing(&web, &uri);
        (doc["nr_volumes"].as_u64() == listed.as_array().map(|l| l.len() as u64)).then_some(doc)
    })
    .expect("nr_volumes never matched the list");
    assert_eq!(agreed["state"], "active");
    assert_eq!(agreed["type"], "kimchi-iso");
    assert!(agreed["nr_volumes"].as_u64().unwrap() >= 2, "{agreed}");
}

#[test]
fn writes_to_kimchi_isos_are_405() {
    let web = Web::admin();
    let pool = TestPool::active("iso-ro", &web);
    write_iso(DATA_VOLUME_ID, false, &pool.file("keep.iso"));
    let pool_uri = format!("/storagepools/{ISO_POOL}");
    let volume_uri = format!("{pool_uri}/storagevolumes/{}", iso_name(&pool, "keep.iso"));
    let attempts = [
        web.delete(&pool_uri),
        web.action(&format!("{pool_uri}/activate")),
        web.action(&format!("{pool_uri}/deactivate")),
        web.post(
            &format!("{pool_uri}/storagevolumes"),
            &json!({"name": "new.iso", "capacity": 1, "format": "raw"}),
        ),
        web.delete(&volume_uri),
        web.action(&format!("{volume_uri}/wipe")),
        web.post(&format!("{volume_uri}/resize"), &json!({"size": 8})),
    ];
    for resp in attempts {
        resp.assert_error(405);
    }
    assert!(pool.file("keep.iso").exists());
    assert_eq!(isos_of(&web, &pool).len(), 1);
    get_listing(&web, &pool_uri);
}
