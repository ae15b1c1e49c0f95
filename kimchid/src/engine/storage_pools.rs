//! Storage pools as Kimchi presents them: definitions checked before libvirt sees
//! them (names that fit libvirt's files, sources no other pool uses, paths and
//! devices that can hold a pool), lists answered from the model, single reads
//! re-read from libvirt (sizes change behind kimchid's back), and the `kimchi_isos`
//! view among them.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

use kimchi_dbus::{pool_path, PoolInfo, PoolSpec, ISO_POOL, MIB};
use zbus::OwnedObjectPath;

use super::claims::{Claim, Claims};
use super::hypervisor::{Backend, PoolDefinition, PoolRecord};
use super::isos::Isos;
use super::model::Model;
use crate::error::{Error, Result};
use crate::excerpt::excerpt;
use crate::names::{check_absolute_path, check_name};

/// libvirt keeps a pool's definition as `<name>.xml`, written as `<name>.xml.new`
/// first, and both must fit the 255-byte file name limit; a few bytes are left over.
pub const MAX_POOL_NAME_BYTES: usize = 240;

/// A logical pool's name is its LVM volume group's name: at most 127 characters
/// of LVM's set, not starting with '-'.
pub const MAX_VG_NAME_BYTES: usize = 127;

pub struct StoragePools {
    backend: Arc<Backend>,
    model: Arc<Model>,
    isos: Arc<Isos>,
    /// Names of pools being defined, so that a second creation is refused at once.
    creating: Claims<String>,
    /// Volumes being changed and pools being deactivated or deleted, in one set so
    /// that neither starts while the other runs (a wipe whose pool goes away under
    /// it fails halfway).
    busy: Claims<Busy>,
}

/// What `StoragePools::busy` holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Busy {
    /// Pool and volume name.
    Volume(String, String),
    Pool(String),
}

/// Held while a volume is changed; the volume and its pool are busy until dropped.
pub type VolumeGuard = Claim<Busy>;

fn volume_busy(pool: &str, volume: &str) -> Error {
    Error::Busy(format!(
        "volume '{volume}' in pool '{pool}' has an operation in progress"
    ))
}

fn pool_going_away(pool: &str) -> Error {
    Error::Busy(format!(
        "storage pool '{pool}' is being deactivated or deleted"
    ))
}

impl StoragePools {
    pub fn new(backend: Arc<Backend>, model: Arc<Model>, isos: Arc<Isos>) -> Self {
        StoragePools {
            backend,
            model,
            isos,
            creating: Claims::new(),
            busy: Claims::new(),
        }
    }

    /// Marks the volume busy, or says it (or its pool) already is.
    pub fn claim_volume(&self, pool: &str, name: &str) -> Result<VolumeGuard> {
        self.busy.claim_with(|busy| {
            if busy.contains(&Busy::Pool(pool.to_owned())) {
                return Err(pool_going_away(pool));
            }
            let key = Busy::Volume(pool.to_owned(), name.to_owned());
            if busy.contains(&key) {
                return Err(volume_busy(pool, name));
            }
            Ok(key)
        })
    }

    /// Marks the pool busy for a deactivation or deletion, unless one of its
    /// volumes is being changed.
    pub(in crate::engine) fn claim_pool(&self, pool: &str) -> Result<Claim<Busy>> {
        self.busy.claim_with(|busy| {
            for held in busy {
                match held {
                    Busy::Volume(p, volume) if p == pool => return Err(volume_busy(pool, volume)),
                    Busy::Pool(p) if p == pool => return Err(pool_going_away(pool)),
                    _ => {}
                }
            }
            Ok(Busy::Pool(pool.to_owned()))
        })
    }

    /// Every pool by name, `kimchi_isos` last; from the model alone.
    pub fn list(&self) -> Vec<PoolInfo> {
        let mut pools: Vec<PoolInfo> = self.model.pools().iter().map(info).collect();
        pools.push(self.isos.pool_info());
        pools
    }

    /// The pool as libvirt reports it now.
    pub async fn get(&self, name: &str) -> Result<PoolInfo> {
        if name == ISO_POOL {
            return Ok(self.isos.pool_info());
        }
        let name = self.model.pool_by_name(name)?.name;
        let record = self.backend.run(move |hv| hv.pool_by_name(&name)).await?;
        self.model.upsert_pool(record.clone());
        Ok(info(&record))
    }

    /// Defines a pool, inactive, as Kimchi does. Everything libvirt would refuse
    /// for the request's sake is refused first: a taken name (also one being
    /// created right now), a source another pool uses, a path that is not a
    /// directory, a device that is not a block device.
    pub async fn create(&self, spec: PoolSpec) -> Result<PoolInfo> {
        let def = pool_definition(&spec)?;
        let _claim = self.claim_name(&spec.name)?;
        check_sources(&def, &self.model.pools())?;
        let checked = def.clone();
        tokio::task::spawn_blocking(move || check_on_host(&checked))
            .await
            .map_err(|e| Error::Internal(format!("pool source check panicked: {e}")))??;
        let record = self.backend.run(move |hv| hv.define_pool(&def)).await?;
        self.model.upsert_pool(record.clone());
        Ok(info(&record))
    }

    /// Holds `name` while its pool is defined; refuses a name taken or held.
    fn claim_name(&self, name: &str) -> Result<Claim<String>> {
        self.creating.claim_with(|held| {
            if self.model.pool_by_name(name).is_ok() {
                return Err(Error::AlreadyExists(format!(
                    "a storage pool named '{name}' already exists"
                )));
            }
            if held.contains(name) {
                return Err(Error::AlreadyExists(format!(
                    "a storage pool named '{name}' is being created"
                )));
            }
            Ok(name.to_owned())
        })
    }

    /// Starts the pool and lists what it holds, so its ISO images join the
    /// `kimchi_isos` view at once.
    pub async fn activate(&self, name: &str) -> Result<PoolInfo> {
        let name = self.writable(name)?;
        let (record, volumes) = self
            .backend
            .run(move |hv| {
                hv.activate_pool(&name)?;
                hv.pool_volumes(&name)
            })
            .await?;
        let pool = info(&record);
        self.model.record_volumes(record, &volumes);
        Ok(pool)
    }

    pub async fn deactivate(&self, name: &str) -> Result<PoolInfo> {
        let name = self.writable(name)?;
        let _busy = self.claim_pool(&name)?;
        let record = self
            .backend
            .run(move |hv| hv.deactivate_pool(&name))
            .await?;
        self.model.upsert_pool(record.clone());
        Ok(info(&record))
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        let uuid = self.model.pool_by_name(&self.writable(name)?)?.uuid;
        let _busy = self.claim_pool(name)?;
        let owned = name.to_owned();
        self.backend.run(move |hv| hv.undefine_pool(&owned)).await?;
        self.model.remove_pool(&uuid);
        Ok(())
    }

    /// Refuses the virtual ISO pool for changes; returns the pool's name.
    pub fn writable(&self, name: &str) -> Result<String> {
        if name == ISO_POOL {
            return Err(Error::NotSupported(format!(
                "{ISO_POOL} is a read-only view"
            )));
        }
        self.model.pool_by_name(name).map(|p| p.name)
    }
}

pub fn info(p: &PoolRecord) -> PoolInfo {
    PoolInfo {
        path: OwnedObjectPath::try_from(pool_path(&p.uuid)).expect("UUIDs make valid paths"),
        name: p.name.clone(),
        state: p.state,
        target_path: p.target_path.clone(),
        pool_type: p.pool_type.clone(),
        capacity_mib: p.capacity / MIB,
        allocated_mib: p.allocation / MIB,
        available_mib: p.available / MIB,
        nr_volumes: p.nr_volumes,
    }
}

fn pool_definition(spec: &PoolSpec) -> Result<PoolDefinition> {
    if spec.name == ISO_POOL {
        return Err(Error::AlreadyExists(format!(
            "'{ISO_POOL}' is a reserved pool name"
        )));
    }
    if spec.name.len() > MAX_POOL_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "invalid storage pool name '{}': longer than {MAX_POOL_NAME_BYTES} bytes",
            excerpt(&spec.name).escape_debug()
        )));
    }
    check_name("storage pool", &spec.name)?;
    if spec.name.contains(':') {
        // ':' separates pool and image in kimchi_isos names.
        return Err(Error::InvalidArgument(format!(
            "invalid storage pool name '{}': it contains ':'",
            spec.name
        )));
    }
    let unexpected = |field: &str| {
        Error::InvalidArgument(format!(
            "'{field}' does not apply to {} pools",
            spec.pool_type
        ))
    };
    match spec.pool_type.as_str() {
        "dir" => {
            check_absolute_path("path", &spec.path)?;
            if !spec.source_host.is_empty() || !spec.source_path.is_empty() {
                return Err(unexpected("source"));
            }
            if !spec.source_devices.is_empty() {
                return Err(unexpected("source devices"));
            }
            Ok(PoolDefinition::Dir {
                name: spec.name.clone(),
                path: spec.path.clone(),
            })
        }
        "netfs" => {
            check_absolute_path("path", &spec.path)?;
            check_absolute_path("source path", &spec.source_path)?;
            let host_ok = !spec.source_host.is_empty()
                && spec
                    .source_host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
            if !host_ok {
                return Err(Error::InvalidArgument(format!(
                    "netfs pools need a source host name or address, not '{}'",
                    spec.source_host
                )));
            }
            if !spec.source_devices.is_empty() {
                return Err(unexpected("source devices"));
            }
            Ok(PoolDefinition::Netfs {
                name: spec.name.clone(),
                path: spec.path.clone(),
                host: spec.source_host.clone(),
                source_path: spec.source_path.clone(),
            })
        }
        "logical" => {
            if spec.source_devices.is_empty() {
                return Err(Error::InvalidArgument(
                    "logical pools need at least one source device".into(),
                ));
            }
            for device in &spec.source_devices {
                check_absolute_path("source device", device)?;
            }
            check_volume_group_name(&spec.name)?;
            if !spec.source_host.is_empty() || !spec.source_path.is_empty() {
                return Err(unexpected("source host/path"));
            }
            Ok(PoolDefinition::Logical {
                name: spec.name.clone(),
                devices: spec.source_devices.clone(),
            })
        }
        other => Err(Error::InvalidArgument(format!(
            "unknown storage pool type '{other}' (known: dir, netfs, logical)"
        ))),
    }
}

/// LVM's rules for a volume group's name, which a logical pool's name becomes.
fn check_volume_group_name(name: &str) -> Result<()> {
    let bad = |why: String| {
        Err(Error::InvalidArgument(format!(
            "invalid logical pool name '{}': {why} (it names the LVM volume group)",
            excerpt(name).escape_debug()
        )))
    };
    if name.len() > MAX_VG_NAME_BYTES {
        return bad(format!("longer than {MAX_VG_NAME_BYTES} bytes"));
    }
    if name.starts_with('-') {
        return bad("it starts with '-'".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c))
    {
        return bad("only letters, digits and '+_.-' are allowed".into());
    }
    Ok(())
}

/// Refuses a definition whose storage another pool already uses: its directory,
/// its network export, its devices or its volume group (libvirt's "storage source
/// conflict", and a little more: a directory is one pool's whatever the types).
fn check_sources(def: &PoolDefinition, pools: &[PoolRecord]) -> Result<()> {
    let conflict = |pool: &PoolRecord, what: String| {
        Err(Error::AlreadyExists(format!(
            "storage pool '{}' already uses {what}",
            pool.name
        )))
    };
    for pool in pools {
        match def {
            PoolDefinition::Dir { path, .. } | PoolDefinition::Netfs { path, .. }
                if same_path(&pool.target_path, path) =>
            {
                return conflict(pool, format!("the path '{path}'"));
            }
            PoolDefinition::Netfs {
                host, source_path, ..
            } if pool.pool_type == "netfs"
                && pool.source.host == *host
                && same_path(&pool.source.dir, source_path) =>
            {
                return conflict(pool, format!("the export {host}:{source_path}"));
            }
            PoolDefinition::Logical { name, devices } => {
                if let Some(device) = devices
                    .iter()
                    .find(|d| pool.source.devices.iter().any(|u| same_path(u, d)))
                {
                    return conflict(pool, format!("the source device '{device}'"));
                }
                if pool.pool_type == "logical" && pool.source.name == *name {
                    return conflict(pool, format!("the volume group '{name}'"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Two spellings of one path, as libvirt compares them (repeated and trailing
/// slashes do not count); never an empty path.
fn same_path(a: &str, b: &str) -> bool {
    !a.is_empty() && Path::new(a).components().eq(Path::new(b).components())
}

/// What the host must offer for the pool: a directory where one is named (or
/// nothing yet: activation builds it), block devices for a volume group.
fn check_on_host(def: &PoolDefinition) -> Result<()> {
    match def {
        PoolDefinition::Dir { path, .. } | PoolDefinition::Netfs { path, .. } => {
            match std::fs::metadata(path) {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(Error::InvalidArgument(format!(
                    "path '{path}' is not a directory"
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::InvalidArgument(format!(
                    "path '{path}' cannot hold a pool: {e}"
                ))),
            }
        }
        PoolDefinition::Logical { devices, .. } => {
            for device in devices {
                let bad = |why: String| {
                    Err(Error::InvalidArgument(format!(
                        "source device '{device}' {why}"
                    )))
                };
                match std::fs::metadata(device) {
                    Ok(meta) if meta.file_type().is_block_device() => {}
                    Ok(_) => return bad("is not a block device".into()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return bad("does not exist".into())
                    }
                    Err(e) => return bad(format!("cannot be used: {e}")),
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assert_error;

    fn spec(kind: &str) -> PoolSpec {
        PoolSpec {
            name: "p1".into(),
            pool_type: kind.into(),
            path: "/srv/p1".into(),
            source_host: String::new(),
            source_path: String::new(),
            source_devices: Vec::new(),
        }
    }

    fn nfs() -> PoolSpec {
        PoolSpec {
            source_host: "filer.example".into(),
            source_path: "/export/vms".into(),
            ..spec("netfs")
        }
    }

    fn lvm() -> PoolSpec {
        PoolSpec {
            source_devices: vec!["/dev/loop7".into()],
            ..spec("logical")
        }
    }

    #[test]
    fn each_pool_type_is_defined_from_what_it_needs() {
        let name = String::from("p1");
        let path = String::from("/srv/p1");
        assert_eq!(
            pool_definition(&spec("dir")).unwrap(),
            PoolDefinition::Dir {
                name: name.clone(),
                path: path.clone(),
            }
        );
        assert_eq!(
            pool_definition(&nfs()).unwrap(),
            PoolDefinition::Netfs {
                name: name.clone(),
                path,
                host: "filer.example".into(),
                source_path: "/export/vms".into(),
            }
        );
        assert_eq!(
            pool_definition(&lvm()).unwrap(),
            PoolDefinition::Logical {
                name,
                devices: vec!["/dev/loop7".into()],
            }
        );
    }

    #[test]
    fn reserved_name_is_already_taken() {
        let reserved = PoolSpec {
            name: ISO_POOL.into(),
            ..spec("dir")
        };
        assert_error!(
            pool_definition(&reserved),
            AlreadyExists,
            "'kimchi_isos' is a reserved pool name"
        );
    }

    /// Each pool type refuses a spec that lacks what it needs or gives what does not
    /// apply to it, and every type refuses an unsafe name or an unknown type.
    #[test]
    fn a_spec_a_pool_type_cannot_use_is_invalid_argument_naming_why() {
        let absolute = "must be an absolute path without '..', not";
        for (case, bad, message) in [
            (
                "dir: a relative path",
                PoolSpec {
                    path: "srv/p1".into(),
                    ..spec("dir")
                },
                format!("path {absolute} 'srv/p1'"),
            ),
            (
                "netfs: no source path",
                spec("netfs"),
                format!("source path {absolute} ''"),
            ),
            (
                "netfs: markup for a host",
                PoolSpec {
                    source_host: "a'><x".into(),
                    ..nfs()
                },
                "netfs pools need a source host name or address, not 'a'><x'".into(),
            ),
            (
                "logical: no source device",
                spec("logical"),
                "logical pools need at least one source device".into(),
            ),
            (
                "logical: a source host",
                PoolSpec {
                    source_host: "filer.example".into(),
                    ..lvm()
                },
                "'source host/path' does not apply to logical pools".into(),
            ),
            (
                "an unknown type",
                spec("zfs-magic"),
                "unknown storage pool type 'zfs-magic' (known: dir, netfs, logical)".into(),
            ),
        ] {
            assert_error!(pool_definition(&bad), InvalidArgument, message, "{case}");
        }
    }

    #[test]
    fn pool_names_with_path_tricks_or_colons_are_refused() {
        for (name, why) in [
            ("../x", "it contains '/'"),
            ("a/b", "it contains '/'"),
            ("", "it is empty"),
            ("a:b", "it contains ':'"),
        ] {
            let bad = PoolSpec {
                name: name.into(),
                ..spec("dir")
            };
            let message = format!("invalid storage pool name '{name}': {why}");
            assert_error!(pool_definition(&bad), InvalidArgument, message, "{name:?}");
        }
    }

    #[test]
    fn logical_pool_names_must_be_volume_group_names() {
        let long = "v".repeat(MAX_VG_NAME_BYTES + 1);
        for (name, why) in [
            (
                long.as_str(),
                format!("longer than {MAX_VG_NAME_BYTES} bytes"),
            ),
            ("-vg", "it starts with '-'".to_owned()),
            (
                "my vg",
                "only letters, digits and '+_.-' are allowed".to_owned(),
            ),
            (
                "vg=1",
                "only letters, digits and '+_.-' are allowed".to_owned(),
            ),
        ] {
            let bad = PoolSpec {
                name: name.into(),
                ..lvm()
            };
            let message = format!(
                "invalid logical pool name '{}': {why} (it names the LVM volume group)",
                excerpt(name)
            );
            assert_error!(pool_definition(&bad), InvalidArgument, message, "{name:?}");
        }
        let longest = PoolSpec {
            name: "v".repeat(MAX_VG_NAME_BYTES),
            ..lvm()
        };
        pool_definition(&longest).unwrap();
    }
}
