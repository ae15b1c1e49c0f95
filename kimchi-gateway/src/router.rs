//! Request paths to typed routes. Segments are percent-decoded one by one, so an
//! encoded `/` stays inside a name and is refused rather than changing the route;
//! nothing is normalised away silently.

use hyper::Method;
use percent_encoding::percent_decode_str;

use crate::error::Error;

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
}

/// Needs a session cookie or Basic credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protected {
    Logout,
    Vms,
    Vm(String),
}

/// A route's methods and the matching `Allow` header value.
struct Methods {
    list: &'static [Method],
    allow: &'static str,
}

const READ_ONLY: Methods = Methods {
    list: &[Method::GET, Method::HEAD],
    allow: "GET, HEAD",
};
const POST_ONLY: Methods = Methods {
    list: &[Method::POST],
    allow: "POST",
};

impl Route {
    pub fn parse(path: &str) -> Result<Route, Error> {
        let segments = segments(path)?;
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Ok(match segments.as_slice() {
            ["config"] => Route::Public(Public::Config),
            ["config", "capabilities"] => Route::Public(Public::Capabilities),
            ["login"] => Route::Public(Public::Login),
            ["logout"] => Route::Protected(Protected::Logout),
            ["vms"] => Route::Protected(Protected::Vms),
            ["vms", name] => Route::Protected(Protected::Vm((*name).to_owned())),
            _ => return Err(Error::UnknownPath(path.to_owned())),
        })
    }

    fn methods(&self) -> &'static Methods {
        match self {
            Route::Public(Public::Config | Public::Capabilities)
            | Route::Protected(Protected::Vms | Protected::Vm(_)) => &READ_ONLY,
            Route::Public(Public::Login) | Route::Protected(Protected::Logout) => &POST_ONLY,
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
            })
        }
    }
}

/// The decoded segments of `path`, one trailing slash tolerated.
fn segments(path: &str) -> Result<Vec<String>, Error> {
    let relative = path
        .strip_prefix('/')
        .ok_or_else(|| Error::InvalidPath(format!("path '{path}' does not start with '/'")))?;
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
        return String::from_utf8(bytes)
            .map_err(|_| Error::InvalidPath(format!("path segment '{raw}' is not valid UTF-8")));
    };
    Err(Error::InvalidPath(format!("path segment '{raw}' {why}")))
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
                allow: "GET, HEAD",
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
}
