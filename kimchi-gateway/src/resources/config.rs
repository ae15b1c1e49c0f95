//! `/config` and `/config/capabilities`: public, as in Kimchi.

use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;
use crate::kimchid::Kimchid;
use crate::reply::Reply;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Config {
    http_port: u16,
}

/// The port this request came in on, which is the one clients should use.
pub fn get(local_port: u16) -> Reply {
    Reply::ok(&Config {
        http_port: local_port,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Capabilities {
    stream_protocols: Vec<String>,
    /// null until kimchid has been able to test screenshots.
    screenshot: Option<bool>,
}

pub async fn capabilities(kimchid: &Kimchid, request_id: &str) -> Result<Reply, Error> {
    Ok(Reply::ok(&Capabilities::from(
        kimchid.capabilities(request_id).await?,
    )))
}

impl From<kimchi_dbus::Capabilities> for Capabilities {
    fn from(caps: kimchi_dbus::Capabilities) -> Self {
        Capabilities {
            stream_protocols: caps.stream_protocols,
            screenshot: caps.screenshot.as_option(),
        }
    }
}

#[cfg(test)]
mod tests {
    use kimchi_dbus::ScreenshotSupport;

    use super::*;

    #[test]
    fn capabilities_use_kimchi_keys_and_null_when_untested() {
        let caps = |screenshot| {
            serde_json::to_value(Capabilities::from(kimchi_dbus::Capabilities {
                stream_protocols: vec!["http".into()],
                screenshot,
            }))
            .unwrap()
        };
        assert_eq!(
            caps(ScreenshotSupport::Unknown),
            serde_json::json!({"stream_protocols": ["http"], "screenshot": null})
        );
        assert_eq!(caps(ScreenshotSupport::Yes)["screenshot"], true);
        assert_eq!(caps(ScreenshotSupport::No)["screenshot"], false);
    }
}
