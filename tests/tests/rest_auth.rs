//! Logging in to the gateway and who may read what, over HTTPS with curl.

use std::time::Duration;

use kimchi_tests::{
    base_url, ensure_test_users, login, poll, request, session_cookie, session_set_cookie,
    Response, TestUser, TestVm, ADMIN, OUTSIDER, READER,
};
use serde_json::json;

fn get_vms_with_basic(user: TestUser, password: &str) -> Response {
    ensure_test_users();
    request("GET", "/vms")
        .basic_auth(user.name, password)
        .header("Accept", "application/json")
        .send()
}

#[test]
fn login_sets_a_secure_http_only_strict_session_cookie() {
    ensure_test_users();
    let resp = request("POST", "/login")
        .json(&json!({"username": ADMIN.name, "password": ADMIN.password}))
        .send();
    assert_eq!(resp.status, 200, "{resp:?}");
    let cookie =
        session_set_cookie(&resp).unwrap_or_else(|| panic!("no kimchi_session cookie: {resp:?}"));
    let attributes: Vec<String> = cookie
        .split(';')
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for wanted in ["httponly", "secure", "samesite=strict"] {
        assert!(attributes.iter().any(|a| a == wanted), "{wanted}: {cookie}");
    }
    let body = resp.json();
    assert!(
        body["csrf_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_eq!(body["user"], ADMIN.name);
}

#[test]
fn session_cookie_lists_vms_as_a_json_array() {
    let session = login(ADMIN);
    let resp = request("GET", "/vms").session(&session).send();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.json().is_array(), "{}", resp.body);
}

#[test]
fn logout_without_csrf_token_is_403() {
    let session = login(ADMIN);
    let resp = request("POST", "/logout").session(&session).send();
    resp.assert_error(403);
}

#[test]
fn logout_ends_the_session() {
    let session = login(ADMIN);
    // Authorized a few times first: what kimchid remembers must not outlive the session.
    for _ in 0..3 {
        assert_eq!(request("GET", "/vms").session(&session).send().status, 200);
    }
    let resp = request("POST", "/logout")
        .session(&session)
        .header("X-CSRF-Token", &session.csrf_token)
        .send();
    assert_eq!(resp.status, 204, "{resp:?}");
    let after = request("GET", "/vms").session(&session).send();
    after.assert_error(401);
}

#[test]
fn kimchi_userid_login_form_is_accepted() {
    ensure_test_users();
    let resp = request("POST", "/login")
        .json(&json!({"userid": READER.name, "password": READER.password}))
        .send();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(session_cookie(&resp).is_some(), "{resp:?}");
}

#[test]
fn basic_auth_lists_vms() {
    let resp = get_vms_with_basic(ADMIN, ADMIN.password);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.json().is_array(), "{}", resp.body);
}

#[test]
fn wrong_password_login_is_401_without_cookie() {
    ensure_test_users();
    let resp = request("POST", "/login")
        .json(&json!({"username": ADMIN.name, "password": "not-the-password"}))
        .send();
    resp.assert_error(401);
    assert_eq!(resp.header("set-cookie"), None, "{resp:?}");
}

#[test]
fn wrong_password_basic_auth_is_401_without_cookie() {
    let resp = get_vms_with_basic(ADMIN, "not-the-password");
    resp.assert_error(401);
    assert_eq!(resp.header("set-cookie"), None, "{resp:?}");
}

#[test]
fn no_credentials_is_401_with_a_basic_challenge() {
    let resp = request("GET", "/vms").send();
    resp.assert_error(401);
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Basic"), "{resp:?}");
}

#[test]
fn browser_script_without_credentials_gets_no_basic_challenge() {
    let resp = request("GET", "/vms")
        .header("X-Requested-With", "XMLHttpRequest")
        .send();
    resp.assert_error(401);
    assert_eq!(resp.header("www-authenticate"), None, "{resp:?}");
}

#[test]
fn outsider_gets_403_on_vm_list() {
    let session = login(OUTSIDER);
    let resp = request("GET", "/vms").session(&session).send();
    let doc = resp.assert_error(403);
    assert_eq!(
        doc["error"], "org.kimchi.Kimchi1.Error.NotAuthorized",
        "{doc}"
    );
}

#[test]
fn reader_may_list_vms() {
    let session = login(READER);
    let resp = request("GET", "/vms").session(&session).send();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.json().is_array(), "{}", resp.body);
}

#[test]
fn config_answers_without_login_with_the_served_port() {
    let resp = request("GET", "/config").send();
    assert_eq!(resp.status, 200, "{resp:?}");
    let port: u64 = base_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("base URL names its port");
    assert_eq!(resp.json(), json!({"http_port": port}));
}

#[test]
fn capabilities_answer_without_login() {
    let resp = request("GET", "/config/capabilities").send();
    assert_eq!(resp.status, 200, "{resp:?}");
    let doc = resp.json();
    assert!(doc["stream_protocols"].is_array(), "{doc}");
    let screenshot = &doc["screenshot"];
    assert!(screenshot.is_boolean() || screenshot.is_null(), "{doc}");
}

#[test]
fn vm_defined_with_virsh_is_served_by_name() {
    let vm = TestVm::define("rest-get");
    let session = login(ADMIN);
    let path = format!("/vms/{}", vm.name);
    // kimchid learns of the VM from a libvirt event: allow it a moment.
    let resp = poll(Duration::from_secs(5), || {
        let resp = request("GET", &path).session(&session).send();
        (resp.status != 404).then_some(resp)
    })
    .unwrap_or_else(|| panic!("GET {path} stayed 404"));
    assert_eq!(resp.status, 200, "{resp:?}");
    let doc = resp.json();
    assert_eq!(doc["name"], vm.name.as_str(), "{doc}");
    assert_eq!(doc["state"], "shutoff", "{doc}");
    assert_eq!(doc["memory"], 64, "{doc}");
}

#[test]
fn missing_vm_is_404_json() {
    let session = login(ADMIN);
    let resp = request("GET", "/vms/kimchi-t-no-such-vm")
        .session(&session)
        .send();
    let doc = resp.assert_error(404);
    assert_eq!(doc["error"], "org.kimchi.Kimchi1.Error.NotFound", "{doc}");
}
