//! Malformed requests get a JSON 4xx and leave both daemons serving.

use kimchi_tests::{busctl, login, request, Request, Response, Session, ADMIN};

fn login_with(content_type: &str, body: impl Into<Vec<u8>>) -> Response {
    request("POST", "/login").body(content_type, body).send()
}

#[test]
fn malformed_json_login_is_400() {
    login_with("application/json", "{\"username\": ").assert_error(400);
}

#[test]
fn text_plain_login_is_415() {
    login_with("text/plain", "username=x&password=y").assert_error(415);
}

#[test]
fn html_only_accept_is_406() {
    request("GET", "/config")
        .header("Accept", "text/html")
        .send()
        .assert_error(406);
}

/// `POST /login` with a body just over the 1 MiB limit, over HTTP/1.1: the gateway
/// answers before reading the body, and over HTTP/2 it then resets the stream
/// (RST_STREAM NO_ERROR, as RFC 9113 §8.1 allows), which curl 7.88 reports as error 92
/// instead of showing the response it received.
fn oversized_login() -> Response {
    let filler = "a".repeat(1024 * 1024);
    request("POST", "/login")
        .arg("--http1.1")
        .body(
            "application/json",
            format!(r#"{{"username": "{filler}", "password": "x"}}"#),
        )
        .send()
}

#[test]
fn body_over_one_mib_is_413() {
    oversized_login().assert_error(413);
}

// --- Odd paths, asked by a logged-in user so that only the path can be wrong -----------

fn odd_path_is_400_or_404(session: &Session, path: &str) {
    let resp = request("GET", path).session(session).send();
    assert!(resp.status == 400 || resp.status == 404, "{path}: {resp:?}");
    resp.assert_error(resp.status);
}

#[test]
fn dot_dot_path_is_a_json_client_error() {
    odd_path_is_400_or_404(&login(ADMIN), "/..");
}

#[test]
fn encoded_dot_dot_vm_name_is_a_json_client_error() {
    odd_path_is_400_or_404(&login(ADMIN), "/vms/%2e%2e");
}

#[test]
fn encoded_slash_in_vm_name_is_a_json_client_error() {
    odd_path_is_400_or_404(&login(ADMIN), "/vms/a%2Fb");
}

#[test]
fn nul_in_vm_name_is_a_json_client_error() {
    odd_path_is_400_or_404(&login(ADMIN), "/vms/%00");
}

#[test]
fn overlong_vm_name_is_a_json_client_error() {
    odd_path_is_400_or_404(&login(ADMIN), &format!("/vms/{}", "x".repeat(300)));
}

#[test]
fn unknown_resource_is_404() {
    request("GET", "/nonexistent")
        .session(&login(ADMIN))
        .send()
        .assert_error(404);
}

// --- Wrong methods -------------------------------------------------------------------

fn with_csrf(req: Request, session: &Session) -> Request {
    req.session(session)
        .header("X-CSRF-Token", &session.csrf_token)
}

fn assert_405_allowing(resp: &Response, method: &str) {
    resp.assert_error(405);
    let allow = resp.header("allow").unwrap_or_default();
    assert!(
        allow.split(',').any(|m| m.trim() == method),
        "Allow {allow:?} should name {method}: {resp:?}"
    );
}

#[test]
fn put_on_config_is_405_with_allow() {
    let session = login(ADMIN);
    let resp = with_csrf(request("PUT", "/config"), &session)
        .body("application/json", "{}")
        .send();
    assert_405_allowing(&resp, "GET");
}

#[test]
fn delete_on_vm_collection_is_405_with_allow() {
    let session = login(ADMIN);
    let resp = with_csrf(request("DELETE", "/vms"), &session).send();
    assert_405_allowing(&resp, "GET");
}

// --- Afterwards -------------------------------------------------------------------------

#[test]
fn daemons_keep_serving_after_a_burst_of_bad_input() {
    let session = login(ADMIN);
    for status in [
        login_with("application/json", "{").status,
        login_with("text/plain", "x").status,
        oversized_login().status,
        request("GET", "/vms/%00").session(&session).send().status,
        request("GET", "/..").session(&session).send().status,
        with_csrf(request("DELETE", "/vms"), &session).send().status,
    ] {
        assert!((400..500).contains(&status), "{status}");
    }
    assert_eq!(request("GET", "/config").send().status, 200);
    busctl(&["status", kimchi_dbus::BUS_NAME]).expect_ok();
    busctl(&[
        "get-property",
        kimchi_dbus::BUS_NAME,
        kimchi_dbus::MANAGER_PATH,
        kimchi_dbus::MANAGER_INTERFACE,
        "Version",
    ])
    .expect_ok();
}
