//! `/vms/:name/screenshot` redirects to `/data/screenshots/<id>.png`, an image this
//! gateway keeps for a minute. The id is the image's hash, so an unchanged screen
//! keeps its URL (and browser caches work) while a new one gets a new URL.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, LOCATION};
use hyper::StatusCode;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::kimchid::{Call, Kimchid};
use crate::reply::Reply;

/// How long an image stays reachable after the redirect to it.
const KEEP: Duration = Duration::from_secs(60);
/// Bounds the memory the images take, whatever the clients do.
const MAX_IMAGES: usize = 64;

#[derive(Debug, Default)]
pub struct Screenshots(Mutex<VecDeque<Image>>);

#[derive(Debug)]
struct Image {
    id: String,
    taken: Instant,
    png: Bytes,
}

impl Screenshots {
    /// Keeps `png` and returns its id.
    fn keep(&self, png: Bytes) -> String {
        let id = hex::encode(&Sha256::digest(&png)[..16]);
        let mut images = self.0.lock().expect("screenshot cache poisoned");
        images.retain(|i| i.id != id && i.taken.elapsed() < KEEP);
        if images.len() == MAX_IMAGES {
            images.pop_front();
        }
        images.push_back(Image {
            id: id.clone(),
            taken: Instant::now(),
            png,
        });
        id
    }

    fn find(&self, id: &str) -> Option<Bytes> {
        self.0
            .lock()
            .expect("screenshot cache poisoned")
            .iter()
            .find(|i| i.id == id && i.taken.elapsed() < KEEP)
            .map(|i| i.png.clone())
    }
}

/// 303 to a PNG of the running VM's screen (kimchid captures at most every few
/// seconds); 404 while it is not running.
pub async fn redirect(
    kimchid: &Kimchid,
    call: &Call<'_>,
    screenshots: &Screenshots,
    name: &str,
) -> Result<Reply, Error> {
    let png = kimchid
        .manager()
        .await?
        .get_vm_screenshot(name, call.options())
        .await?;
    let id = screenshots.keep(png.into());
    let location = HeaderValue::from_str(&format!("/data/screenshots/{id}.png"))
        .expect("hex is a valid header value");
    Ok(Reply::json(
        StatusCode::SEE_OTHER,
        &serde_json::json!({ "screenshot": location.to_str().expect("ASCII") }),
    )
    .with_header(LOCATION, location))
}

pub fn image(screenshots: &Screenshots, id: &str) -> Result<Reply, Error> {
    let png = screenshots
        .find(id)
        .ok_or_else(|| Error::UnknownPath(format!("/data/screenshots/{id}.png")))?;
    // The content never changes under this URL.
    Ok(Reply::png(png).with_header(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=60, immutable"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_image_same_id_and_bounded() {
        let shots = Screenshots::default();
        let a = shots.keep(Bytes::from_static(b"png-a"));
        assert_eq!(shots.keep(Bytes::from_static(b"png-a")), a);
        assert_eq!(shots.find(&a).unwrap(), "png-a");
        for i in 0..MAX_IMAGES {
            shots.keep(Bytes::from(format!("png-{i}")));
        }
        assert!(shots.find(&a).is_none());
        assert_eq!(shots.0.lock().unwrap().len(), MAX_IMAGES);
        assert!(shots.find("nope").is_none());
    }
}
