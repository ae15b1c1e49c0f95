//! Content negotiation: the API speaks JSON only, in both directions.

use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::HeaderMap;

use crate::error::Error;

/// Refuses (406) an `Accept` header that admits no JSON. A missing or empty header
/// accepts anything.
pub fn check_accept(headers: &HeaderMap) -> Result<(), Error> {
    let mut ranges = headers
        .get_all(ACCEPT)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .peekable();
    if ranges.peek().is_none() {
        return Ok(());
    }
    if ranges.any(admits_json) {
        Ok(())
    } else {
        Err(Error::NotAcceptable)
    }
}

/// One media range of `Accept` (`type/subtype;q=0.5`); a zero quality refuses it.
fn admits_json(range: &str) -> bool {
    let mut parts = range.split(';');
    let media = parts.next().unwrap_or_default().trim();
    let refused = parts.any(|p| {
        p.trim()
            .strip_prefix("q=")
            .and_then(|q| q.trim().parse::<f32>().ok())
            .is_some_and(|q| q <= 0.0)
    });
    !refused
        && ["application/json", "application/*", "*/*"]
            .iter()
            .any(|m| media.eq_ignore_ascii_case(m))
}

/// Refuses (415) a request body declared as anything but JSON. A body without a
/// `Content-Type` is taken as JSON, as Kimchi did.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let declared = value.to_str().unwrap_or_default();
    let essence = declared.split(';').next().unwrap_or_default().trim();
    let is_json = essence.eq_ignore_ascii_case("application/json")
        || essence.split_once('/').is_some_and(|(t, sub)| {
            t.eq_ignore_ascii_case("application") && sub.to_ascii_lowercase().ends_with("+json")
        });
    if is_json {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(declared.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(name: hyper::header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn accepts(values: &[&str]) -> bool {
        check_accept(&headers(ACCEPT, values)).is_ok()
    }

    #[test]
    fn accept_admitting_json_passes() {
        assert!(accepts(&[]));
        assert!(accepts(&[""]));
        assert!(accepts(&["application/json"]));
        assert!(accepts(&["Application/JSON; charset=utf-8"]));
        assert!(accepts(&["*/*"]));
        assert!(accepts(&["application/*"]));
        assert!(accepts(&["text/html, application/json;q=0.9"]));
        assert!(accepts(&["text/html", "application/json"]));
        assert!(accepts(&["text/html,application/xhtml+xml,*/*;q=0.8"]));
    }

    #[test]
    fn accept_excluding_json_is_406() {
        assert!(!accepts(&["text/html"]));
        assert!(!accepts(&["text/*"]));
        assert!(!accepts(&["image/png, text/plain"]));
        assert!(!accepts(&["application/json;q=0"]));
        assert!(!accepts(&["application/xml"]));
        let err = check_accept(&headers(ACCEPT, &["text/html"])).unwrap_err();
        assert_eq!(err.status().as_u16(), 406);
    }

    fn content_type_ok(value: &str) -> bool {
        check_content_type(&headers(CONTENT_TYPE, &[value])).is_ok()
    }

    #[test]
    fn json_content_types_pass() {
        assert!(check_content_type(&HeaderMap::new()).is_ok());
        assert!(content_type_ok("application/json"));
        assert!(content_type_ok("application/json; charset=UTF-8"));
        assert!(content_type_ok("APPLICATION/JSON"));
        assert!(content_type_ok("application/merge-patch+json"));
    }

    #[test]
    fn other_content_types_are_415() {
        for value in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/json+xml",
            "",
        ] {
            let err = check_content_type(&headers(CONTENT_TYPE, &[value])).unwrap_err();
            assert_eq!(err.status().as_u16(), 415, "{value}");
        }
    }
}
