//! Virtual machines over REST against the real stack: creation from a template (in
//! the default pool, a named pool, with a generated name, as a task), the power
//! actions, screenshot and console (a websocket carrying the guest's VNC stream),
//! stats, deletion with the disks, changes made with virsh behind kimchid's back
//! (seen over REST and as D-Bus signals), what a reader may not do, the errors, and
//! that a creation failing half-way leaves nothing behind.
//!
//! Guests are small (128 MiB, 1 GB sparse disks) and boot a do-nothing ISO; every VM
//! and template is removed by a guard, even when a test fails.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{
    entries, expect, keys, qemu_img_info, snapshot, TestPool, Web, DEFAULT_POOL_DIR, VM_KEYS,
};
use futures_util::StreamExt;
use kimchi_dbus::{vm_path, BUS_NAME, VM_INTERFACE};
use kimchi_tests::websocket::{self, EXPECTED_ACCEPT};
use kimchi_tests::{
    base_url, lookup_vm_path, manager_call, poll, run, scratch_dir, system_bus, unique_name, virsh,
    vm_property, write_iso, Response, READER, UBUNTU_VOLUME_ID,
};
use serde_json::{json, Value};
use zbus::message::Type as MessageType;
use zbus::{MatchRule, MessageStream, OwnedVariant};

const GIB: u64 = 1024 * 1024 * 1024;

/// The keys of `stats`, sorted.
const STATS_KEYS: [&str; 5] = [
    "cpu_utilization",
    "io_throughput",
    "io_throughput_peak",
    "net_throughput",
    "net_throughput_peak",
];

// ---------------------------------------------------------------------------------
// Guards and helpers

/// A template with a bootable (do-nothing) ISO as cdrom, 128 MiB and the given
/// disks; deleted with its ISO on drop.
struct TestTemplate {
    name: String,
    dir: PathBuf,
}

impl TestTemplate {
    #[track_caller]
    fn create(web: &Web, what: &str, disks: Value) -> TestTemplate {
        let template = TestTemplate {
            name: unique_name(what),
            dir: scratch_dir(what),
        };
        let iso = template.dir.join("x.iso");
        write_iso(UBUNTU_VOLUME_ID, true, &iso);
        let resp = web.post(
            "/templates",
            &json!({"name": template.name, "cdrom": iso, "memory": 128, "disks": disks}),
        );
        let doc = expect(resp, 201, "create the template").json();
        assert_eq!(doc["memory"], 128, "{doc}");
        template
    }

    /// 128 MiB and one 1 GB disk.
    #[track_caller]
    fn small(web: &Web, what: &str) -> TestTemplate {
        TestTemplate::create(web, what, json!([{"size": 1}]))
    }

    fn uri(&self) -> String {
        format!("/templates/{}", self.name)
    }
}

impl Drop for TestTemplate {
    fn drop(&mut self) {
        let _ = manager_call("DeleteTemplate", "sa{sv}", &[&self.name, "0"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A VM the test creates (or tries to): on drop it is deleted through kimchid,
/// else destroyed and undefined with virsh, and its disk files removed.
struct TestVm {
    name: String,
    disks: Vec<PathBuf>,
}

impl TestVm {
    /// Cleans up `name` and its disk 0 in `dir`.
    fn planned(name: &str, dir: &Path) -> TestVm {
        TestVm {
            name: name.to_owned(),
            disks: vec![disk_file(dir, name, 0)],
        }
    }

    fn uri(&self) -> String {
        format!("/vms/{}", self.name)
    }

    fn disk(&self) -> &Path {
        &self.disks[0]
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        let _ = manager_call("DeleteVM", "sa{sv}", &[&self.name, "0"]);
        if virsh(&["dominfo", &self.name]).ok {
            let _ = virsh(&["destroy", &self.name]);
            let _ = virsh(&["undefine", &self.name]);
        }
        for disk in &self.disks {
            let _ = std::fs::remove_file(disk);
        }
    }
}

/// Where kimchid puts disk `index` of VM `vm` in a pool at `dir`.
fn disk_file(dir: &Path, vm: &str, index: u32) -> PathBuf {
    dir.join(format!("{vm}-{index}.img"))
}

/// `POST /vms` with `body`, asserting 201 with the VM's Location; the VM document.
#[track_caller]
fn create_vm(web: &Web, body: &Value) -> Value {
    let resp = expect(web.post("/vms", body), 201, "create the VM");
    let doc = resp.json();
    let name = doc["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no name: {doc}"));
    assert_eq!(
        resp.header("location"),
        Some(format!("/vms/{name}").as_str()),
        "{resp:?}"
    );
    doc
}

/// A small stopped VM from `template` in the default pool, with its guard.
#[track_caller]
fn small_vm(web: &Web, template: &TestTemplate, what: &str) -> (TestVm, Value) {
    let vm = TestVm::planned(&unique_name(what), Path::new(DEFAULT_POOL_DIR));
    let doc = create_vm(web, &json!({"name": vm.name, "template": template.uri()}));
    (vm, doc)
}

/// `GET /vms/:name`, asserting 200.
#[track_caller]
fn get_vm(web: &Web, vm: &TestVm) -> Value {
    expect(web.get(&vm.uri()), 200, "get the VM").json()
}

/// Asserts a VM document's keys and the shape of its stats; returns the stats.
#[track_caller]
fn check_vm_doc(doc: &Value, name: &str) -> [f64; 5] {
    assert_eq!(keys(doc), VM_KEYS, "{doc}");
    assert_eq!(doc["name"], name, "{doc}");
    assert_eq!(doc["memory"], 128, "{doc}");
    assert!(doc["uuid"].as_str().is_some_and(|u| u.len() == 36), "{doc}");
    assert_eq!(doc["graphics"]["type"], "vnc", "{doc}");
    let stats = &doc["stats"];
    assert_eq!(keys(stats), STATS_KEYS, "{doc}");
    let values = STATS_KEYS.map(|k| {
        stats[k]
            .as_f64()
            .unwrap_or_else(|| panic!("stats.{k} is not a number: {doc}"))
    });
    let [cpu, io, io_peak, net, net_peak] = values;
    assert!((0.0..=100.0).contains(&cpu), "{doc}");
    assert!(io >= 0.0 && net >= 0.0, "{doc}");
    assert!(io_peak >= 100.0 && io_peak >= io, "{doc}");
    assert!(net_peak >= 100.0 && net_peak >= net, "{doc}");
    values
}

/// The asserts on a VM document that is not running.
#[track_caller]
fn check_stopped(doc: &Value, name: &str) {
    check_vm_doc(doc, name);
    assert_eq!(doc["state"], "shutoff", "{doc}");
    assert_eq!(doc["screenshot"], Value::Null, "{doc}");
    assert_eq!(doc["graphics"]["port"], Value::Null, "{doc}");
    assert_eq!(doc["graphics"]["path"], Value::Null, "{doc}");
}

/// The `reason` of an error document with `status`, asserting it contains each of
/// `parts`.
#[track_caller]
fn reason(resp: &Response, status: u16, parts: &[&str]) -> String {
    let doc = resp.assert_error(status);
    let reason = doc["reason"].as_str().expect("reason").to_owned();
    for part in parts {
        assert!(reason.contains(part), "reason lacks {part:?}: {doc}");
    }
    reason
}

/// The gateway's port (the console's port).
fn gateway_port() -> u16 {
    base_url()
        .rsplit_once(':')
        .and_then(|(_, port)| port.trim_end_matches('/').parse().ok())
        .unwrap_or(443)
}

/// What libvirt says of the domain's state (`virsh domstate`).
fn domstate(name: &str) -> String {
    virsh(&["domstate", name])
        .expect_ok()
        .stdout
        .trim()
        .to_owned()
}

/// A GET whose body is binary (curl `-o`): status, Content-Type and the bytes.
fn get_binary(web: &Web, path: &str) -> (u16, String, Vec<u8>) {
    let file = std::env::temp_dir().join(format!("{}.body", unique_name("vm-bin")));
    let ran = run(Command::new("curl")
        .args(["-sS", "-k", "--path-as-is", "-o"])
        .arg(&file)
        .args(["-w", "%{http_code} %{content_type}", "-H"])
        .arg(format!("Cookie: kimchi_session={}", web.session.cookie))
        .arg(format!("{}{path}", base_url())))
    .expect_ok();
    let body = std::fs::read(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    let (status, ctype) = ran.stdout.split_once(' ').unwrap_or((&ran.stdout, ""));
    (
        status.parse().expect("curl's %{http_code}"),
        ctype.to_owned(),
        body,
    )
}

/// Runs `f` on a runtime shared by the whole binary: the websocket's connection is
/// registered with the runtime it was opened on and must be read on the same one.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a tokio runtime")
        })
        .block_on(f)
}

/// The console's websocket handshake with the session cookie and `extra` headers.
fn open_console(web: &Web, name: &str, extra: &[(&str, &str)]) -> websocket::Upgrade {
    let cookie = format!("kimchi_session={}", web.session.cookie);
    let mut headers = vec![("Cookie", cookie.as_str())];
    headers.extend_from_slice(extra);
    block_on(websocket::connect(
        &format!("/vms/{name}/console"),
        &headers,
    ))
    .expect("a websocket handshake answer")
}

// ---------------------------------------------------------------------------------
// 1. The whole life of a VM

#[test]
fn vm_lifecycle_create_start_screenshot_console_stats_stop_delete() {
    let web = Web::admin();
    let template = TestTemplate::small(&web, "vm-life");
    let vm = TestVm::planned(&unique_name("vm-life"), Path::new(DEFAULT_POOL_DIR));

    // Create: shut off, with a qcow2 disk of 1 GB in the default pool.
    let doc = create_vm(&web, &json!({"name": vm.name, "template": template.uri()}));
    check_stopped(&doc, &vm.name);
    assert_eq!(doc["icon"], Value::Null, "{doc}");
    let uuid = doc["uuid"].as_str().unwrap().to_owned();
    assert_eq!(
        virsh(&["domuuid", &vm.name]).expect_ok().stdout.trim(),
        uuid
    );
    assert_eq!(domstate(&vm.name), "shut off");
    assert!(vm.disk().is_file(), "{} missing", vm.disk().display());
    let info = qemu_img_info(vm.disk());
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(info["virtual-size"], GIB, "{info}");
    assert_eq!(get_vm(&web, &vm), doc, "GET shows what POST answered");

    // Start, and start again.
    let doc = expect(web.action(&format!("{}/start", vm.uri())), 200, "start").json();
    check_vm_doc(&doc, &vm.name);
    assert_eq!(doc["state"], "running", "{doc}");
    assert_eq!(
        doc["screenshot"],
        format!("{}/screenshot", vm.uri()),
        "{doc}"
    );
    assert_eq!(doc["graphics"]["port"], Value::Null, "not connected: {doc}");
    assert_eq!(domstate(&vm.name), "running");
    let again = web.action(&format!("{}/start", vm.uri()));
    reason(&again, 409, &[&vm.name, "running"]);
    assert_eq!(
        again.json()["error"],
        "org.kimchi.Kimchi1.Error.InvalidState"
    );

    // Screenshot: a redirect to a PNG.
    let resp = web.get(&format!("{}/screenshot", vm.uri()));
    let resp = expect(resp, 303, "screenshot");
    let location = resp
        .header("location")
        .unwrap_or_else(|| panic!("no Location: {resp:?}"))
        .to_owned();
    assert!(
        location.starts_with("/data/screenshots/") && location.ends_with(".png"),
        "{location}"
    );
    let (status, ctype, png) = get_binary(&web, &location);
    assert_eq!(status, 200, "GET {location}");
    assert_eq!(ctype, "image/png", "GET {location}");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {:?}",
        &png[..png.len().min(16)]
    );

    // Connect: the console is on this gateway.
    let doc = expect(web.action(&format!("{}/connect", vm.uri())), 200, "connect").json();
    let console = format!("{}/console", vm.uri());
    assert_eq!(doc["graphics"]["type"], "vnc", "{doc}");
    assert_eq!(doc["graphics"]["port"], gateway_port(), "{doc}");
    assert_eq!(doc["graphics"]["path"], console, "{doc}");
    let doc = get_vm(&web, &vm);
    assert_eq!(doc["graphics"]["port"], gateway_port(), "{doc}");
    assert_eq!(doc["graphics"]["path"], console, "{doc}");

    // The websocket carries the guest's VNC server.
    let mut ws = open_console(&web, &vm.name, &[("Sec-WebSocket-Protocol", "binary")]);
    assert_eq!(ws.status, 101, "{:?}", String::from_utf8_lossy(&ws.body));
    assert_eq!(ws.header("sec-websocket-protocol"), Some("binary"));
    assert_eq!(ws.header("sec-websocket-accept"), Some(EXPECTED_ACCEPT));
    assert!(
        ws.header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket")),
        "{:?}",
        ws.headers
    );
    let hello = block_on(ws.read_binary(12)).expect("the VNC server's greeting");
    assert!(
        hello.starts_with(b"RFB "),
        "{:?}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(&hello[..12], b"RFB 003.008\n");
    let _ = block_on(ws.close());
    drop(ws);

    // Stats: numbers from the start; sampled (every 5 s) while the guest runs.
    let mut last = Value::Null;
    let sampled = poll(Duration::from_secs(20), || {
        last = get_vm(&web, &vm);
        let [cpu, ..] = check_vm_doc(&last, &vm.name);
        (cpu > 0.0).then_some(())
    });
    assert!(
        sampled.is_some(),
        "no CPU use sampled in 20 s of running: {last}"
    );

    // Stop, and stop again.
    let doc = expect(web.action(&format!("{}/stop", vm.uri())), 200, "stop").json();
    check_stopped(&doc, &vm.name);
    assert_eq!(domstate(&vm.name), "shut off");
    check_stopped(&get_vm(&web, &vm), &vm.name);
    let again = web.action(&format!("{}/stop", vm.uri()));
    reason(&again, 409, &[&vm.name, "not running"]);
    assert_eq!(
        again.json()["error"],
        "org.kimchi.Kimchi1.Error.InvalidState"
    );
    let shot = web.get(&format!("{}/screenshot", vm.uri()));
    reason(&shot, 404, &[&vm.name, "not running"]);

    // Delete: the domain and its disk are gone.
    let resp = expect(web.delete(&vm.uri()), 204, "delete");
    assert!(resp.body.is_empty(), "{resp:?}");
    reason(&web.get(&vm.uri()), 404, &[&vm.name]);
    assert!(!vm.disk().exists(), "{} left behind", vm.disk().display());
    let dominfo = virsh(&["dominfo", &vm.name]);
    assert!(!dominfo.ok, "still defined: {dominfo:?}");
}

// ---------------------------------------------------------------------------------
// 2.-4. Where and how VMs are created

#[test]
fn vm_in_a_named_pool_has_its_disk_there_and_delete_removes_it() {
    let web = Web::admin();
    let pool = TestPool::active("vm-pool", &web);
    let template = TestTemplate::small(&web, "vm-pool");
    let vm = TestVm::planned(&unique_name("vm-pool"), &pool.dir);
    let doc = create_vm(
        &web,
        &json!({"name": vm.name, "template": template.uri(), "storagepool": pool.uri()}),
    );
    check_stopped(&doc, &vm.name);
    let volume = format!("{}-0.img", vm.name);
    assert_eq!(entries(&pool.dir), [volume.clone()].into());
    assert!(!disk_file(Path::new(DEFAULT_POOL_DIR), &vm.name, 0).exists());
    let info = qemu_img_info(vm.disk());
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(info["virtual-size"], GIB, "{info}");
    assert!(
        pool.volume_names(&web).contains(&volume),
        "the pool lists the disk"
    );
    // The guest uses that file.
    let xml = virsh(&["dumpxml", &vm.name]).expect_ok().stdout;
    assert!(
        xml.contains(&format!("'{}'", vm.disk().display()))
            || xml.contains(&format!("\"{}\"", vm.disk().display())),
        "{xml}"
    );

    expect(web.delete(&vm.uri()), 204, "delete");
    assert!(entries(&pool.dir).is_empty(), "{:?}", entries(&pool.dir));
    assert!(pool.volume_names(&web).is_empty());
}

#[test]
fn vm_without_a_name_is_named_after_the_template() {
    let web = Web::admin();
    let template = TestTemplate::small(&web, "vm-gen");
    let dir = Path::new(DEFAULT_POOL_DIR);
    let first = TestVm::planned(&format!("{}-vm-1", template.name), dir);
    let second = TestVm::planned(&format!("{}-vm-2", template.name), dir);

    let doc = create_vm(&web, &json!({"template": template.uri()}));
    assert_eq!(doc["name"], first.name, "{doc}");
    check_stopped(&doc, &first.name);
    let doc = create_vm(&web, &json!({"template": template.uri()}));
    assert_eq!(doc["name"], second.name, "{doc}");
    assert!(first.disk().is_file() && second.disk().is_file());
    get_vm(&web, &first);
    get_vm(&web, &second);
}

/// `GET /tasks/:id` until the task is no longer running (60 s at most).
#[track_caller]
fn wait_for_task(web: &Web, uri: &str) -> Value {
    let mut last = Value::Null;
    let ended = poll(Duration::from_secs(60), || {
        last = expect(web.get(uri), 200, "get the task").json();
        (last["status"] != "running").then_some(())
    });
    assert!(ended.is_some(), "task still running after 60 s: {last}");
    last
}

#[test]
fn vm_creation_with_respond_async_is_a_task_that_ends_with_the_vm() {
    let web = Web::admin();
    let template = TestTemplate::small(&web, "vm-async");
    let vm = TestVm::planned(&unique_name("vm-async"), Path::new(DEFAULT_POOL_DIR));
    let resp = web
        .request("POST", "/vms")
        .header("Prefer", "respond-async")
        .json(&json!({"name": vm.name, "template": template.uri()}))
        .send();
    let resp = expect(resp, 202, "async create");
    assert_eq!(resp.header("preference-applied"), Some("respond-async"));
    let task = resp.json();
    let id = task["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no string id: {task}"));
    let location = resp.header("location").expect("Location").to_owned();
    assert_eq!(location, format!("/tasks/{id}"));
    assert_eq!(task["target_uri"], vm.uri(), "{task}");

    let ended = wait_for_task(&web, &location);
    assert_eq!(ended["status"], "finished", "{ended}");
    assert_eq!(ended["target_uri"], vm.uri(), "{ended}");
    assert_eq!(ended["id"], id, "{ended}");
    check_stopped(&get_vm(&web, &vm), &vm.name);
    assert!(vm.disk().is_file());
    assert_eq!(domstate(&vm.name), "shut off");
}

// ---------------------------------------------------------------------------------
// 5. Changes made behind kimchid's back

/// Waits for a `PropertiesChanged` of the VM interface saying `State` is `state`.
async fn wait_for_state_signal(signals: &mut MessageStream, path: &str, state: &str) {
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = signals.next().await {
            let msg = msg.expect("a D-Bus message");
            if msg.header().path().map(|p| p.as_str()) != Some(path) {
                continue;
            }
            let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                msg.body().deserialize().expect("PropertiesChanged body");
            let new = changed
                .get("State")
                .and_then(|v| String::try_from(v.clone()).ok());
            if iface == VM_INTERFACE && new.as_deref() == Some(state) {
                return;
            }
        }
        panic!("the signal stream ended");
    })
    .await;
    assert!(
        seen.is_ok(),
        "no PropertiesChanged State={state} on {path} within 10 s"
    );
}

/// Polls `GET /vms/:name` until its state is `state` (10 s).
fn wait_for_rest_state(web: &Web, vm: &TestVm, state: &str) {
    let mut last = Value::Null;
    let seen = poll(Duration::from_secs(10), || {
        last = get_vm(web, vm);
        (last["state"] == state).then_some(())
    });
    assert!(seen.is_some(), "GET never showed {state}: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn vm_started_and_destroyed_with_virsh_is_seen_over_rest_and_dbus() {
    let (web, template) = tokio::task::block_in_place(|| {
        let web = Web::admin();
        let template = TestTemplate::small(&web, "vm-virsh");
        (web, template)
    });
    let (vm, doc) = tokio::task::block_in_place(|| small_vm(&web, &template, "vm-virsh"));
    let path = vm_path(doc["uuid"].as_str().unwrap());
    assert_eq!(
        tokio::task::block_in_place(|| lookup_vm_path(&vm.name)),
        path
    );

    let conn = system_bus().await;
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS_NAME)
        .path(path.as_str())
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .build()
        .expect("a match rule");
    // Subscribed before virsh acts, so the signal cannot be missed.
    let mut signals = MessageStream::for_match_rule(rule, &conn, None)
        .await
        .expect("subscribe to PropertiesChanged");

    tokio::task::block_in_place(|| virsh(&["start", &vm.name]).expect_ok());
    wait_for_state_signal(&mut signals, &path, "running").await;
    tokio::task::block_in_place(|| {
        wait_for_rest_state(&web, &vm, "running");
        assert_eq!(vm_property(&path, "State"), r#"s "running""#);
        let doc = get_vm(&web, &vm);
        assert_eq!(
            doc["screenshot"],
            format!("{}/screenshot", vm.uri()),
            "{doc}"
        );
    });

    tokio::task::block_in_place(|| virsh(&["destroy", &vm.name]).expect_ok());
    wait_for_state_signal(&mut signals, &path, "shutoff").await;
    tokio::task::block_in_place(|| {
        wait_for_rest_state(&web, &vm, "shutoff");
        assert_eq!(vm_property(&path, "State"), r#"s "shutoff""#);
        check_stopped(&get_vm(&web, &vm), &vm.name);
        drop(vm);
        drop(template);
    });
}

// ---------------------------------------------------------------------------------
// 6. Readers

#[test]
fn reader_may_read_vms_but_not_create_change_or_watch_them() {
    let web = Web::admin();
    let reader = Web::login(READER);
    let template = TestTemplate::small(&web, "vm-reader");
    let (vm, _) = small_vm(&web, &template, "vm-reader");
    let before = get_vm(&web, &vm);

    let list = expect(reader.get("/vms"), 200, "reader lists").json();
    let listed = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|v| v["name"] == vm.name)
        .unwrap_or_else(|| panic!("{} not in {list}", vm.name));
    assert_eq!(*listed, before);
    assert_eq!(
        expect(reader.get(&vm.uri()), 200, "reader gets").json(),
        before
    );

    let other = TestVm::planned(&unique_name("vm-reader"), Path::new(DEFAULT_POOL_DIR));
    let refused = [
        (
            "create",
            reader.post(
                "/vms",
                &json!({"name": other.name, "template": template.uri()}),
            ),
        ),
        ("start", reader.action(&format!("{}/start", vm.uri()))),
        ("stop", reader.action(&format!("{}/stop", vm.uri()))),
        ("connect", reader.action(&format!("{}/connect", vm.uri()))),
        (
            "screenshot",
            reader.get(&format!("{}/screenshot", vm.uri())),
        ),
        ("delete", reader.delete(&vm.uri())),
    ];
    for (what, resp) in refused {
        let doc = resp.assert_error(403);
        assert_eq!(
            doc["error"], "org.kimchi.Kimchi1.Error.NotAuthorized",
            "{what}: {doc}"
        );
    }
    let ws = open_console(&reader, &vm.name, &[]);
    assert_eq!(ws.status, 403, "{:?}", String::from_utf8_lossy(&ws.body));
    assert_eq!(ws.json()["error"], "org.kimchi.Kimchi1.Error.NotAuthorized");

    assert_eq!(get_vm(&web, &vm), before, "the VM is unchanged");
    assert_eq!(domstate(&vm.name), "shut off");
    assert!(vm.disk().is_file());
    reason(&web.get(&other.uri()), 404, &[&other.name]);
    assert!(!other.disk().exists());
}

// ---------------------------------------------------------------------------------
// 7. Errors

#[test]
fn unknown_template_is_404() {
    let web = Web::admin();
    let missing = unique_name("no-template");
    let vm = TestVm::planned(&unique_name("vm-notpl"), Path::new(DEFAULT_POOL_DIR));
    let resp = web.post(
        "/vms",
        &json!({"name": vm.name, "template": format!("/templates/{missing}")}),
    );
    reason(&resp, 404, &[&missing]);
    assert_eq!(resp.json()["error"], "org.kimchi.Kimchi1.Error.NotFound");
    reason(&web.get(&vm.uri()), 404, &[]);
    assert!(!vm.disk().exists());
}

#[test]
fn malformed_creation_bodies_are_400() {
    let web = Web::admin();
    let template = TestTemplate::small(&web, "vm-body");
    let vm = TestVm::planned(&unique_name("vm-body"), Path::new(DEFAULT_POOL_DIR));
    let cases: [(&str, Value, &[&str]); 5] = [
        (
            "template not a URI",
            json!({"name": vm.name, "template": "foo"}),
            &["template", "/templates/"],
        ),
        (
            "template a pool URI",
            json!({"name": vm.name, "template": "/storagepools/default"}),
            &["template", "/templates/"],
        ),
        (
            "missing template",
            json!({"name": vm.name}),
            &["missing field", "template"],
        ),
        (
            "wrong type",
            json!({"name": 5, "template": template.uri()}),
            &["invalid type", "5"],
        ),
        (
            "storagepool not a pool URI",
            json!({"name": vm.name, "template": template.uri(), "storagepool": "default"}),
            &["storagepool", "/storagepools/"],
        ),
    ];
    for (what, body, parts) in cases {
        let resp = web.post("/vms", &body);
        assert_eq!(resp.status, 400, "{what}: {resp:?}");
        reason(&resp, 400, parts);
    }
    reason(&web.get(&vm.uri()), 404, &[]);
    assert!(!vm.disk().exists());
    let generated = format!("/vms/{}-vm-1", template.name);
    reason(&web.get(&generated), 404, &[]);
}

#[test]
fn vm_names_with_markup_or_path_characters_are_400() {
    let web = Web::admin();
    let template = TestTemplate::small(&web, "vm-names");
    let base = unique_name("vm-bad");
    let cases = [
        (format!("{base}<x"), "'<'"),
        (format!("{base}&x"), "'&'"),
        (format!("{base}'x"), "'''"),
        (format!("{base}/x"), "'/'"),
        ("..".to_owned(), "'.'"),
        (format!("{base}%x"), "'%'"),
    ];
    for (name, what) in &cases {
        let resp = web.post("/vms", &json!({"name": name, "template": template.uri()}));
        let reason = reason(&resp, 400, &["invalid VM name", what]);
        assert_eq!(
            resp.json()["error"],
            "org.kimchi.Kimchi1.Error.InvalidArgument",
            "{name}: {reason}"
        );
        let dominfo = virsh(&["dominfo", name]);
        assert!(!dominfo.ok, "{name} was defined: {dominfo:?}");
    }
    let leftovers: Vec<String> = entries(Path::new(DEFAULT_POOL_DIR))
        .into_iter()
        .filter(|f| f.starts_with(&base) || f.starts_with(".."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn duplicate_name_post_to_a_vm_and_console_without_websocket_are_refused() {
    let web = Web::admin();
    let template = TestTemplate::small(&web, "vm-dup");
    let (vm, before) = small_vm(&web, &template, "vm-dup");

    // Duplicate name: 409, the VM untouched.
    let resp = web.post(
        "/vms",
        &json!({"name": vm.name, "template": template.uri()}),
    );
    reason(&resp, 409, &[&vm.name, "already exists"]);
    assert_eq!(
        resp.json()["error"],
        "org.kimchi.Kimchi1.Error.AlreadyExists"
    );
    assert_eq!(get_vm(&web, &vm), before);
    assert!(vm.disk().is_file());

    // POST to the VM itself: no such action.
    let resp = web.post(&vm.uri(), &json!({}));
    reason(&resp, 405, &["POST"]);
    assert_eq!(
        resp.header("allow"),
        Some("GET, HEAD, PUT, DELETE"),
        "{resp:?}"
    );

    // The console is a websocket only.
    let resp = web.get(&format!("{}/console", vm.uri()));
    reason(&resp, 426, &["websocket"]);

    // A page of another site may not open it (even with the user's cookie).
    let ws = open_console(
        &web,
        &vm.name,
        &[
            ("Origin", "https://evil.example"),
            ("Sec-WebSocket-Protocol", "binary"),
        ],
    );
    assert_eq!(ws.status, 403, "{:?}", String::from_utf8_lossy(&ws.body));
    let doc = ws.json();
    assert_eq!(doc["error"], "kimchi.gateway.CsrfRejected", "{doc}");
    assert!(
        doc["reason"]
            .as_str()
            .is_some_and(|r| r.contains("console")),
        "{doc}"
    );
    assert_eq!(get_vm(&web, &vm), before);
}

#[test]
fn unknown_or_inactive_pool_is_refused() {
    let web = Web::admin();
    let template = TestTemplate::small(&web, "vm-badpool");
    let missing = unique_name("no-pool");
    let vm = TestVm::planned(&unique_name("vm-badpool"), Path::new(DEFAULT_POOL_DIR));
    let resp = web.post(
        "/vms",
        &json!({"name": vm.name, "template": template.uri(),
                "storagepool": format!("/storagepools/{missing}")}),
    );
    reason(&resp, 404, &[&missing]);
    assert_eq!(resp.json()["error"], "org.kimchi.Kimchi1.Error.NotFound");

    let pool = TestPool::active("vm-inactive", &web);
    expect(pool.deactivate(&web), 200, "deactivate the pool");
    let resp = web.post(
        "/vms",
        &json!({"name": vm.name, "template": template.uri(), "storagepool": pool.uri()}),
    );
    reason(&resp, 409, &[&pool.name, "not active"]);
    assert_eq!(
        resp.json()["error"],
        "org.kimchi.Kimchi1.Error.InvalidState"
    );

    reason(&web.get(&vm.uri()), 404, &[]);
    assert!(!virsh(&["dominfo", &vm.name]).ok);
    assert!(!vm.disk().exists());
    assert!(entries(&pool.dir).is_empty(), "{:?}", entries(&pool.dir));
}

#[test]
fn disk_file_already_in_the_pool_is_409_and_nothing_is_created() {
    let web = Web::admin();
    let pool = TestPool::active("vm-occupied", &web);
    let template = TestTemplate::small(&web, "vm-occupied");
    let vm = TestVm::planned(&unique_name("vm-occupied"), &pool.dir);
    std::fs::write(vm.disk(), b"somebody else's data").unwrap();
    let before = snapshot(vm.disk());

    let resp = web.post(
        "/vms",
        &json!({"name": vm.name, "template": template.uri(), "storagepool": pool.uri()}),
    );
    let file = format!("{}-0.img", vm.name);
    reason(&resp, 409, &[&file, "already exists"]);
    assert_eq!(
        resp.json()["error"],
        "org.kimchi.Kimchi1.Error.AlreadyExists"
    );
    reason(&web.get(&vm.uri()), 404, &[]);
    let dominfo = virsh(&["dominfo", &vm.name]);
    assert!(!dominfo.ok, "defined: {dominfo:?}");
    assert_eq!(snapshot(vm.disk()), before, "the file is untouched");
    assert_eq!(entries(&pool.dir), [file].into());
}

#[test]
fn unknown_vm_is_404_everywhere() {
    let web = Web::admin();
    let name = unique_name("no-vm");
    let uri = format!("/vms/{name}");
    let cases = [
        ("get", web.get(&uri)),
        ("delete", web.delete(&uri)),
        ("start", web.action(&format!("{uri}/start"))),
        ("stop", web.action(&format!("{uri}/stop"))),
        ("connect", web.action(&format!("{uri}/connect"))),
        ("screenshot", web.get(&format!("{uri}/screenshot"))),
    ];
    for (what, resp) in cases {
        assert_eq!(resp.status, 404, "{what}: {resp:?}");
        reason(&resp, 404, &[&name]);
        assert_eq!(
            resp.json()["error"],
            "org.kimchi.Kimchi1.Error.NotFound",
            "{what}"
        );
    }
    let ws = open_console(&web, &name, &[]);
    assert_eq!(ws.status, 404, "{:?}", String::from_utf8_lossy(&ws.body));
    assert_eq!(ws.json()["error"], "org.kimchi.Kimchi1.Error.NotFound");
}

// ---------------------------------------------------------------------------------
// 8. A creation failing half-way

/// A dir pool whose directory is a tmpfs of `size` (too small for much): on drop the
/// pool is deactivated and deleted, then the tmpfs unmounted, then [`TestPool`]
/// removes the rest.
struct TmpfsPool {
    pool: TestPool,
    mounted: bool,
}

impl TmpfsPool {
    #[track_caller]
    fn active(web: &Web, what: &str, size: &str) -> TmpfsPool {
        let pool = TestPool::planned(what);
        std::fs::create_dir_all(&pool.dir).unwrap();
        let mut tmpfs = TmpfsPool {
            pool,
            mounted: false,
        };
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&tmpfs.pool.dir))
        .expect_ok();
        tmpfs.mounted = true;
        expect(tmpfs.pool.create(web), 201, "create the tmpfs pool");
        expect(tmpfs.pool.activate(web), 200, "activate the tmpfs pool");
        tmpfs
    }
}

impl Drop for TmpfsPool {
    fn drop(&mut self) {
        let name = &self.pool.name;
        let _ = manager_call("DeactivateStoragePool", "sa{sv}", &[name, "0"]);
        let _ = manager_call("DeleteStoragePool", "sa{sv}", &[name, "0"]);
        if self.mounted {
            let _ = run(Command::new("umount").arg(&self.pool.dir));
        }
    }
}

#[test]
fn creation_failing_at_the_second_disk_leaves_no_vm_and_no_disk() {
    let web = Web::admin();
    // An empty 1 GB qcow2 image takes 196 KiB: one fits in 300 KiB, two do not.
    let tmpfs = TmpfsPool::active(&web, "vm-full", "300k");
    let pool = &tmpfs.pool;
    let template = TestTemplate::create(&web, "vm-full", json!([{"size": 1}, {"size": 1}]));
    let mut vm = TestVm::planned(&unique_name("vm-full"), &pool.dir);
    vm.disks.push(disk_file(&pool.dir, &vm.name, 1));

    let resp = web.post(
        "/vms",
        &json!({"name": vm.name, "template": template.uri(), "storagepool": pool.uri()}),
    );
    let doc = resp.assert_error(500);
    assert_eq!(doc["error"], "kimchi.gateway.TaskFailed", "{doc}");
    let task = doc["task"]
        .as_str()
        .unwrap_or_else(|| panic!("no task id: {doc}"));
    let reason = doc["reason"].as_str().unwrap();
    // The second disk is the one that did not fit.
    assert!(
        reason.contains(&format!("{}-1.img", vm.name)) && reason.contains("No space left"),
        "the reason says what failed: {doc}"
    );
    let task_doc = expect(web.get(&format!("/tasks/{task}")), 200, "get the task").json();
    assert_eq!(task_doc["status"], "failed", "{task_doc}");
    assert_eq!(task_doc["target_uri"], vm.uri(), "{task_doc}");
    assert_eq!(task_doc["message"], reason, "{task_doc}");

    reason_404(&web, &vm);
    let dominfo = virsh(&["dominfo", &vm.name]);
    assert!(!dominfo.ok, "defined: {dominfo:?}");
    assert!(
        entries(&pool.dir).is_empty(),
        "left in the pool: {:?}",
        entries(&pool.dir)
    );
    assert!(pool.volume_names(&web).is_empty());
    // The name is free again: nothing holds it.
    let resp = web.post(
        "/vms",
        &json!({"name": vm.name, "template": template.uri(),
                                        "storagepool": pool.uri()}),
    );
    assert_eq!(resp.status, 500, "fails the same way again: {resp:?}");
}

#[track_caller]
fn reason_404(web: &Web, vm: &TestVm) {
    reason(&web.get(&vm.uri()), 404, &[&vm.name]);
}

#[test]
fn running_vm_without_vnc_has_no_console_to_connect() {
    let web = Web::admin();
    let name = unique_name("vm-novnc");
    let xml = format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>\
         <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
    );
    kimchi_tests::define_domain(&xml);
    // Undefined on drop, like every guest the tests define with virsh.
    let vm = kimchi_tests::TestVm { name };
    vm.start();
    let uri = format!("/vms/{}", vm.name);
    let doc = poll(Duration::from_secs(5), || {
        let doc = web.get(&uri).json();
        (doc["state"] == "running").then_some(doc)
    })
    .expect("the guest started with virsh shows as running");
    assert_eq!(
        doc["graphics"],
        json!({"type": null, "port": null, "path": null})
    );

    let resp = web.post(&format!("{uri}/connect"), &json!({}));
    reason(&resp, 409, &[&vm.name, "no VNC display"]);
    assert_eq!(
        resp.json()["error"],
        "org.kimchi.Kimchi1.Error.InvalidState"
    );
    assert_eq!(web.get(&uri).json()["graphics"]["port"], Value::Null);
}
