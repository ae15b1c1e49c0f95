//! A VM's disks and CD-ROM drives: listed, added (an ISO image, an existing volume no
//! other guest uses, or a new volume made for the guest and deleted with it), media
//! changed, and removed; live on a running guest where QEMU can (virtio), else in its
//! stored definition.

use kimchi_dbus::{VmStorage, VmStorageSpec, VolumeSpec, ISO_POOL};

use super::{live, Vms};
use crate::engine::hypervisor::{target_name, Apply, DomainRecord, Drive, DriveKind, PoolRecord};
use crate::engine::isos::read_medium;
use crate::error::{Error, Result};
use crate::excerpt::excerpt;
use crate::names::check_absolute_path;

/// The largest new disk, MiB (64 TiB).
const MAX_NEW_DISK_MIB: u64 = 64 << 20;
/// IDE has two channels of two devices: hda to hdd.
const IDE_DEVICES: u32 = 4;
/// Device names are looked for up to this index on the other buses.
const MAX_DEVICES: u32 = 256;

impl Vms {
    pub fn storages(&self, name: &str) -> Result<Vec<VmStorage>> {
        let vm = self.model.vm_by_name(name)?;
        Ok(vm.drives.iter().map(storage).collect())
    }

    pub async fn attach_storage(&self, name: &str, spec: VmStorageSpec) -> Result<VmStorage> {
        let (vm, _in_use) = self.changeable(name)?;
        match spec.storage_type.as_str() {
            "cdrom" => {
                let path = self.medium(&spec.path).await?;
                let drive = Drive {
                    dev: free_dev(&vm, "ide")?,
                    kind: DriveKind::Cdrom,
                    path,
                    bus: "ide".into(),
                    format: "raw".into(),
                };
                self.plug(&vm, drive, None).await
            }
            "disk" if spec.size_mib > 0 => self.attach_new_disk(&vm, &spec).await,
            "disk" => self.attach_volume(&vm, &spec).await,
            other => Err(Error::InvalidArgument(format!(
                "storage type '{}' is unknown; use 'cdrom' or 'disk'",
                excerpt(other)
            ))),
        }
    }

    /// Changes the medium of the CD-ROM `dev`; an empty `path` ejects it.
    pub async fn update_storage(&self, name: &str, dev: &str, path: &str) -> Result<VmStorage> {
        let (vm, _in_use) = self.changeable(name)?;
        let drive = find_drive(&vm, dev)?;
        if drive.kind != DriveKind::Cdrom {
            return Err(Error::InvalidState(format!(
                "{dev} of VM '{name}' is a disk; only a CD-ROM's medium can be changed"
            )));
        }
        let path = if path.is_empty() {
            String::new()
        } else {
            self.medium(path).await?
        };
        let drive = Drive {
            path,
            ..drive.clone()
        };
        // QEMU changes media live on any bus.
        let (uuid, apply) = (vm.uuid.clone(), live(&vm));
        let changed = drive.clone();
        let record = self
            .backend
            .run(move |hv| hv.change_media(&uuid, &changed, apply))
            .await?;
        self.model.upsert(record.clone());
        Ok(storage(find_drive(&record, &drive.dev)?))
    }

    /// Detaches the drive; a volume kimchid made for the guest is deleted, unless the
    /// running guest keeps using it until it is powered off (then the VM's deletion
    /// removes it).
    pub async fn detach_storage(&self, name: &str, dev: &str) -> Result<()> {
        let (vm, _in_use) = self.changeable(name)?;
        let drive = find_drive(&vm, dev)?.clone();
        let apply = apply_for(&vm, &drive.bus);
        let still_used = apply == Apply::Stored && live(&vm) == Apply::LiveAndStored;
        let made_here = vm.created_volumes.contains(&drive.path) && !still_used;
        let (uuid, icon) = (vm.uuid.clone(), vm.icon.clone());
        let remaining: Vec<String> = vm
            .created_volumes
            .iter()
            .filter(|p| !made_here || **p != drive.path)
            .cloned()
            .collect();
        let record = self
            .backend
            .run(move |hv| {
                let record = hv.detach_drive(&uuid, &drive, apply)?;
                if made_here {
                    hv.set_metadata(&uuid, &icon, &remaining)?;
                    hv.delete_volume_at(&drive.path)?;
                }
                hv.domain(&uuid).map(|now| now.unwrap_or(record))
            })
            .await?;
        self.model.upsert(record);
        Ok(())
    }

    /// An existing volume of a pool, which no guest uses yet.
    async fn attach_volume(&self, vm: &DomainRecord, spec: &VmStorageSpec) -> Result<VmStorage> {
        if spec.volume.is_empty() {
            return Err(Error::InvalidArgument(
                "a disk needs either a volume of the pool or a size for a new one".into(),
            ));
        }
        self.check_pool(&spec.pool)?;
        let (pool, name) = (spec.pool.clone(), spec.volume.clone());
        let volume = self
            .backend
            .run(move |hv| hv.volume(&pool, &name))
            .await
            .map_err(|e| {
                e.refers_to_missing(|| {
                    format!(
                        "storage pool '{}' has no volume '{}'",
                        excerpt(&spec.pool),
                        excerpt(&spec.volume)
                    )
                })
            })?;
        if volume.is_iso() {
            return Err(Error::InvalidArgument(format!(
                "volume '{}' is an ISO image; attach it as a cdrom",
                spec.volume
            )));
        }
        if let Some(user) = self
            .model
            .vms()
            .into_iter()
            .find(|v| v.disk_paths().any(|p| p == volume.path))
        {
            return Err(Error::InvalidState(format!(
                "volume '{}' of pool '{}' is already used by VM '{}'",
                spec.volume, spec.pool, user.name
            )));
        }
        let drive = self.new_disk(vm, volume.path, &volume.format)?;
        self.plug(vm, drive, None).await
    }

    /// A new volume of `spec.size_mib` in the pool, made for this guest: deleted again
    /// when attaching it fails, and recorded so that the VM's deletion removes it.
    async fn attach_new_disk(&self, vm: &DomainRecord, spec: &VmStorageSpec) -> Result<VmStorage> {
        if !spec.volume.is_empty() {
            return Err(Error::InvalidArgument(
                "give a disk either a volume or a size, not both".into(),
            ));
        }
        if spec.size_mib > MAX_NEW_DISK_MIB {
            return Err(Error::InvalidArgument(format!(
                "a new disk may have at most {MAX_NEW_DISK_MIB} MiB, not {}",
                spec.size_mib
            )));
        }
        let pool = self.check_pool(&spec.pool)?;
        let format = if pool.pool_type == "logical" {
            "raw"
        } else {
            "qcow2"
        };
        let (pool_name, prefix, size_mib) = (pool.name, vm.name.clone(), spec.size_mib);
        let volume = self
            .backend
            .run(move |hv| {
                let name = (0..MAX_DEVICES)
                    .map(|i| format!("{prefix}-disk{i}.img"))
                    .find(|n| hv.check_volume_name_free(&pool_name, n).is_ok())
                    .ok_or_else(|| {
                        Error::InvalidState(format!("no free volume name '{prefix}-disk<n>.img'"))
                    })?;
                let spec = VolumeSpec {
                    name,
                    capacity_mib: size_mib,
                    allocation_mib: 0,
                    format: format.to_owned(),
                };
                hv.create_volume(&pool_name, &spec)
            })
            .await?;
        let drive = match self.new_disk(vm, volume.path.clone(), &volume.format) {
            Ok(drive) => drive,
            Err(e) => {
                let path = volume.path.clone();
                self.backend
                    .run(move |hv| hv.delete_volume_at(&path))
                    .await?;
                return Err(e);
            }
        };
        self.plug(vm, drive, Some(volume.path)).await
    }

    /// Attaches `drive`; `made` is a volume made for it, recorded in the guest's
    /// metadata, and deleted again when any step fails.
    async fn plug(
        &self,
        vm: &DomainRecord,
        drive: Drive,
        made: Option<String>,
    ) -> Result<VmStorage> {
        let (uuid, icon, apply) = (vm.uuid.clone(), vm.icon.clone(), apply_for(vm, &drive.bus));
        let mut created = vm.created_volumes.clone();
        created.extend(made.clone());
        let attached = drive.clone();
        let records_made = made.is_some();
        let result = self
            .backend
            .run(move |hv| {
                let record = hv.attach_drive(&uuid, &attached, apply)?;
                if !records_made {
                    return Ok(record);
                }
                if let Err(e) = hv.set_metadata(&uuid, &icon, &created) {
                    let _ = hv.detach_drive(&uuid, &attached, apply);
                    return Err(e);
                }
                hv.domain(&uuid).map(|now| now.unwrap_or(record))
            })
            .await;
        let record = match result {
            Ok(record) => record,
            Err(e) => {
                if let Some(path) = made {
                    let removed = self.backend.run(move |hv| hv.delete_volume_at(&path)).await;
                    if let Err(leftover) = removed {
                        tracing::error!("cannot remove the disk of a failed attach: {leftover}");
                    }
                }
                return Err(e);
            }
        };
        self.model.upsert(record.clone());
        Ok(storage(find_drive(&record, &drive.dev)?))
    }

    /// A disk on the bus of the guest's other disks (virtio when it has none).
    fn new_disk(&self, vm: &DomainRecord, path: String, format: &str) -> Result<Drive> {
        let bus = vm
            .drives
            .iter()
            .find(|d| d.kind == DriveKind::Disk)
            .map(|d| d.bus.as_str())
            .filter(|b| ["virtio", "ide", "scsi", "sata"].contains(b))
            .unwrap_or("virtio")
            .to_owned();
        Ok(Drive {
            dev: free_dev(vm, &bus)?,
            kind: DriveKind::Disk,
            path,
            format: if format.is_empty() { "raw" } else { format }.to_owned(),
            bus,
        })
    }

    /// A pool a disk may come from: it exists, is active and is not the ISO view.
    fn check_pool(&self, pool: &str) -> Result<PoolRecord> {
        if pool == ISO_POOL {
            return Err(Error::InvalidArgument(format!(
                "{ISO_POOL} holds ISO images only; attach them as a cdrom"
            )));
        }
        let record = self.model.pool_by_name(pool).map_err(|_| {
            Error::InvalidArgument(format!(
                "there is no storage pool named '{}'",
                excerpt(pool)
            ))
        })?;
        if !record.active() {
            return Err(Error::InvalidState(format!(
                "storage pool '{pool}' is not active; activate it first"
            )));
        }
        Ok(record)
    }

    /// The host path of a CD-ROM medium: an ISO image, named by its absolute path or
    /// as a `kimchi_isos` volume.
    async fn medium(&self, path: &str) -> Result<String> {
        if path.is_empty() {
            return Err(Error::InvalidArgument("a cdrom needs a path".into()));
        }
        let path = if path.starts_with('/') {
            check_absolute_path("path", path)?;
            path.to_owned()
        } else {
            self.isos
                .record(path)
                .await
                .map_err(|e| {
                    e.refers_to_missing(|| {
                        format!(
                            "path '{}' is neither an absolute path nor an image of {ISO_POOL}",
                            excerpt(path)
                        )
                    })
                })?
                .path
        };
        read_medium(&path).await?;
        Ok(path)
    }
}

/// IDE and SATA drives cannot be hot-plugged: a running guest gets them at its next
/// power-on.
fn apply_for(vm: &DomainRecord, bus: &str) -> Apply {
    match live(vm) {
        Apply::LiveAndStored if bus == "ide" || bus == "sata" => Apply::Stored,
        apply => apply,
    }
}

/// The first target name on `bus` that no drive of the guest has.
fn free_dev(vm: &DomainRecord, bus: &str) -> Result<String> {
    let (prefix, slots) = match bus {
        "ide" => ("hd", IDE_DEVICES),
        "virtio" => ("vd", MAX_DEVICES),
        _ => ("sd", MAX_DEVICES),
    };
    (0..slots)
        .map(|i| target_name(prefix, i))
        .find(|dev| vm.drive(dev).is_none())
        .ok_or_else(|| {
            Error::InvalidState(format!(
                "VM '{}' has no free {bus} slot left (hda to hdd are taken)",
                vm.name
            ))
        })
}

fn find_drive<'a>(vm: &'a DomainRecord, dev: &str) -> Result<&'a Drive> {
    vm.drive(dev)
        .ok_or_else(|| Error::NotFound(format!("VM '{}' has no drive {}", vm.name, excerpt(dev))))
}

fn storage(drive: &Drive) -> VmStorage {
    VmStorage {
        dev: drive.dev.clone(),
        storage_type: drive.kind.word().to_owned(),
        path: drive.path.clone(),
        bus: drive.bus.clone(),
        format: drive.format.clone(),
    }
}
