//! Templates: what new VMs are made from. Created, read, changed and deleted over REST
//! and D-Bus; defaults filled in from osinfo-db (or Kimchi's fallbacks for an unknown
//! OS); installation media checked (local ISO images identified by their volume id,
//! URLs asked whether they answer, `kimchi_isos` names resolved to paths); stored so
//! that a crash of kimchid loses nothing (on a private bus with a private kimchid).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{expect, keys, manager, no_options, TestPool, Web};
use kimchi_dbus::{
    template_path, Error as BusError, TemplateDisk, TemplatePatch, TemplateSpec, BUS_NAME,
    MANAGER_INTERFACE, MANAGER_PATH, TEMPLATE_INTERFACE,
};
use kimchi_tests::daemons::{kimchid_bin, PrivateBus, Reaped};
use kimchi_tests::{
    manager_call, poll, run, scratch_dir, system_bus, unique_name, write_iso, Ran, Response,
    DATA_VOLUME_ID, OUTSIDER, READER, UBUNTU_VOLUME_ID,
};
use serde_json::{json, Value};
use zbus::{OwnedVariant, Variant};

/// The keys of a template document, sorted.
const TEMPLATE_KEYS: [&str; 9] = [
    "cdrom",
    "cpus",
    "disks",
    "folder",
    "icon",
    "memory",
    "name",
    "os_distro",
    "os_version",
];

/// osinfo-db's entry for the OS `UBUNTU_VOLUME_ID` identifies as.
const UBUNTU_2204_OSINFO: &str = "/usr/share/osinfo/os/ubuntu.com/ubuntu-22.04.xml";

// ---------------------------------------------------------------------------------
// Cleanup guards

/// Template names a test may have created; each is deleted (as root, over D-Bus) on
/// drop, whether or not it exists by then.
struct Templates(Vec<String>);

impl Templates {
    /// A guard holding one fresh name.
    fn one(what: &str) -> Templates {
        Templates(vec![unique_name(what)])
    }

    /// A guard holding `n` fresh names.
    fn many(what: &str, n: usize) -> Templates {
        Templates((0..n).map(|_| unique_name(what)).collect())
    }

    fn name(&self) -> &str {
        &self.0[0]
    }

    /// Also deletes `name` on drop.
    fn add(&mut self, name: &str) {
        self.0.push(name.to_owned());
    }
}

impl Drop for Templates {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = manager_call("DeleteTemplate", "sa{sv}", &[name, "0"]);
        }
    }
}

/// A directory under /var/lib/kimchi-tests, removed with all it holds on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        Scratch(scratch_dir(what))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------
// REST helpers

fn uri(name: &str) -> String {
    format!("/templates/{name}")
}

#[track_caller]
fn put(web: &Web, name: &str, body: &Value) -> Response {
    web.request("PUT", &uri(name)).json(body).send()
}

/// `GET /templates/:name`, asserting 200 and the exact key set.
#[track_caller]
fn get_template(web: &Web, name: &str) -> Value {
    let doc = expect(web.get(&uri(name)), 200, &format!("GET {name}")).json();
    assert_eq!(keys(&doc), TEMPLATE_KEYS, "{doc}");
    doc
}

/// `POST /templates`, asserting 201, the Location and the exact key set; returns the body.
#[track_caller]
fn create(web: &Web, body: &Value) -> Value {
    let resp = expect(web.post("/templates", body), 201, &format!("POST {body}"));
    let doc = resp.json();
    let name = body["name"].as_str().expect("a name in the body");
    assert_eq!(
        resp.header("location"),
        Some(uri(name).as_str()),
        "{resp:?}"
    );
    assert_eq!(keys(&doc), TEMPLATE_KEYS, "{doc}");
    assert_eq!(doc["name"], name, "{doc}");
    doc
}

/// The template called `name` in `GET /templates`, if listed.
#[track_caller]
fn listed(web: &Web, name: &str) -> Option<Value> {
    let list = expect(web.get("/templates"), 200, "GET /templates").json();
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
}

/// Asserts a 400 from kimchid (InvalidArgument) whose reason contains `needle`.
#[track_caller]
fn assert_invalid_argument(resp: &Response, needle: &str) {
    let doc = resp.assert_error(400);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.InvalidArgument",
        "{doc}"
    );
    let reason = doc["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(needle), "reason lacks {needle:?}: {doc}");
}

/// Asserts a 400 found by the gateway (the body does not parse into a template).
#[track_caller]
fn assert_invalid_body(resp: &Response) {
    let doc = resp.assert_error(400);
    assert_eq!(doc["error"], "kimchi.gateway.InvalidBody", "{doc}");
}

/// POSTs a template with `cdrom` and asserts it is refused with a reason containing
/// `needle`, and that no template was stored.
#[track_caller]
fn assert_cdrom_refused(what: &str, cdrom: &str, needle: &str) {
    let web = Web::admin();
    let t = Templates::one(what);
    let resp = web.post("/templates", &json!({"name": t.name(), "cdrom": cdrom}));
    assert_invalid_argument(&resp, needle);
    web.get(&uri(t.name())).assert_error(404);
}

// ---------------------------------------------------------------------------------
// The host and osinfo-db

/// The host's memory in MiB, as libvirt reports it (MemTotal).
fn host_memory_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib / 1024
}

/// What osinfo-db says of an OS for x86_64: (cpus, memory MiB, disk GB), recommended
/// values over minimum ones.
fn osinfo_resources(file: &str) -> (Option<u64>, u64, u64) {
    let xml = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let resources: Vec<_> = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("resources") && matches!(n.attribute("arch"), Some("all" | "x86_64"))
        })
        .collect();
    let value = |what: &str| -> Option<u64> {
        ["recommended", "minimum"].iter().find_map(|level| {
            resources.iter().find_map(|r| {
                r.children()
                    .find(|c| c.has_tag_name(*level))?
                    .children()
                    .find(|c| c.has_tag_name(what))?
                    .text()?
                    .trim()
                    .parse()
                    .ok()
            })
        })
    };
    let ram = value("ram").expect("osinfo gives ubuntu 22.04 a ram size");
    let storage = value("storage").expect("osinfo gives ubuntu 22.04 a storage size");
    (
        value("n-cpus"),
        ram.div_ceil(1 << 20),
        storage.div_ceil(1 << 30),
    )
}

/// What a template for ubuntu 22.04 gets when it says nothing else.
fn ubuntu_defaults() -> (u64, u64, u64) {
    let (cpus, memory, disk) = osinfo_resources(UBUNTU_2204_OSINFO);
    (cpus.unwrap_or(1), memory.min(host_memory_mib()), disk)
}

// ---------------------------------------------------------------------------------
// D-Bus helpers (busctl with JSON output)

/// `busctl --json=short <args>` on the system bus, or on `address` when given.
fn busctl_json(address: Option<&str>, args: &[&str]) -> Ran {
    let mut cmd = Command::new("busctl");
    match address {
        Some(a) => cmd.arg(format!("--address={a}")),
        None => cmd.arg("--system"),
    };
    run(cmd.arg("--json=short").args(args))
}

/// The `data` of busctl's JSON output.
#[track_caller]
fn json_data(ran: &Ran) -> Value {
    assert!(ran.ok, "busctl failed: {}{}", ran.stdout, ran.stderr);
    let doc: Value = serde_json::from_str(ran.stdout.trim())
        .unwrap_or_else(|e| panic!("busctl printed no JSON ({e}): {}", ran.stdout));
    doc["data"].clone()
}

/// A Manager call through busctl on the system bus or `address`.
fn call_manager(address: Option<&str>, method: &str, signature: &str, args: &[&str]) -> Ran {
    let mut argv = vec![
        "call",
        BUS_NAME,
        MANAGER_PATH,
        MANAGER_INTERFACE,
        method,
        signature,
    ];
    argv.extend_from_slice(args);
    busctl_json(address, &argv)
}

/// A property of the template object at `path`, as busctl's JSON `data`, or `None`
/// when it cannot be read (no such object).
fn template_property(address: Option<&str>, path: &str, property: &str) -> Option<Value> {
    let ran = busctl_json(
        address,
        &["get-property", BUS_NAME, path, TEMPLATE_INTERFACE, property],
    );
    ran.ok.then(|| json_data(&ran))
}

/// Waits (5 s) for the template object at `path` to be exported and returns `property`.
#[track_caller]
fn exported_property(address: Option<&str>, path: &str, property: &str) -> Value {
    poll(Duration::from_secs(5), || {
        template_property(address, path, property)
    })
    .unwrap_or_else(|| panic!("no readable {property} on {path} within 5 s"))
}

/// The object paths of the templates kimchid exports: the children of the
/// `/org/kimchi/Kimchi1/template` node in its introspection. (`busctl tree` is no
/// good here: it fails when another test's object vanishes during its walk.)
#[track_caller]
fn template_objects(address: Option<&str>) -> Vec<String> {
    let parent = format!("{}/template", kimchi_dbus::ROOT_PATH);
    let mut cmd = Command::new("busctl");
    match address {
        Some(a) => cmd.arg(format!("--address={a}")),
        None => cmd.arg("--system"),
    };
    let ran = run(cmd.args(["--xml-interface", "introspect", BUS_NAME, &parent])).expect_ok();
    let doc = roxmltree::Document::parse_with_options(
        &ran.stdout,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("bad introspection XML ({e}): {}", ran.stdout));
    doc.root_element()
        .children()
        .filter(|n| n.has_tag_name("node"))
        .filter_map(|n| n.attribute("name"))
        .map(|child| format!("{parent}/{child}"))
        .collect()
}

/// The `CreateTemplate` arguments of a spec with only a name (everything defaulted).
fn name_only_args(name: &str) -> Vec<&str> {
    vec![name, "0", "", "", "", "0", "0", "", "0", "0"]
}

const SPEC_SIGNATURE: &str = "(sassssutsa(uts))a{sv}";
/// `UpdateTemplate(s name, a{sv} changes, a{sv} options)`.
const UPDATE_SIGNATURE: &str = "sa{sv}a{sv}";

/// An empty spec called `name` for zbus calls: kimchid fills in everything.
fn spec(name: &str) -> TemplateSpec {
    TemplateSpec {
        name: name.to_owned(),
        ..TemplateSpec::default()
    }
}

/// A change of the CPU count only.
fn cpus(n: u32) -> TemplatePatch {
    TemplatePatch {
        cpus: Some(n),
        ..TemplatePatch::default()
    }
}

// ---------------------------------------------------------------------------------
// A web server for cdrom URLs

/// Serves `content` with `status` for every HEAD and GET on 127.0.0.1; records each
/// request line. Stopped on drop.
struct IsoServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl IsoServer {
    fn start(status: &'static str, content: Vec<u8>) -> IsoServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let _ = answer(conn, status, &content, &seen);
                }
            }
        });
        IsoServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn answer(
    mut conn: TcpStream,
    status: &str,
    content: &[u8],
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
    }
    seen.lock().unwrap().push(request_line.trim().to_owned());
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    );
    conn.write_all(head.as_bytes())?;
    if request_line.starts_with("GET ") {
        conn.write_all(content)?;
    }
    conn.flush()
}

impl Drop for IsoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop up so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// =================================================================================
// CRUD over REST

#[test]
fn post_get_list_and_delete_a_template() {
    let web = Web::admin();
    let t = Templates::one("tpl-crud");
    let name = t.name();
    let expected = json!({
        "name": name,
        "folder": ["lab", "web"],
        "icon": "images/icon-debian.png",
        "os_distro": "debian",
        "os_version": "11",
        "cpus": 2,
        "memory": 512,
        "cdrom": "",
        "disks": [{"index": 0, "size": 3}, {"index": 1, "size": 2}],
    });
    let created = create(&web, &expected);
    assert_eq!(created, expected);

    assert_eq!(get_template(&web, name), expected);
    assert_eq!(listed(&web, name), Some(expected.clone()));

    let resp = expect(web.delete(&uri(name)), 204, "DELETE");
    assert_eq!(resp.body, "", "{resp:?}");
    let doc = web.get(&uri(name)).assert_error(404);
    assert_eq!(doc["error"], "org.kimchi.Kimchi1.Error.NotFound", "{doc}");
    assert_eq!(listed(&web, name), None);

    let doc = web.delete(&uri(name)).assert_error(404);
    assert_eq!(doc["error"], "org.kimchi.Kimchi1.Error.NotFound", "{doc}");
}

#[test]
fn template_with_a_volume_disk_shows_the_volume_and_no_size() {
    let web = Web::admin();
    let t = Templates::one("tpl-voldisk");
    let doc = create(
        &web,
        &json!({"name": t.name(), "disks": [{"index": 0, "volume": "base.qcow2"}]}),
    );
    assert_eq!(doc["disks"], json!([{"index": 0, "volume": "base.qcow2"}]));
    assert_eq!(get_template(&web, t.name())["disks"], doc["disks"]);
}

// =================================================================================
// Defaults

#[test]
fn name_only_template_gets_the_unknown_os_fallbacks() {
    let web = Web::admin();
    let t = Templates::one("tpl-defaults");
    let expected = json!({
        "name": t.name(),
        "folder": [],
        "icon": null,
        "os_distro": "unknown",
        "os_version": "unknown",
        "cpus": 1,
        "memory": 1024u64.min(host_memory_mib()),
        "cdrom": "",
        "disks": [{"index": 0, "size": 10}],
    });
    assert_eq!(create(&web, &json!({"name": t.name()})), expected);
    assert_eq!(get_template(&web, t.name()), expected);
}

#[test]
fn unknown_os_template_gets_ide_disks_and_an_e1000_nic_on_the_bus() {
    let web = Web::admin();
    let t = Templates::one("tpl-ide");
    create(&web, &json!({"name": t.name()}));
    let info = json_data(&call_manager(
        None,
        "GetTemplate",
        "sa{sv}",
        &[t.name(), "0"],
    ));
    assert_eq!(info[2], "ide", "{info}");
    assert_eq!(info[3], "e1000", "{info}");
    let path = template_path(t.name());
    assert_eq!(exported_property(None, &path, "DiskBus"), "ide");
    assert_eq!(exported_property(None, &path, "NicModel"), "e1000");
}

#[test]
fn ubuntu_2204_template_gets_osinfo_sizes_and_virtio() {
    let web = Web::admin();
    let t = Templates::one("tpl-ubuntu");
    let (cpus, memory, disk) = ubuntu_defaults();
    assert!(
        disk > 10,
        "osinfo recommends {disk} GB, the test needs > 10"
    );
    let expected = json!({
        "name": t.name(),
        "folder": [],
        "icon": null,
        "os_distro": "ubuntu",
        "os_version": "22.04",
        "cpus": cpus,
        "memory": memory,
        "cdrom": "",
        "disks": [{"index": 0, "size": disk}],
    });
    let doc = create(
        &web,
        &json!({"name": t.name(), "os_distro": "ubuntu", "os_version": "22.04"}),
    );
    assert_eq!(doc, expected);
    assert_ne!(doc["disks"], json!([{"index": 0, "size": 10}]));

    let path = template_path(t.name());
    assert_eq!(exported_property(None, &path, "DiskBus"), "virtio");
    assert_eq!(exported_property(None, &path, "NicModel"), "virtio");
}

// =================================================================================
// Installation media

#[test]
fn local_bootable_ubuntu_iso_identifies_the_os() {
    let web = Web::admin();
    let dir = Scratch::new("tpl-iso");
    let iso = dir.file("install.iso");
    write_iso(UBUNTU_VOLUME_ID, true, &iso);
    let t = Templates::one("tpl-iso");
    let doc = create(&web, &json!({"name": t.name(), "cdrom": iso}));
    let (cpus, memory, disk) = ubuntu_defaults();
    assert_eq!(doc["cdrom"], iso.to_str().unwrap(), "{doc}");
    assert_eq!(doc["os_distro"], "ubuntu", "{doc}");
    assert_eq!(doc["os_version"], "22.04", "{doc}");
    assert_eq!(doc["cpus"], cpus, "{doc}");
    assert_eq!(doc["memory"], memory, "{doc}");
    assert_eq!(doc["disks"], json!([{"index": 0, "size": disk}]), "{doc}");
    let path = template_path(t.name());
    assert_eq!(exported_property(None, &path, "DiskBus"), "virtio");
    assert_eq!(exported_property(None, &path, "NicModel"), "virtio");
}

#[test]
fn explicit_os_fields_win_over_what_the_iso_says() {
    let web = Web::admin();
    let dir = Scratch::new("tpl-iso-os");
    let iso = dir.file("install.iso");
    write_iso(UBUNTU_VOLUME_ID, true, &iso);
    let t = Templates::one("tpl-iso-os");
    let doc = create(
        &web,
        &json!({"name": t.name(), "cdrom": iso, "os_distro": "debian", "os_version": "11"}),
    );
    assert_eq!(doc["os_distro"], "debian", "{doc}");
    assert_eq!(doc["os_version"], "11", "{doc}");
    assert_eq!(doc["cdrom"], iso.to_str().unwrap(), "{doc}");
}

#[test]
fn cdrom_that_is_not_an_iso_is_refused() {
    let dir = Scratch::new("tpl-noiso");
    let file = dir.file("fake.iso");
    std::fs::write(&file, vec![0x41u8; 64 * 1024]).unwrap();
    assert_cdrom_refused("tpl-noiso", file.to_str().unwrap(), "not an ISO 9660 image");
}

#[test]
fn cdrom_iso_that_is_not_bootable_is_refused() {
    let dir = Scratch::new("tpl-nonboot");
    let iso = dir.file("data.iso");
    write_iso(DATA_VOLUME_ID, false, &iso);
    assert_cdrom_refused("tpl-nonboot", iso.to_str().unwrap(), "not bootable");
}

#[test]
fn cdrom_path_that_does_not_exist_is_refused() {
    let dir = Scratch::new("tpl-missing");
    let missing = dir.file("nothing-here.iso");
    assert_cdrom_refused("tpl-missing", missing.to_str().unwrap(), "does not exist");
}

#[test]
fn cdrom_relative_garbage_is_refused() {
    assert_cdrom_refused(
        "tpl-garbage",
        "not a path at all",
        "is not an absolute path, an http(s) or ftp URL",
    );
}

#[test]
fn cdrom_gopher_url_is_refused() {
    assert_cdrom_refused(
        "tpl-gopher",
        "gopher://127.0.0.1/x.iso",
        "only http, https and ftp",
    );
}

#[test]
fn cdrom_url_of_a_closed_port_is_refused() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The listener is gone: nothing answers on `port`.
    let url = format!("http://127.0.0.1:{port}/install.iso");
    assert_cdrom_refused("tpl-closed", &url, "does not answer");
}

#[test]
fn cdrom_url_answering_404_is_refused() {
    let server = IsoServer::start("404 Not Found", b"no such image".to_vec());
    let url = server.url("/gone.iso");
    assert_cdrom_refused("tpl-404", &url, "does not answer");
    assert!(
        server.requests().iter().any(|r| r.contains(" /gone.iso ")),
        "kimchid never asked the server: {:?}",
        server.requests()
    );
}

#[test]
fn cdrom_url_that_answers_is_stored_as_given() {
    let dir = Scratch::new("tpl-url");
    let iso = dir.file("served.iso");
    write_iso(UBUNTU_VOLUME_ID, true, &iso);
    let server = IsoServer::start("200 OK", std::fs::read(&iso).unwrap());
    let url = server.url("/isos/served.iso");
    let web = Web::admin();
    let t = Templates::one("tpl-url");
    let doc = create(&web, &json!({"name": t.name(), "cdrom": url}));
    assert_eq!(doc["cdrom"], url.as_str(), "{doc}");
    // A remote image is not opened: the OS stays unknown.
    assert_eq!(doc["os_distro"], "unknown", "{doc}");
    assert_eq!(get_template(&web, t.name())["cdrom"], url.as_str());
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("HEAD /isos/served.iso ")
                || r.starts_with("GET /isos/served.iso ")),
        "kimchid never asked the server: {:?}",
        server.requests()
    );
}

#[test]
fn cdrom_kimchi_isos_name_becomes_the_file_path() {
    let web = Web::admin();
    let pool = TestPool::active("tpl-isopool", &web);
    write_iso(UBUNTU_VOLUME_ID, true, &pool.file("install.iso"));
    // Makes libvirt list the new file (see iso.rs: a GET by name alone does not).
    assert!(pool.volume_names(&web).contains("install.iso"));
    let t = Templates::one("tpl-isoname");
    let doc = create(
        &web,
        &json!({"name": t.name(), "cdrom": format!("{}:install.iso", pool.name)}),
    );
    assert_eq!(
        doc["cdrom"],
        pool.file("install.iso").to_str().unwrap(),
        "{doc}"
    );
    assert_eq!(doc["os_distro"], "ubuntu", "{doc}");
    assert_eq!(doc["os_version"], "22.04", "{doc}");
}

// =================================================================================
// PUT

/// A template with every field set (unknown OS: IDE).
fn full_body(name: &str) -> Value {
    json!({
        "name": name,
        "folder": ["put"],
        "icon": "images/icon-x.png",
        "os_distro": "unknown",
        "os_version": "unknown",
        "cpus": 1,
        "memory": 256,
        "cdrom": "",
        "disks": [{"index": 0, "size": 2}],
    })
}

#[test]
fn put_cpus_and_memory_changes_only_those() {
    let web = Web::admin();
    let t = Templates::one("tpl-put");
    let before = create(&web, &full_body(t.name()));
    let resp = expect(
        put(&web, t.name(), &json!({"cpus": 2, "memory": 768})),
        200,
        "PUT",
    );
    let mut expected = before.clone();
    expected["cpus"] = json!(2);
    expected["memory"] = json!(768);
    assert_eq!(resp.json(), expected);
    assert_eq!(get_template(&web, t.name()), expected);
}

/// Rounds of [`concurrent_puts_of_different_fields_all_take_effect`].
const RACE_ROUNDS: u32 = 25;

/// Three clients change three different fields of one template at the same moment,
/// round after round: every round, all three changes are there afterwards. kimchid
/// merges each PUT's fields into the stored template under its own lock; a merge
/// made before the call (read the template, change a field, write it all back) would
/// now and then write back a field another client had just changed.
#[test]
fn concurrent_puts_of_different_fields_all_take_effect() {
    let web = Web::admin();
    let t = Templates::one("tpl-put-race");
    create(&web, &full_body(t.name()));
    let start = std::sync::Barrier::new(3);
    for round in 0..RACE_ROUNDS {
        // Every field differs from the round before, so a lost change shows.
        let changes = [
            ("cpus", json!(if round % 2 == 0 { 2 } else { 1 })),
            ("memory", json!(if round % 2 == 0 { 512 } else { 256 })),
            ("icon", json!(format!("images/icon-race-{round}.png"))),
        ];
        std::thread::scope(|scope| {
            let puts: Vec<_> = changes
                .iter()
                .map(|(field, value)| {
                    let (web, start, name) = (&web, &start, t.name());
                    scope.spawn(move || {
                        start.wait();
                        (field, value, put(web, name, &json!({ *field: value })))
                    })
                })
                .collect();
            for put in puts {
                let (field, value, resp) = put.join().expect("PUT thread");
                let doc = expect(resp, 200, &format!("round {round}: PUT {field}")).json();
                assert_eq!(&doc[field], value, "round {round}: PUT {field}: {doc}");
            }
        });
        let doc = get_template(&web, t.name());
        for (field, value) in &changes {
            assert_eq!(
                &doc[field], value,
                "round {round}: the change of {field} was lost: {doc}"
            );
        }
    }
}

#[test]
fn put_with_a_new_name_renames_with_303() {
    let web = Web::admin();
    let mut t = Templates::one("tpl-rename");
    let new = unique_name("tpl-renamed");
    t.add(&new);
    let before = create(&web, &full_body(t.name()));
    let resp = expect(put(&web, t.name(), &json!({"name": new})), 303, "rename");
    assert_eq!(
        resp.header("location"),
        Some(uri(&new).as_str()),
        "{resp:?}"
    );
    let mut expected = before.clone();
    expected["name"] = json!(new);
    assert_eq!(resp.json(), expected);

    web.get(&uri(t.name())).assert_error(404);
    assert_eq!(get_template(&web, &new), expected);
    assert_eq!(listed(&web, t.name()), None);
}

#[test]
fn rename_onto_an_existing_template_is_409_and_changes_nothing() {
    let web = Web::admin();
    let t = Templates::many("tpl-clash", 2);
    let (a, b) = (t.0[0].as_str(), t.0[1].as_str());
    let doc_a = create(&web, &full_body(a));
    let doc_b = create(&web, &json!({"name": b, "cpus": 2}));
    let doc = put(&web, a, &json!({"name": b, "cpus": 3})).assert_error(409);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.AlreadyExists",
        "{doc}"
    );
    assert_eq!(get_template(&web, a), doc_a);
    assert_eq!(get_template(&web, b), doc_b);
}

#[test]
fn put_with_an_unknown_field_is_400_and_changes_nothing() {
    let web = Web::admin();
    let t = Templates::one("tpl-put-unknown");
    let before = create(&web, &full_body(t.name()));
    assert_invalid_body(&put(&web, t.name(), &json!({"cpus": 2, "colour": "red"})));
    assert_eq!(get_template(&web, t.name()), before);
}

#[test]
fn put_with_wrong_types_or_zero_is_400_and_changes_nothing() {
    let web = Web::admin();
    let t = Templates::one("tpl-put-types");
    let before = create(&web, &full_body(t.name()));
    for body in [
        json!({"cpus": "two"}),
        json!({"cpus": "2.5"}),
        json!({"memory": -1}),
        json!({"cpus": 0}),
        json!({"memory": 0}),
        json!({"folder": "a/b"}),
        json!({"disks": {"index": 0, "size": 1}}),
    ] {
        let resp = put(&web, t.name(), &body);
        assert_eq!(resp.status, 400, "{body}: {resp:?}");
        assert_invalid_body(&resp);
    }
    assert_eq!(get_template(&web, t.name()), before);
}

#[test]
fn put_of_a_missing_template_is_404() {
    let web = Web::admin();
    let t = Templates::one("tpl-put-missing");
    let doc = put(&web, t.name(), &json!({"cpus": 2})).assert_error(404);
    assert_eq!(doc["error"], "org.kimchi.Kimchi1.Error.NotFound", "{doc}");
    web.get(&uri(t.name())).assert_error(404);
}

#[test]
fn ide_template_refuses_disk_index_2_the_cdrom() {
    let web = Web::admin();
    let t = Templates::one("tpl-hdc");
    let before = create(&web, &full_body(t.name()));
    let resp = put(&web, t.name(), &json!({"disks": [{"index": 2, "size": 1}]}));
    assert_invalid_argument(&resp, "hdc is the CD-ROM");
    assert_eq!(get_template(&web, t.name()), before);
}

#[test]
fn ide_template_takes_disk_indexes_0_1_and_3() {
    let web = Web::admin();
    let t = Templates::one("tpl-ide3");
    create(&web, &full_body(t.name()));
    let disks = json!([
        {"index": 0, "size": 1},
        {"index": 1, "size": 1},
        {"index": 3, "size": 1},
    ]);
    let resp = expect(put(&web, t.name(), &json!({"disks": disks})), 200, "PUT");
    assert_eq!(resp.json()["disks"], disks);
}

#[test]
fn two_disks_with_the_same_index_are_refused() {
    let web = Web::admin();
    let t = Templates::one("tpl-samedisk");
    let before = create(&web, &full_body(t.name()));
    let resp = put(
        &web,
        t.name(),
        &json!({"disks": [{"index": 1, "size": 1}, {"index": 1, "size": 2}]}),
    );
    assert_invalid_argument(&resp, "two disks have index 1");
    assert_eq!(get_template(&web, t.name()), before);
}

#[test]
fn disk_without_size_or_volume_is_refused() {
    let web = Web::admin();
    let t = Templates::one("tpl-nosize");
    let before = create(&web, &full_body(t.name()));
    let resp = put(&web, t.name(), &json!({"disks": [{"index": 0}]}));
    assert_invalid_argument(&resp, "needs a size or a volume");
    assert_eq!(get_template(&web, t.name()), before);
}

// =================================================================================
// POST errors

#[test]
fn post_without_a_name_is_400() {
    let web = Web::admin();
    let resp = web.post("/templates", &json!({"cpus": 1}));
    let doc = resp.assert_error(400);
    assert!(
        doc["reason"].as_str().unwrap_or_default().contains("name"),
        "{doc}"
    );
}

#[test]
fn post_of_an_existing_name_is_409_and_keeps_the_first() {
    let web = Web::admin();
    let t = Templates::one("tpl-dup");
    let first = create(&web, &json!({"name": t.name(), "cpus": 2}));
    let doc = web
        .post("/templates", &json!({"name": t.name(), "cpus": 3}))
        .assert_error(409);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.AlreadyExists",
        "{doc}"
    );
    assert_eq!(get_template(&web, t.name()), first);
}

#[test]
fn post_with_a_slash_in_the_name_is_400() {
    let web = Web::admin();
    let base = unique_name("tpl-slash");
    let name = format!("{base}/b");
    let _t = Templates(vec![name.clone(), base.clone()]);
    let resp = web.post("/templates", &json!({"name": name}));
    assert_invalid_argument(&resp, "it contains '/'");
    assert_eq!(listed(&web, &name), None);
}

#[test]
fn post_with_an_empty_name_is_400() {
    let web = Web::admin();
    let resp = web.post("/templates", &json!({"name": ""}));
    assert_invalid_argument(&resp, "it is empty");
    assert_eq!(listed(&web, ""), None);
}

#[test]
fn post_with_a_hidden_name_is_400() {
    let web = Web::admin();
    let name = format!(".{}", unique_name("tpl-hidden"));
    let _t = Templates(vec![name.clone()]);
    let resp = web.post("/templates", &json!({"name": name}));
    assert_invalid_argument(&resp, "it starts with '.'");
    assert_eq!(listed(&web, &name), None);
}

#[test]
fn post_with_too_many_cpus_is_400() {
    let web = Web::admin();
    let t = Templates::one("tpl-cpus");
    let resp = web.post("/templates", &json!({"name": t.name(), "cpus": 1000}));
    assert_invalid_argument(&resp, "cpus must be between 1 and");
    web.get(&uri(t.name())).assert_error(404);
}

#[test]
fn post_with_more_memory_than_the_host_is_400() {
    let web = Web::admin();
    let t = Templates::one("tpl-mem");
    let resp = web.post(
        "/templates",
        &json!({"name": t.name(), "memory": 100_000_000u64}),
    );
    assert_invalid_argument(&resp, "memory");
    web.get(&uri(t.name())).assert_error(404);
}

#[test]
fn post_with_slightly_more_memory_than_the_host_is_400() {
    let web = Web::admin();
    let t = Templates::one("tpl-mem-host");
    // Within the range kimchid accepts in general, beyond what this host has.
    let memory = host_memory_mib() + 1024;
    let resp = web.post("/templates", &json!({"name": t.name(), "memory": memory}));
    assert_invalid_argument(&resp, "more than this host has");
    web.get(&uri(t.name())).assert_error(404);
}

// =================================================================================
// Authorization

#[test]
fn reader_may_read_templates() {
    let admin = Web::admin();
    let t = Templates::one("tpl-reader");
    let doc = create(&admin, &full_body(t.name()));
    let reader = Web::login(READER);
    assert_eq!(get_template(&reader, t.name()), doc);
    assert_eq!(listed(&reader, t.name()), Some(doc));
}

#[test]
fn reader_may_not_create_change_or_delete_templates() {
    let admin = Web::admin();
    let mut t = Templates::one("tpl-reader-w");
    let other = unique_name("tpl-reader-new");
    t.add(&other);
    let before = create(&admin, &full_body(t.name()));
    let reader = Web::login(READER);
    let attempts = [
        reader.post("/templates", &json!({"name": other})),
        put(&reader, t.name(), &json!({"cpus": 2})),
        put(&reader, t.name(), &json!({"name": other})),
        reader.delete(&uri(t.name())),
    ];
    for resp in attempts {
        let doc = resp.assert_error(403);
        assert_eq!(
            doc["error"], "org.kimchi.Kimchi1.Error.NotAuthorized",
            "{doc}"
        );
    }
    assert_eq!(get_template(&admin, t.name()), before);
    admin.get(&uri(&other)).assert_error(404);
}

#[test]
fn outsider_may_not_read_templates() {
    let admin = Web::admin();
    let t = Templates::one("tpl-outsider");
    create(&admin, &full_body(t.name()));
    let outsider = Web::login(OUTSIDER);
    for resp in [outsider.get("/templates"), outsider.get(&uri(t.name()))] {
        let doc = resp.assert_error(403);
        assert_eq!(
            doc["error"], "org.kimchi.Kimchi1.Error.NotAuthorized",
            "{doc}"
        );
    }
}

// =================================================================================
// D-Bus

#[test]
fn dbus_create_template_fills_in_defaults_and_exports_the_object() {
    let t = Templates::one("tpl-bus");
    let name = t.name();
    let mut args = name_only_args(name);
    args.insert(0, SPEC_SIGNATURE);
    let info = json_data(&call_manager(None, "CreateTemplate", args[0], &args[1..]));
    let path = template_path(name);
    let memory = 1024u64.min(host_memory_mib());
    assert_eq!(
        info,
        json!([
            path,
            [
                name,
                [],
                "",
                "unknown",
                "unknown",
                1,
                memory,
                "",
                [[0, 10, ""]]
            ],
            "ide",
            "e1000"
        ])
    );

    let looked_up = json_data(&call_manager(
        None,
        "LookupTemplate",
        "sa{sv}",
        &[name, "0"],
    ));
    assert_eq!(looked_up, json!([path]));

    for (property, value) in [
        ("Name", json!(name)),
        ("Folder", json!([])),
        ("Icon", json!("")),
        ("OsDistro", json!("unknown")),
        ("OsVersion", json!("unknown")),
        ("Cpus", json!(1)),
        ("Memory", json!(memory)),
        ("Cdrom", json!("")),
        ("Disks", json!([[0, 10, ""]])),
        ("DiskBus", json!("ide")),
        ("NicModel", json!("e1000")),
    ] {
        assert_eq!(
            exported_property(None, &path, property),
            value,
            "{property}"
        );
    }
    // The gateway serves the same template.
    assert_eq!(get_template(&Web::admin(), name)["memory"], memory);
}

#[test]
fn dbus_update_template_rename_moves_the_object() {
    let mut t = Templates::one("tpl-bus-mv");
    let new = unique_name("tpl-bus-moved");
    t.add(&new);
    let old = t.name().to_owned();
    let mut args = name_only_args(&old);
    args.insert(0, SPEC_SIGNATURE);
    call_manager(None, "CreateTemplate", args[0], &args[1..]);
    let (old_path, new_path) = (template_path(&old), template_path(&new));
    exported_property(None, &old_path, "Name");

    // UpdateTemplate(s name, a{sv} changes, a{sv} options): name `new`, cpus 2; every
    // other field stays as it was.
    let before = json_data(&call_manager(None, "GetTemplate", "sa{sv}", &[&old, "0"]));
    let info = json_data(&call_manager(
        None,
        "UpdateTemplate",
        UPDATE_SIGNATURE,
        &[&old, "2", "name", "s", &new, "cpus", "u", "2", "0"],
    ));
    assert_eq!(info[0], new_path.as_str(), "{info}");
    let mut expected = before[1].clone();
    expected[0] = json!(new);
    expected[5] = json!(2);
    assert_eq!(info[1], expected, "{info}");
    // The device models (disk bus, NIC) stay too.
    assert_eq!((&info[2], &info[3]), (&before[2], &before[3]), "{info}");

    let moved = poll(Duration::from_secs(5), || {
        let paths = template_objects(None);
        (paths.contains(&new_path) && !paths.contains(&old_path)).then_some(())
    });
    assert!(
        moved.is_some(),
        "after the rename the objects lack {new_path} or has {old_path}: {:?}",
        template_objects(None)
            .into_iter()
            .filter(|p| p.contains("/template/"))
            .collect::<Vec<_>>()
    );
    assert_eq!(exported_property(None, &new_path, "Name"), new.as_str());
    assert_eq!(exported_property(None, &new_path, "Cpus"), 2);
    assert_eq!(template_property(None, &old_path, "Name"), None);
    let ran = call_manager(None, "LookupTemplate", "sa{sv}", &[&old, "0"]);
    assert!(!ran.ok, "LookupTemplate of the old name: {}", ran.stdout);
    let found = json_data(&call_manager(
        None,
        "LookupTemplate",
        "sa{sv}",
        &[&new, "0"],
    ));
    assert_eq!(found, json!([new_path]));
}

#[test]
fn dbus_delete_template_removes_the_object() {
    let t = Templates::one("tpl-bus-rm");
    let name = t.name();
    let mut args = name_only_args(name);
    args.insert(0, SPEC_SIGNATURE);
    call_manager(None, "CreateTemplate", args[0], &args[1..]);
    let path = template_path(name);
    exported_property(None, &path, "Name");

    let ran = call_manager(None, "DeleteTemplate", "sa{sv}", &[name, "0"]);
    assert!(ran.ok, "DeleteTemplate: {}", ran.stderr);
    let gone = poll(Duration::from_secs(5), || {
        (!template_objects(None).contains(&path)).then_some(())
    });
    assert!(
        gone.is_some(),
        "{path} still exported 5 s after DeleteTemplate"
    );
    assert_eq!(template_property(None, &path, "Name"), None);
    let ran = call_manager(None, "GetTemplate", "sa{sv}", &[name, "0"]);
    assert!(!ran.ok, "GetTemplate after delete: {}", ran.stdout);
    assert!(ran.stderr.contains("no template named"), "{}", ran.stderr);
    Web::admin().get(&uri(name)).assert_error(404);
}

// busctl prints only an error's message, not its name: the names are checked with a
// zbus proxy, whose error type is made from them.

#[tokio::test(flavor = "multi_thread")]
async fn dbus_create_of_an_existing_name_is_already_exists() {
    let t = Templates::one("tpl-bus-dup");
    let m = manager(&system_bus().await).await;
    m.create_template(spec(t.name()), no_options())
        .await
        .expect("first CreateTemplate");
    let mut again = spec(t.name());
    again.cpus = 4;
    let err = m.create_template(again, no_options()).await.unwrap_err();
    assert!(
        matches!(&err, BusError::AlreadyExists(m) if m.contains(t.name())),
        "{err:?}"
    );
    let info = m.get_template(t.name(), no_options()).await.unwrap();
    assert_eq!(
        info.spec.cpus, 1,
        "the first template was changed: {info:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dbus_rename_onto_an_existing_name_is_already_exists() {
    let t = Templates::many("tpl-bus-clash", 2);
    let m = manager(&system_bus().await).await;
    for name in &t.0 {
        m.create_template(spec(name), no_options()).await.unwrap();
    }
    let rename = TemplatePatch {
        name: Some(t.0[1].clone()),
        ..TemplatePatch::default()
    };
    let err = m
        .update_template(&t.0[0], rename.to_dict(), no_options())
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::AlreadyExists(_)), "{err:?}");
    for name in &t.0 {
        m.get_template(name, no_options())
            .await
            .unwrap_or_else(|e| panic!("{name} is gone: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dbus_calls_on_a_missing_template_are_not_found() {
    let t = Templates::one("tpl-bus-none");
    let name = t.name();
    let m = manager(&system_bus().await).await;
    let errors = [
        m.get_template(name, no_options()).await.map(|_| ()),
        m.lookup_template(name, no_options()).await.map(|_| ()),
        m.update_template(name, cpus(2).to_dict(), no_options())
            .await
            .map(|_| ()),
        m.delete_template(name, no_options()).await,
    ];
    for (call, result) in ["Get", "Lookup", "Update", "Delete"].iter().zip(errors) {
        let err = result.expect_err(call);
        assert!(
            matches!(&err, BusError::NotFound(m) if m.contains(name)),
            "{call}Template: {err:?}"
        );
    }
}

/// A change naming a field templates do not have (`memory` is REST's name; the bus
/// says `memory_mib`), or giving a field the wrong type, is refused as a whole:
/// nothing changes, not even the valid field next to it.
#[tokio::test(flavor = "multi_thread")]
async fn dbus_update_with_an_unknown_or_mistyped_field_is_invalid_argument_and_changes_nothing() {
    let t = Templates::one("tpl-bus-badkey");
    let name = t.name();
    let before = tokio::task::block_in_place(|| {
        let mut args = name_only_args(name);
        args.insert(0, SPEC_SIGNATURE);
        json_data(&call_manager(None, "CreateTemplate", args[0], &args[1..]));
        json_data(&call_manager(None, "GetTemplate", "sa{sv}", &[name, "0"]))
    });
    assert_ne!(before[1][5], 3, "{before}");

    // busctl, as an administrator would type it: cpus 3 and the unknown `memory`, or
    // cpus as a string. busctl shows the error's message, not its name.
    for (what, changes, needle) in [
        (
            "unknown key",
            ["2", "cpus", "u", "3", "memory", "t", "2048"].as_slice(),
            "memory",
        ),
        ("mistyped value", &["1", "cpus", "s", "3"], "cpus"),
    ] {
        let ran = tokio::task::block_in_place(|| {
            let mut args = vec![name];
            args.extend_from_slice(changes);
            args.push("0");
            call_manager(None, "UpdateTemplate", UPDATE_SIGNATURE, &args)
        });
        assert!(!ran.ok, "{what} was accepted: {}", ran.stdout);
        assert!(ran.stderr.contains(needle), "{what}: {}", ran.stderr);
    }

    // The same unknown key through zbus: the error's name is InvalidArgument.
    let m = manager(&system_bus().await).await;
    let mut changes = cpus(3).to_dict();
    changes.insert(
        "memory".into(),
        OwnedVariant::try_from(Variant::from(2048u64)).unwrap(),
    );
    let err = m
        .update_template(name, changes, no_options())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BusError::InvalidArgument(m) if m.contains("memory")),
        "{err:?}"
    );

    let after = tokio::task::block_in_place(|| {
        json_data(&call_manager(None, "GetTemplate", "sa{sv}", &[name, "0"]))
    });
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn dbus_bad_specs_are_invalid_argument() {
    let t = Templates::one("tpl-bus-bad");
    let name = t.name();
    let m = manager(&system_bus().await).await;
    let mut slash = spec(&format!("{name}/x"));
    slash.cpus = 1;
    let mut cpus = spec(name);
    cpus.cpus = 1000;
    let mut memory = spec(name);
    memory.memory_mib = 1;
    let mut disks = spec(name);
    disks.disks = vec![TemplateDisk {
        index: 2,
        size_gb: 1,
        volume: String::new(),
    }];
    let mut cdrom = spec(name);
    cdrom.cdrom = "relative/path.iso".into();
    for (what, bad) in [
        ("slash", slash),
        ("cpus", cpus),
        ("memory", memory),
        ("ide index 2", disks),
        ("cdrom", cdrom),
    ] {
        let err = m.create_template(bad, no_options()).await.unwrap_err();
        assert!(
            matches!(err, BusError::InvalidArgument(_)),
            "{what}: {err:?}"
        );
    }
    let err = m.get_template(name, no_options()).await.unwrap_err();
    assert!(matches!(err, BusError::NotFound(_)), "{err:?}");
}

// =================================================================================
// Persistence, with a private kimchid on a private bus

/// A private bus with its own polkitd (root callers are authorized by polkit itself)
/// and a kimchid (libvirt's test driver) keeping its state in `dir/state`.
struct PrivateStack {
    dir: PathBuf,
    address: String,
    kimchid: Option<Reaped>,
    _polkitd: Reaped,
    _bus: PrivateBus,
}

impl PrivateStack {
    fn start() -> PrivateStack {
        let dir = std::env::temp_dir().join(unique_name("tpl-persist"));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let bus = PrivateBus::start(&dir);
        let address = bus.address.clone();
        let polkitd = Reaped(
            Command::new("/usr/lib/polkit-1/polkitd")
                .arg("--no-debug")
                .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("polkitd.log")).unwrap())
                .spawn()
                .expect("run polkitd"),
        );
        let polkit_up = poll(Duration::from_secs(10), || {
            run(Command::new("busctl")
                .arg(format!("--address={address}"))
                .args(["status", "org.freedesktop.PolicyKit1"]))
            .ok
            .then_some(())
        });
        assert!(
            polkit_up.is_some(),
            "the private polkitd did not take its name: {}",
            std::fs::read_to_string(dir.join("polkitd.log")).unwrap_or_default()
        );
        let mut stack = PrivateStack {
            dir,
            address,
            kimchid: None,
            _polkitd: polkitd,
            _bus: bus,
        };
        stack.start_kimchid();
        stack
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kimchid.log")).unwrap_or_default()
    }

    /// Starts kimchid and waits until it answers ListTemplates.
    fn start_kimchid(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kimchid.log"))
            .unwrap();
        self.kimchid = Some(Reaped(
            Command::new(kimchid_bin())
                .args(["--config", "/nonexistent/kimchid.conf"])
                .args(["--libvirt-uri", "test:///default"])
                .args(["--state-dir", self.dir.join("state").to_str().unwrap()])
                .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
                .env_remove("NOTIFY_SOCKET")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("run kimchid"),
        ));
        let up = poll(Duration::from_secs(20), || {
            self.call("ListTemplates", "a{sv}", &["0"]).ok.then_some(())
        });
        assert!(
            up.is_some(),
            "private kimchid never answered:\n{}",
            self.log()
        );
    }

    /// SIGKILL, as a crash would end it.
    fn kill_kimchid(&mut self) {
        let mut kimchid = self.kimchid.take().expect("kimchid running");
        kimchid.0.kill().expect("SIGKILL kimchid");
        let status = kimchid.0.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
    }

    fn call(&self, method: &str, signature: &str, args: &[&str]) -> Ran {
        call_manager(Some(&self.address), method, signature, args)
    }

    #[track_caller]
    fn templates(&self) -> Value {
        json_data(&self.call("ListTemplates", "a{sv}", &["0"]))[0].clone()
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        self.kimchid = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn templates_survive_a_kimchid_crash() {
    let mut stack = PrivateStack::start();
    let create = |args: &[&str]| {
        let ran = stack.call("CreateTemplate", SPEC_SIGNATURE, args);
        assert!(
            ran.ok,
            "CreateTemplate {args:?}: {}\n{}",
            ran.stderr,
            stack.log()
        );
    };
    // Every field set: name, folder (2 parts), icon, os_distro, os_version, cpus,
    // memory, cdrom, disks (2: a new one of 3 GB, a copy of base.qcow2), options.
    create(&[
        "full",
        "2",
        "lab",
        "web",
        "images/icon-x.png",
        "debian",
        "11",
        "2",
        "512",
        "",
        "2",
        "0",
        "3",
        "",
        "1",
        "0",
        "base.qcow2",
        "0",
    ]);
    // Defaults only.
    create(&name_only_args("plain"));
    // Created, then renamed and changed.
    create(&name_only_args("before-rename"));
    let ran = stack.call(
        "UpdateTemplate",
        UPDATE_SIGNATURE,
        &[
            "before-rename",
            "2",
            "name",
            "s",
            "after-rename",
            "cpus",
            "u",
            "4",
            "0",
        ],
    );
    assert!(ran.ok, "UpdateTemplate: {}\n{}", ran.stderr, stack.log());
    // Created, then deleted.
    create(&name_only_args("deleted"));
    let ran = stack.call("DeleteTemplate", "sa{sv}", &["deleted", "0"]);
    assert!(ran.ok, "DeleteTemplate: {}", ran.stderr);

    let before = stack.templates();
    let names: Vec<&str> = before
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[1][0].as_str().unwrap())
        .collect();
    assert_eq!(names, ["after-rename", "full", "plain"], "{before}");
    let full = &before[1];
    assert_eq!(
        full[1],
        json!([
            "full",
            ["lab", "web"],
            "images/icon-x.png",
            "debian",
            "11",
            2,
            512,
            "",
            [[0, 3, ""], [1, 0, "base.qcow2"]]
        ]),
        "{full}"
    );

    stack.kill_kimchid();
    stack.start_kimchid();

    assert_eq!(stack.templates(), before);
    // The objects are back on the bus too.
    let path = template_path("after-rename");
    assert_eq!(
        exported_property(Some(&stack.address), &path, "Cpus"),
        4,
        "{}",
        stack.log()
    );
    assert_eq!(
        exported_property(Some(&stack.address), &template_path("full"), "DiskBus"),
        "virtio"
    );
    let paths = template_objects(Some(&stack.address));
    assert!(!paths.contains(&template_path("deleted")), "{paths:?}");
    assert!(
        !paths.contains(&template_path("before-rename")),
        "{paths:?}"
    );
}
