//! `/vms`, `/vms/:name` and its actions: virtual machines as Kimchi shows them.
//! Creation and `shutdown` run as kimchid tasks, answered through [`tasks::reply`].
//! A `PUT` sends kimchid only the fields it names ([`VmPatch`]); kimchid checks them.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use hyper::StatusCode;
use kimchi_dbus::{VmInfo, VmPatch, VmState, VmStats, MAX_SHUTDOWN_TIMEOUT_SECS};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body::{self, Integer, Text};
use crate::error::Error;
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;
use crate::resources::tasks::{self, Respond};
use crate::router::{self, Protected, Route, VmAction};

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Vm {
    name: String,
    uuid: String,
    state: VmState,
    stats: VmStats,
    /// MiB, as in Kimchi.
    memory: u64,
    /// Where a fresh screenshot is, while the VM runs.
    screenshot: Option<String>,
    icon: Option<String>,
    graphics: Graphics,
    cpus: u32,
    autostart: bool,
    /// "" when unset.
    title: String,
    description: String,
    /// The stored definition differs from what the running guest has.
    pending_changes: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Graphics {
    /// "vnc", or null when the guest has no graphics Kimchi can show.
    #[serde(rename = "type")]
    kind: Option<&'static str>,
    /// This gateway's port, once `connect` was called and while the VM runs.
    port: Option<u16>,
    /// The console websocket's path on that port (noVNC, subprotocol `binary`).
    path: Option<String>,
}

/// VMs whose console was opened with `connect` on this gateway, by UUID (names can
/// be reused), each with when it was connected.
///
/// An entry goes when the VM is stopped through this gateway. A VM deleted (here,
/// where `DELETE` names it only by name, or behind the gateway's back) is dropped by
/// the next `GET /vms`: kimchid's `ListVMs` returns every defined VM, so an entry for
/// a UUID it no longer returns is a VM that is gone (UUIDs are not reused). The set
/// thus holds at most the VMs that exist plus those deleted since the last listing,
/// which Kimchi's UI requests every few seconds. Entries made after the listing was
/// asked for are kept: that VM may be newer than the list.
#[derive(Debug, Default)]
pub struct Consoles(Mutex<HashMap<String, Instant>>);

impl Consoles {
    fn set(&self, uuid: &str, connected: bool) {
        let mut set = self.0.lock().expect("console set poisoned");
        if connected {
            set.insert(uuid.to_owned(), Instant::now());
        } else {
            set.remove(uuid);
        }
    }

    fn is_connected(&self, uuid: &str) -> bool {
        self.0
            .lock()
            .expect("console set poisoned")
            .contains_key(uuid)
    }

    /// Forgets the VMs missing from a complete listing asked for at `asked`.
    fn keep_only(&self, listed: &HashSet<&str>, asked: Instant) {
        self.0
            .lock()
            .expect("console set poisoned")
            .retain(|uuid, connected| listed.contains(uuid.as_str()) || *connected >= asked);
    }
}

/// What a VM's representation depends on besides kimchid's answer.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// The port this request came in on: the console's port.
    pub local_port: u16,
    pub consoles: &'a Consoles,
}

impl View<'_> {
    fn vm(&self, info: VmInfo) -> Vm {
        let running = info.state.has_screen();
        let vnc = info.graphics_type == "vnc";
        let uri = router::vm_uri(&info.name);
        let connected = running && vnc && self.consoles.is_connected(&info.uuid);
        Vm {
            screenshot: running.then(|| format!("{uri}/screenshot")),
            graphics: Graphics {
                kind: vnc.then_some("vnc"),
                port: connected.then_some(self.local_port),
                path: connected.then(|| format!("{uri}/console")),
            },
            icon: (!info.icon.is_empty()).then_some(info.icon),
            name: info.name,
            uuid: info.uuid,
            state: info.state,
            stats: info.stats,
            memory: info.memory_mib,
            cpus: info.cpus,
            autostart: info.autostart,
            title: info.title,
            description: info.description,
            pending_changes: info.pending_changes,
        }
    }
}

/// `POST /vms`. Other fields are ignored, as Kimchi did.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewVm {
    /// Chosen by kimchid (`<template>-vm-<n>`) when left out or empty (Kimchi's UI
    /// sends its empty name field).
    name: Option<Text>,
    /// `/templates/<name>`.
    template: Text,
    /// `/storagepools/<name>`; the `default` pool when left out.
    storagepool: Option<Text>,
}

/// The body of `PUT /vms/:name`: strict, so a misspelt field is a 400 rather than a
/// change silently not made. kimchid checks the values.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = VmChanges)]
pub(crate) struct Changes {
    /// A new name: the VM is renamed (shut-off VMs only).
    name: Option<Text>,
    cpus: Option<Integer<u32>>,
    /// MiB.
    memory: Option<Integer<u64>>,
    autostart: Option<bool>,
    title: Option<Text>,
    description: Option<Text>,
}

impl Changes {
    /// `UpdateVM`'s change: the fields given here, and only those.
    fn into_patch(self) -> VmPatch {
        VmPatch {
            name: self.name.map(String::from),
            cpus: self.cpus.map(Integer::get),
            memory_mib: self.memory.map(Integer::get),
            autostart: self.autostart,
            title: self.title.map(String::from),
            description: self.description.map(String::from),
        }
    }
}

/// `POST /vms/:name/shutdown`; other fields are ignored, as for every action.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Shutdown {
    /// Seconds, 1 to [`MAX_SHUTDOWN_TIMEOUT_SECS`]; kimchid's default when left out.
    timeout: Option<Integer<u32>>,
    /// Power the guest off if it is still running after `timeout`.
    force: Option<bool>,
}

impl Shutdown {
    /// `ShutdownVM`'s `timeout_sec` (0: kimchid's default) and `force`. The range is
    /// checked here because 0 on the wire means the default, not "at once".
    fn arguments(self) -> Result<(u32, bool), Error> {
        let timeout = match self.timeout.map(Integer::get) {
            None => 0,
            Some(secs @ 1..=MAX_SHUTDOWN_TIMEOUT_SECS) => secs,
            Some(secs) => {
                return Err(Error::InvalidBody(format!(
                    "timeout must be from 1 to {MAX_SHUTDOWN_TIMEOUT_SECS} seconds, not {secs}"
                )))
            }
        };
        Ok((timeout, self.force.unwrap_or(false)))
    }
}

/// The arguments of `CreateVM`: names, where empty ones ask kimchid to choose (the
/// VM's name) or take the default (the pool).
#[derive(Debug, PartialEq, Eq)]
struct Creation {
    template: String,
    name: String,
    pool: String,
}

impl TryFrom<NewVm> for Creation {
    type Error = Error;

    fn try_from(new: NewVm) -> Result<Self, Error> {
        let template = match Route::parse(&String::from(new.template)) {
            Ok(Route::Protected(Protected::Template(name))) => name,
            _ => {
                return Err(Error::InvalidBody(
                    "template must be the URI of a template, like /templates/<name>".into(),
                ))
            }
        };
        let pool = match new.storagepool.map(|uri| Route::parse(&String::from(uri))) {
            None => String::new(),
            Some(Ok(Route::Protected(Protected::StoragePool(name)))) => name,
            Some(_) => {
                return Err(Error::InvalidBody(
                    "storagepool must be the URI of a storage pool, like /storagepools/<name>"
                        .into(),
                ))
            }
        };
        Ok(Creation {
            template,
            name: new.name.map(String::from).unwrap_or_default(),
            pool,
        })
    }
}

pub async fn list(kimchid: &Kimchid, call: &Call<'_>, view: View<'_>) -> Result<Reply, Error> {
    let asked = Instant::now();
    let infos = kimchid.manager().await?.list_vms(call.options()).await?;
    view.consoles
        .keep_only(&infos.iter().map(|i| i.uuid.as_str()).collect(), asked);
    let vms: Vec<Vm> = infos.into_iter().map(|info| view.vm(info)).collect();
    Ok(Reply::ok(&vms))
}

pub async fn get(
    kimchid: &Kimchid,
    call: &Call<'_>,
    view: View<'_>,
    name: &str,
) -> Result<Reply, Error> {
    Ok(Reply::ok(&view.vm(vm(kimchid, call, name).await?)))
}

async fn vm(kimchid: &Kimchid, call: &Call<'_>, name: &str) -> Result<VmInfo, Error> {
    Ok(kimchid
        .manager()
        .await?
        .get_vm(name, call.options())
        .await?)
}

/// 201 with the new VM and its `Location`, once created (shut off, as in Kimchi).
pub async fn create(
    kimchid: &Kimchid,
    call: &Call<'_>,
    respond: Respond,
    view: View<'_>,
    body: &[u8],
) -> Result<Reply, Error> {
    let Creation {
        template,
        name,
        pool,
    } = body::json::<NewVm>(body)?.try_into()?;
    let started = kimchid
        .manager()
        .await?
        .create_vm(&template, &name, &pool, call.task_options(respond.wait()))
        .await;
    tasks::reply(respond, started, async |task| {
        let name = task
            .target_uri
            .strip_prefix("/vms/")
            .ok_or_else(|| Error::BadReply(format!("VM task has target '{}'", task.target_uri)))?;
        Ok(with_location(
            view,
            StatusCode::CREATED,
            vm(kimchid, call, name).await?,
        ))
    })
    .await
}

/// 200 with the changed VM, or 303 to its new URI when it was renamed.
pub async fn update(
    kimchid: &Kimchid,
    call: &Call<'_>,
    view: View<'_>,
    name: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    let changes = body::json::<Changes>(body)?.into_patch().to_dict();
    let info = kimchid
        .manager()
        .await?
        .update_vm(name, changes, call.options())
        .await?;
    if info.name == name {
        Ok(Reply::ok(&view.vm(info)))
    } else {
        Ok(with_location(view, StatusCode::SEE_OTHER, info))
    }
}

/// 204 once kimchid deleted the VM; its console entry goes with the next listing
/// (see [`Consoles`]).
pub async fn delete(
    kimchid: &Kimchid,
    call: &Call<'_>,
    name: &str,
    body: &[u8],
) -> Result<Reply, Error> {
    body::no_parameters(body)?;
    kimchid
        .manager()
        .await?
        .delete_vm(name, call.options())
        .await?;
    Ok(Reply::no_content())
}

/// 200 with the VM as the action left it (`shutdown`: see [`shutdown`]).
pub async fn action(
    kimchid: &Kimchid,
    call: &Call<'_>,
    respond: Respond,
    view: View<'_>,
    name: &str,
    action: VmAction,
    body: &[u8],
) -> Result<Reply, Error> {
    if action != VmAction::Shutdown {
        body::action_without_parameters(body)?;
    }
    let manager = kimchid.manager().await?;
    let info = match action {
        VmAction::Shutdown => {
            return shutdown(kimchid, call, respond, view, name, body::action(body)?).await
        }
        VmAction::Start => manager.start_vm(name, call.options()).await?,
        VmAction::Stop | VmAction::Poweroff => {
            let info = manager.stop_vm(name, call.options()).await?;
            view.consoles.set(&info.uuid, false);
            info
        }
        VmAction::Reboot => manager.reboot_vm(name, call.options()).await?,
        VmAction::Reset => manager.reset_vm(name, call.options()).await?,
        VmAction::Suspend => manager.suspend_vm(name, call.options()).await?,
        VmAction::Resume => manager.resume_vm(name, call.options()).await?,
        VmAction::Connect => {
            let info = manager.get_vm(name, call.options()).await?;
            // Opening (and closing) a console checks the caller may use it and that
            // the VM can give one, so the websocket later fails only for new reasons.
            drop(kimchid.open_console(call, &info).await?);
            view.consoles.set(&info.uuid, true);
            info
        }
    };
    Ok(Reply::ok(&view.vm(info)))
}

/// 200 with the VM once it is off; 202 while the task runs; 409 when the guest
/// was still running at the timeout ([`Error::of_shutdown`]).
async fn shutdown(
    kimchid: &Kimchid,
    call: &Call<'_>,
    respond: Respond,
    view: View<'_>,
    name: &str,
    params: Shutdown,
) -> Result<Reply, Error> {
    let (timeout, force) = params.arguments()?;
    let started = kimchid
        .manager()
        .await?
        .shutdown_vm(name, timeout, force, call.task_options(respond.wait()))
        .await;
    tasks::reply(respond, started, async |_| {
        let info = vm(kimchid, call, name).await?;
        view.consoles.set(&info.uuid, false);
        Ok(Reply::ok(&view.vm(info)))
    })
    .await
    .map_err(Error::of_shutdown)
}

fn with_location(view: View<'_>, status: StatusCode, info: VmInfo) -> Reply {
    let uri = router::vm_uri(&info.name);
    Reply::json(status, &view.vm(info)).with_location(&uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kimchi_dbus::{TaskInfo, TaskState};

    fn info(state: VmState, graphics: &str) -> VmInfo {
        VmInfo {
            path: zbus::OwnedObjectPath::try_from(kimchi_dbus::vm_path("u-1")).unwrap(),
            name: "web 1".into(),
            uuid: "u-1".into(),
            state,
            memory_mib: 1024,
            graphics_type: graphics.into(),
            icon: String::new(),
            stats: VmStats::default(),
            cpus: 2,
            autostart: false,
            title: String::new(),
            description: String::new(),
            pending_changes: false,
        }
    }

    #[test]
    fn vm_json_has_kimchi_keys() {
        let consoles = Consoles::default();
        let view = View {
            local_port: 8001,
            consoles: &consoles,
        };
        let doc = serde_json::to_value(view.vm(info(VmState::Shutoff, "vnc"))).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "name": "web 1", "uuid": "u-1", "state": "shutoff", "memory": 1024,
                "stats": {
                    "cpu_utilization": 0.0, "net_throughput": 0.0, "net_throughput_peak": 100.0,
                    "io_throughput": 0.0, "io_throughput_peak": 100.0
                },
                "screenshot": null, "icon": null,
                "graphics": {"type": "vnc", "port": null, "path": null},
                "cpus": 2, "autostart": false, "title": "", "description": "",
                "pending_changes": false
            })
        );
        let edited = VmInfo {
            autostart: true,
            title: "Web".into(),
            description: "line 1\nline 2".into(),
            pending_changes: true,
            ..info(VmState::Running, "vnc")
        };
        let doc = serde_json::to_value(view.vm(edited)).unwrap();
        assert_eq!(doc["autostart"], true);
        assert_eq!(doc["title"], "Web");
        assert_eq!(doc["description"], "line 1\nline 2");
        assert_eq!(doc["pending_changes"], true);
    }

    #[test]
    fn running_connected_vm_shows_screenshot_and_console() {
        let consoles = Consoles::default();
        let view = View {
            local_port: 8443,
            consoles: &consoles,
        };
        let doc = serde_json::to_value(view.vm(info(VmState::Running, "vnc"))).unwrap();
        assert_eq!(doc["screenshot"], "/vms/web%201/screenshot");
        assert_eq!(doc["graphics"]["port"], serde_json::Value::Null);
        consoles.set("u-1", true);
        let doc = serde_json::to_value(view.vm(info(VmState::Running, "vnc"))).unwrap();
        assert_eq!(doc["graphics"]["port"], 8443);
        assert_eq!(doc["graphics"]["path"], "/vms/web%201/console");
        // A stopped VM has no console to show, connected or not.
        let doc = serde_json::to_value(view.vm(info(VmState::Shutoff, "vnc"))).unwrap();
        assert_eq!(doc["graphics"]["port"], serde_json::Value::Null);
    }

    #[test]
    fn graphics_other_than_vnc_is_null() {
        let consoles = Consoles::default();
        let view = View {
            local_port: 1,
            consoles: &consoles,
        };
        for graphics in ["", "spice"] {
            let doc = serde_json::to_value(view.vm(info(VmState::Running, graphics))).unwrap();
            assert_eq!(doc["graphics"]["type"], serde_json::Value::Null);
        }
    }

    #[test]
    fn vm_state_is_the_state_word_and_paused_vms_have_a_screen() {
        let consoles = Consoles::default();
        let view = View {
            local_port: 1,
            consoles: &consoles,
        };
        for (state, word, screen) in [
            (VmState::NoState, "nostate", false),
            (VmState::Running, "running", true),
            (VmState::Blocked, "blocked", false),
            (VmState::Paused, "paused", true),
            (VmState::Shutdown, "shutdown", false),
            (VmState::Shutoff, "shutoff", false),
            (VmState::Crashed, "crashed", false),
            (VmState::PmSuspended, "pmsuspended", false),
        ] {
            let doc = serde_json::to_value(view.vm(info(state, "vnc"))).unwrap();
            assert_eq!(doc["state"], word);
            assert_eq!(doc["screenshot"].is_string(), screen, "{word}");
        }
    }

    fn creation(body: &str) -> Result<Creation, Error> {
        body::json::<NewVm>(body.as_bytes()).and_then(Creation::try_from)
    }

    #[test]
    fn creation_names_template_pool_and_vm() {
        let c = creation(
            r#"{"name": "web 1", "template": "/templates/deb%2012",
                "storagepool": "/storagepools/alt"}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Creation {
                template: "deb 12".into(),
                name: "web 1".into(),
                pool: "alt".into(),
            }
        );
    }

    #[test]
    fn empty_or_missing_name_asks_kimchid_to_choose() {
        for body in [
            r#"{"template": "/templates/t"}"#,
            r#"{"name": "", "template": "/templates/t"}"#,
        ] {
            assert_eq!(
                creation(body).unwrap(),
                Creation {
                    template: "t".into(),
                    name: String::new(),
                    pool: String::new(),
                },
                "{body}"
            );
        }
    }

    #[test]
    fn unknown_creation_fields_are_ignored() {
        let c = creation(r#"{"template": "/templates/t", "cpus": "2", "memory": 2048}"#).unwrap();
        assert_eq!(c.template, "t");
    }

    #[test]
    fn template_or_pool_that_is_not_their_uri_is_400() {
        for (body, message) in [
            (
                r#"{"template": "t"}"#,
                "template must be the URI of a template, like /templates/<name>",
            ),
            (
                r#"{"template": "/templates/t", "storagepool": "/vms/x"}"#,
                "storagepool must be the URI of a storage pool, like /storagepools/<name>",
            ),
        ] {
            let err = creation(body).unwrap_err();
            assert_eq!(err.status().as_u16(), 400);
            assert_eq!(err.to_string(), message);
        }
        let err = creation(r#"{"name": "x"}"#).unwrap_err();
        assert!(
            err.to_string().contains("missing field `template`"),
            "{err}"
        );
    }

    fn patch(body: &str) -> Result<VmPatch, Error> {
        body::json::<Changes>(body.as_bytes()).map(Changes::into_patch)
    }

    #[test]
    fn put_body_becomes_a_patch_of_only_its_fields() {
        assert_eq!(
            patch(
                r#"{"name": "web 2", "cpus": 4, "memory": "2048", "autostart": true,
                    "title": "Web", "description": "a\nb"}"#
            )
            .unwrap(),
            VmPatch {
                name: Some("web 2".into()),
                cpus: Some(4),
                memory_mib: Some(2048),
                autostart: Some(true),
                title: Some("Web".into()),
                description: Some("a\nb".into()),
            }
        );
        let only_cpus = patch(r#"{"cpus": "2"}"#).unwrap();
        assert_eq!(
            only_cpus,
            VmPatch {
                cpus: Some(2),
                ..VmPatch::default()
            }
        );
        assert_eq!(only_cpus.to_dict().keys().collect::<Vec<_>>(), ["cpus"]);
        // Empty texts clear a title or description; values are kimchid's to check.
        assert_eq!(
            patch(r#"{"title": "", "cpus": 0}"#).unwrap(),
            VmPatch {
                title: Some(String::new()),
                cpus: Some(0),
                ..VmPatch::default()
            }
        );
        assert!(patch("{}").unwrap().is_empty());
    }

    #[test]
    fn put_is_strict() {
        for (body, what) in [
            (
                r#"{"cpus": 2, "state": "running"}"#,
                "unknown field `state`",
            ),
            (r#"{"memory_mib": 2048}"#, "unknown field `memory_mib`"),
            (r#"{"cpus": "two"}"#, "invalid value"),
            (r#"{"cpus": -1}"#, "invalid value"),
            (r#"{"cpus": 4294967296}"#, "invalid value"),
            (r#"{"memory": 1.5}"#, "invalid type"),
            (r#"{"autostart": "true"}"#, "invalid type"),
            (r#"{"name": 7}"#, "invalid type"),
            (r#"{"title": "a\u0000"}"#, "NUL"),
            ("", "JSON object"),
        ] {
            let err = patch(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(err.to_string().contains(what), "{body}: {err}");
        }
    }

    #[test]
    fn rename_points_to_the_new_uri() {
        let consoles = Consoles::default();
        let view = View {
            local_port: 1,
            consoles: &consoles,
        };
        let r = with_location(view, StatusCode::SEE_OTHER, info(VmState::Shutoff, "vnc"))
            .into_response(false);
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[hyper::header::LOCATION], "/vms/web%201");
    }

    fn shutdown(body: &str) -> Result<(u32, bool), Error> {
        body::action::<Shutdown>(body.as_bytes()).and_then(Shutdown::arguments)
    }

    #[test]
    fn shutdown_body_is_optional_and_lenient() {
        for (body, arguments) in [
            ("", (0, false)),
            ("{}", (0, false)),
            (r#"{"timeout": 30}"#, (30, false)),
            (r#"{"timeout": "3600", "force": true}"#, (3600, true)),
            (r#"{"timeout": 1, "force": false}"#, (1, false)),
            (
                r#"{"force": true, "name": "web", "state": "running"}"#,
                (0, true),
            ),
            (r#"{"timeout": null, "force": null}"#, (0, false)),
        ] {
            assert_eq!(shutdown(body).unwrap(), arguments, "{body}");
        }
    }

    #[test]
    fn bad_shutdown_bodies_are_400() {
        for (body, what) in [
            (
                r#"{"timeout": 0}"#,
                "timeout must be from 1 to 3600 seconds, not 0",
            ),
            (
                r#"{"timeout": 3601}"#,
                "timeout must be from 1 to 3600 seconds, not 3601",
            ),
            (r#"{"timeout": -5}"#, "invalid value"),
            (r#"{"timeout": 2.5}"#, "invalid type"),
            (r#"{"timeout": "soon"}"#, "invalid value"),
            (r#"{"force": "yes"}"#, "invalid type"),
            (r#"{"force": 1}"#, "invalid type"),
            ("[]", "JSON object"),
        ] {
            let err = shutdown(body).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(err.to_string().contains(what), "{body}: {err}");
        }
    }

    fn task(state: TaskState) -> TaskInfo {
        TaskInfo {
            path: zbus::OwnedObjectPath::try_from(kimchi_dbus::task_path(3)).unwrap(),
            id: 3,
            operation: "vm.shutdown".into(),
            state,
            message: "VM 'web 1' did not shut down within 120 s".into(),
            target_uri: "/vms/web 1".into(),
            progress: 1.0,
            start_usec: 1,
            end_usec: 2,
        }
    }

    /// What `shutdown` answers for kimchid's reply, with `done` standing in for the VM.
    async fn shutdown_answer(respond: Respond, state: TaskState) -> Result<StatusCode, Error> {
        let reply = tasks::reply(respond, Ok(task(state)), async |_| Ok(Reply::ok(&"the VM")))
            .await
            .map_err(Error::of_shutdown)?;
        Ok(reply.status())
    }

    #[tokio::test]
    async fn failed_shutdown_is_409_with_the_tasks_message() {
        let err = shutdown_answer(Respond::Wait, TaskState::Failed)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::CONFLICT);
        assert_eq!(err.to_string(), "VM 'web 1' did not shut down within 120 s");
        assert_eq!(err.body().task.as_deref(), Some("3"));
        for (respond, state, status) in [
            (Respond::Wait, TaskState::Finished, StatusCode::OK),
            (Respond::Wait, TaskState::Running, StatusCode::ACCEPTED),
            (Respond::Async, TaskState::Failed, StatusCode::ACCEPTED),
        ] {
            assert_eq!(
                shutdown_answer(respond, state).await.unwrap(),
                status,
                "{respond:?} {state}"
            );
        }
    }

    #[test]
    fn listing_forgets_consoles_of_vms_that_are_gone() {
        let consoles = Consoles::default();
        consoles.set("kept", true);
        consoles.set("deleted", true);
        let asked = Instant::now();
        // Connected while the listing was on its way: not in it, but not gone.
        consoles.set("newer", true);
        consoles.keep_only(&HashSet::from(["kept", "never-connected"]), asked);
        assert!(consoles.is_connected("kept"));
        assert!(!consoles.is_connected("deleted"));
        assert!(consoles.is_connected("newer"));
        assert!(!consoles.is_connected("never-connected"));
        assert_eq!(consoles.0.lock().unwrap().len(), 2);
    }
}
