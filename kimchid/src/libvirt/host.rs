//! Facts of the host's own networking, read from the kernel (sysfs, procfs,
//! getifaddrs), not from libvirt: the interfaces a network can use and the routes a
//! new network's subnet must not clash with.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::engine::hypervisor::HostInterface;
use crate::error::{Error, Result};

const SYS_CLASS_NET: &str = "/sys/class/net";
// /proc/net is a link to /proc/self/net, which ProcSubset=pid (kimchid.service) keeps.
const PROC_NET_VLAN: &str = "/proc/self/net/vlan";
const PROC_NET_ROUTE: &str = "/proc/self/net/route";

/// `IFF_UP` of `<linux/if.h>`.
const IFF_UP: u32 = 0x1;
/// `RTF_UP` of `<linux/route.h>`.
const RTF_UP: u32 = 0x1;

/// The host's interfaces by name, without loopback, the bridges of libvirt's own
/// networks and guests' tap and macvtap devices.
pub fn interfaces() -> Result<Vec<HostInterface>> {
    interfaces_in(
        Path::new(SYS_CLASS_NET),
        Path::new(PROC_NET_VLAN),
        &ipv4_addresses(),
    )
}

/// The IPv4 destinations the host routes (`a.b.c.d/p`), default route excluded.
pub fn routes() -> Result<Vec<String>> {
    let table = std::fs::read_to_string(PROC_NET_ROUTE)
        .map_err(|e| Error::Internal(format!("cannot read {PROC_NET_ROUTE}: {e}")))?;
    Ok(parse_routes(&table))
}

/// Not the host's own: loopback, libvirt's network bridges, guests' taps.
fn is_hidden(name: &str) -> bool {
    name == "lo"
        || ["virbr", "vnet", "macvtap"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

fn interfaces_in(
    sys: &Path,
    proc_vlan: &Path,
    addresses: &HashMap<String, (Ipv4Addr, Ipv4Addr)>,
) -> Result<Vec<HostInterface>> {
    let entries = std::fs::read_dir(sys)
        .map_err(|e| Error::Internal(format!("cannot read {}: {e}", sys.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !is_hidden(name))
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let dir = sys.join(&name);
            let kind = if dir.join("bridge").exists() {
                "bridge"
            } else if dir.join("bonding").exists() {
                "bond"
            } else if proc_vlan.join(&name).exists() || name.contains('.') {
                "vlan"
            } else {
                "nic"
            };
            let read = |file: &str| {
                std::fs::read_to_string(dir.join(file))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default()
            };
            let up = is_up(&read("operstate"), &read("flags"));
            let module = std::fs::read_link(dir.join("device/driver/module"))
                .ok()
                .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            let (ipaddr, netmask) = addresses
                .get(&name)
                .map(|(a, m)| (a.to_string(), m.to_string()))
                .unwrap_or_default();
            HostInterface {
                name,
                kind: kind.to_owned(),
                up,
                ipaddr,
                netmask,
                module,
            }
        })
        .collect())
}

/// Whether the link is up: the kernel's operational state, or, where the driver does
/// not report one (`unknown`: tun, dummy, some virtual NICs), the administrative flag.
fn is_up(operstate: &str, flags: &str) -> bool {
    match operstate {
        "up" => true,
        "unknown" | "" => {
            let hex = flags.trim().trim_start_matches("0x");
            u32::from_str_radix(hex, 16).is_ok_and(|f| f & IFF_UP != 0)
        }
        _ => false,
    }
}

/// The first IPv4 address and netmask of every interface that has one.
fn ipv4_addresses() -> HashMap<String, (Ipv4Addr, Ipv4Addr)> {
    let mut found = HashMap::new();
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs,
        Err(e) => {
            tracing::warn!("getifaddrs: {e}; host interfaces listed without addresses");
            return found;
        }
    };
    for ifa in addrs {
        let ipv4 = |a: &Option<nix::sys::socket::SockaddrStorage>| {
            a.as_ref().and_then(|s| s.as_sockaddr_in()).map(|s| s.ip())
        };
        if let Some(address) = ipv4(&ifa.address) {
            let netmask = ipv4(&ifa.netmask).unwrap_or(Ipv4Addr::UNSPECIFIED);
            found
                .entry(ifa.interface_name)
                .or_insert((address, netmask));
        }
    }
    found
}

/// The routed destinations in `/proc/net/route`'s text, each once, in table order;
/// the default route and routes that are not up are left out. The kernel prints each
/// address (kept in network byte order) as a hex number in the host's byte order:
/// `0002A8C0` is 192.168.2.0 on a little-endian host.
fn parse_routes(table: &str) -> Vec<String> {
    let hex = |field: &str| u32::from_str_radix(field, 16).ok();
    let mut routes: Vec<String> = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let (Some(dest), Some(flags), Some(mask)) =
            (hex(fields[1]), hex(fields[3]), hex(fields[7]))
        else {
            continue;
        };
        if flags & RTF_UP == 0 {
            continue;
        }
        let dest = Ipv4Addr::from(dest.to_ne_bytes());
        let mask = u32::from(Ipv4Addr::from(mask.to_ne_bytes()));
        let prefix = mask.leading_ones();
        if prefix == 0 && dest.is_unspecified() {
            continue;
        }
        let route = format!("{dest}/{prefix}");
        if !routes.contains(&route) {
            routes.push(route);
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn routes_are_decoded_and_the_default_left_out() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0002A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
            virbr0\t007AA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            wlan0\t0002A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n\
            eth1\t0000100A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            eth1\t0501A8C0\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
            eth1\t00000A0A\t00000000\t0000\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            bad line\n";
        assert_eq!(
            parse_routes(table),
            [
                "192.168.2.0/24",
                "192.168.122.0/24",
                "10.16.0.0/16",
                "192.168.1.5/32"
            ]
        );
        assert!(parse_routes("Iface\tDestination\n").is_empty());
    }

    #[test]
    fn link_state_from_operstate_or_flags() {
        assert!(is_up("up", "0x1003"));
        assert!(!is_up("down", "0x1003"));
        assert!(!is_up("lowerlayerdown", "0x1003"));
        assert!(is_up("unknown", "0x1091"));
        assert!(!is_up("unknown", "0x1090"));
        assert!(!is_up("", ""));
    }

    #[test]
    fn hidden_interfaces() {
        for name in ["lo", "virbr0", "virbr12-nic", "vnet3", "macvtap0"] {
            assert!(is_hidden(name), "{name}");
        }
        for name in ["eth0", "br0", "bond0", "eth0.100", "enp1s0", "lol"] {
            assert!(!is_hidden(name), "{name}");
        }
    }

    #[test]
    fn interfaces_from_a_sysfs_tree() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let vlan = root.path().join("vlan");
        std::fs::create_dir_all(&vlan).unwrap();
        let iface = |name: &str, operstate: &str, extra: &[&str]| {
            let dir = sys.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("operstate"), format!("{operstate}\n")).unwrap();
            std::fs::write(dir.join("flags"), "0x1003\n").unwrap();
            for sub in extra {
                std::fs::create_dir_all(dir.join(sub)).unwrap();
            }
            dir
        };
        let eth0 = iface("eth0", "up", &["device/driver"]);
        std::os::unix::fs::symlink(
            "../../../../module/e1000e",
            eth0.join("device/driver/module"),
        )
        .unwrap();
        iface("br0", "down", &["bridge"]);
        iface("bond0", "unknown", &["bonding"]);
        iface("eth0.100", "up", &[]);
        iface("vl7", "up", &[]);
        std::fs::write(vlan.join("vl7"), "").unwrap();
        for hidden in ["lo", "virbr0", "vnet0", "macvtap1"] {
            iface(hidden, "up", &[]);
        }
        let addresses = HashMap::from([(
            "br0".to_owned(),
            (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(255, 255, 255, 0)),
        )]);

        let found = interfaces_in(&sys, &vlan, &addresses).unwrap();
        let summary: Vec<_> = found
            .iter()
            .map(|i| (i.name.as_str(), i.kind.as_str(), i.up, i.module.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("bond0", "bond", true, ""),
                ("br0", "bridge", false, ""),
                ("eth0", "nic", true, "e1000e"),
                ("eth0.100", "vlan", true, ""),
                ("vl7", "vlan", true, ""),
            ]
        );
        let br0 = &found[1];
        assert_eq!(
            (br0.ipaddr.as_str(), br0.netmask.as_str()),
            ("10.0.0.2", "255.255.255.0")
        );
        assert_eq!(
            (found[2].ipaddr.as_str(), found[2].netmask.as_str()),
            ("", "")
        );
    }

    #[test]
    fn this_hosts_interfaces_and_routes_can_be_read() {
        let interfaces = interfaces().unwrap();
        assert!(interfaces.iter().all(|i| !is_hidden(&i.name)));
        let routes = routes().unwrap();
        assert!(!routes.iter().any(|r| r == "0.0.0.0/0"));
    }
}
