//! Input chosen to hurt, against the running stack: a template cdrom that would block
//! its reader (a FIFO, a server that never answers) fails that one request while other
//! template changes go on; names too long for the files made from them are 400 with
//! the limit; errors quote a short prefix of a huge input; a start racing a deletion is
//! never a 500. Latencies are printed; bounds are generous.

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{expect, ScratchDir, TemplateNames, TemplateVm, VmCleanup, Web, DEFAULT_POOL_DIR};
use kimchi_tests::{unique_name, write_iso, Response, UBUNTU_VOLUME_ID};
use serde_json::{json, Value};

/// What a template change beside a blocked one may take at most: it used to wait for
/// the blocked one (60 s, then 503 for both).
const BESIDE_A_BLOCKED_ONE: Duration = Duration::from_secs(10);

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

fn timed(f: impl FnOnce() -> Response) -> (Response, Duration) {
    let started = Instant::now();
    let resp = f();
    (resp, started.elapsed())
}

/// A bootable ISO in `dir` a template can install from.
fn install_iso(dir: &ScratchDir) -> String {
    let iso = dir.join("install.iso");
    write_iso(UBUNTU_VOLUME_ID, true, &iso);
    iso.to_str().expect("UTF-8 path").to_owned()
}

/// Creates a template from `iso` and changes it, as another client would while a
/// hostile request is under way; returns how long each took.
fn other_client_changes_a_template(names: &TemplateNames, iso: &str) -> (Duration, Duration) {
    let web = Web::admin();
    let body = json!({"name": names.name(), "cdrom": iso, "memory": 128, "disks": [{"size": 1}]});
    let (resp, create) = timed(|| web.post("/templates", &body));
    expect(resp, 201, "create the other template");
    let (resp, update) = timed(|| {
        web.request("PUT", &names.uri())
            .json(&json!({"cpus": 2}))
            .send()
    });
    expect(resp, 200, "change the other template");
    (create, update)
}

#[test]
fn a_fifo_cdrom_fails_at_once_and_other_template_changes_go_on() {
    let web = Web::admin();
    let dir = ScratchDir::new("hostile-fifo");
    let fifo = dir.join("fifo.iso");
    mkfifo(&fifo);
    let iso = install_iso(&dir);
    let hostile = TemplateNames::one("hostile-fifo");
    let other = TemplateNames::one("hostile-fifo-other");

    let body = json!({"name": hostile.name(), "cdrom": fifo, "memory": 128});
    let (refused, others) = thread::scope(|s| {
        let refused = s.spawn(|| timed(|| web.post("/templates", &body)));
        let others = s.spawn(|| other_client_changes_a_template(&other, &iso));
        (refused.join().unwrap(), others.join().unwrap())
    });
    let (resp, took) = refused;
    println!(
        "FIFO cdrom refused in {took:?}; beside it another client created a template in \
         {:?} and changed it in {:?}",
        others.0, others.1
    );
    let doc = resp.assert_error(400);
    let reason = doc["reason"].as_str().unwrap();
    assert!(
        reason.contains("not a regular file or block device"),
        "{doc}"
    );
    assert!(took < BESIDE_A_BLOCKED_ONE, "{took:?}");
    expect(web.get(&hostile.uri()), 404, "the refused template");
}

#[test]
fn a_cdrom_url_that_never_answers_holds_no_other_template_change() {
    let web = Web::admin();
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/install.iso", silent.local_addr().unwrap());
    let dir = ScratchDir::new("hostile-url");
    let iso = install_iso(&dir);
    let hostile = TemplateNames::one("hostile-url");
    let other = TemplateNames::one("hostile-url-other");

    let body = json!({"name": hostile.name(), "cdrom": url, "memory": 128});
    let (slow, others) = thread::scope(|s| {
        let slow = s.spawn(|| timed(|| web.post("/templates", &body)));
        // Let the hostile request reach its check of the URL.
        thread::sleep(Duration::from_millis(500));
        let others = s.spawn(|| other_client_changes_a_template(&other, &iso));
        (slow.join().unwrap(), others.join().unwrap())
    });
    let (resp, took) = slow;
    println!(
        "silent cdrom URL answered {} in {took:?}; beside it another client created a \
         template in {:?} and changed it in {:?}",
        resp.status, others.0, others.1
    );
    let doc = resp.assert_error(400);
    assert!(
        doc["reason"].as_str().unwrap().contains("does not answer"),
        "{doc}"
    );
    assert!(others.0 < BESIDE_A_BLOCKED_ONE, "{others:?}");
    assert!(others.1 < BESIDE_A_BLOCKED_ONE, "{others:?}");
}

/// `unique_name(what)` padded with 'v' to `bytes` bytes.
fn name_of(what: &str, bytes: usize) -> String {
    let name = unique_name(what);
    format!("{name}{}", "v".repeat(bytes - name.len()))
}

/// A template of 128 MiB with a 1 GB disk, installing from a generated ISO.
fn small_template(web: &Web, dir: &ScratchDir, names: &TemplateNames) {
    let iso = install_iso(dir);
    let body = json!({"name": names.name(), "cdrom": iso, "memory": 128, "disks": [{"size": 1}]});
    expect(web.post("/templates", &body), 201, "create the template");
}

#[test]
fn a_vm_name_too_long_for_its_disk_files_is_400_with_the_limit() {
    let web = Web::admin();
    let dir = ScratchDir::new("hostile-vm-name");
    let template = TemplateNames::one("hostile-vm-name");
    small_template(&web, &dir, &template);

    // 253 bytes made a disk file name of 259 and a 500.
    let long = name_of("hostile-vm-name", 253);
    let _guard = VmCleanup::in_dir(&long, Path::new(DEFAULT_POOL_DIR));
    let body = json!({"name": long, "template": template.uri()});
    let doc = web.post("/vms", &body).assert_error(400);
    assert!(
        doc["reason"].as_str().unwrap().contains("243 bytes"),
        "{doc}"
    );

    let longest = name_of("hostile-vm-name", 243);
    let vm = VmCleanup::in_dir(&longest, Path::new(DEFAULT_POOL_DIR));
    let body = json!({"name": longest, "template": template.uri()});
    expect(
        web.post("/vms", &body),
        201,
        "create a VM with a 243-byte name",
    );
    assert!(vm.disk.exists(), "{}", vm.disk.display());
    expect(web.delete(&vm.uri()), 204, "delete it");
}

#[test]
fn a_template_name_too_long_for_its_vm_names_is_400_with_the_limit() {
    let web = Web::admin();
    let long = name_of("hostile-template-name", 236);
    let _guard = TemplateNames(vec![long.clone()]);
    let doc = web
        .post("/templates", &json!({"name": long, "memory": 128}))
        .assert_error(400);
    assert!(
        doc["reason"].as_str().unwrap().contains("235 bytes"),
        "{doc}"
    );
}

#[test]
fn errors_quote_a_short_prefix_of_a_huge_name() {
    let web = Web::admin();
    let dir = ScratchDir::new("hostile-huge");
    let template = TemplateNames::one("hostile-huge");
    small_template(&web, &dir, &template);
    let huge = "x".repeat(100_000);
    let cases: [(&str, Value); 3] = [
        ("/templates", json!({"name": huge, "memory": 128})),
        ("/vms", json!({"name": huge, "template": template.uri()})),
        ("/vms", json!({"template": format!("/templates/{huge}")})),
    ];
    for (uri, body) in cases {
        let resp = web.post(uri, &body);
        println!(
            "POST {uri} with a 100 KB name: {} in {} bytes",
            resp.status,
            resp.body.len()
        );
        assert!(resp.status == 400 || resp.status == 404, "{}", resp.status);
        resp.assert_error(resp.status);
        assert!(resp.body.len() < 1000, "{} bytes", resp.body.len());
    }
}

#[test]
fn starting_a_vm_while_it_is_deleted_is_never_a_500() {
    let web = Web::admin();
    let vm = TemplateVm::create(&web, "hostile-delete-start");
    let start = format!("{}/start", vm.vm.uri());
    let (deleted, starts) = thread::scope(|s| {
        let deletion = s.spawn(|| {
            let web = Web::admin();
            thread::sleep(Duration::from_millis(50));
            web.delete(&vm.vm.uri())
        });
        let mut starts = Vec::new();
        while !deletion.is_finished() {
            starts.push(web.action(&start).status);
        }
        (deletion.join().unwrap(), starts)
    });
    println!("starts during the deletion answered {starts:?}");
    expect(deleted, 204, "delete");
    for status in starts {
        assert!([200, 404, 409].contains(&status), "start answered {status}");
    }
    expect(web.get(&vm.vm.uri()), 404, "the deleted VM");
}
