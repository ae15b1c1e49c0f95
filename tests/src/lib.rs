//! Helpers shared by the end-to-end tests. The tests drive the real stack the way its
//! users do: `curl` against the gateway, `busctl` and zbus proxies against kimchid,
//! `virsh` to change VMs behind kimchi's back. Everything here runs as root.

pub mod daemons;
pub mod guest;
pub mod services;
pub mod systemd;
pub mod tls;
pub mod websocket;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A local account the tests log in as; created on first use.
#[derive(Debug, Clone, Copy)]
pub struct TestUser {
    pub name: &'static str,
    pub password: &'static str,
    /// Supplementary group, if any.
    pub group: Option<&'static str>,
}

/// Member of `kimchi-admin`: may do everything.
pub const ADMIN: TestUser = TestUser {
    name: "kimchi-t-admin",
    password: "Admin-t-pass-1",
    group: Some("kimchi-admin"),
};
/// Member of `kimchi-users`: may read.
pub const READER: TestUser = TestUser {
    name: "kimchi-t-reader",
    password: "Reader-t-pass-2",
    group: Some("kimchi-users"),
};
/// In no kimchi group: may log in, may not do anything.
pub const OUTSIDER: TestUser = TestUser {
    name: "kimchi-t-outsider",
    password: "Outsider-t-pass-3",
    group: None,
};

/// The volume id of Ubuntu Server 22.04.1's installation image, which osinfo-db knows.
pub const UBUNTU_VOLUME_ID: &str = "Ubuntu-Server 22.04.1 LTS amd64";
/// A volume id no OS has.
pub const DATA_VOLUME_ID: &str = "MY DATA";

/// Writes a small ISO 9660 image with `volume_id` to `iso` with xorriso; a bootable
/// one carries an El Torito entry (a 4 KiB no-emulation boot image of zeros).
pub fn write_iso(volume_id: &str, bootable: bool, iso: &Path) {
    let src = iso.with_extension("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("boot.img"), vec![0u8; 4096]).unwrap();
    let boot: &[&str] = if bootable {
        &["-b", "boot.img", "-no-emul-boot", "-boot-load-size", "4"]
    } else {
        &[]
    };
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-V", volume_id])
        .args(boot)
        .arg("-o")
        .arg(iso)
        .arg(&src))
    .expect_ok();
    std::fs::remove_dir_all(&src).unwrap();
}

/// A directory for test files that QEMU (user libvirt-qemu) can reach, created on
/// first use; each caller gets its own subdirectory.
pub fn scratch_dir(what: &str) -> PathBuf {
    let dir = Path::new("/var/lib/kimchi-tests").join(unique_name(what));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loop device over a sparse file of `size` (as `truncate -s` takes it), detached
/// and the file removed on drop.
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: String,
    image: PathBuf,
}

impl LoopDevice {
    pub fn new(what: &str, size: &str) -> LoopDevice {
        let image = std::env::temp_dir().join(format!("{}.img", unique_name(what)));
        run(Command::new("truncate").args(["-s", size]).arg(&image)).expect_ok();
        let path = run(Command::new("losetup").args(["-f", "--show"]).arg(&image))
            .expect_ok()
            .stdout
            .trim()
            .to_owned();
        LoopDevice { path, image }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = run(Command::new("losetup").args(["-d", &self.path]));
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Creates the groups and test users with their passwords, once per process. A file
/// lock serialises test binaries (and nextest's per-test processes) doing the same.
pub fn ensure_test_users() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let lock = std::fs::File::create("/run/lock/kimchi-tests-users.lock")
            .expect("create the user-creation lock file");
        lock.lock().expect("lock the user-creation lock file");
        for group in ["kimchi-admin", "kimchi-users"] {
            if !run(Command::new("getent").args(["group", group])).ok {
                run(Command::new("groupadd").args(["--system", group])).expect_ok();
            }
        }
        for user in [ADMIN, READER, OUTSIDER] {
            ensure_user(user);
        }
    });
}

/// Creates `user` (or adds it to its group) and sets its password.
pub fn ensure_user(user: TestUser) {
    if !run(Command::new("id").arg(user.name)).ok {
        let mut useradd = Command::new("useradd");
        useradd.arg("-m");
        if let Some(group) = user.group {
            useradd.args(["-G", group]);
        }
        run(useradd.arg(user.name)).expect_ok();
    } else if let Some(group) = user.group {
        run(Command::new("usermod").args(["-a", "-G", group, user.name])).expect_ok();
    }
    let line = format!("{}:{}\n", user.name, user.password);
    run_with_stdin(&mut Command::new("chpasswd"), line.as_bytes()).expect_ok();
}

/// A name no other test (or earlier run) uses: `kimchi-t-<what>-<pid>-<n>`.
pub fn unique_name(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("kimchi-t-{what}-{}-{n}", std::process::id())
}

/// Calls `f` until it returns `Some`, for at most `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------
// Processes

/// What a finished command said.
#[derive(Debug)]
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    #[track_caller]
    pub fn expect_ok(self) -> Ran {
        assert!(self.ok, "command failed: {}{}", self.stdout, self.stderr);
        self
    }
}

pub fn run(cmd: &mut Command) -> Ran {
    run_with_stdin(cmd, &[])
}

pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Ran {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // Written from a thread so a large body cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait for command");
    // The command may legitimately stop reading early (curl on a 413).
    let _ = writer.join();
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `busctl --system <args>`.
pub fn busctl(args: &[&str]) -> Ran {
    run(Command::new("busctl").arg("--system").args(args))
}

/// `busctl --system [flags] call` on kimchid's Manager; the whole outcome, for the
/// caller to judge.
pub fn manager_call_with(flags: &[&str], method: &str, signature: &str, args: &[&str]) -> Ran {
    let mut argv = flags.to_vec();
    argv.extend_from_slice(&[
        "call",
        kimchi_dbus::BUS_NAME,
        kimchi_dbus::MANAGER_PATH,
        kimchi_dbus::MANAGER_INTERFACE,
        method,
        signature,
    ]);
    argv.extend_from_slice(args);
    busctl(&argv)
}

pub fn manager_call(method: &str, signature: &str, args: &[&str]) -> Ran {
    manager_call_with(&[], method, signature, args)
}

/// `busctl --system --json=short [flags] call` on kimchid's Manager; the reply's
/// `data` (its arguments), asserting success.
#[track_caller]
pub fn manager_json(method: &str, signature: &str, args: &[&str]) -> Value {
    let ran = manager_call_with(&["--json=short"], method, signature, args);
    assert!(ran.ok, "{method} {args:?} failed: {}", ran.stderr);
    let reply: Value = serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("{method}: busctl printed no JSON ({e}): {}", ran.stdout));
    reply["data"].clone()
}

/// The `TaskInfo` `(oussssdtt)` a task-starting method (`CreateVM`,
/// `Create`/`Resize`/`WipeStorageVolume`) replied, from busctl's JSON `data`: the
/// struct's fields as the reply's arguments (as zbus sends a struct), or the struct
/// as the one argument.
#[track_caller]
pub fn task_from_busctl(data: &Value) -> kimchi_dbus::TaskInfo {
    let fields = match data.as_array().map(Vec::as_slice) {
        Some([only]) if only.is_array() => only,
        _ => data,
    };
    serde_json::from_value(fields.clone())
        .unwrap_or_else(|e| panic!("not a TaskInfo ({e}): {data}"))
}

/// `program args…` as the gateway's user `_kimchi-gw`, as its unit runs it.
pub fn as_gateway_user(argv: &[&str]) -> Command {
    let mut setpriv = daemons::AS_GATEWAY_USER.split_whitespace();
    let mut cmd = Command::new(setpriv.next().expect("a command"));
    cmd.args(setpriv).args(argv);
    cmd
}

/// `gdbus call --system` to kimchid: `method` (`interface.Member`) on `path` with
/// GVariant-text `args`, as root or, with `as_gateway`, as `_kimchi-gw`. gdbus shows
/// the D-Bus error's name (busctl only the errno text of the bus's own errors).
pub fn gdbus_call(as_gateway: bool, path: &str, method: &str, args: &[&str]) -> Ran {
    let mut argv = vec![
        "gdbus",
        "call",
        "--system",
        "--dest",
        kimchi_dbus::BUS_NAME,
        "--object-path",
        path,
        "--method",
        method,
    ];
    argv.extend_from_slice(args);
    if as_gateway {
        run(&mut as_gateway_user(&argv))
    } else {
        run(Command::new(argv[0]).args(&argv[1..]))
    }
}

/// `virsh -c qemu:///system <args>`.
pub fn virsh(args: &[&str]) -> Ran {
    run(Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args))
}

/// `virsh define`s the domain `xml` (virsh reads it from a file); panics with virsh's
/// reason when libvirt refuses it.
pub fn define_domain(xml: &str) {
    let file = std::env::temp_dir().join(format!("{}.xml", unique_name("domain")));
    std::fs::write(&file, xml).expect("write domain XML");
    let ran = virsh(&["define", file.to_str().expect("utf-8 temp path")]);
    let _ = std::fs::remove_file(&file);
    ran.expect_ok();
}

/// `text` with XML's special characters escaped, for names put into test domain XML.
pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

// ---------------------------------------------------------------------------------
// D-Bus

pub async fn system_bus() -> zbus::Connection {
    zbus::Connection::system()
        .await
        .expect("connect to the system bus")
}

/// The object path kimchid gives the VM `name`, once it has learnt of it from libvirt
/// (`Manager.LookupVM` through busctl). Panics with busctl's last complaint after 5 s.
#[track_caller]
pub fn lookup_vm_path(name: &str) -> String {
    let mut last_error = String::new();
    let found = poll(Duration::from_secs(5), || {
        let ran = busctl(&[
            "call",
            kimchi_dbus::BUS_NAME,
            kimchi_dbus::MANAGER_PATH,
            kimchi_dbus::MANAGER_INTERFACE,
            "LookupVM",
            "sa{sv}",
            name,
            "0",
        ]);
        last_error = ran.stderr;
        // busctl prints `o "/org/kimchi/Kimchi1/vm/_…"`.
        ran.ok.then(|| {
            ran.stdout
                .trim()
                .trim_start_matches("o ")
                .trim_matches('"')
                .to_owned()
        })
    });
    found.unwrap_or_else(|| panic!("LookupVM {name} failed for 5 s: {last_error}"))
}

/// A VM property as busctl shows it, e.g. `s "running"`.
pub fn vm_property(path: &str, property: &str) -> String {
    busctl(&[
        "get-property",
        kimchi_dbus::BUS_NAME,
        path,
        kimchi_dbus::VM_INTERFACE,
        property,
    ])
    .expect_ok()
    .stdout
    .trim()
    .to_owned()
}

// ---------------------------------------------------------------------------------
// Throwaway VMs

/// A tiny diskless guest defined with virsh (TCG, 64 MiB, VNC on 127.0.0.1);
/// destroyed and undefined on drop.
pub struct TestVm {
    pub name: String,
}

impl TestVm {
    pub fn define(what: &str) -> TestVm {
        let name = unique_name(what);
        let xml = format!(
            "<domain type='qemu'>\
               <name>{name}</name>\
               <memory unit='MiB'>64</memory>\
               <vcpu>1</vcpu>\
               <os><type arch='x86_64' machine='pc'>hvm</type></os>\
               <devices><graphics type='vnc' autoport='yes' listen='127.0.0.1'/></devices>\
             </domain>"
        );
        define_domain(&xml);
        TestVm { name }
    }

    pub fn start(&self) {
        virsh(&["start", &self.name]).expect_ok();
    }

    pub fn destroy(&self) {
        virsh(&["destroy", &self.name]).expect_ok();
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name]);
    }
}

// ---------------------------------------------------------------------------------
// HTTPS (curl)

/// The gateway's base URL; `KIMCHI_URL` overrides it.
pub fn base_url() -> String {
    std::env::var("KIMCHI_URL").unwrap_or_else(|_| "https://127.0.0.1:8001".into())
}

/// An HTTPS request made with curl (`-k`: the dev stack's certificate is self-signed).
pub struct Request {
    args: Vec<String>,
    body: Option<Vec<u8>>,
}

pub fn request(method: &str, path: &str) -> Request {
    Request {
        args: vec![
            "-sS".into(),
            "-k".into(),
            "--path-as-is".into(),
            "-X".into(),
            method.into(),
            format!("{}{path}", base_url()),
        ],
        body: None,
    }
}

/// The parts of a response the tests look at.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    /// Any curl argument (`--tlsv1.2`, `-u`, …).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn header(self, name: &str, value: &str) -> Self {
        self.arg("-H").arg(format!("{name}: {value}"))
    }

    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        self.arg("-u").arg(format!("{user}:{password}"))
    }

    /// Sends the session cookie (the CSRF token is the caller's business).
    pub fn session(self, session: &Session) -> Self {
        self.header("Cookie", &format!("kimchi_session={}", session.cookie))
    }

    pub fn body(self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        let mut req = self
            .header("Content-Type", content_type)
            .arg("--data-binary")
            .arg("@-");
        req.body = Some(body.into());
        req
    }

    pub fn json(self, value: &Value) -> Self {
        self.body("application/json", value.to_string())
    }

    /// Sends the request; `Err` holds curl's complaint when no HTTP response came back
    /// (refused connection, failed TLS handshake).
    pub fn try_send(self) -> Result<Response, String> {
        let ran = run_with_stdin(
            Command::new("curl").args(&self.args).arg("-i"),
            self.body.as_deref().unwrap_or_default(),
        );
        if !ran.ok {
            return Err(ran.stderr);
        }
        Ok(parse_response(&ran.stdout))
    }

    #[track_caller]
    pub fn send(self) -> Response {
        self.try_send()
            .unwrap_or_else(|e| panic!("no HTTP response: {e}"))
    }
}

/// Splits `curl -i` output, skipping interim (1xx) responses.
fn parse_response(raw: &str) -> Response {
    let mut rest = raw;
    loop {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no header block in curl output: {raw:?}"));
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        return Response {
            status,
            headers,
            body: body.to_owned(),
        };
    }
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a Kimchi error document: `{"code": "<status> …", "reason", "error"}`
    /// served as JSON with this status; returns the document.
    #[track_caller]
    pub fn assert_error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        let ctype = self.header("content-type").unwrap_or_default();
        assert!(ctype.starts_with("application/json"), "{self:?}");
        let doc = self.json();
        let code = doc["code"].as_str().unwrap_or_default();
        assert!(code.starts_with(&status.to_string()), "{doc}");
        assert!(doc["reason"].is_string(), "{doc}");
        assert!(doc["error"].is_string(), "{doc}");
        doc
    }
}

/// A logged-in web session.
#[derive(Debug, Clone)]
pub struct Session {
    pub cookie: String,
    pub csrf_token: String,
}

/// The whole `Set-Cookie` header (value and attributes) setting `kimchi_session`.
pub fn session_set_cookie(resp: &Response) -> Option<&str> {
    resp.headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.as_str())
        .find(|v| v.starts_with("kimchi_session="))
}

/// The value of the `kimchi_session` cookie a response sets, if it sets a non-empty one.
pub fn session_cookie(resp: &Response) -> Option<String> {
    let value = session_set_cookie(resp)?.strip_prefix("kimchi_session=")?;
    let value = value.split(';').next().unwrap_or_default();
    (!value.is_empty()).then(|| value.to_owned())
}

/// `POST /login` as `user`; panics unless it succeeds.
#[track_caller]
pub fn login(user: TestUser) -> Session {
    ensure_test_users();
    let resp = request("POST", "/login")
        .json(&serde_json::json!({"username": user.name, "password": user.password}))
        .send();
    assert_eq!(resp.status, 200, "{resp:?}");
    Session {
        cookie: session_cookie(&resp).expect("login sets kimchi_session"),
        csrf_token: resp.json()["csrf_token"]
            .as_str()
            .expect("login returns csrf_token")
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use kimchi_dbus::TaskState;
    use serde_json::json;

    use super::*;

    #[test]
    fn busctl_task_reply_reads_as_fields_or_as_one_struct() {
        let fields = json!([
            "/org/kimchi/Kimchi1/task/7",
            7,
            "vm.create",
            "finished",
            "",
            "/vms/a",
            1.0,
            10,
            20
        ]);
        let task = task_from_busctl(&fields);
        assert_eq!(task.path.as_str(), kimchi_dbus::task_path(7));
        assert_eq!(task.id, 7);
        assert_eq!(task.state, TaskState::Finished);
        assert_eq!(task.target_uri, "/vms/a");
        assert_eq!((task.start_usec, task.end_usec), (10, 20));
        assert_eq!(task_from_busctl(&json!([fields])), task);
    }
}
