//! One-time probes of what this host can do, for `/config/capabilities`.

use std::process::Command;
use std::sync::Mutex;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::stream::Stream;

use crate::engine::hypervisor::HostCapabilities;
use crate::error::{Error, Result};

/// The protocols Kimchi offers for streaming an ISO, in its order.
const STREAM_PROTOCOLS: [&str; 5] = ["http", "https", "ftp", "ftps", "tftp"];

/// The probe guest's name.
const SCREENSHOT_PROBE: &str = "kimchi-screenshot-probe";

/// A throw-away guest with nothing but a display: enough for libvirt to take a
/// screenshot. Fixed text, no caller input. Always transient (created, never
/// defined), so destroying it leaves nothing behind.
const SCREENSHOT_PROBE_XML: &str = "<domain type='qemu'>\
<name>kimchi-screenshot-probe</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
<os><type>hvm</type></os><devices><graphics type='vnc' autoport='yes' listen='127.0.0.1'/>\
<video><model type='vga'/></video></devices></domain>";

/// The screenshot probe's guest exists only while kimchid runs: one probe at a time,
/// none once kimchid is stopping. The lock is held for a whole probe, so stopping
/// waits for a running one to destroy its guest.
#[derive(Default)]
pub struct ProbeGuest {
    stopping: Mutex<bool>,
}

impl ProbeGuest {
    /// At kimchid's stop: waits for a running probe, keeps new ones from starting and
    /// destroys a guest a probe could not.
    pub fn stop(&self, conn: Option<&Connect>) {
        let mut stopping = self.stopping.lock().expect("probe lock poisoned");
        *stopping = true;
        if let Some(conn) = conn {
            remove_leftover(conn);
        }
    }
}

pub fn probe(conn: &Connect, guest: &ProbeGuest) -> Result<HostCapabilities> {
    Ok(HostCapabilities {
        stream_protocols: stream_protocols(conn)?,
        screenshot: screenshot_works(conn, guest),
        kvm: kvm_usable(conn),
        memory_mib: conn.node_info()?.memory / 1024,
    })
}

/// libvirt refuses domain capabilities for virt type `kvm` when /dev/kvm is
/// missing or unusable by QEMU.
fn kvm_usable(conn: &Connect) -> bool {
    conn.domain_capabilities(None, None, None, Some("kvm"), 0)
        .is_ok()
}

/// Asks the QEMU binary libvirt would use which block drivers it has: network ISO
/// streaming needs the curl-backed ones.
fn stream_protocols(conn: &Connect) -> Result<Vec<String>> {
    let caps = conn.domain_capabilities(None, None, None, None, 0)?;
    let emulator = emulator_path(&caps)
        .ok_or_else(|| Error::Internal("domain capabilities name no emulator".into()))?;
    let out = Command::new(&emulator)
        .args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-drive",
            "format=help",
        ])
        .output()
        .map_err(|e| Error::Internal(format!("cannot run {emulator}: {e}")))?;
    Ok(protocols_in_format_help(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

fn emulator_path(domcaps: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(domcaps).ok()?;
    let path = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("path"))?;
    path.text().map(str::to_owned)
}

fn protocols_in_format_help(help: &str) -> Vec<String> {
    let Some(line) = help.lines().find(|l| l.starts_with("Supported formats:")) else {
        return Vec::new();
    };
    let formats: Vec<&str> = line["Supported formats:".len()..]
        .split_whitespace()
        .collect();
    STREAM_PROTOCOLS
        .iter()
        .filter(|p| formats.contains(p))
        .map(|p| (*p).to_owned())
        .collect()
}

/// Destroys a probe guest an earlier kimchid left running (killed mid-probe). A
/// persistent guest of that name is not kimchid's: it stays.
fn remove_leftover(conn: &Connect) {
    let Ok(dom) = conn.lookup_domain_by_name(SCREENSHOT_PROBE) else {
        return;
    };
    if dom.is_persistent().unwrap_or(true) {
        tracing::warn!("a defined guest is named {SCREENSHOT_PROBE}; it is left alone");
        return;
    }
    match dom.destroy() {
        Ok(()) => tracing::info!("destroyed a leftover {SCREENSHOT_PROBE} guest"),
        Err(e) => tracing::warn!("leftover {SCREENSHOT_PROBE} guest not destroyed: {e}"),
    }
}

/// Starts the probe guest, takes one screenshot and tears the guest down again.
fn screenshot_works(conn: &Connect, guest: &ProbeGuest) -> bool {
    let stopping = guest.stopping.lock().expect("probe lock poisoned");
    if *stopping {
        return false;
    }
    remove_leftover(conn);
    let dom = match conn.create_domain_xml(SCREENSHOT_PROBE_XML, 0) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("screenshot probe guest did not start: {e}");
            return false;
        }
    };
    let captured = capture(conn, &dom);
    if let Err(e) = dom.destroy() {
        tracing::warn!("screenshot probe guest could not be destroyed: {e}");
    }
    match captured {
        Ok(bytes) => bytes > 0,
        Err(e) => {
            tracing::warn!("screenshot probe failed: {e}");
            false
        }
    }
}

fn capture(conn: &Connect, dom: &Domain) -> Result<usize> {
    let stream = Stream::new(conn, 0)?;
    dom.screenshot(&stream, 0, 0)?;
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.recv(&mut buf)?;
        if n <= 0 {
            break;
        }
        total += n as usize;
    }
    stream.finish()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_guest_running(conn: &Connect) -> bool {
        conn.lookup_domain_by_name(SCREENSHOT_PROBE)
            .is_ok_and(|d| d.is_active().unwrap())
    }

    /// One test for all of it: `test:///default` is one host for the whole process.
    #[test]
    fn the_probe_guest_is_transient_and_gone_after_a_probe_and_at_stop() {
        let conn = Connect::open(Some("test:///default")).unwrap();
        let guest = ProbeGuest::default();

        // A guest left by a killed kimchid is destroyed by the next probe, which
        // removes its own too.
        conn.create_domain_xml(SCREENSHOT_PROBE_XML, 0).unwrap();
        assert!(probe_guest_running(&conn));
        screenshot_works(&conn, &guest);
        assert!(conn.lookup_domain_by_name(SCREENSHOT_PROBE).is_err());

        // Created, never defined: destroying it leaves no definition behind.
        let dom = conn.create_domain_xml(SCREENSHOT_PROBE_XML, 0).unwrap();
        assert!(!dom.is_persistent().unwrap());
        guest.stop(Some(&conn));
        assert!(conn.lookup_domain_by_name(SCREENSHOT_PROBE).is_err());

        // Once stopping, no probe guest is started.
        assert!(!screenshot_works(&conn, &guest));
        assert!(conn.lookup_domain_by_name(SCREENSHOT_PROBE).is_err());
    }

    #[test]
    fn protocols_are_read_from_qemu_format_help() {
        let help = "Supported formats: blkdebug file ftp ftps host_device http https nbd raw\n\
                    Supported formats (read-only): vvfat\n";
        assert_eq!(
            protocols_in_format_help(help),
            ["http", "https", "ftp", "ftps"]
        );
    }

    #[test]
    fn no_curl_driver_means_no_protocols() {
        assert!(protocols_in_format_help("Supported formats: file raw qcow2\n").is_empty());
        assert!(protocols_in_format_help("").is_empty());
    }

    #[test]
    fn emulator_path_comes_from_domain_capabilities() {
        let caps = "<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path>\
                    <domain>kvm</domain></domainCapabilities>";
        assert_eq!(
            emulator_path(caps).as_deref(),
            Some("/usr/bin/qemu-system-x86_64")
        );
        assert_eq!(emulator_path("<domainCapabilities/>"), None);
    }
}
