//! Tasks: the slow volume operations answered at once with `Prefer: respond-async`
//! (202 + Location), followed over `GET /tasks/:id` and `GET /tasks`, and on the
//! bus: the Task's `Completed` signal and `kimchi.wait`.
//!
//! A wipe that takes long enough to be seen running: a volume whose blocks are all
//! allocated (fallocate), which libvirt overwrites block by block (a sparse one it
//! just truncates, at once).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{allocate_fully, expect, manager, TestPool, Web, MIB};
use futures_util::StreamExt;
use kimchi_dbus::{task_path, CallOptions, TaskState, BUS_NAME, ROOT_PATH, TASK_INTERFACE};
use kimchi_tests::{busctl, manager_json, system_bus, task_from_busctl, READER};
use serde_json::{json, Value};
use zbus::message::Type as MessageType;
use zbus::{MatchRule, MessageStream, OwnedVariant};

/// Size of the volume wiped slowly: about 2-3 s of writing here.
const SLOW_WIPE_MIB: u64 = 1024;

/// A pool holding `big.img`, a fully allocated raw volume of [`SLOW_WIPE_MIB`].
fn pool_with_a_slow_volume(what: &str, web: &Web) -> TestPool {
    let pool = TestPool::active(what, web);
    pool.create_volume(web, "big.img", SLOW_WIPE_MIB, "raw");
    allocate_fully(&pool.file("big.img"), SLOW_WIPE_MIB * MIB);
    pool
}

/// `GET /tasks/:id` until the task is no longer running (60 s at most).
#[track_caller]
fn wait_until_ended(web: &Web, uri: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let doc = expect(web.get(uri), 200, "get the task").json();
        if doc["status"] != "running" {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "task still running after 60 s: {doc}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn respond_async_wipe_is_202_with_the_location_of_a_running_task() {
    let web = Web::admin();
    let pool = pool_with_a_slow_volume("task-async", &web);
    let resp = web
        .request("POST", &format!("{}/wipe", pool.volume_uri("big.img")))
        .header("Prefer", "respond-async")
        .send();
    let resp = expect(resp, 202, "async wipe");
    assert_eq!(
        resp.header("preference-applied"),
        Some("respond-async"),
        "{resp:?}"
    );
    let location = resp
        .header("location")
        .unwrap_or_else(|| panic!("no Location: {resp:?}"))
        .to_owned();
    let doc = resp.json();
    let id = doc["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no string id: {doc}"));
    assert_eq!(location, format!("/tasks/{id}"));
    assert_eq!(doc["status"], "running", "{doc}");
    assert_eq!(doc["target_uri"], pool.volume_uri("big.img"), "{doc}");

    let first = expect(web.get(&location), 200, "get the task").json();
    assert_eq!(first["status"], "running", "{first}");
    assert_eq!(first["id"], id, "{first}");

    let ended = wait_until_ended(&web, &location);
    assert_eq!(ended["status"], "finished", "{ended}");
    assert_eq!(ended["message"], "wiped", "{ended}");
    assert_eq!(ended["target_uri"], pool.volume_uri("big.img"), "{ended}");
}

#[test]
fn task_document_has_id_status_message_and_target_uri() {
    let web = Web::admin();
    let pool = TestPool::active("task-doc", &web);
    let resp = web
        .request("POST", &pool.volumes_uri())
        .header("Prefer", "respond-async")
        .json(&json!({"name": "new.qcow2", "capacity": 8, "format": "qcow2"}))
        .send();
    let location = expect(resp, 202, "async create")
        .header("location")
        .expect("Location")
        .to_owned();
    let doc = wait_until_ended(&web, &location);
    let mut keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["id", "message", "status", "target_uri"], "{doc}");
    assert_eq!(doc["status"], "finished", "{doc}");
    assert_eq!(doc["target_uri"], pool.volume_uri("new.qcow2"), "{doc}");
    assert!(pool.file("new.qcow2").exists());
}

#[test]
fn task_list_shows_the_task_with_its_target_uri() {
    let web = Web::admin();
    let pool = TestPool::active("task-list", &web);
    let resp = web
        .request("POST", &pool.volumes_uri())
        .header("Prefer", "respond-async")
        .json(&json!({"name": "listed.img", "capacity": 4, "format": "raw"}))
        .send();
    let id = expect(resp, 202, "async create").json()["id"].clone();
    let list = expect(web.get("/tasks"), 200, "list tasks").json();
    let task = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("task {id} not in {list}"));
    assert_eq!(task["target_uri"], pool.volume_uri("listed.img"), "{task}");
    assert!(
        task["status"] == "running" || task["status"] == "finished",
        "{task}"
    );
}

#[test]
fn reader_may_read_tasks() {
    let reader = Web::login(READER);
    let list = expect(reader.get("/tasks"), 200, "list tasks").json();
    assert!(list.is_array(), "{list}");
}

#[test]
fn unknown_task_is_404() {
    let web = Web::admin();
    let doc = web.get("/tasks/4294967295").assert_error(404);
    assert_eq!(doc["error"], "org.kimchi.Kimchi1.Error.NotFound", "{doc}");
    web.get("/tasks/not-a-number").assert_error(404);
}

#[test]
fn volume_being_wiped_refuses_other_operations_with_409() {
    let web = Web::admin();
    let pool = pool_with_a_slow_volume("task-busy", &web);
    let volume = pool.volume_uri("big.img");
    let resp = web
        .request("POST", &format!("{volume}/wipe"))
        .header("Prefer", "respond-async")
        .send();
    let location = expect(resp, 202, "async wipe")
        .header("location")
        .expect("Location")
        .to_owned();
    let busy = [
        web.action(&format!("{volume}/wipe")),
        web.post(&format!("{volume}/resize"), &json!({"size": 2048})),
        web.delete(&volume),
    ];
    let still_running = expect(web.get(&location), 200, "get the task").json();
    assert_eq!(still_running["status"], "running", "too fast to tell");
    for resp in busy {
        let doc = resp.assert_error(409);
        assert_eq!(doc["error"], "org.kimchi.Kimchi1.Error.Busy", "{doc}");
    }
    assert_eq!(wait_until_ended(&web, &location)["status"], "finished");
    assert!(pool.file("big.img").exists());
}

// --- D-Bus -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn dbus_wipe_sends_completed_on_the_task_it_returned() {
    let (_web, pool) = tokio::task::block_in_place(|| {
        let web = Web::admin();
        let pool = TestPool::active("task-signal", &web);
        pool.create_volume(&web, "w.img", 16, "raw");
        (web, pool)
    });
    let conn = system_bus().await;
    // Subscribed before the call, so the signal cannot be missed however fast the
    // task is.
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS_NAME)
        .interface(TASK_INTERFACE)
        .member("Completed")
        .path_namespace(format!("{ROOT_PATH}/task"))
        .build()
        .unwrap();
    let mut signals = MessageStream::for_match_rule(rule, &conn, None)
        .await
        .unwrap();
    let task = manager(&conn)
        .await
        .wipe_storage_volume(&pool.name, "w.img", CallOptions::default().to_dict())
        .await
        .expect("WipeStorageVolume");
    assert_eq!(task.path.as_str(), task_path(task.id), "{task:?}");
    assert_eq!(task.operation, "storagevolume.wipe", "{task:?}");
    let task = task.path;

    let (success, message) = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = signals.next().await {
            let msg = msg.unwrap();
            if msg.header().path().map(|p| p.as_str()) == Some(task.as_str()) {
                let body: (bool, String) = msg.body().deserialize().unwrap();
                return body;
            }
        }
        panic!("signal stream ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no Completed from {task} within 30 s"));
    assert!(success, "{message}");
    assert_eq!(message, "wiped");
}

#[tokio::test(flavor = "multi_thread")]
async fn dbus_task_end_emits_properties_changed_with_the_state() {
    let (_web, pool) = tokio::task::block_in_place(|| {
        let web = Web::admin();
        let pool = TestPool::active("task-props", &web);
        pool.create_volume(&web, "w.img", 16, "raw");
        (web, pool)
    });
    let conn = system_bus().await;
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS_NAME)
        .interface("org.freedesktop.DBus.Properties")
        .member("PropertiesChanged")
        .path_namespace(format!("{ROOT_PATH}/task"))
        .build()
        .unwrap();
    let mut signals = MessageStream::for_match_rule(rule, &conn, None)
        .await
        .unwrap();
    let task = manager(&conn)
        .await
        .wipe_storage_volume(&pool.name, "w.img", CallOptions::default().to_dict())
        .await
        .expect("WipeStorageVolume")
        .path;

    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(msg) = signals.next().await {
            let msg = msg.unwrap();
            if msg.header().path().map(|p| p.as_str()) != Some(task.as_str()) {
                continue;
            }
            let (iface, changed, _): (String, HashMap<String, OwnedVariant>, Vec<String>) =
                msg.body().deserialize().unwrap();
            let state = changed
                .get("State")
                .and_then(|v| String::try_from(v.clone()).ok());
            if iface == TASK_INTERFACE && state.as_deref() == Some("finished") {
                return;
            }
        }
        panic!("signal stream ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no PropertiesChanged State=finished from {task} within 30 s"));
}

#[test]
fn busctl_create_with_kimchi_wait_returns_a_finished_task() {
    let web = Web::admin();
    let pool = TestPool::active("task-wait", &web);
    let task = task_from_busctl(&manager_json(
        "CreateStorageVolume",
        "s(stts)a{sv}",
        &[
            &pool.name,
            "waited.qcow2",
            "64",
            "0",
            "qcow2",
            "1",
            "kimchi.wait",
            "b",
            "true",
        ],
    ));
    assert_eq!(task.state, TaskState::Finished, "{task:?}");
    assert_eq!(task.operation, "storagevolume.create", "{task:?}");
    assert_eq!(task.target_uri, pool.volume_uri("waited.qcow2"), "{task:?}");
    assert!(
        task.end_usec >= task.start_usec && task.end_usec > 0,
        "{task:?}"
    );
    // The Task object agrees with the reply.
    let state = busctl(&[
        "get-property",
        BUS_NAME,
        task.path.as_str(),
        TASK_INTERFACE,
        "State",
    ])
    .expect_ok();
    assert_eq!(state.stdout.trim(), r#"s "finished""#);
    assert_eq!(
        common::image_format_and_size(&pool.file("waited.qcow2")),
        ("qcow2".to_owned(), 64 * MIB)
    );
}

#[test]
fn busctl_wipe_without_kimchi_wait_returns_a_running_task() {
    let web = Web::admin();
    let pool = pool_with_a_slow_volume("task-nowait", &web);
    let task = task_from_busctl(&manager_json(
        "WipeStorageVolume",
        "ssa{sv}",
        &[&pool.name, "big.img", "0"],
    ));
    assert_eq!(task.state, TaskState::Running, "{task:?}");
    assert_eq!(task.end_usec, 0, "{task:?}");
    assert_eq!(task.target_uri, pool.volume_uri("big.img"), "{task:?}");
    let ended = wait_until_ended(&web, &format!("/tasks/{}", task.id));
    assert_eq!(ended["status"], "finished", "{ended}");
}

#[test]
fn busctl_resize_with_kimchi_wait_returns_the_ended_task() {
    let web = Web::admin();
    let pool = TestPool::active("task-resize", &web);
    pool.create_volume(&web, "grow.qcow2", 16, "qcow2");
    let task = task_from_busctl(&manager_json(
        "ResizeStorageVolume",
        "ssta{sv}",
        &[
            &pool.name,
            "grow.qcow2",
            "48",
            "1",
            "kimchi.wait",
            "b",
            "true",
        ],
    ));
    assert_eq!(task.state, TaskState::Finished, "{task:?}");
    assert_eq!(task.operation, "storagevolume.resize", "{task:?}");
    assert_eq!(task.target_uri, pool.volume_uri("grow.qcow2"), "{task:?}");
    assert_eq!(
        common::image_format_and_size(&pool.file("grow.qcow2")),
        ("qcow2".to_owned(), 48 * MIB)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dbus_task_list_has_the_task_of_a_rest_request() {
    let (web, pool, id) = tokio::task::block_in_place(|| {
        let web = Web::admin();
        let pool = TestPool::active("task-bus-list", &web);
        let resp = web
            .request("POST", &pool.volumes_uri())
            .header("Prefer", "respond-async")
            .json(&json!({"name": "v.img", "capacity": 4, "format": "raw"}))
            .send();
        let id: u32 = expect(resp, 202, "async create").json()["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("numeric id");
        (web, pool, id)
    });
    let conn = system_bus().await;
    let tasks = manager(&conn)
        .await
        .list_tasks(HashMap::new())
        .await
        .expect("ListTasks");
    let task = tasks
        .iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("task {id} not in {tasks:?}"));
    assert_eq!(task.operation, "storagevolume.create");
    assert_eq!(task.target_uri, pool.volume_uri("v.img"));
    assert_eq!(task.path.as_str(), kimchi_dbus::task_path(id));
    drop(web);
}
