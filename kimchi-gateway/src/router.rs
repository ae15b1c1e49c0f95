//! Request paths to typed routes. Segments are percent-decoded one by one, so an
//! encoded `/` stays inside a name and is refused rather than changing the route;
//! nothing is normalised away silently. Which methods a route takes is decided here
//! too, including that the `kimchi_isos` view and the host interfaces are read-only.

use hyper::Method;
use kimchi_dbus::ISO_POOL;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{quote, Error};

/// Longest decoded path segment accepted (a file-name-sized limit; libvirt's names
/// are shorter still).
const MAX_SEGMENT_BYTES: usize = 255;

/// A resource, split by who may use it so that a handler for a protected one
/// cannot be reached without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Public(Public),
    Protected(Protected),
}

/// Answered without login, as in Kimchi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Public {
    Config,
    Capabilities,
    Login,
    /// This API's OpenAPI document.
    OpenApi,
}

/// Needs a session cookie or Basic credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protected {
    Logout,
    Vms,
    Vm(String),
    VmAction(String, VmAction),
    /// Redirects to a fresh PNG of the VM's screen.
    VmScreenshot(String),
    /// The websocket carrying the VM's VNC console.
    VmConsole(String),
    /// The network interfaces of the named VM.
    VmIfaces(String),
    /// VM name and the interface's MAC address.
    VmIface(String, String),
    /// The disks and CD-ROM drives of the named VM.
    VmStorages(String),
    /// VM name and the drive's target device (`vda`, `hdc`, …).
    VmStorage(String, String),
    /// A screenshot image the redirect pointed to (by its id).
    ScreenshotImage(String),
    Templates,
    Template(String),
    StoragePools,
    StoragePool(String),
    StoragePoolAction(String, PoolAction),
    /// The volumes of the named pool.
    StorageVolumes(String),
    /// Pool and volume name.
    StorageVolume(String, String),
    StorageVolumeAction(String, String, VolumeAction),
    Tasks,
    Task(u32),
    Networks,
    Network(String),
    NetworkAction(String, NetworkAction),
    /// The host's network interfaces (read-only).
    Interfaces,
    Interface(String),
}

/// `POST /vms/:name/<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    Start,
    Stop,
    /// The same as `stop` (Kimchi 2's name for it).
    Poweroff,
    /// Asks the guest to shut down; runs as a kimchid task.
    Shutdown,
    Reboot,
    Reset,
    Suspend,
    Resume,
    /// Opens the console to websocket clients of this gateway (Kimchi's `connect`).
    Connect,
}

/// `POST /storagepools/:name/<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolAction {
    Activate,
    Deactivate,
}

/// `POST /networks/:name/<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkAction {
    Activate,
    Deactivate,
}

/// `POST /storagepools/:pool/storagevolumes/:name/<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeAction {
    Resize,
    Wipe,
}

/// A route's methods and the matching `Allow` header value.
struct Methods {
    list: &'static [Method],
    allow: &'static str,
    /// Why the other methods are refused, when it is not just the kind of resource.
    note: Option<&'static str>,
}

const READ_ONLY: Methods = Methods {
    list: &[Method::GET, Method::HEAD],
    allow: "GET, HEAD",
    note: None,
};
const POST_ONLY: Methods = Methods {
    list: &[Method::POST],
    allow: "POST",
    note: None,
};
/// A collection one can add to.
const COLLECTION: Methods = Methods {
    list: &[Method::GET, Method::HEAD, Method::POST],
    allow: "GET, HEAD, POST",
    note: None,
};
/// A resource one can change and delete (VMs and their NICs and drives, templates,
/// networks).
const EDITABLE: Methods = Methods {
    list: &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
    allow: "GET, HEAD, PUT, DELETE",
    note: None,
};
/// A resource one can delete.
const DELETABLE: Methods = Methods {
    list: &[Method::GET, Method::HEAD, Method::DELETE],
    allow: "GET, HEAD, DELETE",
    note: None,
};

const ISO_POOL_NOTE: &str = "kimchi_isos is a read-only view of the ISO images of all active pools";
/// The `kimchi_isos` pool, its volume collection and its volumes.
const ISO_READ_ONLY: Methods = Methods {
    note: Some(ISO_POOL_NOTE),
    ..READ_ONLY
};
/// Actions on `kimchi_isos` and its volumes: no method at all (an empty `Allow`).
const ISO_ACTION: Methods = Methods {
    list: &[],
    allow: "",
    note: Some(ISO_POOL_NOTE),
};

/// What is left as is when a name is put into a path segment: RFC 3986 unreserved
/// characters. Everything else is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` as one path segment of a URI (for `Location` headers and links).
pub fn encode_segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// The API path of a pool.
pub fn pool_uri(pool: &str) -> String {
    format!("/storagepools/{}", encode_segment(pool))
}

/// The API path of a volume.
pub fn volume_uri(pool: &str, volume: &str) -> String {
    format!(
        "{}/storagevolumes/{}",
        pool_uri(pool),
        encode_segment(volume)
    )
}

pub fn vm_uri(name: &str) -> String {
    format!("/vms/{}", encode_segment(name))
}

pub fn vm_iface_uri(vm: &str, mac: &str) -> String {
    format!("{}/ifaces/{}", vm_uri(vm), encode_segment(mac))
}

pub fn vm_storage_uri(vm: &str, dev: &str) -> String {
    format!("{}/storages/{}", vm_uri(vm), encode_segment(dev))
}

pub fn template_uri(name: &str) -> String {
    format!("/templates/{}", encode_segment(name))
}

pub fn task_uri(id: u32) -> String {
    format!("/tasks/{id}")
}

pub fn network_uri(name: &str) -> String {
    format!("/networks/{}", encode_segment(name))
}

impl Route {
    pub fn parse(path: &str) -> Result<Route, Error> {
        let segments = segments(path)?;
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Ok(match segments.as_slice() {
            ["config"] => Route::Public(Public::Config),
            ["config", "capabilities"] => Route::Public(Public::Capabilities),
            ["login"] => Route::Public(Public::Login),
            ["openapi.json"] => Route::Public(Public::OpenApi),
            ["logout"] => Route::Protected(Protected::Logout),
            ["vms"] => Route::Protected(Protected::Vms),
            ["vms", name] => Route::Protected(Protected::Vm(owned(name))),
            ["vms", name, "screenshot"] => Route::Protected(Protected::VmScreenshot(owned(name))),
            ["vms", name, "console"] => Route::Protected(Protected::VmConsole(owned(name))),
            ["vms", name, "ifaces"] => Route::Protected(Protected::VmIfaces(owned(name))),
            ["vms", name, "storages"] => Route::Protected(Protected::VmStorages(owned(name))),
            ["vms", name, action] => match VmAction::parse(action) {
                Some(action) => Route::Protected(Protected::VmAction(owned(name), action)),
                None => return Err(Error::UnknownPath(path.to_owned())),
            },
            ["vms", name, "ifaces", mac] => {
                Route::Protected(Protected::VmIface(owned(name), owned(mac)))
            }
            ["vms", name, "storages", dev] => {
                Route::Protected(Protected::VmStorage(owned(name), owned(dev)))
            }
            ["data", "screenshots", file] => match file.strip_suffix(".png") {
                Some(id) if !id.is_empty() => {
                    Route::Protected(Protected::ScreenshotImage(owned(id)))
                }
                _ => return Err(Error::UnknownPath(path.to_owned())),
            },
            ["templates"] => Route::Protected(Protected::Templates),
            ["templates", name] => Route::Protected(Protected::Template(owned(name))),
            ["storagepools"] => Route::Protected(Protected::StoragePools),
            ["storagepools", pool] => Route::Protected(Protected::StoragePool(owned(pool))),
            ["storagepools", pool, "storagevolumes"] => {
                Route::Protected(Protected::StorageVolumes(owned(pool)))
            }
            ["storagepools", pool, action] => match PoolAction::parse(action) {
                Some(action) => Route::Protected(Protected::StoragePoolAction(owned(pool), action)),
                None => return Err(Error::UnknownPath(path.to_owned())),
            },
            ["storagepools", pool, "storagevolumes", name] => {
                Route::Protected(Protected::StorageVolume(owned(pool), owned(name)))
            }
            ["storagepools", pool, "storagevolumes", name, action] => {
                match VolumeAction::parse(action) {
                    Some(action) => Route::Protected(Protected::StorageVolumeAction(
                        owned(pool),
                        owned(name),
                        action,
                    )),
                    None => return Err(Error::UnknownPath(path.to_owned())),
                }
            }
            ["tasks"] => Route::Protected(Protected::Tasks),
            ["tasks", id] => match parse_task_id(id) {
                Some(id) => Route::Protected(Protected::Task(id)),
                // No task can have this id.
                None => return Err(Error::UnknownPath(path.to_owned())),
            },
            ["networks"] => Route::Protected(Protected::Networks),
            ["networks", name] => Route::Protected(Protected::Network(owned(name))),
            ["networks", name, action] => match NetworkAction::parse(action) {
                Some(action) => Route::Protected(Protected::NetworkAction(owned(name), action)),
                None => return Err(Error::UnknownPath(path.to_owned())),
            },
            ["interfaces"] => Route::Protected(Protected::Interfaces),
            ["interfaces", name] => Route::Protected(Protected::Interface(owned(name))),
            _ => return Err(Error::UnknownPath(path.to_owned())),
        })
    }

    fn methods(&self) -> &'static Methods {
        use Protected as P;
        match self {
            Route::Public(Public::Config | Public::Capabilities | Public::OpenApi)
            | Route::Protected(
                P::VmScreenshot(_)
                | P::VmConsole(_)
                | P::ScreenshotImage(_)
                | P::Tasks
                | P::Task(_)
                | P::Interfaces
                | P::Interface(_),
            ) => &READ_ONLY,
            Route::Public(Public::Login)
            | Route::Protected(P::Logout | P::VmAction(..) | P::NetworkAction(..)) => &POST_ONLY,
            Route::Protected(
                P::Vms | P::VmIfaces(_) | P::VmStorages(_) | P::Templates | P::Networks,
            ) => &COLLECTION,
            Route::Protected(
                P::Vm(_) | P::VmIface(..) | P::VmStorage(..) | P::Template(_) | P::Network(_),
            ) => &EDITABLE,
            // kimchi_isos is decided here, before kimchid is asked to change it.
            Route::Protected(
                P::StoragePool(pool) | P::StorageVolumes(pool) | P::StorageVolume(pool, _),
            ) if pool == ISO_POOL => &ISO_READ_ONLY,
            Route::Protected(
                P::StoragePoolAction(pool, _) | P::StorageVolumeAction(pool, _, _),
            ) if pool == ISO_POOL => &ISO_ACTION,
            Route::Protected(P::StoragePools | P::StorageVolumes(_)) => &COLLECTION,
            Route::Protected(P::StoragePool(_) | P::StorageVolume(..)) => &DELETABLE,
            Route::Protected(P::StoragePoolAction(..) | P::StorageVolumeAction(..)) => &POST_ONLY,
        }
    }

    /// The route's path template, as the OpenAPI document writes it. Every route has
    /// one (the match has no catch-all), and [`TEMPLATES`] lists them all.
    #[cfg(test)]
    pub fn template(&self) -> &'static str {
        use Protected as P;
        match self {
            Route::Public(Public::Config) => "/config",
            Route::Public(Public::Capabilities) => "/config/capabilities",
            Route::Public(Public::Login) => "/login",
            Route::Public(Public::OpenApi) => "/openapi.json",
            Route::Protected(route) => match route {
                P::Logout => "/logout",
                P::Vms => "/vms",
                P::Vm(_) => "/vms/{name}",
                P::VmAction(_, action) => action.template(),
                P::VmScreenshot(_) => "/vms/{name}/screenshot",
                P::VmConsole(_) => "/vms/{name}/console",
                P::VmIfaces(_) => "/vms/{name}/ifaces",
                P::VmIface(..) => "/vms/{name}/ifaces/{mac}",
                P::VmStorages(_) => "/vms/{name}/storages",
                P::VmStorage(..) => "/vms/{name}/storages/{dev}",
                P::ScreenshotImage(_) => "/data/screenshots/{id}.png",
                P::Templates => "/templates",
                P::Template(_) => "/templates/{name}",
                P::StoragePools => "/storagepools",
                P::StoragePool(_) => "/storagepools/{name}",
                P::StoragePoolAction(_, PoolAction::Activate) => "/storagepools/{name}/activate",
                P::StoragePoolAction(_, PoolAction::Deactivate) => {
                    "/storagepools/{name}/deactivate"
                }
                P::StorageVolumes(_) => "/storagepools/{pool}/storagevolumes",
                P::StorageVolume(..) => "/storagepools/{pool}/storagevolumes/{name}",
                P::StorageVolumeAction(_, _, VolumeAction::Resize) => {
                    "/storagepools/{pool}/storagevolumes/{name}/resize"
                }
                P::StorageVolumeAction(_, _, VolumeAction::Wipe) => {
                    "/storagepools/{pool}/storagevolumes/{name}/wipe"
                }
                P::Tasks => "/tasks",
                P::Task(_) => "/tasks/{id}",
                P::Networks => "/networks",
                P::Network(_) => "/networks/{name}",
                P::NetworkAction(_, NetworkAction::Activate) => "/networks/{name}/activate",
                P::NetworkAction(_, NetworkAction::Deactivate) => "/networks/{name}/deactivate",
                P::Interfaces => "/interfaces",
                P::Interface(_) => "/interfaces/{name}",
            },
        }
    }

    pub fn check_method(&self, method: &Method) -> Result<(), Error> {
        let methods = self.methods();
        if methods.list.contains(method) {
            Ok(())
        } else {
            Err(Error::MethodNotAllowed {
                method: method.to_string(),
                allow: methods.allow,
                note: methods.note,
            })
        }
    }
}

/// Every route's path template (see [`Route::template`]), each `{parameter}` being
/// one path segment. The tests check it against the router and the OpenAPI document.
#[cfg(test)]
pub const TEMPLATES: &[&str] = &[
    "/config",
    "/config/capabilities",
    "/login",
    "/openapi.json",
    "/logout",
    "/vms",
    "/vms/{name}",
    "/vms/{name}/start",
    "/vms/{name}/stop",
    "/vms/{name}/poweroff",
    "/vms/{name}/shutdown",
    "/vms/{name}/reboot",
    "/vms/{name}/reset",
    "/vms/{name}/suspend",
    "/vms/{name}/resume",
    "/vms/{name}/connect",
    "/vms/{name}/screenshot",
    "/vms/{name}/console",
    "/vms/{name}/ifaces",
    "/vms/{name}/ifaces/{mac}",
    "/vms/{name}/storages",
    "/vms/{name}/storages/{dev}",
    "/data/screenshots/{id}.png",
    "/templates",
    "/templates/{name}",
    "/storagepools",
    "/storagepools/{name}",
    "/storagepools/{name}/activate",
    "/storagepools/{name}/deactivate",
    "/storagepools/{pool}/storagevolumes",
    "/storagepools/{pool}/storagevolumes/{name}",
    "/storagepools/{pool}/storagevolumes/{name}/resize",
    "/storagepools/{pool}/storagevolumes/{name}/wipe",
    "/tasks",
    "/tasks/{id}",
    "/networks",
    "/networks/{name}",
    "/networks/{name}/activate",
    "/networks/{name}/deactivate",
    "/interfaces",
    "/interfaces/{name}",
];

/// Every route template with the methods the router lets through for it (those of
/// an ordinary name; `kimchi_isos` takes fewer). Each template is checked by parsing
/// a path made from it, so this is what [`Route::parse`] and the method rules do.
#[cfg(test)]
pub fn method_table() -> Vec<(&'static str, &'static [Method])> {
    TEMPLATES
        .iter()
        .map(|&template| {
            let route = Route::parse(&example_path(template))
                .unwrap_or_else(|e| panic!("route template {template}: {e}"));
            assert_eq!(route.template(), template, "route template");
            (template, route.methods().list)
        })
        .collect()
}

/// A path matching `template`, each parameter being `1` (a valid task id and name).
#[cfg(test)]
fn example_path(template: &str) -> String {
    let mut path = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("parameters are closed") + open;
        path.push_str(&rest[..open]);
        path.push('1');
        rest = &rest[close + 1..];
    }
    path.push_str(rest);
    path
}

impl VmAction {
    #[cfg(test)]
    fn template(self) -> &'static str {
        match self {
            VmAction::Start => "/vms/{name}/start",
            VmAction::Stop => "/vms/{name}/stop",
            VmAction::Poweroff => "/vms/{name}/poweroff",
            VmAction::Shutdown => "/vms/{name}/shutdown",
            VmAction::Reboot => "/vms/{name}/reboot",
            VmAction::Reset => "/vms/{name}/reset",
            VmAction::Suspend => "/vms/{name}/suspend",
            VmAction::Resume => "/vms/{name}/resume",
            VmAction::Connect => "/vms/{name}/connect",
        }
    }

    fn parse(segment: &str) -> Option<VmAction> {
        match segment {
            "start" => Some(VmAction::Start),
            "stop" => Some(VmAction::Stop),
            "poweroff" => Some(VmAction::Poweroff),
            "shutdown" => Some(VmAction::Shutdown),
            "reboot" => Some(VmAction::Reboot),
            "reset" => Some(VmAction::Reset),
            "suspend" => Some(VmAction::Suspend),
            "resume" => Some(VmAction::Resume),
            "connect" => Some(VmAction::Connect),
            _ => None,
        }
    }
}

impl PoolAction {
    fn parse(segment: &str) -> Option<PoolAction> {
        match segment {
            "activate" => Some(PoolAction::Activate),
            "deactivate" => Some(PoolAction::Deactivate),
            _ => None,
        }
    }
}

impl NetworkAction {
    fn parse(segment: &str) -> Option<NetworkAction> {
        match segment {
            "activate" => Some(NetworkAction::Activate),
            "deactivate" => Some(NetworkAction::Deactivate),
            _ => None,
        }
    }
}

impl VolumeAction {
    fn parse(segment: &str) -> Option<VolumeAction> {
        match segment {
            "resize" => Some(VolumeAction::Resize),
            "wipe" => Some(VolumeAction::Wipe),
            _ => None,
        }
    }
}

fn owned(segment: &str) -> String {
    segment.to_owned()
}

/// A task id as the API writes it: plain decimal, no sign, no leading zeros.
fn parse_task_id(segment: &str) -> Option<u32> {
    let id: u32 = segment.parse().ok()?;
    (id.to_string() == segment).then_some(id)
}

/// The decoded segments of `path`, one trailing slash tolerated.
fn segments(path: &str) -> Result<Vec<String>, Error> {
    let relative = path.strip_prefix('/').ok_or_else(|| {
        Error::InvalidPath(format!("path '{}' does not start with '/'", quote(path)))
    })?;
    let relative = relative.strip_suffix('/').unwrap_or(relative);
    if relative.is_empty() {
        return Ok(Vec::new());
    }
    relative.split('/').map(decode_segment).collect()
}

fn decode_segment(raw: &str) -> Result<String, Error> {
    let bytes: Vec<u8> = percent_decode_str(raw).collect();
    let why = if bytes.is_empty() {
        "is empty"
    } else if bytes.len() > MAX_SEGMENT_BYTES {
        return Err(Error::InvalidPath(format!(
            "a path segment is longer than {MAX_SEGMENT_BYTES} bytes"
        )));
    } else if bytes == b"." || bytes == b".." {
        "is a relative reference ('.' or '..')"
    } else if bytes.contains(&b'/') {
        "contains an encoded '/'"
    } else if bytes.contains(&0) {
        "contains a NUL byte"
    } else {
        return String::from_utf8(bytes).map_err(|_| {
            Error::InvalidPath(format!("path segment '{}' is not valid UTF-8", quote(raw)))
        });
    };
    Err(Error::InvalidPath(format!(
        "path segment '{}' {why}",
        quote(raw)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(path: &str) -> u16 {
        Route::parse(path).unwrap_err().status().as_u16()
    }

    fn route(path: &str) -> Route {
        Route::parse(path).unwrap()
    }

    fn vm(name: &str) -> Route {
        Route::Protected(Protected::Vm(name.into()))
    }

    const VMS: Route = Route::Protected(Protected::Vms);

    #[test]
    fn every_template_is_a_route_and_back() {
        let table = method_table();
        assert_eq!(table.len(), TEMPLATES.len());
        for (template, methods) in table {
            assert!(!methods.is_empty(), "{template}");
        }
        let mut unique = TEMPLATES.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), TEMPLATES.len(), "a template is listed twice");
        assert_eq!(
            example_path("/storagepools/{pool}/storagevolumes/{name}/wipe"),
            "/storagepools/1/storagevolumes/1/wipe"
        );
        assert_eq!(
            example_path("/data/screenshots/{id}.png"),
            "/data/screenshots/1.png"
        );
    }

    #[test]
    fn known_paths() {
        assert_eq!(route("/config"), Route::Public(Public::Config));
        assert_eq!(
            route("/config/capabilities"),
            Route::Public(Public::Capabilities)
        );
        assert_eq!(route("/login"), Route::Public(Public::Login));
        assert_eq!(route("/logout"), Route::Protected(Protected::Logout));
        assert_eq!(route("/vms"), VMS);
        assert_eq!(route("/vms/web-1"), vm("web-1"));
    }

    #[test]
    fn trailing_slash_is_tolerated() {
        assert_eq!(route("/vms/"), VMS);
        assert_eq!(
            route("/config/capabilities/"),
            Route::Public(Public::Capabilities)
        );
        assert_eq!(route("/vms/a/"), vm("a"));
    }

    #[test]
    fn segments_are_percent_decoded() {
        assert_eq!(route("/vms/my%20vm"), vm("my vm"));
        assert_eq!(route("/vms/caf%C3%A9"), vm("café"));
        assert_eq!(route("/%76ms"), VMS);
    }

    #[test]
    fn unknown_paths_are_404() {
        for path in ["/", "/nonexistent", "/vms/a/b/c", "/configs", "/config/x"] {
            assert_eq!(status(path), 404, "{path}");
        }
    }

    #[test]
    fn odd_paths_are_400() {
        let long = format!("/vms/{}", "x".repeat(256));
        let odd = [
            "/..",
            "/vms/..",
            "/vms/.",
            "/vms/../config",
            "/vms/%2e%2e",
            "/vms/%2E",
            "/vms/a%2Fb",
            "/vms/%00",
            "/vms/%ff",
            "/vms//",
            "//vms",
            "/vms//a",
            long.as_str(),
            "vms",
        ];
        for path in odd {
            assert_eq!(status(path), 400, "{path}");
        }
    }

    #[test]
    fn longest_segment_is_accepted() {
        let name = "x".repeat(MAX_SEGMENT_BYTES);
        assert_eq!(route(&format!("/vms/{name}")), vm(&name));
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let err = VMS.check_method(&Method::DELETE).unwrap_err();
        assert_eq!(err.status().as_u16(), 405);
        assert!(matches!(
            err,
            Error::MethodNotAllowed {
                allow: "GET, HEAD, POST",
                ..
            }
        ));
        let err = route("/config").check_method(&Method::PUT).unwrap_err();
        assert!(matches!(
            err,
            Error::MethodNotAllowed {
                allow: "GET, HEAD",
                ..
            }
        ));
        let err = route("/login").check_method(&Method::GET).unwrap_err();
        assert!(matches!(err, Error::MethodNotAllowed { allow: "POST", .. }));
        assert!(route("/config").check_method(&Method::HEAD).is_ok());
        assert!(route("/vms/a").check_method(&Method::GET).is_ok());
        assert!(route("/logout").check_method(&Method::POST).is_ok());
    }

    #[test]
    fn vm_and_template_paths() {
        let p = |r: Protected| Route::Protected(r);
        assert_eq!(
            route("/vms/a%20b/start"),
            p(Protected::VmAction("a b".into(), VmAction::Start))
        );
        assert_eq!(
            route("/vms/a/stop/"),
            p(Protected::VmAction("a".into(), VmAction::Stop))
        );
        assert_eq!(
            route("/vms/a/connect"),
            p(Protected::VmAction("a".into(), VmAction::Connect))
        );
        assert_eq!(
            route("/vms/a/screenshot"),
            p(Protected::VmScreenshot("a".into()))
        );
        assert_eq!(route("/vms/a/console"), p(Protected::VmConsole("a".into())));
        assert_eq!(
            route("/data/screenshots/f00d.png"),
            p(Protected::ScreenshotImage("f00d".into()))
        );
        assert_eq!(route("/templates"), p(Protected::Templates));
        assert_eq!(
            route("/templates/t%20x"),
            p(Protected::Template("t x".into()))
        );
        assert_eq!(status("/templates/t%2Fx"), 400);
        assert_eq!(status("/vms/a/migrate"), 404);
        assert_eq!(status("/data/screenshots/x.jpg"), 404);
        assert_eq!(status("/data/screenshots/.png"), 404);
        assert!(route("/templates/t").check_method(&Method::PUT).is_ok());
        assert!(route("/templates").check_method(&Method::PUT).is_err());
        assert!(route("/vms/a").check_method(&Method::DELETE).is_ok());
        assert!(route("/vms/a").check_method(&Method::PUT).is_ok());
        assert!(route("/vms/a").check_method(&Method::POST).is_err());
        assert!(route("/vms/a/start").check_method(&Method::GET).is_err());
        assert!(route("/vms/a/screenshot")
            .check_method(&Method::POST)
            .is_err());
        assert_eq!(vm_uri("a b"), "/vms/a%20b");
        assert_eq!(template_uri("t x&y"), "/templates/t%20x%26y");
    }

    #[test]
    fn vm_power_actions() {
        for (segment, action) in [
            ("poweroff", VmAction::Poweroff),
            ("shutdown", VmAction::Shutdown),
            ("reboot", VmAction::Reboot),
            ("reset", VmAction::Reset),
            ("suspend", VmAction::Suspend),
            ("resume", VmAction::Resume),
        ] {
            let path = format!("/vms/web/{segment}");
            assert_eq!(
                route(&path),
                Route::Protected(Protected::VmAction("web".into(), action)),
                "{path}"
            );
            assert_eq!(allowed(&path, Method::POST), Ok(()), "{path}");
            assert_eq!(allowed(&path, Method::GET), Err(("POST", None)), "{path}");
        }
        for path in [
            "/vms/web/Shutdown",
            "/vms/web/shutdown/now",
            "/vms/web/pause",
        ] {
            assert_eq!(status(path), 404, "{path}");
        }
    }

    #[test]
    fn vm_iface_and_storage_paths() {
        use Protected as P;
        let p = |r: Protected| Route::Protected(r);
        assert_eq!(route("/vms/a%20b/ifaces"), p(P::VmIfaces("a b".into())));
        assert_eq!(route("/vms/a/ifaces/"), p(P::VmIfaces("a".into())));
        assert_eq!(
            route("/vms/a/ifaces/52:54:00:12:34:56"),
            p(P::VmIface("a".into(), "52:54:00:12:34:56".into()))
        );
        assert_eq!(
            route("/vms/a/ifaces/52%3A54%3A00%3A12%3A34%3A56/"),
            p(P::VmIface("a".into(), "52:54:00:12:34:56".into()))
        );
        assert_eq!(route("/vms/a/storages"), p(P::VmStorages("a".into())));
        assert_eq!(
            route("/vms/a/storages/vda"),
            p(P::VmStorage("a".into(), "vda".into()))
        );
        for path in [
            "/vms/a/ifaces/x/y",
            "/vms/a/storages/vda/eject",
            "/vms/a/iface",
        ] {
            assert_eq!(status(path), 404, "{path}");
        }
        for path in [
            "/vms/a/ifaces/..",
            "/vms/a/storages/a%2Fb",
            "/vms/%2e/ifaces",
        ] {
            assert_eq!(status(path), 400, "{path}");
        }
        assert_eq!(
            vm_iface_uri("web 1", "52:54:00:12:34:56"),
            "/vms/web%201/ifaces/52%3A54%3A00%3A12%3A34%3A56"
        );
        assert_eq!(vm_storage_uri("web/1", "hdc"), "/vms/web%2F1/storages/hdc");
        // What the gateway writes, it reads back as the same names.
        assert_eq!(
            route(&vm_iface_uri("w é", "52:54:00:AB:cd:ef")),
            p(P::VmIface("w é".into(), "52:54:00:AB:cd:ef".into()))
        );
        assert_eq!(
            route(&vm_storage_uri("w?", "sda")),
            p(P::VmStorage("w?".into(), "sda".into()))
        );
    }

    #[test]
    fn vm_iface_and_storage_methods() {
        let collection = [Method::GET, Method::HEAD, Method::POST];
        let member = [Method::GET, Method::HEAD, Method::PUT, Method::DELETE];
        for path in ["/vms/a/ifaces", "/vms/a/storages"] {
            for method in collection.clone() {
                assert_eq!(allowed(path, method.clone()), Ok(()), "{method} {path}");
            }
            for method in [Method::PUT, Method::DELETE, Method::PATCH] {
                assert_eq!(
                    allowed(path, method.clone()),
                    Err(("GET, HEAD, POST", None)),
                    "{method} {path}"
                );
            }
        }
        for path in [
            "/vms/a",
            "/vms/a/ifaces/52:54:00:12:34:56",
            "/vms/a/storages/hdc",
        ] {
            for method in member.clone() {
                assert_eq!(allowed(path, method.clone()), Ok(()), "{method} {path}");
            }
            for method in [Method::POST, Method::PATCH] {
                assert_eq!(
                    allowed(path, method.clone()),
                    Err(("GET, HEAD, PUT, DELETE", None)),
                    "{method} {path}"
                );
            }
        }
    }

    fn pool(name: &str) -> Route {
        Route::Protected(Protected::StoragePool(name.into()))
    }

    fn volume(pool: &str, name: &str) -> Route {
        Route::Protected(Protected::StorageVolume(pool.into(), name.into()))
    }

    #[test]
    fn storage_paths() {
        use Protected as P;
        let p = |r: Protected| Route::Protected(r);
        assert_eq!(route("/storagepools"), p(P::StoragePools));
        assert_eq!(route("/storagepools/"), p(P::StoragePools));
        assert_eq!(route("/storagepools/default"), pool("default"));
        assert_eq!(
            route("/storagepools/default/activate"),
            p(P::StoragePoolAction("default".into(), PoolAction::Activate))
        );
        assert_eq!(
            route("/storagepools/default/deactivate/"),
            p(P::StoragePoolAction(
                "default".into(),
                PoolAction::Deactivate
            ))
        );
        assert_eq!(
            route("/storagepools/default/storagevolumes"),
            p(P::StorageVolumes("default".into()))
        );
        assert_eq!(
            route("/storagepools/default/storagevolumes/a.img"),
            volume("default", "a.img")
        );
        assert_eq!(
            route("/storagepools/default/storagevolumes/a.img/resize"),
            p(P::StorageVolumeAction(
                "default".into(),
                "a.img".into(),
                VolumeAction::Resize
            ))
        );
        assert_eq!(
            route("/storagepools/default/storagevolumes/a.img/wipe"),
            p(P::StorageVolumeAction(
                "default".into(),
                "a.img".into(),
                VolumeAction::Wipe
            ))
        );
        assert_eq!(route("/tasks"), p(P::Tasks));
        assert_eq!(route("/tasks/12"), p(P::Task(12)));
        assert_eq!(route("/tasks/0"), p(P::Task(0)));
    }

    #[test]
    fn storage_names_are_percent_decoded() {
        assert_eq!(route("/storagepools/my%20pool"), pool("my pool"));
        assert_eq!(
            route("/storagepools/p%C3%A9/storagevolumes/disk%3A1%25.img"),
            volume("pé", "disk:1%.img")
        );
        assert_eq!(
            route("/storagepools/kimchi_isos/storagevolumes/default:f39.iso"),
            volume("kimchi_isos", "default:f39.iso")
        );
    }

    #[test]
    fn storage_names_with_path_tricks_are_400() {
        for path in [
            "/storagepools/..",
            "/storagepools/%2e%2e/storagevolumes",
            "/storagepools/default/storagevolumes/..",
            "/storagepools/default/storagevolumes/a%2Fb",
            "/storagepools/default/storagevolumes/a%00",
            "/storagepools/a%2F..%2Fb/activate",
        ] {
            assert_eq!(status(path), 400, "{path}");
        }
    }

    #[test]
    fn unknown_actions_and_task_ids_are_404() {
        for path in [
            "/storagepools/default/start",
            "/storagepools/default/Activate",
            "/storagepools/default/storagevolumes/a.img/clone",
            "/storagepools/default/storagevolumes/a.img/wipe/now",
            "/storagepools/kimchi_isos/refresh",
            "/tasks/x",
            "/tasks/-1",
            "/tasks/+1",
            "/tasks/01",
            "/tasks/4294967296",
            "/tasks/1/cancel",
        ] {
            assert_eq!(status(path), 404, "{path}");
        }
    }

    fn allowed(path: &str, method: Method) -> Result<(), (&'static str, Option<&'static str>)> {
        match route(path).check_method(&method) {
            Ok(()) => Ok(()),
            Err(Error::MethodNotAllowed { allow, note, .. }) => Err((allow, note)),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn storage_methods() {
        let ok = [
            ("/storagepools", Method::GET),
            ("/storagepools", Method::POST),
            ("/storagepools/p", Method::HEAD),
            ("/storagepools/p", Method::DELETE),
            ("/storagepools/p/activate", Method::POST),
            ("/storagepools/p/storagevolumes", Method::POST),
            ("/storagepools/p/storagevolumes/v", Method::DELETE),
            ("/storagepools/p/storagevolumes/v/resize", Method::POST),
            ("/tasks", Method::GET),
            ("/tasks/1", Method::HEAD),
        ];
        for (path, method) in ok {
            assert_eq!(allowed(path, method.clone()), Ok(()), "{method} {path}");
        }
        let refused = [
            ("/storagepools", Method::DELETE, "GET, HEAD, POST"),
            ("/storagepools/p", Method::POST, "GET, HEAD, DELETE"),
            ("/storagepools/p", Method::PUT, "GET, HEAD, DELETE"),
            ("/storagepools/p/activate", Method::GET, "POST"),
            (
                "/storagepools/p/storagevolumes",
                Method::DELETE,
                "GET, HEAD, POST",
            ),
            (
                "/storagepools/p/storagevolumes/v/wipe",
                Method::DELETE,
                "POST",
            ),
            ("/tasks", Method::POST, "GET, HEAD"),
            ("/tasks/1", Method::DELETE, "GET, HEAD"),
        ];
        for (path, method, allow) in refused {
            assert_eq!(
                allowed(path, method.clone()),
                Err((allow, None)),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn kimchi_isos_is_read_only() {
        for path in [
            "/storagepools/kimchi_isos",
            "/storagepools/kimchi%5Fisos/",
            "/storagepools/kimchi_isos/storagevolumes",
            "/storagepools/kimchi_isos/storagevolumes/default:a.iso",
        ] {
            assert_eq!(allowed(path, Method::GET), Ok(()), "{path}");
            for method in [Method::POST, Method::DELETE, Method::PUT] {
                let (allow, note) = allowed(path, method.clone()).unwrap_err();
                assert_eq!(allow, "GET, HEAD", "{method} {path}");
                assert!(note.is_some_and(|n| n.contains("read-only")));
            }
        }
        for path in [
            "/storagepools/kimchi_isos/activate",
            "/storagepools/kimchi_isos/deactivate",
            "/storagepools/kimchi_isos/storagevolumes/default:a.iso/resize",
            "/storagepools/kimchi_isos/storagevolumes/default:a.iso/wipe",
        ] {
            for method in [Method::POST, Method::GET] {
                let (allow, note) = allowed(path, method.clone()).unwrap_err();
                assert_eq!(allow, "", "{method} {path}");
                assert!(note.is_some());
            }
        }
        // Only the exact name is special.
        assert_eq!(
            allowed("/storagepools/kimchi_isos2", Method::DELETE),
            Ok(())
        );
    }

    fn network(name: &str) -> Route {
        Route::Protected(Protected::Network(name.into()))
    }

    #[test]
    fn network_and_interface_paths() {
        use Protected as P;
        let p = |r: Protected| Route::Protected(r);
        assert_eq!(route("/networks"), p(P::Networks));
        assert_eq!(route("/networks/"), p(P::Networks));
        assert_eq!(route("/networks/default"), network("default"));
        assert_eq!(route("/networks/my%20net/"), network("my net"));
        assert_eq!(route("/networks/n%C3%A9t"), network("nét"));
        assert_eq!(
            route("/networks/default/activate"),
            p(P::NetworkAction("default".into(), NetworkAction::Activate))
        );
        assert_eq!(
            route("/networks/a%20b/deactivate/"),
            p(P::NetworkAction("a b".into(), NetworkAction::Deactivate))
        );
        assert_eq!(route("/interfaces"), p(P::Interfaces));
        assert_eq!(route("/interfaces/"), p(P::Interfaces));
        assert_eq!(route("/interfaces/eth0"), p(P::Interface("eth0".into())));
        assert_eq!(
            route("/interfaces/eth0.12"),
            p(P::Interface("eth0.12".into()))
        );
        assert_eq!(network_uri("net 1/é"), "/networks/net%201%2F%C3%A9");
        assert_eq!(route(&network_uri("net #1?")), network("net #1?"));
    }

    #[test]
    fn network_and_interface_odd_paths() {
        for path in [
            "/networks/a%2Fb",
            "/networks/..",
            "/networks/%2e",
            "/networks/a%00",
            "/networks/a%2Fb/activate",
            "/interfaces/a%2Fb",
            "/interfaces/..",
        ] {
            assert_eq!(status(path), 400, "{path}");
        }
        for path in [
            "/networks/default/start",
            "/networks/default/Activate",
            "/networks/default/activate/now",
            "/interfaces/eth0/activate",
            "/interfaces/eth0/x/y",
            "/network",
            "/interface",
        ] {
            assert_eq!(status(path), 404, "{path}");
        }
    }

    #[test]
    fn network_and_interface_methods() {
        let ok = [
            ("/networks", Method::GET),
            ("/networks", Method::HEAD),
            ("/networks", Method::POST),
            ("/networks/n", Method::GET),
            ("/networks/n", Method::HEAD),
            ("/networks/n", Method::PUT),
            ("/networks/n", Method::DELETE),
            ("/networks/n/activate", Method::POST),
            ("/networks/n/deactivate", Method::POST),
            ("/interfaces", Method::GET),
            ("/interfaces", Method::HEAD),
            ("/interfaces/eth0", Method::GET),
            ("/interfaces/eth0", Method::HEAD),
        ];
        for (path, method) in ok {
            assert_eq!(allowed(path, method.clone()), Ok(()), "{method} {path}");
        }
        let refused = [
            ("/networks", Method::PUT, "GET, HEAD, POST"),
            ("/networks", Method::DELETE, "GET, HEAD, POST"),
            ("/networks/n", Method::POST, "GET, HEAD, PUT, DELETE"),
            ("/networks/n", Method::PATCH, "GET, HEAD, PUT, DELETE"),
            ("/networks/n/activate", Method::GET, "POST"),
            ("/networks/n/deactivate", Method::DELETE, "POST"),
            ("/interfaces", Method::POST, "GET, HEAD"),
            ("/interfaces", Method::DELETE, "GET, HEAD"),
            ("/interfaces/eth0", Method::PUT, "GET, HEAD"),
            ("/interfaces/eth0", Method::DELETE, "GET, HEAD"),
            ("/interfaces/eth0", Method::POST, "GET, HEAD"),
        ];
        for (path, method, allow) in refused {
            assert_eq!(
                allowed(path, method.clone()),
                Err((allow, None)),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn names_are_encoded_into_uris() {
        assert_eq!(pool_uri("default"), "/storagepools/default");
        assert_eq!(pool_uri("my pool/é"), "/storagepools/my%20pool%2F%C3%A9");
        assert_eq!(
            volume_uri("p", "a-b_c.d~e%f?g#h"),
            "/storagepools/p/storagevolumes/a-b_c.d~e%25f%3Fg%23h"
        );
        assert_eq!(task_uri(7), "/tasks/7");
        // What the gateway writes, it reads back as the same names.
        let (p, v) = ("my pool:ü%", "disk #1?.img");
        assert_eq!(route(&volume_uri(p, v)), volume(p, v));
        assert_eq!(route(&pool_uri(p)), pool(p));
    }
}
