//! ISO images QEMU streams from a web or FTP server: the URL, split into what
//! libvirt's network disk needs. Whether the server answers is asked by the URL check
//! service (`url_check`), which parses the URL again with this.

use crate::error::{Error, Result};
use crate::excerpt::excerpt;

/// Schemes a template's `cdrom` may use.
const SCHEMES: [(&str, u16); 3] = [("http", 80), ("https", 443), ("ftp", 21)];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoUrl {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl IsoUrl {
    /// Whether `text` is meant as a URL (it names a scheme), right or wrong.
    pub fn looks_like_url(text: &str) -> bool {
        text.split_once("://")
            .is_some_and(|(scheme, _)| scheme.chars().all(|c| c.is_ascii_alphanumeric()))
    }

    pub fn parse(text: &str) -> Result<IsoUrl> {
        let bad = |why: &str| {
            Err(Error::InvalidArgument(format!(
                "cdrom URL '{}': {why}",
                excerpt(text)
            )))
        };
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("it contains spaces or control characters");
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return bad("it has no scheme");
        };
        let scheme = scheme.to_ascii_lowercase();
        let Some(&(_, default_port)) = SCHEMES.iter().find(|(s, _)| *s == scheme) else {
            return bad("only http, https and ftp images can be streamed");
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return bad("credentials in the URL are not supported");
        }
        let Some((host, port)) = split_port(authority) else {
            return bad("bad port");
        };
        let host_ok = !host.is_empty()
            && (host.starts_with('[') && host.ends_with(']')
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
        if !host_ok {
            return bad("bad host name");
        }
        if !path.starts_with('/') || path.len() < 2 {
            return bad("it names no image file");
        }
        Ok(IsoUrl {
            scheme,
            host: host.trim_matches(['[', ']']).to_owned(),
            port: port.unwrap_or(default_port),
            path: path.to_owned(),
        })
    }
}

/// `host[:port]`, with `[v6]` literals; `None` for a port that is not a number.
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let colon = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return Some((authority, None)),
    };
    let port = authority[colon + 1..].parse().ok().filter(|&p| p != 0)?;
    Some((&authority[..colon], Some(port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_error;

    #[test]
    fn urls_split_into_scheme_host_port_and_path() {
        let u = IsoUrl::parse("https://mirror.example.org/iso/x.iso?a=1").unwrap();
        assert_eq!(
            u,
            IsoUrl {
                scheme: "https".into(),
                host: "mirror.example.org".into(),
                port: 443,
                path: "/iso/x.iso?a=1".into(),
            }
        );
        let u = IsoUrl::parse("HTTP://127.0.0.1:8080/x.iso").unwrap();
        assert_eq!((u.scheme.as_str(), u.port), ("http", 8080));
        let u = IsoUrl::parse("ftp://[::1]:2121/pub/x.iso").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 2121));
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (url, why) in [
            (
                "gopher://h/x.iso",
                "only http, https and ftp images can be streamed",
            ),
            ("http://h", "it names no image file"),
            ("http://h/", "it names no image file"),
            (
                "http://user:pw@h/x.iso",
                "credentials in the URL are not supported",
            ),
            ("http://h:99999/x.iso", "bad port"),
            ("http://h:0/x.iso", "bad port"),
            ("http://h<x>/x.iso", "bad host name"),
            (
                "http://h/a b.iso",
                "it contains spaces or control characters",
            ),
            ("http:///x.iso", "bad host name"),
        ] {
            let message = format!("cdrom URL '{url}': {why}");
            assert_error!(IsoUrl::parse(url), InvalidArgument, message, "{url}");
        }
    }

    #[test]
    fn url_detection() {
        assert!(IsoUrl::looks_like_url("http://x/y"));
        assert!(IsoUrl::looks_like_url("gopher://x/y"));
        assert!(!IsoUrl::looks_like_url("/srv/x.iso"));
        assert!(!IsoUrl::looks_like_url("default:x.iso"));
    }
}
