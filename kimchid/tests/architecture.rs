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

fn violations(
    crate_dir: &str,
    allowed: impl Fn(&str) -> bool,
    offends: impl Fn(&str) -> bool,
) -> Vec<String> {
    lines(crate_dir)
        .into_iter()
        .filter(|(file, _, line)| !allowed(file) && offends(line.trim_start()))
        .map(|(file, n, line)| format!("{crate_dir}/src/{file}:{n}: {}", line.trim()))
        .collect()
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
    let bad = violations(
        "kimchid",
        |file| file.starts_with("libvirt/"),
        |line| !line.starts_with("//") && names_crate(line, "virt"),
    );
    assert!(
        bad.is_empty(),
        "virt used outside libvirt/:\n{}",
        bad.join("\n")
    );
}

#[test]
fn only_main_wires_the_libvirt_adapter_in() {
    let bad = violations(
        "kimchid",
        |file| file.starts_with("libvirt/") || file == "main.rs",
        |line| line.contains("crate::libvirt") || line.contains("libvirt::Libvirt"),
    );
    assert!(
        bad.is_empty(),
        "the libvirt adapter reached directly:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_bus_layer_never_calls_the_hypervisor() {
    let bad = violations(
        "kimchid",
        |file| !file.starts_with("bus/"),
        |line| line.contains("Backend") || line.contains("Hypervisor"),
    );
    assert!(
        bad.is_empty(),
        "bus/ calls the hypervisor:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_engine_speaks_no_dbus_of_its_own() {
    // Contract types (paths inside them) are fine; connections, objects and
    // authorization are the bus layer's.
    let bad = violations(
        "kimchid",
        |file| !file.starts_with("engine/"),
        |line| {
            [
                "zbus::Connection",
                "object_server",
                "#[interface",
                "crate::bus",
                "crate::authority",
            ]
            .iter()
            .any(|p| line.contains(p))
        },
    );
    assert!(bad.is_empty(), "engine/ does bus work:\n{}", bad.join("\n"));
}

#[test]
fn states_are_compared_as_enums_not_words() {
    let words = [
        "running", "shutoff", "paused", "crashed", "active", "inactive", "finished", "failed",
    ];
    for crate_dir in ["kimchid", "kimchi-gateway"] {
        let bad = violations(
            crate_dir,
            |_| false,
            |line| {
                words.iter().any(|w| {
                    line.contains(&format!("state == \"{w}\""))
                        || line.contains(&format!("state != \"{w}\""))
                        || line.contains(&format!("state.as_str() == \"{w}\""))
                })
            },
        );
        assert!(
            bad.is_empty(),
            "a state compared as a string:\n{}",
            bad.join("\n")
        );
    }
}

#[test]
fn the_gateway_never_links_libvirt_or_pam() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../kimchi-gateway/Cargo.toml"),
    )
    .unwrap();
    for dependency in ["virt", "nonstick", "rusqlite"] {
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
    let bad = violations(
        "kimchid",
        |file| file == "libvirt/xml.rs" || file == "libvirt/probe.rs",
        |line| line.contains("format!(\"<"),
    );
    assert!(bad.is_empty(), "XML built by hand:\n{}", bad.join("\n"));
}
