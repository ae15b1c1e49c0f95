//! `GET /openapi.json` is served without login, and the list limits it documents are
//! what the gateway enforces.

use kimchi_tests::{login, request, Request, Session, ADMIN};
use serde_json::{json, Value};

fn with_csrf(req: Request, session: &Session) -> Request {
    req.session(session)
        .header("X-CSRF-Token", &session.csrf_token)
}

fn document() -> Value {
    let resp = request("GET", "/openapi.json").send();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    resp.json()
}

#[test]
fn document_is_served_without_login() {
    let doc = document();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "{version}");
    for (path, method) in [
        ("/vms", "post"),
        ("/vms/{name}/ifaces/{mac}", "delete"),
        ("/storagepools/{pool}/storagevolumes/{name}/wipe", "post"),
        ("/openapi.json", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    // The same bytes every time: built once.
    let again = request("GET", "/openapi.json").send();
    assert_eq!(again.body, request("GET", "/openapi.json").send().body);
}

/// The document's `maxItems` of a template's `folder`, and the gateway refusing one
/// more with 400 naming the field; the limit itself is accepted.
#[test]
fn documented_list_limit_is_enforced() {
    let doc = document();
    let folder = &doc["components"]["schemas"]["List_Text_Folders"];
    let max = folder["maxItems"].as_u64().expect("folder has maxItems") as usize;
    let session = login(ADMIN);
    let too_many = vec!["a"; max + 1];
    let resp = with_csrf(request("POST", "/templates"), &session)
        .json(&json!({"name": "kimchi-t-openapi-limit", "folder": too_many}))
        .send();
    let err = resp.assert_error(400);
    let reason = err["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("folder takes at most {max} entries")),
        "{reason}"
    );
    // A template of the maximum is fine (and removed again).
    let name = format!("kimchi-t-openapi-limit-{}", std::process::id());
    let resp = with_csrf(request("POST", "/templates"), &session)
        .json(&json!({"name": name, "folder": vec!["a"; max]}))
        .send();
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.json()["folder"].as_array().unwrap().len(), max);
    let resp = with_csrf(request("DELETE", &format!("/templates/{name}")), &session).send();
    assert_eq!(resp.status, 204, "{resp:?}");
}
