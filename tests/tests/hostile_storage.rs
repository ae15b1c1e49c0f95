//! Storage mistakes a careless or hostile client makes, each answered with a 4xx
//! and a reason before any task starts (never a 500): pools on another pool's
//! source, one pool name created many times at once, names too long for libvirt's
//! files, paths and devices the host cannot use, volume sizes past the format, the
//! pool or 64 bits, directories inside a pool, and concurrent wipes of one volume
//! (which keeps being listed throughout).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{
    allocate_fully, entries, expect, image_format_and_size, TestPool, Web, DEFAULT_POOL_DIR, MIB,
};
use kimchi_tests::{unique_name, Response};
use serde_json::{json, Value};

/// libvirt's limit on pool names as kimchid documents it (`<name>.xml.new` must fit
/// 255 bytes).
const MAX_POOL_NAME_BYTES: usize = 240;

/// qemu-img's largest qcow2 image (64 KiB clusters): 2 PiB.
const QCOW2_MAX_MIB: u64 = 1 << 31;

/// The request was refused with `status` and a reason containing `reason`.
#[track_caller]
fn refused(resp: Response, status: u16, reason: &str, what: &str) {
    refused_ref(&resp, status, reason, what);
}

#[track_caller]
fn refused_ref(resp: &Response, status: u16, reason: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {resp:?}");
    let doc = resp.json();
    let said = doc["reason"].as_str().unwrap_or_default();
    assert!(
        said.contains(reason),
        "{what}: reason {said:?} lacks {reason:?}"
    );
}

// --- Pools --------------------------------------------------------------------------

#[test]
fn a_pool_on_another_pools_directory_is_409_naming_that_pool() {
    let web = Web::admin();
    let first = TestPool::active("clash-first", &web);
    let second = TestPool::planned("clash-second");
    let on = |path: String| json!({"name": second.name, "type": "dir", "path": path});
    refused(
        web.post("/storagepools", &on(DEFAULT_POOL_DIR.to_owned())),
        409,
        &format!("storage pool 'default' already uses the path '{DEFAULT_POOL_DIR}'"),
        "on the default pool's directory",
    );
    let spelt_otherwise = format!("{}/", first.dir.display()).replacen('/', "//", 1);
    refused(
        web.post("/storagepools", &on(spelt_otherwise)),
        409,
        &format!("storage pool '{}' already uses the path", first.name),
        "on another test pool's directory, spelt otherwise",
    );
    expect(web.get(&second.uri()), 404, "the refused pool");
}

#[test]
fn concurrent_creations_of_one_pool_name_are_one_201_and_the_rest_409() {
    let web = Web::admin();
    let pool = TestPool::planned("same-name");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let posts: Vec<_> = (0..8)
            .map(|i| {
                let spec = json!({
                    "name": pool.name,
                    "type": "dir",
                    "path": pool.root.join(format!("pool-{i}")),
                });
                let web = &web;
                scope.spawn(move || web.post("/storagepools", &spec))
            })
            .collect();
        posts
            .into_iter()
            .map(|post| {
                let resp = post.join().expect("request thread");
                assert!(
                    resp.status == 201 || resp.status == 409,
                    "neither created nor a conflict: {resp:?}"
                );
                resp.status
            })
            .collect()
    });
    let created = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!((created, statuses.len() - created), (1, 7), "{statuses:?}");
    pool.get(&web);
}

#[test]
fn a_pool_name_past_the_limit_is_400_and_one_at_it_is_created() {
    let web = Web::admin();
    let mut pool = TestPool::planned("long");
    let padded = |len: usize| format!("{:x<len$}", pool.name);
    let too_long = padded(MAX_POOL_NAME_BYTES + 1);
    for name in [too_long.as_str(), &padded(255), &padded(4096)] {
        let spec = json!({"name": name, "type": "dir", "path": pool.dir});
        refused(
            web.post("/storagepools", &spec),
            400,
            &format!("longer than {MAX_POOL_NAME_BYTES} bytes"),
            &format!("a {}-byte name", name.len()),
        );
    }
    // The longest allowed name is defined, activated and deleted (by the drop).
    pool.name = padded(MAX_POOL_NAME_BYTES);
    expect(pool.create(&web), 201, "the longest name");
    expect(pool.activate(&web), 200, "activate it");
}

#[test]
fn a_dir_pool_on_a_regular_file_is_400_and_nothing_is_defined() {
    let web = Web::admin();
    let pool = TestPool::planned("on-file");
    std::fs::write(&pool.dir, b"a file, not a directory").expect("write the file");
    refused(
        pool.create(&web),
        400,
        &format!("path '{}' is not a directory", pool.dir.display()),
        "a file",
    );
    let below = json!({"name": pool.name, "type": "dir", "path": pool.dir.join("x")});
    refused(
        web.post("/storagepools", &below),
        400,
        "cannot hold a pool",
        "a path below a file",
    );
    expect(web.get(&pool.uri()), 404, "the refused pool");
}

#[test]
fn a_logical_pool_on_a_missing_or_non_block_device_is_400() {
    let web = Web::admin();
    let pool = TestPool::planned("lvm-missing");
    let missing = format!("/dev/{}", unique_name("absent"));
    let file = pool.root.join("not-a-device");
    std::fs::write(&file, b"plain file").expect("write the file");
    let file = file.display().to_string();
    for (device, reason) in [
        (missing.as_str(), "does not exist"),
        (file.as_str(), "is not a block device"),
    ] {
        let spec = json!({
            "name": pool.name,
            "type": "logical",
            "source": {"devices": [device]},
        });
        refused(
            web.post("/storagepools", &spec),
            400,
            &format!("source device '{device}' {reason}"),
            device,
        );
    }
    expect(web.get(&pool.uri()), 404, "the refused pool");
}

/// A pool whose directory became a file after it was defined cannot start: a
/// conflict with what the host has, said with libvirt's reason.
#[test]
fn activating_a_pool_whose_directory_became_a_file_is_409() {
    let web = Web::admin();
    let pool = TestPool::planned("became-file");
    expect(pool.create(&web), 201, "create the pool");
    std::fs::write(&pool.dir, b"now a file").expect("write the file");
    refused(
        pool.activate(&web),
        409,
        &format!("storage pool '{}' cannot be activated", pool.name),
        "activate",
    );
    assert_eq!(pool.get(&web)["state"], "inactive");
}

// --- Volumes ------------------------------------------------------------------------

#[test]
fn volume_sizes_past_the_format_the_pool_or_64_bits_are_400_before_any_task() {
    let web = Web::admin();
    let pool = TestPool::active("vol-sizes", &web);
    let pool_mib = pool.get(&web)["capacity"].as_u64().expect("capacity");
    let past_64_bits = u64::MAX / MIB;
    for (format, mib, reason) in [
        (
            "qcow2",
            QCOW2_MAX_MIB + 1,
            format!("capacity of a qcow2 volume must be at most {QCOW2_MAX_MIB} MiB"),
        ),
        ("raw", pool_mib + 1, format!("can hold ({pool_mib} MiB)")),
        ("raw", past_64_bits, format!("can hold ({pool_mib} MiB)")),
        (
            "qcow2",
            past_64_bits + 1,
            "capacity must be between 1 and".into(),
        ),
    ] {
        let spec = json!({"name": "big", "capacity": mib, "format": format});
        refused(
            web.post(&pool.volumes_uri(), &spec),
            400,
            &reason,
            &format!("{format} of {mib} MiB"),
        );
    }
    let free = pool.get(&web)["available"].as_u64().expect("available");
    let greedy =
        json!({"name": "big", "capacity": pool_mib, "allocation": free + 1024, "format": "raw"});
    refused(
        web.post(&pool.volumes_uri(), &greedy),
        400,
        "MiB free in storage pool",
        "an allocation past the free space",
    );
    pool.create_volume(&web, "small.qcow2", 8, "qcow2");
    pool.create_volume(&web, "small.img", 8, "raw");
    for (volume, mib, reason) in [
        (
            "small.qcow2",
            QCOW2_MAX_MIB + 1,
            "size of a qcow2 volume must be at most".to_owned(),
        ),
        (
            "small.qcow2",
            past_64_bits,
            "size of a qcow2 volume must be at most".to_owned(),
        ),
        (
            "small.img",
            pool_mib + 1,
            format!("can hold ({pool_mib} MiB)"),
        ),
        (
            "small.img",
            past_64_bits,
            format!("can hold ({pool_mib} MiB)"),
        ),
        (
            "small.img",
            past_64_bits + 1,
            "size must be between 1 and".into(),
        ),
    ] {
        refused(
            web.post(
                &format!("{}/resize", pool.volume_uri(volume)),
                &json!({"size": mib}),
            ),
            400,
            &reason,
            &format!("resize {volume} to {mib} MiB"),
        );
    }
    assert_eq!(
        entries(&pool.dir),
        ["small.img".to_owned(), "small.qcow2".to_owned()].into(),
        "a refused request left a file"
    );
    assert_eq!(
        image_format_and_size(&pool.file("small.img")),
        ("raw".to_owned(), 8 * MIB)
    );
    assert_eq!(
        image_format_and_size(&pool.file("small.qcow2")),
        ("qcow2".to_owned(), 8 * MIB)
    );
}

/// libvirt lists a directory inside a dir pool as a volume of type `dir`: it stays
/// listed, and resizing, wiping or deleting it is a conflict that leaves it alone.
#[test]
fn a_directory_in_a_pool_is_listed_as_dir_and_its_changes_are_409() {
    let web = Web::admin();
    let pool = TestPool::active("vol-subdir", &web);
    let sub = pool.file("sub");
    std::fs::create_dir(&sub).expect("make the directory");
    std::fs::write(sub.join("kept"), b"data").expect("write a file in it");
    let doc = pool.volume(&web, "sub");
    assert_eq!(doc["type"], "dir", "{doc}");
    assert!(pool.volume_names(&web).contains("sub"));
    let reason = "is a directory, not a volume file";
    refused(
        web.post(
            &format!("{}/resize", pool.volume_uri("sub")),
            &json!({"size": 10}),
        ),
        409,
        reason,
        "resize",
    );
    refused(
        web.action(&format!("{}/wipe", pool.volume_uri("sub"))),
        409,
        reason,
        "wipe",
    );
    refused(web.delete(&pool.volume_uri("sub")), 409, reason, "delete");
    assert!(sub.join("kept").is_file(), "the directory was touched");
}

/// Eight wipes of one qcow2 volume at once: each is the wipe or a 409 busy, never
/// a 404 or 500, and listings made meanwhile always show the volume; afterwards it
/// is an empty qcow2 image of the same size.
#[test]
fn concurrent_wipes_of_a_qcow2_volume_are_200_or_409_and_it_stays_listed() {
    let web = Web::admin();
    let pool = TestPool::active("vol-wipes", &web);
    pool.create_volume(&web, "w.qcow2", 512, "qcow2");
    // Every byte allocated, so that the wipe writes for a while.
    allocate_fully(&pool.file("w.qcow2"), 512 * MIB);
    let wipe = format!("{}/wipe", pool.volume_uri("w.qcow2"));
    let done = AtomicBool::new(false);
    let (statuses, listings) = std::thread::scope(|scope| {
        let lister = scope.spawn(|| {
            let mut listings: Vec<Value> = Vec::new();
            while !done.load(Ordering::Relaxed) {
                listings.push(expect(web.get(&pool.volumes_uri()), 200, "list").json());
            }
            listings
        });
        let wipes: Vec<_> = (0..8).map(|_| scope.spawn(|| web.action(&wipe))).collect();
        let statuses: Vec<Response> = wipes
            .into_iter()
            .map(|w| w.join().expect("wipe thread"))
            .collect();
        done.store(true, Ordering::Relaxed);
        (statuses, lister.join().expect("lister thread"))
    });
    let mut counts = BTreeMap::new();
    for resp in &statuses {
        assert!(
            resp.status == 200 || resp.status == 409,
            "a wipe was neither done nor busy: {resp:?}"
        );
        if resp.status == 409 {
            refused_ref(resp, 409, "has an operation in progress", "a busy wipe");
        }
        *counts.entry(resp.status).or_insert(0) += 1;
    }
    println!(
        "8 concurrent wipes: {counts:?}; {} listings meanwhile",
        listings.len()
    );
    assert!(counts.contains_key(&200), "no wipe ran: {counts:?}");
    for listing in &listings {
        let names: Vec<&str> = listing
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(names.contains(&"w.qcow2"), "the volume vanished: {listing}");
    }
    assert_eq!(
        image_format_and_size(&pool.file("w.qcow2")),
        ("qcow2".to_owned(), 512 * MIB)
    );
}
