//! `/tasks` and `/tasks/:id`, and how every request that starts a task is answered:
//! by default once the task has ended (as Kimchi's synchronous calls were), or at
//! once with `202 Accepted` when the client sends `Prefer: respond-async`.

use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, StatusCode};
use kimchi_dbus::{TaskInfo, TaskState};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;
use crate::router;

const PREFER: HeaderName = HeaderName::from_static("prefer");
const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");
const RESPOND_ASYNC: &str = "respond-async";

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Task {
    /// A string, as in Kimchi.
    id: String,
    /// running, finished or failed.
    status: TaskState,
    message: String,
    /// The API path of what the task works on.
    target_uri: String,
}

impl From<TaskInfo> for Task {
    fn from(info: TaskInfo) -> Self {
        Task {
            id: info.id.to_string(),
            status: info.state,
            message: info.message,
            target_uri: encode_uri(&info.target_uri),
        }
    }
}

/// kimchid gives the target as plain text (`/storagepools/my pool/…`); its segments
/// are names, which never contain `/`, so each is encoded on its own.
fn encode_uri(path: &str) -> String {
    path.split('/')
        .map(router::encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

pub async fn list(kimchid: &Kimchid, call: &Call<'_>) -> Result<Reply, Error> {
    let tasks = kimchid.manager().await?.list_tasks(call.options()).await?;
    let tasks: Vec<Task> = tasks.into_iter().map(Task::from).collect();
    Ok(Reply::ok(&tasks))
}

pub async fn get(kimchid: &Kimchid, call: &Call<'_>, id: u32) -> Result<Reply, Error> {
    let info = kimchid
        .manager()
        .await?
        .get_task(id, call.options())
        .await?;
    Ok(Reply::ok(&Task::from(info)))
}

/// How the client wants a request that starts a task answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Respond {
    /// Once the task has ended, with the result (the default).
    Wait,
    /// At once: 202 and where the task is (RFC 7240 `Prefer: respond-async`).
    Async,
}

impl Respond {
    pub fn from_headers(headers: &HeaderMap) -> Respond {
        // Prefer: respond-async, wait=10 — preferences are comma-separated, each a
        // case-insensitive token with optional `=value` and `;parameters`.
        let asks_async = headers
            .get_all(PREFER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|pref| pref.split([';', '=']).next().unwrap_or_default().trim())
            .any(|token| token.eq_ignore_ascii_case(RESPOND_ASYNC));
        if asks_async {
            Respond::Async
        } else {
            Respond::Wait
        }
    }

    /// Whether kimchid should answer only once the task has ended (`kimchi.wait`).
    pub fn wait(self) -> bool {
        self == Respond::Wait
    }
}

/// The answer to a request that started a task: `started` is kimchid's reply to the
/// call made with [`Call::task_options`]`(respond.wait())`, the task as it was when
/// kimchid answered. A finished task is answered by `done` (the resource's own
/// success reply, given the task), a failed one with 500 and the task's message
/// (kimchid checks requests before it starts tasks, so a failure is the backend's,
/// not the client's; a shutdown's is remapped, see [`Error::of_shutdown`]), and a
/// task still running with 202.
pub async fn reply(
    respond: Respond,
    started: Result<TaskInfo, kimchi_dbus::Error>,
    done: impl AsyncFnOnce(TaskInfo) -> Result<Reply, Error>,
) -> Result<Reply, Error> {
    let info = started.map_err(|e| Error::from_task_call(e, respond.wait()))?;
    match (respond, info.state) {
        (Respond::Wait, TaskState::Finished) => done(info).await,
        (Respond::Wait, TaskState::Failed) => Err(Error::TaskFailed {
            id: info.id,
            message: info.message,
        }),
        // Asked not to wait; or still running when kimchid's wait bound ran out.
        (Respond::Async, _) | (Respond::Wait, TaskState::Running) => Ok(accepted(respond, info)),
    }
}

/// 202 with the task and where to follow it.
fn accepted(respond: Respond, info: TaskInfo) -> Reply {
    let uri = router::task_uri(info.id);
    let reply = Reply::json(StatusCode::ACCEPTED, &Task::from(info)).with_location(&uri);
    if respond == Respond::Async {
        reply.with_header(PREFERENCE_APPLIED, HeaderValue::from_static(RESPOND_ASYNC))
    } else {
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::LOCATION;

    fn info(state: TaskState, target_uri: &str) -> TaskInfo {
        TaskInfo {
            path: zbus::OwnedObjectPath::try_from(kimchi_dbus::task_path(12)).unwrap(),
            id: 12,
            operation: "storagevolume.wipe".into(),
            state,
            message: "wiped".into(),
            target_uri: target_uri.into(),
            progress: 1.0,
            start_usec: 1,
            end_usec: 2,
        }
    }

    #[test]
    fn task_json_has_kimchi_keys_and_a_string_id() {
        let doc = serde_json::to_value(Task::from(info(
            TaskState::Finished,
            "/storagepools/default/storagevolumes/a.img",
        )))
        .unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "id": "12", "status": "finished", "message": "wiped",
                "target_uri": "/storagepools/default/storagevolumes/a.img"
            })
        );
    }

    #[test]
    fn task_status_is_the_state_word() {
        for (state, word) in [
            (TaskState::Running, "running"),
            (TaskState::Finished, "finished"),
            (TaskState::Failed, "failed"),
        ] {
            let doc = serde_json::to_value(Task::from(info(state, "/x"))).unwrap();
            assert_eq!(doc["status"], word);
        }
    }

    /// What [`reply`] answers for kimchid's reply `started`; `done` answers 201.
    async fn answer(
        respond: Respond,
        started: Result<TaskInfo, kimchi_dbus::Error>,
    ) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, Error> {
        let reply = reply(respond, started, async |task| {
            assert_eq!(
                task.state,
                TaskState::Finished,
                "done only for a finished task"
            );
            Ok(Reply::json(StatusCode::CREATED, &task.id))
        })
        .await?;
        Ok(reply.into_response(false))
    }

    #[tokio::test]
    async fn waited_task_is_answered_by_how_it_ended() {
        let r = answer(Respond::Wait, Ok(info(TaskState::Finished, "/x")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);

        let err = answer(Respond::Wait, Ok(info(TaskState::Failed, "/x")))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::TaskFailed { id: 12, message } if message == "wiped"),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);

        // Still running when kimchid's wait bound ran out: 202, as if asked.
        let r = answer(Respond::Wait, Ok(info(TaskState::Running, "/x")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(r.headers()[LOCATION], "/tasks/12");
    }

    #[tokio::test]
    async fn async_request_is_202_however_far_the_task_got() {
        for state in [TaskState::Running, TaskState::Finished, TaskState::Failed] {
            let r = answer(Respond::Async, Ok(info(state, "/x"))).await.unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED, "{state}");
            assert_eq!(r.headers()[PREFERENCE_APPLIED], "respond-async");
        }
    }

    #[tokio::test]
    async fn refused_task_call_is_kimchids_error() {
        let err = answer(
            Respond::Wait,
            Err(kimchi_dbus::Error::InvalidArgument("bad size".into())),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.to_string(), "bad size");
    }

    #[test]
    fn target_uri_segments_are_encoded() {
        let task = Task::from(info(
            TaskState::Running,
            "/storagepools/my pool/storagevolumes/disk%1.img",
        ));
        assert_eq!(
            task.target_uri,
            "/storagepools/my%20pool/storagevolumes/disk%251.img"
        );
    }

    fn prefer(values: &[&str]) -> Respond {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(PREFER, HeaderValue::from_str(v).unwrap());
        }
        Respond::from_headers(&headers)
    }

    #[test]
    fn prefer_respond_async_is_recognised_among_other_preferences() {
        for values in [
            &["respond-async"][..],
            &["Respond-Async"],
            &["return=minimal, respond-async"],
            &["wait=10", " respond-async ; foo=bar"],
        ] {
            assert_eq!(prefer(values), Respond::Async, "{values:?}");
        }
        for values in [
            &[][..],
            &["return=minimal"],
            &["respond-asyncx"],
            &["x=respond-async"],
        ] {
            assert_eq!(prefer(values), Respond::Wait, "{values:?}");
        }
    }

    #[test]
    fn accepted_reply_points_at_the_task() {
        let r = accepted(Respond::Async, info(TaskState::Running, "/x")).into_response(false);
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(r.headers()[LOCATION], "/tasks/12");
        assert_eq!(r.headers()[PREFERENCE_APPLIED], "respond-async");
        let r = accepted(Respond::Wait, info(TaskState::Running, "/x")).into_response(false);
        assert!(r.headers().get(PREFERENCE_APPLIED).is_none());
    }
}
