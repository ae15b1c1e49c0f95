//! `/vms/:name/screenshot` redirects to `/data/screenshots/<id>.png`, an image this
//! gateway keeps for a minute for whoever asked: the session (by its token's digest)
//! or, for HTTP Basic (a session per request), the user. The id is random (128 bits),
//! not derived from the image, so identical screens of different sessions do not share
//! a URL; the same session asking again for an unchanged screen gets the same URL (and
//! browser caches work). The image is served only to its owner, and only while kimchid
//! still grants that owner the screenshot itself (the same call, the same polkit
//! action; kimchid keeps a screenshot a few seconds, so asking again is cheap).

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

/// Who may fetch an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A session opened by `POST /login`, by the SHA-256 of its token.
    Session([u8; 32]),
    /// A user who authenticated with HTTP Basic.
    User(String),
}

impl Owner {
    pub fn session(token: &str) -> Owner {
        Owner::Session(Sha256::digest(token.as_bytes()).into())
    }

    pub fn user(name: &str) -> Owner {
        Owner::User(name.to_owned())
    }
}

#[derive(Debug)]
struct Image {
    id: String,
    owner: Owner,
    vm: String,
    digest: [u8; 32],
    taken: Instant,
    png: Bytes,
}

impl Screenshots {
    /// Keeps `png` of `vm` for `owner` and returns its id.
    fn keep(&self, owner: Owner, vm: &str, png: Bytes) -> String {
        let digest: [u8; 32] = Sha256::digest(&png).into();
        let mut images = self.0.lock().expect("screenshot cache poisoned");
        images.retain(|i| i.taken.elapsed() < KEEP);
        let same = images
            .iter_mut()
            .find(|i| i.owner == owner && i.vm == vm && i.digest == digest);
        if let Some(image) = same {
            image.taken = Instant::now();
            return image.id.clone();
        }
        if images.len() == MAX_IMAGES {
            images.pop_front();
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        images.push_back(Image {
            id: id.clone(),
            owner,
            vm: vm.to_owned(),
            digest,
            taken: Instant::now(),
            png,
        });
        id
    }

    /// The VM and image behind `id`, when `owner` asked for it.
    fn find(&self, id: &str, owner: &Owner) -> Option<(String, Bytes)> {
        self.0
            .lock()
            .expect("screenshot cache poisoned")
            .iter()
            .find(|i| i.id == id && i.owner == *owner && i.taken.elapsed() < KEEP)
            .map(|i| (i.vm.clone(), i.png.clone()))
    }
}

/// 303 to a PNG of the running VM's screen (kimchid captures at most every few
/// seconds); 404 while it is not running.
pub async fn redirect(
    kimchid: &Kimchid,
    call: &Call<'_>,
    screenshots: &Screenshots,
    owner: &Owner,
    name: &str,
) -> Result<Reply, Error> {
    let png = kimchid
        .manager()
        .await?
        .get_vm_screenshot(name, call.options())
        .await?;
    let id = screenshots.keep(owner.clone(), name, png.into());
    let location = HeaderValue::from_str(&format!("/data/screenshots/{id}.png"))
        .expect("hex is a valid header value");
    Ok(Reply::json(
        StatusCode::SEE_OTHER,
        &serde_json::json!({ "screenshot": location.to_str().expect("ASCII") }),
    )
    .with_header(LOCATION, location))
}

/// The image, to its owner while kimchid still grants it the VM's screenshot. Anyone
/// else gets 404, as for an id that never existed, so nobody learns which ids do; a
/// cookie that cannot be a session at all (kimchid's tokens are 64 hex digits) is 401
/// as a dead session is on every route.
pub async fn image(
    kimchid: &Kimchid,
    call: &Call<'_>,
    screenshots: &Screenshots,
    owner: &Owner,
    id: &str,
) -> Result<Reply, Error> {
    if !call.session.is_some_and(token_shaped) {
        return Err(Error::InvalidCredentials(
            "the session cookie is not a session token".into(),
        ));
    }
    let (vm, png) = screenshots
        .find(id, owner)
        .ok_or_else(|| Error::UnknownPath(format!("/data/screenshots/{id}.png")))?;
    kimchid
        .manager()
        .await?
        .get_vm_screenshot(&vm, call.options())
        .await?;
    // The content never changes under this URL.
    Ok(Reply::png(png).with_header(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=60, immutable"),
    ))
}

fn token_shaped(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Owner {
        Owner::session("a-token")
    }

    #[test]
    fn ids_are_random_and_bound_to_their_owner() {
        let shots = Screenshots::default();
        let png = Bytes::from_static(b"png-a");
        let a = shots.keep(alice(), "vm1", png.clone());
        assert_eq!(a.len(), 32, "128 bits in hex");
        assert_ne!(a, hex::encode(&Sha256::digest(&png)[..16]));
        assert_eq!(
            shots.find(&a, &alice()).unwrap(),
            ("vm1".into(), png.clone())
        );
        // Another session, even of the same user, or a Basic user: nothing there.
        for other in [Owner::session("b-token"), Owner::user("alice")] {
            assert!(shots.find(&a, &other).is_none(), "{other:?}");
            // The same screen asked by another owner gets its own id.
            let b = shots.keep(other.clone(), "vm1", png.clone());
            assert_ne!(a, b);
            assert!(shots.find(&b, &alice()).is_none());
            assert!(shots.find(&b, &other).is_some());
        }
    }

    #[test]
    fn an_unchanged_screen_keeps_its_url_for_its_owner() {
        let shots = Screenshots::default();
        let a = shots.keep(alice(), "vm1", Bytes::from_static(b"png-a"));
        assert_eq!(shots.keep(alice(), "vm1", Bytes::from_static(b"png-a")), a);
        assert_ne!(shots.keep(alice(), "vm1", Bytes::from_static(b"png-b")), a);
        assert_ne!(shots.keep(alice(), "vm2", Bytes::from_static(b"png-a")), a);
        assert_eq!(shots.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn bounded_oldest_out_first_and_expired_after_a_minute() {
        let shots = Screenshots::default();
        let a = shots.keep(alice(), "vm1", Bytes::from_static(b"png-a"));
        for i in 0..MAX_IMAGES {
            shots.keep(alice(), "vm1", Bytes::from(format!("png-{i}")));
        }
        assert!(shots.find(&a, &alice()).is_none());
        assert_eq!(shots.0.lock().unwrap().len(), MAX_IMAGES);
        assert!(shots.find("nope", &alice()).is_none());

        let b = shots.keep(alice(), "vm1", Bytes::from_static(b"png-b"));
        let old = Instant::now()
            .checked_sub(KEEP)
            .expect("the clock has run a minute");
        shots.0.lock().unwrap().back_mut().unwrap().taken = old;
        assert!(shots.find(&b, &alice()).is_none());
    }

    #[test]
    fn session_tokens_are_64_hex_digits() {
        assert!(token_shaped(&"ab".repeat(32)));
        for bad in [
            "",
            "garbage",
            &"ab".repeat(31),
            &"zz".repeat(32),
            &"ab".repeat(33),
        ] {
            assert!(!token_shaped(bad), "{bad}");
        }
    }
}
