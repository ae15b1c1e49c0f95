//! VMs and templates driven over D-Bus the way busctl users and desktop tools do:
//! `busctl` for the whole life of a VM (template, create, start, screenshot, stop,
//! delete), zbus proxies where busctl cannot go (the console's file descriptor) or
//! where the error's name matters, and `setpriv` for callers who are not root.
//!
//! The guests are small (128 MiB, one 1 GB qcow2 disk, booting a 4 KiB image of
//! zeros from a generated ISO) and at most [`MAX_RUNNING`] of this binary's run at
//! once; every VM and template is deleted on drop, with virsh as a fallback.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use common::{manager, no_options, object_path_reply};
use kimchi_dbus::{
    template_path, vm_path, CallOptions, TaskInfo, TaskState, VmProxy, VmState, BUS_NAME,
    MANAGER_INTERFACE, MANAGER_PATH, TASK_INTERFACE, TEMPLATE_INTERFACE, VM_INTERFACE,
};
use kimchi_tests::{
    busctl, ensure_test_users, manager_call, manager_json, poll, run, scratch_dir, system_bus,
    task_from_busctl, unique_name, virsh, vm_property, write_iso, Ran, TestUser, DATA_VOLUME_ID,
    OUTSIDER, READER, UBUNTU_VOLUME_ID,
};
use serde_json::{json, Value};
use zbus::{DBusError, OwnedVariant, Variant};

/// The default storage pool's directory, where new VMs' disks go.
const IMAGES: &str = "/var/lib/libvirt/images";
/// Guests of this binary that may run at the same time.
const MAX_RUNNING: usize = 2;
/// The memory every template here gives its VMs, MiB.
const MEMORY_MIB: u64 = 128;
/// The first bytes of every PNG file.
const PNG_MAGIC: [u8; 8] = [137, 80, 78, 71, 13, 10, 26, 10];

// ---------------------------------------------------------------------------------
// busctl

/// `busctl --system --json=short <args>`; the reply's `data`, asserting success.
#[track_caller]
fn busctl_json(args: &[&str]) -> Value {
    let mut argv = vec!["--json=short"];
    argv.extend_from_slice(args);
    let ran = busctl(&argv);
    assert!(ran.ok, "busctl {args:?} failed: {}", ran.stderr);
    let reply: Value = serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("busctl {args:?} printed no JSON ({e}): {}", ran.stdout));
    reply["data"].clone()
}

/// A property as `busctl get-property` prints it, e.g. `s "finished"`.
#[track_caller]
fn property(path: &str, interface: &str, name: &str) -> String {
    busctl(&["get-property", BUS_NAME, path, interface, name])
        .expect_ok()
        .stdout
        .trim()
        .to_owned()
}

/// `GetAll` of `interface` on `path` through busctl: name → {"type", "data"}.
#[track_caller]
fn all_properties(path: &str, interface: &str) -> serde_json::Map<String, Value> {
    let data = busctl_json(&[
        "call",
        BUS_NAME,
        path,
        "org.freedesktop.DBus.Properties",
        "GetAll",
        "s",
        interface,
    ]);
    data[0]
        .as_object()
        .unwrap_or_else(|| panic!("GetAll {interface} on {path}: no dictionary in {data}"))
        .clone()
}

/// The options `kimchi.wait: true`, as a zbus caller sends them.
fn wait_options() -> HashMap<String, OwnedVariant> {
    CallOptions {
        wait: true,
        ..CallOptions::default()
    }
    .to_dict()
}

/// Asserts that a call failed with `org.kimchi.Kimchi1.Error.<name>`; returns the
/// error's sentence.
#[track_caller]
fn assert_bus_error<T: Debug>(result: Result<T, kimchi_dbus::Error>, name: &str) -> String {
    let wanted = format!("org.kimchi.Kimchi1.Error.{name}");
    match result {
        Ok(reply) => panic!("expected {wanted}, got the reply {reply:?}"),
        Err(e) => {
            assert_eq!(e.name().as_str(), wanted, "{e:?}");
            e.description().unwrap_or_default().to_owned()
        }
    }
}

// ---------------------------------------------------------------------------------
// Throwaway templates and VMs

/// A template created with busctl: 1 CPU, [`MEMORY_MIB`], one 1 GB disk at index 0 and
/// a bootable generated ISO as cdrom (in a scratch directory QEMU can read). Deleted,
/// with the directory, on drop.
struct BusTemplate {
    name: String,
    dir: PathBuf,
    iso: PathBuf,
}

impl BusTemplate {
    /// Creates the template and returns it with the `CreateTemplate` reply's data
    /// (`[path, spec, disk_bus, nic_model]`).
    #[track_caller]
    fn create(what: &str, volume_id: &str, folder: &[&str], icon: &str) -> (BusTemplate, Value) {
        let dir = scratch_dir(what);
        let template = BusTemplate {
            name: unique_name(what),
            iso: dir.join("boot.iso"),
            dir,
        };
        write_iso(volume_id, true, &template.iso);
        let iso = template
            .iso
            .to_str()
            .expect("utf-8 scratch path")
            .to_owned();
        let folder_len = folder.len().to_string();
        // (sassssutsa(uts)): name, folder, icon, os_distro, os_version (both empty: the
        // ISO says), cpus, memory, cdrom, disks; then no options.
        let mut args = vec![template.name.as_str(), folder_len.as_str()];
        args.extend_from_slice(folder);
        args.extend_from_slice(&[
            icon,
            "",
            "",
            "1",
            "128",
            iso.as_str(),
            "1",
            "0",
            "1",
            "",
            "0",
        ]);
        let reply = manager_json("CreateTemplate", "(sassssutsa(uts))a{sv}", &args);
        (template, reply)
    }
}

impl Drop for BusTemplate {
    fn drop(&mut self) {
        let _ = manager_call("DeleteTemplate", "sa{sv}", &[&self.name, "0"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A VM name the test owns: deleted on drop through kimchid (which stops it and
/// removes its disks), else with virsh, and any `<name>-<n>.img` left in the default
/// pool removed.
struct BusVm {
    name: String,
}

impl BusVm {
    fn named(name: impl Into<String>) -> BusVm {
        BusVm { name: name.into() }
    }

    /// Where kimchid puts the VM's disk `index` in the default pool.
    fn disk(&self, index: u32) -> PathBuf {
        Path::new(IMAGES).join(format!("{}-{index}.img", self.name))
    }
}

impl Drop for BusVm {
    fn drop(&mut self) {
        let deleted = manager_call("DeleteVM", "sa{sv}", &[&self.name, "0"]);
        if !deleted.ok && virsh(&["dominfo", &self.name]).ok {
            let _ = virsh(&["destroy", &self.name]);
            let _ = virsh(&["undefine", &self.name]);
        }
        let prefix = format!("{}-", self.name);
        if let Ok(entries) = std::fs::read_dir(IMAGES) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                let index = file
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix(".img"));
                if index.is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit())) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// `CreateVM(template, name, "", {kimchi.wait: true})` with busctl; asserts that the
/// task it returns (as it was when the call returned) has finished, and returns it.
#[track_caller]
fn create_vm(template: &str, name: &str) -> TaskInfo {
    let task = task_from_busctl(&manager_json(
        "CreateVM",
        "sssa{sv}",
        &[template, name, "", "1", kimchi_dbus::OPT_WAIT, "b", "true"],
    ));
    assert_eq!(
        task.path.as_str(),
        kimchi_dbus::task_path(task.id),
        "{task:?}"
    );
    assert_eq!(
        task.state,
        TaskState::Finished,
        "CreateVM {name:?}: task {task:?}"
    );
    task
}

/// The right to run a guest: at most [`MAX_RUNNING`] tests of this binary hold one at
/// a time. Taken before the VM guard is made, so it is given back after the VM is
/// deleted.
struct RunSlot;

static RUNNING: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

impl RunSlot {
    fn take() -> RunSlot {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= MAX_RUNNING {
            running = SLOT_FREED.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        RunSlot
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        SLOT_FREED.notify_one();
    }
}

// ---------------------------------------------------------------------------------
// 1. The whole life of a VM with busctl

#[tokio::test(flavor = "multi_thread")]
async fn busctl_creates_starts_screenshots_stops_and_deletes_a_vm() {
    let _slot = RunSlot::take();
    let (template, reply) = BusTemplate::create("vmbus-flow", DATA_VOLUME_ID, &[], "");
    assert_eq!(reply[0], template_path(&template.name), "{reply}");
    let vm = BusVm::named(unique_name("vmbus-flow-vm"));

    // Create, waiting for the task: the reply is the finished task, for this VM, and
    // the Task object says the same.
    let task = create_vm(&template.name, &vm.name);
    assert_eq!(task.target_uri, format!("/vms/{}", vm.name), "{task:?}");
    assert_eq!(task.operation, "vm.create", "{task:?}");
    let task_path = task.path.as_str();
    assert_eq!(
        property(task_path, TASK_INTERFACE, "TargetUri"),
        format!("s \"/vms/{}\"", vm.name)
    );
    assert_eq!(
        property(task_path, TASK_INTERFACE, "Operation"),
        r#"s "vm.create""#
    );
    assert_eq!(
        property(task_path, TASK_INTERFACE, "State"),
        r#"s "finished""#
    );
    assert!(vm.disk(0).exists(), "no disk {}", vm.disk(0).display());

    // LookupVM gives /org/kimchi/Kimchi1/vm/_<uuid with _>; the VM is shut off.
    let path = object_path_reply(&manager_call("LookupVM", "sa{sv}", &[&vm.name, "0"]).expect_ok());
    let uuid_prop = vm_property(&path, "UUID");
    let uuid = uuid_prop
        .strip_prefix("s \"")
        .and_then(|u| u.strip_suffix('"'))
        .unwrap_or_else(|| panic!("UUID property {uuid_prop:?}"));
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(path, vm_path(uuid));
    assert!(path.starts_with("/org/kimchi/Kimchi1/vm/_"), "{path}");
    assert_eq!(vm_property(&path, "Name"), format!("s \"{}\"", vm.name));
    assert_eq!(vm_property(&path, "State"), r#"s "shutoff""#);

    // StartVM answers with the VmInfo of the running VM, which busctl prints as its
    // fields (ossstss(ddddd)).
    let started = manager_json("StartVM", "sa{sv}", &[&vm.name, "0"]);
    let info = &started;
    assert_eq!(info[0], path.as_str(), "{started}");
    assert_eq!(info[1], vm.name.as_str(), "{started}");
    assert_eq!(info[2], uuid, "{started}");
    assert_eq!(info[3], "running", "{started}");
    assert_eq!(info[4], MEMORY_MIB, "{started}");
    assert_eq!(info[5], "vnc", "{started}");
    assert_eq!(vm_property(&path, "State"), r#"s "running""#);

    // busctl prints the screenshot as `ay <length> <byte> <byte> …`: a PNG.
    let mut last = String::new();
    let shot = poll(Duration::from_secs(15), || {
        let ran = manager_call("GetVMScreenshot", "sa{sv}", &[&vm.name, "0"]);
        last = format!("{}{}", ran.stdout, ran.stderr);
        ran.ok.then_some(ran.stdout)
    })
    .unwrap_or_else(|| panic!("GetVMScreenshot kept failing: {last}"));
    let words: Vec<&str> = shot.split_whitespace().collect();
    assert_eq!(
        words.first(),
        Some(&"ay"),
        "{}",
        &shot[..shot.len().min(200)]
    );
    let length: usize = words[1].parse().expect("array length");
    let bytes: Vec<u8> = words[2..]
        .iter()
        .map(|w| w.parse().expect("a byte"))
        .collect();
    assert_eq!(bytes.len(), length);
    assert!(length > PNG_MAGIC.len(), "{length} bytes");
    assert_eq!(bytes[..8], PNG_MAGIC, "{:?}", &bytes[..8]);

    // The same picture through a zbus proxy, as a desktop tool gets it.
    let conn = system_bus().await;
    let manager = manager(&conn).await;
    let png = manager
        .get_vm_screenshot(&vm.name, no_options())
        .await
        .expect("GetVMScreenshot through zbus");
    assert_eq!(png[..8], PNG_MAGIC);

    // StopVM: shut off, in the reply and on the object.
    let stopped = manager_json("StopVM", "sa{sv}", &[&vm.name, "0"]);
    assert_eq!(stopped[3], "shutoff", "{stopped}");
    assert_eq!(stopped[0], path.as_str(), "{stopped}");
    assert_eq!(vm_property(&path, "State"), r#"s "shutoff""#);

    // DeleteVM: the VM, its object and its disk are gone.
    manager_call("DeleteVM", "sa{sv}", &[&vm.name, "0"]).expect_ok();
    let err = assert_bus_error(manager.lookup_vm(&vm.name, no_options()).await, "NotFound");
    assert!(err.contains(&vm.name), "{err}");
    let ran = manager_call("LookupVM", "sa{sv}", &[&vm.name, "0"]);
    assert!(!ran.ok, "busctl LookupVM after DeleteVM: {}", ran.stdout);
    assert!(!vm.disk(0).exists(), "{} is left", vm.disk(0).display());
    assert!(
        !virsh(&["dominfo", &vm.name]).ok,
        "libvirt still has the VM"
    );
    let gone = poll(Duration::from_secs(5), || {
        let ran = busctl(&["get-property", BUS_NAME, &path, VM_INTERFACE, "Name"]);
        (!ran.ok).then_some(ran.stderr)
    });
    assert!(
        gone.as_deref()
            .is_some_and(|e| e.contains("Unknown object")),
        "the VM object is still exported: {gone:?}"
    );
}

// ---------------------------------------------------------------------------------
// 2. A generated name

#[tokio::test(flavor = "multi_thread")]
async fn create_vm_with_an_empty_name_picks_template_vm_n() {
    let (template, _) = BusTemplate::create("vmbus-gen", DATA_VOLUME_ID, &[], "");
    let first = BusVm::named(format!("{}-vm-1", template.name));
    let second = BusVm::named(format!("{}-vm-2", template.name));
    let conn = system_bus().await;
    let manager = manager(&conn).await;

    for vm in [&first, &second] {
        let returned = create_vm(&template.name, "");
        // The ended task is what GetTask says of it too.
        let task = manager
            .get_task(returned.id, no_options())
            .await
            .expect("GetTask");
        assert_eq!(task, returned);
        assert_eq!(task.operation, "vm.create", "{task:?}");
        assert_eq!(task.state, TaskState::Finished, "{task:?}");
        assert_eq!(task.target_uri, format!("/vms/{}", vm.name), "{task:?}");
        assert_eq!(task.progress, 1.0, "{task:?}");
        assert!(task.end_usec >= task.start_usec, "{task:?}");

        let path = manager
            .lookup_vm(&vm.name, no_options())
            .await
            .unwrap_or_else(|e| panic!("LookupVM {}: {e:?}", vm.name));
        let info = manager.get_vm(&vm.name, no_options()).await.expect("GetVM");
        assert_eq!(info.path, path);
        assert_eq!(info.name, vm.name);
        assert_eq!(info.state, VmState::Shutoff);
        assert_eq!(info.memory_mib, MEMORY_MIB);
        assert!(vm.disk(0).exists(), "no disk {}", vm.disk(0).display());
    }
}

// ---------------------------------------------------------------------------------
// 3. The console socket

#[tokio::test(flavor = "multi_thread")]
async fn open_console_hands_out_a_socket_to_the_vnc_server() {
    let _slot = RunSlot::take();
    let (template, _) = BusTemplate::create("vmbus-console", DATA_VOLUME_ID, &[], "");
    let vm = BusVm::named(unique_name("vmbus-console-vm"));
    create_vm(&template.name, &vm.name);

    let conn = system_bus().await;
    let manager = manager(&conn).await;
    let info = manager.get_vm(&vm.name, no_options()).await.expect("GetVM");
    let proxy = VmProxy::builder(&conn)
        .path(info.path.clone())
        .build()
        .await
        .expect("VM proxy");

    // A shut-off VM has no screen to connect to.
    let why = assert_bus_error(proxy.open_console(no_options()).await, "InvalidState");
    assert!(why.contains(&vm.name), "{why}");

    manager
        .start_vm(&vm.name, no_options())
        .await
        .expect("StartVM");
    let fd: std::os::fd::OwnedFd = proxy
        .open_console(no_options())
        .await
        .expect("OpenConsole of a running VM")
        .into();
    let banner = tokio::task::spawn_blocking(move || {
        let mut socket = UnixStream::from(fd);
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut banner = [0u8; 12];
        socket.read_exact(&mut banner).map(|_| banner)
    })
    .await
    .expect("reader thread")
    .expect("read the RFB banner within 10 s");
    assert_eq!(
        &banner,
        b"RFB 003.008\n",
        "{:?}",
        String::from_utf8_lossy(&banner)
    );
}

// ---------------------------------------------------------------------------------
// 4. Errors, by name

#[tokio::test(flavor = "multi_thread")]
async fn refusals_carry_kimchi_error_names() {
    let _slot = RunSlot::take();
    let (template, _) = BusTemplate::create("vmbus-errors", DATA_VOLUME_ID, &[], "");
    let vm = BusVm::named(unique_name("vmbus-errors-vm"));
    create_vm(&template.name, &vm.name);
    let conn = system_bus().await;
    let manager = manager(&conn).await;

    // Shut off: nothing to stop, no screen.
    let why = assert_bus_error(
        manager.stop_vm(&vm.name, no_options()).await,
        "InvalidState",
    );
    assert!(why.contains("not running"), "{why}");
    assert_bus_error(
        manager.get_vm_screenshot(&vm.name, no_options()).await,
        "NotFound",
    );

    // Running: cannot be started again.
    let started = manager
        .start_vm(&vm.name, no_options())
        .await
        .expect("StartVM");
    assert_eq!(started.state, VmState::Running);
    let why = assert_bus_error(
        manager.start_vm(&vm.name, no_options()).await,
        "InvalidState",
    );
    assert!(why.contains("already running"), "{why}");
    let stopped = manager
        .stop_vm(&vm.name, no_options())
        .await
        .expect("StopVM");
    assert_eq!(stopped.state, VmState::Shutoff);
    assert_bus_error(
        manager.stop_vm(&vm.name, no_options()).await,
        "InvalidState",
    );

    // CreateVM refusals; none of them leaves a VM or a disk behind.
    let unknown = unique_name("vmbus-no-template");
    let nameless = BusVm::named(unique_name("vmbus-errors-unknown"));
    let why = assert_bus_error(
        manager
            .create_vm(&unknown, &nameless.name, "", wait_options())
            .await,
        "NotFound",
    );
    assert!(why.contains(&unknown), "{why}");

    let why = assert_bus_error(
        manager
            .create_vm(&template.name, &vm.name, "", wait_options())
            .await,
        "AlreadyExists",
    );
    assert!(why.contains(&vm.name), "{why}");

    let markup = BusVm::named(format!("{}<b>", unique_name("vmbus-errors")));
    let why = assert_bus_error(
        manager
            .create_vm(&template.name, &markup.name, "", wait_options())
            .await,
        "InvalidArgument",
    );
    assert!(why.contains('<'), "{why}");

    let bogus = BusVm::named(unique_name("vmbus-errors-bogus"));
    let mut options = wait_options();
    options.insert(
        "kimchi.bogus".into(),
        OwnedVariant::try_from(Variant::from(true)).unwrap(),
    );
    let why = assert_bus_error(
        manager
            .create_vm(&template.name, &bogus.name, "", options)
            .await,
        "InvalidArgument",
    );
    assert!(why.contains("kimchi.bogus"), "{why}");

    for refused in [&nameless, &markup, &bogus] {
        assert_bus_error(
            manager.lookup_vm(&refused.name, no_options()).await,
            "NotFound",
        );
        assert!(
            !refused.disk(0).exists(),
            "{} was created",
            refused.disk(0).display()
        );
    }
}

// ---------------------------------------------------------------------------------
// 5. Direct callers who are not root

/// `setpriv` as `user` (its own uid and gid; supplementary groups: its real ones with
/// `init_groups`, none otherwise) running `program args…`.
fn as_user(user: TestUser, init_groups: bool, program: &[&str]) -> Command {
    let account = nix::unistd::User::from_name(user.name)
        .expect("read the user database")
        .unwrap_or_else(|| panic!("no user {}", user.name));
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", account.uid))
        .arg(format!("--regid={}", account.gid))
        .arg(if init_groups {
            "--init-groups"
        } else {
            "--clear-groups"
        })
        .args(program);
    cmd
}

/// `busctl --system call` on the Manager as `user`, asking polkit not to interact.
fn user_busctl(user: TestUser, init_groups: bool, method: &str, args: &[&str]) -> Ran {
    let mut argv = vec![
        "busctl",
        "--system",
        "call",
        BUS_NAME,
        MANAGER_PATH,
        MANAGER_INTERFACE,
        method,
    ];
    argv.extend_from_slice(args);
    run(&mut as_user(user, init_groups, &argv))
}

/// The same call with gdbus, which prints the D-Bus error's name (busctl prints only
/// the errno text for the bus's own errors).
fn user_gdbus(user: TestUser, init_groups: bool, method: &str, args: &[&str]) -> Ran {
    let member = format!("{MANAGER_INTERFACE}.{method}");
    let mut argv = vec![
        "gdbus",
        "call",
        "--system",
        "--dest",
        BUS_NAME,
        "--object-path",
        MANAGER_PATH,
        "--method",
        &member,
    ];
    argv.extend_from_slice(args);
    run(&mut as_user(user, init_groups, &argv))
}

/// What polkit itself answers for a process of `user` (not in any login session,
/// like a test's child) about `action`: pkcheck's exit code, 0 authorized,
/// 1 not authorized, 2 authentication required (a challenge).
fn pkcheck_as_seen_for(user: TestUser, init_groups: bool, action: &str) -> i32 {
    struct Reaped(Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // setpriv execs sleep: the child's pid is the subject's.
    let subject = Reaped(
        as_user(user, init_groups, &["sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start a process as the user"),
    );
    // The subject must have dropped to the user's uid before polkit looks at it.
    let status = format!("/proc/{}/status", subject.0.id());
    poll(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&status).ok()?;
        text.lines()
            .any(|l| l.starts_with("Uid:") && !l.contains("\t0\t"))
            .then_some(())
    })
    .expect("the subject process runs as the user");
    let out = Command::new("pkcheck")
        .args(["--action-id", action, "--process"])
        .arg(subject.0.id().to_string())
        .output()
        .expect("run pkcheck");
    out.status.code().expect("pkcheck exit code")
}

/// A direct caller (busctl, a desktop tool) that is neither root nor the gateway user.
///
/// What the shipped configuration implies, layer by layer:
/// - The bus policy (`dbus/org.kimchi.Kimchi1.conf`, installed unchanged) lets only
///   root and `_kimchi-gw` send method calls to kimchid. Everybody else — members of
///   kimchi-users and kimchi-admin included, until an administrator drops the
///   documented `/etc/dbus-1/system.d/org.kimchi.Kimchi1-local.conf` — is refused by
///   the bus with `org.freedesktop.DBus.Error.AccessDenied`: kimchid never sees the
///   call, so it cannot answer `org.kimchi.Kimchi1.Error.NotAuthorized`.
/// - The rule `polkit/rules.d/50-kimchi-gateway.rules` judges only the subject
///   `_kimchi-gw` (web users); it returns nothing for direct callers.
/// - So `polkit/org.kimchi.policy`'s defaults would judge a direct caller the bus let
///   through: `org.kimchi.read` is `yes` for anyone, every change `auth_admin`
///   (a challenge, which kimchid turns into NotAuthorized when no agent answers).
///
/// Changing the bus policy would reconfigure the shared bus, so the last layer is
/// checked with pkcheck on a process of the same user instead.
#[test]
fn callers_outside_the_bus_policy_are_refused_by_the_bus_before_polkit() {
    ensure_test_users();
    let (template, _) = BusTemplate::create("vmbus-polkit", DATA_VOLUME_ID, &[], "");
    let vm = BusVm::named(unique_name("vmbus-polkit-vm"));
    create_vm(&template.name, &vm.name);
    let path = object_path_reply(&manager_call("LookupVM", "sa{sv}", &[&vm.name, "0"]).expect_ok());
    let no_interaction = [kimchi_dbus::OPT_NO_USER_INTERACTION, "b", "true"];

    // OUTSIDER (no kimchi group, supplementary groups cleared) and READER (with its
    // kimchi-users membership): StartVM and ListVMs are both refused by the bus.
    for (user, init_groups) in [(OUTSIDER, false), (READER, true)] {
        let mut start = vec!["sa{sv}", vm.name.as_str(), "1"];
        start.extend_from_slice(&no_interaction);
        let mut list = vec!["a{sv}", "1"];
        list.extend_from_slice(&no_interaction);
        for (method, args) in [("StartVM", &start), ("ListVMs", &list)] {
            let ran = user_busctl(user, init_groups, method, args);
            assert!(
                !ran.ok,
                "{} may call {method} directly: {}",
                user.name, ran.stdout
            );
            // busctl shows the bus's AccessDenied as the errno text; kimchid's own
            // refusal would carry its sentence ("… is not allowed to perform …").
            assert!(
                ran.stderr.contains("Access denied"),
                "{} {method}: {}",
                user.name,
                ran.stderr
            );
            assert!(
                !ran.stderr.contains("not allowed to perform"),
                "{}",
                ran.stderr
            );
        }

        let gdbus = user_gdbus(
            user,
            init_groups,
            "StartVM",
            &[&vm.name, "{'auth.no_user_interaction': <true>}"],
        );
        assert!(!gdbus.ok, "{}", gdbus.stdout);
        assert!(
            gdbus
                .stderr
                .contains("org.freedesktop.DBus.Error.AccessDenied"),
            "{} StartVM through gdbus: {}",
            user.name,
            gdbus.stderr
        );
        assert!(
            !gdbus.stderr.contains("org.kimchi.Kimchi1.Error"),
            "{}",
            gdbus.stderr
        );

        // polkit's own verdict for such a caller, should the bus let it through:
        // reading is allowed to anyone, starting a VM needs an administrator.
        assert_eq!(
            pkcheck_as_seen_for(user, init_groups, "org.kimchi.read"),
            0,
            "{}: org.kimchi.read",
            user.name
        );
        assert_eq!(
            pkcheck_as_seen_for(user, init_groups, "org.kimchi.vm.lifecycle"),
            2,
            "{}: org.kimchi.vm.lifecycle",
            user.name
        );
    }

    // The VM did not start.
    assert_eq!(vm_property(&path, "State"), r#"s "shutoff""#);
    let state = virsh(&["domstate", &vm.name]).expect_ok();
    assert_eq!(state.stdout.trim(), "shut off");

    // Root, on the same bus, with the same options, is authorized.
    let mut list = vec!["a{sv}", "1"];
    list.extend_from_slice(&no_interaction);
    manager_call("ListVMs", list[0], &list[1..]).expect_ok();
}

// ---------------------------------------------------------------------------------
// 6. The VM object's properties

#[tokio::test(flavor = "multi_thread")]
async fn running_vm_object_shows_its_properties_and_console_method() {
    let _slot = RunSlot::take();
    let icon = "images/icon-vmbus.png";
    let (template, _) = BusTemplate::create("vmbus-props", DATA_VOLUME_ID, &[], icon);
    let vm = BusVm::named(unique_name("vmbus-props-vm"));
    create_vm(&template.name, &vm.name);
    let started = manager_json("StartVM", "sa{sv}", &[&vm.name, "0"]);
    let path = started[0]
        .as_str()
        .unwrap_or_else(|| panic!("no path in {started}"))
        .to_owned();
    let uuid = started[2].as_str().expect("uuid").to_owned();
    assert_eq!(path, vm_path(&uuid));

    let props = all_properties(&path, VM_INTERFACE);
    let names: BTreeSet<&str> = props.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "Autostart",
            "CPUs",
            "Description",
            "GraphicsType",
            "Icon",
            "Memory",
            "Name",
            "PendingChanges",
            "State",
            "Stats",
            "Title",
            "UUID"
        ]),
        "{props:?}"
    );
    assert_eq!(props["Autostart"], json!({"type": "b", "data": false}));
    assert_eq!(props["CPUs"]["type"], "u", "{}", props["CPUs"]);
    assert_eq!(props["Title"], json!({"type": "s", "data": ""}));
    assert_eq!(props["Description"], json!({"type": "s", "data": ""}));
    assert_eq!(props["PendingChanges"], json!({"type": "b", "data": false}));
    assert_eq!(props["Name"], json!({"type": "s", "data": vm.name}));
    assert_eq!(props["UUID"], json!({"type": "s", "data": uuid}));
    assert_eq!(props["State"], json!({"type": "s", "data": "running"}));
    assert_eq!(props["Memory"], json!({"type": "t", "data": MEMORY_MIB}));
    assert_eq!(props["GraphicsType"], json!({"type": "s", "data": "vnc"}));
    assert_eq!(props["Icon"], json!({"type": "s", "data": icon}));
    assert_eq!(props["Stats"]["type"], "(ddddd)", "{}", props["Stats"]);
    let stats: Vec<f64> = props["Stats"]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("Stats {}", props["Stats"]))
        .iter()
        .map(|v| v.as_f64().expect("a double"))
        .collect();
    assert_eq!(stats.len(), 5, "{stats:?}");
    assert!((0.0..=100.0).contains(&stats[0]), "cpu {stats:?}");
    assert!(stats[1] >= 0.0 && stats[3] >= 0.0, "{stats:?}");
    assert!(stats[2] >= 100.0 && stats[4] >= 100.0, "peaks {stats:?}");

    // ListVMs has the same VM with the same values.
    let manager = manager(&system_bus().await).await;
    let vms = manager.list_vms(no_options()).await.expect("ListVMs");
    let listed = vms
        .iter()
        .find(|v| v.name == vm.name)
        .unwrap_or_else(|| panic!("{} not in ListVMs", vm.name));
    assert_eq!(listed.path.as_str(), path);
    assert_eq!(listed.uuid, uuid);
    assert_eq!(listed.state, VmState::Running);
    assert_eq!(listed.memory_mib, MEMORY_MIB);
    assert_eq!(listed.graphics_type, "vnc");
    assert_eq!(listed.icon, icon);
    assert!(
        (0.0..=100.0).contains(&listed.stats.cpu_utilization)
            && listed.stats.net_throughput_peak >= 100.0
            && listed.stats.io_throughput_peak >= 100.0,
        "{:?}",
        listed.stats
    );

    // busctl introspect lists OpenConsole(a{sv}) → h.
    let introspected = busctl(&["introspect", BUS_NAME, &path]).expect_ok().stdout;
    let console = introspected
        .lines()
        .find(|l| l.starts_with(".OpenConsole "))
        .unwrap_or_else(|| panic!("no OpenConsole in:\n{introspected}"));
    let columns: Vec<&str> = console.split_whitespace().collect();
    assert_eq!(
        columns[..4],
        [".OpenConsole", "method", "a{sv}", "h"],
        "{console}"
    );
    assert!(
        introspected
            .lines()
            .any(|l| l.starts_with(VM_INTERFACE) && l.contains("interface")),
        "{introspected}"
    );
}

// ---------------------------------------------------------------------------------
// 7. Template objects

#[tokio::test(flavor = "multi_thread")]
async fn template_objects_come_and_go_with_their_templates() {
    let (template, reply) = BusTemplate::create(
        "vmbus-tpl",
        UBUNTU_VOLUME_ID,
        &["lab", "small"],
        "images/icon-ubuntu.png",
    );
    let path = template_path(&template.name);
    assert_eq!(reply[0], path.as_str(), "{reply}");
    // The reply's spec: what was asked, the OS from the ISO, devices for the OS.
    let iso = template.iso.to_str().unwrap();
    assert_eq!(
        reply[1],
        json!([
            template.name,
            ["lab", "small"],
            "images/icon-ubuntu.png",
            "ubuntu",
            "22.04",
            1,
            MEMORY_MIB,
            iso,
            [[0, 1, ""]]
        ]),
        "{reply}"
    );
    assert_eq!(reply[2], "virtio", "{reply}");
    assert_eq!(reply[3], "virtio", "{reply}");

    let looked_up = object_path_reply(
        &manager_call("LookupTemplate", "sa{sv}", &[&template.name, "0"]).expect_ok(),
    );
    assert_eq!(looked_up, path);

    // The object may be exported just after the reply: wait a little for it.
    let mut last = String::new();
    poll(Duration::from_secs(5), || {
        let ran = busctl(&["get-property", BUS_NAME, &path, TEMPLATE_INTERFACE, "Name"]);
        last = ran.stderr;
        ran.ok.then_some(())
    })
    .unwrap_or_else(|| panic!("no template object at {path}: {last}"));
    let props = all_properties(&path, TEMPLATE_INTERFACE);
    let expected = json!({
        "Name": {"type": "s", "data": template.name},
        "Folder": {"type": "as", "data": ["lab", "small"]},
        "Icon": {"type": "s", "data": "images/icon-ubuntu.png"},
        "OsDistro": {"type": "s", "data": "ubuntu"},
        "OsVersion": {"type": "s", "data": "22.04"},
        "Cpus": {"type": "u", "data": 1},
        "Memory": {"type": "t", "data": MEMORY_MIB},
        "Cdrom": {"type": "s", "data": iso},
        "Disks": {"type": "a(uts)", "data": [[0, 1, ""]]},
        "DiskBus": {"type": "s", "data": "virtio"},
        "NicModel": {"type": "s", "data": "virtio"},
    });
    assert_eq!(Value::Object(props), expected);
    assert_eq!(
        property(&path, TEMPLATE_INTERFACE, "Cpus"),
        "u 1",
        "get-property"
    );

    // DeleteTemplate: the object goes away, lookups fail with NotFound.
    manager_call("DeleteTemplate", "sa{sv}", &[&template.name, "0"]).expect_ok();
    let gone = poll(Duration::from_secs(5), || {
        let ran = busctl(&["get-property", BUS_NAME, &path, TEMPLATE_INTERFACE, "Name"]);
        (!ran.ok).then_some(ran.stderr)
    });
    assert!(
        gone.as_deref()
            .is_some_and(|e| e.contains(&format!("Unknown object '{path}'"))),
        "the template object is still exported: {gone:?}"
    );
    let manager = manager(&system_bus().await).await;
    assert_bus_error(
        manager.lookup_template(&template.name, no_options()).await,
        "NotFound",
    );
    let templates = manager
        .list_templates(no_options())
        .await
        .expect("ListTemplates");
    assert!(
        templates.iter().all(|t| t.spec.name != template.name),
        "{} still listed",
        template.name
    );
}
