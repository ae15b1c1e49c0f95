//! Checks on the names and paths callers give, done once where a request enters
//! kimchid, so that nothing downstream has to wonder about `/`, `..` or NUL.

use std::path::{Component, Path};

use crate::error::{Error, Result};
use crate::excerpt::excerpt;

const MAX_NAME_BYTES: usize = 255;

/// The longest file name made from a VM's name is a disk attached later,
/// `<name>-disk<n>.img` with n < 256 (a creation's `<name>-<index>.img` is shorter),
/// so VM names leave room for that suffix in a 255-byte file name.
pub const MAX_VM_NAME_BYTES: usize = MAX_NAME_BYTES - "-disk255.img".len();
/// VMs made from a template without a name are called `<template>-vm-<n>`, n up to
/// 9999: template names leave room for that in a VM name.
pub const MAX_TEMPLATE_NAME_BYTES: usize = MAX_VM_NAME_BYTES - "-vm-9999".len();

/// A name that becomes a file name or a libvirt object name: one path component,
/// printable, not hidden, at most 255 bytes.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    check_name_within(kind, name, MAX_NAME_BYTES)
}

/// `check_name` for names that other file names are made from, at most `max_bytes`.
pub fn check_name_within(kind: &str, name: &str, max_bytes: usize) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "invalid {kind} name '{}': {why}",
            excerpt(name).escape_debug()
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > max_bytes {
        return bad(&format!("it is longer than {max_bytes} bytes"));
    }
    if name.contains('/') {
        return bad("it contains '/'");
    }
    if name.starts_with('.') {
        return bad("it starts with '.'");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("it contains control characters");
    }
    Ok(())
}

/// An absolute path without `..` components or NUL.
pub fn check_absolute_path(what: &str, path: &str) -> Result<()> {
    let p = Path::new(path);
    let ok = p.is_absolute()
        && !path.contains('\0')
        && p.components().all(|c| !matches!(c, Component::ParentDir));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} must be an absolute path without '..', not '{}'",
            excerpt(path).escape_debug()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_error;

    #[test]
    fn ordinary_names_pass() {
        for name in ["disk-1.qcow2", "Fedora 39.iso", "vm_ñ", "a"] {
            check_name("volume", name).unwrap();
        }
    }

    #[test]
    fn path_tricks_are_refused() {
        let long = "x".repeat(256);
        for (name, why) in [
            ("", "it is empty"),
            ("..", "it starts with '.'"),
            (".", "it starts with '.'"),
            ("../etc/passwd", "it contains '/'"),
            ("a/b", "it contains '/'"),
            (".hidden", "it starts with '.'"),
            ("a\0b", "it contains control characters"),
            ("a\nb", "it contains control characters"),
            (long.as_str(), "it is longer than 255 bytes"),
        ] {
            let message = format!(
                "invalid volume name '{}': {why}",
                excerpt(name).escape_debug()
            );
            assert_error!(
                check_name("volume", name),
                InvalidArgument,
                message,
                "{name:?}"
            );
        }
    }

    #[test]
    fn derived_file_names_fit() {
        assert_eq!((MAX_VM_NAME_BYTES, MAX_TEMPLATE_NAME_BYTES), (243, 235));
        let vm = "v".repeat(MAX_VM_NAME_BYTES);
        assert_eq!(format!("{vm}-disk255.img").len(), MAX_NAME_BYTES);
        check_name_within("VM", &vm, MAX_VM_NAME_BYTES).unwrap();
        let message = format!(
            "invalid VM name '{}': it is longer than 243 bytes",
            excerpt(&vm)
        );
        let refused = check_name_within("VM", &format!("{vm}v"), MAX_VM_NAME_BYTES);
        assert_error!(refused, InvalidArgument, message);
    }

    #[test]
    fn paths_must_be_absolute_and_stay_put() {
        check_absolute_path("path", "/var/lib/kimchi/pool").unwrap();
        for path in ["relative/dir", "/srv/../etc", "", "/a\0b"] {
            let message = format!(
                "path must be an absolute path without '..', not '{}'",
                path.escape_debug()
            );
            let refused = check_absolute_path("path", path);
            assert_error!(refused, InvalidArgument, message, "{path:?}");
        }
    }
}
