use kimchi_dbus::VolumeInfo;

use crate::storage::VolumeView;

const MIB: u64 = 1024 * 1024;

pub fn info(v: &VolumeView) -> VolumeInfo {
    let r = &v.record;
    let iso = v.iso.as_ref();
    VolumeInfo {
        pool: r.pool.clone(),
        name: r.name.clone(),
        vol_type: r.kind.to_owned(),
        capacity_mib: r.capacity / MIB,
        allocation_mib: r.allocation / MIB,
        format: r.format.clone(),
        file_path: r.path.clone(),
        iso: iso.is_some(),
        os_distro: iso.map(|i| i.os_distro.clone()).unwrap_or_default(),
        os_version: iso.map(|i| i.os_version.clone()).unwrap_or_default(),
        bootable: iso.is_some_and(|i| i.bootable),
    }
}
