//! `GET /openapi.json`: the OpenAPI 3.1 document of this API. The schemas are derived
//! (utoipa's `ToSchema`) from the very types the resources parse requests into and
//! answer with; the operations are listed here, and a test compares them with the
//! router's table of routes and methods, both ways. Built and serialized once.

use std::sync::OnceLock;

use bytes::Bytes;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Header, OpenApi, Ref, RefOr, Required};
use utoipa::OpenApi as _;

use crate::auth::SESSION_COOKIE;
use crate::error::ErrorBody;
use crate::reply::Reply;
use crate::resources::{
    config, interfaces, login, networks, storage_pools, storage_volumes, tasks, templates,
    vm_ifaces, vm_storages, vms,
};

/// The document's schemas: every request and response type of the resources.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    ErrorBody,
    config::Config,
    config::Capabilities,
    login::LoginRequest,
    login::LoginReply,
    vms::Vm,
    vms::NewVm,
    vms::Changes,
    vms::Shutdown,
    vm_ifaces::Iface,
    vm_ifaces::NewIface,
    vm_ifaces::Changes,
    vm_storages::Storage,
    vm_storages::NewStorage,
    vm_storages::Changes,
    templates::Template,
    templates::Fields,
    storage_pools::Pool,
    storage_pools::NewPool,
    storage_volumes::Volume,
    storage_volumes::NewVolume,
    storage_volumes::Resize,
    tasks::Task,
    networks::Network,
    networks::NewNetwork,
    networks::Changes,
    interfaces::Interface,
)))]
struct Schemas;

/// The longest path segment the router takes (bytes; see `router.rs`).
const MAX_SEGMENT: usize = 255;

const DESCRIPTION: &str = "The Kimchi REST API, served by kimchi-gateway and answered by \
kimchid over D-Bus. Bodies are JSON objects (`Content-Type: application/json`); numbers may \
also be sent as strings of decimal digits, as Kimchi's UI does. Every error is a JSON \
`ErrorBody`. Protected routes take the session cookie of `POST /login` (with its \
`X-CSRF-Token`, or `X-Requested-With: XMLHttpRequest`, on requests that change something) or \
HTTP Basic credentials. Requests that start a task (VM creation and shutdown, volume creation, \
resize and wipe) wait for it by default; with `Prefer: respond-async` they answer 202 with the \
task and its `Location` at once. The `kimchi_isos` pool and its volumes are a read-only view: \
writes there are 405. Lists in request bodies are bounded (maxItems): longer ones are 400.";

/// The serialized document, built on first use.
pub fn document() -> &'static Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let json = build().to_json().expect("the document serializes");
        Bytes::from(json)
    })
}

pub fn get() -> Reply {
    Reply::json_bytes(document().clone())
}

fn build() -> OpenApi {
    let mut doc = Schemas::openapi();
    doc.info.title = "Kimchi".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(DESCRIPTION.into());
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            SESSION_COOKIE,
            "The session cookie set by POST /login",
        ))),
    );
    components.add_security_scheme(
        "csrf",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-CSRF-Token",
            "The csrf_token of POST /login; needed with the session cookie on requests \
             that change something (or X-Requested-With: XMLHttpRequest instead)",
        ))),
    );
    components.add_security_scheme(
        "basic",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
    );
    for &code in ERROR_STATUSES {
        for head in [false, true] {
            components
                .responses
                .insert(error_name(code, head), error_response(code, head).into());
        }
    }
    for op in operations() {
        if op.method == HttpMethod::Get {
            doc.paths
                .add_path_operation(op.path, vec![HttpMethod::Head], op.build(true));
        }
        doc.paths
            .add_path_operation(op.path, vec![op.method.clone()], op.build(false));
    }
    doc
}

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Public,
    Protected,
}

/// What an operation takes as its body.
enum Input {
    /// No body is read.
    None,
    /// A JSON object of this schema.
    Json(RefOr<Schema>),
    /// An action's body: none, or any JSON object, of which the fields of this schema
    /// (when there is one) are used.
    Action(Option<RefOr<Schema>>),
    /// None, or `{}`.
    Nothing,
}

/// A successful answer.
struct Success {
    status: u16,
    description: &'static str,
    content: Content,
    /// The answer names a resource in `Location`.
    location: bool,
}

enum Content {
    None,
    Json(Box<RefOr<Schema>>),
    Png,
}

struct Op {
    method: HttpMethod,
    path: &'static str,
    summary: &'static str,
    access: Access,
    input: Input,
    successes: Vec<Success>,
    /// Error statuses besides those every operation of its kind can answer.
    errors: Vec<u16>,
    /// Starts a kimchid task: `Prefer: respond-async`, 202, 504.
    task: bool,
}

/// Every status an error can have, each a reusable response.
const ERROR_STATUSES: &[u16] = &[
    400, 401, 403, 404, 405, 406, 409, 413, 415, 426, 429, 500, 501, 502, 503, 504,
];

fn error_name(code: u16, head: bool) -> String {
    if head {
        format!("Error{code}Head")
    } else {
        format!("Error{code}")
    }
}

fn error_response(code: u16, head: bool) -> Response {
    let description = match code {
        400 => "The request is malformed: a path segment, the body, or a value in it",
        401 => "No credentials, or credentials or a session that are not valid",
        403 => "Not authorized (polkit), or a missing CSRF token, or a cross-site request",
        404 => "No such resource",
        405 => "The method is not allowed here (kimchi_isos is read-only)",
        406 => "The Accept header excludes application/json",
        409 => "The resource's state or a name already in use does not allow it",
        413 => "The request body is larger than the gateway's limit",
        415 => "The request body is not application/json",
        426 => "Not a websocket handshake",
        429 => "Too many failed logins: try again after Retry-After seconds",
        500 => "The backend failed (a task, libvirt or the host)",
        501 => "The host does not support this",
        502 => "kimchid answered something the gateway cannot use",
        503 => "kimchid is not reachable",
        504 => "The task did not end in time; it may still be running (see /tasks)",
        _ => unreachable!("an error status without a description"),
    };
    let mut response = ResponseBuilder::new().description(description);
    if !head {
        response = response.content("application/json", json(schema_ref("ErrorBody")));
    }
    let header = |description: &str| {
        let mut header = Header::new(ObjectBuilder::new().schema_type(Type::String));
        header.description = Some(description.into());
        header
    };
    match code {
        401 => {
            response = response.header(
                "WWW-Authenticate",
                header("A Basic challenge, unless the request came from a page script"),
            )
        }
        405 => response = response.header("Allow", header("The methods allowed here")),
        429 => response = response.header("Retry-After", header("Seconds to wait")),
        _ => {}
    }
    response.build()
}

fn json(schema: RefOr<Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn list_of(name: &str) -> RefOr<Schema> {
    ArrayBuilder::new().items(schema_ref(name)).into()
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

impl Op {
    fn new(method: HttpMethod, path: &'static str, summary: &'static str) -> Op {
        Op {
            method,
            path,
            summary,
            access: Access::Protected,
            input: Input::None,
            successes: Vec::new(),
            errors: Vec::new(),
            task: false,
        }
    }

    fn public(mut self) -> Op {
        self.access = Access::Public;
        self
    }

    fn input(mut self, input: Input) -> Op {
        self.input = input;
        self
    }

    fn ok(self, status: u16, description: &'static str, content: Content) -> Op {
        self.success(status, description, content, false)
    }

    fn located(self, status: u16, description: &'static str, content: Content) -> Op {
        self.success(status, description, content, true)
    }

    fn success(
        mut self,
        status: u16,
        description: &'static str,
        content: Content,
        location: bool,
    ) -> Op {
        self.successes.push(Success {
            status,
            description,
            content,
            location,
        });
        self
    }

    fn errors(mut self, errors: &[u16]) -> Op {
        self.errors.extend_from_slice(errors);
        self
    }

    /// Starts a task: also 202 with the task, and 504.
    fn task(mut self) -> Op {
        self.task = true;
        self.located(
            202,
            "The task still runs (or Prefer: respond-async was sent): the task, whose URI \
             is in Location",
            Content::Json(Box::new(schema_ref("Task"))),
        )
    }

    /// The error statuses of this operation, sorted.
    fn error_statuses(&self) -> Vec<u16> {
        let mut errors = self.errors.clone();
        // Every request: Accept, Content-Type and size of a body.
        errors.extend([406, 413, 415]);
        if self.access == Access::Protected {
            // Path segments, credentials and their throttling, polkit, kimchid.
            errors.extend([400, 401, 403, 429, 500, 502, 503]);
            if self.path.contains('{') {
                errors.push(404);
            }
            if self.method != HttpMethod::Get {
                errors.extend([409, 501]);
            }
        }
        if self.method != HttpMethod::Get {
            // A cross-site request.
            errors.push(403);
        }
        if !matches!(self.input, Input::None) {
            errors.push(400);
        }
        if self.task {
            errors.push(504);
        }
        errors.sort_unstable();
        errors.dedup();
        errors
    }

    fn build(&self, head: bool) -> Operation {
        let method = if head {
            "head"
        } else {
            method_name(&self.method)
        };
        let mut op = OperationBuilder::new()
            .summary(Some(self.summary))
            .operation_id(Some(operation_id(method, self.path)))
            .tag(self.path.split('/').nth(1).unwrap_or_default());
        for parameter in path_parameters(self.path) {
            op = op.parameter(parameter);
        }
        if self.task {
            op = op.parameter(
                ParameterBuilder::new()
                    .name("Prefer")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "respond-async: answer 202 with the task at once instead of waiting",
                    ))
                    .schema(Some(string().enum_values(Some(["respond-async"])))),
            );
        }
        if !head {
            op = op.request_body(self.request_body());
        }
        for success in &self.successes {
            op = op.response(success.status.to_string(), success.response(head));
        }
        for code in self.error_statuses() {
            op = op.response(
                code.to_string(),
                RefOr::Ref(Ref::from_response_name(error_name(code, head))),
            );
        }
        op = match self.access {
            // An empty requirement: no credentials needed.
            Access::Public => op.security(SecurityRequirement::default()),
            Access::Protected => {
                let none = Vec::<String>::new;
                let session = if self.method == HttpMethod::Get {
                    SecurityRequirement::new("session", none())
                } else {
                    SecurityRequirement::new("session", none()).add("csrf", none())
                };
                op.security(session)
                    .security(SecurityRequirement::new("basic", none()))
            }
        };
        op.build()
    }

    fn request_body(&self) -> Option<utoipa::openapi::request_body::RequestBody> {
        let (schema, required, description) = match &self.input {
            Input::None => return None,
            Input::Json(schema) => (schema.clone(), true, "A JSON object"),
            Input::Action(Some(schema)) => (
                schema.clone(),
                false,
                "None, or a JSON object; other fields are ignored",
            ),
            Input::Action(None) => (
                ObjectBuilder::new().into(),
                false,
                "None, or any JSON object (ignored)",
            ),
            Input::Nothing => (
                ObjectBuilder::new().max_properties(Some(0)).into(),
                false,
                "None, or an empty JSON object",
            ),
        };
        Some(
            RequestBodyBuilder::new()
                .description(Some(description))
                .required(Some(if required {
                    Required::True
                } else {
                    Required::False
                }))
                .content("application/json", json(schema))
                .build(),
        )
    }
}

impl Success {
    fn response(&self, head: bool) -> Response {
        let mut response = ResponseBuilder::new().description(self.description);
        if !head {
            response = match &self.content {
                Content::None => response,
                Content::Json(schema) => {
                    response.content("application/json", json(*schema.clone()))
                }
                Content::Png => response.content(
                    "image/png",
                    ContentBuilder::new()
                        .schema(Some(string().content_media_type("image/png")))
                        .build(),
                ),
            };
        }
        if self.location {
            let mut header = Header::new(string());
            header.description = Some("The URI of the resource or task".into());
            response = response.header("Location", header);
        }
        if self.status == 202 {
            let mut header = Header::new(string().enum_values(Some(["respond-async"])));
            header.description = Some("respond-async, when the request asked for it".into());
            response = response.header("Preference-Applied", header);
        }
        response.build()
    }
}

fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "get",
        HttpMethod::Post => "post",
        HttpMethod::Put => "put",
        HttpMethod::Delete => "delete",
        HttpMethod::Head => "head",
        HttpMethod::Options => "options",
        HttpMethod::Patch => "patch",
        HttpMethod::Trace => "trace",
    }
}

/// `get_vms_name_ifaces_mac` for `GET /vms/{name}/ifaces/{mac}`.
fn operation_id(method: &str, path: &str) -> String {
    let words = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty());
    std::iter::once(method)
        .chain(words)
        .collect::<Vec<_>>()
        .join("_")
}

/// The `{parameters}` of a path template.
fn path_parameters(path: &str) -> Vec<utoipa::openapi::path::Parameter> {
    let mut parameters = Vec::new();
    let mut previous = "";
    for segment in path.split('/') {
        if let Some(start) = segment.find('{') {
            let end = segment.find('}').expect("parameters are closed");
            let name = &segment[start + 1..end];
            let (description, schema): (&str, ObjectBuilder) = match (previous, name) {
                ("tasks", "id") => (
                    "The task's id",
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0))
                        .maximum(Some(u32::MAX)),
                ),
                ("screenshots", "id") => {
                    ("The image's id, from the screenshot's Location", string())
                }
                (_, "mac") => ("The NIC's MAC address", string()),
                (_, "dev") => ("The drive's target device (vda, hdc, …)", string()),
                (_, "pool") => ("The storage pool's name", string()),
                ("storagevolumes", _) => ("The volume's name", string()),
                ("storagepools", _) => ("The storage pool's name", string()),
                ("vms", _) => ("The VM's name", string()),
                ("templates", _) => ("The template's name", string()),
                ("networks", _) => ("The network's name", string()),
                ("interfaces", _) => ("The host interface's name", string()),
                _ => unreachable!("a parameter without a description: {path}"),
            };
            let schema = if name == "id" && previous == "tasks" {
                schema
            } else {
                schema.min_length(Some(1)).max_length(Some(MAX_SEGMENT))
            };
            parameters.push(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(description))
                    .schema(Some(schema))
                    .build(),
            );
        }
        previous = segment;
    }
    parameters
}

/// Every operation of the API (HEAD is added for every GET).
fn operations() -> Vec<Op> {
    use HttpMethod::{Delete, Get, Post, Put};
    let one = |name: &str| Content::Json(Box::new(schema_ref(name)));
    let list = |name: &str| Content::Json(Box::new(list_of(name)));
    let body = |name: &str| Input::Json(schema_ref(name));
    let action = |name: &str| Input::Action(Some(schema_ref(name)));
    let new_template = AllOfBuilder::new()
        .item(schema_ref("TemplateFields"))
        .item(ObjectBuilder::new().required("name"))
        .into();
    let screenshot = ObjectBuilder::new()
        .property("screenshot", string())
        .required("screenshot")
        .into();
    let renamed = "Renamed: the resource at its new URI, in Location";
    let mut ops = vec![
        Op::new(Get, "/config", "The port clients should use")
            .public()
            .ok(200, "The configuration", one("Config")),
        Op::new(Get, "/config/capabilities", "What this host can do")
            .public()
            .ok(200, "The capabilities", one("Capabilities"))
            .errors(&[500, 502, 503]),
        Op::new(Post, "/login", "Open a session")
            .public()
            .input(body("LoginRequest"))
            .ok(
                200,
                "The session: its cookie in Set-Cookie, and its CSRF token",
                one("LoginReply"),
            )
            .errors(&[401, 429, 500, 502, 503]),
        Op::new(Get, "/openapi.json", "This document").public().ok(
            200,
            "The OpenAPI document",
            Content::Json(Box::new(ObjectBuilder::new().into())),
        ),
        Op::new(Post, "/logout", "Close the session")
            .input(Input::Action(None))
            .ok(204, "Closed; the cookie is cleared", Content::None),
        Op::new(Get, "/vms", "List the VMs").ok(200, "The VMs", list("Vm")),
        Op::new(Post, "/vms", "Create a VM from a template")
            .input(body("NewVm"))
            .located(201, "The new VM (shut off)", one("Vm"))
            // No such template or pool.
            .errors(&[404])
            .task(),
        Op::new(Get, "/vms/{name}", "A VM").ok(200, "The VM", one("Vm")),
        Op::new(Put, "/vms/{name}", "Change a VM")
            .input(body("VmChanges"))
            .ok(200, "The changed VM", one("Vm"))
            .located(303, renamed, one("Vm")),
        Op::new(
            Delete,
            "/vms/{name}",
            "Delete a VM and the volumes made for it",
        )
        .input(Input::Nothing)
        .ok(204, "Deleted", Content::None),
        Op::new(Post, "/vms/{name}/shutdown", "Ask the guest to shut down")
            .input(action("Shutdown"))
            .ok(200, "The VM, off", one("Vm"))
            .task(),
        Op::new(
            Get,
            "/vms/{name}/screenshot",
            "A screenshot of a running VM",
        )
        .located(
            303,
            "The image's URI, in Location and the body",
            Content::Json(Box::new(screenshot)),
        ),
        Op::new(
            Get,
            "/vms/{name}/console",
            "The VNC console, as a websocket",
        )
        .ok(101, "The websocket (subprotocol binary)", Content::None)
        .errors(&[426]),
        Op::new(Get, "/vms/{name}/ifaces", "List a VM's NICs").ok(200, "The NICs", list("Iface")),
        Op::new(Post, "/vms/{name}/ifaces", "Attach a NIC")
            .input(body("NewIface"))
            .located(201, "The new NIC", one("Iface")),
        Op::new(Get, "/vms/{name}/ifaces/{mac}", "A VM's NIC").ok(200, "The NIC", one("Iface")),
        Op::new(Put, "/vms/{name}/ifaces/{mac}", "Change a NIC")
            .input(body("IfaceChanges"))
            .ok(200, "The changed NIC", one("Iface")),
        Op::new(Delete, "/vms/{name}/ifaces/{mac}", "Detach a NIC")
            .input(Input::Nothing)
            .ok(204, "Detached", Content::None),
        Op::new(Get, "/vms/{name}/storages", "List a VM's drives").ok(
            200,
            "The drives",
            list("Storage"),
        ),
        Op::new(Post, "/vms/{name}/storages", "Attach a drive")
            .input(body("NewStorage"))
            .located(201, "The new drive", one("Storage")),
        Op::new(Get, "/vms/{name}/storages/{dev}", "A VM's drive").ok(
            200,
            "The drive",
            one("Storage"),
        ),
        Op::new(
            Put,
            "/vms/{name}/storages/{dev}",
            "Change a CD-ROM's medium",
        )
        .input(body("StorageChanges"))
        .ok(200, "The drive", one("Storage")),
        Op::new(Delete, "/vms/{name}/storages/{dev}", "Detach a drive")
            .input(Input::Nothing)
            .ok(204, "Detached", Content::None),
        Op::new(Get, "/data/screenshots/{id}.png", "A screenshot image").ok(
            200,
            "The PNG",
            Content::Png,
        ),
        Op::new(Get, "/templates", "List the templates").ok(200, "The templates", list("Template")),
        Op::new(Post, "/templates", "Create a template")
            .input(Input::Json(new_template))
            .located(
                201,
                "The template as stored, defaults filled in",
                one("Template"),
            ),
        Op::new(Get, "/templates/{name}", "A template").ok(200, "The template", one("Template")),
        Op::new(Put, "/templates/{name}", "Change a template")
            .input(body("TemplateFields"))
            .ok(200, "The changed template", one("Template"))
            .located(303, renamed, one("Template")),
        Op::new(Delete, "/templates/{name}", "Delete a template")
            .input(Input::Nothing)
            .ok(204, "Deleted", Content::None),
        Op::new(Get, "/storagepools", "List the storage pools").ok(200, "The pools", list("Pool")),
        Op::new(Post, "/storagepools", "Define a storage pool")
            .input(body("NewPool"))
            .located(201, "The new (inactive) pool", one("Pool")),
        Op::new(Get, "/storagepools/{name}", "A storage pool").ok(200, "The pool", one("Pool")),
        Op::new(Delete, "/storagepools/{name}", "Undefine a storage pool")
            .input(Input::Nothing)
            .ok(204, "Deleted", Content::None)
            .errors(&[405]),
        Op::new(
            Get,
            "/storagepools/{pool}/storagevolumes",
            "List a pool's volumes",
        )
        .ok(200, "The volumes", list("Volume"))
        // Volumes are read from the pool, which must be active.
        .errors(&[409]),
        Op::new(
            Post,
            "/storagepools/{pool}/storagevolumes",
            "Create a volume",
        )
        .input(body("NewVolume"))
        .located(201, "The new volume", one("Volume"))
        .errors(&[405])
        .task(),
        Op::new(
            Get,
            "/storagepools/{pool}/storagevolumes/{name}",
            "A volume",
        )
        .ok(200, "The volume", one("Volume"))
        .errors(&[409]),
        Op::new(
            Delete,
            "/storagepools/{pool}/storagevolumes/{name}",
            "Delete a volume",
        )
        .input(Input::Nothing)
        .ok(204, "Deleted", Content::None)
        .errors(&[405]),
        Op::new(
            Post,
            "/storagepools/{pool}/storagevolumes/{name}/resize",
            "Resize a volume",
        )
        .input(Input::Json(schema_ref("Resize")))
        .ok(200, "The resized volume", one("Volume"))
        .errors(&[405])
        .task(),
        Op::new(
            Post,
            "/storagepools/{pool}/storagevolumes/{name}/wipe",
            "Wipe a volume",
        )
        .input(Input::Action(None))
        .ok(200, "The wiped volume", one("Volume"))
        .errors(&[405])
        .task(),
        Op::new(Get, "/tasks", "List the tasks").ok(200, "The tasks", list("Task")),
        Op::new(Get, "/tasks/{id}", "A task").ok(200, "The task", one("Task")),
        Op::new(Get, "/networks", "List the virtual networks").ok(
            200,
            "The networks",
            list("Network"),
        ),
        Op::new(Post, "/networks", "Define a virtual network")
            .input(body("NewNetwork"))
            .located(201, "The new (inactive) network", one("Network")),
        Op::new(Get, "/networks/{name}", "A virtual network").ok(
            200,
            "The network",
            one("Network"),
        ),
        Op::new(Put, "/networks/{name}", "Change a virtual network")
            .input(body("NetworkChanges"))
            .ok(200, "The changed network", one("Network"))
            .located(303, renamed, one("Network")),
        Op::new(Delete, "/networks/{name}", "Undefine a virtual network")
            .input(Input::Nothing)
            .ok(204, "Deleted", Content::None),
        Op::new(Get, "/interfaces", "List the host's network interfaces").ok(
            200,
            "The interfaces",
            list("Interface"),
        ),
        Op::new(Get, "/interfaces/{name}", "A host network interface").ok(
            200,
            "The interface",
            one("Interface"),
        ),
    ];
    for (path, summary) in [
        ("/vms/{name}/start", "Start a VM"),
        ("/vms/{name}/stop", "Power a VM off"),
        ("/vms/{name}/poweroff", "Power a VM off (as stop)"),
        ("/vms/{name}/reboot", "Reboot a VM"),
        ("/vms/{name}/reset", "Reset a VM"),
        ("/vms/{name}/suspend", "Pause a VM"),
        ("/vms/{name}/resume", "Resume a paused VM"),
        (
            "/vms/{name}/connect",
            "Open a VM's console to websocket clients of this gateway",
        ),
    ] {
        ops.push(Op::new(Post, path, summary).input(Input::Action(None)).ok(
            200,
            "The VM as the action left it",
            one("Vm"),
        ));
    }
    for (path, summary) in [
        ("/storagepools/{name}/activate", "Activate a storage pool"),
        (
            "/storagepools/{name}/deactivate",
            "Deactivate a storage pool",
        ),
    ] {
        ops.push(
            Op::new(Post, path, summary)
                .input(Input::Action(None))
                .ok(200, "The pool as the action left it", one("Pool"))
                .errors(&[405]),
        );
    }
    for (path, summary) in [
        ("/networks/{name}/activate", "Activate a virtual network"),
        (
            "/networks/{name}/deactivate",
            "Deactivate a virtual network",
        ),
    ] {
        ops.push(Op::new(Post, path, summary).input(Input::Action(None)).ok(
            200,
            "The network as the action left it",
            one("Network"),
        ));
    }
    ops
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::router;

    fn doc() -> Value {
        serde_json::from_slice(document()).unwrap()
    }

    #[test]
    fn is_openapi_3_1_json() {
        let doc = doc();
        let version = doc["openapi"].as_str().unwrap();
        assert!(version.starts_with("3.1."), "{version}");
        assert_eq!(doc["info"]["title"], "Kimchi");
    }

    /// The router's routes and methods, and the document's paths and operations, are
    /// the same sets: a route missing from the document, or documented but not
    /// routed, fails here.
    #[test]
    fn documents_every_route_and_method_and_nothing_else() {
        let routed: BTreeSet<(String, String)> = router::method_table()
            .into_iter()
            .flat_map(|(template, methods)| {
                methods
                    .iter()
                    .map(move |m| (template.to_owned(), m.as_str().to_lowercase()))
            })
            .collect();
        let doc = doc();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|key| {
                        [
                            "get", "head", "post", "put", "delete", "patch", "options", "trace",
                        ]
                        .contains(&key.as_str())
                    })
                    .map(move |method| (path.clone(), method.clone()))
            })
            .collect();
        let missing: Vec<_> = routed.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(missing.is_empty(), "routed but not documented: {missing:?}");
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    }

    /// Every `$ref` points at something the document defines.
    #[test]
    fn every_reference_resolves() {
        fn refs(value: &Value, found: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        found.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, found));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
                _ => {}
            }
        }
        let doc = doc();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 100, "{}", found.len());
        for r in found {
            let pointer = r.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "dangling {r}");
        }
    }

    #[test]
    fn operations_carry_their_statuses_security_and_parameters() {
        let doc = doc();
        let op = &doc["paths"]["/vms"]["post"];
        for status in ["201", "202", "400", "401", "403", "409", "503", "504"] {
            assert!(op["responses"][status].is_object(), "POST /vms {status}");
        }
        assert!(op["responses"]["202"]["headers"]["Location"].is_object());
        assert_eq!(op["parameters"][0]["name"], "Prefer");
        assert_eq!(
            op["security"][0],
            serde_json::json!({"session": [], "csrf": []})
        );
        assert_eq!(op["security"][1], serde_json::json!({"basic": []}));
        let op = &doc["paths"]["/storagepools/{pool}/storagevolumes/{name}"]["delete"];
        let names: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["pool", "name"]);
        assert!(op["responses"]["405"].is_object());
        assert!(op["responses"]["404"].is_object());
        let config = &doc["paths"]["/config"]["get"];
        assert_eq!(config["security"], serde_json::json!([{}]));
        assert!(config["responses"]["401"].is_null());
        let head = &doc["paths"]["/vms"]["head"];
        assert!(head["responses"]["200"]["content"].is_null());
        assert_eq!(
            doc["components"]["responses"]["Error404"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }

    #[test]
    fn request_lists_have_their_limits() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let resolve = |schema: &Value| match schema["$ref"].as_str() {
            Some(r) => doc.pointer(r.strip_prefix('#').unwrap()).unwrap().clone(),
            None => schema.clone(),
        };
        let max_items = |schema: &Value| -> Option<u64> {
            // `Option<List>` is a oneOf of null and the list.
            let list = match schema["oneOf"].as_array() {
                Some(items) => items.iter().find(|s| s["type"] != "null").unwrap().clone(),
                None => schema.clone(),
            };
            resolve(&list)["maxItems"].as_u64()
        };
        assert_eq!(
            max_items(&schemas["TemplateFields"]["properties"]["folder"]),
            Some(64)
        );
        assert_eq!(
            max_items(&schemas["TemplateFields"]["properties"]["disks"]),
            Some(32)
        );
        assert_eq!(
            max_items(&schemas["PoolSource"]["properties"]["devices"]),
            Some(64)
        );
        assert_eq!(
            max_items(&schemas["NewNetwork"]["properties"]["interfaces"]),
            Some(32)
        );
    }
}
