//! Everything a request can end in besides success, mapped once to an HTTP status and
//! Kimchi's JSON error document `{"code", "reason", "error"}`.

use hyper::StatusCode;
use kimchi_dbus::Error as BusError;
use serde::Serialize;
use zbus::fdo::Error as Fdo;
use zbus::DBusError;

use crate::kimchid::CALL_TIMEOUT;

/// Value of `error` when the problem was found by the gateway itself.
const GATEWAY_PREFIX: &str = "kimchi.gateway";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidPath(String),
    #[error("no resource at '{}'", quote(.0))]
    UnknownPath(String),
    /// Something the gateway looked for in what kimchid listed and did not find
    /// (a host interface, a VM's NIC or drive: kimchid has no call for a single one).
    #[error("{0}")]
    NotFound(String),
    #[error("{}", method_not_allowed(.method, .allow, *.note))]
    MethodNotAllowed {
        method: String,
        /// The `Allow` header value; empty when no method is.
        allow: &'static str,
        /// Why, when the resource is special (such as a read-only view).
        note: Option<&'static str>,
    },
    #[error("this API only produces application/json; the Accept header excludes it")]
    NotAcceptable,
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("this API only accepts application/json request bodies, not '{}'", quote(.0))]
    UnsupportedMediaType(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("authentication required: log in (POST /login) or use HTTP Basic")]
    NoCredentials,
    #[error("this is a websocket endpoint: send a websocket handshake")]
    UpgradeRequired,
    #[error("{0}")]
    InvalidCredentials(String),
    #[error("{0}")]
    CsrfRejected(&'static str),
    /// Too many failed (or concurrent) logins from this address, or for this user at
    /// it (`throttle.rs`).
    #[error(
        "too many login attempts from this address; try again in {} s",
        retry_after_secs(*.retry_after)
    )]
    Throttled { retry_after: std::time::Duration },
    /// kimchid answered, or could not be reached; see [`Error::status`].
    #[error("{}", bus_reason(.0))]
    Kimchid(#[from] BusError),
    /// kimchid answered something this gateway cannot use (version skew).
    #[error("{0}")]
    BadReply(String),
    /// A task kimchid started (after checking the request) failed: the backend's fault.
    #[error("{message}")]
    TaskFailed { id: u32, message: String },
    /// A shutdown task failed: the guest was still running when its timeout ran out
    /// and no `force` was asked. See [`Error::of_shutdown`].
    #[error("{message}")]
    ShutdownFailed { id: u32, message: String },
    /// A call that waits for its task took longer than the bus call timeout; the
    /// task may still run, and its id is unknown to the gateway.
    #[error(
        "the operation did not end within {secs} s and may still be running (GET /tasks \
         lists it); send 'Prefer: respond-async' to get its task at once",
        secs = .0.as_secs()
    )]
    TaskWaitTimedOut(std::time::Duration),
}

impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Self {
        // Turns replies named org.kimchi.Kimchi1.Error.* into their variants.
        Error::Kimchid(BusError::from(e))
    }
}

impl Error {
    /// The error of a call that starts a task (`CreateVM`, `CreateStorageVolume`, …),
    /// made with `kimchi.wait` when `waited`. kimchid answers a waiting call within
    /// its own bound (`kimchi.wait-timeout`, under [`CALL_TIMEOUT`]), so when the bus
    /// call times out all the same, the task is slow rather than kimchid gone: it may
    /// still run, and its id is unknown here. That is 504 [`Error::TaskWaitTimedOut`],
    /// not the 503 of an unreachable kimchid. Every other error maps as any call's.
    pub fn from_task_call(e: BusError, waited: bool) -> Error {
        match e {
            BusError::ZBus(zbus::Error::InputOutput(io))
                if waited && io.kind() == std::io::ErrorKind::TimedOut =>
            {
                Error::TaskWaitTimedOut(CALL_TIMEOUT)
            }
            other => Error::from(other),
        }
    }

    /// The error of a shutdown answered through `tasks::reply`, the one deliberate
    /// remap of a failed task: kimchid fails a shutdown task when the guest ignored the
    /// request within the timeout, which is the guest's state getting in the way (409,
    /// as any power action the state refuses), not the backend failing (500).
    pub fn of_shutdown(self) -> Error {
        match self {
            Error::TaskFailed { id, message } => Error::ShutdownFailed { id, message },
            other => other,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidPath(_) | Error::InvalidBody(_) => StatusCode::BAD_REQUEST,
            Error::UnknownPath(_) | Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::NoCredentials | Error::InvalidCredentials(_) => StatusCode::UNAUTHORIZED,
            Error::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Error::CsrfRejected(_) => StatusCode::FORBIDDEN,
            Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Kimchid(e) => bus_status(e),
            Error::BadReply(_) => StatusCode::BAD_GATEWAY,
            Error::TaskFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Error::ShutdownFailed { .. } => StatusCode::CONFLICT,
            Error::TaskWaitTimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `error` field: the D-Bus error name kimchid sent, or `kimchi.gateway.*`.
    pub fn name(&self) -> String {
        let local = match self {
            Error::InvalidPath(_) => "InvalidPath",
            Error::UnknownPath(_) | Error::NotFound(_) => "NotFound",
            Error::MethodNotAllowed { .. } => "MethodNotAllowed",
            Error::NotAcceptable => "NotAcceptable",
            Error::BodyTooLarge { .. } => "PayloadTooLarge",
            Error::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Error::InvalidBody(_) => "InvalidBody",
            Error::NoCredentials => "AuthenticationRequired",
            Error::UpgradeRequired => "UpgradeRequired",
            Error::InvalidCredentials(_) => "InvalidCredentials",
            Error::CsrfRejected(_) => "CsrfRejected",
            Error::Throttled { .. } => "Throttled",
            Error::Kimchid(BusError::ZBus(z)) if unreachable(z) => "KimchidUnreachable",
            Error::Kimchid(BusError::ZBus(_)) | Error::BadReply(_) => "BadReply",
            Error::TaskFailed { .. } => "TaskFailed",
            Error::ShutdownFailed { .. } => "ShutdownFailed",
            Error::TaskWaitTimedOut(_) => "TaskWaitTimedOut",
            Error::Kimchid(e) => return e.name().to_string(),
        };
        format!("{GATEWAY_PREFIX}.{local}")
    }

    pub fn body(&self) -> ErrorBody {
        let status = self.status();
        ErrorBody {
            code: format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            ),
            reason: self.to_string(),
            error: self.name(),
            task: match self {
                Error::TaskFailed { id, .. } | Error::ShutdownFailed { id, .. } => {
                    Some(id.to_string())
                }
                _ => None,
            },
        }
    }
}

/// Kimchi's error document (`code` and `reason` as Kimchi clients expect them).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The status, as `404 Not Found`.
    pub code: String,
    /// What went wrong, for people.
    pub reason: String,
    /// The D-Bus error name kimchid sent (`org.kimchi.Kimchi1.Error.*`), or
    /// `kimchi.gateway.*` when the gateway refused the request itself.
    pub error: String,
    /// The failed task's id (as in `/tasks/:id`), when a task failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// A wait as `Retry-After` gives it: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

fn method_not_allowed(method: &str, allow: &str, note: Option<&str>) -> String {
    let allowed = if allow.is_empty() {
        "no method is".to_owned()
    } else {
        format!("allowed: {allow}")
    };
    match note {
        Some(note) => format!("method {method} is not allowed here ({allowed}): {note}"),
        None => format!("method {method} is not allowed here ({allowed})"),
    }
}

fn bus_status(e: &BusError) -> StatusCode {
    match e {
        BusError::NotFound(_) => StatusCode::NOT_FOUND,
        BusError::AlreadyExists(_) | BusError::InvalidState(_) | BusError::Busy(_) => {
            StatusCode::CONFLICT
        }
        BusError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        BusError::NotAuthorized(_) => StatusCode::FORBIDDEN,
        BusError::SessionInvalid(_) | BusError::AuthenticationFailed(_) => StatusCode::UNAUTHORIZED,
        BusError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
        BusError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        BusError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        BusError::ZBus(z) if unreachable(z) => StatusCode::SERVICE_UNAVAILABLE,
        BusError::ZBus(_) => StatusCode::BAD_GATEWAY,
    }
}

fn bus_reason(e: &BusError) -> String {
    match e {
        // Only the error name: the bus daemon's message describes processes on this
        // host, which is none of an anonymous client's business. The log has it all.
        BusError::ZBus(zbus::Error::FDO(fdo)) if unreachable_fdo(fdo) => {
            format!(
                "kimchid is not reachable on the system bus ({})",
                fdo.name()
            )
        }
        BusError::ZBus(z) if unreachable(z) => {
            format!("kimchid is not reachable on the system bus: {z}")
        }
        BusError::ZBus(z) => format!("unexpected reply from kimchid: {z}"),
        // kimchid's messages may quote what the request named, whatever its size.
        other => bounded(other.description().unwrap_or_default(), MAX_BUS_REASON).into_owned(),
    }
}

/// How much of a value from a request an error message quotes.
const QUOTED_CHARS: usize = 64;

/// The longest message of kimchid's the gateway passes on.
const MAX_BUS_REASON: usize = 1024;

/// `input` as an error message quotes it: its first [`QUOTED_CHARS`] characters, with
/// "…" when there was more, so that a huge value never makes a huge answer.
pub fn quote(input: &str) -> std::borrow::Cow<'_, str> {
    bounded(input, QUOTED_CHARS)
}

/// `text` cut to its first `chars` characters, with "…" when there was more.
pub fn bounded(text: &str, chars: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(chars) {
        None => text.into(),
        Some((end, _)) => format!("{}…", &text[..end]).into(),
    }
}

/// Errors that mean "kimchid (or the bus) is not there right now": retrying later may
/// work, so they are 503, not the gateway's fault nor the user's.
fn unreachable(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::InputOutput(_)
        | zbus::Error::Connection(..)
        | zbus::Error::Handshake(_)
        | zbus::Error::Address(_) => true,
        zbus::Error::FDO(fdo) => unreachable_fdo(fdo),
        _ => false,
    }
}

fn unreachable_fdo(e: &Fdo) -> bool {
    matches!(
        e,
        Fdo::ServiceUnknown(_)
            | Fdo::NameHasNoOwner(_)
            | Fdo::NoReply(_)
            | Fdo::Disconnected(_)
            | Fdo::NoServer(_)
            | Fdo::IOError(_)
            | Fdo::Timeout(_)
            | Fdo::TimedOut(_)
            | Fdo::LimitsExceeded(_)
            // The bus policy does not let the gateway's user talk to kimchid.
            | Fdo::AccessDenied(_)
            // Bus activation of kimchid failed.
            | Fdo::SpawnExecFailed(_)
            | Fdo::SpawnForkFailed(_)
            | Fdo::SpawnChildExited(_)
            | Fdo::SpawnChildSignaled(_)
            | Fdo::SpawnFailed(_)
            | Fdo::SpawnFailedToSetup(_)
            | Fdo::SpawnConfigInvalid(_)
            | Fdo::SpawnServiceNotValid(_)
            | Fdo::SpawnServiceNotFound(_)
            | Fdo::SpawnPermissionsInvalid(_)
            | Fdo::SpawnFileInvalid(_)
            | Fdo::SpawnNoMemory(_)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn fdo(e: Fdo) -> Error {
        Error::from(zbus::Error::FDO(Box::new(e)))
    }

    #[test]
    fn quote_keeps_a_short_prefix() {
        assert_eq!(quote("short"), "short");
        let exact = "é".repeat(QUOTED_CHARS);
        assert_eq!(quote(&exact), exact);
        assert_eq!(quote(&"é".repeat(QUOTED_CHARS + 1)), format!("{exact}…"));
    }

    #[test]
    fn messages_quote_a_prefix_of_long_input() {
        let long = "a".repeat(1 << 20);
        let path = format!("/{long}");
        let reason = Error::UnknownPath(path.clone()).body().reason;
        assert_eq!(reason, format!("no resource at '/{}…'", "a".repeat(63)));
        let reason = Error::UnsupportedMediaType(long.clone()).body().reason;
        assert!(reason.len() < 200, "{reason}");
        let reason = Error::from(BusError::InvalidArgument(format!("name '{long}' is bad")))
            .body()
            .reason;
        assert_eq!(reason.chars().count(), MAX_BUS_REASON + 1);
        assert!(reason.ends_with('…'));
    }

    #[test]
    fn kimchid_errors_map_to_their_status() {
        let table = [
            (BusError::NotFound("x".into()), 404),
            (BusError::AlreadyExists("x".into()), 409),
            (BusError::InvalidArgument("x".into()), 400),
            (BusError::InvalidState("x".into()), 409),
            (BusError::NotAuthorized("x".into()), 403),
            (BusError::SessionInvalid("x".into()), 401),
            (BusError::AuthenticationFailed("x".into()), 401),
            (BusError::Busy("x".into()), 409),
            (BusError::NotSupported("x".into()), 501),
            (BusError::Unavailable("x".into()), 503),
            (BusError::Failed("x".into()), 500),
        ];
        for (bus, status) in table {
            let err = Error::from(bus);
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert!(
                err.name().starts_with("org.kimchi.Kimchi1.Error."),
                "{err:?}"
            );
            assert_eq!(err.to_string(), "x");
        }
    }

    #[test]
    fn named_reply_from_the_wire_becomes_its_variant() {
        let err = fdo(Fdo::ServiceUnknown("gone".into()));
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.name(), "kimchi.gateway.KimchidUnreachable");
        assert_eq!(
            err.to_string(),
            "kimchid is not reachable on the system bus \
             (org.freedesktop.DBus.Error.ServiceUnknown)"
        );
    }

    #[test]
    fn unreachable_kimchid_is_503() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        for err in [
            fdo(Fdo::ServiceUnknown("x".into())),
            fdo(Fdo::NameHasNoOwner("x".into())),
            fdo(Fdo::NoReply("x".into())),
            fdo(Fdo::Disconnected("x".into())),
            fdo(Fdo::SpawnChildExited("x".into())),
            Error::from(zbus::Error::InputOutput(Arc::new(io))),
        ] {
            assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
            assert_eq!(err.name(), "kimchi.gateway.KimchidUnreachable");
        }
    }

    #[test]
    fn protocol_mismatch_is_502() {
        let err = fdo(Fdo::UnknownMethod("no such method".into()));
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(err.name(), "kimchi.gateway.BadReply");
    }

    #[test]
    fn gateway_errors_map_to_their_status() {
        let table = [
            (Error::InvalidPath("x".into()), 400),
            (Error::UnknownPath("/x".into()), 404),
            (Error::NotFound("x".into()), 404),
            (
                Error::MethodNotAllowed {
                    method: "PUT".into(),
                    allow: "GET, HEAD",
                    note: None,
                },
                405,
            ),
            (Error::NotAcceptable, 406),
            (Error::BodyTooLarge { limit: 1 }, 413),
            (Error::UnsupportedMediaType("text/plain".into()), 415),
            (Error::InvalidBody("x".into()), 400),
            (Error::NoCredentials, 401),
            (Error::InvalidCredentials("x".into()), 401),
            (Error::CsrfRejected("x"), 403),
            (
                Error::Throttled {
                    retry_after: std::time::Duration::from_millis(1500),
                },
                429,
            ),
            (Error::BadReply("x".into()), 502),
            (
                Error::TaskFailed {
                    id: 1,
                    message: "x".into(),
                },
                500,
            ),
            (
                Error::ShutdownFailed {
                    id: 1,
                    message: "x".into(),
                },
                409,
            ),
            (
                Error::TaskWaitTimedOut(std::time::Duration::from_secs(60)),
                504,
            ),
        ];
        for (err, status) in table {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert!(err.name().starts_with("kimchi.gateway."), "{err:?}");
        }
    }

    fn timed_out() -> BusError {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        BusError::ZBus(zbus::Error::InputOutput(Arc::new(io)))
    }

    #[test]
    fn waited_task_call_that_times_out_is_504() {
        let err = Error::from_task_call(timed_out(), true);
        assert!(
            matches!(err, Error::TaskWaitTimedOut(d) if d == CALL_TIMEOUT),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(err.name(), "kimchi.gateway.TaskWaitTimedOut");
    }

    #[test]
    fn task_call_errors_otherwise_map_as_any_call() {
        // Without waiting, a timeout means kimchid did not answer at all.
        let err = Error::from_task_call(timed_out(), false);
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE, "{err:?}");
        for waited in [false, true] {
            let err = Error::from_task_call(BusError::Busy("busy".into()), waited);
            assert_eq!(err.status(), StatusCode::CONFLICT, "{err:?}");
            assert_eq!(err.name(), "org.kimchi.Kimchi1.Error.Busy");
        }
    }

    #[test]
    fn body_has_kimchi_code_reason_and_error() {
        let body = Error::from(BusError::NotFound("no VM named 'x'".into())).body();
        assert_eq!(body.code, "404 Not Found");
        assert_eq!(body.reason, "no VM named 'x'");
        assert_eq!(body.error, "org.kimchi.Kimchi1.Error.NotFound");
        assert_eq!(body.task, None);
    }

    #[test]
    fn failed_task_is_500_with_its_message_and_id() {
        let err = Error::TaskFailed {
            id: 7,
            message: "libvirt: no space left on device".into(),
        };
        let doc = serde_json::to_value(err.body()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "code": "500 Internal Server Error",
                "reason": "libvirt: no space left on device",
                "error": "kimchi.gateway.TaskFailed",
                "task": "7",
            })
        );
    }

    #[test]
    fn failed_shutdown_is_409_with_its_message_and_id() {
        let err = Error::TaskFailed {
            id: 9,
            message: "VM 'web' did not shut down within 120 s".into(),
        }
        .of_shutdown();
        let doc = serde_json::to_value(err.body()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "code": "409 Conflict",
                "reason": "VM 'web' did not shut down within 120 s",
                "error": "kimchi.gateway.ShutdownFailed",
                "task": "9",
            })
        );
        // Only a failed task is remapped; a refused call keeps its own status.
        let refused = Error::from(BusError::InvalidState("VM 'web' is not running".into()));
        assert_eq!(refused.of_shutdown().status(), StatusCode::CONFLICT);
        let gone = Error::from(BusError::NotFound("no VM named 'web'".into()));
        assert_eq!(gone.of_shutdown().status(), StatusCode::NOT_FOUND);
        let timed_out = Error::TaskWaitTimedOut(CALL_TIMEOUT).of_shutdown();
        assert_eq!(timed_out.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn throttled_says_the_wait_in_whole_seconds_rounded_up() {
        let ms = std::time::Duration::from_millis;
        for (wait, secs) in [
            (ms(0), 1),
            (ms(1), 1),
            (ms(1000), 1),
            (ms(1001), 2),
            (ms(60_000), 60),
        ] {
            assert_eq!(retry_after_secs(wait), secs, "{wait:?}");
        }
        let err = Error::Throttled {
            retry_after: ms(1500),
        };
        assert_eq!(
            err.to_string(),
            "too many login attempts from this address; try again in 2 s"
        );
        assert_eq!(err.name(), "kimchi.gateway.Throttled");
    }

    #[test]
    fn method_not_allowed_says_why_and_what_is_allowed() {
        let err = Error::MethodNotAllowed {
            method: "DELETE".into(),
            allow: "GET, HEAD",
            note: Some("read-only view"),
        };
        assert_eq!(
            err.to_string(),
            "method DELETE is not allowed here (allowed: GET, HEAD): read-only view"
        );
        let err = Error::MethodNotAllowed {
            method: "POST".into(),
            allow: "",
            note: None,
        };
        assert_eq!(
            err.to_string(),
            "method POST is not allowed here (no method is)"
        );
    }
}
