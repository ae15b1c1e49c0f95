//! Kimchi's web UI as a client: the calls `ui/js/src/kimchi.api.js` (kimchi-project/
//! kimchi at 8c4fedce; Kimchi 1.0 makes the same ones) sends, replayed as jQuery sends
//! them — the session cookie and `X-Requested-With: XMLHttpRequest` but never the
//! CSRF token (the UI does not know it), jQuery's `Accept` for `dataType: 'json'`,
//! `Content-Type: application/json` where the call sets `contentType` (with or
//! without a body), and the bodies its forms make (every form value a string, an
//! empty name field as `"name": ""`) — and each answer checked as the UI uses it.
//!
//! What the UI needs that the server must not give to others is checked too: a
//! cookie write carrying neither the CSRF token nor the `X-Requested-With` header is
//! still refused, and a write a browser marks as cross-site too.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{expect, TemplateNames, TestPool, VmCleanup, Web, DEFAULT_POOL_DIR};
use kimchi_dbus::ISO_POOL;
use kimchi_tests::{
    ensure_test_users, poll, request, scratch_dir, session_cookie, unique_name, virsh, write_iso,
    Request, Response, TestUser, ADMIN, UBUNTU_VOLUME_ID,
};
use serde_json::{json, Value};

/// What jQuery sends as `Accept` for `dataType: 'json'`.
const JQUERY_JSON_ACCEPT: &str = "application/json, text/javascript, */*; q=0.01";

/// A browser running Kimchi's UI after its login window: the session cookie, and
/// jQuery's headers on every call.
struct Browser {
    cookie: String,
}

/// kimchi.login: `$.ajax` POST of the login form, `{"userid", "password"}`.
#[track_caller]
fn ui_login(user: TestUser) -> Response {
    ensure_test_users();
    xhr(request("POST", "/login"))
        .json(&json!({"userid": user.name, "password": user.password}))
        .send()
}

/// jQuery's headers on a same-origin `$.ajax` call with `dataType: 'json'`.
fn xhr(req: Request) -> Request {
    req.header("X-Requested-With", "XMLHttpRequest")
        .header("Accept", JQUERY_JSON_ACCEPT)
}

impl Browser {
    #[track_caller]
    fn login(user: TestUser) -> Browser {
        let resp = ui_login(user);
        assert_eq!(resp.status, 200, "login: {resp:?}");
        Browser {
            cookie: session_cookie(&resp).expect("login sets kimchi_session"),
        }
    }

    #[track_caller]
    fn admin() -> Browser {
        Browser::login(ADMIN)
    }

    /// `$.ajax({url, type})` with `dataType: 'json'`: the cookie and jQuery's headers.
    fn ajax(&self, method: &str, path: &str) -> Request {
        xhr(request(method, path)).header("Cookie", &format!("kimchi_session={}", self.cookie))
    }

    /// A call with `contentType: 'application/json'` and no `data`: lists, reads,
    /// start, stop, delete, activate, logout.
    #[track_caller]
    fn call(&self, method: &str, path: &str) -> Response {
        self.ajax(method, path)
            .header("Content-Type", "application/json")
            .send()
    }

    /// A call with `contentType: 'application/json'` and `data: JSON.stringify(settings)`.
    #[track_caller]
    fn call_with(&self, method: &str, path: &str, settings: &Value) -> Response {
        self.ajax(method, path).json(settings).send()
    }

    /// A call without `contentType` (vncToVM's GET /config and POST connect): jQuery
    /// then sends no `Content-Type`.
    #[track_caller]
    fn call_plain(&self, method: &str, path: &str) -> Response {
        self.ajax(method, path).send()
    }

    /// `GET`, asserting 200; the JSON.
    #[track_caller]
    fn read(&self, path: &str) -> Value {
        expect(self.call("GET", path), 200, &format!("GET {path}")).json()
    }

    /// A listing across pools, retried while kimchid answers 409 after another test
    /// stopped a pool behind its back (see `common::get_listing`).
    #[track_caller]
    fn listing(&self, path: &str) -> Value {
        let mut last = None;
        let found = poll(Duration::from_secs(10), || {
            let resp = self.call("GET", path);
            if resp.status == 200 {
                return Some(resp.json());
            }
            last = Some(resp);
            None
        });
        found.unwrap_or_else(|| panic!("GET {path} kept failing: {last:?}"))
    }
}

/// Milliseconds since the epoch: `new Date().getTime()`, which the UI puts in names.
fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

/// The document called `name` in a JSON list, if any.
#[track_caller]
fn listed(list: &Value, name: &str) -> Option<Value> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
}

/// A template for guests, made by an administrator outside the UI: 128 MiB, one
/// 1 GB disk, no icon.
#[track_caller]
fn admin_template(web: &Web, what: &str) -> TemplateNames {
    let t = TemplateNames::one(what);
    let resp = web.post(
        "/templates",
        &json!({"name": t.name(), "memory": 128, "disks": [{"size": 1}]}),
    );
    expect(resp, 201, "create the template");
    t
}

/// Asserts an error document whose `reason` the UI can show
/// (`err.responseJSON.reason`).
#[track_caller]
fn assert_reason(resp: &Response, status: u16) {
    let doc = resp.assert_error(status);
    assert!(
        doc["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{doc}"
    );
}

// =================================================================================
// Login, reads

#[test]
fn ui_login_form_opens_a_session_and_every_list_the_ui_shows_is_json() {
    let b = Browser::admin();
    // listVMs, listTemplates, listStoragePools, listStorageVolumes, listIsos.
    for path in ["/vms", "/templates", "/storagepools/default/storagevolumes"] {
        assert!(b.read(path).is_array(), "{path}");
    }
    for path in [
        "/storagepools".to_owned(),
        format!("/storagepools/{ISO_POOL}/storagevolumes"),
    ] {
        assert!(b.listing(&path).is_array(), "{path}");
    }
    assert!(b.read("/tasks").is_array());
    // vncToVM first reads the port of the configuration, without a Content-Type.
    let config = expect(b.call_plain("GET", "/config"), 200, "config").json();
    assert!(config["http_port"].is_u64(), "{config}");
}

#[test]
fn ui_template_list_shows_icon_null_for_templates_without_one() {
    let web = Web::admin();
    let plain = admin_template(&web, "ui-icon");
    let with_icon = TemplateNames::one("ui-icon");
    let resp = web.post(
        "/templates",
        &json!({"name": with_icon.name(), "icon": "images/icon-fedora.png"}),
    );
    expect(resp, 201, "create a template with an icon");

    let b = Browser::admin();
    let list = b.read("/templates");
    let doc = listed(&list, plain.name()).unwrap_or_else(|| panic!("not listed: {list}"));
    assert_eq!(doc["icon"], Value::Null, "{doc}");
    let doc = listed(&list, with_icon.name()).unwrap_or_else(|| panic!("not listed: {list}"));
    assert_eq!(doc["icon"], "images/icon-fedora.png", "{doc}");
    // retrieveTemplate, as the edit window does.
    assert_eq!(b.read(&plain.uri())["icon"], Value::Null);
}

// =================================================================================
// Templates

/// A directory under /var/lib/kimchi-tests, removed with all it holds on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn ui_template_from_an_iso_file_is_created_listed_and_deleted() {
    let scratch = Scratch(scratch_dir("ui-isofile"));
    let dir = &scratch.0;
    let stem = unique_name("ui-isofile");
    let iso = dir.join(format!("{stem}.iso"));
    write_iso(UBUNTU_VOLUME_ID, true, &iso);
    // kimchi.get_iso_name: the file's name without `.iso`, and the time.
    let name = format!("{stem}{}", now_ms());
    let t = TemplateNames(vec![name.clone()]);

    let b = Browser::admin();
    let resp = b.call_with("POST", "/templates", &json!({"name": name, "cdrom": iso}));
    let doc = expect(resp, 201, "createTemplate").json();
    assert_eq!(doc["name"], name.as_str(), "{doc}");
    assert_eq!(doc["cdrom"], iso.to_str().unwrap(), "{doc}");
    assert_eq!(doc["os_distro"], "ubuntu", "{doc}");
    let list = b.read("/templates");
    assert!(listed(&list, &name).is_some(), "{list}");

    let resp = expect(b.call("DELETE", &t.uri()), 204, "deleteTemplate");
    assert!(resp.body.is_empty(), "{resp:?}");
    assert!(listed(&b.read("/templates"), &name).is_none());
}

#[test]
fn ui_template_from_a_scanned_iso_takes_its_os() {
    let web = Web::admin();
    let pool = TestPool::active("ui-scan", &web);
    write_iso(UBUNTU_VOLUME_ID, true, &pool.file("install.iso"));
    // Makes libvirt look at the directory again.
    assert!(pool.volume_names(&web).contains("install.iso"));

    let b = Browser::admin();
    let isos = b.listing(&format!("/storagepools/{ISO_POOL}/storagevolumes"));
    let iso = listed(&isos, &format!("{}:install.iso", pool.name))
        .unwrap_or_else(|| panic!("the image is not in {isos}"));
    let t = TemplateNames(vec![format!("{}{}", unique_name("Template"), now_ms())]);
    let settings = json!({
        "name": t.name(),
        "os_distro": iso["os_distro"],
        "os_version": iso["os_version"],
        "cdrom": iso["path"],
    });
    let doc = expect(
        b.call_with("POST", "/templates", &settings),
        201,
        "createTemplate",
    )
    .json();
    assert_eq!(doc["os_distro"], "ubuntu", "{doc}");
    assert_eq!(doc["os_version"], "22.04", "{doc}");
    assert_eq!(doc["cdrom"], json!(pool.file("install.iso")), "{doc}");
}

#[test]
fn ui_template_edit_form_sends_strings_and_renames() {
    let web = Web::admin();
    let mut t = admin_template(&web, "ui-edit");
    let new = unique_name("ui-edited");
    t.add(&new);
    let b = Browser::admin();
    let before = b.read(&t.uri());

    // The edit window's fields (name, cpus, memory) as `.val()` gives them: strings.
    let settings = json!({"name": t.name(), "cpus": "2", "memory": "512"});
    let doc = expect(
        b.call_with("PUT", &t.uri(), &settings),
        200,
        "updateTemplate",
    )
    .json();
    let mut expected = before.clone();
    expected["cpus"] = json!(2);
    expected["memory"] = json!(512);
    assert_eq!(doc, expected);
    assert_eq!(b.read(&t.uri()), expected);

    // A new name: 303, which the browser follows with a GET of the same XHR.
    let settings = json!({"name": new, "cpus": "1", "memory": "256"});
    let resp = expect(
        b.call_with("PUT", &t.uri(), &settings),
        303,
        "updateTemplate with a new name",
    );
    let location = resp.header("location").expect("Location").to_owned();
    assert_eq!(location, format!("/templates/{new}"));
    let doc = b.read(&location);
    assert_eq!(doc["name"], new.as_str(), "{doc}");
    assert_eq!(doc["cpus"], 1, "{doc}");
    assert_eq!(doc["memory"], 256, "{doc}");
}

// =================================================================================
// Guests

#[test]
fn ui_guest_form_creates_vms_with_an_empty_or_a_given_name() {
    let web = Web::admin();
    let t = admin_template(&web, "ui-guest");
    let generated = VmCleanup::in_dir(&format!("{}-vm-1", t.name()), Path::new(DEFAULT_POOL_DIR));
    let named = VmCleanup::fresh("ui-guest");
    let b = Browser::admin();

    // `$('#form-vm-add').serializeObject()` with the name field left empty.
    let resp = b.call_with("POST", "/vms", &json!({"name": "", "template": t.uri()}));
    let doc = expect(resp, 201, "createVM with an empty name").json();
    assert_eq!(doc["name"], generated.name.as_str(), "{doc}");
    assert_eq!(doc["state"], "shutoff", "{doc}");

    let resp = b.call_with(
        "POST",
        "/vms",
        &json!({"name": named.name, "template": t.uri()}),
    );
    let doc = expect(resp, 201, "createVM with a name").json();
    assert_eq!(doc["name"], named.name.as_str(), "{doc}");

    let list = b.read("/vms");
    for vm in [&generated, &named] {
        let doc = listed(&list, &vm.name).unwrap_or_else(|| panic!("{} not in {list}", vm.name));
        // The guest list shows `icon` or, when running, `screenshot`.
        assert_eq!(doc["icon"], Value::Null, "{doc}");
        assert_eq!(doc["screenshot"], Value::Null, "{doc}");
    }
}

#[test]
fn ui_guest_buttons_start_connect_reset_stop_and_delete_a_vm() {
    let web = Web::admin();
    let t = admin_template(&web, "ui-buttons");
    let vm = VmCleanup::fresh("ui-buttons");
    let resp = web.post("/vms", &json!({"name": vm.name, "template": t.uri()}));
    expect(resp, 201, "create the VM");
    let b = Browser::admin();
    let uri = vm.uri();

    // startVM
    let doc = expect(b.call("POST", &format!("{uri}/start")), 200, "startVM").json();
    assert_eq!(doc["state"], "running", "{doc}");
    let shown = listed(&b.read("/vms"), &vm.name).expect("the VM is listed");
    let screenshot = shown["screenshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no screenshot while running: {shown}"))
        .to_owned();
    // The tile's <img src=screenshot>: a plain image request of the browser.
    let resp = request("GET", &screenshot)
        .header("Cookie", &format!("kimchi_session={}", b.cookie))
        .header(
            "Accept",
            "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
        )
        .send();
    assert_eq!(resp.status, 303, "the screenshot image: {resp:?}");

    // vncToVM: the configuration's port, then connect, neither with a Content-Type.
    let config = expect(b.call_plain("GET", "/config"), 200, "config").json();
    let resp = b.call_plain("POST", &format!("{uri}/connect"));
    let doc = expect(resp, 200, "connect").json();
    assert_eq!(doc["graphics"]["type"], "vnc", "{doc}");
    assert_eq!(doc["graphics"]["port"], config["http_port"], "{doc}");

    // resetVM: stop, then start.
    let doc = expect(
        b.call("POST", &format!("{uri}/stop")),
        200,
        "resetVM's stop",
    )
    .json();
    assert_eq!(doc["state"], "shutoff", "{doc}");
    let doc = expect(
        b.call("POST", &format!("{uri}/start")),
        200,
        "resetVM's start",
    )
    .json();
    assert_eq!(doc["state"], "running", "{doc}");

    // stopVM, deleteVM.
    let doc = expect(b.call("POST", &format!("{uri}/stop")), 200, "stopVM").json();
    assert_eq!(doc["state"], "shutoff", "{doc}");
    let resp = expect(b.call("DELETE", &uri), 204, "deleteVM");
    assert!(resp.body.is_empty(), "{resp:?}");
    b.call("GET", &uri).assert_error(404);
    assert!(!virsh(&["dominfo", &vm.name]).ok, "still defined");
    assert!(!vm.disk.exists(), "{} left behind", vm.disk.display());
}

// =================================================================================
// Storage

#[test]
fn ui_storage_pool_form_creates_a_pool_activated_deactivated_and_deleted() {
    let pool = TestPool::planned("ui-pool");
    let b = Browser::admin();

    // `$('#form-pool-add').serializeObject()`: name, the hidden type, path.
    let settings = json!({"name": pool.name, "type": "dir", "path": pool.dir});
    let doc = expect(
        b.call_with("POST", "/storagepools", &settings),
        201,
        "createStoragePool",
    )
    .json();
    assert_eq!(doc["state"], "inactive", "{doc}");
    let doc = listed(&b.listing("/storagepools"), &pool.name).expect("the pool is listed");
    assert_eq!(doc["state"], "inactive", "{doc}");

    // changePoolState
    let doc = expect(
        b.call("POST", &format!("{}/activate", pool.uri())),
        200,
        "activate",
    )
    .json();
    assert_eq!(doc["state"], "active", "{doc}");
    assert_eq!(b.read(&pool.volumes_uri()), json!([]));
    let doc = expect(
        b.call("POST", &format!("{}/deactivate", pool.uri())),
        200,
        "deactivate",
    )
    .json();
    assert_eq!(doc["state"], "inactive", "{doc}");

    // deleteStoragePool
    expect(b.call("DELETE", &pool.uri()), 204, "deleteStoragePool");
    assert!(listed(&b.listing("/storagepools"), &pool.name).is_none());
}

#[test]
fn ui_failed_writes_answer_json_with_a_reason_to_show() {
    let web = Web::admin();
    let pool = TestPool::planned("ui-errors");
    expect(pool.create(&web), 201, "create the pool");
    let t = admin_template(&web, "ui-errors");
    let b = Browser::admin();

    let resp = b.call_with(
        "POST",
        "/storagepools",
        &json!({"name": pool.name, "type": "dir", "path": pool.root.join("other")}),
    );
    assert_reason(&resp, 409);
    let resp = b.call_with("POST", "/templates", &json!({"name": t.name()}));
    assert_reason(&resp, 409);
    let missing = format!("/templates/{}", unique_name("ui-none"));
    let resp = b.call_with("POST", "/vms", &json!({"name": "", "template": missing}));
    assert_reason(&resp, 404);
    let resp = b.call("POST", &format!("{}/deactivate", pool.uri()));
    assert_reason(&resp, 409);
}

// =================================================================================
// Logout, CSRF, authentication failures

#[test]
fn ui_logout_ends_the_session_and_the_next_call_is_401_without_a_challenge() {
    let b = Browser::admin();
    expect(b.call("GET", "/vms"), 200, "listVMs");
    let resp = expect(b.call("POST", "/logout"), 204, "logout");
    assert!(resp.body.is_empty(), "{resp:?}");
    let resp = b.call("GET", "/vms");
    resp.assert_error(401);
    assert_eq!(resp.header("www-authenticate"), None, "{resp:?}");
}

/// The UI's ajaxError hook opens its login window on a 401; a Basic challenge would
/// make the browser show its own password dialog first.
#[test]
fn ui_call_without_a_session_is_401_without_a_basic_challenge() {
    for path in ["/vms", "/templates", "/storagepools", "/tasks"] {
        let resp = xhr(request("GET", path))
            .header("Content-Type", "application/json")
            .send();
        assert_eq!(resp.status, 401, "{path}: {resp:?}");
        resp.assert_error(401);
        assert_eq!(resp.header("www-authenticate"), None, "{path}: {resp:?}");
    }
}

#[test]
fn x_requested_with_stands_in_for_the_csrf_token_on_cookie_writes() {
    let pool = TestPool::planned("ui-xhr");
    let b = Browser::admin();
    // Only what a same-origin script adds: the cookie (the browser's) and the header.
    let cookie = format!("kimchi_session={}", b.cookie);
    let resp = request("POST", "/storagepools")
        .header("Cookie", &cookie)
        .header("X-Requested-With", "XMLHttpRequest")
        .json(&pool.spec())
        .send();
    expect(resp, 201, "create with X-Requested-With");
    let resp = request("DELETE", &pool.uri())
        .header("Cookie", &cookie)
        .header("X-Requested-With", "XMLHttpRequest")
        .send();
    expect(resp, 204, "delete with X-Requested-With");
    assert!(!virsh(&["pool-info", &pool.name]).ok, "still defined");
}

#[test]
fn cookie_write_with_neither_csrf_token_nor_x_requested_with_is_403_and_changes_nothing() {
    let web = Web::admin();
    let t = admin_template(&web, "ui-csrf");
    let before = expect(web.get(&t.uri()), 200, "the template").json();
    let pool = TestPool::planned("ui-csrf");
    let b = Browser::admin();
    // What a cross-site form or a script without the header can send: the cookie.
    let bare = |method: &str, path: &str| {
        request(method, path)
            .header("Cookie", &format!("kimchi_session={}", b.cookie))
            .header("Accept", JQUERY_JSON_ACCEPT)
    };
    let refused = [
        (
            "create a pool",
            bare("POST", "/storagepools").json(&pool.spec()).send(),
        ),
        (
            "change a template",
            bare("PUT", &t.uri()).json(&json!({"cpus": 2})).send(),
        ),
        ("delete a template", bare("DELETE", &t.uri()).send()),
        ("log out", bare("POST", "/logout").send()),
    ];
    for (what, resp) in refused {
        assert_eq!(resp.status, 403, "{what}: {resp:?}");
        let doc = resp.assert_error(403);
        assert_eq!(doc["error"], "kimchi.gateway.CsrfRejected", "{what}: {doc}");
    }
    assert!(
        !virsh(&["pool-info", &pool.name]).ok,
        "the pool was defined"
    );
    assert_eq!(b.read(&t.uri()), before, "the template changed");
    // The refused logout left the session alive.
    expect(b.call("GET", "/vms"), 200, "the session still works");
}

#[test]
fn x_requested_with_write_a_browser_marks_cross_site_is_403() {
    let pool = TestPool::planned("ui-xsite");
    let b = Browser::admin();
    let resp = b
        .ajax("POST", "/storagepools")
        .header("Sec-Fetch-Site", "cross-site")
        .json(&pool.spec())
        .send();
    let doc = resp.assert_error(403);
    assert_eq!(doc["error"], "kimchi.gateway.CsrfRejected", "{doc}");
    assert!(
        !virsh(&["pool-info", &pool.name]).ok,
        "the pool was defined"
    );
}
