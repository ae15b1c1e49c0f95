//! The invariants of ARCHITECTURE.md that a reading of the source can check: which
//! module may use what. A failure names the file and the line that breaks one.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// `(file relative to src/, line number, line)` of every source line.
fn lines(crate_dir: &str) -> Vec<(String, usize, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mut all = Vec::new();
    for file in sources(&src) {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            all.push((rel.clone(), n + 1, line.to_owned()));
        }
    }
    all
}

/// Fails with every line of `crate_dir`, outside the files `exempt` lets pass, that
/// `offends`.
fn forbid(
    what: &str,
    crate_dir: &str,
    exempt: impl Fn(&str) -> bool,
    offends: impl Fn(&str) -> bool,
) {
    let bad: Vec<String> = lines(crate_dir)
        .into_iter()
        .filter(|(file, _, line)| !exempt(file) && offends(line.trim_start()))
        .map(|(file, n, line)| format!("{crate_dir}/src/{file}:{n}: {}", line.trim()))
        .collect();
    assert!(bad.is_empty(), "{what}:\n{}", bad.join("\n"));
}

fn contains_any(line: &str, patterns: &[&str]) -> bool {
    patterns.iter().any(|p| line.contains(p))
}

/// Whether `line` uses the crate `name` (`name::…` not inside a longer word).
fn names_crate(line: &str, name: &str) -> bool {
    let path = format!("{name}::");
    line.match_indices(&path).any(|(at, _)| {
        !line[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn only_the_libvirt_adapter_uses_virt() {
    forbid(
        "virt used outside libvirt/",
        "kimchid",
        |file| file.starts_with("libvirt/"),
        |line| !line.starts_with("//") && names_crate(line, "virt"),
    );
}

#[test]
fn only_main_wires_the_libvirt_adapter_in() {
    forbid(
        "the libvirt adapter reached directly",
        "kimchid",
        |file| file.starts_with("libvirt/") || file == "main.rs",
        |line| contains_any(line, &["crate::libvirt", "libvirt::Libvirt"]),
    );
}

#[test]
fn the_bus_layer_never_calls_the_hypervisor() {
    forbid(
        "bus/ calls the hypervisor",
        "kimchid",
        |file| !file.starts_with("bus/"),
        |line| contains_any(line, &["Backend", "Hypervisor"]),
    );
}

#[test]
fn the_engine_speaks_no_dbus_of_its_own() {
    // Contract types (paths inside them) are fine; connections, objects and
    // authorization are the bus layer's.
    let bus_work = [
        "zbus::Connection",
        "object_server",
        "#[interface",
        "crate::bus",
        "crate::authority",
    ];
    forbid(
        "engine/ does bus work",
        "kimchid",
        |file| !file.starts_with("engine/"),
        |line| contains_any(line, &bus_work),
    );
}

#[test]
fn states_are_compared_as_enums_not_words() {
    let words = [
        "running", "shutoff", "paused", "crashed", "active", "inactive", "finished", "failed",
    ];
    let comparisons: Vec<String> = words
        .iter()
        .flat_map(|w| {
            ["state == ", "state != ", "state.as_str() == "].map(|op| format!("{op}\"{w}\""))
        })
        .collect();
    let comparisons: Vec<&str> = comparisons.iter().map(String::as_str).collect();
    for crate_dir in ["kimchid", "kimchi-gateway"] {
        forbid(
            "a state compared as a string",
            crate_dir,
            |_| false,
            |line| contains_any(line, &comparisons),
        );
    }
}

#[test]
fn the_gateway_never_links_libvirt_or_pam() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kimchi-gateway/Cargo.toml"),
    )
    .unwrap();
    for dependency in ["virt", "libpam-sys", "rusqlite"] {
        assert!(
            !manifest
                .lines()
                .any(|l| l.trim_start().starts_with(dependency)),
            "kimchi-gateway depends on {dependency}"
        );
    }
}

#[test]
fn libvirt_xml_is_built_with_the_writer() {
    // User input reaches libvirt XML only through libvirt/xml.rs: no document is
    // assembled with format! anywhere else.
    forbid(
        "XML built by hand",
        "kimchid",
        |file| file == "libvirt/xml.rs",
        |line| line.contains("format!(\"<"),
    );
}
