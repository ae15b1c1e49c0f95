//! Helpers of the storage and task tests: a logged-in web client, a throwaway pool
//! with a directory of its own, and what qemu-img, statvfs and the bus say.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kimchi_dbus::ManagerProxy;
pub use kimchi_tests::manager_call;
use kimchi_tests::{
    login, poll, request, run, scratch_dir, unique_name, virsh, write_iso, Ran, Request,
    UBUNTU_VOLUME_ID,
};
use kimchi_tests::{Response, Session, TestUser, ADMIN};
use serde_json::{json, Value};
use zbus::OwnedVariant;

pub const MIB: u64 = 1024 * 1024;

/// The keys of a VM document, sorted: the 2013 ones and what the VM operations add.
pub const VM_KEYS: [&str; 13] = [
    "autostart",
    "cpus",
    "description",
    "graphics",
    "icon",
    "memory",
    "name",
    "pending_changes",
    "screenshot",
    "state",
    "stats",
    "title",
    "uuid",
];

/// The keys of a pool document (Kimchi's API, no more, no less).
pub const POOL_KEYS: [&str; 8] = [
    "allocated",
    "available",
    "capacity",
    "name",
    "nr_volumes",
    "path",
    "state",
    "type",
];

/// The keys of a volume document that is not an ISO image.
pub const VOLUME_KEYS: [&str; 6] = ["allocation", "capacity", "format", "name", "path", "type"];

/// The keys of an ISO volume document.
pub const ISO_VOLUME_KEYS: [&str; 9] = [
    "allocation",
    "bootable",
    "capacity",
    "format",
    "name",
    "os_distro",
    "os_version",
    "path",
    "type",
];

/// The sorted keys of a JSON object.
#[track_caller]
pub fn keys(doc: &Value) -> Vec<String> {
    let mut keys: Vec<String> = doc
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {doc}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

// ---------------------------------------------------------------------------------
// The gateway

/// A web session: the cookie, and the CSRF token on every request (harmless on GETs).
pub struct Web {
    pub session: Session,
}

impl Web {
    #[track_caller]
    pub fn login(user: TestUser) -> Web {
        Web {
            session: login(user),
        }
    }

    #[track_caller]
    pub fn admin() -> Web {
        Web::login(ADMIN)
    }

    pub fn request(&self, method: &str, path: &str) -> Request {
        request(method, path)
            .session(&self.session)
            .header("X-CSRF-Token", &self.session.csrf_token)
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path).send()
    }

    #[track_caller]
    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path).json(body).send()
    }

    /// A POST without a body, as actions (activate, wipe) are sent.
    #[track_caller]
    pub fn action(&self, path: &str) -> Response {
        self.request("POST", path).send()
    }

    #[track_caller]
    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path).send()
    }
}

/// `GET` of a listing that spans pools (`/storagepools`, the `kimchi_isos` view),
/// asserting 200 and returning the document.
///
/// kimchid answers these with 409 while a pool it still believes active has been
/// stopped (by another test running in parallel, or with virsh): see
/// `storage_pools::pool_stopped_behind_kimchis_back_keeps_the_lists_readable`, which
/// tests that on its own. Here such answers are retried for a while so that the
/// other tests test what they are about.
#[track_caller]
pub fn get_listing(web: &Web, uri: &str) -> Value {
    let mut last = None;
    let found = poll(Duration::from_secs(10), || {
        let resp = web.get(uri);
        if resp.status == 200 {
            return Some(resp.json());
        }
        last = Some(resp);
        None
    });
    found.unwrap_or_else(|| panic!("GET {uri} kept failing: {last:?}"))
}

/// Asserts the status, naming the request and showing the whole response otherwise.
#[track_caller]
pub fn expect(resp: Response, status: u16, what: &str) -> Response {
    assert_eq!(resp.status, status, "{what}: {resp:?}");
    resp
}

// ---------------------------------------------------------------------------------
// Pools

/// A storage pool the test owns, with a directory of its own:
/// `/tmp/kimchi-e2e-<unique>/` (the root, created at once) holds the pool directory
/// `pool/` (not created: activation has to build it) and whatever the test puts next
/// to it. On drop the pool is deactivated and deleted (through kimchid, then with
/// virsh should kimchid have failed) and the root removed with all it holds.
pub struct TestPool {
    pub name: String,
    pub root: PathBuf,
    pub dir: PathBuf,
}

impl TestPool {
    /// Names and directories only; nothing is defined yet.
    pub fn planned(what: &str) -> TestPool {
        let name = unique_name(what);
        let root = PathBuf::from(format!("/tmp/kimchi-e2e-{name}"));
        std::fs::create_dir_all(&root).expect("create the test's root directory");
        let dir = root.join("pool");
        TestPool { name, root, dir }
    }

    /// A dir pool created and activated over REST.
    #[track_caller]
    pub fn active(what: &str, web: &Web) -> TestPool {
        let pool = TestPool::planned(what);
        expect(pool.create(web), 201, "create the pool");
        expect(pool.activate(web), 200, "activate the pool");
        pool
    }

    /// The `POST /storagepools` body for this dir pool.
    pub fn spec(&self) -> Value {
        json!({"name": self.name, "type": "dir", "path": self.dir})
    }

    pub fn create(&self, web: &Web) -> Response {
        web.post("/storagepools", &self.spec())
    }

    pub fn activate(&self, web: &Web) -> Response {
        web.action(&format!("{}/activate", self.uri()))
    }

    pub fn deactivate(&self, web: &Web) -> Response {
        web.action(&format!("{}/deactivate", self.uri()))
    }

    /// The pool's URI (unique names need no percent-encoding).
    pub fn uri(&self) -> String {
        format!("/storagepools/{}", self.name)
    }

    pub fn volumes_uri(&self) -> String {
        format!("{}/storagevolumes", self.uri())
    }

    pub fn volume_uri(&self, volume: &str) -> String {
        format!("{}/{volume}", self.volumes_uri())
    }

    /// Where the volume `name` lives on the host.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates a volume over REST (which waits for its task) and returns its document.
    #[track_caller]
    pub fn create_volume(&self, web: &Web, name: &str, mib: u64, format: &str) -> Value {
        let resp = web.post(
            &self.volumes_uri(),
            &json!({"name": name, "capacity": mib, "format": format}),
        );
        expect(resp, 201, &format!("create volume {name}")).json()
    }

    /// The volume's document (`GET …/storagevolumes/:name`), asserting 200.
    #[track_caller]
    pub fn volume(&self, web: &Web, name: &str) -> Value {
        expect(web.get(&self.volume_uri(name)), 200, "get the volume").json()
    }

    /// The pool's document, asserting 200.
    #[track_caller]
    pub fn get(&self, web: &Web) -> Value {
        expect(web.get(&self.uri()), 200, "get the pool").json()
    }

    /// Names of the volumes `GET …/storagevolumes` lists (which also makes libvirt
    /// look at the directory again).
    #[track_caller]
    pub fn volume_names(&self, web: &Web) -> BTreeSet<String> {
        let doc = expect(web.get(&self.volumes_uri()), 200, "list volumes").json();
        doc.as_array()
            .unwrap_or_else(|| panic!("not a list: {doc}"))
            .iter()
            .map(|v| v["name"].as_str().expect("volume name").to_owned())
            .collect()
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        // A task may still work on a volume (libvirt then refuses to stop the pool):
        // keep trying for a while.
        let _ = poll(Duration::from_secs(60), || {
            manager_call("DeactivateStoragePool", "sa{sv}", &[&self.name, "0"]);
            let ran = manager_call("DeleteStoragePool", "sa{sv}", &[&self.name, "0"]);
            let gone = ran.ok || ran.stderr.contains("no storage pool named");
            gone.then_some(())
        });
        if virsh(&["pool-info", &self.name]).ok {
            let _ = virsh(&["pool-destroy", &self.name]);
            let _ = virsh(&["pool-undefine", &self.name]);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

// ---------------------------------------------------------------------------------
// Templates and VMs

/// Where the `default` pool keeps its volumes.
pub const DEFAULT_POOL_DIR: &str = "/var/lib/libvirt/images";

/// Template names a test may create; each is deleted (as root, over D-Bus) on drop,
/// whether or not it exists by then.
pub struct TemplateNames(pub Vec<String>);

impl TemplateNames {
    /// A guard holding one fresh name.
    pub fn one(what: &str) -> TemplateNames {
        TemplateNames(vec![unique_name(what)])
    }

    pub fn name(&self) -> &str {
        &self.0[0]
    }

    /// `/templates/<name>` (unique names need no percent-encoding).
    pub fn uri(&self) -> String {
        format!("/templates/{}", self.name())
    }

    /// Also deletes `name` on drop.
    pub fn add(&mut self, name: &str) {
        self.0.push(name.to_owned());
    }
}

impl Drop for TemplateNames {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = manager_call("DeleteTemplate", "sa{sv}", &[name, "0"]);
        }
    }
}

/// A VM a test creates (or may create), named in advance: on drop it is deleted
/// through kimchid, else destroyed and undefined with virsh, and its disk 0 (where
/// kimchid puts it: `<pool dir>/<name>-0.img`) removed.
pub struct VmCleanup {
    pub name: String,
    pub disk: PathBuf,
}

impl VmCleanup {
    /// A VM whose disk goes to the pool at `dir`.
    pub fn in_dir(name: &str, dir: &Path) -> VmCleanup {
        VmCleanup {
            name: name.to_owned(),
            disk: dir.join(format!("{name}-0.img")),
        }
    }

    /// A VM with a fresh name in the `default` pool.
    pub fn fresh(what: &str) -> VmCleanup {
        VmCleanup::in_dir(&unique_name(what), Path::new(DEFAULT_POOL_DIR))
    }

    /// `/vms/<name>`.
    pub fn uri(&self) -> String {
        format!("/vms/{}", self.name)
    }
}

impl Drop for VmCleanup {
    fn drop(&mut self) {
        let _ = manager_call("DeleteVM", "sa{sv}", &[&self.name, "0"]);
        if virsh(&["dominfo", &self.name]).ok {
            let _ = virsh(&["destroy", &self.name]);
            let _ = virsh(&["undefine", &self.name]);
        }
        let _ = std::fs::remove_file(&self.disk);
    }
}

/// A shut-off VM created from a template over REST: 128 MiB, one 1 GB virtio disk
/// kimchid made (`<name>-0.img` in the default pool), a generated ISO on an IDE
/// CD-ROM (`hdc`) and a NIC on `default`. VM, template and ISO removed on drop.
pub struct TemplateVm {
    pub vm: VmCleanup,
    _template: TemplateNames,
    /// A scratch directory of its own, with the ISO.
    pub dir: PathBuf,
    pub iso: PathBuf,
}

impl TemplateVm {
    #[track_caller]
    pub fn create(web: &Web, what: &str) -> TemplateVm {
        let template = TemplateNames::one(what);
        let dir = scratch_dir(what);
        let vm = VmCleanup::fresh(what);
        let iso = dir.join("install.iso");
        write_iso(UBUNTU_VOLUME_ID, true, &iso);
        let body = json!({
            "name": template.name(), "cdrom": iso, "memory": 128, "disks": [{"size": 1}]
        });
        expect(web.post("/templates", &body), 201, "create the template");
        let body = json!({"name": vm.name, "template": template.uri()});
        expect(web.post("/vms", &body), 201, "create the VM");
        TemplateVm {
            vm,
            _template: template,
            dir,
            iso,
        }
    }

    pub fn name(&self) -> &str {
        &self.vm.name
    }
}

impl Drop for TemplateVm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------
// Virtual networks

/// Virtual network names a test may create (a rename adds the new one): on drop each
/// is stopped and undefined with virsh, whether or not it exists by then.
pub struct TestNetwork {
    pub names: Vec<String>,
}

impl TestNetwork {
    /// A guard holding one fresh name; nothing is defined yet.
    pub fn planned(what: &str) -> TestNetwork {
        TestNetwork {
            names: vec![unique_name(what)],
        }
    }

    /// A guard for a name chosen by the test (one a refusal must not define).
    pub fn named(name: &str) -> TestNetwork {
        TestNetwork {
            names: vec![name.to_owned()],
        }
    }

    pub fn name(&self) -> &str {
        &self.names[0]
    }

    /// `/networks/<name>` (unique names need no percent-encoding).
    pub fn uri(&self) -> String {
        format!("/networks/{}", self.name())
    }

    /// Also removes `name` on drop.
    pub fn add(&mut self, name: &str) {
        self.names.push(name.to_owned());
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = virsh(&["net-destroy", name]);
            let _ = virsh(&["net-undefine", name]);
        }
    }
}

// ---------------------------------------------------------------------------------
// The host

/// `qemu-img info --output=json` of `path`.
#[track_caller]
pub fn qemu_img_info(path: &Path) -> Value {
    let ran = run(Command::new("qemu-img")
        .args(["info", "--output=json", "--force-share"])
        .arg(path))
    .expect_ok();
    serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("qemu-img printed no JSON ({e}): {}", ran.stdout))
}

/// What `qemu-img` says of the image: its format and virtual size in bytes.
#[track_caller]
pub fn image_format_and_size(path: &Path) -> (String, u64) {
    let info = qemu_img_info(path);
    (
        info["format"].as_str().expect("format").to_owned(),
        info["virtual-size"].as_u64().expect("virtual-size"),
    )
}

/// Makes every byte of the file allocated on disk (as a written image is), so that
/// wiping it really writes, and takes a while.
pub fn allocate_fully(path: &Path, bytes: u64) {
    run(Command::new("fallocate")
        .args(["-l", &bytes.to_string()])
        .arg(path))
    .expect_ok();
}

/// statvfs of `path`, in MiB: (size of the file system, blocks free).
///
/// libvirt, and Kimchi after it, report a dir pool's capacity as `f_blocks` and its
/// available space as `f_bfree` (free blocks, reserved ones included: libvirt and
/// kimchid write as root), not `f_bavail`.
pub fn fs_space_mib(path: &Path) -> (u64, u64) {
    let st = nix::sys::statvfs::statvfs(path).expect("statvfs");
    let frag = st.fragment_size() as u64;
    (
        st.blocks() as u64 * frag / MIB,
        st.blocks_free() as u64 * frag / MIB,
    )
}

/// The names in a directory.
pub fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// A file's size and content.
pub fn snapshot(path: &Path) -> (u64, Vec<u8>) {
    let content = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    (content.len() as u64, content)
}

// ---------------------------------------------------------------------------------
// The bus, as root

/// The object path in busctl's `o "/org/…"` reply.
#[track_caller]
pub fn object_path_reply(ran: &Ran) -> String {
    let out = ran.stdout.trim();
    out.strip_prefix("o ")
        .map(|p| p.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no object path in busctl's reply {out:?}"))
}

pub async fn manager(conn: &zbus::Connection) -> ManagerProxy<'static> {
    ManagerProxy::new(conn).await.expect("Manager proxy")
}

/// The options of a root call that asks for nothing special.
pub fn no_options() -> HashMap<String, OwnedVariant> {
    HashMap::new()
}

// ---------------------------------------------------------------------------------
// A domain's definition, as libvirt keeps it

/// The domain's XML (`virsh dumpxml`): the stored definition with `inactive`, else
/// what runs.
#[track_caller]
pub fn dumpxml(name: &str, inactive: bool) -> String {
    let mut args = vec!["dumpxml", name];
    if inactive {
        args.push("--inactive");
    }
    virsh(&args).expect_ok().stdout
}

/// What a domain's XML says of the fields a VM edit changes.
#[derive(Debug, PartialEq)]
pub struct Definition {
    /// The vCPUs the guest has (`<vcpu current=…>`, else the maximum).
    pub vcpus: u32,
    pub memory_mib: u64,
    pub current_memory_mib: Option<u64>,
    pub title: Option<String>,
    pub description: Option<String>,
}

/// Reads [`Definition`] from a domain's XML.
#[track_caller]
pub fn definition(xml: &str) -> Definition {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("bad XML ({e}): {xml}"));
    let root = doc.root_element();
    let child = |tag: &str| root.children().find(|n| n.has_tag_name(tag));
    let text = |tag: &str| child(tag).map(|n| n.text().unwrap_or_default().to_owned());
    let vcpu = child("vcpu").unwrap_or_else(|| panic!("no <vcpu>: {xml}"));
    let vcpus = vcpu
        .attribute("current")
        .or(vcpu.text())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("unreadable <vcpu>: {xml}"));
    let mib = |tag: &str| {
        child(tag).map(|n| {
            let value: u64 = n.text().unwrap_or_default().trim().parse().expect("a size");
            match n.attribute("unit").unwrap_or("KiB") {
                "b" | "bytes" => value / MIB,
                "k" | "KiB" => value / 1024,
                "M" | "MiB" => value,
                "G" | "GiB" => value * 1024,
                other => panic!("unit {other} of <{tag}>: {xml}"),
            }
        })
    };
    Definition {
        vcpus,
        memory_mib: mib("memory").unwrap_or_else(|| panic!("no <memory>: {xml}")),
        current_memory_mib: mib("currentMemory"),
        title: text("title"),
        description: text("description"),
    }
}

/// A directory of [`kimchi_tests::scratch_dir`] (QEMU can read it), removed with all
/// it holds on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(what: &str) -> ScratchDir {
        ScratchDir(kimchi_tests::scratch_dir(what))
    }

    /// `name` in the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
