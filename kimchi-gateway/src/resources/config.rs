//! `/config` and `/config/capabilities`: public, as in Kimchi.

use serde::Serialize;

use crate::error::Error;
use crate::kimchid::Kimchid;
use crate::reply::Reply;

#[derive(Debug, Serialize)]
struct Config {
    http_port: u16,
}

/// The port this request came in on, which is the one clients should use.
pub fn get(local_port: u16) -> Reply {
    Reply::ok(&Config {
        http_port: local_port,
    })
}

#[derive(Debug, Serialize)]
struct Capabilities {
    stream_protocols: Vec<String>,
    /// null until kimchid has been able to test screenshots.
    screenshot: Option<bool>,
}

pub async fn capabilities(kimchid: &Kimchid) -> Result<Reply, Error> {
    let (stream_protocols, screenshot) = kimchid.capabilities().await?;
    Ok(Reply::ok(&Capabilities {
        stream_protocols,
        screenshot: screenshot.as_option(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_use_kimchi_keys_and_null_when_untested() {
        let doc = serde_json::to_value(Capabilities {
            stream_protocols: vec!["http".into()],
            screenshot: kimchi_dbus::ScreenshotSupport::Unknown.as_option(),
        })
        .unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"stream_protocols": ["http"], "screenshot": null})
        );
    }
}
